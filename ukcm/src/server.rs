//! A message server: the library owns accept, attach, polling, events, lingering replies,
//! draining and shutdown; the appliance supplies a parser spec and a [`Handler`].
//!
//! One engine thread steps the [`Transport`], accepts connections and attaches each to the
//! mux with its own parser. Two threading models, one handler type ([`Model`]):
//! * **run-to-completion**: the handler runs on the engine thread, in place in the
//!   connection's ring, and its reply is written straight to the connection (DPDK's model);
//! * **workers**: N threads, each with its own message socket and its own clone of the
//!   handler, receive messages over the mux's queues and reply through the message's slot,
//!   built in the socket's pinned tx ring (KCM's model).
//!
//! Replies are in request order per connection by default (`ServerConfig::ordered`, see
//! `ukcm_mux::order`), whatever worker answered first. A connection whose peer closed is
//! unattached once every request it sent is answered and the answers are acknowledged, or
//! after [`ServerConfig::linger`]; a failed one at once.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ukcm_mux::{
    Msg, MsgSocket, Mux, MuxConfig, MuxEvent, PsockId, PsockIo, RecvError, ReplySlot, Request, SendError, SocketConfig,
    StatsTable,
};
use ukcm_nic::PinnedBudget;
use ukcm_parsers::parser_from_spec;
use ukcm_stack::{IdleStep, IdleStrategy};

use crate::conn_log::{ConnEvent, ConnLog};
use crate::forward::{Forward, ForwardApp, Reload, ReloadShared};
use crate::mem::MemPeer;
use crate::pool_stats::UpstreamSnapshot;
use crate::ports::{open_port, stack_cidr};
use crate::spec::{SteerKind, TransportSpec};
use crate::transport::{CostReport, KernelTransport, StackTransport, Transport};
use crate::upstream::{Pool, PoolConfig};

/// Threading model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// N worker threads, one message socket and one handler clone each.
    Workers(usize),
    /// The handler runs on the engine thread between polls.
    RunToCompletion,
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Model::Workers(1) => f.write_str("1 worker thread"),
            Model::Workers(n) => write!(f, "{n} worker threads"),
            Model::RunToCompletion => f.write_str("run-to-completion on the engine thread"),
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Parser spec for every connection (e.g. `thrift`, `resp`, `lenfield:…`).
    pub parser: String,
    /// Threading model.
    pub model: Model,
    /// How messages are spread over the workers.
    pub steer: SteerKind,
    /// Bytes before the 16 the `hash` steering key covers (the message header).
    pub hash_header: usize,
    /// Replies leave each connection in request order (off: KCM's semantics).
    pub ordered: bool,
    /// Requests of one connection unanswered at most before it is held back.
    pub max_unanswered: usize,
    /// Each connection's pinned rx ring (a multiple of 4096; bounds one message).
    pub rx_ring: usize,
    /// Each message socket's pinned tx ring (a multiple of 4096; bounds one reply).
    pub tx_ring: usize,
    /// When idle, spin then yield, never sleep (lowest latency; the core stays busy).
    pub busy_poll: bool,
    /// How long a connection whose peer closed may wait for its last replies.
    pub linger: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            parser: "thrift".into(),
            model: Model::Workers(1),
            steer: SteerKind::Batch,
            hash_header: 4,
            ordered: true,
            max_unanswered: 1024,
            rx_ring: 256 * 1024,
            tx_ring: 1 << 20,
            busy_poll: false,
            linger: Duration::from_secs(10),
        }
    }
}

/// Why a reply was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFailed {
    /// This request was already answered (or deferred): one reply per request.
    AlreadyAnswered,
    /// Larger than a reply can be (the socket's tx ring).
    TooBig { len: usize, max: usize },
    /// The server is stopping.
    Closed,
}

impl fmt::Display for ReplyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyFailed::AlreadyAnswered => f.write_str("the request was already answered"),
            ReplyFailed::TooBig { len, max } => write!(f, "a reply of {len} bytes exceeds the {max}-byte tx ring"),
            ReplyFailed::Closed => f.write_str("the server is stopping"),
        }
    }
}

impl std::error::Error for ReplyFailed {}

/// Where a handler's reply goes (engine or worker side).
pub(crate) trait ReplySink {
    fn origin(&self) -> PsockId;
    fn send(&mut self, len: usize, build: &mut dyn FnMut(&mut [u8])) -> Result<(), ReplyFailed>;
    /// A reply that already exists as bytes (one copy; no zero-fill first).
    fn send_slice(&mut self, bytes: &[u8]) -> Result<(), ReplyFailed> {
        self.send(bytes.len(), &mut |b| b.copy_from_slice(bytes))
    }
    fn defer(&mut self) -> Option<ReplySlot>;
    fn undefer(&mut self, slot: ReplySlot) -> Result<(), ReplySlot>;
    /// Asks for the connection to be closed after its replies (run to completion only).
    fn close(&mut self) -> bool {
        false
    }
}

/// The answer to one request. Send at most one reply; send none and the request's place in
/// the connection's reply order is released (a request the protocol does not answer).
pub struct Reply<'a> {
    pub(crate) sink: &'a mut (dyn ReplySink + 'a),
}

impl fmt::Debug for Reply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").field("origin", &self.sink.origin()).finish()
    }
}

