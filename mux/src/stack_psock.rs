//! The mux over the userspace stack: a psock is a connection of a `ukcm_stack::Engine`.
//!
//! The engine passes itself as the transport context ([`crate::Mux::poll_with`]), so the
//! mux and the engine share one thread and no locks.
//!
//! Receive currently moves bytes from the connection's smoltcp rx ring into the psock's
//! mirror-mapped ring: one copy more than the design allows, counted in
//! `rx_copied_bytes` so it shows in every stats table. The zero-copy step — smoltcp's rx
//! ring itself mirror-mapped and viewed in place — is the next change to this module.

use std::io;
use std::marker::PhantomData;
use std::sync::Arc;

use smoltcp::socket::tcp::State;
use ukcm_nic::{ByteRing, PinnedBudget, Port, RingError, RingView};
use ukcm_stack::{ConnId, Engine, StackError};

use crate::mux::Mux;

use crate::transport::{Fill, PsockIo};

/// A connection of an engine with port type `P`, as a psock.
#[derive(Debug)]
pub struct StackPsock<P> {
    conn: ConnId,
    ring: ByteRing,
    written: u64,
    label: String,
    _port: PhantomData<fn() -> P>,
}

impl<P: Port> StackPsock<P> {
    /// Wraps connection `conn` of `engine` with an rx ring of `ring_bytes` (a multiple of
    /// 4096) holding at most `max_views` undelivered messages.
    pub fn new(engine: &Engine<P>, conn: ConnId, ring_bytes: usize, max_views: usize, budget: &Arc<PinnedBudget>) -> io::Result<Self> {
        let info = engine.info(conn).map_err(stack_err)?;
        let label = info.remote.map(|r| r.to_string()).unwrap_or_else(|| conn.to_string());
        let ring = ByteRing::new(ring_bytes, max_views, budget).map_err(io::Error::other)?;
        Ok(StackPsock { conn, ring, written: 0, label, _port: PhantomData })
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
        let info = engine.info(self.conn).map_err(stack_err)?;
        let mut fill = Fill::default();
        if info.recv_queue > 0 {
            let ring = &mut self.ring;
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
            fill.ring_full = self.ring.free_space().is_empty();
        }
        fill.eof = peer_closed(info.state) && info.recv_queue == fill.new_bytes;
        Ok(fill)
    }

    fn unparsed(&self) -> &[u8] {
        self.ring.unparsed()
    }

    fn take_view(&mut self, len: usize) -> Result<RingView, RingError> {
        self.ring.take_view(len)
    }

    fn reclaim(&mut self) -> usize {
        self.ring.reclaim()
    }

    fn discard(&mut self, len: usize) -> Result<(), RingError> {
        self.ring.discard(len)
    }

    fn write(&mut self, engine: &mut Engine<P>, bytes: &[u8]) -> io::Result<usize> {
        let n = engine.send(self.conn, bytes).map_err(stack_err)?;
        self.written += n as u64;
        Ok(n)
    }

    fn acked_total(&mut self, engine: &mut Engine<P>) -> io::Result<u64> {
        let info = engine.info(self.conn).map_err(stack_err)?;
        Ok(self.written.saturating_sub(info.send_queue as u64))
    }

    fn rx_capacity(&self) -> usize {
        self.ring.capacity()
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn close(&mut self, engine: &mut Engine<P>) {
        let _ = engine.close(self.conn);
    }

    fn ready_key(&self) -> Option<usize> {
        Some(self.conn.index())
    }

    fn views_outstanding(&self) -> usize {
        self.ring.views_outstanding()
    }
}

impl<P: Port> Mux<StackPsock<P>> {
    /// One round over an engine's connections: takes the engine's ready list (connections
    /// with new data, acknowledgements or a state change) and polls only those psocks plus
    /// the ones with work pending — never all of them.
    pub fn poll_engine(&mut self, engine: &mut Engine<P>, now: std::time::Instant) -> bool {
        let mut ready = std::mem::take(&mut self.ready_scratch);
        engine.drain_ready(&mut ready);
        for c in ready.drain(..) {
            self.mark_ready_key(c.index());
        }
        self.ready_scratch = ready;
        self.poll_with(engine, now)
    }

    /// [`Mux::poll_engine`] in run-to-completion mode (see [`Mux::poll_rtc`]).
    pub fn poll_engine_rtc(
        &mut self,
        engine: &mut Engine<P>,
        now: std::time::Instant,
        handler: impl FnMut(crate::PsockId, &[u8], &mut Vec<u8>),
    ) -> bool {
        let mut ready = std::mem::take(&mut self.ready_scratch);
        engine.drain_ready(&mut ready);
        for c in ready.drain(..) {
            self.mark_ready_key(c.index());
        }
        self.ready_scratch = ready;
        self.poll_rtc(engine, now, handler)
    }
}
