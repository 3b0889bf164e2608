//! The echo server on the mux, over any [`Transport`]: kernel TCP (`Mux<KernelPsock>`) or
//! the userspace stack (`Mux<StackPsock<P>>` over an engine on an AF_XDP, TAP or in-memory
//! port). One engine thread steps the transport, accepts connections in the same loop and
//! attaches each with its own parser, and runs `Mux::poll_with`; messages are echoed whole
//! to the connection they came from.
//!
//! Two threading models (DESIGN.md, "Mux"):
//! * **workers** (`--workers N`, KCM's model): N threads, each with its own cloned
//!   [`MsgSocket`], receive messages from the engine over the mux's queues and send each
//!   back with `send_with(len, None, Some(msg.origin()), …)`, built in place in the
//!   socket's pinned tx ring.
//! * **run-to-completion** (`--rtc`, DPDK's model): the mux hands each message to a handler
//!   on the engine thread, in place in its psock's ring (`Mux::poll_rtc` /
//!   `Mux::poll_engine_rtc`), and the reply is written straight to the connection; no
//!   other thread, no queue, no cross-core handoff.
//!
//! The engine reads the mux's events (`Mux::next_event`): a psock that failed is unattached
//! at once; one whose peer closed is unattached once every message it delivered has been
//! answered and the replies are acknowledged (`Mux::psock_tx_idle`), or after
//! [`CLOSE_LINGER`] at the latest. Unattached connections are closed (FIN).

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ukcm_mux::{
    Msg, MsgSocket, Mux, MuxConfig, MuxEvent, PsockId, PsockIo, RecvError, SendError, SocketConfig, StatsTable,
};
use ukcm_nic::PinnedBudget;
use ukcm_parsers::parser_from_spec;

use crate::cli::SteerKind;
use crate::transport::{KernelTransport, Transport};

/// Threading model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// N worker threads, one message socket each.
    Workers(usize),
    /// The engine thread echoes between polls.
    RunToCompletion,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Workers(1) => f.write_str("1 worker thread"),
            Mode::Workers(n) => write!(f, "{n} worker threads"),
            Mode::RunToCompletion => f.write_str("run-to-completion on the engine thread"),
        }
    }
}

/// Echo server settings.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Parser spec for every connection (already validated).
    pub parser: String,
    /// Threading model.
    pub mode: Mode,
    /// Steering policy.
    pub steer: SteerKind,
    /// Header length for the `hash` key (bytes skipped before the 16 hashed ones).
    pub hash_header: usize,
    /// Each connection's pinned rx ring (multiple of 4096; bounds one message).
    pub rx_ring: usize,
    /// Each message socket's pinned tx ring (multiple of 4096).
    pub tx_ring: usize,
    /// When idle, spin then yield, never sleep (lowest latency; the engine's core stays
    /// busy): the engine spins then yields (in worker mode it yields at once, so workers on
    /// the same core get it), and the workers wait the same way instead of the mux's
    /// `recv_timeout` (which ends in 50 µs sleeps). Otherwise spin, yield, then sleep 50 µs
    /// per idle round.
    pub busy_poll: bool,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            parser: "thrift".into(),
            mode: Mode::Workers(1),
            steer: SteerKind::Batch,
            hash_header: 4,
            rx_ring: 256 * 1024,
            tx_ring: 1 << 20,
            busy_poll: false,
        }
    }
}

/// Header length of the length-field parsers (for the `hash` key); 0 for others.
pub fn header_len_of(spec: &str) -> usize {
    crate::wire::Framing::from_spec(spec).map(|f| f.header_len()).unwrap_or(0)
}

/// Counters the engine keeps beside the mux's.
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Psocks unattached after their peer closed.
    pub closed: AtomicU64,
    /// Psocks that failed (error event).
    pub failed: AtomicU64,
    /// Psocks unattached after [`CLOSE_LINGER`] with replies still unanswered or unacknowledged.
    pub lingered: AtomicU64,
    /// Replies that could not be sent (too big for the tx ring, or the psock was gone).
    pub reply_failed: AtomicU64,
}