impl Reply<'_> {
    /// The connection the request came from.
    pub fn origin(&self) -> PsockId {
        self.sink.origin()
    }

    /// Sends `bytes` as the reply.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), ReplyFailed> {
        self.sink.send_slice(bytes)
    }

    /// Sends a `len`-byte reply built in place, by `build`, which must write all `len`
    /// bytes (they are not zeroed first): in run-to-completion mode over the userspace stack
    /// straight into smoltcp's tx ring while the reply is next on the wire and fits, else in
    /// the engine's reply buffer; in worker mode in the socket's pinned tx ring.
    pub fn send_with(&mut self, len: usize, build: impl FnOnce(&mut [u8])) -> Result<(), ReplyFailed> {
        let mut build = Some(build);
        self.sink.send(len, &mut |b| (build.take().expect("built once"))(b))
    }

    /// Keeps the request's place and answers later: run-to-completion handlers give the
    /// slot to [`ukcm_mux::Mux::reply`] (the upstream pool does this for forwarded
    /// requests). `None` in worker mode or without ordered replies.
    pub fn defer(&mut self) -> Option<ReplySlot> {
        self.sink.defer()
    }

    /// Takes a slot from [`Reply::defer`] back (say, the request could not be forwarded), so
    /// that [`Reply::send`] answers the request now. The slot comes back if it is another's.
    pub fn undefer(&mut self, slot: ReplySlot) -> Result<(), ReplySlot> {
        self.sink.undefer(slot)
    }

    /// Closes the connection once every request it sent so far is answered and the answers
    /// are acknowledged (or after [`ServerConfig::linger`]); the requests it sends after
    /// this one are not handled (a protocol's `quit`). Run-to-completion only: `false` in
    /// worker mode, where nothing happens.
    pub fn close(&mut self) -> bool {
        self.sink.close()
    }
}

/// What a server does with each request.
pub trait Handler: Send + 'static {
    /// Called once per request, with the message (header included) and its reply.
    fn request(&mut self, req: &[u8], reply: &mut Reply<'_>);
}

impl<F: FnMut(&[u8], &mut Reply<'_>) + Send + 'static> Handler for F {
    fn request(&mut self, req: &[u8], reply: &mut Reply<'_>) {
        self(req, reply)
    }
}

/// Engine side: the reply is appended to the connection's reply buffer.
pub(crate) struct EngineSink<'r, 's> {
    pub(crate) req: &'r mut Request<'s>,
    pub(crate) answered: bool,
    /// The handler asked for the connection to be closed after its replies.
    pub(crate) close: bool,
}

/// What handling one request on the engine thread did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Handled {
    /// A reply was written or the request deferred.
    pub(crate) replied: bool,
    /// Close the connection after its replies ([`Reply::close`]).
    pub(crate) close: bool,
}

impl ReplySink for EngineSink<'_, '_> {
    fn origin(&self) -> PsockId {
        self.req.origin()
    }
    fn send(&mut self, len: usize, build: &mut dyn FnMut(&mut [u8])) -> Result<(), ReplyFailed> {
        if self.answered {
            return Err(ReplyFailed::AlreadyAnswered);
        }
        self.answered = true;
        // In smoltcp's tx ring when the reply is next on the wire and fits (no copy above
        // the stack), else in the connection's reply buffer.
        self.req.reply_with(len, build);
        Ok(())
    }
    fn send_slice(&mut self, bytes: &[u8]) -> Result<(), ReplyFailed> {
        if self.answered {
            return Err(ReplyFailed::AlreadyAnswered);
        }
        self.answered = true;
        self.req.reply(bytes);
        Ok(())
    }
    fn defer(&mut self) -> Option<ReplySlot> {
        if self.answered {
            return None;
        }
        let s = self.req.defer();
        self.answered = s.is_some();
        s
    }
    fn undefer(&mut self, slot: ReplySlot) -> Result<(), ReplySlot> {
        self.req.undefer(slot)?;
        self.answered = false;
        Ok(())
    }
    fn close(&mut self) -> bool {
        self.close = true;
        true
    }
}

/// Worker side: the reply goes through the message's slot on the worker's socket.
struct WorkerSink<'a> {
    sock: &'a mut MsgSocket,
    origin: PsockId,
    slot: Option<ReplySlot>,
    answered: bool,
    stop: &'a AtomicBool,
    busy: bool,
}

impl ReplySink for WorkerSink<'_> {
    fn origin(&self) -> PsockId {
        self.origin
    }
    fn send(&mut self, len: usize, build: &mut dyn FnMut(&mut [u8])) -> Result<(), ReplyFailed> {
        if self.answered {
            return Err(ReplyFailed::AlreadyAnswered);
        }
        self.answered = true;
        let mut idle = 0u32;
        loop {
            let r = match self.slot.take() {
                Some(slot) => self.sock.reply_with(slot, len, None, &mut *build).map_err(|e| {
                    self.slot = Some(e.slot);
                    e.error
                }),
                // Unordered mux: reply to the origin without a place in any order.
                None => self.sock.send_with(len, None, Some(self.origin), &mut *build),
            };
            match r {
                Ok(()) => return Ok(()),
                Err(SendError::WouldBlock) if !self.stop.load(Ordering::Relaxed) => backoff(&mut idle, self.busy),
                Err(SendError::WouldBlock) | Err(SendError::Closed) => return Err(ReplyFailed::Closed),
                Err(SendError::TooBig { len, max }) => return Err(ReplyFailed::TooBig { len, max }),
            }
        }
    }
    fn defer(&mut self) -> Option<ReplySlot> {
        None
    }
    fn undefer(&mut self, slot: ReplySlot) -> Result<(), ReplySlot> {
        Err(slot)
    }
}

/// Counters the engine keeps beside the mux's.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections unattached after their peer closed.
    pub closed: AtomicU64,
    /// Connections that failed (error event).
    pub failed: AtomicU64,
    /// Connections unattached after the linger time with replies still unanswered or
    /// unacknowledged.
    pub lingered: AtomicU64,
    /// Replies that could not be sent (too big, or the server was stopping).
    pub reply_failed: AtomicU64,
    /// Connections that could not be attached (e.g. out of pinned memory).
    pub attach_failed: AtomicU64,
}

/// One engine thread of a server and what it publishes.
#[derive(Debug)]
struct EngineThread {
    thread: Option<JoinHandle<io::Result<StatsTable>>>,
    snapshot: Arc<Mutex<Published>>,
}

