//! AF_XDP port: frames go straight between the NIC queue and our pinned frame pool.
//!
//! The port's [`FramePool`](crate::FramePool) *is* the UMEM. An XDP program (five
//! instructions, assembled here and loaded with `bpf(2)`) redirects the bound queue to the
//! socket through an XSKMAP; the program is attached by a BPF link, so it detaches when
//! the last port on the interface drops, or when the process exits.
//!
//! - [`sys`]: kernel ABI missing from `libc` (bpf commands, attrs, instruction encoding);
//! - [`ring`]: one type per ring (fill, completion, rx, tx), with the producer/consumer
//!   protocol;
//! - [`umem`]: which chunks are lent to the kernel, and taking them back;
//! - [`chunk`]: which chunk size an MTU needs, and the largest MTU a chunk holds;
//! - [`socket`]: the AF_XDP socket's syscalls;
//! - [`xdp_prog`]: XSKMAP, program, attachment shared by the queues of one interface;
//! - [`netdev`]: interface lookup;
//! - [`port`]: [`AfXdpPort`], the [`Port`](crate::Port) implementation.

pub mod chunk;
pub mod netdev;
pub mod port;
pub mod ring;
pub mod socket;
pub mod sys;
pub mod umem;
pub mod xdp_prog;

pub use port::AfXdpPort;
pub use xdp_prog::Attached;

use crate::pool::PoolConfig;
use crate::port::PortError;

/// Where to run the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native if the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// In the driver only (fails on drivers without XDP).
    Native,
    /// On the generic skb path (works everywhere, slower).
    Generic,
}

/// How to bind the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Zero-copy if the driver supports it, copy otherwise.
    #[default]
    Auto,
    /// Zero-copy only (`XDP_ZEROCOPY`).
    ZeroCopy,
    /// Copy mode only (`XDP_COPY`); veth and most virtual devices support only this.
    Copy,
}

/// How the UMEM chunk (= pool frame) size is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkSize {
    /// `pool.frame_size`, raised to the smallest chunk that holds a frame of the interface's
    /// MTU: 4096 past MTU 1778 (up to 3826, the largest AF_XDP takes in one chunk). Fewer,
    /// fuller frames need no other setting.
    #[default]
    Auto,
    /// Exactly `pool.frame_size`; an MTU that does not fit is an error.
    Fixed,
}

/// Configuration of one AF_XDP port (one queue of one interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// Interface name.
    pub ifname: String,
    /// The device queue this port owns.
    pub queue_id: u32,
    /// Frame pool (= UMEM) geometry; `frame_size` 2048 or 4096 (AF_XDP chunk sizes),
    /// adjusted to the MTU as `chunk` says.
    pub pool: PoolConfig,
    /// Whether `pool.frame_size` follows the interface MTU.
    pub chunk: ChunkSize,
    /// Entries of the rx and tx rings (a power of two); fill and completion get twice as many.
    pub ring_size: u32,
    /// Native or generic XDP.
    pub mode: XdpMode,
    /// Zero-copy or copy bind.
    pub bind: BindMode,
    /// Use `XDP_USE_NEED_WAKEUP`: syscalls only when the kernel asks for them.
    pub need_wakeup: bool,
    /// Ask for busy polling (`SO_PREFER_BUSY_POLL`) and drive receive from `rx_burst`.
    pub busy_poll: bool,
}

impl AfXdpConfig {
    /// Defaults for `ifname` queue `queue_id`: 4096 frames of 2 KiB (larger if the MTU needs
    /// them), rings of 2048, auto modes, need_wakeup on, no busy polling.
    pub fn new(ifname: &str, queue_id: u32) -> Self {
        AfXdpConfig {
            ifname: ifname.to_owned(),
            queue_id,
            pool: PoolConfig::default(),
            chunk: ChunkSize::Auto,
            ring_size: 2048,
            mode: XdpMode::Auto,
            bind: BindMode::Auto,
            need_wakeup: true,
            busy_poll: false,
        }
    }
}

/// A syscall error as a [`PortError`], with a hint when it is a missing privilege.
pub(crate) fn sys_err(op: &'static str, err: std::io::Error) -> PortError {
    let err = match err.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => std::io::Error::new(
            err.kind(),
            format!("{err}: AF_XDP and XDP need root, or CAP_NET_ADMIN + CAP_NET_RAW + CAP_BPF (+ CAP_IPC_LOCK for the UMEM)"),
        ),
        _ => err,
    };
    PortError::Io { op, err }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_say_what_is_missing() {
        let e = sys_err("bpf(BPF_MAP_CREATE XSKMAP)", std::io::Error::from_raw_os_error(libc::EPERM));
        let msg = e.to_string();
        assert!(msg.starts_with("bpf(BPF_MAP_CREATE XSKMAP): "), "{msg}");
        assert!(msg.contains("need root, or CAP_NET_ADMIN + CAP_NET_RAW + CAP_BPF"), "{msg}");
        let other = sys_err("bind(AF_XDP, copy)", std::io::Error::from_raw_os_error(libc::EINVAL)).to_string();
        assert!(!other.contains("CAP_"), "{other}");
    }
}
