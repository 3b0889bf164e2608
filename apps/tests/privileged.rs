//! ukcm-echo on the userspace stack against the Linux TCP stack (root; skipped without it,
//! a failure without it under UKCM_PRIVILEGED=1). Traffic stays inside topologies made
//! here: the AF_XDP test serves on the host end of a `TestNet` veth and runs `ukcm-load`
//! inside its namespace (whose only route is the veth's subnet); the TAP test runs both
//! the server and the load inside a fresh namespace holding nothing but the TAP. Both
//! ends on ukcm: `ukcm-load --nic afxdp` on the namespace's veth end (IPv4 and IPv6). `ukcm-demo` as root
//! (its default: AF_XDP) and with `--nic tap` makes its own TestNet.

mod echo_process;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use echo_process::{load_clean, start_echo, stop_echo};
use ukcm_nic::testnet::{privileged_or_skip, run, Family, TestNet, TestNetOptions};

const ECHO: &str = env!("CARGO_BIN_EXE_ukcm-echo");
const LOAD: &str = env!("CARGO_BIN_EXE_ukcm-load");
const DEMO: &str = env!("CARGO_BIN_EXE_ukcm-demo");

fn afxdp_echo_and_load(mode: &[&str]) {
    let net = TestNet::new("apps", &TestNetOptions::default()).unwrap();
    let addr = format!("{}/{}", net.ukcm_ip, net.prefix);
    let mut cmd = Command::new(ECHO);
    cmd.args(["--nic", &format!("afxdp:{}:0", net.host_if), "--addr", &addr, "--listen", "7000"])
        .args(["--parser", "thrift"])
        .args(mode);
    let (reap, first, rest) = start_echo(cmd);
    assert!(first.contains(&format!("transport: ukcm stack on afxdp:{}:0", net.host_if)), "{first}");
    let connect = format!("{}:7000", net.ukcm_ip);
    let out = net
        .peer_command(LOAD)
        .args(["--nic", "kernel", "--connect", &connect, "--conns", "4", "--depth", "16"])
        .args(["--size", "36-20000", "--duration", "10", "--json"])
        .output()
        .expect("run ukcm-load in the namespace");
    let received = load_clean(out);
    let text = stop_echo(reap, rest);
    let mux_line = text.lines().find(|l| l.starts_with("mux ")).expect("mux line");
    let rx_msgs: u64 = mux_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rx_msgs >= received, "mux rx_msgs {rx_msgs} < verified {received}");
    // The XDP program went with the port.
    let link = run(Command::new("ip").args(["-d", "link", "show", "dev", &net.host_if])).unwrap();
    assert!(!link.contains("prog/xdp"), "XDP still attached after exit: {link}");
}

#[test]
fn echo_on_afxdp_run_to_completion_loses_nothing_for_10s() {
    if !privileged_or_skip("echo_on_afxdp_run_to_completion_loses_nothing_for_10s") {
        return;
    }
    afxdp_echo_and_load(&["--rtc"]);
}

#[test]
fn echo_on_afxdp_with_workers_loses_nothing_for_10s() {
    if !privileged_or_skip("echo_on_afxdp_with_workers_loses_nothing_for_10s") {
        return;
    }
    afxdp_echo_and_load(&["--workers", "2", "--steer", "hash", "--busy-poll"]);
}

/// A namespace removed on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "del", &self.0]));
    }
}

#[test]
fn echo_on_tap_loses_nothing() {
    if !privileged_or_skip("echo_on_tap_loses_nothing") {
        return;
    }
    let pid = std::process::id();
    let ns = Netns(format!("ukcm-apptap-{pid}"));
    run(Command::new("ip").args(["netns", "add", &ns.0])).unwrap();
    run(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"])).unwrap();
    let tap = format!("ukt{}", pid % 1_000_000);
    let subnet = pid % 250 + 1;
    let (ukcm_ip, kernel_ip) = (format!("10.214.{subnet}.1"), format!("10.214.{subnet}.2"));
    // The server runs inside the namespace, so the TAP it creates lives there.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.0, ECHO, "--nic", &format!("tap:{tap}"), "--addr", &format!("{ukcm_ip}/24")])
        .args(["--listen", "7000", "--parser", "thrift", "--rtc"]);
    let (reap, first, rest) = start_echo(cmd);
    assert!(
        first.contains(&format!("transport: ukcm stack on tap:{tap}")) || first.contains("ukcm stack on tap"),
        "{first}"
    );
    run(Command::new("ip").args(["-n", &ns.0, "addr", "add", &format!("{kernel_ip}/24"), "dev", &tap])).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, LOAD, "--nic", "kernel", "--connect", &format!("{ukcm_ip}:7000")])
        .args(["--conns", "4", "--depth", "8", "--size", "36-4000", "--duration", "3", "--json"])
        .output()
        .unwrap();
    load_clean(out);
    stop_echo(reap, rest);
}

