//! Opening the NIC port a [`TransportSpec`] names (AF_XDP, TAP, DPDK), with the settings
//! every ukcm server uses, and optional pcap recording of its frames.

use std::sync::Arc;

use std::net::IpAddr;
use ukcm_nic::afxdp::{AfXdpConfig, AfXdpPort};
use ukcm_nic::tap::{TapConfig, TapPort};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig, Port};
use ukcm_stack::smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};

use crate::spec::TransportSpec;

/// Any port, boxed, so one engine loop serves every backend.
pub type AnyPort = Box<dyn Port + Send>;

/// A locally administered MAC for ports without one of their own (TAP): 02:75:6b:63:6d:NN.
pub fn local_mac(last: u8) -> [u8; 6] {
    [0x02, 0x75, 0x6b, 0x63, 0x6d, last]
}

/// `--addr` as the userspace stack's address: IPv4 (a missing prefix means /24) or IPv6
/// (/64).
pub fn stack_cidr(addr: (IpAddr, Option<u8>)) -> Result<IpCidr, String> {
    Ok(match addr.0 {
        IpAddr::V4(v4) => IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Address::from(v4.octets()), addr.1.unwrap_or(24))),
        IpAddr::V6(v6) => IpCidr::Ipv6(Ipv6Cidr::new(Ipv6Address::from(v6.octets()), addr.1.unwrap_or(64))),
    })
}

/// Opens the port a `--nic` names (AF_XDP queue `queue`, TAP, DPDK), charged to `budget`.
/// Errors are one line naming the spec. With `UKCM_PCAP_DIR` set, the port's frames (both
/// ways) are recorded to `$UKCM_PCAP_DIR/<nic>.pcap` (e.g. `afxdp-veth0-0.pcap`,
/// `dpdk-0.pcap`); unset, nothing is wrapped.
pub fn open_port(
    nic: &TransportSpec,
    queue: u32,
    budget: &Arc<PinnedBudget>,
) -> Result<(AnyPort, Option<[u8; 6]>), String> {
    let fail = |e: &dyn std::fmt::Display| format!("--nic {nic}: cannot open: {e}");
    match nic {
        TransportSpec::Afxdp { ifname, .. } => {
            let queue = &queue;
            let cfg = AfXdpConfig {
                pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 8192 },
                ring_size: 2048,
                ..AfXdpConfig::new(ifname, *queue)
            };
            let p = AfXdpPort::open(&cfg, budget, HugePolicy::Prefer).map_err(|e| fail(&e))?;
            Ok((recorded(p, &format!("afxdp-{ifname}-{queue}")).map_err(|e| fail(&e))?, None))
        }
        TransportSpec::Tap { name } => {
            let cfg = TapConfig {
                name: name.clone(),
                pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 4096 },
                ..TapConfig::default()
            };
            let p = TapPort::open(&cfg, budget, HugePolicy::Prefer).map_err(|e| fail(&e))?;
            Ok((recorded(p, &format!("tap-{name}")).map_err(|e| fail(&e))?, Some(local_mac(1))))
        }
        #[cfg(feature = "dpdk")]
        TransportSpec::Dpdk { args } => {
            let (p, mac) = crate::dpdk_port::open(args, budget).map_err(|e| fail(&e))?;
            Ok((recorded(p, &format!("dpdk-{queue}")).map_err(|e| fail(&e))?, mac))
        }
        other => Err(format!("--nic {other}: not a NIC port")),
    }
}

/// `p`, wrapped in a pcap recorder when `UKCM_PCAP_DIR` is set (see `ukcm_nic::pcap`).
fn recorded<P: Port + Send + 'static>(p: P, name: &str) -> Result<AnyPort, ukcm_nic::PortError> {
    match std::env::var_os(ukcm_nic::pcap::PCAP_DIR_ENV) {
        Some(d) if !d.is_empty() => Ok(Box::new(ukcm_nic::pcap::PcapRecorder::from_env(p, name)?)),
        _ => Ok(Box::new(p)),
    }
}
