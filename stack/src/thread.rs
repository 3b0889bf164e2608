//! Driving an engine from other threads: the engine runs on a thread of its own, and
//! application threads talk to it through bounded queues (commands in, events and data
//! out) via a cloneable [`EngineHandle`].
//!
//! Bounded means backpressure, not loss: when the event queue is full the engine thread
//! stops reading connections (their rx rings fill and TCP closes the window) and keeps
//! its connection events until there is room; when the command queue is full,
//! [`EngineHandle::send`] blocks and [`EngineHandle::try_send`] says so.
//!
//! This mode copies payload between the rings and `Vec`s crossing the queues. The
//! zero-copy path is the run-to-completion mode: the caller's thread owns the [`Engine`],
//! calls [`Engine::poll`] (or [`Engine::run_until`]) and handles data inline with
//! [`Engine::drain_ready`] and [`Engine::with_tcp`].
//!
//! "Engine thread" means one thing across the crates: a thread that owns one engine and
//! polls it. [`spawn_engine`] starts one whose application talks bytes to it through an
//! [`EngineHandle`]; the `ukcm` crate's server starts one per NIC queue whose mux and
//! handlers run on it (the run-to-completion mode above, with messages).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};
use parking_lot::Mutex;
use smoltcp::wire::IpEndpoint;
use ukcm_nic::{Port, PortError};

use crate::config::{EngineConfig, TcpOptions};
use crate::engine::{ConnId, Engine, EngineStats, Event, StackError};

/// Queue sizes and thread name of a spawned engine.
#[derive(Debug, Clone)]
pub struct ThreadConfig {
    /// Commands waiting for the engine thread.
    pub commands: usize,
    /// Events (and data chunks) waiting for the application.
    pub events: usize,
    /// Largest data chunk delivered in one [`AppEvent::Data`].
    pub max_chunk: usize,
    /// Name of the engine thread.
    pub name: String,
}

impl Default for ThreadConfig {
    fn default() -> Self {
        ThreadConfig { commands: 4096, events: 4096, max_chunk: 64 * 1024, name: "ukcm-engine".into() }
    }
}

/// What the engine thread tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// A connection state change.
    Conn(Event),
    /// Bytes received on a connection, in order.
    Data { conn: ConnId, data: Vec<u8> },
    /// The peer closed its sending half; no more `Data` for this connection.
    Eof(ConnId),
    /// A queued send was dropped because the connection is gone.
    SendFailed { conn: ConnId, bytes: usize },
}

enum Command {
    Listen { port: u16, backlog: usize, opts: Option<TcpOptions>, reply: Sender<Result<(), StackError>> },
    Connect { remote: IpEndpoint, opts: Option<TcpOptions>, reply: Sender<Result<ConnId, StackError>> },
    Send { conn: ConnId, data: Vec<u8> },
    Close(ConnId),
    Abort(ConnId),
    Stats(Sender<EngineStats>),
    Shutdown,
}

type EngineThread = JoinHandle<Result<(), StackError>>;

/// A handle to an engine running on its own thread. `Send + Clone`; the engine stops when
/// [`EngineHandle::shutdown`] is called or every handle is dropped.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    cmd: Sender<Command>,
    events: Receiver<AppEvent>,
    thread: Arc<Mutex<Option<EngineThread>>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Listen { port, .. } => write!(f, "Listen({port})"),
            Command::Connect { remote, .. } => write!(f, "Connect({remote})"),
            Command::Send { conn, data } => write!(f, "Send({conn}, {} bytes)", data.len()),
            Command::Close(c) => write!(f, "Close({c})"),
            Command::Abort(c) => write!(f, "Abort({c})"),
            Command::Stats(_) => write!(f, "Stats"),
            Command::Shutdown => write!(f, "Shutdown"),
        }
    }
}

fn gone() -> StackError {
    StackError::Port("engine thread is gone".into())
}

