//! Fixed-size frame pools carved from pinned memory, and the owned [`Frame`] handle.
//!
//! A pool is a region slice cut into `frame_size` chunks (a power of two, so a UMEM
//! address maps to its chunk with a shift). Free chunk indices live in a lock-free bounded
//! queue: the engine allocates and frees without a lock, and a frame dropped on another
//! thread (a frame that crossed a queue) still finds its way home.
//!
//! Every chunk has a state byte that says whether it is lent out as a [`RawFrame`] (to the
//! kernel, for AF_XDP), so taking back a chunk that was not lent is an error, never a double
//! free. Plain alloc and drop never touch it: `Frame` ownership already makes a double free
//! impossible there, and the fast path stays at two queue operations per frame.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::region::{HugePolicy, LockPolicy, MemError, PinnedBudget, PinnedRegion, RegionCarver, RegionSlice};

/// Not lent (free in the queue, or owned by a `Frame`).
const OWNED: u8 = 0;
/// Lent out as a `RawFrame`.
const LENT: u8 = 2;

/// Pool geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Bytes per frame chunk; a power of two between 2048 and 65536 (AF_XDP wants 2048 or 4096).
    pub frame_size: usize,
    /// Bytes left free in front of the data of a fresh frame, for headers pushed later.
    pub headroom: usize,
    /// Number of frames.
    pub frames: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { frame_size: 2048, headroom: 256, frames: 4096 }
    }
}

impl PoolConfig {
    /// Bytes of pinned memory the pool needs.
    pub fn bytes(&self) -> usize {
        self.frame_size * self.frames
    }
}

/// Why a pool operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// No free frame (or fewer than a bulk request needs).
    Exhausted { requested: usize, available: usize },
    /// Geometry rejected (message says which rule).
    BadConfig(&'static str),
    /// A raw frame handed back was not lent out (double free or foreign index).
    NotLent { index: u32 },
    /// A raw frame or address does not belong to this pool.
    OutOfRange { index: u64 },
    /// A length does not fit in the frame.
    TooLong { len: usize, capacity: usize },
    /// Getting the memory failed.
    Mem(MemError),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PoolError::Exhausted { requested, available } => {
                write!(f, "frame pool exhausted: {requested} requested, {available} free")
            }
            PoolError::BadConfig(why) => write!(f, "bad frame pool config: {why}"),
            PoolError::NotLent { index } => {
                write!(f, "frame {index} returned but was not lent out (double free?)")
            }
            PoolError::OutOfRange { index } => write!(f, "frame index/address {index} not in this pool"),
            PoolError::TooLong { len, capacity } => {
                write!(f, "length {len} does not fit in frame (capacity {capacity})")
            }
            PoolError::Mem(e) => write!(f, "frame pool memory: {e}"),
        }
    }
}

impl std::error::Error for PoolError {}

impl From<MemError> for PoolError {
    fn from(e: MemError) -> Self {
        PoolError::Mem(e)
    }
}

/// Counters of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Frames in the pool.
    pub capacity: usize,
    /// Frames currently free.
    pub free: usize,
    /// Frames outside the pool (owned by `Frame`s or lent out): the leak gauge.
    pub outstanding: usize,
    /// Of those, frames lent out as raw frames (e.g. to the kernel).
    pub lent: usize,
    /// Successful allocations since creation.
    pub allocs: u64,
    /// Allocations refused because the pool was empty.
    pub alloc_failures: u64,
}

struct PoolInner {
    mem: RegionSlice,
    base: NonNull<u8>,
    frame_size: u32,
    shift: u32,
    headroom: u32,
    count: u32,
    free: ArrayQueue<u32>,
    state: Box<[AtomicU8]>,
    allocs: AtomicU64,
    alloc_failures: AtomicU64,
    lent: AtomicU64,
}

// SAFETY: `base` points into `mem`, which the inner value owns; chunk ownership is
// arbitrated by the free queue and the state bytes, so sharing the pool across threads is
// sound.
unsafe impl Send for PoolInner {}
// SAFETY: as above.
unsafe impl Sync for PoolInner {}

