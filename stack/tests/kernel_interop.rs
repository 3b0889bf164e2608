//! ukcm against the real Linux TCP stack (privileged) over AF_XDP, over IPv4 and IPv6: the
//! engine runs on the host end of a veth, the kernel in a throwaway namespace is the peer
//! (the checks are in `kernel_peer/mod.rs`, shared with the other port backends). Over
//! IPv6 the kernel resolves the engine by neighbour discovery, which the engine answers.
//!
//! Runs as root (`UKCM_PRIVILEGED=1` makes a missing privilege a failure, not a skip).

mod kernel_peer;

use kernel_peer::{
    engine_config, idle_engine_wakes_for_frames, kernel_clients_to_ukcm_echo, ukcm_clients_to_kernel_echo,
};
use ukcm_nic::afxdp::{AfXdpConfig, AfXdpPort};
use ukcm_nic::testnet::{privileged_or_skip, Family, Link, TestNet, TestNetOptions};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};
use ukcm_stack::Engine;

fn afxdp_engine(family: Family) -> (Engine<AfXdpPort>, TestNet, Link) {
    let net = TestNet::new("stk", &TestNetOptions::default()).unwrap();
    let link = net.link(family).unwrap();
    let xcfg = AfXdpConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 8192 },
        ring_size: 2048,
        ..AfXdpConfig::new(&net.host_if, 0)
    };
    let port = AfXdpPort::open(&xcfg, &PinnedBudget::unlimited(), HugePolicy::Never).expect("AF_XDP port");
    (Engine::new(port, engine_config(&net, &link)).expect("engine"), net, link)
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
