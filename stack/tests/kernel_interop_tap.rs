//! ukcm against the real Linux TCP stack over a TAP port (privileged): the engine owns the
//! TAP's file descriptor, the TAP's kernel side lives in a throwaway namespace, and the
//! kernel there is the peer. The same checks as `kernel_interop.rs` (AF_XDP), from
//! `kernel_peer/mod.rs`, over IPv4 and (64 connections each way) IPv6.
//!
//! Runs as root (`UKCM_PRIVILEGED=1` makes a missing privilege a failure, not a skip).

mod kernel_peer;

use std::io;

use kernel_peer::{
    engine_config, idle_engine_wakes_for_frames, kernel_clients_to_ukcm_echo, ukcm_clients_to_kernel_echo,
};
use ukcm_nic::tap::{TapConfig, TapPort};
use ukcm_nic::testnet::{privileged_or_skip, Family, Link, TestNet};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};
use ukcm_stack::Engine;

fn tap_engine(family: Family) -> (Engine<TapPort>, TestNet, Link) {
    let (port, net) = TestNet::with_tap("stap", |name, _| {
        let cfg = TapConfig {
            name: name.to_string(),
            pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 4096 },
            ..TapConfig::default()
        };
        TapPort::open(&cfg, &PinnedBudget::unlimited(), HugePolicy::Never).map_err(io::Error::other)
    })
    .expect("TAP topology");
    let link = net.link(family).unwrap();
    (Engine::new(port, engine_config(&net, &link)).expect("engine"), net, link)
}

fn kernel_clients(test: &str, family: Family, conns: usize) {
    if privileged_or_skip(test) {
        let (e, net, link) = tap_engine(family);
        kernel_clients_to_ukcm_echo(&net, &link, e, conns);
    }
}

fn ukcm_clients(test: &str, family: Family, conns: usize) {
    if privileged_or_skip(test) {
        let (e, net, link) = tap_engine(family);
        ukcm_clients_to_kernel_echo(&net, &link, e, conns);
    }
}

#[test]
fn tap_kernel_client_to_ukcm_echo_1_conn() {
    kernel_clients("tap_kernel_client_to_ukcm_echo_1_conn", Family::V4, 1);
}

#[test]
fn tap_kernel_client_to_ukcm_echo_64_conns() {
    kernel_clients("tap_kernel_client_to_ukcm_echo_64_conns", Family::V4, 64);
}

#[test]
fn tap_ukcm_client_to_kernel_echo_1_conn() {
    ukcm_clients("tap_ukcm_client_to_kernel_echo_1_conn", Family::V4, 1);
}

#[test]
fn tap_ukcm_client_to_kernel_echo_64_conns() {
    ukcm_clients("tap_ukcm_client_to_kernel_echo_64_conns", Family::V4, 64);
}

#[test]
fn tap_ipv6_kernel_client_to_ukcm_echo_64_conns() {
    kernel_clients("tap_ipv6_kernel_client_to_ukcm_echo_64_conns", Family::V6, 64);
}

#[test]
fn tap_ipv6_ukcm_client_to_kernel_echo_64_conns() {
    ukcm_clients("tap_ipv6_ukcm_client_to_kernel_echo_64_conns", Family::V6, 64);
}

#[test]
fn idle_tap_engine_wakes_for_frames() {
    if privileged_or_skip("idle_tap_engine_wakes_for_frames") {
        let (e, net, link) = tap_engine(Family::V4);
        idle_engine_wakes_for_frames(&net, &link, e);
    }
}
