//! The four AF_XDP rings, one type each: [`FillRing`] and [`TxRing`] (we produce, the
//! kernel consumes), [`CompRing`] and [`RxRing`] (the kernel produces, we consume).
//!
//! Each ring is a power-of-two array of descriptors in memory shared with the kernel, with
//! a free-running producer and consumer index. The side that writes entries publishes them
//! with a Release store of its index after writing; the other side loads that index with
//! Acquire before reading entries (the kernel does the same with
//! `smp_load_acquire`/`smp_store_release`). Each side caches the other's index and only
//! re-reads it when the cached value says the ring is full or empty, so a burst costs two
//! shared-memory accesses, not one per entry.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// An rx or tx descriptor: a UMEM address (chunk + data offset), a length, options.
pub type XdpDesc = libc::xdp_desc;

/// One mmap'd ring: the mapping and pointers to its parts.
#[derive(Debug)]
struct RingMap {
    base: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    desc: NonNull<u8>,
    size: u32,
}

// SAFETY: the mapping is owned by the ring value; the shared indices are atomics, and the
// entries are only touched through `&mut self` methods of the one owner.
unsafe impl Send for RingMap {}

impl RingMap {
    /// Maps the ring of `size` entries of `T` at page offset `pgoff` of the XDP socket `fd`.
    ///
    /// # Safety
    /// `fd` must be an AF_XDP socket on which the ring at `pgoff` was sized to `size`
    /// entries (setsockopt), and `off` must be the kernel's offsets for that ring.
    unsafe fn map<T>(fd: RawFd, off: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Self> {
        if !size.is_power_of_two() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring size must be a power of two"));
        }
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: a fresh shared mapping of the socket's ring; the kernel validates offset
        // and length against the ring it allocated.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        // SAFETY: the kernel's offsets lie inside the mapping it just gave us, and the index
        // and flags words are 4-byte aligned u32s, valid as AtomicU32.
        unsafe {
            Ok(RingMap {
                base,
                map_len,
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                flags: base.add(off.flags as usize).cast(),
                desc: base.add(off.desc as usize),
                size,
            })
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping (see `map`).
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // The kernel sets the flag, then checks the ring; we published the ring, then check
        // the flag. A full fence orders our producer store before this load so one of the
        // two sides always sees the other's write.
        fence(Ordering::SeqCst);
        // SAFETY: as in `producer`.
        let flags = unsafe { self.flags.as_ref() }.load(Ordering::Relaxed);
        flags & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Pointer to entry `idx` (masked) of type `T`.
    fn slot<T>(&self, idx: u32) -> *mut T {
        let i = (idx & (self.size - 1)) as usize;
        // SAFETY: i < size and the descriptor area holds `size` entries of T.
        unsafe { self.desc.as_ptr().cast::<T>().add(i) }
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        if self.map_len == 0 {
            return; // a non-owning view (tests only); no mapping has length zero
        }
        // SAFETY: unmapping exactly the mapping made in `map`; nothing borrows it past self.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}

/// The side of a ring we write: fill and tx.
#[derive(Debug)]
struct Producer<T> {
    map: RingMap,
    prod: u32,
    /// The consumer index plus the ring size: the producer may go up to it.
    cons_limit: u32,
    _t: PhantomData<T>,
}

impl<T: Copy> Producer<T> {
    fn new(map: RingMap) -> Self {
        let prod = map.producer().load(Ordering::Relaxed);
        let cons_limit = map.consumer().load(Ordering::Acquire).wrapping_add(map.size);
        Producer { map, prod, cons_limit, _t: PhantomData }
    }

    fn free(&mut self, want: u32) -> u32 {
        let mut free = self.cons_limit.wrapping_sub(self.prod);
        if free < want {
            // Acquire: the kernel is done with the entries it consumed before we reuse them.
            self.cons_limit = self.map.consumer().load(Ordering::Acquire).wrapping_add(self.map.size);
            free = self.cons_limit.wrapping_sub(self.prod);
        }
        free.min(want)
    }

    fn produce(&mut self, max: u32, mut next: impl FnMut() -> Option<T>) -> u32 {
        let room = self.free(max);
        let mut n = 0;
        while n < room {
            let Some(v) = next() else { break };
            // SAFETY: the slot is in the free part of the ring (between producer and
            // consumer + size), which the kernel does not read until we publish it.
            unsafe { self.map.slot::<T>(self.prod.wrapping_add(n)).write(v) };
            n += 1;
        }
        if n > 0 {
            self.prod = self.prod.wrapping_add(n);
            // Release: the entries written above are visible before the new index.
            self.map.producer().store(self.prod, Ordering::Release);
        }
        n
    }

    /// Entries published but not yet consumed by the kernel.
    fn pending(&self) -> u32 {
        self.prod.wrapping_sub(self.map.consumer().load(Ordering::Acquire))
    }
}

/// The side of a ring we read: completion and rx.
#[derive(Debug)]
struct Consumer<T> {
    map: RingMap,
    cons: u32,
    prod: u32,
    _t: PhantomData<T>,
}

impl<T: Copy> Consumer<T> {
    fn new(map: RingMap) -> Self {
        let cons = map.consumer().load(Ordering::Relaxed);
        let prod = map.producer().load(Ordering::Acquire);
        Consumer { map, cons, prod, _t: PhantomData }
    }

    fn consume(&mut self, max: u32, mut f: impl FnMut(T)) -> u32 {
        let mut avail = self.prod.wrapping_sub(self.cons);
        if avail < max {
            // Acquire: entries the kernel wrote before publishing are visible to our reads.
            self.prod = self.map.producer().load(Ordering::Acquire);
            avail = self.prod.wrapping_sub(self.cons);
        }
        let n = avail.min(max);
        for i in 0..n {
            // SAFETY: the slot is between consumer and producer: published by the kernel
            // and not reused by it until we advance the consumer index.
            f(unsafe { self.map.slot::<T>(self.cons.wrapping_add(i)).read() });
        }
        if n > 0 {
            self.cons = self.cons.wrapping_add(n);
            // Release: our reads of the entries happen before the kernel may overwrite them.
            self.map.consumer().store(self.cons, Ordering::Release);
        }
        n
    }
}

macro_rules! ring_ctor {
    ($ty:ident, $side:ident, $entry:ty, $pgoff:expr) => {
        impl $ty {
            /// Maps this ring of the socket.
            ///
            /// # Safety
            /// `fd` must be an AF_XDP socket whose ring of this kind was sized to `size`
            /// entries, `off` the kernel's mmap offsets for it, and the ring must not be
            /// mapped by anyone else who writes our side of it.
            pub unsafe fn map(fd: RawFd, off: &libc::xdp_ring_offset, size: u32) -> io::Result<Self> {
                // SAFETY: forwarded from this function's contract.
                let map = unsafe { RingMap::map::<$entry>(fd, off, size, $pgoff) }?;
                Ok($ty($side::new(map)))
            }

            /// Entries in the ring.
            pub fn size(&self) -> u32 {
                self.0.map.size
            }

            /// Whether the kernel asked to be woken (XDP_USE_NEED_WAKEUP) to make progress.
            pub fn needs_wakeup(&self) -> bool {
                self.0.map.needs_wakeup()
            }
        }
    };
}

/// Fill ring: UMEM chunk addresses we give the kernel to receive into.
#[derive(Debug)]
pub struct FillRing(Producer<u64>);
ring_ctor!(FillRing, Producer, u64, libc::XDP_UMEM_PGOFF_FILL_RING);

impl FillRing {
    /// Publishes up to `max` addresses taken from `next` (stops early when it returns None);
    /// returns how many. `next` is only called when a slot is free.
    pub fn produce(&mut self, max: u32, next: impl FnMut() -> Option<u64>) -> u32 {
        self.0.produce(max, next)
    }

    /// Free slots (re-reading the kernel's index if the cached one says fewer than `want`).
    pub fn free(&mut self, want: u32) -> u32 {
        self.0.free(want)
    }
}

/// Tx ring: descriptors of frames we ask the kernel to send.
#[derive(Debug)]
pub struct TxRing(Producer<XdpDesc>);
ring_ctor!(TxRing, Producer, XdpDesc, libc::XDP_PGOFF_TX_RING as u64);

impl TxRing {
    /// Publishes up to `max` descriptors from `next`; returns how many.
    pub fn produce(&mut self, max: u32, next: impl FnMut() -> Option<XdpDesc>) -> u32 {
        self.0.produce(max, next)
    }

    /// Free slots (as [`FillRing::free`]).
    pub fn free(&mut self, want: u32) -> u32 {
        self.0.free(want)
    }

    /// Descriptors the kernel has not picked up yet.
    pub fn pending(&self) -> u32 {
        self.0.pending()
    }
}

/// Completion ring: addresses of frames the kernel has finished sending.
#[derive(Debug)]
pub struct CompRing(Consumer<u64>);
ring_ctor!(CompRing, Consumer, u64, libc::XDP_UMEM_PGOFF_COMPLETION_RING);

impl CompRing {
    /// Reads up to `max` completed addresses, calling `f` for each; returns how many.
    pub fn consume(&mut self, max: u32, f: impl FnMut(u64)) -> u32 {
        self.0.consume(max, f)
    }
}

/// Rx ring: descriptors of received frames.
#[derive(Debug)]
pub struct RxRing(Consumer<XdpDesc>);
ring_ctor!(RxRing, Consumer, XdpDesc, libc::XDP_PGOFF_RX_RING as u64);

impl RxRing {
    /// Reads up to `max` descriptors, calling `f` for each; returns how many.
    pub fn consume(&mut self, max: u32, f: impl FnMut(XdpDesc)) -> u32 {
        self.0.consume(max, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring laid out like the kernel's, in an anonymous mapping, so producer/consumer
    /// logic (wrap-around, full, empty) runs without a socket.
    fn fake_map(size: u32, entry: usize) -> RingMap {
        let off = libc::xdp_ring_offset { producer: 0, consumer: 64, flags: 128, desc: 192 };
        let map_len = off.desc as usize + size as usize * entry;
        // SAFETY: anonymous private mapping, owned by the RingMap below (munmap on drop).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = NonNull::new(p.cast::<u8>()).unwrap();
        // SAFETY: offsets inside the mapping, aligned.
        unsafe {
            RingMap {
                base,
                map_len,
                producer: base.add(0).cast(),
                consumer: base.add(64).cast(),
                flags: base.add(128).cast(),
                desc: base.add(192),
                size,
            }
        }
    }

    /// The "kernel" side of a fake ring: the same memory, not owning the mapping
    /// (`map_len` 0 means nothing to unmap).
    fn alias(m: &RingMap) -> RingMap {
        RingMap {
            base: m.base,
            map_len: 0,
            producer: m.producer,
            consumer: m.consumer,
            flags: m.flags,
            desc: m.desc,
            size: m.size,
        }
    }

    #[test]
    fn producer_fills_to_size_then_waits_for_consumer_and_wraps() {
        let map = fake_map(8, 8);
        let peer = alias(&map);
        let mut p: Producer<u64> = Producer::new(map);
        let mut c: Consumer<u64> = Consumer::new(peer);
        let mut next = 0u64;
        assert_eq!(
            p.produce(100, || {
                next += 1;
                Some(next)
            }),
            8,
            "ring holds exactly its size"
        );
        assert_eq!(p.produce(1, || Some(99)), 0, "full");
        let mut got = Vec::new();
        assert_eq!(c.consume(5, |v| got.push(v)), 5);
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert_eq!(
            p.produce(100, || {
                next += 1;
                Some(next)
            }),
            5,
            "consumed slots are reused"
        );
        got.clear();
        for _ in 0..3 {
            c.consume(100, |v| got.push(v));
        }
        assert_eq!(got, [6, 7, 8, 9, 10, 11, 12, 13], "order kept across the wrap");
        assert_eq!(c.consume(1, |_| panic!("empty")), 0);
    }

    #[test]
    fn producer_stops_when_source_runs_dry() {
        let map = fake_map(16, 16);
        let mut p: Producer<XdpDesc> = Producer::new(alias(&map));
        let mut left = 3;
        let n = p.produce(16, || {
            (left > 0).then(|| {
                left -= 1;
                XdpDesc { addr: 4096, len: 60, options: 0 }
            })
        });
        assert_eq!(n, 3);
        assert_eq!(p.pending(), 3);
        drop(p);
        drop(map);
    }
}
