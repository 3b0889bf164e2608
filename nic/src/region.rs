//! Pinned memory regions and the pinned-byte budget.
//!
//! Every engine owns one region: frames (the NIC pool, AF_XDP UMEM) and TCP socket rings
//! are carved from it, so nothing on the data path ever page-faults or swaps. We prefer
//! 2 MiB hugepages (fewer TLB misses, what AF_XDP and DPDK want) and fall back to 4 KiB
//! pages, locked with `mlock`, logging which one we got.
//!
//! Pinned memory is a scarce, system-wide resource (the kernel's `RLIMIT_MEMLOCK`), so each
//! region is charged to a [`PinnedBudget`]; running out is a [`MemError`], never a crash.
//!
//! Only memory the kernel reads on its own needs locking (AF_XDP UMEM): memory nothing
//! outside the process touches (the in-memory pair, socket rings) asks with
//! [`LockPolicy::IfAllowed`] and, when `mlock` is refused (an ordinary user's 8 MiB
//! `RLIMIT_MEMLOCK`), stays unlocked with one warning per process. [`page_use`] says what
//! the process got, for the apps' startup line.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
            MemError::Mlock(e) => write!(
                f,
                "mlock failed: {} (the memory-lock limit RLIMIT_MEMLOCK is {}; raise it: `ulimit -l unlimited` in the shell, `LimitMEMLOCK=infinity` in a systemd unit, or run with CAP_IPC_LOCK)",
                errno_str(e),
                memlock_limit_str()
            ),
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

/// The soft `RLIMIT_MEMLOCK` in bytes (`None`: unlimited or unreadable).
pub fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit through a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(r.rlim_cur)
}

fn memlock_limit_str() -> String {
    match memlock_limit() {
        Some(b) => format!("{} KiB", b / 1024),
        None => "unlimited".into(),
    }
}

/// Whether memory must be locked, or may stay unlocked when the kernel refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockPolicy {
    /// `mlock` must succeed ([`MemError::Mlock`] otherwise): memory the kernel reads or
    /// writes on its own (AF_XDP UMEM).
    #[default]
    Required,
    /// Lock if allowed; if `mlock` is refused for lack of privilege or limit, keep the
    /// memory unlocked and say so once. For memory only this process touches.
    IfAllowed,
}

/// Bytes of pinned memory this process has mapped now, by kind of page and lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageUse {
    /// In 2 MiB hugepages.
    pub huge_bytes: u64,
    /// In 4 KiB pages.
    pub small_bytes: u64,
    /// Of both, left unlocked because `mlock` was refused ([`LockPolicy::IfAllowed`]).
    pub unlocked_bytes: u64,
    /// A hugepage mapping was wanted and refused (no hugepages reserved) at least once.
    pub huge_fell_back: bool,
}

static HUGE_BYTES: AtomicU64 = AtomicU64::new(0);
static SMALL_BYTES: AtomicU64 = AtomicU64::new(0);
static UNLOCKED_BYTES: AtomicU64 = AtomicU64::new(0);
static HUGE_FELL_BACK: AtomicBool = AtomicBool::new(false);
static UNLOCKED_SAID: AtomicBool = AtomicBool::new(false);

/// What pinned memory the process holds now (regions and mirror-mapped rings).
pub fn page_use() -> PageUse {
    PageUse {
        huge_bytes: HUGE_BYTES.load(Ordering::Relaxed),
        small_bytes: SMALL_BYTES.load(Ordering::Relaxed),
        unlocked_bytes: UNLOCKED_BYTES.load(Ordering::Relaxed),
        huge_fell_back: HUGE_FELL_BACK.load(Ordering::Relaxed),
    }
}

/// Accounts a mapping of `len` bytes in [`page_use`] (`map`: mapped, else unmapped).
pub(crate) fn account(kind: PageKind, locked: bool, len: usize, map: bool) {
    let len = len as u64;
    let add = |c: &AtomicU64| {
        if map {
            c.fetch_add(len, Ordering::Relaxed);
        } else {
            c.fetch_sub(len, Ordering::Relaxed);
        }
    };
    add(if kind == PageKind::Huge2M { &HUGE_BYTES } else { &SMALL_BYTES });
    if !locked {
        add(&UNLOCKED_BYTES);
    }
}

