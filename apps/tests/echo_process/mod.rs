//! Running `ukcm-echo` as a child process in the privileged tests: start it and wait for its
//! first line, check `ukcm-load --json` found nothing lost or corrupt, stop it with SIGINT
//! and check its final stats.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills and reaps the child on drop.
pub struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An integer field of a one-line JSON object.
pub fn json_int(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat).unwrap_or_else(|| panic!("{key} missing in {json}")) + pat.len();
    json[at..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap()
}

/// Starts the echo (a `Command` already carrying its program), waits for its first line.
pub fn start_echo(mut cmd: Command) -> (Reap, String, std::thread::JoinHandle<String>) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start ukcm-echo");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut err = child.stderr.take().unwrap();
    let reap = Reap(Some(child));
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    if first.is_empty() {
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        panic!("ukcm-echo did not start: {e}");
    }
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        rest + &e
    });
    (reap, first, rest)
}

/// Checks a `ukcm-load --json` run: success, nothing corrupt, lost or duplicated; returns
/// the messages received.
pub fn load_clean(out: std::process::Output) -> u64 {
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ukcm-load failed: {err}\n{json}");
    assert_eq!(json_int(&json, "corrupt"), 0, "{json}");
    assert_eq!(json_int(&json, "lost"), 0, "{json}");
    assert_eq!(json_int(&json, "duplicate"), 0, "{json}");
    let received = json_int(&json, "received");
    assert!(received > 0 && received == json_int(&json, "sent"), "{json}");
    received
}

/// Stops the echo with SIGINT; checks a clean exit with final stats; returns its output.
pub fn stop_echo(mut reap: Reap, rest: std::thread::JoinHandle<String>) -> String {
    let mut child = reap.0.take().unwrap();
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let end = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "ukcm-echo did not exit on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = rest.join().unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("final stats"), "{text}");
    text
}
