//! `ukcm-proxy` on AF_XDP as it is deployed: an unprivileged user holding only the
//! capabilities the README names (CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_IPC_LOCK),
//! a `redis-server` backend and `redis-cli` in a throwaway namespace behind a `TestNet`
//! veth, the session recorded with `UKCM_PCAP_DIR` and judged by tshark's RESP dissector
//! (no malformed frame, no bad checksum, every command and reply seen); and, without one of
//! the capabilities, a clear refusal naming them. Root only (skipped without it, a failure
//! without it under UKCM_PRIVILEGED=1).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use ukcm::testing::{programs_or_skip, scratch_dir, ChildGuard};
use ukcm_nic::testnet::{privileged_or_skip, TestNet, TestNetOptions};
use ukcm_pcap_tests::tshark;

const PROXY: &str = env!("CARGO_BIN_EXE_ukcm-proxy");
const CAPS: [&str; 4] = ["net_admin", "net_raw", "bpf", "ipc_lock"];
const NOBODY: &str = "65534";

/// `setpriv` running `PROXY` as nobody with exactly `caps` (ambient, so they survive exec).
fn as_nobody_with(caps: &[&str]) -> Command {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let mut c = Command::new("setpriv");
    c.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(format!("--inh-caps=-all{set}"))
        .arg(format!("--ambient-caps=-all{set}"))
        .arg(format!("--bounding-set=-all{set}"))
        .args(["--", PROXY]);
    c
}