/// Locks `[ptr, ptr+len)` as `policy` asks: `Ok(true)` locked, `Ok(false)` refused and
/// allowed to stay unlocked (said once per process).
pub(crate) fn lock_as(ptr: *mut u8, len: usize, policy: LockPolicy) -> Result<bool, i32> {
    // SAFETY: the caller passes a mapping of at least `len` bytes it owns; mlock only
    // changes whether its pages may be paged out.
    if unsafe { libc::mlock(ptr.cast(), len) } == 0 {
        return Ok(true);
    }
    let e = last_errno();
    if policy == LockPolicy::Required || !matches!(e, libc::EPERM | libc::ENOMEM | libc::EAGAIN) {
        return Err(e);
    }
    if !UNLOCKED_SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "pinned memory: mlock refused ({}; RLIMIT_MEMLOCK is {}): memory only this process uses (in-memory ports, socket rings) stays unlocked and may be paged out; to pin it raise the limit (`ulimit -l unlimited`, systemd `LimitMEMLOCK=infinity`) or grant CAP_IPC_LOCK",
            errno_str(e),
            memlock_limit_str()
        );
    }
    Ok(false)
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
    locked: bool,
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
        Self::with_lock(len, budget, policy, LockPolicy::Required)
    }

    /// Maps at least `len` bytes (rounded up to the page size), populated, and locked as
    /// `lock` asks.
    pub fn with_lock(
        len: usize,
        budget: &Arc<PinnedBudget>,
        policy: HugePolicy,
        lock: LockPolicy,
    ) -> Result<Self, MemError> {
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
                    let locked = match lock_as(ptr.as_ptr(), huge_len, lock) {
                        Ok(l) => l,
                        Err(e) => {
                            unmap(ptr, huge_len);
                            return Err(MemError::Mlock(e));
                        }
                    };
                    tracing::info!(bytes = huge_len, locked, "pinned region: 2 MiB hugepages");
                    account(PageKind::Huge2M, locked, huge_len, true);
                    return Ok(PinnedRegion { ptr, len: huge_len, kind: PageKind::Huge2M, locked, _charge: charge });
                }
                Err(errno) if policy == HugePolicy::Require => {
                    return Err(MemError::HugepagesUnavailable(errno));
                }
                Err(errno) => {
                    drop(charge);
                    if !HUGE_FELL_BACK.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            bytes = len,
                            reason = %errno_str(errno),
                            "pinned region: no hugepages, falling back to 4 KiB pages (reserve hugepages: scripts/hugepages.sh reserve N, or sysctl vm.nr_hugepages=N)"
                        );
                    }
                }
            }
        }
        let small_len = round_up(len, SMALL_PAGE);
        let charge = budget.reserve(small_len as u64)?;
        let ptr = map_small(small_len).map_err(MemError::Mmap)?;
        let locked = match lock_as(ptr.as_ptr(), small_len, lock) {
            Ok(l) => l,
            Err(e) => {
                unmap(ptr, small_len);
                return Err(MemError::Mlock(e));
            }
        };
        if policy == HugePolicy::Never {
            tracing::info!(bytes = small_len, locked, "pinned region: 4 KiB pages");
        }
        account(PageKind::Small4K, locked, small_len, true);
        Ok(PinnedRegion { ptr, len: small_len, kind: PageKind::Small4K, locked, _charge: charge })
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

    /// Whether the region is locked in memory (false only under [`LockPolicy::IfAllowed`]
    /// when `mlock` was refused).
    pub fn is_locked(&self) -> bool {
        self.locked
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
        account(self.kind, self.locked, self.len, false);
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

    /// A `/proc/meminfo` field's number (`HugePages_Free:  12` -> 12).
    fn meminfo(field: &str) -> u64 {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The kernel's page size (KiB) of the mapping holding `p`, from `/proc/self/smaps`.
    fn kernel_page_kib(p: *const u8) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let p = p as u64;
        let mut inside = false;
        for l in smaps.lines() {
            if let Some((range, _)) = l.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                        inside = lo <= p && p < hi;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(v) = l.strip_prefix("KernelPageSize:") {
                    return v.split_whitespace().next()?.parse().ok();
                }
            }
        }
        None
    }

    /// With hugepages reserved (scripts/test.sh reserves them as root), `Prefer` must use
    /// them: the kernel's own page size for the mapping is 2 MiB. Before, a region that
    /// silently fell back to 4 KiB pages passed every test.
    #[test]
    fn prefer_policy_uses_reserved_hugepages() {
        let (total, free, size_kib) = (meminfo("HugePages_Total"), meminfo("HugePages_Free"), meminfo("Hugepagesize"));
        if total == 0 || size_kib != 2048 {
            eprintln!(
                "SKIP: prefer_policy_uses_reserved_hugepages: no 2 MiB hugepages reserved (HugePages_Total {total}, Hugepagesize {size_kib} kB; scripts/hugepages.sh reserve N)"
            );
            return;
        }
        assert!(free > 0, "{total} hugepages reserved but none free: something else holds them all");
        // IfAllowed: the page size is the point here, not the lock (scripts/test.sh also runs
        // this under an 8 MiB memory-lock limit shared by the tests running beside it).
        let r =
            PinnedRegion::with_lock(HUGE_PAGE, &PinnedBudget::unlimited(), HugePolicy::Prefer, LockPolicy::IfAllowed)
                .unwrap();
        assert_eq!(r.page_kind(), PageKind::Huge2M, "{free} hugepages free, yet the region fell back to 4 KiB pages");
        assert_eq!(kernel_page_kib(r.as_ptr()), Some(2048), "the kernel maps the region with 2 MiB pages");
        assert!(page_use().huge_bytes >= HUGE_PAGE as u64);
    }

    #[test]
    fn if_allowed_region_is_usable_whether_or_not_it_could_be_locked() {
        let r =
            PinnedRegion::with_lock(SMALL_PAGE, &PinnedBudget::unlimited(), HugePolicy::Never, LockPolicy::IfAllowed)
                .unwrap();
        // SAFETY: the region is ours and one page long.
        unsafe { r.as_ptr().write(1) };
        let u = page_use();
        assert!(u.small_bytes >= SMALL_PAGE as u64);
        if !r.is_locked() {
            assert!(u.unlocked_bytes >= SMALL_PAGE as u64, "unlocked memory is reported");
        }
    }

    #[test]
    fn mlock_error_says_how_to_raise_the_limit() {
        let text = MemError::Mlock(libc::ENOMEM).to_string();
        assert!(text.contains("ulimit -l") && text.contains("LimitMEMLOCK") && text.contains("CAP_IPC_LOCK"), "{text}");
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