/// What an engine publishes every [`SNAPSHOT_EVERY`] for the server handle.
#[derive(Debug, Clone)]
struct Published {
    table: StatsTable,
    /// The transport's counters line.
    status: String,
    /// The upstream pool's figures (forwarding servers).
    upstream: Option<UpstreamSnapshot>,
    /// What the transport's connections pin.
    cost: Option<CostReport>,
}

/// A running server: one shared-nothing engine per NIC queue (one for kernel TCP), each with
/// its own mux, workers and upstream pool.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    engines: Vec<EngineThread>,
    workers: Vec<JoinHandle<()>>,
    counters: Arc<ServerCounters>,
    local: SocketAddr,
    describe: String,
    /// The other end of a `mem` server's pair, until taken.
    mem_peer: Option<MemPeer>,
}

/// Reads a server's published stats (see [`Server::stats_handle`]); cheap to clone.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    published: Vec<Arc<Mutex<Published>>>,
    counters: Arc<ServerCounters>,
}

impl StatsHandle {
    /// The latest stats of all engines together.
    pub fn snapshot(&self) -> StatsTable {
        merge_tables(&self.engine_snapshots())
    }

    /// The latest stats of each engine.
    pub fn engine_snapshots(&self) -> Vec<StatsTable> {
        self.published.iter().map(|p| p.lock().table.clone()).collect()
    }

    /// The latest upstream figures (all engines' pools together), if the server has a pool.
    pub fn upstream_stats(&self) -> Option<UpstreamSnapshot> {
        let parts: Vec<UpstreamSnapshot> = self.published.iter().filter_map(|p| p.lock().upstream.clone()).collect();
        UpstreamSnapshot::merge(&parts)
    }

    /// The latest transport counters, one line per engine.
    pub fn transport_status(&self) -> String {
        let lines: Vec<String> =
            self.published.iter().map(|p| p.lock().status.clone()).filter(|l| !l.is_empty()).collect();
        match lines.len() {
            0 | 1 => lines.concat(),
            _ => lines.iter().enumerate().map(|(i, l)| format!("engine {i}: {l}")).collect::<Vec<_>>().join("\n"),
        }
    }

    /// The engines' own counters.
    pub fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// What the connections pin in rings, all engines together (refreshed with every stats
    /// snapshot, 5 times a second); `None` over kernel TCP.
    pub fn conn_cost(&self) -> Option<CostReport> {
        self.published.iter().filter_map(|p| p.lock().cost).reduce(|a, b| a.add(&b))
    }
}

/// How often the engine publishes a stats snapshot.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);
/// Psock rows in a periodic snapshot (the totals count every connection; the final table
/// has a row for each).
const SNAPSHOT_ROWS: usize = 64;

impl Server {
    /// A builder: transport, address, parser, model, then [`ServerBuilder::serve`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Serves on a bound kernel TCP listener.
    pub fn kernel<H: Handler + Clone>(listener: TcpListener, cfg: ServerConfig, handler: H) -> io::Result<Server> {
        let t = KernelTransport::new(listener)?;
        Self::start(move || Ok(t), cfg, handler)
    }

    /// Serves on the transport `make` builds on the engine thread (ports that must stay on
    /// one thread are opened there). Returns once the transport is up, or with its error.
    pub fn start<T, F, H>(make: F, cfg: ServerConfig, handler: H) -> io::Result<Server>
    where
        T: Transport + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
        H: Handler + Clone,
    {
        Self::start_engines(vec![make], cfg, handler)
    }

    /// One engine per transport `makes` builds (e.g. one per NIC queue), each on its own
    /// thread with its own mux and, in worker mode, its own workers.
    pub fn start_engines<T, F, H>(makes: Vec<F>, cfg: ServerConfig, handler: H) -> io::Result<Server>
    where
        T: Transport + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
        H: Handler + Clone,
    {
        match cfg.model {
            Model::RunToCompletion => {
                let h = handler;
                launch(makes, cfg, None::<H>, move |_t: &mut T, first, _: &Arc<PinnedBudget>| {
                    Ok(RtcApp { handler: h.clone(), _sock: first })
                })
            }
            Model::Workers(_) => launch(makes, cfg, Some(handler), |_t: &mut T, _, _: &Arc<PinnedBudget>| Ok(NoApp)),
        }
    }

    /// A forwarding appliance: requests are handled on the engine thread (the model must be
    /// run-to-completion) by `fwd`, which answers them or sends them on to the backends of
    /// an upstream pool opened from the same engine; backend replies come back to `fwd`.
    pub fn forward<T, F, W>(make: F, cfg: ServerConfig, pool: PoolConfig, fwd: W) -> io::Result<Server>
    where
        T: Transport + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
        W: Forward + Clone,
    {
        Self::forward_engines(vec![make], cfg, pool, fwd)
    }

    /// [`Server::forward`] with one engine per transport, each with its own pool.
    pub fn forward_engines<T, F, W>(makes: Vec<F>, cfg: ServerConfig, pool: PoolConfig, fwd: W) -> io::Result<Server>
    where
        T: Transport + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
        W: Forward + Clone,
    {
        Self::forward_reloadable(makes, cfg, pool, fwd).map(|(server, _)| server)
    }

