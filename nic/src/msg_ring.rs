//! A mirror-mapped byte ring whose messages are handed out in place.
//!
//! Used wherever a stream lands in a ring the mux delineates in place: kernel TCP psocks
//! read into it (the syscall's copy is the only one), message sockets build their sends in
//! it, and the userspace stack's in-place receive (`InPlaceRx`) shares its release
//! machinery. Each message goes to an application thread as a [`RingView`]: a `Send` view
//! of pinned memory, never a copy.
//! The ring's pages are mapped twice, back to back, so a message that crosses the ring end
//! is still one contiguous slice.
//!
//! Views are dropped on any thread, in any order. A drop posts the view's stream offset on
//! a lock-free queue; the ring's owner calls [`ByteRing::reclaim`] to mark spans free and
//! advance over the released prefix. Only then is that space writable again, which is what
//! makes handing out `&[u8]` views while the owner keeps writing sound: the owner only ever
//! writes to bytes no view covers.

use std::collections::VecDeque;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::region::{
    account, errno_str, last_errno, lock_as, BudgetCharge, LockPolicy, PageKind, PinnedBudget, HUGE_PAGE, SMALL_PAGE,
};

/// Why a ring operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// Capacity is zero or not a multiple of the page size.
    BadCapacity(usize),
    /// The budget cannot cover the ring.
    Budget(crate::region::MemError),
    /// A system call failed (name, errno).
    Sys(&'static str, i32),
    /// More bytes asked for than are unparsed.
    NotThatMuch { asked: usize, available: usize },
    /// Too many views are outstanding (the release queue's bound).
    TooManyViews(usize),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RingError::BadCapacity(c) => write!(f, "ring capacity {c} is not a positive multiple of 4096"),
            RingError::Budget(e) => write!(f, "{e}"),
            RingError::Sys(op, e) => write!(f, "{op}: {}", errno_str(e)),
            RingError::NotThatMuch { asked, available } => {
                write!(f, "{asked} bytes asked for, {available} unparsed")
            }
            RingError::TooManyViews(n) => write!(f, "{n} views outstanding: release some first"),
        }
    }
}

impl std::error::Error for RingError {}

/// The double mapping: `cap` bytes at `ptr` and the same pages again at `ptr + cap`.
struct Mirror {
    ptr: NonNull<u8>,
    cap: usize,
    kind: PageKind,
    locked: bool,
    _charge: BudgetCharge,
}

impl Mirror {
    fn new(cap: usize, budget: &Arc<PinnedBudget>) -> Result<Self, RingError> {
        let charge = budget.reserve(cap as u64).map_err(RingError::Budget)?;
        // Hugepage-backed memfd first when the size allows it (it may exist but fail to
        // map when no hugepages are reserved), plain memfd otherwise.
        let huge = cap % HUGE_PAGE == 0;
        let (ptr, locked, kind) = match huge.then(|| Self::create_and_map(cap, libc::MFD_HUGETLB)) {
            Some(Ok((p, l))) => (p, l, PageKind::Huge2M),
            _ => {
                let (p, l) = Self::create_and_map(cap, 0)?;
                (p, l, PageKind::Small4K)
            }
        };
        account(kind, locked, cap, true);
        Ok(Mirror { ptr, cap, kind, locked, _charge: charge })
    }

    /// The mirror mapping and whether it is locked.
    fn create_and_map(cap: usize, extra_flags: libc::c_uint) -> Result<(NonNull<u8>, bool), RingError> {
        // SAFETY: memfd_create with a valid C string; the fd is closed below.
        let fd = unsafe { libc::memfd_create(c"ukcm-ring".as_ptr(), libc::MFD_CLOEXEC | extra_flags) };
        if fd < 0 {
            return Err(RingError::Sys("memfd_create", last_errno()));
        }
        let result = Self::map(fd, cap);
        // SAFETY: fd is ours; the mappings keep the memory alive after close.
        unsafe { libc::close(fd) };
        result
    }