impl fmt::Debug for PoolInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramePool")
            .field("frame_size", &self.frame_size)
            .field("headroom", &self.headroom)
            .field("count", &self.count)
            .field("free", &self.free.len())
            .finish()
    }
}

/// A pool of fixed-size frames in pinned memory. Cloning gives another handle to the same pool.
#[derive(Debug, Clone)]
pub struct FramePool {
    inner: Arc<PoolInner>,
}

impl FramePool {
    /// A pool over `mem`, which must hold `cfg.frames * cfg.frame_size` bytes.
    pub fn new(mem: RegionSlice, cfg: PoolConfig) -> Result<Self, PoolError> {
        if !cfg.frame_size.is_power_of_two() || !(2048..=65536).contains(&cfg.frame_size) {
            return Err(PoolError::BadConfig("frame_size must be a power of two in 2048..=65536"));
        }
        if cfg.headroom >= cfg.frame_size / 2 {
            return Err(PoolError::BadConfig("headroom must be less than half a frame"));
        }
        if cfg.frames == 0 || cfg.frames > u32::MAX as usize / 2 {
            return Err(PoolError::BadConfig("frames must be in 1..2^31"));
        }
        if mem.len() < cfg.bytes() {
            return Err(PoolError::BadConfig("memory slice smaller than frames * frame_size"));
        }
        if mem.as_ptr() as usize % cfg.frame_size != 0 && mem.as_ptr() as usize % 4096 != 0 {
            return Err(PoolError::BadConfig("memory must be page aligned"));
        }
        let free = ArrayQueue::new(cfg.frames);
        for i in 0..cfg.frames as u32 {
            // Cannot fail: the queue has exactly `frames` slots.
            let _ = free.push(i);
        }
        let state = (0..cfg.frames).map(|_| AtomicU8::new(OWNED)).collect();
        let base = NonNull::new(mem.as_ptr()).ok_or(PoolError::BadConfig("null memory"))?;
        Ok(FramePool {
            inner: Arc::new(PoolInner {
                mem,
                base,
                frame_size: cfg.frame_size as u32,
                shift: cfg.frame_size.trailing_zeros(),
                headroom: cfg.headroom as u32,
                count: cfg.frames as u32,
                free,
                state,
                allocs: AtomicU64::new(0),
                alloc_failures: AtomicU64::new(0),
                lent: AtomicU64::new(0),
            }),
        })
    }

    /// A pool in a pinned (locked) region of its own, charged to `budget`: for frames the
    /// kernel or a device reads (AF_XDP UMEM).
    pub fn with_region(cfg: PoolConfig, budget: &Arc<PinnedBudget>, policy: HugePolicy) -> Result<Self, PoolError> {
        Self::with_region_lock(cfg, budget, policy, LockPolicy::Required)
    }

    /// A pool in a region of its own, locked as `lock` asks: [`LockPolicy::IfAllowed`] for
    /// frames only this process touches (the in-memory pair, TAP, pcap replay), so an
    /// ordinary user's memory-lock limit does not stop them.
    pub fn with_region_lock(
        cfg: PoolConfig,
        budget: &Arc<PinnedBudget>,
        policy: HugePolicy,
        lock: LockPolicy,
    ) -> Result<Self, PoolError> {
        let region = PinnedRegion::with_lock(cfg.bytes(), budget, policy, lock)?;
        let mut carver = RegionCarver::new(region);
        let mem = carver.carve(cfg.bytes(), 4096)?;
        Self::new(mem, cfg)
    }

    /// Takes one frame, empty, with the configured headroom.
    #[inline]
    pub fn alloc(&self) -> Result<Frame, PoolError> {
        match self.inner.free.pop() {
            Some(idx) => {
                self.inner.allocs.fetch_add(1, Ordering::Relaxed);
                Ok(self.take(idx))
            }
            None => {
                self.inner.alloc_failures.fetch_add(1, Ordering::Relaxed);
                Err(PoolError::Exhausted { requested: 1, available: 0 })
            }
        }
    }

