//! The mux over the userspace stack: a psock is a connection of a `ukcm_stack::Engine`.
//!
//! The engine passes itself as the transport context ([`crate::Mux::poll_with`]), so the
//! mux and the engine share one thread and no locks.
//!
//! Receive is zero-copy when the connection was opened with `TcpOptions::inplace_rx` (the
//! default; the server and upstream pool of the `ukcm` crate set it too): smoltcp's rx ring is then
//! mirror-mapped pinned memory and messages are lent out of it in place
//! ([`ukcm_nic::InPlaceRx`]); the only copy is smoltcp's, frame to ring. Other connections
//! (opened with it off, or whose mirror mapping failed: the engine's `inplace_fallbacks`)
//! fall back to moving bytes from smoltcp's ring into a psock ring of their own — one copy
//! more, counted in `rx_copied_bytes` so it shows in every stats table, and logged once.
//!
//! Transmit: a run-to-completion reply built with `Request::reply_with` (the `ukcm`
//! server's `Reply::send_with`/`send`) while it is next on the wire is built in smoltcp's tx
//! ring itself ([`PsockIo::tx_space`]), and smoltcp's frame serialisation is its only copy.
//! Everything else has one copy more than the design allows, counted in `tx_copied_bytes`:
//! messages built in a socket's pinned tx ring on another thread (which cannot reach
//! smoltcp's ring), replies held behind a deferred answer, and replies that did not fit the
//! free space (the ring then grows, see `ukcm_stack::autosize`).

use std::io;
use std::marker::PhantomData;
use std::sync::Arc;

use smoltcp::socket::tcp::State;
use ukcm_nic::{ByteRing, InPlaceRx, PinnedBudget, Port, RingError, RingView};
use ukcm_stack::{ConnId, Engine, StackError};

use crate::mux::Mux;

use crate::psock_io::{Fill, PsockIo};

/// The copy fallback has been logged (once per process).
static COPY_FALLBACK_SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Where a psock's received bytes are delineated.
#[derive(Debug)]
enum Rx {
    /// In place in smoltcp's (mirror-mapped) rx ring: zero-copy.
    InPlace(InPlaceRx),
    /// In a ring of the psock's own, copied out of smoltcp's ring.
    Copy(ByteRing),
}

/// Heap bytes a mux holds per attached engine connection (the psock with its assembler,
/// order and completion state, this transport with its in-place rx state and its release
/// queue for a 4 KiB ring, the slot tables), with the slack of growable tables. Measured
/// with heaptrack over 10,000 idle connections (README: about 2.7 KB) and rounded up; the
/// `ukcm` server charges it to the pinned budget with the engine's own figure
/// (`TcpOptions::state_bytes`), so the budget bounds everything a connection holds.
pub const PSOCK_STATE_BYTES: usize = 3072;

/// A connection of an engine with port type `P`, as a psock.
#[derive(Debug)]
pub struct StackPsock<P> {
    conn: ConnId,
    ring: Rx,
    /// The largest the in-place rx ring may grow to (the engine grows it under pressure).
    rx_max: usize,
    written: u64,
    label: String,
    /// Reports the engine's readiness key (off: visited every mux round).
    keyed: bool,
    _port: PhantomData<fn() -> P>,
}