    fn map(fd: i32, cap: usize) -> Result<(NonNull<u8>, bool), RingError> {
        // SAFETY: fd is a fresh memfd we own.
        if unsafe { libc::ftruncate(fd, cap as libc::off_t) } != 0 {
            return Err(RingError::Sys("ftruncate", last_errno()));
        }
        // Reserve 2*cap of address space, then map the file over both halves.
        // SAFETY: an anonymous PROT_NONE reservation with no hint has no preconditions.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), 2 * cap, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if base == libc::MAP_FAILED {
            return Err(RingError::Sys("mmap reserve", last_errno()));
        }
        for half in 0..2 {
            // SAFETY: MAP_FIXED over our own reservation [base, base+2cap), so nothing else
            // is replaced; fd has `cap` bytes.
            let p = unsafe {
                libc::mmap(
                    base.cast::<u8>().add(half * cap).cast(),
                    cap,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE,
                    fd,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                let e = last_errno();
                // SAFETY: unmapping our own reservation.
                unsafe { libc::munmap(base, 2 * cap) };
                return Err(RingError::Sys("mmap mirror", e));
            }
        }
        // Only this process reads the ring: locked if the limit allows, else unlocked (said
        // once). [base, base+2cap) is ours and mapped.
        let locked = match lock_as(base.cast(), 2 * cap, LockPolicy::IfAllowed) {
            Ok(l) => l,
            Err(e) => {
                // SAFETY: unmapping our own mapping.
                unsafe { libc::munmap(base, 2 * cap) };
                return Err(RingError::Sys("mlock", e));
            }
        };
        let ptr = NonNull::new(base.cast()).ok_or(RingError::Sys("mmap", libc::ENOMEM))?;
        Ok((ptr, locked))
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        account(self.kind, self.locked, self.cap, false);
        // SAFETY: the two halves were mapped by `map` and nothing refers to them any more
        // (every RingView holds an Arc to the shared part that owns this Mirror).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), 2 * self.cap) };
    }
}

pub(crate) struct Shared {
    /// The mapping when this ring owns it; `None` for leaked (process-lifetime) mappings.
    _mirror: Option<Mirror>,
    /// Start of the double mapping.
    base: NonNull<u8>,
    /// Stream offsets of dropped views; as many slots as views may be alive at once (each
    /// posts once), so a push never fails. Sized by whoever lends: for in-place rings, by
    /// the ring's size ([`views_for`]), not at the caller's bound.
    releases: ArrayQueue<u64>,
}

impl Shared {
    /// Shared state over a leaked mirror mapping (see [`leak_mirror`]) for at most `views`
    /// live views.
    pub(crate) fn leaked(base: NonNull<u8>, views: usize) -> Arc<Shared> {
        Arc::new(Shared { _mirror: None, base, releases: ArrayQueue::new(views.max(1)) })
    }

    /// Takes the next posted release, if any.
    pub(crate) fn pop_release(&self) -> Option<u64> {
        self.releases.pop()
    }

    /// Start of the double mapping.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }
}

/// Maps `cap` bytes twice, back to back, and leaks the mapping: it stays mapped, locked and
/// charged for the rest of the process, so `'static` views of it stay valid.
pub(crate) fn leak_mirror(cap: usize, budget: &Arc<PinnedBudget>) -> Result<NonNull<u8>, RingError> {
    if cap == 0 || cap % SMALL_PAGE != 0 || cap > u32::MAX as usize {
        return Err(RingError::BadCapacity(cap));
    }
    let m = Mirror::new(cap, budget)?;
    let base = m.ptr;
    std::mem::forget(m);
    Ok(base)
}

// SAFETY: the mapping is plain memory; which bytes each party touches is governed by the
// ring protocol described in the module docs (views read only bytes the owner will not
// write until their release has been reclaimed).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    len: u32,
    released: bool,
}

