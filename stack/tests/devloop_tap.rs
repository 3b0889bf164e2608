//! The documented TAP dev loop, end to end (privileged): `ukcm-devloop` on a TAP whose
//! kernel side lives in a throwaway namespace; the kernel there pings the stack, fetches
//! the HTTP page with curl and round-trips bytes through the TCP echo. Every kernel-side
//! tool runs inside that namespace and is bound to the TAP.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ukcm_nic::testnet::{privileged_or_skip, run, TestNet};

/// The devloop process; killed on drop.
struct Devloop(Child);

impl Drop for Devloop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn devloop_answers_ping_curl_and_echo_over_tap() {
    if !privileged_or_skip("devloop_answers_ping_curl_and_echo_over_tap") {
        return;
    }
    // devloop creates the TAP; the topology then moves its kernel side into a namespace.
    let (_devloop, net) = TestNet::with_tap("devloop", |tap, ip| {
        let child = Command::new(env!("CARGO_BIN_EXE_ukcm-devloop"))
            .args(["--create", "--tap", tap, "--ip", &format!("{ip}/24"), "--seconds", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let devloop = Devloop(child);
        let t = Instant::now();
        while run(Command::new("ip").args(["link", "show", tap])).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(std::io::Error::other(format!("devloop did not create {tap}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(devloop)
    })
    .unwrap();
    let (tap, stack_ip) = (net.peer_if.as_str(), net.ukcm_ip.to_string());
    let in_ns = |args: &[&str]| net.peer_cmd(args);

    let ping = in_ns(&["ping", "-c", "3", "-W", "2", "-I", tap, &stack_ip]).unwrap();
    assert!(ping.contains(" 0% packet loss"), "{ping}");

    let page =
        in_ns(&["curl", "-sS", "-m", "10", "--interface", tap, &format!("http://{stack_ip}:8080/ukcm")]).unwrap();
    assert!(page.contains("hello from ukcm") && page.contains("GET /ukcm"), "{page}");

    // echo: curl's telnet:// sends stdin and prints what comes back
    let mut c = net
        .peer_command("curl")
        .args(["-sS", "-m", "3", "--interface", tap, &format!("telnet://{stack_ip}:7")])
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
