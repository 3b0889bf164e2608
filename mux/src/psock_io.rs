//! What the mux needs from a byte-stream connection (a psock's transport).
//!
//! The mux is generic over this so the same psock logic runs over the userspace stack's
//! TCP connections and over kernel TCP sockets (the fallback, and the fair baseline).
//! Receive is ring-shaped: the transport lands stream bytes in a pinned ring and the mux
//! delineates and hands out messages in place.

use std::io;

use ukcm_nic::{RingError, RingView};

/// Result of moving newly arrived bytes into the rx ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fill {
    /// Bytes added to the ring by this call.
    pub new_bytes: usize,
    /// The peer closed its side (no more bytes will ever come).
    pub eof: bool,
    /// The ring had no free space, so data may be waiting in the transport.
    pub ring_full: bool,
    /// Bytes the transport had to copy beyond its one allowed copy (counted in stats).
    pub copied_bytes: usize,
}

/// One connection as the mux sees it.
///
/// `Ctx` is what the transport needs from its owner to reach the connection: `()` for
/// kernel sockets, the engine for connections of the userspace stack. The mux passes it
/// through from [`crate::Mux::poll_with`].
pub trait PsockIo: Send {
    /// The owner's context handed to the calls that touch the connection.
    type Ctx;

    /// Moves arrived bytes into the rx ring. An `Err` means the connection is broken
    /// (reset): the mux posts EPIPE.
    fn fill(&mut self, ctx: &mut Self::Ctx) -> io::Result<Fill>;

    /// Stream bytes from the start of the next undelivered message (contiguous).
    fn unparsed(&self) -> &[u8];

    /// Hands out the next `len` unparsed bytes as an in-place view.
    fn take_view(&mut self, len: usize) -> Result<RingView, RingError>;

    /// Frees ring space of released views; returns bytes freed.
    fn reclaim(&mut self) -> usize;

    /// Drops the next `len` unparsed bytes without a view (a message handled in place by a
    /// run-to-completion handler); the space is freed by the next reclaim.
    fn discard(&mut self, len: usize) -> Result<(), RingError>;

    /// Writes as much of `bytes` as the transport takes now (0 when full).
    fn write(&mut self, ctx: &mut Self::Ctx, bytes: &[u8]) -> io::Result<usize>;

    /// Writes as much of the concatenation of `bufs` as the transport takes now (0 when
    /// full): several queued messages of one psock in one call. By default one `write`
    /// per buffer, stopping at the first short one.
    fn write_vectored(&mut self, ctx: &mut Self::Ctx, bufs: &[&[u8]]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            let n = self.write(ctx, b)?;
            total += n;
            if n < b.len() {
                break;
            }
        }
        Ok(total)
    }

    /// The free space at the end of the transport's own send buffer, for replies built in
    /// place (see [`crate::Request::reply_with`]); `None` where there is no such buffer
    /// (kernel sockets: their write is the one copy) or it is full. Bytes written there are
    /// sent only once [`PsockIo::tx_commit`] queues them.
    fn tx_space<'c>(&mut self, _ctx: &'c mut Self::Ctx) -> Option<&'c mut [u8]> {
        None
    }

    /// Queues the first `len` bytes of the space [`PsockIo::tx_space`] gave, as written.
    fn tx_commit(&mut self, _ctx: &mut Self::Ctx, len: usize) -> io::Result<()> {
        if len == 0 {
            Ok(())
        } else {
            Err(io::Error::other("this transport has no in-place send space"))
        }
    }

    /// Whether bytes given to [`PsockIo::write`] are copied once more than the design allows
    /// (counted in `tx_copied_bytes`): true over the userspace stack, where they land in
    /// smoltcp's tx ring and smoltcp copies them into frames again; false over kernel
    /// sockets, whose write is their one copy.
    fn write_copies(&self) -> bool {
        false
    }

    /// Total stream bytes the peer has acknowledged.
    fn acked_total(&mut self, ctx: &mut Self::Ctx) -> io::Result<u64>;

    /// The largest message this psock can hold in place: the rx ring's size, or for a ring
    /// that grows with the traffic, the size it may grow to.
    fn rx_capacity(&self) -> usize;

    /// A short label for stats (e.g. the peer address).
    fn label(&self) -> String;

    /// Closes the connection (both directions).
    fn close(&mut self, ctx: &mut Self::Ctx);

    /// A small dense key (e.g. the engine's connection index) under which the owner reports
    /// this connection ready with [`crate::Mux::mark_ready_key`]. Psocks with a key are
    /// polled only when ready or when they have work pending; `None` (kernel sockets, which
    /// have no readiness source here) means "poll on every round".
    fn ready_key(&self) -> Option<usize> {
        None
    }

    /// Received messages lent out and not yet released (their releases need a reclaim).
    fn views_outstanding(&self) -> usize {
        0
    }

    /// Whether `[p, p+len)` lies in this psock's receive ring (the zero-copy check: a
    /// delivered message must be a view of the ring, not a copy).
    fn rx_contains(&self, p: *const u8, len: usize) -> bool;
}