    /// [`Server::forward_engines`], with a handle that reconfigures the running engines:
    /// backends added, removed or resized and forwarder settings changed, without dropping
    /// a client connection or a request in flight (a config reload).
    pub fn forward_reloadable<T, F, W>(
        makes: Vec<F>,
        cfg: ServerConfig,
        pool: PoolConfig,
        fwd: W,
    ) -> io::Result<(Server, Reload<W>)>
    where
        T: Transport + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
        W: Forward + Clone,
    {
        if cfg.model != Model::RunToCompletion {
            return Err(invalid(
                "a forwarding server runs to completion on its engine threads (shared-nothing; scale with engines, not workers)"
                    .into(),
            ));
        }
        let reload = ReloadShared::new(makes.len());
        let shared = Arc::clone(&reload);
        let server = launch(makes, cfg, None::<NoHandler>, move |t: &mut T, _first, budget: &Arc<PinnedBudget>| {
            let mut p = Pool::new(pool.clone(), budget)?;
            p.preconnect(t)?;
            Ok(ForwardApp::new(p, fwd.clone(), Arc::clone(&shared)))
        })?;
        Ok((server, Reload::new(reload)))
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What carries the bytes (`kernel TCP`, `ukcm stack on afxdp:…`, `… × 2 engines`).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The other end of the in-memory pair of a server on the `mem` transport, once (then
    /// `None`; always `None` on other transports): an engine on it reaches the server
    /// ([`MemPeer::engine`]). Nothing outside the process can.
    pub fn take_mem_peer(&mut self) -> Option<MemPeer> {
        self.mem_peer.take()
    }

    /// Engines (one per NIC queue served).
    pub fn engine_count(&self) -> usize {
        self.engines.len()
    }

    /// The latest stats of all engines together (refreshed every 200 ms).
    pub fn snapshot(&self) -> StatsTable {
        self.stats_handle().snapshot()
    }

    /// The latest stats of each engine.
    pub fn engine_snapshots(&self) -> Vec<StatsTable> {
        self.stats_handle().engine_snapshots()
    }

    /// The latest upstream figures of a forwarding server (all engines' pools together;
    /// refreshed every 200 ms); `None` for a server without a pool.
    pub fn upstream_stats(&self) -> Option<UpstreamSnapshot> {
        self.stats_handle().upstream_stats()
    }

    /// The latest transport counters, one line per engine.
    pub fn transport_status(&self) -> String {
        self.stats_handle().transport_status()
    }

    /// What the connections pin in rings (see [`StatsHandle::conn_cost`]).
    pub fn conn_cost(&self) -> Option<CostReport> {
        self.stats_handle().conn_cost()
    }

    /// The engines' own counters (all engines).
    pub fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// A handle that reads this server's stats from another thread (a stats endpoint),
    /// while the server itself stays with its owner (who stops it).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            published: self.engines.iter().map(|e| Arc::clone(&e.snapshot)).collect(),
            counters: Arc::clone(&self.counters),
        }
    }

    /// Whether an engine thread has ended (they end only on stop or on an error).
    pub fn engine_finished(&self) -> bool {
        self.engines.iter().any(|e| e.thread.as_ref().is_none_or(|h| h.is_finished()))
    }

