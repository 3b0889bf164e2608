//! End to end over loopback: `ukcm-echo --nic kernel` on an ephemeral port, `ukcm-load`
//! against it, then SIGTERM; and `ukcm-demo --short`. No timing assertions: only that
//! every message came back verified, and that the server exits 0 with its final table.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ECHO: &str = env!("CARGO_BIN_EXE_ukcm-echo");
const LOAD: &str = env!("CARGO_BIN_EXE_ukcm-load");
const DEMO: &str = env!("CARGO_BIN_EXE_ukcm-demo");

/// Kills the child if the test fails before it is reaped.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(Instant::now() < end, "process did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The integer after `"key":` in a flat JSON text.
fn json_int(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat).unwrap_or_else(|| panic!("{key} missing in {json}")) + pat.len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {json}"))
}

fn echo_then_load(echo_extra: &[&str], load_extra: &[&str]) {
    let mut child = Command::new(ECHO)
        .args(["--nic", "kernel", "--addr", "127.0.0.1/8", "--listen", "0", "--parser", "thrift", "--stats-every", "1"])
        .args(echo_extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ukcm-echo");
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut err = child.stderr.take().expect("stderr");
    let mut reap = Reap(Some(child));
    let mut first = String::new();
    out.read_line(&mut first).expect("first line");
    let addr = first
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{first}");
    assert!(first.contains("transport: kernel TCP"), "{first}");
    // Keep reading stdout in the background so the server never blocks on a full pipe.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        let _ = tx.send(rest);
    });

    let load = Command::new(LOAD)
        .args([
            "--nic",
            "kernel",
            "--connect",
            &addr,
            "--conns",
            "4",
            "--depth",
            "8",
            "--size",
            "36-2000",
            "--duration",
            "2",
        ])
        .args(["--threads", "2", "--json"])
        .args(load_extra)
        .output()
        .expect("run ukcm-load");
    let json = String::from_utf8_lossy(&load.stdout).into_owned();
    let load_err = String::from_utf8_lossy(&load.stderr).into_owned();
    assert!(load.status.success(), "ukcm-load failed: {load_err}\n{json}");
    assert_eq!(json.lines().count(), 1, "one JSON object: {json}");
    assert!(json.starts_with('{') && json.trim_end().ends_with('}'), "{json}");
    assert_eq!(json_int(&json, "corrupt"), 0, "{json}");
    assert_eq!(json_int(&json, "lost"), 0, "{json}");
    assert_eq!(json_int(&json, "duplicate"), 0, "{json}");
    let received = json_int(&json, "received");
    assert!(received > 0 && received == json_int(&json, "sent"), "{json}");
    assert!(json.contains("\"ok\":true") && json.contains("\"kernel\":\"") && json.contains("\"p99_9\":"), "{json}");
    assert!(load_err.contains("msg/s"), "progress lines on stderr: {load_err}");

    let st = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(st.success());
    let mut child = reap.0.take().expect("child");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let rest = rx.recv_timeout(Duration::from_secs(5)).expect("stdout closed");
    let mut errs = String::new();
    let _ = err.read_to_string(&mut errs);
    assert_eq!(status.code(), Some(0), "ukcm-echo exit: {status:?}\nstderr: {errs}\nstdout: {rest}");
    let fin = rest.rfind("final stats").map(|i| &rest[i..]).unwrap_or_else(|| panic!("no final table in {rest}"));
    assert!(fin.contains("MUX") && fin.contains("PSOCK") && fin.contains("SOCK"), "{fin}");
    // The mux line of the final table counts at least every message the load verified.
    let mux_line = fin.lines().find(|l| l.starts_with("mux ")).expect("mux line");
    let rx_msgs: u64 = mux_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rx_msgs >= received, "mux rx_msgs {rx_msgs} < verified {received}");
    assert!(rest.contains("msgs/s"), "periodic stats every second: {rest}");
}

#[test]
fn echo_with_workers_and_load_lose_nothing_then_sigterm_exits_0() {
    echo_then_load(&["--workers", "2", "--steer", "hash"], &[]);
}

#[test]
fn echo_run_to_completion_and_open_loop_load_lose_nothing() {
    echo_then_load(&["--rtc"], &["--rate", "5000"]);
}

fn demo_short(nic: &str, transport: &str) {
    let out = Command::new(DEMO).args(["--short", "--nic", nic]).output().expect("run ukcm-demo");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ukcm-demo failed: {err}\n{text}");
    let field = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} line in {text}"));
        line[name.len()..].trim().parse().unwrap_or_else(|_| panic!("{line}"))
    };
    assert_eq!(field("corrupt"), 0, "{text}");
    assert_eq!(field("lost"), 0, "{text}");
    assert!(text.contains(&format!("transport: {transport}")), "{text}");
    assert!(text.contains("mux copies/payload byte") && text.contains("PSOCK"), "{text}");
    // the copies line is a measurement: rx_copied_bytes / rx_bytes from the mux's counters
    let line = text.lines().find(|l| l.starts_with("mux copies/payload byte")).unwrap();
    assert!(line.contains("measured: rx_copied_bytes"), "{line}");
}

/// The default demo: two ukcm stacks over the in-memory pair, one process, no privileges.
#[test]
fn demo_short_over_the_in_memory_pair_reports_zero_lost_and_corrupt() {
    demo_short("mem", "ukcm stack ↔ ukcm stack over the in-memory pair");
}

#[test]
fn demo_short_over_kernel_tcp_reports_zero_lost_and_corrupt() {
    demo_short("kernel", "mux over kernel TCP ↔ kernel TCP, loopback");
}

/// A thrift echo server that flips one byte of the 50th message of each connection:
/// `ukcm-load` must notice (corrupt, and that message never verified: lost) and fail.
#[test]
fn load_catches_a_corrupting_server() {
    use std::io::Write;
    use std::net::TcpListener;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut n = 0u64;
                loop {
                    let mut h = [0u8; 4];
                    if s.read_exact(&mut h).is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(h) as usize];
                    if s.read_exact(&mut body).is_err() {
                        return;
                    }
                    n += 1;
                    if n == 50 {
                        *body.last_mut().unwrap() ^= 0x20;
                    }
                    if s.write_all(&[&h[..], &body].concat()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let out = Command::new(LOAD)
        .args([
            "--nic",
            "kernel",
            "--connect",
            &addr,
            "--conns",
            "2",
            "--depth",
            "4",
            "--size",
            "64",
            "--duration",
            "1",
            "--json",
        ])
        .output()
        .expect("run ukcm-load");
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(json_int(&json, "corrupt"), 2, "{json}");
    assert_eq!(json_int(&json, "lost"), 2, "{json}");
    assert!(json.contains("\"ok\":false"), "{json}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED: 2 lost, 2 corrupt"));
}
