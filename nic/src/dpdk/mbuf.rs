//! Mempools and mbuf-backed [`Frame`]s.
//!
//! A [`Mempool`] owns an `rte_mempool` of packet mbufs and frees it when the last user
//! (its port, and every frame still holding one of its mbufs) is gone. [`MbufRelease`]
//! is the `FrameRelease` of mbuf frames: a frame's id is its mbuf pointer, and dropping
//! the frame frees the mbuf (from any thread: the default mempool ops are multi-producer).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ukcm_dpdk_sys as sys;

use super::{eal, DpdkError, Eal};
use crate::pool::{Frame, FrameRelease};

static NEXT_POOL: AtomicU32 = AtomicU32::new(0);

/// An `rte_mempool` of packet mbufs.
#[derive(Debug)]
pub(crate) struct Mempool {
    mp: NonNull<sys::rte_mempool>,
    size: u32,
    // Declared last: the EAL outlives the pool.
    _eal: Eal,
}

/// How a pool's mbufs are laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolLayout {
    /// `rte_pktmbuf_pool_create`'s.
    Default,
    /// Objects of exactly one page, packed edge to edge (for `net_af_xdp`: see
    /// `ukcm_pktmbuf_pool_create_paged` in the shim).
    Paged,
}

// SAFETY: rte_mempool's default ops (ring_mp_mc) are thread-safe for get and put; the
// pointer is only freed in Drop, when no user is left.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// `n` mbufs with `data_room` bytes of buffer each (headroom included), on `socket`;
    /// with [`PoolLayout::Paged`] the data room is what fills a page instead.
    pub(crate) fn new(
        eal: &Eal,
        tag: &str,
        n: u32,
        data_room: u16,
        socket: i32,
        layout: PoolLayout,
    ) -> Result<Arc<Mempool>, DpdkError> {
        let k = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
        // Mempool names are global and at most 25 characters (RTE_MEMPOOL_NAMESIZE - 7).
        let name = format!("ukcm{}_{k}", &tag[..tag.len().min(12)]);
        let c = CString::new(name).map_err(|_| DpdkError::Unsupported("NUL in mempool name".into()))?;
        let cache = 256.min(n / 2);
        let (mp, op) = match layout {
            PoolLayout::Default => {
                // SAFETY: the EAL is initialised (eal exists); c is a valid name.
                let mp = unsafe { sys::rte_pktmbuf_pool_create(c.as_ptr(), n, cache, 0, data_room, socket) };
                (mp, "rte_pktmbuf_pool_create")
            }
            PoolLayout::Paged => {
                // SAFETY: as above.
                let mp = unsafe { sys::ukcm_pktmbuf_pool_create_paged(c.as_ptr(), n, cache, socket) };
                (mp, "page-sized mbuf pool")
            }
        };
        let mp = NonNull::new(mp).ok_or(DpdkError::Call { op, rc: -eal::errno() })?;
        Ok(Arc::new(Mempool { mp, size: n, _eal: eal.clone() }))
    }

    /// (bytes from the pool's first page to the end of its last mbuf, bytes `net_af_xdp`
    /// registers as UMEM for it): an mbuf past the registered bytes makes descriptors the
    /// kernel rejects.
    pub(crate) fn umem_fit(&self) -> (u64, u64) {
        let (mut span, mut registered) = (0u64, 0u64);
        // SAFETY: mp is a live mempool; both out pointers are valid.
        unsafe { sys::ukcm_mempool_umem_fit(self.mp.as_ptr(), &mut span, &mut registered) };
        (span, registered)
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.mp.as_ptr()
    }

    /// Mbufs free in the pool.
    pub(crate) fn available(&self) -> u32 {
        // SAFETY: mp is a live mempool.
        unsafe { sys::ukcm_mempool_avail(self.mp.as_ptr()) }
    }

    /// Mbufs in the pool in total.
    pub(crate) fn size(&self) -> u32 {
        self.size
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the last user is gone: the port closed its queues (the driver returned
        // its mbufs) and every mbuf frame held an Arc to this pool.
        unsafe { sys::rte_mempool_free(self.mp.as_ptr()) };
    }
}

/// Frees mbufs of one mempool when their frames drop.
#[derive(Debug)]
pub(crate) struct MbufRelease {
    pool: Arc<Mempool>,
}

impl MbufRelease {
    pub(crate) fn shared(pool: Arc<Mempool>) -> Arc<dyn FrameRelease> {
        Arc::new(MbufRelease { pool })
    }
}

impl FrameRelease for MbufRelease {
    fn release(&self, id: u64) {
        let _ = &self.pool;
        // SAFETY: `id` is the pointer of an mbuf of this pool that only this frame owned
        // (see `frame_from_mbuf`); the pool is alive (self holds it).
        unsafe { sys::ukcm_pktmbuf_free(id as usize as *mut sys::rte_mbuf) };
    }
}

/// What a received mbuf holds.
pub(crate) fn view(m: *mut sys::rte_mbuf) -> sys::ukcm_mbuf_view {
    let mut v = sys::ukcm_mbuf_view::default();
    // SAFETY: m is a live mbuf the caller owns; v is a valid out pointer.
    unsafe { sys::ukcm_mbuf_view(m, &mut v) };
    v
}

/// Wraps a single-segment mbuf as a frame (no copy); `None` (and the mbuf freed) if it has
/// more than one segment.
///
/// # Safety
/// `m` must be an mbuf the caller owns (just received) from the pool `release` frees into.
pub(crate) unsafe fn frame_from_mbuf(m: *mut sys::rte_mbuf, release: &Arc<dyn FrameRelease>) -> Option<Frame> {
    let v = view(m);
    let buf = NonNull::new(v.buf.cast::<u8>());
    match buf {
        Some(buf) if v.nb_segs == 1 && v.data_off as u32 + v.data_len as u32 <= v.buf_len as u32 => {
            // SAFETY: the buffer holds buf_len bytes, stays valid until the mbuf is freed,
            // and only this frame owns the mbuf; the release frees it exactly once.
            Some(unsafe {
                Frame::external(
                    buf,
                    v.buf_len as u32,
                    v.data_off as u32,
                    v.data_len as u32,
                    m as usize as u64,
                    release.clone(),
                )
            })
        }
        _ => {
            // SAFETY: we own m and give it back.
            unsafe { sys::ukcm_pktmbuf_free(m) };
            None
        }
    }
}
