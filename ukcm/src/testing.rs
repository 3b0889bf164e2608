//! Helpers for tests that run real programs next to ukcm (redis-server, redis-cli, …): a
//! child process reaped on drop, "is it installed, else SKIP (or fail under
//! `UKCM_PRIVILEGED=1`)", free loopback ports and waiting for a listener. Shared by the
//! test suites of `ukcm` and `ukcm-apps`; not part of the appliance API.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed and reaped on drop, with a scratch directory removed then.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    dir: Option<PathBuf>,
}

impl ChildGuard {
    /// Guards `child` (and `dir`, removed after the child is gone).
    pub fn new(child: Child, dir: Option<PathBuf>) -> Self {
        ChildGuard { child, dir }
    }

    /// The child's process id (to signal it: stop, continue).
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Whether `cmd` is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `true` when every program is installed; otherwise prints `SKIP` and returns `false`,
/// or fails when `UKCM_PRIVILEGED=1` (the test command as root installs them).
pub fn programs_or_skip(test: &str, cmds: &[&str]) -> bool {
    let missing: Vec<&str> = cmds.iter().copied().filter(|c| !have(c)).collect();
    if missing.is_empty() {
        return true;
    }
    let required = std::env::var_os("UKCM_PRIVILEGED").is_some_and(|v| v == "1");
    assert!(!required, "{test}: {missing:?} not installed (scripts/install-deps.sh installs them)");
    eprintln!("SKIP: {test}: {missing:?} not installed (run scripts/install-deps.sh as root)");
    false
}

/// Whether a daemon that drops root to another user (memcached's `-u`) can start here:
/// not root, or root with CAP_SETUID and CAP_SETGID. Root without capabilities (the test
/// command's run under a user's limits) cannot; then it prints `SKIP` and returns `false`,
/// or fails when `UKCM_PRIVILEGED=1`.
pub fn can_drop_root_or_skip(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("");
    let uid0 = field("Uid:").split_whitespace().nth(1) == Some("0");
    let caps = u64::from_str_radix(field("CapEff:"), 16).unwrap_or(0);
    const SETGID: u64 = 1 << 6;
    const SETUID: u64 = 1 << 7;
    if !uid0 || caps & (SETGID | SETUID) == SETGID | SETUID {
        return true;
    }
    let required = std::env::var_os("UKCM_PRIVILEGED").is_some_and(|v| v == "1");
    assert!(!required, "{test}: root without CAP_SETUID/CAP_SETGID cannot start a daemon that drops root");
    eprintln!("SKIP: {test}: root without CAP_SETUID/CAP_SETGID (memcached cannot drop to its user)");
    false
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts on loopback `port`, failing after `limit`.
pub fn wait_for_port(port: u16, limit: Duration) {
    let end = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scratch directory unique to this process and `tag`.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ukcm-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `redis-server` on loopback `port` (no persistence, its own directory), up.
pub fn redis_server(port: u16) -> ChildGuard {
    redis_server_with(port, &[])
}

/// [`redis_server`] with more options (`["--requirepass", "pw"]`).
pub fn redis_server_with(port: u16, options: &[&str]) -> ChildGuard {
    let dir = scratch_dir(&format!("redis-{port}"));
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(options)
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard::new(child, Some(dir));
    wait_for_port(port, Duration::from_secs(60));
    guard
}

/// `redis-cli -p PORT ARGS…`: its output, trimmed (fails the test if it fails).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