impl EngineHandle {
    fn call<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T, StackError> {
        let (tx, rx) = bounded(1);
        self.cmd.send(make(tx)).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())
    }

    /// Listens on `port` (see [`Engine::listen_with`]); `None` options take the engine's default.
    pub fn listen(&self, port: u16, backlog: usize, opts: Option<TcpOptions>) -> Result<(), StackError> {
        self.call(|reply| Command::Listen { port, backlog, opts, reply })?
    }

    /// Starts a connection; [`Event::Connected`] follows on the event queue.
    pub fn connect(&self, remote: IpEndpoint, opts: Option<TcpOptions>) -> Result<ConnId, StackError> {
        self.call(|reply| Command::Connect { remote, opts, reply })?
    }

    /// Queues bytes for a connection (blocks while the command queue is full).
    pub fn send(&self, conn: ConnId, data: Vec<u8>) -> Result<(), StackError> {
        self.cmd.send(Command::Send { conn, data }).map_err(|_| gone())
    }

    /// Queues bytes unless the command queue is full (then the data comes back).
    pub fn try_send(&self, conn: ConnId, data: Vec<u8>) -> Result<(), Vec<u8>> {
        match self.cmd.try_send(Command::Send { conn, data }) {
            Ok(()) => Ok(()),
            Err(
                TrySendError::Full(Command::Send { data, .. }) | TrySendError::Disconnected(Command::Send { data, .. }),
            ) => Err(data),
            Err(_) => unreachable!("only Send commands are tried"),
        }
    }

    /// Closes the connection once the bytes queued before are sent.
    pub fn close(&self, conn: ConnId) -> Result<(), StackError> {
        self.cmd.send(Command::Close(conn)).map_err(|_| gone())
    }

    /// Resets the connection now (queued bytes are dropped).
    pub fn abort(&self, conn: ConnId) -> Result<(), StackError> {
        self.cmd.send(Command::Abort(conn)).map_err(|_| gone())
    }

    /// The engine's counters.
    pub fn stats(&self) -> Result<EngineStats, StackError> {
        self.call(Command::Stats)
    }

    /// The queue of events and received data (clone it to read from several threads).
    pub fn events(&self) -> &Receiver<AppEvent> {
        &self.events
    }

    /// Stops the engine thread and waits for it; returns its exit status.
    pub fn shutdown(&self) -> Result<(), StackError> {
        let _ = self.cmd.send(Command::Shutdown);
        match self.thread.lock().take() {
            Some(t) => t.join().map_err(|_| StackError::Port("engine thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

/// Runs an engine on a new thread with default queue sizes; `port_factory` runs on that
/// thread (ports need not be `Send`).
pub fn spawn_engine<P, F>(cfg: EngineConfig, port_factory: F) -> Result<EngineHandle, StackError>
where
    P: Port + 'static,
    F: FnOnce() -> Result<P, PortError> + Send + 'static,
{
    spawn_engine_with(cfg, ThreadConfig::default(), port_factory)
}

/// [`spawn_engine`] with explicit queue sizes.
pub fn spawn_engine_with<P, F>(
    cfg: EngineConfig,
    tcfg: ThreadConfig,
    port_factory: F,
) -> Result<EngineHandle, StackError>
where
    P: Port + 'static,
    F: FnOnce() -> Result<P, PortError> + Send + 'static,
{
    let (cmd_tx, cmd_rx) = bounded(tcfg.commands.max(1));
    let (ev_tx, ev_rx) = bounded(tcfg.events.max(1));
    let (init_tx, init_rx) = bounded::<Result<(), StackError>>(1);
    let max_chunk = tcfg.max_chunk.max(1);
    let thread = std::thread::Builder::new()
        .name(tcfg.name.clone())
        .spawn(move || {
            let engine = port_factory().map_err(StackError::from).and_then(|p| Engine::new(p, cfg));
            let engine = match engine {
                Ok(e) => {
                    let _ = init_tx.send(Ok(()));
                    e
                }
                Err(e) => {
                    let _ = init_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            Driver {
                engine,
                cmd: cmd_rx,
                ev: ev_tx,
                max_chunk,
                out: HashMap::new(),
                eof: HashSet::new(),
                held_events: VecDeque::new(),
                stalled: Vec::new(),
                ready: Vec::new(),
            }
            .run()
        })
        .map_err(|e| StackError::Port(format!("spawn: {e}")))?;
    match init_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => return Err(gone()),
    }
    Ok(EngineHandle { cmd: cmd_tx, events: ev_rx, thread: Arc::new(Mutex::new(Some(thread))) })
}

#[derive(Default)]
struct OutQ {
    bufs: VecDeque<Vec<u8>>,
    off: usize,
    close_after: bool,
}

struct Driver<P: Port> {
    engine: Engine<P>,
    cmd: Receiver<Command>,
    ev: Sender<AppEvent>,
    max_chunk: usize,
    out: HashMap<ConnId, OutQ>,
    eof: HashSet<ConnId>,
    held_events: VecDeque<AppEvent>,
    stalled: Vec<ConnId>,
    ready: Vec<ConnId>,
}

impl<P: Port> Driver<P> {
    fn run(mut self) -> Result<(), StackError> {
        loop {
            let mut worked = false;
            for _ in 0..256 {
                match self.cmd.try_recv() {
                    Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => return Ok(()),
                    Ok(c) => {
                        worked = true;
                        self.command(c);
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            worked |= self.engine.poll()?;
            worked |= self.deliver();
            worked |= self.write_out();
            if !worked {
                self.engine.idle();
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Listen { port, backlog, opts, reply } => {
                let opts = opts.unwrap_or(self.engine.config().default_tcp);
                let _ = reply.send(self.engine.listen_with(port, backlog, opts));
            }
            Command::Connect { remote, opts, reply } => {
                let opts = opts.unwrap_or(self.engine.config().default_tcp);
                let _ = reply.send(self.engine.connect_with(remote, opts));
            }
            Command::Send { conn, data } => {
                if !data.is_empty() {
                    self.out.entry(conn).or_default().bufs.push_back(data);
                }
            }
            Command::Close(conn) => {
                if self.out.get(&conn).is_some_and(|q| !q.bufs.is_empty()) {
                    self.out.get_mut(&conn).expect("checked").close_after = true;
                } else {
                    let _ = self.engine.close(conn);
                }
            }
            Command::Abort(conn) => {
                self.out.remove(&conn);
                let _ = self.engine.abort(conn);
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.engine.stats());
            }
            Command::Shutdown => unreachable!("handled by run"),
        }
    }

    fn emit(&mut self, e: AppEvent) -> bool {
        if !self.held_events.is_empty() {
            self.held_events.push_back(e);
            return false;
        }
        match self.ev.try_send(e) {
            Ok(()) => true,
            Err(TrySendError::Full(e) | TrySendError::Disconnected(e)) => {
                self.held_events.push_back(e);
                false
            }
        }
    }

    /// Forwards engine events and received data; returns whether anything moved.
    fn deliver(&mut self) -> bool {
        let mut moved = false;
        while let Some(e) = self.held_events.pop_front() {
            match self.ev.try_send(e) {
                Ok(()) => moved = true,
                Err(TrySendError::Full(e) | TrySendError::Disconnected(e)) => {
                    self.held_events.push_front(e);
                    return moved;
                }
            }
        }
        let evs: Vec<Event> = self.engine.events().collect();
        for e in evs {
            if let Event::Reset(c) | Event::TimedOut(c) | Event::Closed(c) = e {
                if let Some(q) = self.out.remove(&c) {
                    let bytes = q.bufs.iter().map(Vec::len).sum::<usize>() - q.off;
                    if bytes > 0 {
                        self.emit(AppEvent::SendFailed { conn: c, bytes });
                    }
                }
                self.eof.remove(&c);
            }
            moved |= self.emit(AppEvent::Conn(e));
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.append(&mut self.stalled);
        self.engine.drain_ready(&mut ready);
        ready.sort_unstable();
        ready.dedup();
        for (i, &c) in ready.iter().enumerate() {
            if !self.held_events.is_empty() || self.ev.is_full() {
                // no room: leave the data in the ring (TCP backpressure), retry later
                self.stalled.extend_from_slice(&ready[i..]);
                break;
            }
            let max_chunk = self.max_chunk;
            let r = self.engine.with_tcp(c, |s| {
                if s.can_recv() {
                    let n = s.recv_queue().min(max_chunk);
                    let mut v = vec![0u8; n];
                    let got = s.recv_slice(&mut v).unwrap_or(0);
                    v.truncate(got);
                    (Some(v), !s.can_recv(), false)
                } else {
                    (None, true, !s.may_recv())
                }
            });
            let Ok((data, drained, eof)) = r else { continue };
            if let Some(v) = data {
                if !v.is_empty() {
                    moved |= self.emit(AppEvent::Data { conn: c, data: v });
                }
            }
            if !drained {
                self.stalled.push(c);
            }
            if eof && self.eof.insert(c) {
                moved |= self.emit(AppEvent::Eof(c));
            }
        }
        ready.clear();
        self.ready = ready;
        moved
    }

    /// Moves queued outgoing bytes into tx rings; returns whether any moved.
    fn write_out(&mut self) -> bool {
        let mut moved = false;
        let mut finished = Vec::new();
        for (&conn, q) in self.out.iter_mut() {
            while let Some(front) = q.bufs.front() {
                let off = q.off;
                match self.engine.send(conn, &front[off..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        moved = true;
                        q.off += n;
                        if q.off == front.len() {
                            q.bufs.pop_front();
                            q.off = 0;
                        }
                    }
                    Err(StackError::InvalidState) => break, // not established yet
                    Err(_) => {
                        finished.push((conn, false));
                        break;
                    }
                }
            }
            if q.bufs.is_empty() {
                finished.push((conn, q.close_after));
            }
        }
        for (conn, close) in finished {
            if let Some(q) = self.out.remove(&conn) {
                let bytes = q.bufs.iter().map(Vec::len).sum::<usize>().saturating_sub(q.off);
                if bytes > 0 {
                    self.emit(AppEvent::SendFailed { conn, bytes });
                }
            }
            if close {
                let _ = self.engine.close(conn);
            }
        }
        moved
    }
}
