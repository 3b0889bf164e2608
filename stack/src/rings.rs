//! Pinned socket rings: every TCP socket's rx and tx rings live in pinned memory.
//!
//! smoltcp sockets borrow their rings, and engines keep sockets in `SocketSet<'static>`, so
//! rings are `'static` slices of pinned regions leaked with [`ukcm_nic::leak_region`] (the
//! mapping is never unmapped) and carved with `split_at_mut`. The recyclable unit is the
//! smoltcp socket *together with* its rings: when a connection ends the engine takes its
//! socket out, and [`give`] puts it on a free list for its [`SizeClass`]; [`take`] hands it
//! out again (smoltcp resets a closed socket on `listen`/`connect`). Ring memory is never
//! given to anything but the socket it was made for.
//!
//! The free lists are process-wide, so many engines in one process (tests, one engine per
//! NIC queue) reuse each other's sockets instead of leaking more: pinned memory in use by
//! the pool is bounded by the peak number of rings in use at once, plus one chunk.
//! Engines charge the bytes of the rings they hold to their own `PinnedBudget`
//! (see `Engine`); the pool's mappings are charged to a process-wide budget shown by
//! [`pool_stats`].
//!
//! Only this process reads the rings (smoltcp copies frames in and out), so they are locked
//! when the memory-lock limit allows and stay unlocked otherwise (`LockPolicy::IfAllowed`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use smoltcp::socket::tcp;
use ukcm_nic::{leak_region, HugePolicy, LockPolicy, MemError, MirrorStorage, PinnedBudget, PinnedRegion, RingError};

/// Smallest ring (bytes).
pub const MIN_RING: usize = 1024;
/// Largest ring smoltcp accepts with window scaling (bytes).
pub const MAX_RING: usize = 1 << 30;
/// Pinned memory is mapped in chunks of at least this size.
pub const CHUNK: usize = 2 << 20;

/// A pair of ring sizes (powers of two), the key of the free lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SizeClass {
    rx_log2: u8,
    tx_log2: u8,
}

impl SizeClass {
    /// The class for rings of at least `rx` and `tx` bytes.
    pub fn new(rx: usize, tx: usize) -> Self {
        let f = |n: usize| n.clamp(MIN_RING, MAX_RING).next_power_of_two().trailing_zeros() as u8;
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

/// Counters of the process-wide socket pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingPoolStats {
    /// Pinned bytes mapped for rings (never returned to the OS).
    pub mapped_bytes: u64,
    /// Bytes of mapped memory not yet carved.
    pub uncarved_bytes: u64,
    /// Bytes lost at the ends of chunks too small for the next ring pair.
    pub wasted_bytes: u64,
    /// Sockets (with rings) ever made.
    pub sockets_created: u64,
    /// Sockets on the free lists now.
    pub sockets_free: u64,
    /// Ring bytes of the sockets on the free lists.
    pub free_ring_bytes: u64,
    /// Sockets currently taken by engines.
    pub sockets_out: u64,
}

/// A socket whose rx ring is mirror-mapped storage for in-place receive, with its storage.
pub struct InPlaceSocket {
    /// The socket (its rx ring is `storage`).
    pub socket: tcp::Socket<'static>,
    /// The rx ring's storage; lent views keep it "in use".
    pub storage: MirrorStorage,
}

impl std::fmt::Debug for InPlaceSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlaceSocket").field("storage", &self.storage).finish()
    }
}

