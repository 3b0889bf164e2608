//! The NIC layer of ukcm: pinned memory, frame pools, and batched poll-mode ports.
//!
//! - [`region`]: hugepage-backed, locked memory and the pinned-byte budget;
//! - [`pool`]: fixed-size frame pools and the owned [`Frame`] handle;
//! - [`port`]: the [`Port`] trait every backend implements;
//! - backends: [`afxdp`] (AF_XDP sockets), [`tap`] (Linux TAP), [`mem_pair`](mod@mem_pair) (in-process,
//!   with fault injection), [`pcap`] (replay of a capture, and a recorder around any port);
//! - [`testnet`]: throwaway namespaces and veths for the privileged tests;
//! - [`smoltcp_device`]: the only module that knows smoltcp, a `phy::Device` over any port.
//!
//! All of ukcm's `unsafe` lives in this crate; each block says why it is sound.

pub mod afxdp;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod kernel_sock;
pub mod mem_pair;
pub mod msg_ring;
pub mod pcap;
pub mod pool;
pub mod port;
pub mod region;
pub mod ring_mem;
pub mod smoltcp_device;
pub mod tap;
pub mod testnet;
pub mod wakeup;

pub use mem_pair::{mem_pair, FaultConfig, FaultCounts, MemPairConfig, MemPort};
pub use msg_ring::{ByteRing, RingError, RingView};
pub use pool::{Frame, FramePool, FrameRelease, PoolConfig, PoolError, PoolStats, RawFrame};
pub use port::{CopyMode, Port, PortCaps, PortError, PortStats};
pub use region::{
    memlock_limit, page_use, HugePolicy, LockPolicy, MemError, PageKind, PageUse, PinnedBudget, PinnedRegion,
    RegionCarver, RegionSlice,
};
pub use ring_mem::leak_region;
pub use smoltcp_device::inplace_rx::{InPlaceError, InPlaceRx, MirrorStorage, SyncResult};
pub use smoltcp_device::{DeviceStats, PortDevice};
