//! Forwarding appliances (proxies): client requests in, backend requests out through an
//! upstream pool on the same engine, backend replies back to the client in request order.
//!
//! A [`Forward`] sees each client request with its [`Reply`]: it answers at once (a
//! command the proxy handles itself), or defers the reply slot and sends the request (or
//! several, for a multi-key command) to backends with a tag of its own choosing. Each
//! backend reply or error comes back to [`Forward::response`] with that tag, and the
//! appliance answers the slot through [`Clients`]. Ordering is the mux's: a reply given for
//! a later request waits for the earlier ones on the same client connection.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use ukcm_mux::{Mux, PsockErrorKind, PsockIo, ReplySlot, Request};

use crate::pool_stats::{ForwardStats, UpstreamSnapshot};
use crate::server::{EngineApp, EngineSink, Handled, Reply};
use crate::transport::Transport;
use crate::upstream::{Pool, PoolConfig, UpstreamError};

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
    /// nothing was sent and the tag comes back. Through a forwarding server, the requests
    /// of one client connection to one backend go on one backend connection, in order
    /// ([`Pool::send_affine`]).
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

    /// What only the forwarder can count: requests it answered itself (`local`) and backend
    /// requests made by splitting client requests (`fragments`). The server counts client
    /// requests and forward errors itself; a forwarder that does neither keeps the zeros.
    fn counts(&self) -> ForwardStats {
        ForwardStats::default()
    }
}

/// Changes a forwarder's settings on the fly.
pub type UpdateForward<W> = Arc<dyn Fn(&mut W) + Send + Sync>;

/// Reconfigures the engines of a running forwarding server (see
/// [`crate::Server::forward_reloadable`]): each engine applies the new pool configuration
/// ([`Pool::reconfigure`]: nothing in flight is dropped) and the forwarder update between
/// two requests, so no request sees half of it.
pub struct Reload<W> {
    shared: Arc<ReloadShared<W>>,
}

impl<W> fmt::Debug for Reload<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reload").field("generation", &self.shared.generation.load(Ordering::Relaxed)).finish()
    }
}

/// What the handle shares with the engines.
pub(crate) struct ReloadShared<W> {
    /// Bumped by each [`Reload::apply`]; engines compare it with the one they applied.
    generation: AtomicU64,
    update: Mutex<Option<(u64, PoolConfig, UpdateForward<W>)>>,
    /// The latest generation's results: engines done, and their errors.
    results: Mutex<(u64, usize, Vec<String>)>,
    engines: usize,
}

impl<W> ReloadShared<W> {
    pub(crate) fn new(engines: usize) -> Arc<Self> {
        Arc::new(ReloadShared {
            generation: AtomicU64::new(0),
            update: Mutex::new(None),
            results: Mutex::new((0, 0, Vec::new())),
            engines,
        })
    }
}

impl<W> Reload<W> {
    pub(crate) fn new(shared: Arc<ReloadShared<W>>) -> Self {
        Reload { shared }
    }

    /// Hands `pool` and `update` to every engine; [`Reload::wait`] tells when they have
    /// applied them. A later call supersedes an earlier one not yet applied.
    pub fn apply(&self, pool: PoolConfig, update: UpdateForward<W>) -> u64 {
        let mut slot = self.shared.update.lock();
        let generation = self.shared.generation.load(Ordering::Relaxed) + 1;
        *self.shared.results.lock() = (generation, 0, Vec::new());
        *slot = Some((generation, pool, update));
        self.shared.generation.store(generation, Ordering::Release);
        generation
    }