/// Both ends on ukcm: the load on its own engine on AF_XDP on the namespace's veth end (at
/// the subnet's .3), the echo on AF_XDP on the host end.
#[test]
fn load_on_afxdp_against_echo_on_afxdp_loses_nothing() {
    if privileged_or_skip("load_on_afxdp_against_echo_on_afxdp_loses_nothing") {
        both_ends_on_afxdp(Family::V4);
    }
}

/// [`load_on_afxdp_against_echo_on_afxdp_loses_nothing`] over IPv6 (`fd00:213:N::3/64`
/// against `::1`): the two engines resolve each other by neighbour discovery.
#[test]
fn ipv6_load_on_afxdp_against_echo_on_afxdp_loses_nothing() {
    if privileged_or_skip("ipv6_load_on_afxdp_against_echo_on_afxdp_loses_nothing") {
        both_ends_on_afxdp(Family::V6);
    }
}

fn both_ends_on_afxdp(family: Family) {
    let net = TestNet::new("apps2", &TestNetOptions::default()).unwrap();
    let link = net.link(family).unwrap();
    let mut cmd = Command::new(ECHO);
    cmd.args(["--nic", &format!("afxdp:{}:0", net.host_if), "--addr", &format!("{}/{}", link.ukcm, link.prefix)])
        .args(["--listen", "7000", "--parser", "thrift", "--rtc"]);
    let (reap, first, rest) = start_echo(cmd);
    assert!(first.contains(&format!("listening on {}", SocketAddr::new(link.ukcm, 7000))), "{first}");
    // The load's address: the peer's, with .3 / ::3 at the end.
    let me = match link.peer {
        IpAddr::V4(p) => {
            let o = p.octets();
            IpAddr::from([o[0], o[1], o[2], 3])
        }
        IpAddr::V6(p) => {
            let mut seg = p.segments();
            seg[7] = 3;
            IpAddr::from(seg)
        }
    };
    let out = net
        .peer_command(LOAD)
        .args(["--nic", &format!("afxdp:{}:0", net.peer_if), "--addr", &format!("{me}/{}", link.prefix)])
        .args(["--connect", &SocketAddr::new(link.ukcm, 7000).to_string(), "--conns", "4", "--depth", "16"])
        .args(["--size", "36-20000", "--duration", "3", "--json"])
        .output()
        .expect("run ukcm-load in the namespace");
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(json.contains(&format!("\"nic\":\"afxdp:{}:0\"", net.peer_if)), "{json}");
    assert!(json.contains("\"latency_cdf_us\":[[0,"), "{json}");
    let received = load_clean(out);
    let text = stop_echo(reap, rest);
    let mux_line = text.lines().find(|l| l.starts_with("mux ")).expect("mux line");
    let rx_msgs: u64 = mux_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rx_msgs >= received, "mux rx_msgs {rx_msgs} < verified {received}");
}

/// `ukcm-demo --short` as root: AF_XDP on its own veth by default, load from the kernel
/// side, nothing lost or corrupt; and the same with `--nic tap`.
fn demo_as_root(extra: &[&str], says: &str, transport: &str) {
    let out = Command::new(DEMO).arg("--short").args(extra).output().expect("run ukcm-demo");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ukcm-demo failed: {err}\n{text}");
    assert!(text.contains(says), "{text}");
    let line = text.lines().find(|l| l.starts_with("transport ")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(transport) && line.contains("↔ kernel TCP in namespace ukcm-demo-"), "{line}");
    let field = |name: &str| -> u64 {
        let l = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} line in {text}"));
        l[name.len()..].trim().parse().unwrap_or_else(|_| panic!("{l}"))
    };
    assert_eq!(field("corrupt"), 0, "{text}");
    assert_eq!(field("lost"), 0, "{text}");
    let sent: Vec<u64> = text
        .lines()
        .find(|l| l.starts_with("messages sent/received"))
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    assert!(sent.len() == 2 && sent[0] > 0 && sent[0] == sent[1], "{text}");
    assert!(text.contains("OK: every message came back whole and verified"), "{text}");
}

#[test]
fn demo_as_root_serves_on_afxdp_and_loses_nothing() {
    if !privileged_or_skip("demo_as_root_serves_on_afxdp_and_loses_nothing") {
        return;
    }
    demo_as_root(&[], "running as root: AF_XDP on a throwaway veth", "ukcm stack on afxdp:");
}

#[test]
fn demo_on_tap_in_a_namespace_loses_nothing() {
    if !privileged_or_skip("demo_on_tap_in_a_namespace_loses_nothing") {
        return;
    }
    demo_as_root(&["--nic", "tap"], "transport: ukcm stack on tap:", "ukcm stack on tap:");
}
