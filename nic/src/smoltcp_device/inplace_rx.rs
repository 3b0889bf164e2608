//! Zero-copy receive from a smoltcp TCP socket: messages are lent out in place.
//!
//! The socket's rx ring is given storage from a [`MirrorStorage`]: a pinned mapping that is
//! mapped twice back to back (so bytes that wrap the ring end are one slice) and never
//! unmapped (so a view can never dangle). smoltcp copies each segment's payload into that
//! ring — the one copy the design allows — and [`InPlaceRx`] lends whole messages out of it
//! as [`RingView`]s without dequeuing them: the bytes stay "received but unread" in smoltcp,
//! which also keeps the advertised window closed over them. When views are dropped (any
//! thread, any order), [`InPlaceRx::sync`] dequeues the released prefix from the socket,
//! which reopens the window.
//!
//! The soundness argument: smoltcp writes only into the unallocated part of its ring and
//! never touches allocated (received, not dequeued) bytes; lent bytes are allocated until
//! their release is processed by `sync`, which is the only code allowed to dequeue from the
//! socket (the contract of [`InPlaceRx::new`]).

use std::collections::VecDeque;
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use smoltcp::socket::tcp;

use crate::msg_ring::{leak_mirror, RingError, RingView, Shared};
use crate::region::PinnedBudget;

/// Process-lifetime, mirror-mapped storage for one smoltcp rx ring. Owned by whoever owns
/// the socket; it remembers the last [`InPlaceRx`] made over it, so a new one is refused
/// while views of the old one are alive.
pub struct MirrorStorage {
    base: NonNull<u8>,
    cap: usize,
    last: Weak<Shared>,
}

// SAFETY: the storage is a leaked mapping; this token only carries its address.
unsafe impl Send for MirrorStorage {}

impl fmt::Debug for MirrorStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorStorage").field("cap", &self.cap).field("in_use", &self.in_use()).finish()
    }
}

impl MirrorStorage {
    /// Maps `cap` bytes (a multiple of 4096) twice and leaks them; returns the token and the
    /// slice to build the socket's rx ring from (`tcp::SocketBuffer::new(slice)`). Handing
    /// out the slice once is what makes it exclusive.
    pub fn new(cap: usize, budget: &Arc<PinnedBudget>) -> Result<(MirrorStorage, &'static mut [u8]), RingError> {
        let base = leak_mirror(cap, budget)?;
        // SAFETY: [base, base+cap) is the first half of a live mapping that is never
        // unmapped (leaked), and this is the only slice ever made of it: exclusive 'static.
        let slice = unsafe { std::slice::from_raw_parts_mut(base.as_ptr(), cap) };
        Ok((MirrorStorage { base, cap, last: Weak::new() }, slice))
    }

    /// Ring size in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Whether an [`InPlaceRx`] made over this storage, or a view it lent, is still alive
    /// (then the socket's bytes must not be reused for another connection).
    pub fn in_use(&self) -> bool {
        self.last.strong_count() > 0
    }
}

/// Why in-place receive failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlaceError {
    /// A previous `InPlaceRx` over this storage, or one of its views, is still alive.
    StorageInUse,
    /// The socket's rx ring is not this storage.
    ForeignSocket,
    /// The socket holds fewer bytes than were lent: someone else dequeued from it.
    Desync { lent: u64, queued: usize },
}

impl fmt::Display for InPlaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InPlaceError::StorageInUse => f.write_str("rx storage still has live views"),
            InPlaceError::ForeignSocket => f.write_str("socket's rx ring is not this storage"),
            InPlaceError::Desync { lent, queued } => {
                write!(f, "{lent} bytes lent but the socket holds {queued}: dequeued behind our back")
            }
        }
    }
}

impl std::error::Error for InPlaceError {}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    len: u32,
    released: bool,
}

/// In-place message lending over one socket's rx ring.
pub struct InPlaceRx {
    shared: Arc<Shared>,
    cap: usize,
    /// Stream bytes dequeued from the socket so far (the socket's read position).
    consumed: u64,
    /// Stream offset just past the last lent or discarded byte.
    lent_end: u64,
    /// Bytes queued in the socket at the last sync.
    queued: usize,
    /// Ring offset of the socket's read position at the last sync.
    read_off: usize,
    spans: VecDeque<Span>,
    live: usize,
    /// The caller's bound on live views.
    max_views: usize,
    /// The bound for the ring in place now ([`views_for`]): what the release queue holds.
    views: usize,
}