struct Pool {
    free: HashMap<SizeClass, Vec<tcp::Socket<'static>>>,
    /// In-place sockets ready for reuse, by class.
    free_inplace: HashMap<SizeClass, Vec<InPlaceSocket>>,
    /// In-place sockets whose storage still has live views: reused only once it has none,
    /// so bytes an application still reads are never overwritten by a new connection.
    quarantine: Vec<(SizeClass, InPlaceSocket)>,
    chunk: &'static mut [u8],
    stats: RingPoolStats,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Mutex::new(Pool {
            free: HashMap::new(),
            free_inplace: HashMap::new(),
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

/// Takes a closed socket with rings of `class`, making one if the free list is empty.
///
/// Fails only if a new pinned chunk cannot be mapped or locked.
pub fn take(class: SizeClass) -> Result<tcp::Socket<'static>, MemError> {
    let mut p = pool().lock();
    if let Some(s) = p.free.get_mut(&class).and_then(Vec::pop) {
        p.stats.sockets_free -= 1;
        p.stats.free_ring_bytes -= class.bytes() as u64;
        p.stats.sockets_out += 1;
        return Ok(s);
    }
    let (rx, tx) = (class.rx_bytes(), class.tx_bytes());
    let need = rx + tx;
    if p.chunk.len() < need {
        let region =
            PinnedRegion::with_lock(need.max(CHUNK), pool_budget(), HugePolicy::Prefer, LockPolicy::IfAllowed)?;
        let fresh = leak_region(region);
        p.stats.mapped_bytes += fresh.len() as u64;
        p.stats.wasted_bytes += p.chunk.len() as u64;
        p.chunk = fresh;
    }
    let chunk = std::mem::take(&mut p.chunk);
    let (rx_mem, rest) = chunk.split_at_mut(rx);
    let (tx_mem, rest) = rest.split_at_mut(tx);
    p.chunk = rest;
    p.stats.uncarved_bytes = p.chunk.len() as u64;
    p.stats.sockets_created += 1;
    p.stats.sockets_out += 1;
    drop(p);
    Ok(tcp::Socket::new(tcp::SocketBuffer::new(rx_mem), tcp::SocketBuffer::new(tx_mem)))
}

/// Returns a socket taken with [`take`] (it is aborted first, so it is closed).
pub fn give(mut socket: tcp::Socket<'static>) {
    socket.abort();
    let class = SizeClass::new(socket.recv_capacity(), socket.send_capacity());
    let mut p = pool().lock();
    p.stats.sockets_free += 1;
    p.stats.free_ring_bytes += class.bytes() as u64;
    p.stats.sockets_out -= 1;
    p.free.entry(class).or_default().push(socket);
}

/// The class of an in-place socket: its rx ring is at least a page (mirror mappings are
/// page-granular).
pub fn inplace_class(rx: usize, tx: usize) -> SizeClass {
    SizeClass::new(rx.max(4096), tx)
}

/// Takes a closed socket whose rx ring is mirror-mapped storage (see [`InPlaceSocket`]),
/// making one if none is free. The tx ring comes from the ordinary pinned chunks.
pub fn take_inplace(class: SizeClass) -> Result<InPlaceSocket, RingError> {
    let mut p = pool().lock();
    // Sockets out of quarantine first.
    let mut i = 0;
    while i < p.quarantine.len() {
        if p.quarantine[i].1.storage.in_use() {
            i += 1;
        } else {
            let (c, s) = p.quarantine.swap_remove(i);
            p.free_inplace.entry(c).or_default().push(s);
        }
    }
    if let Some(s) = p.free_inplace.get_mut(&class).and_then(Vec::pop) {
        p.stats.sockets_free -= 1;
        p.stats.free_ring_bytes -= class.bytes() as u64;
        p.stats.sockets_out += 1;
        return Ok(s);
    }
    let tx = class.tx_bytes();
    if p.chunk.len() < tx {
        let region = PinnedRegion::with_lock(tx.max(CHUNK), pool_budget(), HugePolicy::Prefer, LockPolicy::IfAllowed)
            .map_err(RingError::Budget)?;
        let fresh = leak_region(region);
        p.stats.mapped_bytes += fresh.len() as u64;
        p.stats.wasted_bytes += p.chunk.len() as u64;
        p.chunk = fresh;
    }
    let chunk = std::mem::take(&mut p.chunk);
    let (tx_mem, rest) = chunk.split_at_mut(tx);
    p.chunk = rest;
    let (storage, rx_mem) = MirrorStorage::new(class.rx_bytes(), pool_budget())?;
    p.stats.mapped_bytes += class.rx_bytes() as u64;
    p.stats.uncarved_bytes = p.chunk.len() as u64;
    p.stats.sockets_created += 1;
    p.stats.sockets_out += 1;
    drop(p);
    let socket = tcp::Socket::new(tcp::SocketBuffer::new(rx_mem), tcp::SocketBuffer::new(tx_mem));
    Ok(InPlaceSocket { socket, storage })
}

/// Returns an in-place socket (aborted first). While views lent from its ring are alive it
/// waits in quarantine; it is reused only after.
pub fn give_inplace(mut s: InPlaceSocket) {
    s.socket.abort();
    let class = inplace_class(s.socket.recv_capacity(), s.socket.send_capacity());
    let mut p = pool().lock();
    p.stats.sockets_free += 1;
    p.stats.free_ring_bytes += class.bytes() as u64;
    p.stats.sockets_out -= 1;
    if s.storage.in_use() {
        p.quarantine.push((class, s));
    } else {
        p.free_inplace.entry(class).or_default().push(s);
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
    }

    #[test]
    fn sockets_come_back_and_are_reused() {
        // an unusual class so parallel tests do not share it
        let class = SizeClass::new(1 << 13, 1 << 11);
        let a = take(class).unwrap();
        assert_eq!(a.recv_capacity(), 1 << 13);
        assert_eq!(a.send_capacity(), 1 << 11);
        let before = pool_stats().sockets_created;
        give(a);
        let b = take(class).unwrap();
        assert_eq!(pool_stats().sockets_created, before, "reused, not made");
        assert_eq!(b.state(), tcp::State::Closed);
        give(b);
    }
}
