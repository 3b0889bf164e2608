//! Pinned memory regions and the pinned-byte budget.
//!
//! Every engine owns one region: frames (the NIC pool, AF_XDP UMEM) and TCP socket rings
//! are carved from it, so nothing on the data path ever page-faults or swaps. We prefer
//! 2 MiB hugepages (fewer TLB misses, what AF_XDP and DPDK want) and fall back to 4 KiB
//! pages, locked with `mlock`, logging which one we got.
//!
//! Pinned memory is a scarce, system-wide resource (the kernel's `RLIMIT_MEMLOCK`), so each
//! region is charged to a [`PinnedBudget`]; running out is a [`MemError`], never a crash.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Size of one huge page (x86_64 default hugepage size).
pub const HUGE_PAGE: usize = 2 << 20;
/// Size of one base page.
pub const SMALL_PAGE: usize = 4096;

/// What went wrong while getting or carving pinned memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// The budget cannot cover the request.
    BudgetExceeded { requested: u64, available: u64 },
    /// A zero-sized region or carve was asked for.
    ZeroSize,
    /// `mmap` failed (errno).
    Mmap(i32),
    /// `mlock` failed (errno); usually RLIMIT_MEMLOCK without CAP_IPC_LOCK.
    Mlock(i32),
    /// Hugepages were required but none could be mapped (errno of the attempt).
    HugepagesUnavailable(i32),
    /// The region has no room left for a carve of this size.
    RegionFull { requested: usize, available: usize },
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemError::BudgetExceeded { requested, available } => {
                write!(f, "pinned memory budget exceeded: {requested} bytes requested, {available} available")
            }
            MemError::ZeroSize => write!(f, "zero-sized pinned memory request"),
            MemError::Mmap(e) => write!(f, "mmap failed: {}", errno_str(e)),
            MemError::Mlock(e) => {
                write!(f, "mlock failed: {} (raise RLIMIT_MEMLOCK or run with CAP_IPC_LOCK)", errno_str(e))
            }
            MemError::HugepagesUnavailable(e) => write!(
                f,
                "hugepages required but unavailable: {} (reserve some with scripts/hugepages.sh)",
                errno_str(e)
            ),
            MemError::RegionFull { requested, available } => {
                write!(f, "pinned region full: {requested} bytes requested, {available} left")
            }
        }
    }
}

impl std::error::Error for MemError {}

pub(crate) fn errno_str(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// A limit on pinned bytes, shared by every region charged to it (like `RLIMIT_MEMLOCK`,
/// but ours, so exhaustion is an error value and visible in stats).
#[derive(Debug)]
pub struct PinnedBudget {
    limit: u64,
    used: AtomicU64,
}

impl PinnedBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(PinnedBudget { limit, used: AtomicU64::new(0) })
    }

    /// A budget with no practical limit (tests, tools).
    pub fn unlimited() -> Arc<Self> {
        Self::new(u64::MAX)
    }

    /// Bytes currently charged.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Charges `bytes`; the returned guard gives them back when dropped.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<BudgetCharge, MemError> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let available = self.limit.saturating_sub(cur);
            if bytes > available {
                return Err(MemError::BudgetExceeded { requested: bytes, available });
            }
            match self.used.compare_exchange_weak(cur, cur + bytes, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(BudgetCharge { budget: Arc::clone(self), bytes }),
                Err(now) => cur = now,
            }
        }
    }
}

/// Bytes charged to a [`PinnedBudget`]; returned on drop.
#[derive(Debug)]
pub struct BudgetCharge {
    budget: Arc<PinnedBudget>,
    bytes: u64,
}

impl BudgetCharge {
    /// Bytes held by this charge.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for BudgetCharge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Which pages back a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// 2 MiB hugepages (`MAP_HUGETLB`).
    Huge2M,
    /// 4 KiB base pages, locked with `mlock`.
    Small4K,
}

/// Whether hugepages are preferred, required or not wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePolicy {
    /// Try hugepages, fall back to locked 4 KiB pages with a log line.
    #[default]
    Prefer,
    /// Fail with [`MemError::HugepagesUnavailable`] if no hugepages.
    Require,
    /// Use locked 4 KiB pages only.
    Never,
}

/// One contiguous, populated, locked mapping, charged to a budget.
///
/// The region hands out raw memory; the types built on it ([`crate::FramePool`],
/// [`RegionCarver`]) make sure no two owners use the same bytes.
#[derive(Debug)]
pub struct PinnedRegion {
    ptr: NonNull<u8>,
    len: usize,
    kind: PageKind,
    _charge: BudgetCharge,
}