/// A running echo server.
#[derive(Debug)]
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    engine: Option<JoinHandle<io::Result<StatsTable>>>,
    workers: Vec<JoinHandle<()>>,
    snapshot: Arc<Mutex<(StatsTable, String)>>,
    counters: Arc<EngineCounters>,
    local: std::net::SocketAddr,
    describe: String,
}

/// How long a psock whose peer closed may wait for its last replies to be answered and
/// acknowledged before it is unattached anyway.
pub const CLOSE_LINGER: Duration = Duration::from_secs(10);
/// How often the engine publishes a stats snapshot.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);

impl EchoServer {
    /// Starts the engine (and workers) on a bound kernel TCP listener.
    pub fn start(listener: TcpListener, cfg: EchoConfig) -> io::Result<EchoServer> {
        let t = KernelTransport::new(listener)?;
        Self::start_with(move || Ok(t), cfg)
    }

    /// Starts the engine thread, which builds its transport with `make` (so ports that must
    /// stay on one thread are opened there), and the workers. Returns once the transport is
    /// up, or with the error `make` returned.
    pub fn start_with<T, F>(make: F, cfg: EchoConfig) -> io::Result<EchoServer>
    where
        T: Transport + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        parser_from_spec(&cfg.parser)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad parser spec: {e}")))?;
        let budget = PinnedBudget::unlimited();
        let busy = cfg.busy_poll;
        let sock_cfg = SocketConfig { rx_queue: 1024, tx_queue: 1024, max_in_flight: 1024, tx_ring: cfg.tx_ring };
        let mux_cfg = MuxConfig {
            steer: cfg.steer.policy(cfg.hash_header),
            socket: sock_cfg,
            max_message: cfg.rx_ring,
            ..MuxConfig::default()
        };
        let (mux, first) = Mux::<T::Io>::new(mux_cfg, &budget).map_err(io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(EngineCounters::default());
        let snapshot = Arc::new(Mutex::new((mux.stats_table(), String::new())));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<(std::net::SocketAddr, String)>>();
        // In worker mode the workers own every socket; in run-to-completion the engine does.
        let (own, worker_socks) = match cfg.mode {
            Mode::RunToCompletion => (Some(first), Vec::new()),
            Mode::Workers(n) => {
                let mut v = Vec::with_capacity(n);
                for _ in 1..n {
                    v.push(first.try_clone().map_err(io::Error::other)?);
                }
                v.insert(0, first);
                (None, v)
            }
        };
        let engine = {
            let (stop, counters, snapshot) = (Arc::clone(&stop), Arc::clone(&counters), Arc::clone(&snapshot));
            std::thread::Builder::new().name("ukcm-engine".into()).spawn(move || {
                let mut t = match make() {
                    Ok(t) => t,
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = ready_tx.send(Err(e));
                        return Err(io::Error::other(msg));
                    }
                };
                let _ = ready_tx.send(Ok((t.local_addr(), t.describe())));
                engine(&mut t, mux, own, cfg, budget, &stop, &counters, &snapshot)
            })?
        };
        let (local, describe) = match ready_rx.recv() {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let _ = engine.join();
                return Err(e);
            }
            Err(_) => {
                let r = engine.join();
                return Err(match r {
                    Ok(Err(e)) => e,
                    _ => io::Error::other("the engine thread ended before its transport was up"),
                });
            }
        };
        let mut workers = Vec::new();
        for (i, sock) in worker_socks.into_iter().enumerate() {
            let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ukcm-worker-{i}"))
                    .spawn(move || worker(sock, &stop, &counters, busy))?,
            );
        }
        Ok(EchoServer { stop, engine: Some(engine), workers, snapshot, counters, local, describe })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }

    /// What carries the bytes (`kernel TCP`, `ukcm stack on afxdp:…`).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The latest stats snapshot (refreshed by the engine every 200 ms).
    pub fn snapshot(&self) -> StatsTable {
        self.snapshot.lock().0.clone()
    }

    /// The latest transport counters line (empty for kernel TCP).
    pub fn transport_status(&self) -> String {
        self.snapshot.lock().1.clone()
    }

    /// The engine's own counters.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Whether the engine thread has ended (it ends only on stop or on an error).
    pub fn engine_finished(&self) -> bool {
        self.engine.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops the workers and the engine (which flushes queued replies first, then closes
    /// every connection and drops its transport — an AF_XDP port detaches its program) and
    /// returns the final stats table.
    pub fn stop(mut self) -> io::Result<StatsTable> {
        self.stop.store(true, Ordering::Release);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.engine.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the engine thread panicked")),
            None => Err(io::Error::other("engine already stopped")),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Sends `m` back to its origin, waiting while the tx ring or queue is full. Returns
/// false when the reply could not be sent (too big, mux closed, or stopping).
fn reply(sock: &mut MsgSocket, m: &Msg, stop: &AtomicBool, busy: bool) -> bool {
    let mut idle = 0u32;
    loop {
        match sock.send_with(m.len(), None, Some(m.origin()), |b| b.copy_from_slice(m)) {
            Ok(()) => return true,
            Err(SendError::WouldBlock) if !stop.load(Ordering::Relaxed) => backoff(&mut idle, busy),
            Err(_) => return false,
        }
    }
}

/// Waits for the next message: with `busy`, spin then yield and never sleep, so
/// `--busy-poll` means no sleeps anywhere (the mux's `recv_timeout` ends in 50 µs sleeps
/// with no wake-up from the engine). Measured at 64 B depth 1 with engine and worker on
/// one core this alone changed little (47k vs 45–52k msgs/s): there the cost is the two
/// context switches per hand-off.
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

fn worker(mut sock: MsgSocket, stop: &AtomicBool, counters: &EngineCounters, busy: bool) {
    let mut batch = Vec::with_capacity(64);
    while !stop.load(Ordering::Acquire) {
        match next_msg(&sock, stop, busy) {
            Ok(m) => batch.push(m),
            Err(RecvError::TimedOut) => continue,
            Err(RecvError::Closed) => break,
        }
        sock.recv_batch(&mut batch, 63);
        for m in batch.drain(..) {
            if !reply(&mut sock, &m, stop, busy) {
                counters.reply_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// spin → yield → (unless `busy`) short sleep, for idle loops.
fn backoff(idle: &mut u32, busy: bool) {
    *idle += 1;
    if *idle < 32 {
        std::hint::spin_loop();
    } else if *idle < 96 || busy {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Whether a closed psock can go: every message it delivered was answered and the answers
/// are acknowledged (or it is already gone).
fn drained<T: PsockIo>(mux: &Mux<T>, id: PsockId) -> bool {
    match (mux.psock_tx_idle(id), mux.psock_stats(id)) {
        (Some(idle), Some(s)) => idle && s.tx_msgs >= s.rx_msgs,
        _ => true,
    }
}

fn unattach_and_close<T: Transport>(t: &mut T, mux: &mut Mux<T::Io>, id: PsockId) {
    if let Some(mut io) = mux.unattach_with(t.ctx(), id) {
        io.close(t.ctx());
    }
}

#[allow(clippy::too_many_arguments)]
fn engine<T: Transport>(
    t: &mut T,
    mut mux: Mux<T::Io>,
    own: Option<MsgSocket>,
    cfg: EchoConfig,
    budget: Arc<PinnedBudget>,
    stop: &AtomicBool,
    counters: &EngineCounters,
    snapshot: &Mutex<(StatsTable, String)>,
) -> io::Result<StatsTable> {
    let rtc = own.is_some();
    let mut leaving: Vec<(PsockId, Instant)> = Vec::new();
    let mut last_snapshot = Instant::now();
    let mut idle = 0u32;
    let result = loop {
        if stop.load(Ordering::Acquire) {
            break Ok(());
        }
        let mut work = match t.step() {
            Ok(w) => w,
            Err(e) => break Err(e),
        };
        // Accept in the same loop (non-blocking).
        loop {
            match t.accept(cfg.rx_ring, &budget) {
                Ok(Some(io)) => {
                    let parser = parser_from_spec(&cfg.parser)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                    mux.attach(io, parser);
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    work = true;
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("ukcm-echo: cannot attach a connection: {e}");
                    break;
                }
            }
        }
        let now = Instant::now();
        if rtc {
            // Run-to-completion: each message is echoed in place on this thread; the reply
            // goes straight to its connection, then the stack sends it.
            let mut replied = false;
            let mut h = |_: PsockId, m: &[u8], out: &mut Vec<u8>| {
                out.extend_from_slice(m);
                replied = true;
            };
            work |= t.poll_mux(&mut mux, now, Some(&mut h));
            if replied {
                if let Err(e) = t.step() {
                    break Err(e);
                }
            }
        } else {
            work |= t.poll_mux(&mut mux, now, None);
        }
        while let Some(ev) = mux.next_event() {
            work = true;
            match ev {
                MuxEvent::PsockClosed(id) => {
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                    leaving.push((id, now + CLOSE_LINGER));
                }
                MuxEvent::PsockError(id, e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("ukcm-echo: {id}: {e}; unattaching it");
                    unattach_and_close(t, &mut mux, id);
                }
            }
        }
        if !leaving.is_empty() {
            let mut i = 0;
            while i < leaving.len() {
                let (id, until) = leaving[i];
                let done = drained(&mux, id);
                if done || until <= now {
                    if !done {
                        counters.lingered.fetch_add(1, Ordering::Relaxed);
                    }
                    unattach_and_close(t, &mut mux, id);
                    leaving.swap_remove(i);
                    work = true;
                } else {
                    i += 1;
                }
            }
        }
        if now.duration_since(last_snapshot) >= SNAPSHOT_EVERY {
            *snapshot.lock() = (mux.stats_table(), t.status());
            last_snapshot = now;
        }
        if work {
            idle = 0;
        } else if cfg.busy_poll && !rtc {
            // Worker mode: a worker may share this core (ukcm-bench pins the whole server to
            // one): yield at once rather than first spinning 32 idle engine polls while the
            // worker holds a message or its reply waits (measured, 64 B depth 1 on one
            // core: 49k → 67k msgs/s, p50 72 → 53 µs).
            std::thread::yield_now();
        } else {
            backoff(&mut idle, cfg.busy_poll);
        }
    };
    // Stopping: write out replies already queued (bounded), then close every connection.
    let end = Instant::now() + Duration::from_millis(300);
    while result.is_ok() && Instant::now() < end {
        let mut work = t.step().unwrap_or(false);
        let mut h = |_: PsockId, m: &[u8], out: &mut Vec<u8>| out.extend_from_slice(m);
        work |= t.poll_mux(&mut mux, Instant::now(), if rtc { Some(&mut h) } else { None });
        if !work && mux.psock_ids().into_iter().all(|id| mux.psock_tx_idle(id) != Some(false)) {
            break;
        }
    }
    let table = mux.stats_table();
    *snapshot.lock() = (table.clone(), t.status());
    for id in mux.psock_ids() {
        unattach_and_close(t, &mut mux, id);
    }
    // Let the stack send the FINs (bounded).
    let end = Instant::now() + Duration::from_millis(100);
    while result.is_ok() && Instant::now() < end && t.step().unwrap_or(false) {}
    mux.shutdown();
    drop(own);
    result.map(|()| table)
}