/// Bytes of ring per view a lender allows: a ring of `cap` bytes lends at most
/// `cap / VIEW_BYTES` views at once (at least [`MIN_VIEWS`], at most the caller's bound).
/// A ring holds no more messages of at least this size than that, and the release queue
/// (16 bytes a view, allocated and written when lending starts) grows with the ring instead
/// of costing every connection its bound: 1024 views were 16 KiB of an idle connection's
/// 20 KiB of heap. A ring of smaller messages lends fewer at once (backpressure until
/// views are dropped) and grows under the pressure like any full ring.
pub const VIEW_BYTES: usize = 64;
/// Views any lender allows (if the caller's bound is not lower).
pub const MIN_VIEWS: usize = 16;

/// Live views allowed over a ring of `cap` bytes for a caller's bound of `max_views`.
pub fn views_for(cap: usize, max_views: usize) -> usize {
    (cap / VIEW_BYTES).max(MIN_VIEWS).min(max_views.max(1))
}

impl fmt::Debug for InPlaceRx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InPlaceRx")
            .field("consumed", &self.consumed)
            .field("lent_end", &self.lent_end)
            .field("queued", &self.queued)
            .field("live", &self.live)
            .finish()
    }
}

/// What a sync found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncResult {
    /// Bytes dequeued from the socket (released messages): window reopened by this much.
    pub freed: usize,
    /// Bytes that arrived since the last sync.
    pub new_bytes: usize,
}

impl InPlaceRx {
    /// Starts lending over `storage`, allowing at most `max_views` views at once (fewer on
    /// a small ring: [`views_for`]).
    ///
    /// # Safety
    /// `storage`'s slice must be the rx buffer of the socket later passed to `sync`, and
    /// while this value or any view it lent is alive, bytes must be dequeued from that
    /// socket only by [`InPlaceRx::sync`] (peeking and sending are fine; `recv`,
    /// `recv_slice` and resetting the socket are not).
    pub unsafe fn new(storage: &mut MirrorStorage, max_views: usize) -> Result<InPlaceRx, InPlaceError> {
        if storage.in_use() {
            return Err(InPlaceError::StorageInUse);
        }
        let views = views_for(storage.cap, max_views);
        let shared = Shared::leaked(storage.base, views);
        storage.last = Arc::downgrade(&shared);
        Ok(InPlaceRx {
            shared,
            cap: storage.cap,
            consumed: 0,
            lent_end: 0,
            queued: 0,
            read_off: 0,
            spans: VecDeque::new(),
            live: 0,
            max_views: max_views.max(1),
            views,
        })
    }

    /// Takes in released views, dequeues the released prefix from `sock`, and records what
    /// has arrived since the last call.
    pub fn sync(&mut self, sock: &mut tcp::Socket<'_>) -> Result<SyncResult, InPlaceError> {
        // Views are mostly released in order: try the span after the last one first.
        let mut hint = 0;
        while let Some(start) = self.shared.pop_release() {
            let i = match self.spans.get(hint) {
                Some(s) if s.start == start => Ok(hint),
                _ => self.spans.binary_search_by_key(&start, |s| s.start),
            };
            if let Ok(i) = i {
                if !self.spans[i].released {
                    self.spans[i].released = true;
                    self.live -= 1;
                }
                hint = i + 1;
            }
        }
        let mut n = 0usize;
        while let Some(s) = self.spans.front() {
            if !s.released {
                break;
            }
            n += s.len as usize;
            self.spans.pop_front();
        }
        let queued = sock.recv_queue();
        let lent = self.lent_end - self.consumed;
        if (queued as u64) < lent {
            return Err(InPlaceError::Desync { lent, queued });
        }
        let mut freed = 0;
        while freed < n {
            match sock.recv(|b| {
                let k = b.len().min(n - freed);
                (k, k)
            }) {
                Ok(0) | Err(_) => break,
                Ok(k) => freed += k,
            }
        }
        self.consumed += freed as u64;
        let before = self.queued.saturating_sub(freed);
        let queued = sock.recv_queue();
        if queued > 0 {
            let p = sock.peek(1).map_err(|_| InPlaceError::ForeignSocket)?.as_ptr() as usize;
            let base = self.shared.base().as_ptr() as usize;
            if p < base || p >= base + self.cap {
                return Err(InPlaceError::ForeignSocket);
            }
            self.read_off = p - base;
        }
        self.queued = queued;
        Ok(SyncResult { freed, new_bytes: queued.saturating_sub(before) })
    }

    /// Whether [`InPlaceRx::move_to`] may move now: no view lent and alive, nothing lent
    /// still held in the socket (as of the last sync).
    pub fn can_move(&self) -> bool {
        self.live == 0 && self.spans.is_empty() && Arc::strong_count(&self.shared) == 1
    }

