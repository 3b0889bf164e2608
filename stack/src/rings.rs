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

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use smoltcp::socket::tcp;
use ukcm_nic::{leak_region, HugePolicy, MemError, PinnedBudget, PinnedRegion};

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

struct Pool {
    free: HashMap<SizeClass, Vec<tcp::Socket<'static>>>,
    chunk: &'static mut [u8],
    stats: RingPoolStats,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Mutex::new(Pool { free: HashMap::new(), chunk: Default::default(), stats: RingPoolStats::default() })
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
        let region = PinnedRegion::new(need.max(CHUNK), pool_budget(), HugePolicy::Prefer)?;
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
