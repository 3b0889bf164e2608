//! Helpers for DPDK tests. DPDK allows one EAL per process (and none again after cleanup),
//! so every scenario runs in a child process: the visible test re-runs its own test binary
//! with `--exact child_<scenario> --ignored` and `UKCM_DPDK_CHILD=1`, and checks that exactly
//! that test passed. The `child_*` tests do nothing without the variable.

use std::process::Command;
use std::sync::Mutex;

/// Set in the environment of a scenario's child process.
pub const CHILD_ENV: &str = "UKCM_DPDK_CHILD";

/// DPDK 22.11's af_packet PMD joins a PACKET_FANOUT group numbered `(pid ^ ifindex) & 0xffff`
/// (not configurable before 23.x): two processes probing at once can pick the same number
/// and the second fails with EINVAL. Scenarios naming af_packet therefore run one at a time.
static AF_PACKET: Mutex<()> = Mutex::new(());

/// Whether this process is a scenario's child.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs the test `child` of the current test binary in a process of its own; panics with
/// its output if it failed or did not run.
pub fn in_own_process(child: &str) {
    let _one_at_a_time = child.contains("af_packet").then(|| AF_PACKET.lock().unwrap_or_else(|e| e.into_inner()));
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args(["--exact", child, "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("the test binary runs");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{child} failed ({}):\n{text}", out.status);
    assert!(text.contains("1 passed"), "{child} did not run:\n{text}");
}

/// EAL arguments for a test process: no hugepages, no shared files, no PCI scan, one lcore,
/// `mem_mb` of memory, a file prefix unique to the process, and the virtual device `vdev`.
pub fn test_eal_args(vdev: &str, mem_mb: u32) -> Vec<String> {
    let mut a: Vec<String> =
        ["--no-pci", "--no-huge", "-m", &mem_mb.to_string(), "--no-shconf", "--no-telemetry", "-l", "0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    a.push(format!("--file-prefix=ukcm{}", std::process::id()));
    a.push(format!("--vdev={vdev}"));
    a
}
