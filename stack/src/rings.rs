//! Pinned socket rings: every TCP socket's rx and tx rings live in pinned memory.
//!
//! smoltcp sockets borrow their rings, and engines keep sockets in `SocketSet<'static>`, so
//! rings are `'static` slices of pinned regions leaked with [`ukcm_nic::leak_region`] (the
//! mapping is never unmapped) and carved with `split_at_mut`. The recyclable unit is one
//! ring (a smoltcp `SocketBuffer` over its slice), by size: a connection takes a small rx
//! and tx ring when it opens, swaps a ring for one of the next size when it grows
//! (`tcp::Socket::replace_recv_buffer`, the vendored smoltcp patch), and gives every ring
//! back when it ends ([`give_plain`], [`give_mirror`]); [`take_plain`] and [`take_mirror`]
//! hand them out again. Ring memory is only ever given to one socket at a time.
//!
//! The free lists are process-wide, so many engines in one process (tests, one engine per
//! NIC queue) reuse each other's rings instead of leaking more: pinned memory in use by the
//! pool is bounded by the peak bytes of rings in use at once (per size), plus one chunk.
//! Engines charge the bytes of the rings they hold to their own `PinnedBudget` (see
//! `Engine`); the pool's mappings are charged to a process-wide budget shown by
//! [`pool_stats`].
//!
//! Only this process reads the rings (smoltcp copies frames in and out), so they are locked
//! when the memory-lock limit allows and stay unlocked otherwise (`LockPolicy::IfAllowed`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use smoltcp::socket::tcp::SocketBuffer;
use ukcm_nic::{leak_region, HugePolicy, LockPolicy, MemError, MirrorStorage, PinnedBudget, PinnedRegion, RingError};

/// Smallest ring (bytes).
pub const MIN_RING: usize = 1024;
/// Smallest mirror-mapped ring (bytes): mirror mappings are page-granular.
pub const MIN_MIRROR_RING: usize = 4096;
/// Largest ring smoltcp accepts with window scaling (bytes).
pub const MAX_RING: usize = 1 << 30;
/// Pinned memory is mapped in chunks of at least this size.
pub const CHUNK: usize = 2 << 20;

/// The ring size for at least `n` bytes: a power of two in `MIN_RING..=MAX_RING`.
pub fn ring_size(n: usize) -> usize {
    n.clamp(MIN_RING, MAX_RING).next_power_of_two()
}

/// A pair of ring sizes (powers of two): what a connection holds at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SizeClass {
    rx_log2: u8,
    tx_log2: u8,
}

impl SizeClass {
    /// The class for rings of at least `rx` and `tx` bytes.
    pub fn new(rx: usize, tx: usize) -> Self {
        let f = |n: usize| ring_size(n).trailing_zeros() as u8;
        SizeClass { rx_log2: f(rx), tx_log2: f(tx) }
    }
    /// Receive ring bytes.
    pub fn rx_bytes(&self) -> usize {
        1 << self.rx_log2
    }
    /// Transmit ring bytes.
    pub fn tx_bytes(&self) -> usize {
        1 << self.tx_log2
    }
    /// Both rings.
    pub fn bytes(&self) -> usize {
        self.rx_bytes() + self.tx_bytes()
    }
}

/// Counters of the process-wide ring pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingPoolStats {
    /// Pinned bytes mapped for rings (never returned to the OS).
    pub mapped_bytes: u64,
    /// Bytes of mapped memory not yet carved.
    pub uncarved_bytes: u64,
    /// Bytes lost at the ends of chunks too small for the next ring.
    pub wasted_bytes: u64,
    /// Rings ever made.
    pub rings_created: u64,
    /// Rings on the free lists now (quarantined ones included).
    pub rings_free: u64,
    /// Bytes of the rings on the free lists.
    pub free_ring_bytes: u64,
    /// Rings currently taken by engines.
    pub rings_out: u64,
}

/// A mirror-mapped ring for in-place receive: the `SocketBuffer` over its first half, and
/// the storage token that lends views of it.
pub struct MirrorRing {
    /// The ring smoltcp writes into.
    pub buf: SocketBuffer<'static>,
    /// Its storage; lent views keep it "in use".
    pub storage: MirrorStorage,
}

impl std::fmt::Debug for MirrorRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorRing").field("storage", &self.storage).finish()
    }
}

struct Pool {
    /// Plain rings by log2 of their size.
    plain: HashMap<u8, Vec<SocketBuffer<'static>>>,
    /// Mirror-mapped rings ready for reuse, by log2 of their size.
    mirror: HashMap<u8, Vec<MirrorRing>>,
    /// Mirror rings whose storage still has live views: reused only once it has none, so
    /// bytes an application still reads are never overwritten by another connection.
    quarantine: Vec<MirrorRing>,
    chunk: &'static mut [u8],
    stats: RingPoolStats,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Mutex::new(Pool {
            plain: HashMap::new(),
            mirror: HashMap::new(),
            quarantine: Vec::new(),
            chunk: Default::default(),
            stats: RingPoolStats::default(),
        })
    })
}

fn pool_budget() -> &'static Arc<PinnedBudget> {
    static B: OnceLock<Arc<PinnedBudget>> = OnceLock::new();
    B.get_or_init(PinnedBudget::unlimited)
}

fn log2(bytes: usize) -> u8 {
    bytes.trailing_zeros() as u8
}

