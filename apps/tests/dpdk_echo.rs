//! `ukcm-echo --nic dpdk:ARGS` (feature `dpdk`, root) against the Linux TCP stack: the echo
//! serves through a DPDK vdev (`net_af_packet`, `net_af_xdp`) on the host end of a `TestNet`
//! veth, and `ukcm-load` with kernel sockets runs inside the namespace (every message
//! verified: none lost, corrupted or duplicated). Each echo is a process of its own, so each
//! has its own EAL. Bad EAL arguments and a missing interface make ukcm-echo exit with an
//! error line, not an abort.

mod echo_process;

use std::process::Command;

use echo_process::{load_clean, start_echo, stop_echo};
use ukcm_nic::testnet::{privileged_or_skip, TestNet, TestNetOptions};

const ECHO: &str = env!("CARGO_BIN_EXE_ukcm-echo");
const LOAD: &str = env!("CARGO_BIN_EXE_ukcm-load");

/// EAL arguments for one echo process: no hugepages, no shared files, no PCI scan.
fn eal(vdev: &str) -> String {
    format!(
        "dpdk:--no-pci --no-huge -m 512 --no-shconf --no-telemetry -l 0 --file-prefix=ukcmecho{} --vdev={vdev}",
        std::process::id()
    )
}

/// DPDK 22.11's af_packet PMD joins a PACKET_FANOUT group numbered `(pid ^ ifindex) & 0xffff`
/// (not configurable before 23.x): two processes probing at once can pick the same number
/// and the second fails with EINVAL. The af_packet echoes therefore run one at a time.
static AF_PACKET: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn dpdk_echo_and_load(vdev: &str, mode: &[&str]) {
    let _one_at_a_time = vdev.starts_with("net_af_packet").then(|| AF_PACKET.lock().unwrap_or_else(|e| e.into_inner()));
    let net = TestNet::new("dpe", &TestNetOptions::default()).unwrap();
    let addr = format!("{}/{}", net.ukcm_ip, net.prefix);
    let mut cmd = Command::new(ECHO);
    cmd.args(["--nic", &eal(&format!("{vdev},iface={}", net.host_if)), "--addr", &addr, "--listen", "7000"])
        .args(["--parser", "thrift"])
        .args(mode);
    let (reap, first, rest) = start_echo(cmd);
    let kind = vdev.split(',').next().unwrap();
    assert!(first.contains(&format!("transport: ukcm stack on dpdk:{kind}:0")), "{first}");
    let connect = format!("{}:7000", net.ukcm_ip);
    let out = net
        .peer_command(LOAD)
        .args(["--nic", "kernel", "--connect", &connect, "--conns", "4", "--depth", "16"])
        .args(["--size", "36-20000", "--duration", "5", "--json"])
        .output()
        .expect("run ukcm-load in the namespace");
    let received = load_clean(out);
    let text = stop_echo(reap, rest);
    let mux_line = text.lines().find(|l| l.starts_with("mux ")).expect("mux line");
    let rx_msgs: u64 = mux_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rx_msgs >= received, "mux rx_msgs {rx_msgs} < verified {received}");
}

#[test]
fn echo_on_dpdk_af_packet_run_to_completion_loses_nothing() {
    if privileged_or_skip("echo_on_dpdk_af_packet_run_to_completion_loses_nothing") {
        dpdk_echo_and_load("net_af_packet0", &["--rtc"]);
    }
}

#[test]
fn echo_on_dpdk_af_packet_with_workers_loses_nothing() {
    if privileged_or_skip("echo_on_dpdk_af_packet_with_workers_loses_nothing") {
        dpdk_echo_and_load("net_af_packet0", &["--workers", "2", "--steer", "hash"]);
    }
}

/// ukcm-echo's exit code and stderr for a `--nic` it cannot open.
fn echo_fails(nic: &str) -> (Option<i32>, String) {
    let out = Command::new(ECHO)
        .args(["--nic", nic, "--addr", "10.213.250.1/24", "--listen", "7000", "--parser", "thrift"])
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_eal_arguments_and_missing_interfaces_are_errors() {
    if !privileged_or_skip("bad_eal_arguments_and_missing_interfaces_are_errors") {
        return;
    }
    let (code, err) = echo_fails("dpdk:--no-huge --no-such-eal-option");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot open: rte_eal_init(--no-huge --no-such-eal-option) failed"), "{err}");
    let (code, err) = echo_fails(&eal("net_af_packet0,iface=ukcm-nosuch0"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no interface named \"ukcm-nosuch0\""), "{err}");
    let (code, err) = echo_fails("dpdk:--help");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the EAL would print and exit the process"), "{err}");
}