    /// Waits until every engine has applied `generation` (or `limit` passes): `Ok` with
    /// the number of engines, or the engines' errors (an engine that refused keeps its old
    /// configuration).
    pub fn wait(&self, generation: u64, limit: Duration) -> Result<usize, String> {
        let end = Instant::now() + limit;
        loop {
            {
                let r = self.shared.results.lock();
                if r.0 != generation {
                    return Err(format!("reload {generation} was superseded by {}", r.0));
                }
                if r.1 == self.shared.engines {
                    return if r.2.is_empty() { Ok(r.1) } else { Err(r.2.join("; ")) };
                }
            }
            if Instant::now() >= end {
                return Err(format!("not every engine applied reload {generation} within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The engine-side app of a forwarding server: the pool and the forwarder.
pub(crate) struct ForwardApp<T: Transport, W: Forward> {
    pool: Pool<T, W::Tag>,
    fwd: W,
    /// Client requests handled, and those answered with an error instead of a reply.
    requests: u64,
    errors: u64,
    /// Reconfigurations, the generation this engine took last, and one waiting for its new
    /// backends to connect (with when it started waiting).
    reload: Arc<ReloadShared<W>>,
    applied: u64,
    pending: Option<(u64, PoolConfig, UpdateForward<W>, Instant)>,
}

impl<T: Transport, W: Forward> ForwardApp<T, W> {
    pub(crate) fn new(pool: Pool<T, W::Tag>, fwd: W, reload: Arc<ReloadShared<W>>) -> Self {
        ForwardApp { pool, fwd, requests: 0, errors: 0, reload, applied: 0, pending: None }
    }

    /// Takes a new reconfiguration (one atomic load when there is none) and starts
    /// connecting its new backends; applies it once they are up (or failed, or the connect
    /// timeout passed), so no request meets a backend that is still connecting.
    fn reconfigure(&mut self, now: Instant) {
        if self.reload.generation.load(Ordering::Acquire) != self.applied {
            if let Some((generation, cfg, update)) = self.reload.update.lock().clone() {
                self.applied = generation;
                self.pending = None; // superseded
                match self.pool.check_reconfigure(&cfg) {
                    Ok(()) => {
                        self.pool.prepare(&cfg);
                        self.pending = Some((generation, cfg, update, now));
                    }
                    Err(e) => self.ack(generation, Err(e)),
                }
            }
        }
        let ready = match &self.pending {
            None => return,
            Some((_, cfg, _, since)) => self.pool.prepared(cfg) || now.duration_since(*since) >= cfg.connect_timeout,
        };
        if !ready {
            return;
        }
        let Some((generation, cfg, update, _)) = self.pending.take() else { return };
        let result = self.pool.reconfigure(cfg);
        if result.is_ok() {
            update(&mut self.fwd);
        }
        self.ack(generation, result);
    }

    /// Reports this engine's result for `generation`.
    fn ack(&self, generation: u64, result: io::Result<()>) {
        let mut r = self.reload.results.lock();
        if r.0 == generation {
            r.1 += 1;
            if let Err(e) = result {
                r.2.push(e.to_string());
            }
        }
    }
}

/// Bytes a split request may add per fragment (its own command header).
const FRAGMENT_HEADROOM: usize = 64;

/// The pool as the forwarder sees it for one client request: counts the sends it refuses,
/// and sends on the client connection's backend connections ([`Pool::send_affine`]).
struct Counted<'a, T: Transport, C> {
    pool: &'a mut Pool<T, C>,
    refused: &'a mut u64,
    /// The client connection the request came from.
    client: u64,
}

impl<T: Transport, C> Upstream<C> for Counted<'_, T, C> {
    fn backends(&self) -> usize {
        Upstream::backends(&*self.pool)
    }
    fn is_up(&self, i: usize) -> bool {
        Pool::is_up(self.pool, i)
    }
    fn is_ejected(&self, i: usize) -> bool {
        Pool::is_ejected(self.pool, i)
    }
    fn pick(&self, hash: u64) -> usize {
        Pool::pick(self.pool, hash)
    }
    fn send(&mut self, i: usize, req: &[u8], tag: C) -> Result<(), (UpstreamError, C)> {
        let r = Pool::send_affine(self.pool, i, self.client, req, tag);
        *self.refused += u64::from(r.is_err());
        r
    }
}

impl<T: Transport, W: Forward> EngineApp<T> for ForwardApp<T, W> {
    fn handles_requests(&self) -> bool {
        true
    }

    fn handle(&mut self, r: &mut Request<'_>) -> Handled {
        let bytes = r.bytes();
        // Backpressure: while the pool's queue could not take every fragment of this request
        // (one per backend at most, re-encoded at most twice its size), the request waits in
        // its client's stream rather than being refused with an error reply.
        let backends = Upstream::backends(&self.pool);
        if !self.pool.has_room(backends.max(1), 2 * bytes.len() + FRAGMENT_HEADROOM * backends) && r.postpone() {
            return Handled::default();
        }
        let mut sink = EngineSink { req: r, answered: false, close: false };
        self.requests += 1;
        let client = sink.req.origin().index() as u64;
        let mut up = Counted { pool: &mut self.pool, refused: &mut self.errors, client };
        self.fwd.request(bytes, &mut Reply { sink: &mut sink }, &mut up);
        // A deferred request counts as answered (its reply comes later).
        Handled { replied: sink.answered, close: sink.close }
    }

    fn round(&mut self, t: &mut T, mux: &mut Mux<T::Io>, now: Instant) -> bool {
        self.reconfigure(now);
        let (fwd, errors) = (&mut self.fwd, &mut self.errors);
        self.pool.poll(t, now, |(tag, resp)| {
            *errors += u64::from(resp.is_err());
            fwd.response(tag, resp, mux)
        })
    }

    fn upstream(&self) -> Option<UpstreamSnapshot> {
        let mut counts = self.fwd.counts();
        counts.requests = self.requests;
        counts.forward_errors = self.errors;
        Some(self.pool.snapshot(counts))
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
