//! DPDK backend (feature `dpdk`): a [`Port`](crate::Port) over an ethdev queue of the
//! system libdpdk (22.11), through our own bindings (`ukcm-dpdk-sys`).
//!
//! - [`Eal`]: the EAL, initialised once per process from user arguments;
//! - [`DpdkPort`]: bursts over one rx/tx queue pair with a mempool of its own.
//!   [`DpdkPort::open_all`] configures an ethdev with N queue pairs and starts it, giving
//!   one port per queue (one per engine); the device is stopped and closed (its
//!   promiscuous flag restored) when the last of its ports drops.
//!
//! **Frames and mbufs.** A received mbuf becomes a [`Frame`](crate::Frame) through the
//! `Frame::external` hook that already existed for foreign allocators: the frame points at
//! the mbuf's buffer (no copy) and its release frees the mbuf. The pool/AF_XDP path is
//! untouched: a pool frame's drop is still one queue push (the `Home` match was already
//! there), so its speed does not change (see the `pool` bench figures in the README).
//! Frames to send are either mbuf frames (handed to the NIC as they are) or frames of the
//! port's [`FramePool`](crate::FramePool), which smoltcp writes into: those are copied into
//! a fresh mbuf (counted in [`DpdkPort::tx_copies`]). Attaching pool memory to mbufs as
//! external buffers would save that copy; the vdevs used here (af_packet, af_xdp in copy
//! mode, tap) copy every frame into kernel memory anyway.

mod eal;
mod mbuf;
mod port;
pub mod testing;

use std::fmt;

pub use eal::Eal;
pub use port::{DpdkConfig, DpdkPort, EthStats, LinkInfo};

/// Why a DPDK operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpdkError {
    /// Arguments refused before DPDK saw them.
    BadArgs(String),
    /// A vdev names an interface that does not exist.
    NoSuchInterface(String),
    /// `rte_eal_init` failed (`errno` is `rte_errno`).
    EalInit { errno: i32, args: String },
    /// The EAL was already initialised, or initialised and cleaned up, in this process.
    EalAlreadyUsed(String),
    /// No ethdev with that name or id.
    NoSuchPort(String),
    /// An ethdev or mempool call failed (`rc` is the negative errno or `rte_errno`).
    Call { op: &'static str, rc: i32 },
    /// A configuration the device cannot serve.
    Unsupported(String),
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpdkError::BadArgs(m) => write!(f, "bad EAL arguments: {m}"),
            DpdkError::NoSuchInterface(i) => write!(f, "no interface named {i:?} (needed by a DPDK vdev)"),
            DpdkError::EalInit { errno, args } => {
                write!(f, "rte_eal_init({args}) failed: {} (rte_errno {errno})", eal::strerror(*errno))
            }
            DpdkError::EalAlreadyUsed(m) => f.write_str(m),
            DpdkError::NoSuchPort(p) => write!(f, "no DPDK ethdev {p}"),
            DpdkError::Call { op, rc } => write!(f, "{op} failed: {} ({rc})", eal::strerror(rc.abs())),
            DpdkError::Unsupported(m) => write!(f, "unsupported: {m}"),
        }
    }
}

impl std::error::Error for DpdkError {}

impl From<DpdkError> for crate::PortError {
    fn from(e: DpdkError) -> Self {
        match e {
            DpdkError::Unsupported(m) => crate::PortError::Unsupported(m),
            DpdkError::NoSuchInterface(_) | DpdkError::NoSuchPort(_) => crate::PortError::LinkDown(e.to_string()),
            other => crate::PortError::Unsupported(other.to_string()),
        }
    }
}
