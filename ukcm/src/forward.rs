//! Forwarding appliances (proxies): client requests in, backend requests out through an
//! upstream pool on the same engine, backend replies back to the client in request order.
//!
//! A [`Forward`] sees each client request with its [`Reply`]: it answers at once (a
//! command the proxy handles itself), or defers the reply slot and sends the request (or
//! several, for a multi-key command) to backends with a tag of its own choosing. Each
//! backend reply or error comes back to [`Forward::response`] with that tag, and the
//! appliance answers the slot through [`Clients`]. Ordering is the mux's: a reply given for
//! a later request waits for the earlier ones on the same client connection.

use std::time::Instant;

use ukcm_mux::{Mux, PsockErrorKind, PsockIo, ReplySlot, Request};

use crate::server::{EngineApp, EngineSink, Handled, Reply};
use crate::transport::Transport;
use crate::upstream::{Pool, UpstreamError};

/// The backends, as a forwarder sees them while it handles a request.
pub trait Upstream<C> {
    /// Number of backends (indices `0..n`, in configuration order).
    fn backends(&self) -> usize;
    /// Whether backend `i` takes requests now.
    fn is_up(&self, i: usize) -> bool;
    /// Whether backend `i` is ejected (marked down after its failure limit).
    fn is_ejected(&self, i: usize) -> bool;
    /// A backend for a key hash (see [`Pool::pick`]).
    fn pick(&self, hash: u64) -> usize;
    /// Sends one whole request to backend `i`; `tag` comes back with its reply. On error
    /// nothing was sent and the tag comes back.
    fn send(&mut self, i: usize, req: &[u8], tag: C) -> Result<(), (UpstreamError, C)>;
}

impl<T: Transport, C> Upstream<C> for Pool<T, C> {
    fn backends(&self) -> usize {
        Pool::backends(self).len()
    }
    fn is_up(&self, i: usize) -> bool {
        Pool::is_up(self, i)
    }
    fn is_ejected(&self, i: usize) -> bool {
        Pool::is_ejected(self, i)
    }
    fn pick(&self, hash: u64) -> usize {
        Pool::pick(self, hash)
    }
    fn send(&mut self, i: usize, req: &[u8], tag: C) -> Result<(), (UpstreamError, C)> {
        Pool::send(self, i, req, tag)
    }
}

/// Answers to client requests whose slots were deferred.
pub trait Clients {
    /// Sends `bytes` as the reply to `slot`'s request (after the earlier ones of its
    /// connection). Fails with `EPIPE` if the client went away.
    fn reply(&mut self, slot: ReplySlot, bytes: &[u8]) -> Result<(), PsockErrorKind>;
}

impl<T: PsockIo> Clients for Mux<T> {
    fn reply(&mut self, slot: ReplySlot, bytes: &[u8]) -> Result<(), PsockErrorKind> {
        Mux::reply(self, slot, bytes)
    }
}

/// A forwarding appliance (runs on the engine thread).
pub trait Forward: Send + 'static {
    /// What travels with a backend request (typically the client's [`ReplySlot`]).
    type Tag: 'static;

    /// A client request: answer it through `reply`, or `reply.defer()` and send it on.
    fn request(&mut self, req: &[u8], reply: &mut Reply<'_>, up: &mut dyn Upstream<Self::Tag>);

    /// A backend's reply (in place) or the error that replaces it, for the request sent with
    /// `tag`.
    fn response(&mut self, tag: Self::Tag, resp: Result<&[u8], UpstreamError>, clients: &mut dyn Clients);
}

/// The engine-side app of a forwarding server: the pool and the forwarder.
pub(crate) struct ForwardApp<T: Transport, W: Forward> {
    pool: Pool<T, W::Tag>,
    fwd: W,
}

impl<T: Transport, W: Forward> ForwardApp<T, W> {
    pub(crate) fn new(pool: Pool<T, W::Tag>, fwd: W) -> Self {
        ForwardApp { pool, fwd }
    }
}

impl<T: Transport, W: Forward> EngineApp<T> for ForwardApp<T, W> {
    fn handles_requests(&self) -> bool {
        true
    }

    fn handle(&mut self, r: &mut Request<'_>) -> Handled {
        let bytes = r.bytes();
        let mut sink = EngineSink { req: r, answered: false, close: false };
        self.fwd.request(bytes, &mut Reply { sink: &mut sink }, &mut self.pool);
        // A deferred request counts as answered (its reply comes later).
        Handled { replied: sink.answered, close: sink.close }
    }

    fn round(&mut self, t: &mut T, mux: &mut Mux<T::Io>, now: Instant) -> bool {
        let fwd = &mut self.fwd;
        self.pool.poll(t, now, |(tag, resp)| fwd.response(tag, resp, mux))
    }

    fn close(&mut self, t: &mut T, mux: &mut Mux<T::Io>) {
        let fwd = &mut self.fwd;
        self.pool.close(t, |(tag, resp)| fwd.response(tag, resp, mux));
    }
}

/// A key function: which bytes of a request decide its backend (hashed by the relay);
/// `None` for a request that gets no reply and goes nowhere (Redis's empty inline line).
pub type KeyOf = fn(&[u8]) -> Option<&[u8]>;
/// The reply a client gets instead of a backend's, in the protocol's own form.
pub type ErrorReply = fn(UpstreamError) -> Vec<u8>;

/// The plain forwarder: every request goes to the backend its key hashes to (FNV-1a 64 of
/// the key's bytes, [`Pool::pick`]), the backend's reply goes back as it is, and a failed
/// request gets the protocol's error reply. A page of appliance in one type.
#[derive(Debug, Clone, Copy)]
pub struct Relay {
    key: KeyOf,
    error: ErrorReply,
}

impl Relay {
    /// A relay keyed by `key`, answering failures with `error`.
    pub fn new(key: KeyOf, error: ErrorReply) -> Self {
        Relay { key, error }
    }
}

impl Forward for Relay {
    type Tag = ReplySlot;

    fn request(&mut self, req: &[u8], reply: &mut Reply<'_>, up: &mut dyn Upstream<ReplySlot>) {
        let Some(key) = (self.key)(req) else { return };
        let backend = up.pick(ukcm_parsers::fnv::fnv1a64(key));
        let Some(slot) = reply.defer() else {
            let _ = reply.send(&(self.error)(UpstreamError::BackendDown));
            return;
        };
        if let Err((e, slot)) = up.send(backend, req, slot) {
            // Refused at once: answered now, in its place in the order.
            if reply.undefer(slot).is_ok() {
                let _ = reply.send(&(self.error)(e));
            }
        }
    }

    fn response(&mut self, slot: ReplySlot, resp: Result<&[u8], UpstreamError>, clients: &mut dyn Clients) {
        let _ = match resp {
            Ok(bytes) => clients.reply(slot, bytes),
            Err(e) => clients.reply(slot, &(self.error)(e)),
        };
    }
}