    /// Moves lending to `storage`, the socket's new rx ring after it grew or shrank
    /// (`tcp::Socket::replace_recv_buffer` moved the queued bytes there), then syncs with
    /// `sock` so the read position is the new ring's. Stream offsets go on where they were.
    ///
    /// Refused (`StorageInUse`) while a view lent from the old ring is alive or unreleased
    /// in our books, or while `storage` is lent by another `InPlaceRx`: the engine moves a
    /// ring only when nothing is lent, so no view ever points into memory that is reused.
    ///
    /// # Safety
    /// As for [`InPlaceRx::new`]: `storage`'s slice must now be `sock`'s rx buffer, and from
    /// now on only `sync` dequeues from it.
    pub unsafe fn move_to(
        &mut self,
        storage: &mut MirrorStorage,
        sock: &mut tcp::Socket<'_>,
    ) -> Result<(), InPlaceError> {
        if !self.can_move() || storage.in_use() {
            return Err(InPlaceError::StorageInUse);
        }
        // No view is alive (`can_move`): the new queue is sized for the new ring.
        self.views = views_for(storage.cap, self.max_views);
        let shared = Shared::leaked(storage.base, self.views);
        storage.last = Arc::downgrade(&shared);
        self.shared = shared;
        self.cap = storage.cap;
        self.read_off = 0;
        self.sync(sock)?;
        Ok(())
    }

    /// Received bytes not lent yet, from the start of the next message (contiguous thanks
    /// to the mirror mapping), as of the last sync.
    pub fn unlent(&self) -> &[u8] {
        let lent = (self.lent_end - self.consumed) as usize;
        let len = self.queued.saturating_sub(lent);
        if len == 0 {
            return &[];
        }
        // SAFETY: read_off < cap and lent + len == queued <= cap, so the range lies in the
        // double mapping; the bytes are allocated in the socket's ring (received, not
        // dequeued), which smoltcp does not write, and only `sync` (&mut self, so not while
        // this borrow lives) dequeues them.
        unsafe { std::slice::from_raw_parts(self.shared.base().as_ptr().add(self.read_off + lent), len) }
    }

    /// Whether another view may be lent now.
    pub fn can_lend(&self) -> bool {
        self.live < self.views
    }

    /// Lends the next `len` unlent bytes as a view.
    pub fn lend(&mut self, len: usize) -> Result<RingView, RingError> {
        let available = self.unlent().len();
        if len > available {
            return Err(RingError::NotThatMuch { asked: len, available });
        }
        if !self.can_lend() {
            return Err(RingError::TooManyViews(self.live));
        }
        let lent = (self.lent_end - self.consumed) as usize;
        // SAFETY: in the double mapping (see `unlent`); non-null as the mapping is.
        let ptr = unsafe { NonNull::new_unchecked(self.shared.base().as_ptr().add(self.read_off + lent)) };
        let start = self.lent_end;
        self.spans.push_back(Span { start, len: len as u32, released: false });
        self.lent_end += len as u64;
        self.live += 1;
        // SAFETY: the bytes are allocated in the socket's ring and stay so until this
        // view's release is taken by `sync` (only `sync` dequeues, by our contract).
        Ok(unsafe { RingView::from_parts(&self.shared, ptr, len, start) })
    }

    /// Drops the next `len` unlent bytes without lending them (after a psock error).
    pub fn discard(&mut self, len: usize) -> Result<(), RingError> {
        let available = self.unlent().len();
        if len > available {
            return Err(RingError::NotThatMuch { asked: len, available });
        }
        self.spans.push_back(Span { start: self.lent_end, len: len as u32, released: true });
        self.lent_end += len as u64;
        Ok(())
    }

    /// Views lent and not yet released (as of the last sync).
    pub fn views_outstanding(&self) -> usize {
        self.live
    }

    /// The ring size.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Whether `p..p+len` lies in this ring's memory (zero-copy checks).
    pub fn contains(&self, p: *const u8, len: usize) -> bool {
        let base = self.shared.base().as_ptr() as usize;
        let p = p as usize;
        p >= base && p + len <= base + 2 * self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_pair::{mem_pair, MemPairConfig, MemPort};
    use crate::pool::PoolConfig;
    use crate::region::HugePolicy;
    use crate::smoltcp_device::PortDevice;
    use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
    use smoltcp::time::Instant;
    use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};

