//! The `Port` trait: a narrow, batched, poll-mode link layer (Demikernel's shape).
//!
//! Ports move whole Ethernet frames (no FCS). They never block and never drop silently:
//! `tx_burst` sends a prefix of what it is given and leaves the rest with the caller, and
//! every frame a port had to discard on receive is counted in [`PortStats`].

use std::fmt;

use crate::pool::{FramePool, PoolError};

/// Whether frames cross the user/kernel boundary without a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// The NIC (or kernel) DMAs straight into our pool (AF_XDP zero-copy, DPDK).
    ZeroCopy,
    /// The kernel copies between its buffers and our pool (AF_XDP copy mode, TAP).
    Copy,
    /// Frames are passed between ports in one process (in-memory pair, pcap replay).
    InProcess,
}

/// What a port can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortCaps {
    /// Human-readable kind and device, e.g. `afxdp:veth0:0 (native, copy)`.
    pub name: String,
    /// IP MTU (the Ethernet payload), as Linux reports it.
    pub mtu: usize,
    /// Largest burst the port handles per call.
    pub max_burst: usize,
    /// Hardware queues available on the device; this port owns one of them.
    pub queues: u32,
    /// The queue this port owns.
    pub queue_id: u32,
    /// How frames get to the wire.
    pub copy_mode: CopyMode,
    /// The device checks received IPv4/TCP/UDP checksums (so the stack may skip them).
    pub rx_checksum_offload: bool,
    /// The device fills in transmitted checksums.
    pub tx_checksum_offload: bool,
    /// The device's MAC address, if it has one of its own.
    pub mac: Option<[u8; 6]>,
}

impl PortCaps {
    /// A port that moves frames within the process (in-memory pair, pcap replay, test
    /// ports): one queue, bursts of 64, no offloads.
    pub fn in_process(name: String, mtu: usize, mac: Option<[u8; 6]>) -> Self {
        PortCaps {
            name,
            mtu,
            max_burst: 64,
            queues: 1,
            queue_id: 0,
            copy_mode: CopyMode::InProcess,
            rx_checksum_offload: false,
            tx_checksum_offload: false,
            mac,
        }
    }
}

/// Counters every port keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames handed to the caller by `rx_burst`.
    pub rx_frames: u64,
    /// Bytes in those frames.
    pub rx_bytes: u64,
    /// Frames accepted by `tx_burst`.
    pub tx_frames: u64,
    /// Bytes in those frames.
    pub tx_bytes: u64,
    /// Frames the port had to discard on receive, all reasons (the three below, and any a
    /// backend cannot tell apart).
    pub rx_dropped: u64,
    /// Of those: no free frame to receive into (AF_XDP: fill ring empty or the frame longer
    /// than a pool frame; DPDK: `rx_nombuf`). The frame pool is too small for the load.
    pub rx_no_buffer: u64,
    /// Of those: the receive ring was full (AF_XDP `rx_ring_full`, DPDK `imissed`): the engine
    /// did not poll often enough or its per-poll budget is too small for the arrival rate.
    pub rx_ring_full: u64,
    /// Of those: a descriptor or frame the port could not use (bad AF_XDP descriptor, a
    /// truncated TAP read, an mbuf that is not one of ours).
    pub rx_invalid: u64,
    /// Times `tx_burst` could not take every frame (ring or link full): backpressure events.
    pub tx_full: u64,
    /// Times the port had to wake the kernel (AF_XDP need_wakeup, TAP writes).
    pub wakeups: u64,
    /// The largest frame received, in bytes (Ethernet header included): shows whether a
    /// large MTU is really used. Kept by AF_XDP; 0 where a backend does not track it.
    pub rx_max_frame: u64,
    /// The largest frame transmitted, in bytes, as `rx_max_frame`.
    pub tx_max_frame: u64,
}

/// Why a port operation failed (the port is then unusable or the call must be retried).
#[derive(Debug)]
pub enum PortError {
    /// A system call failed.
    Io { op: &'static str, err: std::io::Error },
    /// The frame pool failed.
    Pool(PoolError),
    /// The device is gone or down.
    LinkDown(String),
    /// A configuration the backend cannot serve.
    Unsupported(String),
    /// A file-backed port (pcap) found bad data.
    BadInput(String),
}

impl PortError {
    /// An I/O error from the last OS error, naming the operation.
    pub fn last_os(op: &'static str) -> Self {
        PortError::Io { op, err: std::io::Error::last_os_error() }
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortError::Io { op, err } => write!(f, "{op}: {err}"),
            PortError::Pool(e) => write!(f, "{e}"),
            PortError::LinkDown(d) => write!(f, "link down: {d}"),
            PortError::Unsupported(d) => write!(f, "unsupported: {d}"),
            PortError::BadInput(d) => write!(f, "bad input: {d}"),
        }
    }
}

impl std::error::Error for PortError {}

impl From<PoolError> for PortError {
    fn from(e: PoolError) -> Self {
        PortError::Pool(e)
    }
}

/// A batched, poll-mode network port.
pub trait Port {
    /// Appends up to `max` received frames to `out`; returns how many. Never blocks.
    fn rx_burst(&mut self, out: &mut Vec<crate::Frame>, max: usize) -> Result<usize, PortError>;

    /// Sends frames from the front of `frames`, removing the ones sent; returns how many.
    /// Frames that could not be sent now stay in `frames`, in order, for the next call.
    fn tx_burst(&mut self, frames: &mut Vec<crate::Frame>) -> Result<usize, PortError>;

    /// What the port can do.
    fn caps(&self) -> PortCaps;

    /// Counters.
    fn stats(&self) -> PortStats;

    /// The pool transmit frames should be allocated from (the one the device can read).
    fn tx_pool(&self) -> &FramePool;

    /// A descriptor that polls readable when frames are waiting (the AF_XDP socket, the TAP
    /// device), for an idle engine to sleep on ([`crate::wakeup::wait_readable`]); `None`
    /// when the port has none (in-memory, pcap, DPDK), and the engine sleeps by the clock.
    fn wakeup_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

impl<P: Port + ?Sized> Port for Box<P> {
    fn rx_burst(&mut self, out: &mut Vec<crate::Frame>, max: usize) -> Result<usize, PortError> {
        (**self).rx_burst(out, max)
    }
    fn tx_burst(&mut self, frames: &mut Vec<crate::Frame>) -> Result<usize, PortError> {
        (**self).tx_burst(frames)
    }
    fn caps(&self) -> PortCaps {
        (**self).caps()
    }
    fn stats(&self) -> PortStats {
        (**self).stats()
    }
    fn tx_pool(&self) -> &FramePool {
        (**self).tx_pool()
    }
    fn wakeup_fd(&self) -> Option<std::os::fd::RawFd> {
        (**self).wakeup_fd()
    }
}
