//! What the proxy's test suites share: starting `ukcm-proxy` on a config, a twemproxy pool
//! config over loopback backends, and a RESP client connection with one reply per command.
#![allow(dead_code)] // each suite uses its own part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ukcm::testing::{scratch_dir, wait_for_port, ChildGuard};
use ukcm_apps::proxy::resp;

pub const WATCHDOG: Duration = Duration::from_secs(30);

/// The proxy on `config` over kernel sockets, listening on `port`, with `extra` arguments.
pub fn proxy_with(config: &str, port: u16, extra: &[&str]) -> ChildGuard {
    let dir = scratch_dir(&format!("proxy-conf-{port}"));
    let path = dir.join("nutcracker.yml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ukcm-proxy"))
        .arg("-c")
        .arg(&path)
        .args(["--nic", "kernel"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let p = ChildGuard::new(child, Some(dir));
    wait_for_port(port, WATCHDOG);
    p
}

/// The proxy on `config`, listening on `port`.
pub fn proxy(config: &str, port: u16) -> ChildGuard {
    proxy_with(config, port, &[])
}

/// Waits until keys on every server get replies, not "backend down" (the pool connects
/// after the proxy starts listening).
pub fn wait_ready(port: u16, password: Option<&str>) {
    let end = Instant::now() + WATCHDOG;
    let mut c = Conn::new(port);
    if let Some(pw) = password {
        assert_eq!(c.cmd(&["AUTH", pw]), "+OK\r\n");
    }
    while !(0..50).all(|i| !c.cmd(&["GET", &format!("ready{i}")]).starts_with('-')) {
        assert!(Instant::now() < end, "the proxy's backends never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Redis pool `alpha` on `proxy` over loopback `backends` (named server0, server1, …),
/// with `extra` pool settings (each line indented by two spaces).
pub fn config(proxy: u16, backends: &[u16], extra: &str) -> String {
    let mut c = format!(
        "alpha:\n  listen: 127.0.0.1:{proxy}\n  hash: fnv1a_64\n  hash_tag: \"{{}}\"\n  distribution: ketama\n  redis: true\n  timeout: 2000\n{extra}  servers:\n"
    );
    for (i, b) in backends.iter().enumerate() {
        c.push_str(&format!("   - 127.0.0.1:{b}:1 server{i}\n"));
    }
    c
}

/// One client connection speaking RESP, a reply per command.
pub struct Conn(pub TcpStream, Vec<u8>);

impl Conn {
    pub fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(WATCHDOG)).unwrap();
        Conn(s, Vec::new())
    }

    /// Sends `bytes` and reads one reply.
    pub fn raw(&mut self, bytes: &[u8]) -> String {
        self.0.write_all(bytes).unwrap();
        self.read_reply()
    }

    /// Reads the next reply.
    pub fn read_reply(&mut self) -> String {
        loop {
            if let Some(n) = resp::value_len(&self.1) {
                let reply: Vec<u8> = self.1.drain(..n).collect();
                return String::from_utf8_lossy(&reply).into_owned();
            }
            let mut buf = [0u8; 4096];
            let n = self.0.read(&mut buf).unwrap();
            assert!(n > 0, "the proxy closed the connection");
            self.1.extend_from_slice(&buf[..n]);
        }
    }

    /// One command, one reply.
    pub fn cmd(&mut self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.raw(&resp::encode(&args))
    }
}