// SAFETY: the region is plain memory owned by this value; it is only unmapped in Drop.
// Which bytes are used by whom is arbitrated by the owners of carved slices.
unsafe impl Send for PinnedRegion {}
// SAFETY: as above; &PinnedRegion only exposes the base pointer and length.
unsafe impl Sync for PinnedRegion {}

impl PinnedRegion {
    /// Maps at least `len` bytes (rounded up to the page size), populated and locked.
    pub fn new(len: usize, budget: &Arc<PinnedBudget>, policy: HugePolicy) -> Result<Self, MemError> {
        if len == 0 {
            return Err(MemError::ZeroSize);
        }
        if policy != HugePolicy::Never {
            let huge_len = round_up(len, HUGE_PAGE);
            let charge = budget.reserve(huge_len as u64)?;
            match map_huge(huge_len) {
                Ok(ptr) => {
                    // hugetlb pages are never swapped, but mlock makes the intent explicit
                    // and keeps accounting identical to the 4 KiB path.
                    if let Err(e) = lock(ptr, huge_len) {
                        unmap(ptr, huge_len);
                        return Err(e);
                    }
                    tracing::info!(bytes = huge_len, "pinned region: 2 MiB hugepages");
                    return Ok(PinnedRegion { ptr, len: huge_len, kind: PageKind::Huge2M, _charge: charge });
                }
                Err(errno) if policy == HugePolicy::Require => {
                    return Err(MemError::HugepagesUnavailable(errno));
                }
                Err(errno) => {
                    drop(charge);
                    tracing::info!(
                        bytes = len,
                        reason = %errno_str(errno),
                        "pinned region: no hugepages, falling back to mlocked 4 KiB pages"
                    );
                }
            }
        }
        let small_len = round_up(len, SMALL_PAGE);
        let charge = budget.reserve(small_len as u64)?;
        let ptr = map_small(small_len).map_err(MemError::Mmap)?;
        if let Err(e) = lock(ptr, small_len) {
            unmap(ptr, small_len);
            return Err(e);
        }
        if policy == HugePolicy::Never {
            tracing::info!(bytes = small_len, "pinned region: mlocked 4 KiB pages");
        }
        Ok(PinnedRegion { ptr, len: small_len, kind: PageKind::Small4K, _charge: charge })
    }

    /// Base address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: regions are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Which pages back the region.
    pub fn page_kind(&self) -> PageKind {
        self.kind
    }

    /// Whether `[p, p+len)` lies inside this region (used by zero-copy proofs).
    pub fn contains(&self, p: *const u8, len: usize) -> bool {
        let base = self.ptr.as_ptr() as usize;
        let p = p as usize;
        p >= base && p.checked_add(len).is_some_and(|end| end <= base + self.len)
    }
}

impl Drop for PinnedRegion {
    fn drop(&mut self) {
        unmap(self.ptr, self.len);
    }
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

fn map_huge(len: usize) -> Result<NonNull<u8>, i32> {
    const MAP_HUGE_2MB: i32 = 21 << libc::MAP_HUGE_SHIFT;
    map(len, libc::MAP_HUGETLB | MAP_HUGE_2MB)
}

fn map_small(len: usize) -> Result<NonNull<u8>, i32> {
    map(len, 0)
}

fn map(len: usize, extra_flags: i32) -> Result<NonNull<u8>, i32> {
    // SAFETY: an anonymous private mapping with a null hint has no preconditions; the
    // result is checked against MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | extra_flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last_errno());
    }
    NonNull::new(p.cast::<u8>()).ok_or(libc::ENOMEM)
}

fn lock(ptr: NonNull<u8>, len: usize) -> Result<(), MemError> {
    // SAFETY: [ptr, ptr+len) is a mapping we just created.
    let rc = unsafe { libc::mlock(ptr.as_ptr().cast(), len) };
    if rc != 0 {
        return Err(MemError::Mlock(last_errno()));
    }
    Ok(())
}

fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: [ptr, ptr+len) is a mapping created by `map` and owned by the caller, which
    // gives it up here; munmap also drops the lock.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), len);
    }
}

pub(crate) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A byte range of a region, owned exclusively by its holder.
///
/// Holding the `Arc` keeps the mapping alive as long as any slice of it is in use.
#[derive(Debug)]
pub struct RegionSlice {
    region: Arc<PinnedRegion>,
    offset: usize,
    len: usize,
}

impl RegionSlice {
    /// Start of the slice.
    pub fn as_ptr(&self) -> *mut u8 {
        // SAFETY: offset + len <= region.len() was checked when the slice was carved.
        unsafe { self.region.as_ptr().add(self.offset) }
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the slice has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Offset of the slice in its region.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// The region the slice belongs to.
    pub fn region(&self) -> &Arc<PinnedRegion> {
        &self.region
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the range is inside the live mapping and exclusively ours (carved once).
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }
    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees no other borrow of these bytes.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len) }
    }
}

