//! The documented TAP dev loop, end to end (privileged): `ukcm-devloop` on a TAP whose
//! kernel side lives in a throwaway namespace; the kernel there pings the stack, fetches
//! the HTTP page with curl and round-trips bytes through the TCP echo. Every kernel-side
//! tool runs inside that namespace and is bound to the TAP.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ukcm_nic::testnet::{privileged_or_skip, run};

struct Cleanup {
    ns: String,
    child: Child,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = run(Command::new("ip").args(["netns", "del", &self.ns]));
    }
}

fn in_ns(ns: &str, args: &[&str]) -> std::io::Result<String> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

#[test]
fn devloop_answers_ping_curl_and_echo_over_tap() {
    if !privileged_or_skip("devloop_answers_ping_curl_and_echo_over_tap") {
        return;
    }
    let pid = std::process::id();
    let tap = format!("ukd{}", pid % 1_000_000);
    let ns = format!("ukcm-devloop-{pid}");
    let x = pid % 250 + 1;
    let (stack_ip, kernel_ip) = (format!("10.217.{x}.1"), format!("10.217.{x}.2"));
    let child = Command::new(env!("CARGO_BIN_EXE_ukcm-devloop"))
        .args(["--create", "--tap", &tap, "--ip", &format!("{stack_ip}/24"), "--seconds", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _cleanup = Cleanup { ns: ns.clone(), child };
    let t = Instant::now();
    while run(Command::new("ip").args(["link", "show", &tap])).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "devloop did not create {tap}");
        std::thread::sleep(Duration::from_millis(50));
    }
    run(Command::new("ip").args(["netns", "add", &ns])).unwrap();
    run(Command::new("ip").args(["link", "set", &tap, "netns", &ns])).unwrap();
    in_ns(&ns, &["ip", "link", "set", "lo", "up"]).unwrap();
    let _ = in_ns(&ns, &["sysctl", "-qw", &format!("net.ipv6.conf.{tap}.disable_ipv6=1")]);
    in_ns(&ns, &["ip", "addr", "add", &format!("{kernel_ip}/24"), "dev", &tap]).unwrap();
    in_ns(&ns, &["ip", "link", "set", &tap, "up"]).unwrap();
    let _ = in_ns(&ns, &["ethtool", "-K", &tap, "tx", "off"]);

    let ping = in_ns(&ns, &["ping", "-c", "3", "-W", "2", "-I", &tap, &stack_ip]).unwrap();
    assert!(ping.contains(" 0% packet loss"), "{ping}");

    let page =
        in_ns(&ns, &["curl", "-sS", "-m", "10", "--interface", &tap, &format!("http://{stack_ip}:8080/ukcm")]).unwrap();
    assert!(page.contains("hello from ukcm") && page.contains("GET /ukcm"), "{page}");

    // echo: curl's telnet:// sends stdin and prints what comes back
    let mut c = Command::new("ip")
        .args(["netns", "exec", &ns, "curl", "-sS", "-m", "3", "--interface", &tap, &format!("telnet://{stack_ip}:7")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null()) // curl ends with "(28) Time-out": telnet:// has no end of its own
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(b"round trip through ukcm\n").unwrap();
    }
    let out = c.wait_with_output().unwrap();
    let echoed = String::from_utf8_lossy(&out.stdout);
    assert!(echoed.contains("round trip through ukcm"), "echo gave {echoed:?}");
}
