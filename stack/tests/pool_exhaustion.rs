//! Exhaustion slows, never stalls: bulk TCP both ways with the kernel (privileged) through
//! an AF_XDP port whose UMEM and rings are far too small for the traffic, so that frames
//! run out again and again. Every byte still arrives, checked (`kernel_peer/mod.rs`), and
//! the port's counters show that the UMEM or a ring did run short (a test that never
//! exhausted anything would prove nothing). DPDK's mbuf pools get the same treatment in
//! `kernel_interop_dpdk.rs` (`af_xdp_small_pool_*`). A TAP port's pool cannot run short
//! this way (each read takes one frame, which the engine gives back in the same poll; the
//! kernel's TAP queue is the backpressure), so TAP has no case here.
//!
//! Runs as root (`UKCM_PRIVILEGED=1` makes a missing privilege a failure, not a skip).

mod kernel_peer;

use kernel_peer::{kernel_clients_to_ukcm_echo, ukcm_clients_to_kernel_echo};
use ukcm_nic::afxdp::AfXdpPort;
use ukcm_nic::testnet::{privileged_or_skip, Family, Link, TestNet};
use ukcm_nic::PortStats;
use ukcm_stack::Engine;

/// An AF_XDP port with a UMEM of 256 frames and rings of 64, the smallest (the tests
/// elsewhere use 8192 and 2048): the fill ring holds at most 128 frames for the kernel.
fn small_afxdp() -> (Engine<AfXdpPort>, TestNet, Link) {
    kernel_peer::afxdp_engine("exh", Family::V4, 1500, 256, 64)
}

/// Some frame went without a buffer or a ring slot, in either direction.
fn ran_short(s: &PortStats) -> bool {
    s.rx_no_buffer + s.rx_ring_full + s.tx_full > 0
}

#[test]
fn afxdp_tiny_umem_kernel_clients_to_ukcm_echo() {
    if privileged_or_skip("afxdp_tiny_umem_kernel_clients_to_ukcm_echo") {
        let (e, net, link) = small_afxdp();
        let s = kernel_clients_to_ukcm_echo(&net, &link, e, 8);
        assert!(ran_short(&s), "the UMEM never ran short: {s:?}");
    }
}

#[test]
fn afxdp_tiny_umem_ukcm_clients_to_kernel_echo() {
    if privileged_or_skip("afxdp_tiny_umem_ukcm_clients_to_kernel_echo") {
        let (e, net, link) = small_afxdp();
        let s = ukcm_clients_to_kernel_echo(&net, &link, e, 8);
        assert!(ran_short(&s), "the UMEM never ran short: {s:?}");
    }
}
