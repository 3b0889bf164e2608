//! The UMEM: the port's frame pool, seen by the kernel as one registered memory area, and
//! the bookkeeping of which chunks are currently lent to the kernel and why.
//!
//! A chunk is either ours (in the pool or in a [`Frame`]) or lent: on the fill ring or
//! held by the kernel for receive (`Lent::Fill`), or on the tx ring / in flight until it
//! shows up on the completion ring (`Lent::Tx`). Frames cross with
//! [`Frame::into_raw`] / [`FramePool::from_raw`], so the pool's own state bytes refuse a
//! double return too. Addresses the kernel hands back are checked against this table:
//! a descriptor for a chunk we did not lend for that purpose is counted and ignored,
//! never turned into a second owner.
//!
//! When the [`Umem`] drops — after the socket is closed, so the kernel no longer writes —
//! every chunk still lent comes back to the pool: nothing leaks across a port's life.

use super::ring::XdpDesc;
use crate::pool::{FramePool, PoolError, RawFrame};
use crate::Frame;

/// Why a chunk is outside the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lent {
    No,
    Fill,
    Tx,
}

/// Frames lent to the kernel, by chunk.
#[derive(Debug)]
pub struct Umem {
    pool: FramePool,
    lent: Vec<Lent>,
    fill_out: usize,
    tx_out: usize,
    bad_addrs: u64,
}

impl Umem {
    /// Bookkeeping over `pool` (its memory is what gets registered as UMEM).
    pub fn new(pool: FramePool) -> Self {
        let n = pool.capacity();
        Umem { pool, lent: vec![Lent::No; n], fill_out: 0, tx_out: 0, bad_addrs: 0 }
    }

    /// The pool.
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    /// Chunks lent for receive (on the fill ring or held by the kernel).
    pub fn fill_out(&self) -> usize {
        self.fill_out
    }

    /// Chunks lent for transmit and not completed yet.
    pub fn tx_out(&self) -> usize {
        self.tx_out
    }

    /// Addresses from the kernel that named a chunk not lent for that purpose.
    pub fn bad_addrs(&self) -> u64 {
        self.bad_addrs
    }

    /// Takes a free frame from the pool and lends it for receive; its chunk address goes on
    /// the fill ring. `None` when the pool is empty.
    pub fn lend_fill(&mut self) -> Option<u64> {
        let frame = self.pool.alloc().ok()?;
        let raw = frame.into_raw().ok()?; // pool frames always convert
        self.lent[raw.index as usize] = Lent::Fill;
        self.fill_out += 1;
        Some(self.pool.chunk_addr(raw.index))
    }

    /// Turns an rx descriptor into an owned frame (data where the kernel put it).
    pub fn take_rx(&mut self, desc: XdpDesc) -> Option<Frame> {
        let raw = self.reclaim(desc.addr, desc.len, Lent::Fill)?;
        self.fill_out -= 1;
        self.pool.from_raw(raw).ok()
    }

    /// Lends a frame of this pool for transmit; returns its descriptor.
    ///
    /// The frame must come from [`Umem::pool`] (the caller copies foreign frames first).
    pub fn lend_tx(&mut self, frame: Frame) -> XdpDesc {
        debug_assert!(frame.is_from(&self.pool));
        let raw = frame.into_raw().expect("pool frame");
        self.lent[raw.index as usize] = Lent::Tx;
        self.tx_out += 1;
        XdpDesc { addr: self.pool.chunk_addr(raw.index) + raw.offset as u64, len: raw.len, options: 0 }
    }

    /// Takes back a transmitted frame named by a completion address (it returns to the pool).
    pub fn complete_tx(&mut self, addr: u64) {
        if let Some(raw) = self.reclaim(addr, 0, Lent::Tx) {
            self.tx_out -= 1;
            drop(self.pool.from_raw(raw));
        }
    }

    fn reclaim(&mut self, addr: u64, len: u32, why: Lent) -> Option<RawFrame> {
        match self.pool.raw_from_addr(addr, len) {
            Ok(raw) if self.lent[raw.index as usize] == why => {
                self.lent[raw.index as usize] = Lent::No;
                Some(raw)
            }
            _ => {
                self.bad_addrs += 1;
                tracing::warn!(addr, ?why, "AF_XDP: kernel returned an address we did not lend");
                None
            }
        }
    }

    /// Takes back every lent chunk.
    ///
    /// Only sound once the kernel can no longer touch them: the socket is closed.
    fn reclaim_all(&mut self) -> Result<usize, PoolError> {
        let mut n = 0;
        for i in 0..self.lent.len() {
            if self.lent[i] != Lent::No {
                self.lent[i] = Lent::No;
                drop(self.pool.from_raw(RawFrame { index: i as u32, offset: 0, len: 0 })?);
                n += 1;
            }
        }
        self.fill_out = 0;
        self.tx_out = 0;
        Ok(n)
    }
}

impl Drop for Umem {
    /// The port declares its `Umem` after the socket and rings, so by now the socket is
    /// closed and the kernel has let go of every chunk.
    fn drop(&mut self) {
        if let Err(e) = self.reclaim_all() {
            tracing::error!(%e, "AF_XDP: could not take back a lent frame");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolConfig;
    use crate::region::{HugePolicy, PinnedBudget};

    fn pool(frames: usize) -> FramePool {
        let cfg = PoolConfig { frame_size: 2048, headroom: 256, frames };
        FramePool::with_region(cfg, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap()
    }

    #[test]
    fn fill_rx_round_trip_uses_the_kernels_offset() {
        let p = pool(4);
        let mut u = Umem::new(p.clone());
        let addr = u.lend_fill().unwrap();
        assert_eq!(addr % 2048, 0);
        assert_eq!(u.fill_out(), 1);
        let f = u.take_rx(XdpDesc { addr: addr + 256, len: 60, options: 0 }).unwrap();
        assert_eq!((f.headroom(), f.len()), (256, 60));
        assert_eq!(u.fill_out(), 0);
        // The same descriptor again (a kernel bug or a replay) is refused, not a double owner.
        assert!(u.take_rx(XdpDesc { addr: addr + 256, len: 60, options: 0 }).is_none());
        assert_eq!(u.bad_addrs(), 1);
        drop(f);
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn tx_descriptor_carries_the_data_offset_and_completes() {
        let p = pool(4);
        let mut u = Umem::new(p.clone());
        let mut f = p.alloc().unwrap();
        f.fill_from(&[7u8; 100]).unwrap();
        let idx = f.id() as u32;
        let d = u.lend_tx(f);
        assert_eq!(d.addr, p.chunk_addr(idx) + 256);
        assert_eq!(d.len, 100);
        // A completion for a fill-lent chunk is refused.
        let fa = u.lend_fill().unwrap();
        u.complete_tx(fa);
        assert_eq!(u.bad_addrs(), 1);
        u.complete_tx(d.addr);
        assert_eq!(u.tx_out(), 0);
        assert_eq!(p.outstanding(), 1, "only the fill frame is out");
        drop(u);
        assert_eq!(p.outstanding(), 0, "drop takes back what is still lent");
    }

    #[test]
    fn lend_fill_stops_when_pool_is_empty() {
        let p = pool(2);
        let mut u = Umem::new(p.clone());
        assert!(u.lend_fill().is_some() && u.lend_fill().is_some());
        assert!(u.lend_fill().is_none());
        drop(u);
        assert_eq!(p.outstanding(), 0);
    }
}