    /// Appends `n` frames to `out`, all or nothing.
    pub fn alloc_bulk(&self, out: &mut Vec<Frame>, n: usize) -> Result<(), PoolError> {
        let start = out.len();
        out.reserve(n);
        for _ in 0..n {
            match self.inner.free.pop() {
                Some(idx) => out.push(self.take(idx)),
                None => {
                    let got = out.len() - start;
                    out.truncate(start); // dropping returns them
                    self.inner.alloc_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(PoolError::Exhausted { requested: n, available: got });
                }
            }
        }
        self.inner.allocs.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Returns every frame of `frames` to its pool (the vector is left empty, its capacity kept).
    pub fn free_bulk(frames: &mut Vec<Frame>) {
        frames.clear();
    }

    #[inline]
    fn take(&self, idx: u32) -> Frame {
        debug_assert_ne!(
            self.inner.state[idx as usize].load(Ordering::Relaxed),
            LENT,
            "lent frame {idx} in free queue"
        );
        Frame::from_pool(self, idx, self.inner.headroom, 0)
    }

    /// Takes back a frame that was lent out with [`Frame::into_raw`].
    pub fn from_raw(&self, raw: RawFrame) -> Result<Frame, PoolError> {
        if raw.index >= self.inner.count {
            return Err(PoolError::OutOfRange { index: raw.index as u64 });
        }
        if raw.offset as usize + raw.len as usize > self.inner.frame_size as usize {
            return Err(PoolError::TooLong {
                len: raw.offset as usize + raw.len as usize,
                capacity: self.inner.frame_size as usize,
            });
        }
        self.inner.state[raw.index as usize]
            .compare_exchange(LENT, OWNED, Ordering::AcqRel, Ordering::Relaxed)
            .map_err(|_| PoolError::NotLent { index: raw.index })?;
        self.inner.lent.fetch_sub(1, Ordering::Relaxed);
        Ok(Frame::from_pool(self, raw.index, raw.offset, raw.len))
    }

    /// The raw frame for a byte offset into the pool memory (an AF_XDP UMEM address) and a length.
    pub fn raw_from_addr(&self, addr: u64, len: u32) -> Result<RawFrame, PoolError> {
        let index = addr >> self.inner.shift;
        if index >= self.inner.count as u64 {
            return Err(PoolError::OutOfRange { index: addr });
        }
        let offset = (addr & (self.inner.frame_size as u64 - 1)) as u32;
        Ok(RawFrame { index: index as u32, offset, len })
    }

    /// Byte offset of chunk `index` in pool memory (its AF_XDP UMEM address).
    pub fn chunk_addr(&self, index: u32) -> u64 {
        (index as u64) << self.inner.shift
    }

    /// Frames currently out of the pool (owned or lent): zero when nothing leaked.
    pub fn outstanding(&self) -> usize {
        self.inner.count as usize - self.inner.free.len()
    }

    /// Frames currently free.
    pub fn available(&self) -> usize {
        self.inner.free.len()
    }

    /// Total frames.
    pub fn capacity(&self) -> usize {
        self.inner.count as usize
    }

    /// Chunk size in bytes.
    pub fn frame_size(&self) -> usize {
        self.inner.frame_size as usize
    }

    /// Default headroom of a fresh frame.
    pub fn headroom(&self) -> usize {
        self.inner.headroom as usize
    }

    /// Start of pool memory (for UMEM registration).
    pub fn mem_ptr(&self) -> *mut u8 {
        self.inner.base.as_ptr()
    }

    /// Bytes of pool memory.
    pub fn mem_len(&self) -> usize {
        self.inner.count as usize * self.inner.frame_size as usize
    }

    /// The memory slice the pool lives in.
    pub fn mem(&self) -> &RegionSlice {
        &self.inner.mem
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let free = self.available();
        PoolStats {
            capacity: self.capacity(),
            free,
            outstanding: self.capacity() - free,
            lent: self.inner.lent.load(Ordering::Relaxed) as usize,
            allocs: self.inner.allocs.load(Ordering::Relaxed),
            alloc_failures: self.inner.alloc_failures.load(Ordering::Relaxed),
        }
    }

    /// Whether two handles name the same pool.
    pub fn same_pool(&self, other: &FramePool) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// A frame outside Rust ownership (e.g. in an AF_XDP ring): index, data offset, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame {
    /// Chunk index in the pool.
    pub index: u32,
    /// Offset of the data in the chunk.
    pub offset: u32,
    /// Data length.
    pub len: u32,
}

/// Where a frame goes back to when dropped.
///
/// Pool frames go back to their [`FramePool`]; frames owned by another allocator (a DPDK
/// mempool, for instance) carry a [`FrameRelease`] that frees them there.
enum Home {
    Pool(Arc<PoolInner>),
    External(Arc<dyn FrameRelease>),
}

/// An allocator outside this crate whose buffers travel as [`Frame`]s (e.g. DPDK mbufs).
pub trait FrameRelease: Send + Sync {
    /// Frees the buffer identified by `id` (the value given to [`Frame::external`]).
    fn release(&self, id: u64);
}

/// An owned frame buffer in pinned memory: `[headroom | data | tailroom]`.
///
/// Dropping it returns the buffer to where it came from. Only one `Frame` owns a buffer, so
/// the bytes can be read and written without synchronisation.
pub struct Frame {
    buf: NonNull<u8>,
    cap: u32,
    off: u32,
    len: u32,
    id: u64,
    home: Home,
}

// SAFETY: a Frame exclusively owns its buffer (the pool hands each chunk to one Frame at a
// time), and its home is thread-safe.
unsafe impl Send for Frame {}
// SAFETY: &Frame only allows reading the bytes.
unsafe impl Sync for Frame {}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame").field("id", &self.id).field("off", &self.off).field("len", &self.len).finish()
    }
}