impl<P: Port> StackPsock<P> {
    /// Wraps connection `conn` of `engine`, with at most `max_views` undelivered messages.
    /// If the connection was opened with `TcpOptions::inplace_rx`, messages are lent in
    /// place from its rx ring; otherwise they are copied into a psock ring of `ring_bytes`
    /// (a multiple of 4096).
    pub fn new(
        engine: &mut Engine<P>,
        conn: ConnId,
        ring_bytes: usize,
        max_views: usize,
        budget: &Arc<PinnedBudget>,
    ) -> io::Result<Self> {
        let info = engine.info(conn).map_err(stack_err)?;
        let label = info.remote.map(|r| r.to_string()).unwrap_or_else(|| conn.to_string());
        let ring = match engine.take_inplace_rx(conn, max_views) {
            Ok(rx) => Rx::InPlace(rx),
            Err(e) => {
                // Visible, not silent: the copy is counted in rx_copied_bytes, and said once here.
                if !COPY_FALLBACK_SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        "connection {conn} has no in-place rx ring ({e}): its messages are copied once more (rx_copied_bytes); connections get zero-copy receive with TcpOptions::inplace_rx (the default) when their ring can be mirror-mapped"
                    );
                }
                Rx::Copy(ByteRing::new(ring_bytes, max_views, budget).map_err(io::Error::other)?)
            }
        };
        Ok(StackPsock {
            conn,
            ring,
            rx_max: info.recv_capacity_max,
            written: 0,
            label,
            keyed: true,
            _port: PhantomData,
        })
    }

    /// Leaves the engine's readiness list to another mux: this psock is visited on every
    /// round of its own mux (for a handful of connections in a second mux on the same
    /// engine, such as an upstream pool's).
    pub fn poll_always(mut self) -> Self {
        self.keyed = false;
        self
    }

    /// Whether received messages are lent in place (zero-copy) rather than copied.
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.ring, Rx::InPlace(_))
    }

    /// The engine connection.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

fn stack_err(e: StackError) -> io::Error {
    match e {
        StackError::NoSuchConn(_) => io::Error::new(io::ErrorKind::ConnectionReset, e.to_string()),
        other => io::Error::other(other.to_string()),
    }
}

fn peer_closed(state: State) -> bool {
    matches!(state, State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed)
}

impl<P: Port> PsockIo for StackPsock<P> {
    type Ctx = Engine<P>;

