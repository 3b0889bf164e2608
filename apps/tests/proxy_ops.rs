//! `ukcm-proxy` as operators meet it, in front of real `redis-server`s on loopback: its
//! stats port against `nutcracker`'s (same field names, same per-server request counts for
//! the same traffic), the Prometheus endpoint, and failures — a backend killed under load
//! (ejection, errors only for its keys, its keys back when it returns), a backend that
//! stalls (timeouts for exactly its requests, the connection back in sync afterwards), a
//! client that leaves with requests in flight. SKIP without the programs, unless
//! `UKCM_PRIVILEGED=1`, where their absence fails.

mod proxy_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use ukcm::testing::{free_port, programs_or_skip, redis_cli, redis_server, scratch_dir, wait_for_port, ChildGuard};
use ukcm_apps::proxy::config::Config;
use ukcm_apps::proxy::resp;

use proxy_common::{config, proxy_with, wait_ready, Conn, WATCHDOG};

/// Reads one stats document from a twemproxy-style stats port.
fn stats(port: u16) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats on {port} is not JSON ({e}): {text}"))
}

/// `GET /metrics` from the metrics port: the body.
fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// A metric sample's value from Prometheus text.
fn sample(text: &str, series: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The field names of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// Stats documents until `done` holds for one (the proxy publishes every 200 ms).
fn stats_until(port: u16, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + WATCHDOG;
    loop {
        let doc = stats(port);
        if done(&doc) {
            return doc;
        }
        assert!(Instant::now() < end, "the stats never showed it: {doc}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn requests(doc: &Value, server: &str) -> u64 {
    doc["alpha"][server]["requests"].as_u64().unwrap_or_else(|| panic!("no requests for {server}: {doc}"))
}

#[test]
fn stats_port_speaks_nutcrackers_fields_and_counts() {
    if !programs_or_skip("proxy_stats", &["redis-server", "nutcracker"]) {
        return;
    }
    let ports = [free_port(), free_port()];
    let _redis: Vec<ChildGuard> = ports.iter().map(|&p| redis_server(p)).collect();
    let (pp, sp, mp) = (free_port(), free_port(), free_port());
    let text = config(pp, &ports, "");
    let (sps, mps) = (sp.to_string(), mp.to_string());
    let _proxy = proxy_with(&text, pp, &["--stats-port", &sps, "--metrics-port", &mps]);
    // nutcracker on the same pool (its own listen port), stats aggregated every 100 ms.
    let (np, nsp) = (free_port(), free_port());
    let dir = scratch_dir("nutcracker-stats");
    let conf = dir.join("nc.yml");
    std::fs::write(&conf, text.replace(&format!(":{pp}\n"), &format!(":{np}\n"))).unwrap();
    let nc = Command::new("nutcracker")
        .arg("-c")
        .arg(&conf)
        .args(["-s", &nsp.to_string(), "-a", "127.0.0.1", "-i", "100", "-o"])
        .arg(dir.join("nc.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _nc = ChildGuard::new(nc, Some(dir));
    wait_for_port(np, WATCHDOG);
    wait_ready(pp, None);
    wait_ready(np, None);
    std::thread::sleep(Duration::from_millis(500));
    let (ours0, theirs0) = (stats(sp), stats(nsp));

    // Same traffic through both: 100 SETs and 100 GETs.
    for port in [pp, np] {
        let mut c = Conn::new(port);
        for i in 0..100 {
            assert_eq!(c.cmd(&["SET", &format!("k{i}"), "v"]), "+OK\r\n");
            assert_eq!(c.cmd(&["GET", &format!("k{i}")]), "$1\r\nv\r\n");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (ours, theirs) = (stats(sp), stats(nsp));

    // Every field nutcracker shows, ukcm-proxy shows (but the incoming-queue figures, which
    // have no counterpart: see apps/src/proxy/stats.rs).
    let not_ours = ["in_queue", "in_queue_bytes", "out_queue_bytes"];
    for k in keys(&theirs) {
        assert!(ours.get(&k).is_some(), "top-level field {k} missing: {ours}");
    }
    let pool_fields: Vec<String> = keys(&theirs["alpha"]);
    for k in &pool_fields {
        assert!(ours["alpha"].get(k).is_some(), "pool field {k} missing: {}", ours["alpha"]);
    }
    for server in ["server0", "server1"] {
        for k in keys(&theirs["alpha"][server]) {
            if !not_ours.contains(&k.as_str()) {
                assert!(ours["alpha"][server].get(&k).is_some(), "{server} field {k} missing");
            }
        }
        // Same placement, same traffic: the same number of requests on each server.
        let d_ours = requests(&ours, server) - requests(&ours0, server);
        let d_theirs = requests(&theirs, server) - requests(&theirs0, server);
        assert_eq!(d_ours, d_theirs, "{server}: requests through ukcm-proxy vs nutcracker");
        assert_eq!(ours["alpha"][server]["server_connections"], 1);
    }
    assert_eq!(
        requests(&ours, "server0") - requests(&ours0, "server0") + requests(&ours, "server1")
            - requests(&ours0, "server1"),
        200
    );
    assert_eq!(ours["alpha"]["server_ejects"], 0);

    // The metrics endpoint reads the same figures.
    let m = metrics(mp);
    for server in ["server0", "server1"] {
        let series = format!("ukcm_proxy_server_requests_total{{pool=\"alpha\",server=\"{server}\"}}");
        assert_eq!(sample(&m, &series), requests(&stats(sp), server));
    }
    assert_eq!(sample(&m, "ukcm_proxy_client_connections{pool=\"alpha\"}"), 0);
}

/// Pipelines `SET key value; GET key` for every key on one connection; returns each GET's
/// reply, in key order (every command gets exactly one reply, in order).
fn set_get_round(c: &mut Conn, keys: &[String], round: u32) -> Vec<String> {
    let mut batch = Vec::new();
    for k in keys {
        batch.extend(resp::encode(&[b"SET", k.as_bytes(), format!("{k}-{round}").as_bytes()]));
        batch.extend(resp::encode(&[b"GET", k.as_bytes()]));
    }
    c.0.write_all(&batch).unwrap();
    let mut gets = Vec::with_capacity(keys.len());
    for _ in keys {
        let set = c.read_reply();
        assert!(set == "+OK\r\n" || set.starts_with("-ERR backend"), "SET got {set:?}");
        gets.push(c.read_reply());
    }
    gets
}

#[test]
fn a_backend_killed_under_load_is_ejected_and_its_keys_come_back() {
    if !programs_or_skip("proxy_kill", &["redis-server", "redis-cli"]) {
        return;
    }
    let ports = [free_port(), free_port()];
    let mut redis: Vec<Option<ChildGuard>> = ports.iter().map(|&p| Some(redis_server(p))).collect();
    let (pp, sp) = (free_port(), free_port());
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 500\n";
    let text = config(pp, &ports, extra);
    let _proxy = proxy_with(&text, pp, &["--stats-port", &sp.to_string()]);
    wait_ready(pp, None);
    let selector = Config::parse(&text).unwrap().pools[0].selector();
    let keys: Vec<String> = (0..200).map(|i| format!("key{i}")).collect();
    let home: Vec<usize> = keys.iter().map(|k| selector.server_for(k.as_bytes()).unwrap()).collect();
    assert!(home.contains(&0) && home.contains(&1));

    // Load: rounds of SET/GET on every key while server1 dies and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, keys, home) = (Arc::clone(&stop), keys.clone(), home.clone());
        std::thread::spawn(move || {
            let mut c = Conn::new(pp);
            let (mut rounds, mut errors_for_server1) = (0u32, 0u32);
            while !stop.load(Ordering::Acquire) {
                for (i, got) in set_get_round(&mut c, &keys, rounds).into_iter().enumerate() {
                    let want = format!("${}\r\n{}-{rounds}\r\n", keys[i].len() + 1 + rounds.to_string().len(), keys[i]);
                    if home[i] == 0 {
                        assert_eq!(got, want, "{} (server0's) in round {rounds}", keys[i]);
                    } else if got != want {
                        // Its server died: an error, or the key rehashed (nothing there yet).
                        assert!(got.starts_with("-ERR backend") || got == "$-1\r\n", "{}: {got:?}", keys[i]);
                        errors_for_server1 += 1;
                    }
                }
                rounds += 1;
            }
            (rounds, errors_for_server1)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    redis[1] = None; // killed
                     // Ejected: server1's keys now succeed on server0.
                     // A key of server1's that the load does not write.
    let k1 = (0..1000).map(|i| format!("probe{i}")).find(|k| selector.server_for(k.as_bytes()) == Some(1)).unwrap();
    let end = Instant::now() + WATCHDOG;
    let mut c = Conn::new(pp);
    while c.cmd(&["SET", &k1, "moved"]) != "+OK\r\n" {
        assert!(Instant::now() < end, "server1's keys never moved after it died");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(redis_cli(ports[0], &["get", &k1]), "moved", "{k1} should have rehashed to server0");
    let doc = stats_until(sp, |d| d["alpha"]["server_ejects"].as_u64() >= Some(1));
    assert!(
        doc["alpha"]["server1"]["server_err"].as_u64().unwrap()
            + doc["alpha"]["server1"]["server_eof"].as_u64().unwrap()
            >= 1,
        "{doc}"
    );

    // Back: after the retry timeout its keys go home again.
    redis[1] = Some(redis_server(ports[1]));
    let end = Instant::now() + WATCHDOG;
    loop {
        assert_eq!(c.cmd(&["SET", &k1, "home"]), "+OK\r\n");
        if redis_cli(ports[1], &["get", &k1]) == "home" {
            break;
        }
        assert!(Instant::now() < end, "server1 never got its keys back");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    let (rounds, _) = load.join().expect("the load saw a wrong reply");
    assert!(rounds >= 3, "only {rounds} load rounds ran");
    stats_until(sp, |d| {
        d["alpha"]["server1"]["server_ejected_at"] == 0 && d["alpha"]["server1"]["server_connections"] == 1
    });
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child process this test started and still owns.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

#[test]
fn a_stalled_backend_times_out_only_its_requests_and_resyncs() {
    if !programs_or_skip("proxy_stall", &["redis-server"]) {
        return;
    }
    let ports = [free_port(), free_port()];
    let redis: Vec<ChildGuard> = ports.iter().map(|&p| redis_server(p)).collect();
    let (pp, sp) = (free_port(), free_port());
    let text = config(pp, &ports, "  server_failure_limit: 100\n").replace("timeout: 2000", "timeout: 300");
    let _proxy = proxy_with(&text, pp, &["--stats-port", &sp.to_string()]);
    wait_ready(pp, None);
    let selector = Config::parse(&text).unwrap().pools[0].selector();
    let keys: Vec<String> = (0..100).map(|i| format!("key{i}")).collect();
    let home: Vec<usize> = keys.iter().map(|k| selector.server_for(k.as_bytes()).unwrap()).collect();
    let mut c = Conn::new(pp);
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, &format!("{k}-before")]), "+OK\r\n");
    }

    signal(redis[1].id(), libc::SIGSTOP);
    let mut batch = Vec::new();
    for k in &keys {
        batch.extend(resp::encode(&[b"GET", k.as_bytes()]));
    }
    c.0.write_all(&batch).unwrap();
    for (k, h) in keys.iter().zip(&home) {
        let got = c.read_reply();
        if *h == 1 {
            assert_eq!(got, "-ERR backend timed out\r\n", "{k}");
        } else {
            assert_eq!(got, format!("${}\r\n{k}-before\r\n", k.len() + 7), "{k}");
        }
    }
    let n1 = home.iter().filter(|&&h| h == 1).count() as u64;
    let doc = stats_until(sp, |d| d["alpha"]["server1"]["server_timedout"].as_u64() >= Some(n1));
    assert_eq!(doc["alpha"]["server1"]["server_timedout"], n1, "{doc}");
    assert_eq!(doc["alpha"]["forward_error"], n1, "{doc}");
    assert_eq!(doc["alpha"]["server0"]["server_timedout"], 0, "{doc}");
    signal(redis[1].id(), libc::SIGCONT);

    // The late replies are discarded: the next replies are the right ones.
    for k in &keys {
        assert_eq!(c.cmd(&["GET", k]), format!("${}\r\n{k}-before\r\n", k.len() + 7), "{k} after the stall");
    }
}

#[test]
fn a_client_leaving_with_requests_in_flight_leaves_the_backends_in_sync() {
    if !programs_or_skip("proxy_leave", &["redis-server"]) {
        return;
    }
    let ports = [free_port(), free_port()];
    let redis: Vec<ChildGuard> = ports.iter().map(|&p| redis_server(p)).collect();
    let (pp, sp) = (free_port(), free_port());
    let text = config(pp, &ports, "").replace("timeout: 2000", "timeout: 10000");
    let _proxy = proxy_with(&text, pp, &["--stats-port", &sp.to_string()]);
    wait_ready(pp, None);
    let keys: Vec<String> = (0..100).map(|i| format!("key{i}")).collect();
    let mut c = Conn::new(pp);
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, k]), "+OK\r\n");
    }
    // Both backends stall; a client sends 1,000 GETs and leaves before any reply.
    for r in &redis {
        signal(r.id(), libc::SIGSTOP);
    }
    {
        let mut gone = Conn::new(pp);
        let mut batch = Vec::new();
        for i in 0..1000 {
            batch.extend(resp::encode(&[b"GET", keys[i % keys.len()].as_bytes()]));
        }
        gone.0.write_all(&batch).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(200));
    for r in &redis {
        signal(r.id(), libc::SIGCONT);
    }
    // Its replies went nowhere; everyone else's are their own.
    for k in &keys {
        assert_eq!(c.cmd(&["GET", k]), format!("${}\r\n{k}\r\n", k.len()), "{k}");
    }
    let doc = stats_until(sp, |d| d["alpha"]["client_eof"].as_u64() >= Some(1));
    assert_eq!(doc["alpha"]["forward_error"], 0, "{doc}");
}

#[test]
fn sighup_reloads_servers_under_load_without_dropping_a_client_or_an_error_reply() {
    if !programs_or_skip("proxy_reload", &["redis-server", "redis-cli", "redis-benchmark"]) {
        return;
    }
    let ports = [free_port(), free_port(), free_port()];
    let _redis: Vec<ChildGuard> = ports.iter().map(|&p| redis_server(p)).collect();
    let (pp, sp) = (free_port(), free_port());
    // server0 and server1, then server0 and server2 (server1 removed, server2 added).
    let before = config(pp, &ports[..2], "");
    let after =
        before.replace(&format!("127.0.0.1:{}:1 server1", ports[1]), &format!("127.0.0.1:{}:1 server2", ports[2]));
    let proxy = proxy_with(&before, pp, &["--stats-port", &sp.to_string()]);
    let conf = scratch_dir(&format!("proxy-conf-{pp}")).join("nutcracker.yml");
    wait_ready(pp, None);

    // Load: redis-benchmark, and our own pipelined SET/GET rounds checking every reply.
    let bench = Command::new("redis-benchmark")
        .args(["-p", &pp.to_string(), "-c", "20", "-n", "40000", "-r", "10000", "-P", "4", "-t", "set,get", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let keys: Vec<String> = (0..100).map(|i| format!("rl{i}")).collect();
            let mut c = Conn::new(pp);
            let mut rounds = 0u32;
            while !stop.load(Ordering::Acquire) || rounds < 3 {
                for (i, got) in set_get_round(&mut c, &keys, rounds).into_iter().enumerate() {
                    let want = format!("${}\r\n{}-{rounds}\r\n", keys[i].len() + 1 + rounds.to_string().len(), keys[i]);
                    assert_eq!(got, want, "{} in round {rounds}", keys[i]);
                }
                rounds += 1;
            }
            rounds
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&conf, &after).unwrap();
    signal(proxy.id(), libc::SIGHUP);
    // The stats name the new servers once the engines applied the reload.
    stats_until(sp, |d| d["alpha"].get("server2").is_some() && d["alpha"].get("server1").is_none());
    // A bad file is refused; the reloaded configuration keeps serving.
    std::fs::write(&conf, after.replace("hash: fnv1a_64", "hash: nope")).unwrap();
    signal(proxy.id(), libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    assert!(load.join().expect("a wrong or error reply during the reload") >= 3);
    let out = bench.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "redis-benchmark failed: {text}");
    assert!(!text.to_lowercase().contains("error"), "redis-benchmark saw errors: {text}");

    // Placement follows the new file: keys land on server0 or server2, none on server1.
    let selector = Config::parse(&after).unwrap().pools[0].selector();
    let mut c = Conn::new(pp);
    let homes = [ports[0], ports[2]];
    for i in 0..50 {
        let k = format!("placed{i}");
        assert_eq!(c.cmd(&["SET", &k, "x"]), "+OK\r\n");
        let home = homes[selector.server_for(k.as_bytes()).unwrap()];
        assert_eq!(redis_cli(home, &["exists", &k]), "1", "{k}");
        assert_eq!(redis_cli(ports[1], &["exists", &k]), "0", "{k} on the removed server");
    }
    let doc = stats(sp);
    assert_eq!(doc["alpha"]["client_err"], 0, "{doc}");
}