/// Carves a region into disjoint slices, front to back (a bump allocator).
///
/// Engines carve the frame pool and ring memory once at start; recycling of rings is done
/// by the owner of the slices (the stack keeps free lists per ring size).
#[derive(Debug)]
pub struct RegionCarver {
    region: Arc<PinnedRegion>,
    next: usize,
}

impl RegionCarver {
    /// A carver over the whole region.
    pub fn new(region: PinnedRegion) -> Self {
        RegionCarver { region: Arc::new(region), next: 0 }
    }

    /// The region being carved.
    pub fn region(&self) -> &Arc<PinnedRegion> {
        &self.region
    }

    /// Bytes not carved yet.
    pub fn remaining(&self) -> usize {
        self.region.len() - self.next
    }

    /// Carves `len` bytes aligned to `align` (a power of two).
    pub fn carve(&mut self, len: usize, align: usize) -> Result<RegionSlice, MemError> {
        if len == 0 {
            return Err(MemError::ZeroSize);
        }
        assert!(align.is_power_of_two(), "alignment must be a power of two");
        let base = self.region.as_ptr() as usize;
        let start = (base + self.next).next_multiple_of(align) - base;
        let available = self.region.len().saturating_sub(start);
        if len > available {
            return Err(MemError::RegionFull { requested: len, available });
        }
        self.next = start + len;
        Ok(RegionSlice { region: Arc::clone(&self.region), offset: start, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_limit_and_refunds_on_drop() {
        let b = PinnedBudget::new(3 * SMALL_PAGE as u64);
        let r1 = PinnedRegion::new(2 * SMALL_PAGE, &b, HugePolicy::Never).unwrap();
        assert_eq!(b.used(), 2 * SMALL_PAGE as u64);
        let err = PinnedRegion::new(2 * SMALL_PAGE, &b, HugePolicy::Never).unwrap_err();
        assert_eq!(err, MemError::BudgetExceeded { requested: 2 * SMALL_PAGE as u64, available: SMALL_PAGE as u64 });
        drop(r1);
        assert_eq!(b.used(), 0);
        PinnedRegion::new(3 * SMALL_PAGE, &b, HugePolicy::Never).unwrap();
    }

    #[test]
    fn small_region_is_rounded_writable_and_contains_itself() {
        let b = PinnedBudget::unlimited();
        let r = PinnedRegion::new(100, &b, HugePolicy::Never).unwrap();
        assert_eq!(r.len(), SMALL_PAGE);
        assert_eq!(r.page_kind(), PageKind::Small4K);
        assert!(r.contains(r.as_ptr(), r.len()));
        assert!(!r.contains(r.as_ptr(), r.len() + 1));
        // SAFETY: the region is ours and at least one page long.
        unsafe { r.as_ptr().add(r.len() - 1).write(7) };
    }

    #[test]
    fn prefer_policy_always_yields_a_region() {
        // With or without reserved hugepages, Prefer must succeed (falling back if needed).
        let b = PinnedBudget::unlimited();
        let r = PinnedRegion::new(HUGE_PAGE, &b, HugePolicy::Prefer).unwrap();
        assert!(r.len() >= HUGE_PAGE);
        assert_eq!(b.used(), r.len() as u64);
    }

    #[test]
    fn zero_size_is_an_error() {
        let b = PinnedBudget::unlimited();
        assert_eq!(PinnedRegion::new(0, &b, HugePolicy::Never).unwrap_err(), MemError::ZeroSize);
    }

    #[test]
    fn carver_gives_disjoint_aligned_slices_until_full() {
        let b = PinnedBudget::unlimited();
        let mut c = RegionCarver::new(PinnedRegion::new(4 * SMALL_PAGE, &b, HugePolicy::Never).unwrap());
        let a = c.carve(100, 64).unwrap();
        let d = c.carve(SMALL_PAGE, SMALL_PAGE).unwrap();
        assert_eq!(a.offset(), 0);
        assert_eq!(d.offset(), SMALL_PAGE);
        assert_eq!(d.as_ptr() as usize % SMALL_PAGE, 0);
        let err = c.carve(3 * SMALL_PAGE, 1).unwrap_err();
        assert_eq!(err, MemError::RegionFull { requested: 3 * SMALL_PAGE, available: 2 * SMALL_PAGE });
        let rest = c.carve(2 * SMALL_PAGE, 1).unwrap();
        assert_eq!(rest.len(), 2 * SMALL_PAGE);
        assert_eq!(c.remaining(), 0);
    }
}