impl Frame {
    fn from_pool(pool: &FramePool, idx: u32, off: u32, len: u32) -> Frame {
        let inner = &pool.inner;
        // SAFETY: idx < count, so the chunk lies inside the pool memory.
        let buf = unsafe { NonNull::new_unchecked(inner.base.as_ptr().add((idx as usize) << inner.shift)) };
        Frame { buf, cap: inner.frame_size, off, len, id: idx as u64, home: Home::Pool(Arc::clone(inner)) }
    }

    /// Wraps a buffer of another allocator.
    ///
    /// # Safety
    /// `buf` must point to `cap` bytes that stay valid and are used by nobody else until
    /// `release.release(id)` is called (which happens exactly once, when the frame drops);
    /// `off + len <= cap`.
    pub unsafe fn external(
        buf: NonNull<u8>,
        cap: u32,
        off: u32,
        len: u32,
        id: u64,
        release: Arc<dyn FrameRelease>,
    ) -> Frame {
        debug_assert!(off as u64 + len as u64 <= cap as u64);
        Frame { buf, cap, off, len, id, home: Home::External(release) }
    }

    /// The data bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: off + len <= cap is an invariant; the buffer is ours.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().add(self.off as usize), self.len as usize) }
    }

    /// The data bytes, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and &mut self excludes other borrows.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_ptr().add(self.off as usize), self.len as usize) }
    }

    /// All bytes from the data start to the end of the buffer, for writing a frame in place
    /// (write, then [`Frame::set_len`]).
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        // SAFETY: off <= cap; the buffer is ours and &mut self excludes other borrows.
        unsafe {
            std::slice::from_raw_parts_mut(self.buf.as_ptr().add(self.off as usize), (self.cap - self.off) as usize)
        }
    }

    /// Data length.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the frame holds no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room from the data start to the end of the buffer.
    #[inline]
    pub fn capacity(&self) -> usize {
        (self.cap - self.off) as usize
    }

    /// Bytes in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.off as usize
    }

    /// Sets the data length (bytes already written with [`Frame::room_mut`]).
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), PoolError> {
        if len > self.capacity() {
            return Err(PoolError::TooLong { len, capacity: self.capacity() });
        }
        self.len = len as u32;
        Ok(())
    }

    /// Grows the data by `n` bytes at the front (into the headroom) and returns them.
    pub fn push_front(&mut self, n: usize) -> Result<&mut [u8], PoolError> {
        if n > self.off as usize {
            return Err(PoolError::TooLong { len: n, capacity: self.off as usize });
        }
        self.off -= n as u32;
        self.len += n as u32;
        Ok(&mut self.data_mut()[..n])
    }

    /// Copies `bytes` into a frame as its whole data.
    pub fn fill_from(&mut self, bytes: &[u8]) -> Result<(), PoolError> {
        let room = self.room_mut();
        if bytes.len() > room.len() {
            return Err(PoolError::TooLong { len: bytes.len(), capacity: room.len() });
        }
        room[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len() as u32;
        Ok(())
    }

    /// Pointer to the first data byte (for zero-copy checks and DMA descriptors).
    pub fn as_ptr(&self) -> *const u8 {
        // SAFETY: off <= cap.
        unsafe { self.buf.as_ptr().add(self.off as usize) }
    }

    /// Chunk index in a pool, or the external allocator's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Offset of the data start inside the buffer.
    pub fn data_offset(&self) -> usize {
        self.off as usize
    }

    /// Whether this frame belongs to `pool`.
    pub fn is_from(&self, pool: &FramePool) -> bool {
        matches!(&self.home, Home::Pool(p) if Arc::ptr_eq(p, &pool.inner))
    }

    /// Lends the buffer out (to the kernel, a ring) without returning it to the pool; take
    /// it back with [`FramePool::from_raw`]. `None` for frames of an external allocator
    /// (the frame is given back unchanged in `Err`).
    pub fn into_raw(self) -> Result<RawFrame, Frame> {
        let Home::Pool(inner) = &self.home else { return Err(self) };
        let raw = RawFrame { index: self.id as u32, offset: self.off, len: self.len };
        inner.state[raw.index as usize].store(LENT, Ordering::Release);
        inner.lent.fetch_add(1, Ordering::Relaxed);
        // Drop the Arc but not the chunk: the chunk stays out of the free queue.
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used again and never dropped, so reading `home` out of
        // it moves the Arc exactly once.
        drop(unsafe { std::ptr::read(&this.home) });
        Ok(raw)
    }
}