/// A byte ring with in-place message views. Owned by one thread (the engine); its views
/// go anywhere.
pub struct ByteRing {
    shared: Arc<Shared>,
    cap: usize,
    /// Stream offset of the oldest byte still in the ring.
    tail: u64,
    /// Stream offset where the next message starts (end of the last view taken).
    parsed: u64,
    /// Stream offset where the next written byte goes.
    head: u64,
    spans: VecDeque<Span>,
    /// Views handed out whose release has not been reclaimed: bounds the release queue.
    live: usize,
    max_views: usize,
}

impl fmt::Debug for ByteRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteRing")
            .field("cap", &self.cap)
            .field("tail", &self.tail)
            .field("parsed", &self.parsed)
            .field("head", &self.head)
            .field("views", &self.spans.len())
            .finish()
    }
}

impl ByteRing {
    /// A ring of `cap` bytes (a multiple of 4096; a multiple of 2 MiB gets hugepages when
    /// the system has them) allowing at most `max_views` outstanding views.
    pub fn new(cap: usize, max_views: usize, budget: &Arc<PinnedBudget>) -> Result<Self, RingError> {
        if cap == 0 || cap % SMALL_PAGE != 0 || cap > u32::MAX as usize {
            return Err(RingError::BadCapacity(cap));
        }
        let max_views = max_views.max(1);
        let mirror = Mirror::new(cap, budget)?;
        let base = mirror.ptr;
        let shared = Arc::new(Shared { _mirror: Some(mirror), base, releases: ArrayQueue::new(max_views) });
        Ok(ByteRing {
            shared,
            cap,
            tail: 0,
            parsed: 0,
            head: 0,
            // Grows with the views actually outstanding (at most `max_views`).
            spans: VecDeque::new(),
            live: 0,
            max_views,
        })
    }

    /// Ring size in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn at(&self, offset: u64) -> *mut u8 {
        // SAFETY: offset % cap < cap, inside the first half of the mapping.
        unsafe { self.shared.base.as_ptr().add((offset % self.cap as u64) as usize) }
    }

    /// Free bytes, contiguous, to write received data into; then [`ByteRing::commit`].
    pub fn free_space(&mut self) -> &mut [u8] {
        let free = self.cap - (self.head - self.tail) as usize;
        // SAFETY: [head, head+free) lies within the 2*cap mapping (mirror) and covers
        // exactly the bytes no view or unparsed data occupies; &mut self excludes any other
        // borrow from this ring, and views never cover free bytes.
        unsafe { std::slice::from_raw_parts_mut(self.at(self.head), free) }
    }

    /// Marks `n` bytes of [`ByteRing::free_space`] as written.
    pub fn commit(&mut self, n: usize) {
        let free = self.cap - (self.head - self.tail) as usize;
        assert!(n <= free, "commit {n} > free {free}");
        self.head += n as u64;
    }

    /// The bytes from the start of the next message to the last byte written (contiguous).
    pub fn unparsed(&self) -> &[u8] {
        let len = (self.head - self.parsed) as usize;
        // SAFETY: [parsed, head) is written data inside the mirror mapping, not covered by a
        // view, and not writable until it is parsed, viewed and released.
        unsafe { std::slice::from_raw_parts(self.at(self.parsed), len) }
    }

    /// Hands out the next `len` unparsed bytes as a message view.
    pub fn take_view(&mut self, len: usize) -> Result<RingView, RingError> {
        let available = (self.head - self.parsed) as usize;
        if len > available {
            return Err(RingError::NotThatMuch { asked: len, available });
        }
        if !self.can_take_view() {
            return Err(RingError::TooManyViews(self.live));
        }
        let start = self.parsed;
        let ptr = NonNull::new(self.at(start)).expect("mapping is non-null");
        self.spans.push_back(Span { start, len: len as u32, released: false });
        self.parsed += len as u64;
        self.live += 1;
        Ok(RingView { shared: Arc::clone(&self.shared), ptr, len, start })
    }

    /// Whether another view may be handed out now (the outstanding-view bound).
    pub fn can_take_view(&self) -> bool {
        self.live < self.max_views
    }

    /// How many more views may be handed out now.
    pub fn views_free(&self) -> usize {
        self.max_views - self.live
    }

    /// Drops the next `len` unparsed bytes without a view (e.g. after a psock error).
    pub fn discard(&mut self, len: usize) -> Result<(), RingError> {
        let available = (self.head - self.parsed) as usize;
        if len > available {
            return Err(RingError::NotThatMuch { asked: len, available });
        }
        self.spans.push_back(Span { start: self.parsed, len: len as u32, released: true });
        self.parsed += len as u64;
        Ok(())
    }

    /// Takes in the releases of dropped views and frees the released prefix of the ring;
    /// returns the bytes freed.
    pub fn reclaim(&mut self) -> usize {
        // Views are mostly released in order: try the span after the last one first.
        let mut hint = 0;
        while let Some(start) = self.shared.releases.pop() {
            let i = match self.spans.get(hint) {
                Some(s) if s.start == start => Ok(hint),
                _ => self.spans.binary_search_by_key(&start, |s| s.start),
            };
            if let Ok(i) = i {
                self.spans[i].released = true;
                self.live -= 1;
                hint = i + 1;
            } else {
                debug_assert!(false, "release of unknown view {start}");
            }
        }
        let before = self.tail;
        while let Some(s) = self.spans.front() {
            if !s.released {
                break;
            }
            self.tail = s.start + s.len as u64;
            self.spans.pop_front();
        }
        if self.spans.is_empty() {
            self.tail = self.parsed;
        }
        (self.tail - before) as usize
    }

    /// Bytes in the ring: held by views, unparsed, or released but behind a held one.
    pub fn used(&self) -> usize {
        (self.head - self.tail) as usize
    }

    /// Views handed out and not yet reclaimed.
    pub fn views_outstanding(&self) -> usize {
        self.live
    }

    /// Whether `p..p+len` lies in this ring's memory (zero-copy checks).
    pub fn contains(&self, p: *const u8, len: usize) -> bool {
        let base = self.shared.base.as_ptr() as usize;
        let p = p as usize;
        p >= base && p + len <= base + 2 * self.cap
    }
}

