//! ukcm against the real Linux TCP stack (privileged) over AF_XDP: the engine runs on the
//! host end of a veth, the kernel in a throwaway namespace is the peer (the checks are in
//! `kernel_peer/mod.rs`, shared with the other port backends).
//!
//! Runs as root (`UKCM_PRIVILEGED=1` makes a missing privilege a failure, not a skip).

mod kernel_peer;

use kernel_peer::{
    engine_config, idle_engine_wakes_for_frames, kernel_clients_to_ukcm_echo, ukcm_clients_to_kernel_echo,
};
use ukcm_nic::afxdp::{AfXdpConfig, AfXdpPort};
use ukcm_nic::testnet::{privileged_or_skip, TestNet, TestNetOptions};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};
use ukcm_stack::Engine;

fn afxdp_engine() -> (Engine<AfXdpPort>, TestNet) {
    let net = TestNet::new("stk", &TestNetOptions::default()).unwrap();
    let xcfg = AfXdpConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 8192 },
        ring_size: 2048,
        ..AfXdpConfig::new(&net.host_if, 0)
    };
    let port = AfXdpPort::open(&xcfg, &PinnedBudget::unlimited(), HugePolicy::Never).expect("AF_XDP port");
    (Engine::new(port, engine_config(&net)).expect("engine"), net)
}

#[test]
fn kernel_client_to_ukcm_echo_1_conn() {
    if privileged_or_skip("kernel_client_to_ukcm_echo_1_conn") {
        let (e, net) = afxdp_engine();
        kernel_clients_to_ukcm_echo(&net, e, 1);
    }
}

#[test]
fn kernel_client_to_ukcm_echo_64_conns() {
    if privileged_or_skip("kernel_client_to_ukcm_echo_64_conns") {
        let (e, net) = afxdp_engine();
        kernel_clients_to_ukcm_echo(&net, e, 64);
    }
}

#[test]
fn ukcm_client_to_kernel_echo_1_conn() {
    if privileged_or_skip("ukcm_client_to_kernel_echo_1_conn") {
        let (e, net) = afxdp_engine();
        ukcm_clients_to_kernel_echo(&net, e, 1);
    }
}

#[test]
fn ukcm_client_to_kernel_echo_64_conns() {
    if privileged_or_skip("ukcm_client_to_kernel_echo_64_conns") {
        let (e, net) = afxdp_engine();
        ukcm_clients_to_kernel_echo(&net, e, 64);
    }
}

#[test]
fn idle_afxdp_engine_wakes_for_frames() {
    if privileged_or_skip("idle_afxdp_engine_wakes_for_frames") {
        let (e, net) = afxdp_engine();
        idle_engine_wakes_for_frames(&net, e);
    }
}