/// A redis-server on the namespace's address, port 7001.
fn redis_in(net: &TestNet) -> ChildGuard {
    let backend = net
        .peer_command("redis-server")
        .args(["--bind", &net.peer_ip.to_string(), "--port", "7001", "--save", "", "--appendonly", "no"])
        .args(["--protected-mode", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    ChildGuard::new(backend, None)
}

fn redis_cli_in(net: &TestNet, args: &[&str]) -> String {
    let out = net.peer_command("redis-cli").args(args).output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn proxy_on_afxdp_runs_unprivileged_with_four_capabilities_and_speaks_clean_resp() {
    if !privileged_or_skip("proxy_on_afxdp_runs_unprivileged")
        || !programs_or_skip("proxy_afxdp", &["redis-server", "redis-cli", "setpriv", "tshark"])
    {
        return;
    }
    let net = TestNet::new("pxy", &TestNetOptions::default()).unwrap();
    let _backend = redis_in(&net);
    // The config and the capture directory, readable (and writable) by nobody.
    let dir = scratch_dir("proxy-afxdp");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let conf = dir.join("nutcracker.yml");
    std::fs::write(
        &conf,
        format!("alpha:\n  listen: 0.0.0.0:22121\n  redis: true\n  servers:\n   - {}:7001:1 one\n", net.peer_ip),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pcaps = dir.join("pcap");
    let addr = format!("{}/{}", net.ukcm_ip, net.prefix);
    let nic = format!("afxdp:{}:0", net.host_if);
    let args = ["-c", conf.to_str().unwrap(), "--nic", &nic, "--addr", &addr, "--stats-port", "0"];

    // Without CAP_NET_RAW: refused, and the message says what is needed.
    let out = as_nobody_with(&["net_admin", "bpf", "ipc_lock"]).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CAP_NET_ADMIN + CAP_NET_RAW + CAP_BPF"), "{err}");

    let mut child = as_nobody_with(&CAPS)
        .args(args)
        .env("UKCM_PCAP_DIR", &pcaps)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains(&format!("listening on {}:22121", net.ukcm_ip)), "{first}");
    let proxy = ChildGuard::new(child, None);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.split_whitespace().skip(1).all(|u| u == NOBODY), "{uid}");

    let host = net.ukcm_ip.to_string();
    let cli = |a: &[&str]| redis_cli_in(&net, &[&["-h", &host, "-p", "22121"], a].concat());
    // The backend connects after the proxy listens: wait for a real reply.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while cli(&["get", "warm"]).starts_with("ERR") {
        assert!(std::time::Instant::now() < end, "the backend never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cli(&["set", "k1", "v1"]), "OK");
    assert_eq!(cli(&["mset", "k2", "v2", "k3", "v3"]), "OK");
    assert_eq!(cli(&["mget", "k1", "nope", "k2", "k3"]), "v1\n\nv2\nv3");
    assert_eq!(cli(&["incr", "n"]), "1");
    assert_eq!(cli(&["ping"]), "PONG");

    // SIGTERM: final stats, exit 0, the recording closed.
    // SAFETY: kill(2) on the proxy process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("final stats")), "{rest:?}");
    drop(proxy);

    let pcap = std::fs::read_dir(&pcaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pcap"));
    let pcap = pcap.expect("no recording in UKCM_PCAP_DIR");
    let decode = ["tcp.port==22121,resp", "tcp.port==7001,resp"];
    let verdict = tshark::check_frames(&pcap, &decode).unwrap();
    assert!(verdict.frames > 20, "only {} frames recorded", verdict.frames);
    assert!(verdict.problems.is_empty(), "tshark found problems: {:?}", verdict.problems);
    // Every command the clients sent reached the backend (or was answered by the proxy),
    // as tshark reads them: SET, MSET, MGET, INCR from the clients to the proxy.
    let client_side =
        tshark::field_values(&pcap, &decode, "tcp.dstport==22121 && resp", "resp.bulk_string.value").unwrap();
    // tshark prints bulk strings as hex.
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for cmd in ["set", "mset", "mget", "incr", "ping"] {
        assert!(client_side.contains(&hex(cmd)), "{cmd} not seen in {client_side:?}");
    }
    let backend_side =
        tshark::field_values(&pcap, &decode, "tcp.dstport==7001 && resp", "resp.bulk_string.value").unwrap();
    assert!(backend_side.contains(&hex("mget")), "{backend_side:?}");
    assert!(!backend_side.contains(&hex("ping")), "PING is answered by the proxy: {backend_side:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn proxy_on_two_queues_runs_an_engine_with_its_own_backend_connections_on_each() {
    if !privileged_or_skip("proxy_on_two_queues")
        || !programs_or_skip("proxy_afxdp_2q", &["redis-server", "redis-benchmark"])
    {
        return;
    }
    let net = TestNet::new("pq2", &TestNetOptions { queues: 2, ..TestNetOptions::default() }).unwrap();
    let _backend = redis_in(&net);
    let dir = scratch_dir("proxy-afxdp-2q");
    let conf = dir.join("nutcracker.yml");
    std::fs::write(
        &conf,
        format!("alpha:\n  listen: 0.0.0.0:22121\n  redis: true\n  servers:\n   - {}:7001:1 one\n", net.peer_ip),
    )
    .unwrap();
    let stats_port = ukcm::testing::free_port();
    let mut child = Command::new(PROXY)
        .args(["-c", conf.to_str().unwrap(), "--nic", &format!("afxdp:{}", net.host_if)])
        .args(["--addr", &format!("{}/{}", net.ukcm_ip, net.prefix), "--stats-port", &stats_port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("× 2 engines"), "{first}");
    // The stats port is up once its line is out (after the memory line).
    let shown: Vec<String> = lines.by_ref().map_while(Result::ok).take_while(|l| !l.contains("stats on")).collect();
    assert!(shown.iter().any(|l| l.contains("memory:")), "{shown:?}");
    let _proxy = ChildGuard::new(child, None);
    let stats = || -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", stats_port)).unwrap();
        let mut doc = String::new();
        std::io::Read::read_to_string(&mut s, &mut doc).unwrap();
        serde_json::from_str(&doc).unwrap()
    };
    // Each engine has its own connection to the backend (server_connections: 1 per pool).
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while stats()["alpha"]["one"]["server_connections"] != 2 {
        assert!(std::time::Instant::now() < end, "both engines never connected: {}", stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    // 64 clients: the kernel spreads their flows over both queues.
    let out = net
        .peer_command("redis-benchmark")
        .args(["-h", &net.ukcm_ip.to_string(), "-p", "22121", "-c", "64", "-n", "20000", "-t", "set,get", "-q"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.to_lowercase().contains("error"), "{text}");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = stats();
        if v["alpha"]["one"]["requests"].as_u64() >= Some(40_000) {
            assert_eq!(v["alpha"]["one"]["server_connections"], 2, "{v}");
            break;
        }
        assert!(std::time::Instant::now() < end, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
