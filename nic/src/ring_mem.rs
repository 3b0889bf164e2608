//! Pinned memory for TCP socket rings that lives for the rest of the process.
//!
//! smoltcp's socket buffers borrow their storage (`ManagedSlice::Borrowed(&'a mut [u8])`);
//! an engine keeps its sockets in a `SocketSet<'static>`, so the rings need `'static`
//! slices. [`leak_region`] turns a [`PinnedRegion`] into one, the way `Box::leak` does for a
//! box: the mapping is never unmapped afterwards, so the slice stays valid forever. The
//! stack carves it into rings with `split_at_mut` (safe) and recycles whole sockets
//! (ring memory together with its socket) in a process-wide pool, so leaking is bounded by
//! the peak number of rings ever in use at once.
//!
//! The region's budget charge is kept forever too: the bytes stay pinned, so they stay
//! counted. Callers that want per-connection accounting charge a second budget themselves.

use crate::region::PinnedRegion;

/// Leaks `region`: its memory stays mapped, locked and charged for the rest of the process,
/// and the returned slice is its only handle.
pub fn leak_region(region: PinnedRegion) -> &'static mut [u8] {
    let ptr = region.as_ptr();
    let len = region.len();
    // Never run Drop: the mapping (and its budget charge) must outlive every borrow below.
    std::mem::forget(region);
    // SAFETY: [ptr, ptr+len) is a live, readable and writable private mapping of `len`
    // bytes (PinnedRegion's invariant). Its only owner was `region`, consumed above without
    // running Drop, so nothing will ever unmap it and nothing else can reach these bytes:
    // the `'static` exclusive borrow is the sole access path, as with `Box::leak`.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{HugePolicy, PinnedBudget, SMALL_PAGE};

    #[test]
    fn leaked_region_is_writable_and_stays_charged() {
        let b = PinnedBudget::unlimited();
        let r = PinnedRegion::new(2 * SMALL_PAGE, &b, HugePolicy::Never).unwrap();
        let s = leak_region(r);
        assert_eq!(s.len(), 2 * SMALL_PAGE);
        let (x, y) = s.split_at_mut(SMALL_PAGE);
        x.fill(1);
        y.fill(2);
        assert_eq!(x[SMALL_PAGE - 1] + y[0], 3);
        assert_eq!(b.used(), 2 * SMALL_PAGE as u64, "leaked memory stays accounted");
    }
}
