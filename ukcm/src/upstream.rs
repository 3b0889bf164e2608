//! An upstream pool: K connections from this engine to each of a list of backends, each a
//! psock with the backend protocol's parser, and the request → reply routing over them.
//!
//! Backends answer in order on a connection (Redis, memcached, HTTP/1.1), so each connection
//! keeps a FIFO of the requests written to it; a reply delineated on that connection belongs
//! to the oldest one. Everything runs on the engine thread that owns the transport (the pool
//! has its own mux on it, so its events and psocks are its own).
//!
//! Failure, as an operator expects it: connects time out; a connection that fails or closes
//! fails every request still on it with [`UpstreamError::ConnectionLost`] and is reconnected
//! with exponential backoff; after `failure_limit` consecutive failures the backend is marked
//! down (requests to it fail at once with [`UpstreamError::BackendDown`]) and retried after
//! `retry_after`. A request that outlives `request_timeout` fails with
//! [`UpstreamError::Timeout`]; its connection stays in sync (the late reply is matched to it
//! and discarded). Every request sent gets exactly one answer: a reply or an error.
//! Bounded: `max_pending` requests per connection; past that `send` says [`UpstreamError::Busy`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ukcm_mux::{MsgSocket, Mux, MuxConfig, MuxEvent, PsockId, PsockIo, SendError, SocketConfig, StatsTable};
use ukcm_nic::PinnedBudget;
use ukcm_parsers::parser_from_spec;

use crate::pool_stats::{BackendStats, ForwardStats, UpstreamSnapshot};
use crate::transport::Transport;

/// Reads the id a request and its reply share (see [`PoolConfig::match_id`]).
pub type MatchId = fn(&[u8]) -> Option<u64>;

/// Requests every new backend connection sends before it takes any other (Redis `AUTH`
/// and `SELECT`, as twemproxy sends for `redis_auth` and `redis_db`), and the test their
/// replies must pass. A connection is used only once every setup reply passed; a failing
/// one fails the connection (counted, logged once per backend) and it is retried.
#[derive(Debug, Clone)]
pub struct ConnSetup {
    pub requests: Vec<Vec<u8>>,
    pub reply_ok: fn(&[u8]) -> bool,
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Backend addresses.
    pub backends: Vec<SocketAddr>,
    /// Connections per backend (twemproxy's `server_connections`).
    pub conns_per_backend: usize,
    /// Parser spec of the backends' replies (e.g. `resp`, `memcached`).
    pub parser: String,
    /// A connect that takes longer fails.
    pub connect_timeout: Duration,
    /// A request unanswered for longer fails (`None`: wait as long as the connection lives).
    pub request_timeout: Option<Duration>,
    /// First reconnect delay after a failure (doubles up to `max_backoff`).
    pub backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// Consecutive failures that mark a backend down (twemproxy's `server_failure_limit`).
    pub failure_limit: u32,
    /// How long a backend stays down before it is tried again (`server_retry_timeout`).
    pub retry_after: Duration,
    /// Requests in flight per connection at most.
    pub max_pending: usize,
    /// Each connection's rx ring (bounds one reply).
    pub rx_ring: usize,
    /// Requests queued in the pool, not yet on a backend connection, at most: a forwarding
    /// server postpones client requests while the queue is full (backpressure).
    pub queue: usize,
    /// Bytes of those queued requests at most (a request is at most this big).
    pub queue_bytes: usize,
    /// How replies find their requests: `None` in FIFO order per connection (Redis,
    /// memcached text, HTTP/1.1); `Some(id)` by the id a request and its reply share, read
    /// by this function from both (a Thrift seqid, a DNS id, memcached binary's opaque), for
    /// backends that answer out of order.
    pub match_id: Option<MatchId>,
    /// Connection setup requests (FIFO matching only).
    pub setup: Option<ConnSetup>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            backends: Vec::new(),
            conns_per_backend: 1,
            parser: "resp".into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Some(Duration::from_secs(2)),
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            failure_limit: 3,
            retry_after: Duration::from_secs(2),
            max_pending: 4096,
            rx_ring: 256 * 1024,
            queue: 4096,
            queue_bytes: 4 << 20,
            match_id: None,
            setup: None,
        }
    }
}

/// Why a request got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No such backend index.
    NoSuchBackend,
    /// The backend is marked down (or has no connection up yet).
    BackendDown,
    /// Every connection of the backend has `max_pending` requests in flight.
    Busy,
    /// The connection failed or closed with the request on it.
    ConnectionLost,
    /// No reply within `request_timeout`.
    Timeout,
    /// Larger than the pool's send ring.
    TooBig,
    /// Replies are matched by id and this request has none (or one already in flight).
    NoId,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamError::NoSuchBackend => "no such backend",
            UpstreamError::BackendDown => "backend down",
            UpstreamError::Busy => "backend busy (too many requests in flight)",
            UpstreamError::ConnectionLost => "backend connection lost",
            UpstreamError::Timeout => "backend timed out",
            UpstreamError::TooBig => "request too big",
            UpstreamError::NoId => "request without a usable id",
        })
    }
}

