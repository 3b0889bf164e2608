//! The echo server over the mux's kernel-TCP transport: one engine thread runs
//! `Mux<KernelPsock>::poll`, accepts connections in the same loop and attaches each with
//! its own parser; messages are echoed whole to the connection they came from.
//!
//! Two threading models (DESIGN.md, "Mux"):
//! * **workers** (`--workers N`, KCM's model): N threads, each with its own cloned
//!   [`MsgSocket`], receive messages from the engine over the mux's queues and send each
//!   back with `send_with(len, None, Some(msg.origin()), …)`, built in place in the
//!   socket's pinned tx ring.
//! * **run-to-completion** (`--rtc`, DPDK's model): the engine thread itself takes the
//!   messages the last poll delivered and queues the replies between polls; no other
//!   thread, no cross-core handoff.
//!
//! The engine keeps the mux's first socket for itself: in worker mode it is
//! recv-disabled (it gets no messages) and serves to read the mux's events, on which the
//! engine unattaches psocks whose peer closed or that failed.

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ukcm_mux::kernel::KernelPsock;
use ukcm_mux::{Msg, MsgSocket, Mux, MuxConfig, MuxEvent, PsockId, RecvError, SendError, SocketConfig, StatsTable};
use ukcm_nic::PinnedBudget;
use ukcm_parsers::parser_from_spec;

use crate::cli::SteerKind;

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
    /// Replies that could not be sent (too big for the tx ring, or the psock was gone).
    pub reply_failed: AtomicU64,
}

/// A running echo server.
#[derive(Debug)]
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    engine: Option<JoinHandle<io::Result<StatsTable>>>,
    workers: Vec<JoinHandle<()>>,
    snapshot: Arc<Mutex<StatsTable>>,
    counters: Arc<EngineCounters>,
    local: std::net::SocketAddr,
}

/// How long a psock whose peer closed (or that failed) stays attached before it is
/// unattached: replies still queued for it get written, and its id is not reused while a
/// worker may still address it (see the report on PsockId reuse).
const UNATTACH_GRACE: Duration = Duration::from_millis(500);
/// How often the engine publishes a stats snapshot.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);