/// A received message, in place in its ring. `Send`; dropping it (on any thread) gives
/// its bytes back to the ring.
pub struct RingView {
    shared: Arc<Shared>,
    ptr: NonNull<u8>,
    len: usize,
    start: u64,
}

// SAFETY: the view reads bytes the ring owner does not write until the view's release is
// reclaimed; the shared part is Sync.
unsafe impl Send for RingView {}
// SAFETY: &RingView gives only shared reads of those same bytes.
unsafe impl Sync for RingView {}

impl RingView {
    /// A view of `len` bytes at `ptr` inside `shared`'s mapping, released under `start`.
    ///
    /// # Safety
    /// `[ptr, ptr+len)` must lie in `shared`'s mapping, hold initialised bytes, and not be
    /// written until the release of `start` has been taken from `shared`'s queue.
    pub(crate) unsafe fn from_parts(shared: &Arc<Shared>, ptr: NonNull<u8>, len: usize, start: u64) -> RingView {
        RingView { shared: Arc::clone(shared), ptr, len, start }
    }

    /// Stream offset of the first byte (unique per ring while the view lives).
    pub fn stream_offset(&self) -> u64 {
        self.start
    }
}

impl std::ops::Deref for RingView {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: [ptr, ptr+len) is inside the mirror mapping (kept alive by `shared`),
        // written before the view was made, and not rewritten until after this view drops.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl fmt::Debug for RingView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingView").field("start", &self.start).field("len", &self.len).finish()
    }
}

