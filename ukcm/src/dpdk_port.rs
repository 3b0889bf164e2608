//! `dpdk:ARGS` transports (feature `dpdk`): ARGS are EAL arguments separated by spaces, e.g.
//! `dpdk:--no-pci --no-huge -m 512 --no-shconf --vdev=net_af_packet0,iface=veth0`. The EAL
//! starts once per process (on the engine thread that opens the port); the first ethdev it
//! probed becomes the port. The EAL is cleaned up when the port is dropped.

use std::sync::Arc;

use ukcm_nic::dpdk::{DpdkConfig, DpdkPort, Eal};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};

/// Starts the EAL with `args` and opens queue 0 of its first port; errors are one line.
pub fn open(
    args: &str,
    budget: &Arc<PinnedBudget>,
) -> Result<(Box<dyn ukcm_nic::Port + Send>, Option<[u8; 6]>), String> {
    let args: Vec<&str> = args.split_whitespace().collect();
    if args.is_empty() {
        return Err("no EAL arguments (e.g. dpdk:--no-pci --no-huge -m 512 --vdev=net_af_packet0,iface=veth0)".into());
    }
    let eal = Eal::init(&args).map_err(|e| e.to_string())?;
    let cfg = DpdkConfig {
        // 32767: the af_xdp vdev stalled under bulk receive with 8191 (see kernel_interop_dpdk.rs).
        mbufs: 32767,
        tx_pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 8192 },
        huge: HugePolicy::Prefer,
        ..DpdkConfig::default()
    };
    let port = DpdkPort::open(&eal, &cfg, budget).map_err(|e| e.to_string())?;
    // The port holds the EAL; ours can go.
    Ok((Box::new(port), None))
}
