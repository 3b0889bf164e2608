//! ukcm against the Linux TCP stack through DPDK (feature `dpdk`, root): the engine runs over
//! a [`DpdkPort`] on `net_af_packet` and `net_af_xdp` vdevs over the host end of a veth, and
//! on a `net_tap` vdev whose kernel side is moved into the peer namespace. The checks are
//! the ones every backend runs (`kernel_peer/mod.rs`): the kernel pings the engine, kernel
//! clients use it as an echo server, ukcm clients use a kernel echo server (1 MiB each way
//! per connection, byte-exact).
//!
//! DPDK allows one EAL per process: each scenario runs in a child process (this test binary
//! re-run with `--exact child_<scenario> --ignored` and `UKCM_DPDK_CHILD=1`). The `child_*`
//! tests do nothing without that variable.

mod kernel_peer;

use kernel_peer::{engine_config, kernel_clients_to_ukcm_echo, ukcm_clients_to_kernel_echo};
use ukcm_nic::dpdk::testing::{in_own_process, is_child, test_eal_args};
use ukcm_nic::dpdk::{DpdkConfig, DpdkPort, Eal};
use ukcm_nic::testnet::{privileged_or_skip, Family, TestNet, TestNetOptions};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};
use ukcm_stack::Engine;

fn dpdk_config(device: &str) -> DpdkConfig {
    DpdkConfig {
        device: Some(device.into()),
        tx_pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 8192 },
        huge: HugePolicy::Never,
        ..DpdkConfig::default()
    }
}

/// A veth topology with the DPDK vdev `kind` (`net_af_packet` or `net_af_xdp`) on its host end.
fn veth_engine(kind: &str) -> (Engine<DpdkPort>, TestNet, Eal) {
    veth_engine_with(kind, 8191)
}

/// [`veth_engine`] with a pool of `mbufs`.
fn veth_engine_with(kind: &str, mbufs: u32) -> (Engine<DpdkPort>, TestNet, Eal) {
    let net = TestNet::new("dpd", &TestNetOptions::default()).unwrap();
    let name = format!("{kind}0");
    let extra = if kind == "net_af_xdp" { ",start_queue=0,queue_count=1" } else { "" };
    let eal = Eal::init(&test_eal_args(&format!("{name},iface={}{extra}", net.host_if), 512)).expect("EAL init");
    // net_af_xdp with 8191 mbufs: with the pool's default layout it lost the mbufs past the
    // UMEM it registered and bulk TCP from the kernel stalled (see `PoolLayout::Paged` in
    // nic/src/dpdk/mbuf.rs); this test found it.
    let cfg = DpdkConfig { mbufs, ..dpdk_config(&name) };
    let port = DpdkPort::open(&eal, &cfg, &PinnedBudget::unlimited()).expect("DPDK port");
    let link = net.link(Family::V4).unwrap();
    (Engine::new(port, engine_config(&net, &link)).expect("engine"), net, eal)
}

/// A `net_tap` vdev; its kernel side becomes the peer in a fresh namespace.
fn tap_engine() -> (Engine<DpdkPort>, TestNet, Eal) {
    let mut eal = None;
    let (port, net) = TestNet::with_tap("dpt", |tap, _ip| {
        let e = Eal::init(&test_eal_args(&format!("net_tap0,iface={tap}"), 512)).map_err(std::io::Error::other)?;
        let p = DpdkPort::open(&e, &dpdk_config("net_tap0"), &PinnedBudget::unlimited()).map_err(std::io::Error::other);
        eal = Some(e);
        p
    })
    .expect("TAP topology");
    let link = net.link(Family::V4).unwrap();
    (Engine::new(port, engine_config(&net, &link)).expect("engine"), net, eal.unwrap())
}

macro_rules! scenario {
    ($(#[$attr:meta])* $outer:ident, $child:ident, $setup:expr, $check:ident, $conns:expr) => {
        #[test]
        $(#[$attr])*
        fn $outer() {
            if privileged_or_skip(stringify!($outer)) {
                in_own_process(stringify!($child));
            }
        }

        #[test]
        #[ignore = "runs in its own process (one EAL per process), started by the test without child_"]
        fn $child() {
            if !is_child() {
                return;
            }
            let (e, net, eal) = $setup;
            $check(&net, &net.link(Family::V4).unwrap(), e, $conns);
            drop(eal);
        }
    };
}

scenario!(
    af_packet_kernel_clients_to_ukcm_echo,
    child_af_packet_kernel_clients,
    veth_engine("net_af_packet"),
    kernel_clients_to_ukcm_echo,
    8
);
scenario!(
    af_packet_ukcm_clients_to_kernel_echo,
    child_af_packet_ukcm_clients,
    veth_engine("net_af_packet"),
    ukcm_clients_to_kernel_echo,
    8
);
scenario!(
    af_xdp_kernel_clients_to_ukcm_echo,
    child_af_xdp_kernel_clients,
    veth_engine("net_af_xdp"),
    kernel_clients_to_ukcm_echo,
    8
);
scenario!(
    af_xdp_ukcm_clients_to_kernel_echo,
    child_af_xdp_ukcm_clients,
    veth_engine("net_af_xdp"),
    ukcm_clients_to_kernel_echo,
    8
);
// A pool barely larger than the 2048 mbufs the PMD puts in its fill ring: bulk TCP both ways
// must slow down, not stop, when the rest run short.
scenario!(
    af_xdp_small_pool_kernel_clients_to_ukcm_echo,
    child_af_xdp_small_pool_kernel_clients,
    veth_engine_with("net_af_xdp", 2600),
    kernel_clients_to_ukcm_echo,
    8
);
scenario!(
    af_xdp_small_pool_ukcm_clients_to_kernel_echo,
    child_af_xdp_small_pool_ukcm_clients,
    veth_engine_with("net_af_xdp", 2600),
    ukcm_clients_to_kernel_echo,
    8
);
scenario!(tap_kernel_clients_to_ukcm_echo, child_tap_kernel_clients, tap_engine(), kernel_clients_to_ukcm_echo, 8);
scenario!(tap_ukcm_clients_to_kernel_echo, child_tap_ukcm_clients, tap_engine(), ukcm_clients_to_kernel_echo, 8);