impl Drop for RingView {
    fn drop(&mut self) {
        // Cannot overflow: the queue has a slot for every view that may exist unreclaimed,
        // and each pushes once.
        let pushed = self.shared.releases.push(self.start);
        debug_assert!(pushed.is_ok(), "release queue overflow");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(cap: usize) -> ByteRing {
        ByteRing::new(cap, 64, &PinnedBudget::unlimited()).unwrap()
    }

    fn write(r: &mut ByteRing, bytes: &[u8]) {
        let f = r.free_space();
        f[..bytes.len()].copy_from_slice(bytes);
        r.commit(bytes.len());
    }

    #[test]
    fn views_are_in_place_and_free_space_on_release() {
        let mut r = ring(4096);
        write(&mut r, b"hello world");
        let v = r.take_view(5).unwrap();
        assert_eq!(&*v, b"hello");
        assert!(r.contains(v.as_ptr(), v.len()));
        assert_eq!(r.unparsed(), b" world");
        assert_eq!(r.free_space().len(), 4096 - 11);
        drop(v);
        assert_eq!(r.reclaim(), 5);
        assert_eq!(r.free_space().len(), 4096 - 6);
    }

    #[test]
    fn a_message_across_the_ring_end_is_contiguous() {
        let mut r = ring(4096);
        write(&mut r, &[0u8; 4000]);
        let v = r.take_view(4000).unwrap();
        drop(v);
        r.reclaim();
        let msg: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        write(&mut r, &msg); // 96 bytes before the end, 104 after
        let v = r.take_view(200).unwrap();
        assert_eq!(&*v, &msg[..], "mirror mapping makes the wrapped message one slice");
    }

    #[test]
    fn out_of_order_drops_across_threads_free_only_the_prefix() {
        let mut r = ring(4096);
        write(&mut r, &[1u8; 300]);
        let a = r.take_view(100).unwrap();
        let b = r.take_view(100).unwrap();
        let c = r.take_view(100).unwrap();
        std::thread::spawn(move || drop((b, c))).join().unwrap();
        assert_eq!(r.reclaim(), 0, "first view still held");
        assert_eq!(r.views_outstanding(), 1);
        drop(a);
        assert_eq!(r.reclaim(), 300);
        assert_eq!(r.used(), 0);
    }

    #[test]
    fn a_full_ring_offers_no_space_until_views_drop() {
        let mut r = ring(4096);
        write(&mut r, &[7u8; 4096]);
        assert!(r.free_space().is_empty());
        let v = r.take_view(4096).unwrap();
        assert!(r.free_space().is_empty(), "held bytes are not writable");
        drop(v);
        r.reclaim();
        assert_eq!(r.free_space().len(), 4096);
    }

    #[test]
    fn limits_are_errors() {
        let mut r = ByteRing::new(4096, 2, &PinnedBudget::unlimited()).unwrap();
        write(&mut r, &[0u8; 10]);
        assert_eq!(r.take_view(11).unwrap_err(), RingError::NotThatMuch { asked: 11, available: 10 });
        let _a = r.take_view(1).unwrap();
        let _b = r.take_view(1).unwrap();
        assert_eq!(r.take_view(1).unwrap_err(), RingError::TooManyViews(2));
        assert!(matches!(ByteRing::new(1000, 1, &PinnedBudget::unlimited()), Err(RingError::BadCapacity(1000))));
        assert!(matches!(ByteRing::new(8192, 1, &PinnedBudget::new(4096)), Err(RingError::Budget(_))));
    }

    #[test]
    fn released_views_behind_a_held_one_do_not_count_against_the_limit() {
        let mut r = ByteRing::new(4096, 2, &PinnedBudget::unlimited()).unwrap();
        write(&mut r, &[0u8; 10]);
        let a = r.take_view(1).unwrap();
        for _ in 0..5 {
            let b = r.take_view(1).unwrap();
            drop(b);
            r.reclaim();
        }
        assert_eq!(r.views_outstanding(), 1);
        drop(a);
        assert_eq!(r.reclaim(), 6);
    }

    #[test]
    fn discarded_bytes_are_reclaimed_with_the_rest() {
        let mut r = ring(4096);
        write(&mut r, &[0u8; 30]);
        let v = r.take_view(10).unwrap();
        r.discard(20).unwrap();
        assert_eq!(r.reclaim(), 0);
        drop(v);
        assert_eq!(r.reclaim(), 30);
    }
}