impl Frame {
    /// Gives up a frame of the external allocator `release` without releasing it: returns
    /// its id, data offset and length, and the caller now owns the buffer (e.g. hands a DPDK
    /// mbuf to the NIC, which frees it). Frames of a pool or of another allocator come back
    /// unchanged in `Err`.
    pub fn into_external(self, release: &Arc<dyn FrameRelease>) -> Result<(u64, u32, u32), Frame> {
        let Home::External(own) = &self.home else { return Err(self) };
        if Arc::as_ptr(own).cast::<()>() != Arc::as_ptr(release).cast::<()>() {
            return Err(self);
        }
        let out = (self.id, self.off, self.len);
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used again and never dropped, so reading `home` out of
        // it drops the Arc exactly once and skips the release.
        drop(unsafe { std::ptr::read(&this.home) });
        Ok(out)
    }

    /// Whether this frame was made by [`Frame::external`] with `release`.
    pub fn is_external_of(&self, release: &Arc<dyn FrameRelease>) -> bool {
        matches!(&self.home, Home::External(own) if Arc::as_ptr(own).cast::<()>() == Arc::as_ptr(release).cast::<()>())
    }
}

impl Drop for Frame {
    #[inline]
    fn drop(&mut self) {
        match &self.home {
            Home::Pool(inner) => {
                // Cannot overflow: the queue has one slot per chunk and this chunk was out.
                let _ = inner.free.push(self.id as u32);
            }
            Home::External(rel) => rel.release(self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::PinnedBudget;

    fn pool(frames: usize) -> FramePool {
        let cfg = PoolConfig { frame_size: 2048, headroom: 128, frames };
        FramePool::with_region(cfg, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap()
    }

    #[test]
    fn alloc_until_exhausted_then_error_and_all_come_back() {
        let p = pool(64);
        let mut held = Vec::new();
        for _ in 0..64 {
            held.push(p.alloc().unwrap());
        }
        assert_eq!(p.alloc().unwrap_err(), PoolError::Exhausted { requested: 1, available: 0 });
        assert_eq!(p.outstanding(), 64);
        let mut ids: Vec<u64> = held.iter().map(Frame::id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 64, "every frame handed out once");
        drop(held);
        assert_eq!(p.outstanding(), 0);
        assert_eq!(p.stats().alloc_failures, 1);
    }

    #[test]
    fn bulk_alloc_is_all_or_nothing() {
        let p = pool(40);
        let mut v = Vec::new();
        p.alloc_bulk(&mut v, 32).unwrap();
        assert_eq!(v.len(), 32);
        let err = p.alloc_bulk(&mut v, 32).unwrap_err();
        assert_eq!(err, PoolError::Exhausted { requested: 32, available: 8 });
        assert_eq!(v.len(), 32, "a failed bulk alloc leaves nothing behind");
        assert_eq!(p.outstanding(), 32);
        FramePool::free_bulk(&mut v);
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn frames_are_disjoint_and_writable_in_place() {
        let p = pool(8);
        let mut a = p.alloc().unwrap();
        let mut b = p.alloc().unwrap();
        a.fill_from(&[1u8; 1900]).unwrap();
        b.fill_from(&[2u8; 1900]).unwrap();
        assert!(a.data().iter().all(|&x| x == 1));
        assert!(b.data().iter().all(|&x| x == 2));
        assert_eq!(a.headroom(), 128);
        assert_eq!(a.capacity(), 2048 - 128);
        assert!(a.fill_from(&[0u8; 2048]).is_err());
        let hdr = a.push_front(14).unwrap();
        hdr.fill(9);
        assert_eq!(a.len(), 1914);
        assert_eq!(&a.data()[..15], &[9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1]);
        assert!(p.mem().region().contains(a.as_ptr(), a.len()));
    }

    #[test]
    fn raw_round_trip_and_double_return_is_refused() {
        let p = pool(4);
        let mut f = p.alloc().unwrap();
        f.fill_from(b"hello").unwrap();
        let raw = f.into_raw().unwrap();
        assert_eq!(p.outstanding(), 1);
        assert_eq!(p.stats().lent, 1);
        let back = p.from_raw(raw).unwrap();
        assert_eq!(back.data(), b"hello");
        assert_eq!(p.from_raw(raw).unwrap_err(), PoolError::NotLent { index: raw.index });
        drop(back);
        assert_eq!(p.outstanding(), 0);
        assert_eq!(p.from_raw(raw).unwrap_err(), PoolError::NotLent { index: raw.index });
        assert!(matches!(p.from_raw(RawFrame { index: 99, offset: 0, len: 0 }), Err(PoolError::OutOfRange { .. })));
    }

    #[test]
    fn umem_addresses_map_to_chunks() {
        let p = pool(4);
        let raw = p.raw_from_addr(p.chunk_addr(3) + 256, 60).unwrap();
        assert_eq!(raw, RawFrame { index: 3, offset: 256, len: 60 });
        assert!(p.raw_from_addr(p.chunk_addr(4), 1).is_err());
    }

    #[test]
    fn bad_configs_are_refused() {
        let b = PinnedBudget::unlimited();
        let bad = |c| FramePool::with_region(c, &b, HugePolicy::Never).unwrap_err();
        assert!(matches!(bad(PoolConfig { frame_size: 3000, headroom: 0, frames: 1 }), PoolError::BadConfig(_)));
        assert!(matches!(bad(PoolConfig { frame_size: 2048, headroom: 1024, frames: 1 }), PoolError::BadConfig(_)));
        assert!(matches!(
            bad(PoolConfig { frame_size: 2048, headroom: 0, frames: 0 }),
            PoolError::Mem(MemError::ZeroSize)
        ));
    }

    #[test]
    fn budget_exhaustion_is_an_error_not_a_crash() {
        let b = PinnedBudget::new(64 * 1024);
        let cfg = PoolConfig { frame_size: 2048, headroom: 0, frames: 64 };
        let err = FramePool::with_region(cfg, &b, HugePolicy::Never).unwrap_err();
        assert!(matches!(err, PoolError::Mem(MemError::BudgetExceeded { .. })));
    }

    #[test]
    fn frames_dropped_on_other_threads_come_home() {
        let p = pool(256);
        let mut v = Vec::new();
        p.alloc_bulk(&mut v, 256).unwrap();
        let h = std::thread::spawn(move || drop(v));
        h.join().unwrap();
        assert_eq!(p.outstanding(), 0);
    }
}