impl std::error::Error for UpstreamError {}

/// Counters of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Requests sent to a backend.
    pub requests: u64,
    /// Replies routed back.
    pub replies: u64,
    /// Requests refused or failed, by cause.
    pub refused_down: u64,
    pub refused_busy: u64,
    pub lost: u64,
    pub timeouts: u64,
    /// Late replies to timed-out requests, discarded.
    pub late_replies: u64,
    /// Replies that matched no request (discarded; with FIFO matching, more than were asked).
    pub unmatched_replies: u64,
    /// Connections established / failed (connect refused, reset, closed, timed out).
    pub connects: u64,
    pub conn_failures: u64,
    /// Times a backend was marked down.
    pub ejections: u64,
    /// Connections whose setup requests were refused or not answered.
    pub setup_failures: u64,
}

impl PoolStats {
    /// Adds another pool's counts (another engine's pool to the same backends).
    pub fn add(&mut self, o: &PoolStats) {
        self.requests += o.requests;
        self.replies += o.replies;
        self.refused_down += o.refused_down;
        self.refused_busy += o.refused_busy;
        self.lost += o.lost;
        self.timeouts += o.timeouts;
        self.late_replies += o.late_replies;
        self.unmatched_replies += o.unmatched_replies;
        self.connects += o.connects;
        self.conn_failures += o.conn_failures;
        self.ejections += o.ejections;
        self.setup_failures += o.setup_failures;
    }
}

/// How a backend connection ended (counted per backend as twemproxy's `server_eof` and
/// `server_err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnEnd {
    /// The backend closed it.
    Eof,
    /// Refused, reset, or the connect timed out.
    Error,
}

/// A request on a connection, oldest first.
#[derive(Debug)]
struct InFlight<C> {
    /// `None` once it timed out: its reply is still expected, and discarded.
    tag: Option<C>,
    deadline: Option<Instant>,
    /// The id its reply carries (id matching).
    id: Option<u64>,
    /// Its reply came (id matching: entries leave the queue from the front only).
    answered: bool,
    /// A connection setup request (its reply is checked, not routed).
    setup: bool,
}

#[derive(Debug)]
enum ConnState<K> {
    Idle {
        retry_at: Instant,
    },
    Connecting {
        c: K,
        since: Instant,
    },
    Up {
        psock: PsockId,
    },
    /// Retired by a reconfiguration and drained: never reconnects (a later reconfiguration
    /// may bring it back).
    Closed,
}

#[derive(Debug)]
struct Conn<K, C> {
    state: ConnState<K>,
    inflight: VecDeque<InFlight<C>>,
    /// Entries popped from the front of `inflight` so far (positions are absolute).
    popped: u64,
    /// Id matching: the absolute position of the unanswered request with each id.
    by_id: HashMap<u64, u64>,
    backoff: Duration,
    /// Retired by a reconfiguration: takes no new requests, closes once drained.
    retiring: bool,
    /// Setup replies still awaited ([`ConnSetup`]).
    setting_up: usize,
}

impl<K, C> Conn<K, C> {
    fn new(now: Instant, backoff: Duration) -> Self {
        Conn {
            state: ConnState::Idle { retry_at: now },
            inflight: VecDeque::new(),
            popped: 0,
            by_id: HashMap::new(),
            backoff,
            retiring: false,
            setting_up: 0,
        }
    }

    /// Whether it counts towards the backend's connections (not retired).
    fn serving(&self) -> bool {
        !self.retiring && !matches!(self.state, ConnState::Closed)
    }

    fn push(&mut self, f: InFlight<C>) {
        if let Some(id) = f.id {
            self.by_id.insert(id, self.popped + self.inflight.len() as u64);
        }
        self.inflight.push_back(f);
    }

    /// The oldest request (FIFO matching).
    fn pop_oldest(&mut self) -> Option<InFlight<C>> {
        let f = self.inflight.pop_front()?;
        self.popped += 1;
        Some(f)
    }

    /// Up, its setup replies all in: takes requests.
    fn ready(&self) -> Option<PsockId> {
        match self.state {
            ConnState::Up { psock } if !self.retiring && self.setting_up == 0 => Some(psock),
            _ => None,
        }
    }