impl Pool {
    fn taken(&mut self, bytes: usize) {
        self.stats.rings_free -= 1;
        self.stats.free_ring_bytes -= bytes as u64;
        self.stats.rings_out += 1;
    }
    fn given(&mut self, bytes: usize) {
        self.stats.rings_free += 1;
        self.stats.free_ring_bytes += bytes as u64;
        self.stats.rings_out -= 1;
    }
    /// `bytes` carved from the current chunk (a new chunk is mapped when it is too small).
    fn carve(&mut self, bytes: usize) -> Result<&'static mut [u8], MemError> {
        if self.chunk.len() < bytes {
            let region =
                PinnedRegion::with_lock(bytes.max(CHUNK), pool_budget(), HugePolicy::Prefer, LockPolicy::IfAllowed)?;
            let fresh = leak_region(region);
            self.stats.mapped_bytes += fresh.len() as u64;
            self.stats.wasted_bytes += self.chunk.len() as u64;
            self.chunk = fresh;
        }
        let chunk = std::mem::take(&mut self.chunk);
        let (mem, rest) = chunk.split_at_mut(bytes);
        self.chunk = rest;
        self.stats.uncarved_bytes = self.chunk.len() as u64;
        Ok(mem)
    }
}

/// Takes an empty plain ring of `ring_size(bytes)` bytes, making one if none is free.
///
/// Fails only if a new pinned chunk cannot be mapped or locked.
pub fn take_plain(bytes: usize) -> Result<SocketBuffer<'static>, MemError> {
    let bytes = ring_size(bytes);
    let mut p = pool().lock();
    if let Some(b) = p.plain.get_mut(&log2(bytes)).and_then(Vec::pop) {
        p.taken(bytes);
        return Ok(b);
    }
    let mem = p.carve(bytes)?;
    p.stats.rings_created += 1;
    p.stats.rings_out += 1;
    Ok(SocketBuffer::new(mem))
}

/// Returns a ring taken with [`take_plain`] (its contents are dropped).
pub fn give_plain(mut buf: SocketBuffer<'static>) {
    buf.clear();
    let bytes = buf.capacity();
    let mut p = pool().lock();
    p.given(bytes);
    p.plain.entry(log2(bytes)).or_default().push(buf);
}

/// Why [`swap_plain`] left a socket's buffer as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapRefused {
    /// No ring of that size could be mapped.
    Memory,
    /// The socket refused the new buffer (smaller than the window it advertised).
    Socket,
}

/// Replaces a socket buffer with a plain ring of `bytes` through `replace` (smoltcp's
/// `replace_send_buffer` / `replace_recv_buffer`), giving whichever ring is left over back
/// to the pool: how a ring grows or shrinks.
pub fn swap_plain(
    bytes: usize,
    replace: impl FnOnce(SocketBuffer<'static>) -> Result<SocketBuffer<'static>, SocketBuffer<'static>>,
) -> Result<(), SwapRefused> {
    let buf = take_plain(bytes).map_err(|_| SwapRefused::Memory)?;
    match replace(buf) {
        Ok(old) => {
            give_plain(old);
            Ok(())
        }
        Err(buf) => {
            give_plain(buf);
            Err(SwapRefused::Socket)
        }
    }
}

/// Takes an empty mirror-mapped ring of `ring_size(bytes)` bytes (at least
/// [`MIN_MIRROR_RING`]), making one if none is free.
pub fn take_mirror(bytes: usize) -> Result<MirrorRing, RingError> {
    let bytes = ring_size(bytes.max(MIN_MIRROR_RING));
    let mut p = pool().lock();
    // Rings out of quarantine first.
    let mut i = 0;
    while i < p.quarantine.len() {
        if p.quarantine[i].storage.in_use() {
            i += 1;
        } else {
            let r = p.quarantine.swap_remove(i);
            p.mirror.entry(log2(r.buf.capacity())).or_default().push(r);
        }
    }
    if let Some(r) = p.mirror.get_mut(&log2(bytes)).and_then(Vec::pop) {
        p.taken(bytes);
        return Ok(r);
    }
    let (storage, mem) = MirrorStorage::new(bytes, pool_budget())?;
    p.stats.mapped_bytes += bytes as u64;
    p.stats.rings_created += 1;
    p.stats.rings_out += 1;
    Ok(MirrorRing { buf: SocketBuffer::new(mem), storage })
}

/// Returns a ring taken with [`take_mirror`]. While views lent from it are alive it waits in
/// quarantine; it is reused only after.
pub fn give_mirror(mut r: MirrorRing) {
    r.buf.clear();
    let bytes = r.buf.capacity();
    let mut p = pool().lock();
    p.given(bytes);
    if r.storage.in_use() {
        p.quarantine.push(r);
    } else {
        p.mirror.entry(log2(bytes)).or_default().push(r);
    }
}

/// The pool's counters.
pub fn pool_stats() -> RingPoolStats {
    pool().lock().stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_powers_of_two() {
        let c = SizeClass::new(100, 70_000);
        assert_eq!((c.rx_bytes(), c.tx_bytes()), (1024, 131_072));
        assert_eq!(SizeClass::new(4096, 4096).bytes(), 8192);
        assert_eq!(ring_size(4097), 8192);
    }

    #[test]
    fn rings_come_back_and_are_reused() {
        // an unusual size so parallel tests do not share it
        let a = take_plain(1 << 13).unwrap();
        assert_eq!(a.capacity(), 1 << 13);
        let before = pool_stats().rings_created;
        give_plain(a);
        let mut b = take_plain((1 << 13) - 5).unwrap();
        assert_eq!(pool_stats().rings_created, before, "reused, not made");
        assert!(b.is_empty());
        assert_eq!(b.enqueue_slice(b"left over"), 9);
        give_plain(b);
        assert!(take_plain(1 << 13).unwrap().is_empty(), "cleared when given back");
    }
}
