//! ukcm against the real Linux TCP stack (privileged) over AF_XDP, over IPv4 and IPv6: the
//! engine runs on the host end of a veth, the kernel in a throwaway namespace is the peer
//! (the checks are in `kernel_peer/mod.rs`, shared with the other port backends). Over
//! IPv6 the kernel resolves the engine by neighbour discovery, which the engine answers.
//!
//! At MTU 3500 (what veth takes for native XDP without frags) the same exchanges must
//! cross in frames larger than 1500-byte MTU ones, both ways, checked on the port's counters.
//!
//! Runs as root (`UKCM_PRIVILEGED=1` makes a missing privilege a failure, not a skip).

mod kernel_peer;

use kernel_peer::{idle_engine_wakes_for_frames, kernel_clients_to_ukcm_echo, ukcm_clients_to_kernel_echo};
use ukcm_nic::afxdp::{AfXdpPort, Attached};
use ukcm_nic::testnet::{privileged_or_skip, Family, Link, TestNet};
use ukcm_nic::{Port, PortStats};
use ukcm_stack::Engine;

fn afxdp_engine(family: Family) -> (Engine<AfXdpPort>, TestNet, Link) {
    afxdp_engine_mtu(family, 1500)
}

/// An engine on a veth whose two ends have IP MTU `mtu`; the port's pool starts at 2048-byte
/// frames and must grow them itself when the MTU needs it.
fn afxdp_engine_mtu(family: Family, mtu: u32) -> (Engine<AfXdpPort>, TestNet, Link) {
    kernel_peer::afxdp_engine("stk", family, mtu, 8192, 2048)
}

fn kernel_clients(test: &str, family: Family, conns: usize) {
    if privileged_or_skip(test) {
        let (e, net, link) = afxdp_engine(family);
        kernel_clients_to_ukcm_echo(&net, &link, e, conns);
    }
}

fn ukcm_clients(test: &str, family: Family, conns: usize) {
    if privileged_or_skip(test) {
        let (e, net, link) = afxdp_engine(family);
        ukcm_clients_to_kernel_echo(&net, &link, e, conns);
    }
}

#[test]
fn kernel_client_to_ukcm_echo_1_conn() {
    kernel_clients("kernel_client_to_ukcm_echo_1_conn", Family::V4, 1);
}

#[test]
fn kernel_client_to_ukcm_echo_64_conns() {
    kernel_clients("kernel_client_to_ukcm_echo_64_conns", Family::V4, 64);
}

#[test]
fn ukcm_client_to_kernel_echo_1_conn() {
    ukcm_clients("ukcm_client_to_kernel_echo_1_conn", Family::V4, 1);
}

#[test]
fn ukcm_client_to_kernel_echo_64_conns() {
    ukcm_clients("ukcm_client_to_kernel_echo_64_conns", Family::V4, 64);
}

#[test]
fn ipv6_kernel_client_to_ukcm_echo_1_conn() {
    kernel_clients("ipv6_kernel_client_to_ukcm_echo_1_conn", Family::V6, 1);
}

#[test]
fn ipv6_kernel_client_to_ukcm_echo_64_conns() {
    kernel_clients("ipv6_kernel_client_to_ukcm_echo_64_conns", Family::V6, 64);
}

#[test]
fn ipv6_ukcm_client_to_kernel_echo_1_conn() {
    ukcm_clients("ipv6_ukcm_client_to_kernel_echo_1_conn", Family::V6, 1);
}

#[test]
fn ipv6_ukcm_client_to_kernel_echo_64_conns() {
    ukcm_clients("ipv6_ukcm_client_to_kernel_echo_64_conns", Family::V6, 64);
}

#[test]
fn idle_afxdp_engine_wakes_for_frames() {
    if privileged_or_skip("idle_afxdp_engine_wakes_for_frames") {
        let (e, net, link) = afxdp_engine(Family::V4);
        idle_engine_wakes_for_frames(&net, &link, e);
    }
}

/// The IP MTU of the large-MTU tests: veth's limit for native XDP without frags is 3506.
const LARGE_MTU: usize = 3500;

/// An engine at [`LARGE_MTU`]: 4096-byte UMEM frames chosen for it, native XDP, the engine's
/// MTU following the interface's.
fn large_mtu_engine() -> (Engine<AfXdpPort>, TestNet, Link) {
    let (e, net, link) = afxdp_engine_mtu(Family::V4, LARGE_MTU as u32);
    assert_eq!(e.mtu(), LARGE_MTU, "the engine's MTU follows the interface's");
    assert_eq!(e.port().tx_pool().frame_size(), 4096, "frames large enough for the MTU");
    assert_eq!(e.port().xdp_mode(), Attached::Native, "veth takes native XDP at this MTU");
    (e, net, link)
}

/// Frames larger than any at MTU 1500 crossed both ways, and none beyond the MTU.
fn assert_large_frames(st: &PortStats) {
    let (small, large) = (1500 + 14, LARGE_MTU as u64 + 14);
    assert!(st.rx_max_frame > small && st.rx_max_frame <= large, "received frames: {st:?}");
    assert!(st.tx_max_frame > small && st.tx_max_frame <= large, "sent frames: {st:?}");
}

#[test]
fn large_mtu_kernel_client_to_ukcm_echo() {
    if privileged_or_skip("large_mtu_kernel_client_to_ukcm_echo") {
        let (e, net, link) = large_mtu_engine();
        assert_large_frames(&kernel_clients_to_ukcm_echo(&net, &link, e, 1));
    }
}

#[test]
fn large_mtu_ukcm_client_to_kernel_echo() {
    if privileged_or_skip("large_mtu_ukcm_client_to_kernel_echo") {
        let (e, net, link) = large_mtu_engine();
        assert_large_frames(&ukcm_clients_to_kernel_echo(&net, &link, e, 1));
    }
}