    /// The tag of the request with reply id `id` (`Some(None)`: it timed out); answered
    /// entries leave from the front. One hash lookup, not a scan of the queue.
    fn take_by_id(&mut self, id: Option<u64>) -> Option<Option<C>> {
        let at = self.by_id.remove(&id?)?;
        let f = &mut self.inflight[(at - self.popped) as usize];
        f.answered = true;
        let tag = f.tag.take();
        while self.inflight.front().is_some_and(|x| x.answered) {
            self.inflight.pop_front();
            self.popped += 1;
        }
        Some(tag)
    }

    /// Every request still on the connection (it failed or closes).
    fn drain(&mut self) -> impl Iterator<Item = InFlight<C>> + '_ {
        self.setting_up = 0;
        self.popped += self.inflight.len() as u64;
        self.by_id.clear();
        self.inflight.drain(..)
    }
}

#[derive(Debug)]
struct Backend<K, C> {
    addr: SocketAddr,
    conns: Vec<Conn<K, C>>,
    failures: u32,
    down_until: Option<Instant>,
    next: usize,
    /// Counters (the gauges in it are filled in by [`Pool::snapshot`]).
    stats: BackendStats,
    /// Removed by a reconfiguration: its connections drain and close.
    retired: bool,
    /// A failed connection setup was logged (once per backend).
    setup_logged: bool,
}

impl<K, C> Backend<K, C> {
    fn new(addr: SocketAddr, conns: usize, now: Instant, backoff: Duration) -> Self {
        Backend {
            addr,
            conns: (0..conns).map(|_| Conn::new(now, backoff)).collect(),
            failures: 0,
            down_until: None,
            next: 0,
            stats: BackendStats::new(addr),
            retired: false,
            setup_logged: false,
        }
    }

    /// Serves `n` connections: retired ones come back first (unless `fresh`: new ones
    /// only, say the connection setup changed), extra ones retire (their requests in flight
    /// complete on them).
    fn resize(&mut self, n: usize, now: Instant, backoff: Duration, fresh: bool) {
        let mut serving = self.conns.iter().filter(|c| c.serving()).count();
        for c in self.conns.iter_mut().filter(|c| !c.serving()) {
            if serving >= n || fresh {
                break;
            }
            c.retiring = false;
            if matches!(c.state, ConnState::Closed) {
                c.state = ConnState::Idle { retry_at: now };
                c.backoff = backoff;
            }
            serving += 1;
        }
        while serving < n {
            self.conns.push(Conn::new(now, backoff));
            serving += 1;
        }
        for c in self.conns.iter_mut().rev().filter(|c| c.serving()) {
            if serving <= n {
                break;
            }
            c.retiring = true;
            serving -= 1;
        }
    }

    /// Marked down: counted, and the wall-clock time kept for operators.
    fn eject(&mut self, until: Instant, pool: &mut PoolStats) {
        self.down_until = Some(until);
        self.stats.ejections += 1;
        self.stats.ejected_since = Some(SystemTime::now());
        pool.ejections += 1;
    }
}

/// What a pool answers: the caller's tag and the backend's reply (in place) or an error.
pub type Answer<'a, C> = (C, Result<&'a [u8], UpstreamError>);

/// The pool, for connections of transport `T`, carrying caller tags `C` with each request.
pub struct Pool<T: Transport, C> {
    cfg: PoolConfig,
    mux: Mux<T::Io>,
    sock: MsgSocket,
    budget: Arc<PinnedBudget>,
    /// Every backend ever configured, retired ones included (indices stay valid for
    /// `by_psock` across reconfigurations).
    backends: Vec<Backend<T::Connecting, C>>,
    /// The configured backends: configuration index → index in `backends`.
    order: Vec<usize>,
    by_psock: HashMap<PsockId, (usize, usize)>,
    stats: PoolStats,
    /// Errors decided outside `poll` (at send time they are returned; these are from
    /// connection loss and timeouts found between polls), delivered by the next poll.
    errors: VecDeque<(C, UpstreamError)>,
}

impl<T: Transport, C> fmt::Debug for Pool<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("backends", &self.backends.len()).field("stats", &self.stats).finish()
    }
}