    fn fill(&mut self, engine: &mut Engine<P>) -> io::Result<Fill> {
        let mut fill = Fill::default();
        match &mut self.ring {
            Rx::InPlace(rx) => {
                let r = engine.inplace_sync(self.conn, rx).map_err(stack_err)?;
                fill.new_bytes = r.new_bytes;
                let info = engine.info(self.conn).map_err(stack_err)?;
                fill.eof = peer_closed(info.state);
            }
            Rx::Copy(ring) => {
                let info = engine.info(self.conn).map_err(stack_err)?;
                if info.recv_queue > 0 {
                    let n = engine
                        .with_tcp(self.conn, |s| {
                            let mut total = 0;
                            loop {
                                let space = ring.free_space();
                                if space.is_empty() {
                                    break;
                                }
                                match s.recv_slice(space) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        ring.commit(n);
                                        total += n;
                                    }
                                }
                            }
                            total
                        })
                        .map_err(stack_err)?;
                    fill.new_bytes = n;
                    fill.copied_bytes = n;
                    fill.ring_full = ring.free_space().is_empty();
                }
                fill.eof = peer_closed(info.state) && info.recv_queue == fill.new_bytes;
            }
        }
        Ok(fill)
    }

    fn unparsed(&self) -> &[u8] {
        match &self.ring {
            Rx::InPlace(rx) => rx.unlent(),
            Rx::Copy(ring) => ring.unparsed(),
        }
    }

    fn take_view(&mut self, len: usize) -> Result<RingView, RingError> {
        match &mut self.ring {
            Rx::InPlace(rx) => rx.lend(len),
            Rx::Copy(ring) => ring.take_view(len),
        }
    }

    fn reclaim(&mut self) -> usize {
        match &mut self.ring {
            // in place, releases are taken (and the window reopened) by `fill`'s sync
            Rx::InPlace(_) => 0,
            Rx::Copy(ring) => ring.reclaim(),
        }
    }

    fn discard(&mut self, len: usize) -> Result<(), RingError> {
        match &mut self.ring {
            Rx::InPlace(rx) => rx.discard(len),
            Rx::Copy(ring) => ring.discard(len),
        }
    }

    fn write(&mut self, engine: &mut Engine<P>, bytes: &[u8]) -> io::Result<usize> {
        let n = engine.send(self.conn, bytes).map_err(stack_err)?;
        self.written += n as u64;
        Ok(n)
    }

    fn write_vectored(&mut self, engine: &mut Engine<P>, bufs: &[&[u8]]) -> io::Result<usize> {
        let n = engine.send_vectored(self.conn, bufs).map_err(stack_err)?;
        self.written += n as u64;
        Ok(n)
    }

    fn write_copies(&self) -> bool {
        true
    }

    fn tx_space<'c>(&mut self, engine: &'c mut Engine<P>) -> Option<&'c mut [u8]> {
        engine.send_space(self.conn).ok().filter(|s| !s.is_empty())
    }

    fn tx_commit(&mut self, engine: &mut Engine<P>, len: usize) -> io::Result<()> {
        engine.send_commit(self.conn, len).map_err(stack_err)?;
        self.written += len as u64;
        Ok(())
    }

    fn acked_total(&mut self, engine: &mut Engine<P>) -> io::Result<u64> {
        let info = engine.info(self.conn).map_err(stack_err)?;
        Ok(self.written.saturating_sub(info.send_queue as u64))
    }

    fn rx_contains(&self, p: *const u8, len: usize) -> bool {
        match &self.ring {
            Rx::InPlace(rx) => rx.contains(p, len),
            Rx::Copy(ring) => ring.contains(p, len),
        }
    }

    fn rx_capacity(&self) -> usize {
        match &self.ring {
            // the ring starts small and grows to this as messages need it
            Rx::InPlace(_) => self.rx_max,
            Rx::Copy(ring) => ring.capacity(),
        }
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn close(&mut self, engine: &mut Engine<P>) {
        let _ = engine.close(self.conn);
    }

    fn ready_key(&self) -> Option<usize> {
        self.keyed.then(|| self.conn.index())
    }

    fn views_outstanding(&self) -> usize {
        match &self.ring {
            Rx::InPlace(rx) => rx.views_outstanding(),
            Rx::Copy(ring) => ring.views_outstanding(),
        }
    }
}

impl<P: Port> Mux<StackPsock<P>> {
    /// One round over an engine's connections: takes the engine's ready list (connections
    /// with new data, acknowledgements or a state change) and polls only those psocks plus
    /// the ones with work pending — never all of them.
    pub fn poll_engine(&mut self, engine: &mut Engine<P>, now: std::time::Instant) -> bool {
        self.take_engine_ready(engine);
        self.poll_with(engine, now)
    }

    /// Marks the psocks of the connections the engine reports ready.
    fn take_engine_ready(&mut self, engine: &mut Engine<P>) {
        let mut ready = std::mem::take(&mut self.ready_scratch);
        engine.drain_ready(&mut ready);
        for c in ready.drain(..) {
            self.mark_ready_key(c.index());
        }
        self.ready_scratch = ready;
    }

    /// [`Mux::poll_engine`] in run-to-completion mode (see [`Mux::poll_rtc`]).
    pub fn poll_engine_rtc(
        &mut self,
        engine: &mut Engine<P>,
        now: std::time::Instant,
        handler: impl FnMut(crate::PsockId, &[u8], &mut Vec<u8>),
    ) -> bool {
        self.take_engine_ready(engine);
        self.poll_rtc(engine, now, handler)
    }

    /// [`Mux::poll_engine`] handing whole [`crate::Request`]s to `handler` (see
    /// [`Mux::poll_requests`]).
    pub fn poll_engine_requests(
        &mut self,
        engine: &mut Engine<P>,
        now: std::time::Instant,
        handler: impl FnMut(&mut crate::Request<'_>),
    ) -> bool {
        self.take_engine_ready(engine);
        self.poll_requests(engine, now, handler)
    }
}