impl EchoServer {
    /// Starts the engine (and workers) on a bound listener.
    pub fn start(listener: TcpListener, cfg: EchoConfig) -> io::Result<EchoServer> {
        let local = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        parser_from_spec(&cfg.parser)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad parser spec: {e}")))?;
        let budget = PinnedBudget::unlimited();
        let sock_cfg = SocketConfig { rx_queue: 1024, tx_queue: 1024, max_in_flight: 1024, tx_ring: cfg.tx_ring };
        let mux_cfg = MuxConfig {
            steer: cfg.steer.policy(cfg.hash_header),
            socket: sock_cfg,
            max_message: cfg.rx_ring,
            ..MuxConfig::default()
        };
        let (mux, first) = Mux::<KernelPsock>::new(mux_cfg, &budget).map_err(io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(EngineCounters::default());
        let mut workers = Vec::new();
        if let Mode::Workers(n) = cfg.mode {
            first.set_recv_enabled(false);
            for i in 0..n {
                let sock = first.try_clone().map_err(io::Error::other)?;
                let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
                workers.push(
                    std::thread::Builder::new()
                        .name(format!("ukcm-worker-{i}"))
                        .spawn(move || worker(sock, &stop, &counters))?,
                );
            }
        }
        let snapshot = Arc::new(Mutex::new(mux.stats_table()));
        let engine = {
            let (stop, counters, snapshot) = (Arc::clone(&stop), Arc::clone(&counters), Arc::clone(&snapshot));
            std::thread::Builder::new()
                .name("ukcm-engine".into())
                .spawn(move || engine(mux, first, listener, cfg, budget, &stop, &counters, &snapshot))?
        };
        Ok(EchoServer { stop, engine: Some(engine), workers, snapshot, counters, local })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }

    /// The latest stats snapshot (refreshed by the engine every 200 ms).
    pub fn snapshot(&self) -> StatsTable {
        self.snapshot.lock().clone()
    }

    /// The engine's own counters.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Whether the engine thread has ended (it ends only on stop or on an error).
    pub fn engine_finished(&self) -> bool {
        self.engine.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops the workers and the engine (which flushes queued replies first) and returns
    /// the final stats table.
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
fn reply(sock: &mut MsgSocket, m: &Msg, stop: &AtomicBool) -> bool {
    let mut idle = 0u32;
    loop {
        match sock.send_with(m.len(), None, Some(m.origin()), |b| b.copy_from_slice(m)) {
            Ok(()) => return true,
            Err(SendError::WouldBlock) if !stop.load(Ordering::Relaxed) => backoff(&mut idle),
            Err(_) => return false,
        }
    }
}

fn worker(mut sock: MsgSocket, stop: &AtomicBool, counters: &EngineCounters) {
    let mut batch = Vec::with_capacity(64);
    while !stop.load(Ordering::Acquire) {
        match sock.recv_timeout(Duration::from_millis(20)) {
            Ok(m) => batch.push(m),
            Err(RecvError::TimedOut) => continue,
            Err(RecvError::Closed) => break,
        }
        sock.recv_batch(&mut batch, 63);
        for m in batch.drain(..) {
            if !reply(&mut sock, &m, stop) {
                counters.reply_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// spin → yield → short sleep, for idle loops.
fn backoff(idle: &mut u32) {
    *idle += 1;
    if *idle < 32 {
        std::hint::spin_loop();
    } else if *idle < 96 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}

#[allow(clippy::too_many_arguments)]
fn engine(
    mut mux: Mux<KernelPsock>,
    mut own: MsgSocket,
    listener: TcpListener,
    cfg: EchoConfig,
    budget: Arc<PinnedBudget>,
    stop: &AtomicBool,
    counters: &EngineCounters,
    snapshot: &Mutex<StatsTable>,
) -> io::Result<StatsTable> {
    let rtc = cfg.mode == Mode::RunToCompletion;
    let mut leaving: VecDeque<(PsockId, Instant)> = VecDeque::new();
    let mut pending: VecDeque<Msg> = VecDeque::new(); // rtc replies waiting for tx room
    let mut last_snapshot = Instant::now();
    let mut idle = 0u32;
    while !stop.load(Ordering::Acquire) {
        let mut work = false;
        // Accept in the same loop (non-blocking).
        loop {
            match listener.accept() {
                Ok((stream, _peer)) => {
                    let parser = parser_from_spec(&cfg.parser)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                    match KernelPsock::new(stream, cfg.rx_ring, 1024, &budget) {
                        Ok(ps) => {
                            mux.attach(ps, parser);
                            counters.accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => eprintln!("ukcm-echo: cannot attach a connection: {e}"),
                    }
                    work = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("ukcm-echo: accept: {e}");
                    break;
                }
            }
        }
        let now = Instant::now();
        work |= mux.poll(now);
        if rtc {
            // Run-to-completion: echo what this poll delivered, between polls.
            while pending.len() < 4096 {
                match own.try_recv() {
                    Some(m) => pending.push_back(m),
                    None => break,
                }
            }
            while let Some(m) = pending.front() {
                match own.send_with(m.len(), None, Some(m.origin()), |b| b.copy_from_slice(m)) {
                    Ok(()) => {}
                    Err(SendError::WouldBlock) => break, // the next poll drains the tx queue
                    Err(_) => {
                        counters.reply_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                pending.pop_front();
                work = true;
            }
        }
        while let Some(ev) = own.next_event() {
            work = true;
            match ev {
                MuxEvent::PsockClosed(id) => {
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                    leaving.push_back((id, now + UNATTACH_GRACE));
                }
                MuxEvent::PsockError(id, e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("ukcm-echo: {id}: {e}; unattaching it");
                    leaving.push_back((id, now + UNATTACH_GRACE));
                }
            }
        }
        while leaving.front().is_some_and(|(_, at)| *at <= now) {
            let (id, _) = leaving.pop_front().expect("checked");
            let _ = mux.unattach(id); // dropping the KernelPsock closes the connection
        }
        if now.duration_since(last_snapshot) >= SNAPSHOT_EVERY {
            *snapshot.lock() = mux.stats_table();
            last_snapshot = now;
        }
        if work {
            idle = 0;
        } else {
            backoff(&mut idle);
        }
    }
    // Stopping: write out replies already queued (bounded), then close.
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        if rtc {
            while let Some(m) = pending.pop_front() {
                let _ = own.send_with(m.len(), None, Some(m.origin()), |b| b.copy_from_slice(&m));
            }
        }
        if !mux.poll(Instant::now()) {
            break;
        }
    }
    let table = mux.stats_table();
    *snapshot.lock() = table.clone();
    mux.shutdown();
    Ok(table)
}