impl<T: Transport, C> Pool<T, C> {
    /// A pool; connections are opened by the first [`Pool::poll`].
    pub fn new(cfg: PoolConfig, budget: &Arc<PinnedBudget>) -> io::Result<Self> {
        parser_from_spec(&cfg.parser)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad backend parser spec: {e}")))?;
        if cfg.backends.is_empty() || cfg.conns_per_backend == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a pool needs backends and connections"));
        }
        if cfg.setup.is_some() && cfg.match_id.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "connection setup requests need FIFO reply matching",
            ));
        }
        let mux_cfg = MuxConfig {
            socket: SocketConfig {
                rx_queue: 16,
                tx_queue: cfg.queue,
                max_in_flight: 16,
                tx_ring: cfg.queue_bytes.next_multiple_of(4096),
            },
            max_message: cfg.rx_ring,
            ..MuxConfig::default()
        };
        let (mux, sock) = Mux::new(mux_cfg, budget).map_err(io::Error::other)?;
        let now = Instant::now();
        let backends: Vec<_> =
            cfg.backends.iter().map(|&addr| Backend::new(addr, cfg.conns_per_backend, now, cfg.backoff)).collect();
        Ok(Pool {
            order: (0..backends.len()).collect(),
            cfg,
            mux,
            sock,
            budget: Arc::clone(budget),
            backends,
            by_psock: HashMap::new(),
            stats: PoolStats::default(),
            errors: VecDeque::new(),
        })
    }

    /// The backends, in configuration order (their index is what [`Pool::send`] takes).
    pub fn backends(&self) -> Vec<SocketAddr> {
        self.order.iter().map(|&b| self.backends[b].addr).collect()
    }

    /// Backend `i` in configuration order.
    fn configured(&self, i: usize) -> Option<&Backend<T::Connecting, C>> {
        self.order.get(i).map(|&b| &self.backends[b])
    }

    /// Applies a new configuration without dropping anything in flight: a backend kept
    /// (same address) keeps its connections and state; a new one starts connecting; a
    /// removed one takes no new requests, its requests in flight complete on their
    /// connections, which then close. Fewer connections per backend retire the extra ones
    /// the same way. Timeouts, limits and backoff apply from now on. The reply parser and
    /// the reply matching cannot change (a different protocol is a different pool).
    pub fn reconfigure(&mut self, mut cfg: PoolConfig) -> io::Result<()> {
        self.check_reconfigure(&cfg)?;
        let now = Instant::now();
        // New setup requests (another database, password): every connection is replaced.
        let setup_requests = |c: &PoolConfig| c.setup.as_ref().map(|s| s.requests.clone());
        let fresh = setup_requests(&cfg) != setup_requests(&self.cfg);
        let mut unused = std::mem::take(&mut self.order);
        let mut order = Vec::with_capacity(cfg.backends.len());
        for &addr in &cfg.backends {
            let kept = unused.iter().position(|&b| self.backends[b].addr == addr).map(|p| unused.remove(p));
            // A backend prepared for this (see `prepare`), or removed earlier and added back,
            // reuses its entry (and its connections and counters).
            let spare = |i: usize| !order.contains(&i) && !unused.contains(&i);
            let b = kept
                .or_else(|| (0..self.backends.len()).find(|&i| spare(i) && self.backends[i].addr == addr))
                .unwrap_or_else(|| {
                    self.backends.push(Backend::new(addr, 0, now, cfg.backoff));
                    self.backends.len() - 1
                });
            self.backends[b].retired = false;
            if fresh {
                self.backends[b].resize(0, now, cfg.backoff, true);
            }
            self.backends[b].resize(cfg.conns_per_backend, now, cfg.backoff, fresh);
            order.push(b);
        }
        // Removed backends, and any prepared for a configuration that was superseded.
        for (i, b) in self.backends.iter_mut().enumerate() {
            if !order.contains(&i) && !b.retired {
                b.retired = true;
                b.down_until = None;
                b.resize(0, now, cfg.backoff, false);
            }
        }
        self.order = order;
        cfg.match_id = self.cfg.match_id;
        self.cfg = cfg;
        Ok(())
    }

    /// Whether `cfg` can replace the running configuration (see [`Pool::reconfigure`]).
    pub fn check_reconfigure(&self, cfg: &PoolConfig) -> io::Result<()> {
        if cfg.parser != self.cfg.parser || cfg.match_id.is_some() != self.cfg.match_id.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a reconfiguration cannot change the backend protocol (parser or reply matching)",
            ));
        }
        if cfg.backends.is_empty() || cfg.conns_per_backend == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a pool needs backends and connections"));
        }
        Ok(())
    }

    /// Starts connecting to the backends `cfg` adds, so that [`Pool::reconfigure`] can move
    /// keys to them once [`Pool::prepared`] says they are up, not before (requests for them
    /// would fail as "down" meanwhile). They take no requests until then.
    pub fn prepare(&mut self, cfg: &PoolConfig) {
        let now = Instant::now();
        for &addr in &cfg.backends {
            if self.order.iter().any(|&b| self.backends[b].addr == addr) {
                continue;
            }
            let spare = (0..self.backends.len()).find(|&i| !self.order.contains(&i) && self.backends[i].addr == addr);
            let b = spare.unwrap_or_else(|| {
                self.backends.push(Backend::new(addr, 0, now, cfg.backoff));
                self.backends.len() - 1
            });
            let b = &mut self.backends[b];
            b.retired = false;
            b.resize(cfg.conns_per_backend, now, cfg.backoff, false);
        }
    }

    /// Whether every backend `cfg` adds is ready for requests, or has failed a connection
    /// attempt (it is down: waiting longer would not help).
    pub fn prepared(&self, cfg: &PoolConfig) -> bool {
        cfg.backends.iter().all(|addr| {
            self.order.iter().any(|&b| self.backends[b].addr == *addr)
                || self.backends.iter().enumerate().any(|(i, b)| {
                    b.addr == *addr
                        && !self.order.contains(&i)
                        && (b.failures > 0 || b.conns.iter().any(|c| c.ready().is_some()))
                })
        })
    }

    /// Whether backend `i` is taking requests (not marked down, a connection up).
    pub fn is_up(&self, i: usize) -> bool {
        self.configured(i).is_some_and(|b| b.down_until.is_none() && b.conns.iter().any(|c| c.ready().is_some()))
    }

    /// Whether backend `i` is marked down after `failure_limit` failures (ejected), as
    /// opposed to not connected yet or briefly reconnecting: what key redistribution follows.
    pub fn is_ejected(&self, i: usize) -> bool {
        self.configured(i).is_some_and(|b| b.down_until.is_some())
    }

    /// A backend for a key hash: `hash % backends`, moving on to the next backend that is up
    /// when that one is not (callers with their own distribution, e.g. ketama, pick the
    /// index themselves).
    pub fn pick(&self, hash: u64) -> usize {
        let n = self.order.len();
        let first = (hash % n as u64) as usize;
        (0..n).map(|k| (first + k) % n).find(|&i| self.is_up(i)).unwrap_or(first)
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Counters and gauges per backend, with the pool's counters and `forward`'s (a
    /// forwarder's own counts, which the pool cannot see).
    pub fn snapshot(&self, forward: ForwardStats) -> UpstreamSnapshot {
        let backends = self
            .order
            .iter()
            .map(|&b| &self.backends[b])
            .map(|b| {
                let mut s = b.stats.clone();
                s.connections = b.conns.iter().filter(|c| matches!(c.state, ConnState::Up { .. })).count() as u64;
                s.in_flight =
                    b.conns.iter().map(|c| c.inflight.iter().filter(|f| f.tag.is_some()).count() as u64).sum();
                if b.down_until.is_none() {
                    s.ejected_since = None;
                }
                s
            })
            .collect();
        UpstreamSnapshot { pool: self.stats, backends, forward }
    }

    /// The pool's mux stats table (one psock per backend connection).
    pub fn stats_table(&self) -> StatsTable {
        self.mux.stats_table()
    }

    /// Whether `requests` more requests of `bytes` bytes in all can be sent now without
    /// [`UpstreamError::Busy`] from the pool's own queue (a backend connection at
    /// `max_pending` may still refuse): a forwarder asks before it splits a client request,
    /// and postpones the client request while the answer is no.
    pub fn has_room(&mut self, requests: usize, bytes: usize) -> bool {
        self.sock.has_room(requests, bytes)
    }

    /// Sends `req` (one whole request) to backend `i`, on its connection with the fewest
    /// requests in flight; `tag` comes back with the reply. On error nothing was sent and
    /// the tag comes back.
    pub fn send(&mut self, i: usize, req: &[u8], tag: C) -> Result<(), (UpstreamError, C)> {
        self.send_on(i, None, req, tag)
    }

    /// [`Pool::send`], keeping order: requests with the same `affinity` (e.g. the client
    /// connection they came from) to one backend all take the same one of its connections
    /// while it is up, so the backend runs them in the order they were sent — a client's
    /// `SET k` then `GET k` cannot overtake each other on two connections. That connection
    /// being full is `Busy`, not a detour (a detour would reorder).
    pub fn send_affine(&mut self, i: usize, affinity: u64, req: &[u8], tag: C) -> Result<(), (UpstreamError, C)> {
        self.send_on(i, Some(affinity), req, tag)
    }

    fn send_on(&mut self, i: usize, affinity: Option<u64>, req: &[u8], tag: C) -> Result<(), (UpstreamError, C)> {
        let Some(&bi) = self.order.get(i) else { return Err((UpstreamError::NoSuchBackend, tag)) };
        let b = &mut self.backends[bi];
        if b.down_until.is_some() {
            self.stats.refused_down += 1;
            return Err((UpstreamError::BackendDown, tag));
        }
        let n = b.conns.len();
        let mut best: Option<(usize, PsockId)> = None;
        match affinity {
            Some(a) => {
                // The affinity's connection, or while it is down the next one up after it
                // (the same for every request of that affinity until it comes back).
                let first = (mix(a) % n as u64) as usize;
                for k in 0..n {
                    let ci = (first + k) % n;
                    if let Some(psock) = b.conns[ci].ready() {
                        if b.conns[ci].inflight.len() < self.cfg.max_pending {
                            best = Some((ci, psock));
                        }
                        break;
                    }
                }
            }
            None => {
                for k in 0..n {
                    let ci = (b.next + k) % n;
                    let c = &b.conns[ci];
                    if let Some(psock) = c.ready() {
                        if c.inflight.len() < self.cfg.max_pending
                            && best.is_none_or(|(bi, _)| c.inflight.len() < b.conns[bi].inflight.len())
                        {
                            best = Some((ci, psock));
                        }
                    }
                }
            }
        }
        let Some((ci, psock)) = best else {
            let any_up = b.conns.iter().any(|c| c.ready().is_some());
            if any_up {
                self.stats.refused_busy += 1;
                return Err((UpstreamError::Busy, tag));
            }
            self.stats.refused_down += 1;
            return Err((UpstreamError::BackendDown, tag));
        };
        // Ids need only be unique on the connection whose replies they are matched against.
        let id = match self.cfg.match_id {
            None => None,
            Some(f) => match f(req) {
                Some(id) if !b.conns[ci].by_id.contains_key(&id) => Some(id),
                _ => return Err((UpstreamError::NoId, tag)),
            },
        };
        match self.sock.send_to(psock, req, None) {
            Ok(()) => {}
            Err(SendError::TooBig { .. }) => return Err((UpstreamError::TooBig, tag)),
            Err(_) => {
                self.stats.refused_busy += 1;
                return Err((UpstreamError::Busy, tag));
            }
        }
        b.next = (ci + 1) % n;
        let deadline = self.cfg.request_timeout.map(|t| Instant::now() + t);
        b.conns[ci].push(InFlight { tag: Some(tag), deadline, id, answered: false, setup: false });
        b.stats.requests += 1;
        b.stats.request_bytes += req.len() as u64;
        self.stats.requests += 1;
        Ok(())
    }

    /// One round: connects, writes requests, reads replies, times out. Every reply and every
    /// error goes to `answer` with its tag; returns whether anything happened.
    pub fn poll(&mut self, t: &mut T, now: Instant, mut answer: impl FnMut(Answer<'_, C>)) -> bool {
        let mut work = self.drive_connections(t, now);
        while let Some((tag, e)) = self.errors.pop_front() {
            answer((tag, Err(e)));
            work = true;
        }
        // Replies: the oldest request of the connection they came on, or the one with the
        // reply's id.
        let (by_psock, backends, stats, match_id) =
            (&self.by_psock, &mut self.backends, &mut self.stats, self.cfg.match_id);
        let setup_ok = self.cfg.setup.as_ref().map(|s| s.reply_ok);
        let mut bad_setup: Vec<(PsockId, String)> = Vec::new();
        work |= poll_upstream_mux(t, &mut self.mux, now, &mut |psock: PsockId, reply: &[u8]| {
            let Some(&(bi, ci)) = by_psock.get(&psock) else { return };
            backends[bi].stats.responses += 1;
            backends[bi].stats.response_bytes += reply.len() as u64;
            let c = &mut backends[bi].conns[ci];
            let taken = match match_id {
                None => c.pop_oldest().map(|f| (f.tag, f.setup)),
                Some(f) => c.take_by_id(f(reply)).map(|tag| (tag, false)),
            };
            match taken {
                Some((_, true)) if setup_ok.is_some_and(|ok| ok(reply)) => c.setting_up -= 1,
                Some((_, true)) => {
                    bad_setup.push((psock, String::from_utf8_lossy(&reply[..reply.len().min(80)]).into()))
                }
                Some((Some(tag), false)) => {
                    stats.replies += 1;
                    backends[bi].failures = 0;
                    answer((tag, Ok(reply)));
                }
                Some((None, false)) => stats.late_replies += 1,
                None => stats.unmatched_replies += 1,
            }
        });
        // Connections whose setup was refused, or not answered within the connect timeout.
        let overdue: Vec<(PsockId, String)> = self
            .backends
            .iter()
            .flat_map(|b| &b.conns)
            .filter(|c| c.setting_up > 0 && c.inflight.front().is_some_and(|f| f.setup && f.deadline <= Some(now)))
            .filter_map(|c| match c.state {
                ConnState::Up { psock } => Some((psock, "no reply within the connect timeout".to_string())),
                _ => None,
            })
            .collect();
        for (psock, why) in bad_setup.into_iter().chain(overdue) {
            work = true;
            if let Some((bi, ci)) = self.by_psock.remove(&psock) {
                if let Some(mut io) = self.mux.unattach_with(t.ctx(), psock) {
                    io.close(t.ctx());
                }
                self.stats.setup_failures += 1;
                let b = &mut self.backends[bi];
                if !b.setup_logged {
                    b.setup_logged = true;
                    eprintln!(
                        "ukcm pool: backend {} refused the connection setup ({}); retrying",
                        b.addr,
                        why.trim_end()
                    );
                }
                self.conn_failed(bi, ci, now, ConnEnd::Error);
            }
        }
        while let Some(ev) = self.mux.next_event() {
            work = true;
            let (id, end) = match ev {
                MuxEvent::PsockError(id, _) => (id, ConnEnd::Error),
                MuxEvent::PsockClosed(id) => (id, ConnEnd::Eof),
            };
            if let Some((bi, ci)) = self.by_psock.remove(&id) {
                if let Some(mut io) = self.mux.unattach_with(t.ctx(), id) {
                    io.close(t.ctx());
                }
                self.conn_failed(bi, ci, now, end);
            }
        }
        // Timeouts: only the oldest requests can be overdue first.
        for b in &mut self.backends {
            let mut failed = false;
            for c in &mut b.conns {
                for f in c.inflight.iter_mut() {
                    match f.deadline {
                        Some(d) if d <= now => {
                            if let Some(tag) = f.tag.take() {
                                self.stats.timeouts += 1;
                                b.stats.timeouts += 1;
                                answer((tag, Err(UpstreamError::Timeout)));
                                failed = true;
                                work = true;
                            }
                        }
                        _ => break,
                    }
                }
            }
            if failed && !b.retired {
                b.failures += 1;
                if b.failures >= self.cfg.failure_limit && b.down_until.is_none() {
                    b.eject(now + self.cfg.retry_after, &mut self.stats);
                }
            }
        }
        work |= self.close_drained(t);
        while let Some((tag, e)) = self.errors.pop_front() {
            answer((tag, Err(e)));
        }
        work
    }

    /// Closes retired connections whose last request has been answered.
    fn close_drained(&mut self, t: &mut T) -> bool {
        let mut work = false;
        for b in &mut self.backends {
            for c in b.conns.iter_mut().filter(|c| c.retiring && c.inflight.is_empty()) {
                match std::mem::replace(&mut c.state, ConnState::Closed) {
                    ConnState::Up { psock } => {
                        self.by_psock.remove(&psock);
                        if let Some(mut io) = self.mux.unattach_with(t.ctx(), psock) {
                            io.close(t.ctx());
                        }
                        work = true;
                    }
                    ConnState::Connecting { c: k, .. } => t.cancel_connect(k),
                    ConnState::Idle { .. } | ConnState::Closed => {}
                }
            }
        }
        work
    }

    /// Connects to every backend before the server takes clients (twemproxy's
    /// `preconnect`): returns once each backend has a connection up or has failed one
    /// attempt, or after the connect timeout, so the first requests do not meet a pool
    /// that is still connecting.
    pub fn preconnect(&mut self, t: &mut T) -> io::Result<()> {
        let end = Instant::now() + self.cfg.connect_timeout;
        while Instant::now() < end {
            t.step()?;
            self.drive_connections(t, Instant::now());
            let settled = self.order.iter().map(|&b| &self.backends[b]).all(|b| {
                b.down_until.is_some()
                    || b.failures > 0
                    || b.conns.iter().any(|c| matches!(c.state, ConnState::Up { .. }))
            });
            if settled {
                break;
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Opens, completes and times out connections; brings marked-down backends back.
    fn drive_connections(&mut self, t: &mut T, now: Instant) -> bool {
        let mut work = false;
        for bi in 0..self.backends.len() {
            if let Some(until) = self.backends[bi].down_until {
                if until > now {
                    continue;
                }
                // Retry: the next connection result decides.
                self.backends[bi].down_until = None;
                self.backends[bi].failures = self.cfg.failure_limit.saturating_sub(1);
            }
            for ci in 0..self.backends[bi].conns.len() {
                if self.backends[bi].conns[ci].retiring {
                    continue; // closed by close_drained, never reconnected
                }
                let addr = self.backends[bi].addr;
                let state =
                    std::mem::replace(&mut self.backends[bi].conns[ci].state, ConnState::Idle { retry_at: now });
                let next = match state {
                    ConnState::Idle { retry_at } if retry_at <= now => match t.connect(addr) {
                        Ok(c) => {
                            work = true;
                            ConnState::Connecting { c, since: now }
                        }
                        Err(_) => {
                            self.backends[bi].conns[ci].state = ConnState::Idle { retry_at: now };
                            self.conn_failed(bi, ci, now, ConnEnd::Error);
                            continue;
                        }
                    },
                    ConnState::Connecting { mut c, since } => {
                        match t.poll_connect(&mut c, self.cfg.rx_ring, &self.budget) {
                            Ok(Some(io)) => {
                                let parser = parser_from_spec(&self.cfg.parser).expect("checked in new");
                                let psock = self.mux.attach(io, parser);
                                self.by_psock.insert(psock, (bi, ci));
                                self.stats.connects += 1;
                                let b = &mut self.backends[bi];
                                b.conns[ci].backoff = self.cfg.backoff;
                                // Setup requests go first; a request that cannot be queued
                                // leaves its count unanswered and the timeout fails the
                                // connection.
                                let deadline = Some(now + self.cfg.connect_timeout);
                                for req in self.cfg.setup.iter().flat_map(|s| &s.requests) {
                                    let c = &mut b.conns[ci];
                                    c.setting_up += 1;
                                    let sent = self.sock.send_to(psock, req, None).is_ok();
                                    // Not sent: an entry already overdue fails the connection
                                    // in this poll, before any reply can be matched to it.
                                    let deadline = if sent { deadline } else { Some(now) };
                                    c.push(InFlight { tag: None, deadline, id: None, answered: false, setup: true });
                                    if !sent {
                                        break;
                                    }
                                }
                                work = true;
                                ConnState::Up { psock }
                            }
                            Ok(None) if now.duration_since(since) < self.cfg.connect_timeout => {
                                ConnState::Connecting { c, since }
                            }
                            Ok(None) | Err(_) => {
                                t.cancel_connect(c);
                                self.conn_failed(bi, ci, now, ConnEnd::Error);
                                work = true;
                                continue;
                            }
                        }
                    }
                    other => other,
                };
                self.backends[bi].conns[ci].state = next;
            }
        }
        work
    }

    /// A connection failed: its requests fail, it reconnects after its backoff, and the
    /// backend is marked down at the failure limit.
    fn conn_failed(&mut self, bi: usize, ci: usize, now: Instant, end: ConnEnd) {
        self.stats.conn_failures += 1;
        let limit = self.cfg.failure_limit;
        let b = &mut self.backends[bi];
        match end {
            ConnEnd::Eof => b.stats.eof += 1,
            ConnEnd::Error => b.stats.errors += 1,
        }
        let c = &mut b.conns[ci];
        for f in c.drain() {
            if let Some(tag) = f.tag {
                self.stats.lost += 1;
                self.errors.push_back((tag, UpstreamError::ConnectionLost));
            }
        }
        if c.retiring {
            c.state = ConnState::Closed;
            return;
        }
        c.state = ConnState::Idle { retry_at: now + c.backoff };
        c.backoff = (c.backoff * 2).min(self.cfg.max_backoff);
        b.failures += 1;
        if b.failures >= limit && b.down_until.is_none() {
            b.eject(now + self.cfg.retry_after, &mut self.stats);
        }
    }

    /// Closes every connection (at shutdown); requests still in flight fail.
    pub fn close(&mut self, t: &mut T, mut answer: impl FnMut(Answer<'_, C>)) {
        for id in self.mux.psock_ids() {
            if let Some(mut io) = self.mux.unattach_with(t.ctx(), id) {
                io.close(t.ctx());
            }
        }
        for b in &mut self.backends {
            for c in &mut b.conns {
                for f in c.drain() {
                    if let Some(tag) = f.tag {
                        answer((tag, Err(UpstreamError::ConnectionLost)));
                    }
                }
                if let ConnState::Connecting { .. } = c.state {
                    if let ConnState::Connecting { c: k, .. } =
                        std::mem::replace(&mut c.state, ConnState::Idle { retry_at: Instant::now() })
                    {
                        t.cancel_connect(k);
                    }
                }
            }
        }
        self.mux.shutdown();
    }
}

/// One round of the pool's mux: each reply goes to `on_reply` in place (no reply is sent
/// back to a backend). The engine's readiness list is left to the server's mux: the pool's
/// few psocks are visited every round.
fn poll_upstream_mux<T: Transport>(
    t: &mut T,
    mux: &mut Mux<T::Io>,
    now: Instant,
    on_reply: &mut dyn FnMut(PsockId, &[u8]),
) -> bool {
    let mut h = |r: &mut ukcm_mux::Request<'_>| on_reply(r.origin(), r.bytes());
    mux.poll_requests(t.ctx(), now, &mut h)
}

/// Spreads affinities (small consecutive ids, or key hashes whose low bits already chose
/// the backend) over a backend's connections.
fn mix(a: u64) -> u64 {
    let x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 29)
}