    /// Runs until SIGINT or SIGTERM (or until an engine fails), then stops and returns the
    /// final stats table.
    pub fn run_until_signal(self) -> io::Result<StatsTable> {
        let flag = crate::signals::stop_flag()?;
        while !flag.load(Ordering::Acquire) && !self.engine_finished() {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop()
    }

    /// Stops the workers and the engines (which write out queued replies first, then close
    /// every connection and drop their transports) and returns the final stats, all engines
    /// together.
    pub fn stop(self) -> io::Result<StatsTable> {
        self.stop_each().map(|t| merge_tables(&t))
    }

    /// [`Server::stop`], returning each engine's final stats.
    pub fn stop_each(mut self) -> io::Result<Vec<StatsTable>> {
        self.halt()
    }

    /// [`Server::stop`], with the transport's final counters line ([`Server::transport_status`]:
    /// engine and port counters, dropped frames by reason).
    pub fn stop_with_status(mut self) -> io::Result<(StatsTable, String)> {
        let tables = self.halt()?;
        Ok((merge_tables(&tables), self.transport_status()))
    }

    fn halt(&mut self) -> io::Result<Vec<StatsTable>> {
        self.stop.store(true, Ordering::Release);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut tables = Vec::new();
        let mut first_err = None;
        for e in &mut self.engines {
            match e.thread.take().map(|h| h.join()) {
                Some(Ok(Ok(t))) => tables.push(t),
                Some(Ok(Err(err))) => first_err = first_err.or(Some(err)),
                Some(Err(_)) => first_err = first_err.or(Some(io::Error::other("an engine thread panicked"))),
                None => first_err = first_err.or(Some(io::Error::other("engine already stopped"))),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(tables),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Several engines' stats as one table: counters added, rows kept (labelled by engine).
pub fn merge_tables(tables: &[StatsTable]) -> StatsTable {
    if tables.len() == 1 {
        return tables[0].clone();
    }
    let mut out = StatsTable::default();
    for (i, t) in tables.iter().enumerate() {
        out.mux.add(&t.mux);
        out.total.fold(&t.total);
        out.psocks.extend(t.psocks.iter().map(|r| {
            let mut r = r.clone();
            r.label = format!("e{i} {}", r.label);
            r
        }));
        out.psocks_not_shown += t.psocks_not_shown;
        out.socks.extend(t.socks.iter().map(|(l, s)| (format!("e{i} {l}"), *s)));
    }
    out
}

/// A handler type for servers without one (forwarders, whose requests go to [`Forward`]).
#[derive(Debug, Clone)]
struct NoHandler;

impl Handler for NoHandler {
    fn request(&mut self, _req: &[u8], _reply: &mut Reply<'_>) {}
}

/// Starts one engine thread per transport of `makes` (engine-side app from `make_app`) and,
/// with a handler, each engine's workers.
fn launch<T, F, H, A, M>(
    makes: Vec<F>,
    cfg: ServerConfig,
    workers_handler: Option<H>,
    make_app: M,
) -> io::Result<Server>
where
    T: Transport + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
    H: Handler + Clone,
    A: EngineApp<T>,
    M: Fn(&mut T, Option<MsgSocket>, &Arc<PinnedBudget>) -> io::Result<A> + Clone + Send + 'static,
{
    parser_from_spec(&cfg.parser)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad parser spec: {e}")))?;
    if makes.is_empty() {
        return Err(invalid("a server needs at least one engine".into()));
    }
    let n_workers = match cfg.model {
        Model::Workers(0) => return Err(invalid("a worker model needs at least one worker".into())),
        Model::Workers(n) => n,
        Model::RunToCompletion => 0,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(ServerCounters::default());
    let mut server = Server {
        stop: Arc::clone(&stop),
        engines: Vec::new(),
        workers: Vec::new(),
        counters: Arc::clone(&counters),
        local: SocketAddr::from(([0, 0, 0, 0], 0)),
        describe: String::new(),
        mem_peer: None,
    };
    let n_engines = makes.len();
    for (ei, make) in makes.into_iter().enumerate() {
        let budget = PinnedBudget::unlimited();
        let sock_cfg = SocketConfig { rx_queue: 1024, tx_queue: 1024, max_in_flight: 1024, tx_ring: cfg.tx_ring };
        let mux_cfg = MuxConfig {
            steer: cfg.steer.policy(cfg.hash_header),
            socket: sock_cfg,
            max_message: cfg.rx_ring,
            ordered: cfg.ordered,
            max_unanswered: cfg.max_unanswered.max(1),
            ..MuxConfig::default()
        };
        let (mux, first) = Mux::<T::Io>::new(mux_cfg, &budget).map_err(io::Error::other)?;
        let snapshot = Arc::new(Mutex::new(Published {
            table: mux.stats_table(),
            status: String::new(),
            upstream: None,
            cost: None,
        }));
        type Ready = io::Result<(SocketAddr, String)>;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
        // In worker mode the workers own every socket; run to completion, the engine does.
        let (engine_sock, worker_socks) = if n_workers == 0 {
            (Some(first), Vec::new())
        } else {
            let mut v = Vec::with_capacity(n_workers);
            for _ in 1..n_workers {
                v.push(first.try_clone().map_err(io::Error::other)?);
            }
            v.insert(0, first);
            (None, v)
        };
        let thread = {
            let (stop, counters, snapshot) = (Arc::clone(&stop), Arc::clone(&counters), Arc::clone(&snapshot));
            let (cfg, make_app) = (cfg.clone(), make_app.clone());
            std::thread::Builder::new().name(format!("ukcm-engine-{ei}")).spawn(move || {
                let fail = |e: io::Error, tx: &std::sync::mpsc::Sender<Ready>| {
                    let msg = e.to_string();
                    let _ = tx.send(Err(e));
                    Err(io::Error::other(msg))
                };
                let mut t = match make() {
                    Ok(t) => t,
                    Err(e) => return fail(e, &ready_tx),
                };
                let app = match make_app(&mut t, engine_sock, &budget) {
                    Ok(a) => a,
                    Err(e) => return fail(e, &ready_tx),
                };
                let _ = ready_tx.send(Ok((t.local_addr(), t.describe())));
                let ctx =
                    EngineCtx { cfg: &cfg, budget: &budget, stop: &stop, counters: &counters, snapshot: &snapshot };
                run_engine(&mut t, mux, app, &ctx)
            })?
        };
        let up = ready_rx.recv();
        server.engines.push(EngineThread { thread: Some(thread), snapshot });
        let (local, describe) = match up {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                drop(server); // stops the engines already running
                return Err(e);
            }
            Err(_) => {
                drop(server);
                return Err(io::Error::other("an engine thread ended before its transport was up"));
            }
        };
        if ei == 0 {
            server.local = local;
            server.describe = if n_engines > 1 { format!("{describe} × {n_engines} engines") } else { describe };
        }
        if let Some(handler) = &workers_handler {
            for (i, sock) in worker_socks.into_iter().enumerate() {
                let (stop, counters, h, busy) =
                    (Arc::clone(&stop), Arc::clone(&counters), handler.clone(), cfg.busy_poll);
                server.workers.push(
                    std::thread::Builder::new()
                        .name(format!("ukcm-worker-{ei}.{i}"))
                        .spawn(move || worker(sock, h, &stop, &counters, busy))?,
                );
            }
        }
    }
    Ok(server)
}

/// A server described by strings, as an operator writes them.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    transport: String,
    addr: String,
    gateway: Option<String>,
    listen: u16,
    cfg: ServerConfig,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            transport: "kernel".into(),
            addr: "127.0.0.1".into(),
            gateway: None,
            listen: 0,
            cfg: ServerConfig::default(),
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl ServerBuilder {
    /// `kernel` (default), `afxdp:IF[:Q]`, `tap:NAME` or `dpdk:ARGS` (feature `dpdk`).
    pub fn transport(mut self, spec: &str) -> Self {
        self.transport = spec.into();
        self
    }
    /// `IP[/PREFIX]`: the address to bind (kernel) or the stack's own address.
    pub fn addr(mut self, addr: &str) -> Self {
        self.addr = addr.into();
        self
    }
    /// The userspace stack's default gateway.
    pub fn gateway(mut self, ip: &str) -> Self {
        self.gateway = Some(ip.into());
        self
    }
    /// TCP port (0: ephemeral, kernel only).
    pub fn listen(mut self, port: u16) -> Self {
        self.listen = port;
        self
    }
    /// Parser spec (e.g. `thrift`, `resp`, `memcached`, `lenfield:offset=0,width=2`).
    pub fn parser(mut self, spec: &str) -> Self {
        self.cfg.hash_header = header_len_of(spec);
        self.cfg.parser = spec.into();
        self
    }
    /// N worker threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.cfg.model = Model::Workers(n);
        self
    }
    /// The handler on the engine thread.
    pub fn run_to_completion(mut self) -> Self {
        self.cfg.model = Model::RunToCompletion;
        self
    }
    /// Steering over the workers.
    pub fn steer(mut self, s: SteerKind) -> Self {
        self.cfg.steer = s;
        self
    }
    /// Every other setting.
    pub fn config(mut self, f: impl FnOnce(&mut ServerConfig)) -> Self {
        f(&mut self.cfg);
        self
    }

    /// Opens the transport and starts serving with `handler`.
    pub fn serve<H: Handler + Clone>(self, handler: H) -> io::Result<Server> {
        let spec: TransportSpec = self.transport.parse().map_err(invalid)?;
        spec.require_server().map_err(invalid)?;
        let addr = crate::spec::parse_addr(&self.addr).map_err(invalid)?;
        let gateway = match self.gateway.as_deref().map(str::parse::<IpAddr>) {
            None => None,
            Some(Ok(g)) => Some(g),
            Some(Err(_)) => return Err(invalid(format!("gateway {:?} is not an IP address", self.gateway))),
        };
        serve_spec(&spec, addr, gateway, self.listen, self.cfg, handler)
    }
}

/// Opens the transport `spec` names on `addr`/`listen` and serves `handler` on it. On `mem`
/// the server makes an in-memory port pair and keeps its other end for the caller
/// ([`Server::take_mem_peer`]).
pub fn serve_spec<H: Handler + Clone>(
    spec: &TransportSpec,
    addr: (IpAddr, Option<u8>),
    gateway: Option<IpAddr>,
    listen: u16,
    cfg: ServerConfig,
    handler: H,
) -> io::Result<Server> {
    match spec {
        TransportSpec::Kernel => {
            let at = SocketAddr::new(addr.0, listen);
            let l =
                TcpListener::bind(at).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {at}: {e}")))?;
            Server::kernel(l, cfg, handler)
        }
        TransportSpec::Mem => {
            let (make, peer) = crate::mem::pair(stack_cidr(addr).map_err(invalid)?, gateway, listen)?;
            let mut server = Server::start(make, cfg, handler)?;
            server.mem_peer = Some(peer);
            Ok(server)
        }
        other => {
            let makes = stack_engines(other, addr, gateway, listen)?;
            Server::start_engines(makes, cfg, handler)
        }
    }
}

/// The engine a stack transport needs on each queue it serves: one per AF_XDP queue
/// (`afxdp:IF` = every queue of IF), one for TAP and DPDK.
pub fn stack_engines(
    spec: &TransportSpec,
    addr: (IpAddr, Option<u8>),
    gateway: Option<IpAddr>,
    listen: u16,
) -> io::Result<Vec<impl FnOnce() -> io::Result<StackTransport<crate::ports::AnyPort>> + Send + 'static>> {
    let cidr = stack_cidr(addr).map_err(invalid)?;
    if listen == 0 {
        return Err(invalid(format!(
            "{spec}: the userspace stack needs a fixed listening port (ephemeral ports are a kernel feature)"
        )));
    }
    let queues = match spec {
        TransportSpec::Afxdp { ifname, queues } => queues.resolve(ifname).map_err(invalid)?,
        TransportSpec::Kernel | TransportSpec::Mem => {
            return Err(invalid(format!("{spec}: not a NIC transport")));
        }
        _ => vec![0],
    };
    // The engines of one address learn neighbours for each other (each queue sees only
    // some of a peer's frames), and hand each other the segments of their outgoing
    // connections that arrive on the wrong queue.
    let share = Arc::new(ukcm_stack::NeighbourShare::new());
    let strays = Arc::new(ukcm_stack::StrayShare::new(queues.len()));
    Ok(queues
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            let (nic, share, strays) = (spec.clone(), Arc::clone(&share), Arc::clone(&strays));
            move || {
                let budget = PinnedBudget::unlimited();
                let (port, mac) = open_port(&nic, q, &budget).map_err(io::Error::other)?;
                let gateway = gateway.map(ukcm_stack::smoltcp::wire::IpAddress::from);
                let t = StackTransport::new(port, mac, cidr, gateway, listen, 1024)?;
                Ok(t.share_neighbours(share, i).share_strays(strays, i))
            }
        })
        .collect())
}

/// Header length of the length-field parsers (for the `hash` steering key); 0 for others.
pub fn header_len_of(spec: &str) -> usize {
    match ukcm_parsers::spec::length_field_from_spec(spec) {
        Ok(Some(f)) => f.header_len(),
        _ if spec.trim() == "grpc" => 5,
        _ => 0,
    }
}

/// The idle policy of the server's threads (one [`IdleStrategy`], as the engine's own
/// loop): spin a little, yield, then nap, never napping when `busy` (`--busy-poll`).
/// Workers nap 50 µs by the clock. Engine threads nap up to [`RTC_NAP`] through
/// [`Transport::idle_wait`], woken at once by what brings them work: frames (the port's
/// descriptor; DPDK's ports have none and nap by the clock), kernel sockets' news (their
/// epoll set) and a worker's send (the mux's doorbell, `Mux::wait_idle`); timers end the
/// nap when due.
fn idle_policy(busy: bool, nap: Duration) -> IdleStrategy {
    IdleStrategy::Backoff { spins: IDLE_SPINS, yields: if busy { u32::MAX } else { IDLE_YIELDS }, park: nap }
}

/// The longest nap after `idle` consecutive idle polls: 50 µs at first, doubling every 32
/// naps. An engine whose port has no wakeup descriptor (DPDK) sleeps by the clock: naps of
/// 50 µs cost it about 10 % of a core while idle, so they grow once it has been idle a
/// while (1 ms, the run-to-completion cap, after about 50 ms), at the price of up to that
/// long for the first request after a quiet spell; busy traffic never gets past the short
/// naps. An engine with a descriptor wakes on frames whatever the nap.
fn nap_after(idle: u32) -> Duration {
    let naps = idle.saturating_sub(IDLE_POLLS_BEFORE_NAP);
    SHORT_NAP.saturating_mul(1 << (naps / 32).min(10))
}

/// Idle polls that spin, then yield, before the first nap ([`idle_policy`]).
const IDLE_SPINS: u32 = 32;
const IDLE_YIELDS: u32 = 64;
const IDLE_POLLS_BEFORE_NAP: u32 = IDLE_SPINS + IDLE_YIELDS;

/// Longest idle nap of an engine thread (its port, epoll set or doorbell wakes it sooner).
pub const RTC_NAP: Duration = Duration::from_millis(1);
/// Longest idle nap of a thread nothing can wake but the clock.
const SHORT_NAP: Duration = Duration::from_micros(50);

/// One idle step of a thread without a port (workers): spin, yield or nap by the clock.
fn backoff(idle: &mut u32, busy: bool) {
    *idle = idle.saturating_add(1);
    match idle_policy(busy, SHORT_NAP).step(*idle) {
        IdleStep::Spin => std::hint::spin_loop(),
        IdleStep::Yield => std::thread::yield_now(),
        IdleStep::Sleep(d) => std::thread::sleep(d),
    }
}

/// Waits for the next message: with `busy`, spin then yield and never sleep.
fn next_msg(sock: &MsgSocket, stop: &AtomicBool, busy: bool) -> Result<Msg, RecvError> {
    if !busy {
        return sock.recv_timeout(Duration::from_millis(20));
    }
    let mut idle = 0u32;
    loop {
        if let Some(m) = sock.try_recv() {
            return Ok(m);
        }
        if stop.load(Ordering::Relaxed) {
            return Err(RecvError::TimedOut);
        }
        if idle > 4096 {
            // Now and then ask the mux whether it closed (recv_timeout checks that).
            return sock.recv_timeout(Duration::ZERO);
        }
        backoff(&mut idle, true);
    }
}

fn worker<H: Handler>(mut sock: MsgSocket, mut handler: H, stop: &AtomicBool, counters: &ServerCounters, busy: bool) {
    let mut batch = Vec::with_capacity(64);
    while !stop.load(Ordering::Acquire) {
        match next_msg(&sock, stop, busy) {
            Ok(m) => batch.push(m),
            Err(RecvError::TimedOut) => continue,
            Err(RecvError::Closed) => break,
        }
        sock.recv_batch(&mut batch, 63);
        for mut m in batch.drain(..) {
            let slot = m.take_slot();
            let mut sink = WorkerSink { sock: &mut sock, origin: m.origin(), slot, answered: false, stop, busy };
            handler.request(&m, &mut Reply { sink: &mut sink });
            if sink.answered && sink.slot.is_some() {
                // A reply that failed: its slot is released when dropped here.
                counters.reply_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Whether a closed psock can go: every request answered and the answers acknowledged.
fn drained<T: PsockIo>(mux: &Mux<T>, id: PsockId, ordered: bool) -> bool {
    match (mux.psock_tx_idle(id), mux.psock_stats(id), mux.psock_unanswered(id)) {
        (Some(idle), Some(s), Some(open)) => idle && if ordered { open == 0 } else { s.tx_msgs >= s.rx_msgs },
        _ => true,
    }
}

fn unattach_and_close<T: Transport>(t: &mut T, mux: &mut Mux<T::Io>, id: PsockId) {
    if let Some(mut io) = mux.unattach_with(t.ctx(), id) {
        io.close(t.ctx());
    }
}

/// What the engine loop shares with the server handle.
struct EngineCtx<'a> {
    cfg: &'a ServerConfig,
    budget: &'a Arc<PinnedBudget>,
    stop: &'a AtomicBool,
    counters: &'a ServerCounters,
    snapshot: &'a Mutex<Published>,
}

/// What runs on the engine thread besides accepting and the mux: the request handler (run to
/// completion) and anything else the appliance drives there (an upstream pool).
pub(crate) trait EngineApp<T: Transport> {
    /// Whether requests are handled on this thread (otherwise workers take them).
    fn handles_requests(&self) -> bool;
    /// One request, in place.
    fn handle(&mut self, r: &mut Request<'_>) -> Handled;
    /// Work of its own each round (upstream I/O, answers); whether anything happened.
    fn round(&mut self, _t: &mut T, _mux: &mut Mux<T::Io>, _now: Instant) -> bool {
        false
    }
    /// The server is stopping.
    fn close(&mut self, _t: &mut T, _mux: &mut Mux<T::Io>) {}
    /// The upstream pool's figures, if the app has a pool.
    fn upstream(&self) -> Option<UpstreamSnapshot> {
        None
    }
}

/// Worker mode: the engine handles nothing itself.
struct NoApp;

impl<T: Transport> EngineApp<T> for NoApp {
    fn handles_requests(&self) -> bool {
        false
    }
    fn handle(&mut self, _r: &mut Request<'_>) -> Handled {
        Handled::default()
    }
}

/// Run to completion: a [`Handler`] on the engine thread (and the socket the mux made).
struct RtcApp<H> {
    handler: H,
    _sock: Option<MsgSocket>,
}

fn handle_on_engine<H: Handler>(h: &mut H, r: &mut Request<'_>) -> Handled {
    let bytes = r.bytes();
    let mut sink = EngineSink { req: r, answered: false, close: false };
    h.request(bytes, &mut Reply { sink: &mut sink });
    Handled { replied: sink.answered, close: sink.close }
}

impl<T: Transport, H: Handler> EngineApp<T> for RtcApp<H> {
    fn handles_requests(&self) -> bool {
        true
    }
    fn handle(&mut self, r: &mut Request<'_>) -> Handled {
        handle_on_engine(&mut self.handler, r)
    }
}

fn run_engine<T: Transport, A: EngineApp<T>>(
    t: &mut T,
    mut mux: Mux<T::Io>,
    mut app: A,
    cx: &EngineCtx<'_>,
) -> io::Result<StatsTable> {
    let cfg = cx.cfg;
    let rtc = app.handles_requests();
    let mut leaving: Vec<(PsockId, Instant)> = Vec::new();
    // Connections closing at their handler's request (`Reply::close`): their later requests
    // are not handled. At most one entry per connection.
    let mut closing: HashSet<PsockId> = HashSet::new();
    let mut last_snapshot = Instant::now();
    let mut idle = 0u32;
    let mut errors = ConnLog::new(Instant::now());
    let result = loop {
        if cx.stop.load(Ordering::Acquire) {
            break Ok(());
        }
        let mut work = match t.step() {
            Ok(w) => w,
            Err(e) => break Err(e),
        };
        loop {
            match t.accept(cfg.rx_ring, cx.budget) {
                Ok(Some(io)) => {
                    // Cannot fail: the spec was checked when the server started.
                    let parser = parser_from_spec(&cfg.parser).map_err(|e| invalid(e.to_string()))?;
                    mux.attach(io, parser);
                    cx.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    work = true;
                }
                Ok(None) => break,
                Err(e) => {
                    cx.counters.attach_failed.fetch_add(1, Ordering::Relaxed);
                    errors.note(ConnEvent::AttachFailed, Instant::now(), || {
                        format!("ukcm server: cannot attach a connection: {e}")
                    });
                    break;
                }
            }
        }
        let now = Instant::now();
        if rtc {
            let mut replied = false;
            let mut handle = |r: &mut Request<'_>| {
                // Unanswered, so its place in the reply order is released.
                if closing.contains(&r.origin()) {
                    return;
                }
                let h = app.handle(r);
                replied |= h.replied;
                if h.close && closing.insert(r.origin()) {
                    leaving.push((r.origin(), now + cfg.linger));
                }
            };
            work |= t.poll_mux(&mut mux, now, Some(&mut handle));
            replied |= app.round(t, &mut mux, now);
            if replied {
                // Let the stack send the replies (and upstream requests) now, not next round.
                if let Err(e) = t.step() {
                    break Err(e);
                }
                work = true;
            }
        } else {
            work |= t.poll_mux(&mut mux, now, None);
            work |= app.round(t, &mut mux, now);
        }
        while let Some(ev) = mux.next_event() {
            work = true;
            match ev {
                MuxEvent::PsockClosed(id) => {
                    cx.counters.closed.fetch_add(1, Ordering::Relaxed);
                    leaving.push((id, now + cfg.linger));
                }
                MuxEvent::PsockError(id, e) => {
                    cx.counters.failed.fetch_add(1, Ordering::Relaxed);
                    errors.note(ConnEvent::Error(e.kind), now, || format!("ukcm server: {id}: {e}; unattaching it"));
                    unattach_and_close(t, &mut mux, id);
                    closing.remove(&id);
                }
            }
        }
        if !leaving.is_empty() {
            let mut i = 0;
            while i < leaving.len() {
                let (id, until) = leaving[i];
                let done = drained(&mux, id, cfg.ordered);
                if done || until <= now {
                    if !done {
                        cx.counters.lingered.fetch_add(1, Ordering::Relaxed);
                    }
                    unattach_and_close(t, &mut mux, id);
                    closing.remove(&id);
                    leaving.swap_remove(i);
                    work = true;
                } else {
                    i += 1;
                }
            }
        }
        if now.duration_since(last_snapshot) >= SNAPSHOT_EVERY {
            if let Some(w) = t.take_warning() {
                tracing::warn!("ukcm server: {w}");
            }
            errors.tick(now);
            *cx.snapshot.lock() = Published {
                table: mux.stats_table_rows(SNAPSHOT_ROWS),
                status: t.status(),
                upstream: app.upstream(),
                cost: t.conn_cost(),
            };
            last_snapshot = now;
        }
        if work {
            idle = 0;
        } else if cfg.busy_poll && !rtc {
            // Worker mode: a worker may share this core; yield at once rather than spin
            // while the worker holds a message or its reply waits.
            std::thread::yield_now();
        } else {
            idle = idle.saturating_add(1);
            match idle_policy(cfg.busy_poll, RTC_NAP).step(idle) {
                IdleStep::Spin => std::hint::spin_loop(),
                IdleStep::Yield => std::thread::yield_now(),
                IdleStep::Sleep(d) => {
                    let d = d.min(nap_after(idle));
                    mux.wait_idle(|bell| t.idle_wait(d, Some(bell)));
                }
            }
        }
    };
    // Stopping: write out replies already queued (bounded), then close every connection.
    let end = Instant::now() + Duration::from_millis(300);
    while result.is_ok() && Instant::now() < end {
        let mut work = t.step().unwrap_or(false);
        if rtc {
            let mut handle = |r: &mut Request<'_>| {
                app.handle(r);
            };
            work |= t.poll_mux(&mut mux, Instant::now(), Some(&mut handle));
        } else {
            work |= t.poll_mux(&mut mux, Instant::now(), None);
        }
        work |= app.round(t, &mut mux, Instant::now());
        if !work && mux.psock_ids().into_iter().all(|id| mux.psock_tx_idle(id) != Some(false)) {
            break;
        }
    }
    errors.finish();
    let table = mux.stats_table();
    if let Some(w) = t.take_warning() {
        tracing::warn!("ukcm server: {w}");
    }
    *cx.snapshot.lock() =
        Published { table: table.clone(), status: t.status(), upstream: app.upstream(), cost: t.conn_cost() };
    for id in mux.psock_ids() {
        unattach_and_close(t, &mut mux, id);
    }
    // Let the stack send the FINs (bounded).
    let end = Instant::now() + Duration::from_millis(100);
    while result.is_ok() && Instant::now() < end && t.step().unwrap_or(false) {}
    app.close(t, &mut mux);
    mux.shutdown();
    drop(app);
    result.map(|()| table)
}

#[cfg(test)]
mod nap_tests {
    use super::*;

    #[test]
    fn naps_start_short_and_grow_only_after_a_quiet_spell() {
        assert_eq!(nap_after(0), SHORT_NAP);
        assert_eq!(nap_after(IDLE_POLLS_BEFORE_NAP + 31), SHORT_NAP);
        assert_eq!(nap_after(IDLE_POLLS_BEFORE_NAP + 32), SHORT_NAP * 2);
        assert_eq!(nap_after(IDLE_POLLS_BEFORE_NAP + 5 * 32), SHORT_NAP * 32);
        // Bounded: the caller's cap (RTC_NAP) is reached, and the doubling stops.
        assert!(nap_after(u32::MAX) >= RTC_NAP);
        assert_eq!(nap_after(u32::MAX), SHORT_NAP * 1024);
    }
}