    struct Net {
        da: PortDevice<MemPort>,
        db: PortDevice<MemPort>,
        ia: Interface,
        ib: Interface,
        sa: SocketSet<'static>,
        sb: SocketSet<'static>,
        client: SocketHandle,
        server: SocketHandle,
        t: i64,
    }

    impl Net {
        fn poll(&mut self) {
            self.t += 1;
            let now = Instant::from_millis(self.t);
            self.ia.poll(now, &mut self.da, &mut self.sa);
            self.da.flush().unwrap();
            self.ib.poll(now, &mut self.db, &mut self.sb);
            self.db.flush().unwrap();
        }
        fn client(&mut self) -> &mut tcp::Socket<'static> {
            self.sa.get_mut(self.client)
        }
        fn server(&mut self) -> &mut tcp::Socket<'static> {
            self.sb.get_mut(self.server)
        }
    }

    /// A server socket whose rx ring is `storage`, connected from a plain client socket.
    fn net(storage: &'static mut [u8]) -> Net {
        let cfg = MemPairConfig {
            pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 1024 },
            huge: HugePolicy::Never,
            ..MemPairConfig::default()
        };
        let (a, b) = mem_pair(&cfg, &PinnedBudget::unlimited()).unwrap();
        let (ma, mb) = (a.mac(), b.mac());
        let mut da = PortDevice::new(a);
        let mut db = PortDevice::new(b);
        let mk = |d: &mut PortDevice<MemPort>, mac, ip| {
            let mut i = Interface::new(Config::new(EthernetAddress(mac).into()), d, Instant::from_millis(0));
            i.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap());
            i
        };
        let ia = mk(&mut da, ma, Ipv4Address::new(10, 9, 9, 1));
        let ib = mk(&mut db, mb, Ipv4Address::new(10, 9, 9, 2));
        let mut sa = SocketSet::new(vec![]);
        let mut sb = SocketSet::new(vec![]);
        let mut server = tcp::Socket::new(tcp::SocketBuffer::new(storage), tcp::SocketBuffer::new(vec![0u8; 65536]));
        server.listen(80).unwrap();
        let server = sb.add(server);
        let client =
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0u8; 65536]), tcp::SocketBuffer::new(vec![0u8; 65536]));
        let client = sa.add(client);
        let mut n = Net { da, db, ia, ib, sa, sb, client, server, t: 0 };
        let cx = n.ia.context();
        n.sa.get_mut::<tcp::Socket<'static>>(client).connect(cx, (Ipv4Address::new(10, 9, 9, 2), 80), 40000).unwrap();
        for _ in 0..100 {
            n.poll();
            if n.server().state() == tcp::State::Established && n.client().state() == tcp::State::Established {
                return n;
            }
        }
        panic!("no handshake");
    }

    #[test]
    fn a_ring_lends_as_many_views_as_its_size_allows_within_the_callers_bound() {
        assert_eq!(views_for(4096, 1024), 64, "4 KiB: one view per 64 bytes");
        assert_eq!(views_for(512 * 1024, 1024), 1024, "the caller's bound");
        assert_eq!(views_for(4096, 8), 8);
        assert_eq!(views_for(512, 1024), MIN_VIEWS);
        // 65 messages of 16 bytes in a 4 KiB ring: the 65th waits for a release.
        let (mut storage, slice) = MirrorStorage::new(4096, &PinnedBudget::unlimited()).unwrap();
        let mut n = net(slice);
        // SAFETY: `storage` is the server socket's rx ring and only `rx.sync` dequeues from it.
        let mut rx = unsafe { InPlaceRx::new(&mut storage, 1024) }.unwrap();
        assert_eq!(n.client().send_slice(&[7u8; 65 * 16]).unwrap(), 65 * 16);
        for _ in 0..20 {
            n.poll();
        }
        rx.sync(n.sb.get_mut::<tcp::Socket<'static>>(n.server)).unwrap();
        let views: Vec<RingView> = (0..64).map(|_| rx.lend(16).unwrap()).collect();
        assert!(!rx.can_lend());
        assert!(matches!(rx.lend(16), Err(RingError::TooManyViews(64))));
        drop(views);
        rx.sync(n.sb.get_mut::<tcp::Socket<'static>>(n.server)).unwrap();
        assert_eq!(&rx.lend(16).unwrap()[..], &[7u8; 16], "lends again once views are released");
    }

    #[test]
    fn messages_are_lent_in_place_and_wrapping_ones_stay_contiguous() {
        let (mut storage, slice) = MirrorStorage::new(4096, &PinnedBudget::unlimited()).unwrap();
        let mut n = net(slice);
        // SAFETY: `storage` is the server socket's rx ring and only `rx.sync` dequeues from it.
        let mut rx = unsafe { InPlaceRx::new(&mut storage, 64) }.unwrap();
        // SAFETY: refused before anything is lent (the storage is in use).
        let second = unsafe { InPlaceRx::new(&mut storage, 1) };
        assert!(matches!(second, Err(InPlaceError::StorageInUse)));
        let mut next = 0u8;
        let mut got = Vec::new();
        // 40 messages of 300 bytes through a 4 KiB ring: it wraps several times.
        for round in 0..40u8 {
            let msg = vec![round; 300];
            assert_eq!(n.client().send_slice(&msg).unwrap(), 300);
            for _ in 0..20 {
                n.poll();
                let server = n.sb.get_mut::<tcp::Socket<'static>>(n.server);
                rx.sync(server).unwrap();
                while rx.unlent().len() >= 300 {
                    let v = rx.lend(300).unwrap();
                    assert!(rx.contains(v.as_ptr(), v.len()), "the view is in the socket's ring");
                    assert!(v.iter().all(|&b| b == next), "message {next} whole and in order");
                    next += 1;
                    got.push(v);
                }
                // hold up to 5 messages, release the oldest out of order
                if got.len() > 5 {
                    got.swap(0, 1);
                    got.remove(0);
                    got.remove(0);
                }
            }
        }
        assert_eq!(next, 40);
        drop(got);
        let server = n.sb.get_mut::<tcp::Socket<'static>>(n.server);
        let r = rx.sync(server).unwrap();
        assert!(r.freed > 0);
        assert_eq!(server.recv_queue(), 0, "everything released was dequeued");
        assert_eq!(rx.views_outstanding(), 0);
        drop(rx);
        assert!(!storage.in_use());
    }

    #[test]
    fn held_views_keep_the_window_closed_and_release_reopens_it() {
        let (mut storage, slice) = MirrorStorage::new(4096, &PinnedBudget::unlimited()).unwrap();
        let mut n = net(slice);
        // SAFETY: as above.
        let mut rx = unsafe { InPlaceRx::new(&mut storage, 64) }.unwrap();
        let payload = vec![7u8; 8192];
        let mut sent = 0;
        let mut held = Vec::new();
        for _ in 0..200 {
            if sent < payload.len() {
                sent += n.client().send_slice(&payload[sent..]).unwrap();
            }
            n.poll();
            let server = n.sb.get_mut::<tcp::Socket<'static>>(n.server);
            rx.sync(server).unwrap();
            let k = rx.unlent().len();
            if k > 0 {
                held.push(rx.lend(k).unwrap());
            }
        }
        let lent: usize = held.iter().map(|v| v.len()).sum();
        assert_eq!(lent, 4096, "the ring filled and no byte was overwritten");
        assert!(held.iter().all(|v| v.iter().all(|&b| b == 7)));
        assert_eq!(n.server().recv_capacity() - n.server().recv_queue(), 0, "window closed");
        drop(held);
        let server = n.sb.get_mut::<tcp::Socket<'static>>(n.server);
        assert_eq!(rx.sync(server).unwrap().freed, 4096);
        for _ in 0..200 {
            n.poll();
            let server = n.sb.get_mut::<tcp::Socket<'static>>(n.server);
            rx.sync(server).unwrap();
            let k = rx.unlent().len();
            if k > 0 {
                drop(rx.lend(k).unwrap());
            }
        }
        assert_eq!(rx.lent_end, 8192, "the rest arrived once the window reopened");
    }

    #[test]
    fn dequeuing_behind_its_back_is_detected() {
        let (mut storage, slice) = MirrorStorage::new(4096, &PinnedBudget::unlimited()).unwrap();
        let mut n = net(slice);
        // SAFETY: this test breaks the contract on purpose, but only after no view is alive
        // (the lent view is dropped before the foreign dequeue), so no byte is viewed while
        // it could be rewritten.
        let mut rx = unsafe { InPlaceRx::new(&mut storage, 64) }.unwrap();
        n.client().send_slice(&[1u8; 100]).unwrap();
        for _ in 0..10 {
            n.poll();
        }
        let server = n.sb.get_mut::<tcp::Socket<'static>>(n.server);
        rx.sync(server).unwrap();
        drop(rx.lend(100).unwrap());
        let mut sink = [0u8; 100];
        let server = n.sb.get_mut::<tcp::Socket<'static>>(n.server);
        server.recv_slice(&mut sink).unwrap();
        assert!(matches!(rx.sync(server), Err(InPlaceError::Desync { lent: 100, queued: 0 })));
    }
}
