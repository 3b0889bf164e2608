//! `ukcm-proxy` in front of two real `redis-server`s (loopback), judged by `redis-cli` and a
//! raw RESP connection: data types, expiry, multi-key commands across servers with each key
//! on the server twemproxy's placement names, hash tags, a 1,000-command pipeline,
//! unsupported commands, AUTH. Without redis-server/redis-cli it says SKIP, unless
//! `UKCM_PRIVILEGED=1`, where their absence fails.

mod proxy_common;

use std::io::Write;
use std::process::{Command, Stdio};

use ukcm::testing::{free_port, programs_or_skip, redis_cli, redis_server, redis_server_with, scratch_dir, ChildGuard};

use proxy_common::{config, proxy, wait_ready, Conn};
use ukcm_apps::proxy::config::Config;
use ukcm_apps::proxy::resp;

#[test]
fn redis_commands_through_the_proxy_land_where_twemproxy_puts_them() {
    if !programs_or_skip("proxy_redis", &["redis-server", "redis-cli"]) {
        return;
    }
    let ports = [free_port(), free_port()];
    let _redis: Vec<ChildGuard> = ports.iter().map(|&p| redis_server(p)).collect();
    let pp = free_port();
    let text = config(pp, &ports, "");
    let _proxy = proxy(&text, pp);
    wait_ready(pp, None);
    let selector = Config::parse(&text).unwrap().pools[0].selector();
    let home = |key: &str| ports[selector.server_for(key.as_bytes()).unwrap()];

    // Strings, hashes, lists, sets, sorted sets, expiry.
    assert_eq!(redis_cli(pp, &["set", "s1", "hello"]), "OK");
    assert_eq!(redis_cli(pp, &["get", "s1"]), "hello");
    assert_eq!(redis_cli(pp, &["incr", "n1"]), "1");
    assert_eq!(redis_cli(pp, &["hset", "h1", "f", "v"]), "1");
    assert_eq!(redis_cli(pp, &["hget", "h1", "f"]), "v");
    assert_eq!(redis_cli(pp, &["rpush", "l1", "a", "b", "c"]), "3");
    assert_eq!(redis_cli(pp, &["lrange", "l1", "0", "-1"]), "a\nb\nc");
    assert_eq!(redis_cli(pp, &["sadd", "set1", "x", "y"]), "2");
    assert_eq!(redis_cli(pp, &["scard", "set1"]), "2");
    assert_eq!(redis_cli(pp, &["zadd", "z1", "2", "b", "1", "a"]), "2");
    assert_eq!(redis_cli(pp, &["zrange", "z1", "0", "-1"]), "a\nb");
    assert_eq!(redis_cli(pp, &["expire", "s1", "100"]), "1");
    let ttl: u32 = redis_cli(pp, &["ttl", "s1"]).parse().unwrap();
    assert!((90..=100).contains(&ttl), "ttl {ttl}");
    for key in ["s1", "n1", "h1", "l1", "set1", "z1"] {
        assert_eq!(redis_cli(home(key), &["exists", key]), "1", "{key} not on its server");
    }

    // Multi-key across both servers: values in key order, each key on its own server.
    // Ten keys of each server, interleaved (fnv1a_64 on short similar keys is lopsided).
    let of = |port: u16| (0..5000).map(|i| format!("mk{i}")).filter(move |k| home(k) == port).take(10);
    let keys: Vec<String> = of(ports[0]).zip(of(ports[1])).flat_map(|(a, b)| [a, b]).collect();
    assert_eq!(keys.len(), 20);
    let mut mset = vec!["mset"];
    let values: Vec<String> = keys.iter().map(|k| format!("v-{k}")).collect();
    for (k, v) in keys.iter().zip(&values) {
        mset.extend([k.as_str(), v.as_str()]);
    }
    assert_eq!(redis_cli(pp, &mset), "OK");
    for (k, v) in keys.iter().zip(&values) {
        assert_eq!(redis_cli(home(k), &["get", k]), *v, "{k} not on its server");
    }
    let mut mget = vec!["mget", keys[0].as_str(), "nosuchkey"];
    mget.extend(keys[1..].iter().map(String::as_str));
    assert_eq!(redis_cli(pp, &mget), format!("{}\n\n{}", values[0], values[1..].join("\n")));
    let mut exists = vec!["exists"];
    exists.extend(keys.iter().map(String::as_str));
    assert_eq!(redis_cli(pp, &exists), "20");
    let mut del = vec!["del", "nosuchkey"];
    del.extend(keys.iter().map(String::as_str));
    assert_eq!(redis_cli(pp, &del), "20");
    assert_eq!(redis_cli(pp, &exists), "0");

    // Hash tags: one server for the tag.
    assert_eq!(redis_cli(pp, &["set", "{user}:a", "1"]), "OK");
    assert_eq!(redis_cli(pp, &["set", "{user}:b", "2"]), "OK");
    let h = home("user");
    assert_eq!(redis_cli(h, &["mget", "{user}:a", "{user}:b"]), "1\n2");

    // Multi-key commands whose keys share a server (one hash tag) go to it whole; keys on
    // different servers are refused rather than half-answered.
    assert_eq!(redis_cli(pp, &["sadd", "{t}:s1", "a", "b"]), "2");
    assert_eq!(redis_cli(pp, &["sadd", "{t}:s2", "b", "c"]), "2");
    assert_eq!(redis_cli(pp, &["sinter", "{t}:s1", "{t}:s2"]), "b");
    assert_eq!(redis_cli(pp, &["sunionstore", "{t}:u", "{t}:s1", "{t}:s2"]), "3");
    assert_eq!(redis_cli(home("t"), &["scard", "{t}:u"]), "3");
    assert_eq!(redis_cli(pp, &["eval", "return redis.call('get', KEYS[1])", "1", "{user}:a"]), "1");
    assert_eq!(redis_cli(pp, &["rpush", "{t}:l1", "x"]), "1");
    assert_eq!(redis_cli(pp, &["rpoplpush", "{t}:l1", "{t}:l2"]), "x");
    let apart = (0..5000).map(|i| format!("ap{i}")).find(|k| home(k) != home("ap-base")).unwrap();
    let mut c = Conn::new(pp);
    assert_eq!(
        c.cmd(&["SINTER", "ap-base", &apart]),
        "-ERR the keys of 'sinter' are on different servers (give them one hash tag)\r\n"
    );
    assert_eq!(c.cmd(&["EVAL", "return 1", "0"]), "-ERR 'eval' without keys cannot be routed through the proxy\r\n");
    assert_eq!(c.cmd(&["EVAL", "return 1", "2", "a"]), "-ERR wrong number of arguments for 'eval' command\r\n");

    // A pipeline of 1,000 commands.
    let mut pipe = Vec::new();
    for i in 0..1000 {
        pipe.extend(resp::encode(&[b"SET", format!("p{i}").as_bytes(), b"x"]));
    }
    let mut child = Command::new("redis-cli")
        .args(["-p", &pp.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&pipe).unwrap();
    let out = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned();
    assert!(out.contains("errors: 0, replies: 1000"), "{out}");

    // Answered by the proxy; unsupported commands get an error and the connection goes on.
    let mut c = Conn::new(pp);
    assert_eq!(c.cmd(&["PING"]), "+PONG\r\n");
    assert_eq!(c.cmd(&["ECHO", "hi"]), "$2\r\nhi\r\n");
    assert_eq!(c.cmd(&["KEYS", "*"]), "-ERR unsupported command 'KEYS' through the proxy\r\n");
    assert_eq!(c.cmd(&["blpop", "l1", "0"]), "-ERR unsupported command 'blpop' through the proxy\r\n");
    assert_eq!(c.cmd(&["SELECT", "1"]), "-ERR unsupported command 'SELECT' through the proxy\r\n");
    assert_eq!(c.cmd(&["SELECT", "0"]), "+OK\r\n");
    assert_eq!(c.raw(b"\r\nget h1x\r\n"), "$-1\r\n");
    assert_eq!(c.cmd(&["GET", "mk0"]), "$-1\r\n");
    assert_eq!(c.cmd(&["QUIT"]), "+OK\r\n");
}

#[test]
fn auth_is_checked_against_redis_auth_per_connection_and_given_to_the_backends() {
    if !programs_or_skip("proxy_redis_auth", &["redis-server", "redis-cli"]) {
        return;
    }
    // Backends that require the pool's password, keys in database 3 (twemproxy sends
    // AUTH and SELECT on each backend connection).
    let ports = [free_port(), free_port()];
    let _redis: Vec<ChildGuard> = ports.iter().map(|&p| redis_server_with(p, &["--requirepass", "sesame"])).collect();
    let pp = free_port();
    let text = config(pp, &ports, "  redis_auth: sesame\n  redis_db: 3\n");
    let _proxy = proxy(&text, pp);
    wait_ready(pp, Some("sesame"));
    let mut c = Conn::new(pp);
    assert_eq!(c.cmd(&["GET", "a"]), "-NOAUTH Authentication required.\r\n");
    assert_eq!(c.cmd(&["AUTH", "wrong"]), "-ERR invalid password\r\n");
    assert_eq!(c.cmd(&["SET", "a", "1"]), "-NOAUTH Authentication required.\r\n");
    assert_eq!(c.cmd(&["AUTH", "sesame"]), "+OK\r\n");
    assert_eq!(c.cmd(&["SET", "a", "1"]), "+OK\r\n");
    assert_eq!(c.cmd(&["GET", "a"]), "$1\r\n1\r\n");
    assert_eq!(c.cmd(&["SELECT", "3"]), "+OK\r\n");
    assert_eq!(c.cmd(&["SELECT", "0"]), "-ERR unsupported command 'SELECT' through the proxy\r\n");
    let mut other = Conn::new(pp);
    assert_eq!(other.cmd(&["GET", "a"]), "-NOAUTH Authentication required.\r\n");
    let selector = Config::parse(&text).unwrap().pools[0].selector();
    let home = ports[selector.server_for(b"a").unwrap()];
    assert_eq!(redis_cli(home, &["-a", "sesame", "--no-auth-warning", "-n", "3", "get", "a"]), "1");
    assert_eq!(redis_cli(home, &["-a", "sesame", "--no-auth-warning", "-n", "0", "exists", "a"]), "0");
}

#[test]
fn a_backend_that_refuses_the_password_gets_no_requests() {
    if !programs_or_skip("proxy_redis_badauth", &["redis-server"]) {
        return;
    }
    let ports = [free_port()];
    let _redis = redis_server_with(ports[0], &["--requirepass", "other"]);
    let pp = free_port();
    let _proxy = proxy(&config(pp, &ports, "  redis_auth: sesame\n"), pp);
    let mut c = Conn::new(pp);
    assert_eq!(c.cmd(&["AUTH", "sesame"]), "+OK\r\n");
    // Never a backend's NOAUTH passed on: the connection is not used until AUTH passed.
    for i in 0..20 {
        assert_eq!(c.cmd(&["GET", &format!("k{i}")]), "-ERR backend down\r\n");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_bad_config_is_one_line_naming_the_line_and_exit_2() {
    let dir = scratch_dir("proxy-bad");
    let path = dir.join("bad.yml");
    std::fs::write(
        &path,
        "alpha:\n  listen: 127.0.0.1:1\n  redis: true\n  hash: nope\n  servers:\n   - 127.0.0.1:2:1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ukcm-proxy")).arg("-c").arg(&path).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4") && err.lines().count() == 1, "{err}");
}
