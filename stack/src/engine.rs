//! The engine: one smoltcp `Interface` over one `Port`, its TCP connections, and the poll
//! loop.
//!
//! ## Per-packet cost independent of the number of connections
//!
//! smoltcp's `Interface::poll` walks every socket of a `SocketSet` for each received
//! segment (to find the one that accepts it) and again for egress. The engine therefore
//! gives every TCP socket a `SocketSet` of its own (the limit case of sharding sets by a
//! hash of the 4-tuple) and does the demultiplexing itself:
//!
//! - ingress: the engine reads the 4-tuple from each frame ([`crate::FourTuple`]), finds
//!   the connection in a hash map and calls `Interface::poll_ingress_single` with that
//!   connection's one-socket set and a device that yields exactly that frame. SYNs for a
//!   listening port get a fresh socket (see [`Engine::listen`]); everything else (ARP, NDP,
//!   ICMP echo, segments for no connection, which smoltcp answers with RST) goes through
//!   an empty control set.
//! - egress: only connections with work are polled: those touched this step (a segment
//!   arrived, the application wrote or read) and those whose smoltcp timer
//!   (`Interface::poll_at`) is due, kept in a binary heap.
//!
//! So a poll costs O(frames + active connections × log(timers)), and idle connections cost
//! nothing. One exception, rare by construction: when an ARP or NDP frame arrives,
//! connections waiting on a timer are re-polled once, because one of them may have been
//! waiting for that neighbour (smoltcp rate-limits neighbour-less sockets per set).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use ukcm_nic::region::BudgetCharge;
use ukcm_nic::PinnedBudget;
use ukcm_nic::{
    DeviceStats, Frame, InPlaceRx, MemError, MirrorStorage, Port, PortDevice, PortError, PortStats, RingError,
    SyncResult,
};

use crate::autosize;
use crate::classify::{admit, Admission, Class, FourTuple};
use crate::clock::{Clock, SystemClock};
use crate::config::{Congestion, EngineConfig, IdleStep, TcpOptions};
use crate::cost::ConnCost;
use crate::drops::{DropCounts, DropNotes, DropReason};
use crate::neighbours::{learned_from, reply_frame, Neighbour, NeighbourShare, Ours};
use crate::rings::{self, MirrorRing, SwapRefused};
use crate::strays::StrayShare;

/// A connection of one engine (slot index + generation, so stale ids are detected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    idx: u32,
    gen: u32,
}

impl ConnId {
    /// A dense index, reused after the connection is gone (for per-connection tables).
    pub fn index(&self) -> usize {
        self.idx as usize
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}.{}", self.idx, self.gen)
    }
}

/// Why the engine turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The listener already had `backlog` connections in handshake or waiting for `accept`.
    Backlog,
    /// The pinned budget could not cover the connection's rings.
    Budget(MemError),
    /// Pinned memory for new rings could not be mapped.
    Memory(MemError),
}

/// A connection state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A connection to a listening port completed its handshake; `accept(port)` returns it.
    Accepted { conn: ConnId, port: u16 },
    /// An outgoing connection is established.
    Connected(ConnId),
    /// The connection ended after both sides closed (or after the application closed it).
    Closed(ConnId),
    /// The peer reset the connection (or refused the connect). Its slot is gone.
    Reset(ConnId),
    /// The connection timed out (retransmissions, user timeout or keep-alive). Its slot is gone.
    TimedOut(ConnId),
    /// An incoming connection was turned away (its SYN dropped, the peer will retry).
    Refused { port: u16, remote: IpEndpoint, reason: RefuseReason },
}

/// What went wrong in a call on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackError {
    /// The connection id is not (or no longer) valid.
    NoSuchConn(ConnId),
    /// The pinned budget cannot cover the rings.
    Budget(MemError),
    /// Pinned memory for rings could not be mapped.
    Memory(MemError),
    /// Something already listens on the port.
    PortInUse(u16),
    /// Nothing listens on the port.
    NotListening(u16),
    /// Every ephemeral port is in use towards that peer.
    NoEphemeralPort,
    /// No route or no source address for the peer, or a bad endpoint.
    Unaddressable,
    /// The connection is not in a state that allows the call.
    InvalidState,
    /// Bad configuration.
    Config(String),
    /// The port failed.
    Port(String),
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackError::NoSuchConn(c) => write!(f, "no such connection {c}"),
            StackError::Budget(e) => write!(f, "pinned budget: {e}"),
            StackError::Memory(e) => write!(f, "pinned memory: {e}"),
            StackError::PortInUse(p) => write!(f, "port {p} in use"),
            StackError::NotListening(p) => write!(f, "nothing listens on port {p}"),
            StackError::NoEphemeralPort => write!(f, "no free ephemeral port"),
            StackError::Unaddressable => write!(f, "unaddressable endpoint"),
            StackError::InvalidState => write!(f, "invalid connection state"),
            StackError::Config(s) => write!(f, "bad configuration: {s}"),
            StackError::Port(s) => write!(f, "port: {s}"),
        }
    }
}

impl std::error::Error for StackError {}

impl From<PortError> for StackError {
    fn from(e: PortError) -> Self {
        StackError::Port(e.to_string())
    }
}

/// Counters of one engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Polls.
    pub polls: u64,
    /// Frames received from the port.
    pub rx_frames: u64,
    /// Frames steered to a connection by 4-tuple.
    pub rx_steered: u64,
    /// Frames given to the control set (ARP, NDP, ICMP, unknown TCP).
    pub rx_control: u64,
    /// Connections accepted (handshake completed on a listener).
    pub accepted: u64,
    /// Outgoing connections established.
    pub connected: u64,
    /// Connections that ended gracefully.
    pub closed: u64,
    /// Connections reset by the peer.
    pub reset: u64,
    /// Connections that timed out.
    pub timed_out: u64,
    /// SYNs dropped because the listener's backlog was full.
    pub refused_backlog: u64,
    /// SYNs dropped for a bad TCP checksum (typically a veth peer with transmit checksum
    /// offload on: fix with `ethtool -K PEER tx off`); also counted in `drops`.
    pub rx_bad_checksum_syn: u64,
    /// Segments of another engine's outgoing connection handed to it (multi-queue; see
    /// [`crate::strays`]), taken in from other engines, and dropped because the owner's
    /// queue was full (TCP retransmits them) or its connection was gone.
    pub rx_handed_off: u64,
    pub rx_strays_taken: u64,
    pub rx_stray_dropped: u64,
    /// Frames dropped, by reason (see [`DropReason`]): the engine's own, and — refreshed by
    /// [`Engine::note_port_drops`] — the port's and the smoltcp adapter's.
    pub drops: DropCounts,
    /// SYNs dropped / connects refused because the pinned budget was exhausted.
    pub refused_budget: u64,
    /// SYNs dropped / connects refused because pinned memory could not be mapped.
    pub refused_memory: u64,
    /// Connections that asked for an in-place rx ring (`TcpOptions::inplace_rx`, the
    /// default) and got an ordinary one because the mirror mapping failed: they work, but a
    /// psock over them copies what it receives once more (counted in its `rx_copied_bytes`).
    pub inplace_fallbacks: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Connection slots with a socket now (listening handshakes included).
    pub sockets_in_use: u64,
    /// Ring bytes charged to the budget now.
    pub ring_bytes_in_use: u64,
    /// Bytes charged to the budget now for the connections' state outside the rings
    /// (`TcpOptions::state_bytes` each; see [`crate::cost`]).
    pub state_bytes_in_use: u64,
    /// Rx rings and tx rings grown (each one doubling; see [`crate::autosize`]).
    pub rx_ring_grows: u64,
    pub tx_ring_grows: u64,
    /// Growths skipped because the pinned budget could not cover the bigger ring (the
    /// connection kept its ring; its window stays what that ring takes) or because pinned
    /// memory could not be mapped.
    pub ring_grow_refused_budget: u64,
    pub ring_grow_refused_memory: u64,
    /// Rx and tx rings given back (shrunk to the starting ring) after a quiet spell.
    pub rx_ring_shrinks: u64,
    pub tx_ring_shrinks: u64,
    /// Bytes moved from an old ring into the bigger one (held, not yet lent or sent): the
    /// one copy a growth costs, counted.
    pub ring_grow_copied_bytes: u64,
    /// Connection egress polls.
    pub egress_polls: u64,
    /// Timer expiries handled.
    pub timer_fires: u64,
    /// Entries in the timer heap now (live and superseded).
    pub timer_entries: u64,
    /// Idle sleeps ([`Engine::wait_for_frames`]), and how many of them the port's wakeup
    /// descriptor (a frame arrived) or the caller's doorbell ended rather than the clock.
    pub idle_sleeps: u64,
    pub idle_port_wakeups: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Passive { port: u16 },
    Active,
}

struct Live {
    handle: SocketHandle,
    /// The budget's charge for the connection's state outside the rings (a fixed figure).
    state_charge: BudgetCharge,
    /// The budget's charge for the rx ring and the tx ring as they are now.
    rx_charge: BudgetCharge,
    tx_charge: BudgetCharge,
    /// Largest rings the connection may grow to (bytes).
    rx_max: usize,
    tx_max: usize,
    /// The rx ring came under pressure since it last grew (see `crate::autosize`).
    rx_pressure: bool,
    /// The rings the connection started with (they shrink back to them when idle).
    rx_start: usize,
    tx_start: usize,
    /// A shrink check of each ring is scheduled (`Engine::shrink_checks`).
    rx_shrink_armed: bool,
    tx_shrink_armed: bool,
    /// A segment arrived since the last rx shrink check (the ring is not idle).
    rx_recent: bool,
    /// The rx ring is due to shrink but is lent in place: `inplace_sync` shrinks it once
    /// no view is alive.
    rx_shrink_due: bool,
    tuple: Option<FourTuple>,
    role: Role,
    state: tcp::State,
    /// Handshake finished and reported (Accepted / Connected).
    open: bool,
    /// In a listener's accept queue.
    queued: bool,
    user_closed: bool,
    rst_seen: bool,
    fin_seen: bool,
    dirty: bool,
    ready: bool,
    timer_at: Option<Instant>,
    timer_seq: u64,
    dead: bool,
    /// Mirror-mapped rx storage, for connections opened with `TcpOptions::inplace_rx`.
    storage: Option<MirrorStorage>,
    /// An `InPlaceRx` was handed out: from now on only `inplace_sync` dequeues.
    lending: bool,
}

struct Slot {
    gen: u32,
    set: SocketSet<'static>,
    live: Option<Live>,
}

#[derive(Debug)]
struct Listener {
    backlog: usize,
    opts: TcpOptions,
    handshaking: usize,
    accept_q: VecDeque<ConnId>,
}

/// Facts about one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// smoltcp's TCP state.
    pub state: tcp::State,
    /// Our endpoint.
    pub local: Option<IpEndpoint>,
    /// The peer's endpoint.
    pub remote: Option<IpEndpoint>,
    /// Bytes waiting to be read.
    pub recv_queue: usize,
    /// Bytes waiting to be sent or acknowledged.
    pub send_queue: usize,
    /// Receive ring size now.
    pub recv_capacity: usize,
    /// Transmit ring size now.
    pub send_capacity: usize,
    /// Largest receive ring the connection may grow to: the largest message it can hold.
    pub recv_capacity_max: usize,
    /// Largest transmit ring the connection may grow to.
    pub send_capacity_max: usize,
}

/// A device that yields at most one given frame, and transmits through the port device.
struct Feed<'d, P: Port> {
    dev: &'d mut PortDevice<P>,
    frame: Option<OwnedRx>,
    mtu: usize,
}

/// A received frame, or one made here (a neighbour another queue's engine learned).
enum OwnedRx {
    Frame(Frame),
    Made(Vec<u8>),
}

impl phy::RxToken for OwnedRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match &self {
            OwnedRx::Frame(fr) => f(fr.data()),
            OwnedRx::Made(v) => f(v),
        }
    }
}

impl<P: Port> Device for Feed<'_, P> {
    type RxToken<'a>
        = OwnedRx
    where
        Self: 'a;
    type TxToken<'a>
        = <PortDevice<P> as Device>::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, ts: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.frame.as_ref()?;
        // Take a tx token first: without one the frame stays with us for a later poll.
        let tx = self.dev.transmit(ts)?;
        let f = self.frame.take()?;
        Some((f, tx))
    }

    fn transmit(&mut self, ts: Instant) -> Option<Self::TxToken<'_>> {
        self.dev.transmit(ts)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = self.dev.capabilities();
        c.max_transmission_unit = self.mtu + 14;
        // Received checksums were verified by `admit` (or by the port): smoltcp would only
        // repeat the work, and drop silently what `admit` counts.
        let cs = &mut c.checksum;
        for k in [&mut cs.ipv4, &mut cs.tcp, &mut cs.udp, &mut cs.icmpv4, &mut cs.icmpv6] {
            *k = if k.tx() { phy::Checksum::Tx } else { phy::Checksum::None };
        }
        c
    }
}

/// One engine: a port, a smoltcp interface and its TCP connections. Not `Sync`; one per
/// thread and NIC queue.
pub struct Engine<P: Port> {
    dev: PortDevice<P>,
    iface: Interface,
    control: SocketSet<'static>,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    /// Keyed by what peers choose (addresses, ports): a hasher seeded per process, so the
    /// buckets cannot be aimed at, and fast enough for a lookup per frame.
    by_tuple: HashMap<FourTuple, u32, foldhash::quality::RandomState>,
    listeners: HashMap<u16, Listener>,
    clock: Box<dyn Clock>,
    cfg: EngineConfig,
    mtu: usize,
    rx_buf: Vec<Frame>,
    /// Whether the last poll's rx burst came back full (more frames may be waiting).
    rx_burst_full: bool,
    rx_retry: VecDeque<Frame>,
    dirty: Vec<u32>,
    dirty_scratch: Vec<u32>,
    timers: BinaryHeap<Reverse<(Instant, u32, u64)>>,
    /// When connections whose tx ring grew are checked for idleness: (at, slot, generation).
    shrink_checks: BinaryHeap<Reverse<(Instant, u32, u32, Side)>>,
    timer_seq: u64,
    ready: Vec<ConnId>,
    events: VecDeque<Event>,
    stats: EngineStats,
    next_ephemeral: u16,
    neighbor_changed: bool,
    /// Neighbours shared with the engines of the other queues: (share, our index, seen).
    neighbours: Option<(Arc<NeighbourShare>, usize, u64)>,
    neighbour_news: Vec<Neighbour>,
    /// Segments handed between the engines of the other queues: (share, our index).
    strays: Option<(Arc<StrayShare>, usize)>,
    idle_polls: u32,
    burst: usize,
    live_slots: u64,
    /// What `admit` checks on ingress.
    admission: Admission,
    /// Which drop reasons the log has explained already.
    drop_notes: Arc<DropNotes>,
    /// The port's name, for log lines.
    port_name: String,
}

impl<P: Port> fmt::Debug for Engine<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("port", &self.dev.port().caps().name)
            .field("mtu", &self.mtu)
            .field("listeners", &self.listeners.keys().collect::<Vec<_>>())
            .field("stats", &self.stats)
            .finish()
    }
}

fn tsval() -> u32 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let e = EPOCH.get_or_init(std::time::Instant::now);
    (e.elapsed().as_millis() as u32).wrapping_add(1)
}

/// A ring-pool failure as the memory error a refusal reports.
fn ring_mem_error(e: RingError) -> MemError {
    match e {
        RingError::Budget(m) => m,
        RingError::Sys(_, errno) => MemError::Mmap(errno),
        RingError::BadCapacity(_) | RingError::NotThatMuch { .. } | RingError::TooManyViews(_) => MemError::ZeroSize,
    }
}

fn apply_options(s: &mut tcp::Socket<'static>, o: &TcpOptions) {
    s.set_nagle_enabled(o.nagle);
    s.set_ack_delay(o.ack_delay);
    s.set_congestion_control(match o.congestion {
        Congestion::None => tcp::CongestionControl::None,
        Congestion::Reno => tcp::CongestionControl::Reno,
        Congestion::Cubic => tcp::CongestionControl::Cubic,
    });
    s.set_keep_alive(o.keep_alive);
    s.set_timeout(o.user_timeout);
    s.set_tsval_generator(if o.timestamps { Some(tsval) } else { None });
}

fn seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ N.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ u64::from(std::process::id())
}

impl<P: Port> Engine<P> {
    /// An engine on `port` with the real clock.
    pub fn new(port: P, cfg: EngineConfig) -> Result<Self, StackError> {
        Self::with_clock(port, cfg, Box::new(SystemClock::new()))
    }

    /// An engine on `port` whose time comes from `clock`.
    pub fn with_clock(port: P, cfg: EngineConfig, clock: Box<dyn Clock>) -> Result<Self, StackError> {
        let caps = port.caps();
        let mac = cfg.mac.or(caps.mac).ok_or_else(|| StackError::Config("no MAC: the port has none".into()))?;
        let mtu = cfg.mtu.unwrap_or(caps.mtu).min(caps.mtu);
        if mtu < 576 {
            return Err(StackError::Config(format!("MTU {mtu} below 576")));
        }
        if cfg.ipv4.is_none() && cfg.ipv6.is_none() {
            return Err(StackError::Config("no IP address".into()));
        }
        if cfg.ephemeral_ports.0 == 0 || cfg.ephemeral_ports.0 > cfg.ephemeral_ports.1 {
            return Err(StackError::Config("bad ephemeral port range".into()));
        }
        let mut dev = PortDevice::new(port);
        // The port verifies received checksums itself, or `admit` must.
        let admission = Admission { mac: EthernetAddress(mac), checksums: dev.capabilities().checksum.tcp.rx() };
        let mut ic = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        ic.random_seed = cfg.random_seed.unwrap_or_else(seed);
        let now = clock.now();
        let mut iface = Interface::new(ic, &mut Feed { dev: &mut dev, frame: None, mtu }, now);
        iface.update_ip_addrs(|a| {
            if let Some(v4) = cfg.ipv4 {
                let _ = a.push(IpCidr::Ipv4(v4));
            }
            if let Some(v6) = cfg.ipv6 {
                let _ = a.push(IpCidr::Ipv6(v6));
            }
        });
        if let Some(gw) = cfg.gateway_v4 {
            iface.routes_mut().add_default_ipv4_route(gw).map_err(|_| StackError::Config("route table full".into()))?;
        }
        if let Some(gw) = cfg.gateway_v6 {
            iface.routes_mut().add_default_ipv6_route(gw).map_err(|_| StackError::Config("route table full".into()))?;
        }
        let burst = cfg.max_frames_per_poll.max(1);
        let next_ephemeral =
            cfg.ephemeral_ports.0 + (seed() % (u64::from(cfg.ephemeral_ports.1 - cfg.ephemeral_ports.0) + 1)) as u16;
        Ok(Engine {
            dev,
            iface,
            control: SocketSet::new(Vec::new()),
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_tuple: HashMap::default(),
            listeners: HashMap::new(),
            clock,
            mtu,
            rx_buf: Vec::with_capacity(burst),
            rx_burst_full: false,
            rx_retry: VecDeque::new(),
            dirty: Vec::new(),
            dirty_scratch: Vec::new(),
            timers: BinaryHeap::new(),
            shrink_checks: BinaryHeap::new(),
            timer_seq: 0,
            ready: Vec::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
            next_ephemeral,
            neighbor_changed: false,
            neighbours: None,
            neighbour_news: Vec::new(),
            strays: None,
            idle_polls: 0,
            burst: caps.max_burst.max(1),
            live_slots: 0,
            admission,
            drop_notes: DropNotes::process(),
            port_name: caps.name,
            cfg,
        })
    }

    // ---------------------------------------------------------------- accessors

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
    /// The IP MTU in use.
    pub fn mtu(&self) -> usize {
        self.mtu
    }
    /// The current time of the engine's clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }
    /// The port.
    pub fn port(&self) -> &P {
        self.dev.port()
    }
    /// The port, mutably.
    pub fn port_mut(&mut self) -> &mut P {
        self.dev.port_mut()
    }
    /// Port counters.
    pub fn port_stats(&self) -> PortStats {
        self.dev.port().stats()
    }
    /// smoltcp device adapter counters.
    pub fn device_stats(&self) -> DeviceStats {
        self.dev.stats()
    }
    /// Copies the port's and the smoltcp adapter's drop counters into the engine's
    /// `drops` and explains any reason seen for the first time (one log line per reason).
    /// Reading a port's counters can cost a system call (AF_XDP), so this is not done per
    /// poll: call it when showing stats (the `ukcm` server does every second).
    pub fn note_port_drops(&mut self) -> DropCounts {
        let p = self.dev.port().stats();
        let d = self.dev.stats();
        for (r, n) in [
            (DropReason::PortNoBuffer, p.rx_no_buffer),
            (DropReason::PortRingFull, p.rx_ring_full),
            (DropReason::PortInvalid, p.rx_invalid),
            (DropReason::TxNoFrame, d.tx_dropped),
            (DropReason::TxNeighbourMiss, d.tx_neighbour_misses),
        ] {
            self.stats.drops.set(r, n);
            if n > 0 {
                self.drop_notes.note(r, &self.port_name, n);
            }
        }
        self.stats.drops
    }

    /// Uses `notes` instead of the process-wide [`DropNotes`] (tests that check the log).
    pub fn set_drop_notes(&mut self, notes: Arc<DropNotes>) {
        self.drop_notes = notes;
    }

    /// Whether the last [`Engine::poll`] took a full burst of frames from the port, so more
    /// may be waiting: a caller whose rounds do other work between polls (a mux over many
    /// connections) polls again first, or the port's rx ring overflows while it works.
    pub fn rx_burst_was_full(&self) -> bool {
        self.rx_burst_full
    }

    /// Engine counters.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats;
        s.sockets_in_use = self.live_slots;
        s.timer_entries = self.timers.len() as u64;
        s
    }
    /// The smoltcp interface (addresses, routes, neighbour cache).
    pub fn iface_mut(&mut self) -> &mut Interface {
        &mut self.iface
    }
    /// Connections currently open or opening (slots holding a socket).
    pub fn connection_count(&self) -> usize {
        self.by_tuple.len()
    }

    // ---------------------------------------------------------------- events

    /// The next connection event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Takes every queued event.
    pub fn events(&mut self) -> std::collections::vec_deque::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// Connections that had activity (data, room, state change) since the last call, each
    /// once. Only these need looking at: the engine never makes the application scan.
    pub fn drain_ready(&mut self, out: &mut Vec<ConnId>) {
        for c in self.ready.drain(..) {
            if let Some(l) = self.slots.get_mut(c.idx as usize).filter(|s| s.gen == c.gen).and_then(|s| s.live.as_mut())
            {
                l.ready = false;
                out.push(c);
            }
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= self.cfg.event_capacity {
            self.stats.events_dropped += 1;
            tracing::warn!(?e, "engine event queue full, event dropped");
            return;
        }
        self.events.push_back(e);
    }

    // ---------------------------------------------------------------- TCP API

    /// Listens on `port` (every local address) for up to `backlog` connections in
    /// handshake or waiting for [`Engine::accept`] at once, with the engine's default options.
    pub fn listen(&mut self, port: u16, backlog: usize) -> Result<(), StackError> {
        self.listen_with(port, backlog, self.cfg.default_tcp)
    }

    /// Like [`Engine::listen`], with the options (ring sizes, …) accepted connections get.
    ///
    /// Sockets are made when SYNs arrive, so a listener holds no ring memory while idle;
    /// up to `backlog` handshakes proceed concurrently; beyond that SYNs are dropped
    /// (the peer retransmits) and counted, as Linux does when its queues are full.
    pub fn listen_with(&mut self, port: u16, backlog: usize, opts: TcpOptions) -> Result<(), StackError> {
        if port == 0 || backlog == 0 {
            return Err(StackError::Config("listen needs a port and a backlog above zero".into()));
        }
        if self.listeners.contains_key(&port) {
            return Err(StackError::PortInUse(port));
        }
        self.listeners.insert(port, Listener { backlog, opts, handshaking: 0, accept_q: VecDeque::new() });
        Ok(())
    }

    /// Stops listening on `port`; connections not yet accepted are aborted.
    pub fn unlisten(&mut self, port: u16) -> Result<(), StackError> {
        let l = self.listeners.remove(&port).ok_or(StackError::NotListening(port))?;
        for c in l.accept_q {
            let _ = self.abort(c);
        }
        let pending: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live.as_ref().is_some_and(|l| l.role == Role::Passive { port } && !l.open))
            .map(|(i, _)| i as u32)
            .collect();
        for i in pending {
            let id = ConnId { idx: i, gen: self.slots[i as usize].gen };
            let _ = self.abort(id);
        }
        Ok(())
    }

    /// The next established connection on `port`, if any.
    pub fn accept(&mut self, port: u16) -> Option<ConnId> {
        let l = self.listeners.get_mut(&port)?;
        let c = l.accept_q.pop_front()?;
        if let Some(live) = self.slots[c.idx as usize].live.as_mut() {
            live.queued = false;
        }
        Some(c)
    }

    /// Opens a connection to `remote` with the engine's default options.
    pub fn connect(&mut self, remote: IpEndpoint) -> Result<ConnId, StackError> {
        self.connect_with(remote, self.cfg.default_tcp)
    }

    /// Opens a connection to `remote` from an ephemeral port; [`Event::Connected`] follows
    /// (or `Reset` / `TimedOut`). Neighbour resolution (ARP/NDP) is smoltcp's.
    pub fn connect_with(&mut self, remote: IpEndpoint, opts: TcpOptions) -> Result<ConnId, StackError> {
        if remote.port == 0 || remote.addr.is_unspecified() {
            return Err(StackError::Unaddressable);
        }
        let local_addr = self.iface.get_source_address(&remote.addr).ok_or(StackError::Unaddressable)?;
        let (lo, hi) = self.cfg.ephemeral_ports;
        let span = u32::from(hi - lo) + 1;
        let mut key = None;
        for _ in 0..span {
            let p = self.next_ephemeral;
            self.next_ephemeral = if p >= hi { lo } else { p + 1 };
            // In a group of engines, only our share of the ports (see crate::strays).
            if self.strays.as_ref().is_some_and(|(share, me)| share.owner(p) != *me) {
                continue;
            }
            let k = FourTuple { local: IpEndpoint::new(local_addr, p), remote };
            if !self.listeners.contains_key(&p) && !self.by_tuple.contains_key(&k) {
                key = Some(k);
                break;
            }
        }
        let key = key.ok_or(StackError::NoEphemeralPort)?;
        let idx = self.new_slot(&opts).map_err(|e| match e {
            RefuseReason::Budget(m) => {
                self.stats.refused_budget += 1;
                StackError::Budget(m)
            }
            RefuseReason::Memory(m) => {
                self.stats.refused_memory += 1;
                StackError::Memory(m)
            }
            RefuseReason::Backlog => StackError::InvalidState,
        })?;
        let slot = &mut self.slots[idx as usize];
        let live = slot.live.as_mut().expect("new slot is live");
        let cx = self.iface.context();
        let r = slot.set.get_mut::<tcp::Socket<'static>>(live.handle).connect(
            cx,
            remote,
            IpListenEndpoint { addr: Some(local_addr), port: key.local.port },
        );
        if r.is_err() {
            self.release_slot(idx);
            return Err(StackError::Unaddressable);
        }
        live.tuple = Some(key);
        live.role = Role::Active;
        live.state = tcp::State::SynSent;
        self.by_tuple.insert(key, idx);
        self.mark_dirty(idx);
        Ok(ConnId { idx, gen: self.slots[idx as usize].gen })
    }

    /// Closes our sending half (FIN after queued data); the slot is recycled when TCP is
    /// done with it ([`Event::Closed`]).
    pub fn close(&mut self, conn: ConnId) -> Result<(), StackError> {
        let (set, live) = self.live_mut(conn)?;
        set.get_mut::<tcp::Socket<'static>>(live.handle).close();
        live.user_closed = true;
        self.mark_dirty(conn.idx);
        Ok(())
    }

    /// Resets the connection (RST) and recycles its slot.
    pub fn abort(&mut self, conn: ConnId) -> Result<(), StackError> {
        let (set, live) = self.live_mut(conn)?;
        set.get_mut::<tcp::Socket<'static>>(live.handle).abort();
        live.user_closed = true;
        self.mark_dirty(conn.idx);
        Ok(())
    }

    /// Runs `f` on the connection's smoltcp socket: in-place access to its pinned rings
    /// (`peek`, `recv(|b| …)`, `send_capacity`, `send(|buf| …)`), for zero-copy users.
    /// The connection is polled for egress afterwards (new data, window updates).
    ///
    /// Refused (`InvalidState`) for a connection whose receive ring is being lent out in
    /// place ([`Engine::take_inplace_rx`]): dequeuing behind the lender's back could
    /// overwrite bytes an application is reading.
    pub fn with_tcp<R>(
        &mut self,
        conn: ConnId,
        f: impl FnOnce(&mut tcp::Socket<'static>) -> R,
    ) -> Result<R, StackError> {
        if self.live_mut(conn)?.1.lending {
            return Err(StackError::InvalidState);
        }
        self.with_socket(conn, f)
    }

    fn with_socket<R>(
        &mut self,
        conn: ConnId,
        f: impl FnOnce(&mut tcp::Socket<'static>) -> R,
    ) -> Result<R, StackError> {
        let (set, live) = self.live_mut(conn)?;
        let r = f(set.get_mut::<tcp::Socket<'static>>(live.handle));
        self.mark_dirty(conn.idx);
        Ok(r)
    }

    /// Copies as much of `data` into the tx ring as fits; returns the bytes taken. A full
    /// ring below the connection's maximum doubles first (see [`crate::autosize`]).
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, StackError> {
        self.send_vectored(conn, &[data])
    }

    /// Copies as much of the concatenation of `bufs` into the tx ring as fits, in one visit
    /// of the connection (one lookup, one egress mark, at most two ring regions per ring
    /// size); returns the bytes taken. For a caller with many small messages for one
    /// connection. A full ring below the connection's maximum doubles, and the rest is
    /// written into the bigger ring.
    pub fn send_vectored(&mut self, conn: ConnId, bufs: &[&[u8]]) -> Result<usize, StackError> {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        let mut total = 0;
        loop {
            total += self
                .with_socket(conn, |s| write_bufs(s, bufs, total))?
                .map_err(|_: tcp::SendError| StackError::InvalidState)?;
            if total == want || !self.grow_tx(conn) {
                return Ok(total);
            }
        }
    }

    /// The free space at the end of the connection's tx ring, contiguous, for a message
    /// built in place: nothing is queued until [`Engine::send_commit`] says how much of it
    /// was written, so smoltcp's frame serialisation is the only copy of those bytes. The
    /// ring does not grow here (a caller whose message does not fit writes it with
    /// [`Engine::send`], which grows it); empty when the ring is full.
    pub fn send_space(&mut self, conn: ConnId) -> Result<&mut [u8], StackError> {
        let (set, live) = self.live_mut(conn)?;
        let s = set.get_mut::<tcp::Socket<'static>>(live.handle);
        // Enqueues nothing: hands out the window that a later `send` of n bytes fills.
        s.send(|free| (0, free)).map_err(|_| StackError::InvalidState)
    }

    /// Queues the first `len` bytes of the space [`Engine::send_space`] gave, as written
    /// there. Refused (`InvalidState`) if more than that space.
    pub fn send_commit(&mut self, conn: ConnId, len: usize) -> Result<(), StackError> {
        let queued = self.with_socket(conn, |s| {
            // The same window as `send_space` gave: nothing ran on the socket in between
            // (the caller held the engine), and an empty ring restarts at 0 both times.
            s.send(|free| if len <= free.len() { (len, true) } else { (0, false) })
        })?;
        match queued {
            Ok(true) => Ok(()),
            _ => Err(StackError::InvalidState),
        }
    }

    /// Starts lending the connection's received bytes in place (zero-copy receive): the
    /// connection must have been opened with `TcpOptions::inplace_rx`. Afterwards `recv`
    /// and `with_tcp` are refused for it, and [`Engine::inplace_sync`] is the only way its
    /// receive ring is dequeued. `max_views` bounds the messages lent at once.
    #[allow(unsafe_code)]
    pub fn take_inplace_rx(&mut self, conn: ConnId, max_views: usize) -> Result<InPlaceRx, StackError> {
        let (_, live) = self.live_mut(conn)?;
        if live.lending {
            return Err(StackError::InvalidState);
        }
        let storage = live.storage.as_mut().ok_or(StackError::InvalidState)?;
        // SAFETY: `storage` is this connection's socket's rx ring (set up together in
        // `rings::take_inplace`). Setting `lending` below makes `with_tcp` and `recv` refuse
        // this connection, so from now on only `inplace_sync` dequeues from it; when the
        // connection ends, the socket goes to the ring pool's quarantine and is reused only
        // once no view of its storage is alive (`rings::give_inplace`).
        let rx = unsafe { InPlaceRx::new(storage, max_views) }.map_err(|_| StackError::InvalidState)?;
        live.lending = true;
        Ok(rx)
    }

    /// Releases what the application has dropped (reopening the window) and records what
    /// has arrived, for a connection lent with [`Engine::take_inplace_rx`].
    ///
    /// This is also where a lent ring grows (see [`crate::autosize`]): when it came under
    /// pressure and no view of it is alive, its bytes move to a ring twice the size.
    pub fn inplace_sync(&mut self, conn: ConnId, rx: &mut InPlaceRx) -> Result<SyncResult, StackError> {
        let slot =
            self.slots.get_mut(conn.idx as usize).filter(|s| s.gen == conn.gen).ok_or(StackError::NoSuchConn(conn))?;
        let live = slot.live.as_mut().filter(|l| !l.dead).ok_or(StackError::NoSuchConn(conn))?;
        if !live.lending {
            return Err(StackError::InvalidState);
        }
        let sock = slot.set.get_mut::<tcp::Socket<'static>>(live.handle);
        let r = rx.sync(sock).map_err(|_| StackError::InvalidState)?;
        let grew = live.rx_pressure
            && rx.views_outstanding() == 0
            && grow_rx(live, sock, Some(rx), &self.cfg.budget, &mut self.stats);
        // A shrink found due while the ring was lent, now that nothing is.
        let shrunk = !grew
            && live.rx_shrink_due
            && !live.rx_recent
            && sock.recv_queue() == 0
            && rx.can_move()
            && shrink_rx(live, sock, Some(rx), &self.cfg.budget, &mut self.stats);
        if r.freed > 0 || grew || shrunk {
            self.mark_dirty(conn.idx); // window update
        }
        if grew {
            self.arm_rx_shrink(conn.idx);
        }
        Ok(r)
    }

    /// Copies received bytes out of the rx ring; `Ok(0)` when none are there yet, `Err`
    /// with `InvalidState` once the peer has closed and everything was read.
    pub fn recv(&mut self, conn: ConnId, out: &mut [u8]) -> Result<usize, StackError> {
        self.with_tcp(conn, |s| s.recv_slice(out))?.map_err(|_| StackError::InvalidState)
    }

    /// State and queue sizes of a connection.
    pub fn info(&self, conn: ConnId) -> Result<ConnInfo, StackError> {
        let slot =
            self.slots.get(conn.idx as usize).filter(|s| s.gen == conn.gen).ok_or(StackError::NoSuchConn(conn))?;
        let live = slot.live.as_ref().filter(|l| !l.dead).ok_or(StackError::NoSuchConn(conn))?;
        let s = slot.set.get::<tcp::Socket<'static>>(live.handle);
        Ok(ConnInfo {
            state: s.state(),
            local: s.local_endpoint(),
            remote: s.remote_endpoint(),
            recv_queue: s.recv_queue(),
            send_queue: s.send_queue(),
            recv_capacity: s.recv_capacity(),
            send_capacity: s.send_capacity(),
            recv_capacity_max: live.rx_max,
            send_capacity_max: live.tx_max,
        })
    }

    fn live_mut(&mut self, conn: ConnId) -> Result<(&mut SocketSet<'static>, &mut Live), StackError> {
        let slot =
            self.slots.get_mut(conn.idx as usize).filter(|s| s.gen == conn.gen).ok_or(StackError::NoSuchConn(conn))?;
        match slot.live.as_mut() {
            Some(l) if !l.dead => Ok((&mut slot.set, l)),
            _ => Err(StackError::NoSuchConn(conn)),
        }
    }

    // ---------------------------------------------------------------- slots

    /// A connection's first rx ring: mirror-mapped when it is to be lent in place, else (or
    /// when the mirror mapping is refused, e.g. the process's map count is used up: counted
    /// and logged once, and the connection's messages are then copied once more) plain.
    fn take_rx_ring(
        &mut self,
        bytes: usize,
        inplace: bool,
    ) -> Result<(tcp::SocketBuffer<'static>, Option<MirrorStorage>), MemError> {
        if inplace {
            match rings::take_mirror(bytes) {
                Ok(r) => return Ok((r.buf, Some(r.storage))),
                Err(RingError::Sys(call, errno)) => {
                    self.stats.inplace_fallbacks += 1;
                    if self.stats.inplace_fallbacks == 1 {
                        tracing::warn!(
                            "{}: no in-place rx ring ({call} failed, errno {errno}): connections fall back to ordinary rings, and their received messages are copied once more (inplace_fallbacks, rx_copied_bytes){}",
                            self.port_name,
                            if errno == ENOMEM {
                                "; each in-place ring takes two memory mappings, so the process's map count (vm.max_map_count, 65530 by default) caps them near 30,000: raise it with `sysctl -w vm.max_map_count=262144`"
                            } else {
                                ""
                            }
                        );
                    }
                }
                Err(e) => return Err(ring_mem_error(e)),
            }
        }
        Ok((rings::take_plain(bytes)?, None))
    }

    fn new_slot(&mut self, opts: &TcpOptions) -> Result<u32, RefuseReason> {
        let floor = if opts.inplace_rx { rings::MIN_MIRROR_RING } else { rings::MIN_RING };
        let sizes = |start: usize, max: usize| {
            let max = rings::ring_size(max.max(floor));
            let start = if start == 0 { max } else { rings::ring_size(start.max(floor)).min(max) };
            (start, max)
        };
        let (rx_start, rx_max) = sizes(opts.rx_start, opts.rx_buf);
        let (tx_start, tx_max) = sizes(opts.tx_start, opts.tx_buf);
        let state_charge = self.cfg.budget.reserve(opts.state_bytes as u64).map_err(RefuseReason::Budget)?;
        let rx_charge = self.cfg.budget.reserve(rx_start as u64).map_err(RefuseReason::Budget)?;
        let tx_charge = self.cfg.budget.reserve(tx_start as u64).map_err(RefuseReason::Budget)?;
        let tx = rings::take_plain(tx_start).map_err(RefuseReason::Memory)?;
        let (rx, storage) = match self.take_rx_ring(rx_start, opts.inplace_rx) {
            Ok(r) => r,
            Err(e) => {
                rings::give_plain(tx);
                return Err(RefuseReason::Memory(e));
            }
        };
        let mut sock = tcp::Socket::new(rx, tx);
        // The window scale offered at SYN time is the maximum ring's (vendored smoltcp patch).
        sock.set_recv_capacity_max(rx_max);
        apply_options(&mut sock, opts);
        let idx = match self.free_slots.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { gen: 0, set: SocketSet::new(Vec::with_capacity(1)), live: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        let handle = slot.set.add(sock);
        self.live_slots += 1;
        self.stats.ring_bytes_in_use += rx_charge.bytes() + tx_charge.bytes();
        self.stats.state_bytes_in_use += state_charge.bytes();
        slot.live = Some(Live {
            handle,
            state_charge,
            rx_charge,
            tx_charge,
            rx_max,
            tx_max,
            rx_pressure: false,
            rx_start,
            tx_start,
            rx_shrink_armed: false,
            tx_shrink_armed: false,
            rx_recent: false,
            rx_shrink_due: false,
            tuple: None,
            role: Role::Active,
            state: tcp::State::Closed,
            open: false,
            queued: false,
            user_closed: false,
            rst_seen: false,
            fin_seen: false,
            dirty: false,
            ready: false,
            timer_at: None,
            timer_seq: 0,
            dead: false,
            storage,
            lending: false,
        });
        Ok(idx)
    }

    /// Doubles the tx ring of `conn` if it is full and below its maximum; false when it
    /// did not grow (room left, at the maximum, budget or memory refused: counted).
    fn grow_tx(&mut self, conn: ConnId) -> bool {
        let Some(slot) = self.slots.get_mut(conn.idx as usize).filter(|s| s.gen == conn.gen) else { return false };
        let Some(live) = slot.live.as_mut().filter(|l| !l.dead) else { return false };
        let sock = slot.set.get_mut::<tcp::Socket<'static>>(live.handle);
        let (cap, queued) = (sock.send_capacity(), sock.send_queue());
        let Some(next) = autosize::next_size(cap, live.tx_max).filter(|_| queued == cap) else { return false };
        let Ok(charge) = self.cfg.budget.reserve(next as u64) else {
            self.stats.ring_grow_refused_budget += 1;
            return false;
        };
        match rings::swap_plain(next, |b| sock.replace_send_buffer(b)) {
            Ok(()) => {}
            Err(SwapRefused::Memory) => {
                self.stats.ring_grow_refused_memory += 1;
                return false;
            }
            Err(SwapRefused::Socket) => return false,
        }
        self.stats.ring_bytes_in_use = self.stats.ring_bytes_in_use + charge.bytes() - live.tx_charge.bytes();
        live.tx_charge = charge;
        self.stats.tx_ring_grows += 1;
        self.stats.ring_grow_copied_bytes += queued as u64;
        if !live.tx_shrink_armed {
            live.tx_shrink_armed = true;
            let at = self.clock.now() + autosize::SHRINK_AFTER;
            self.shrink_checks.push(Reverse((at, conn.idx, conn.gen, Side::Tx)));
        }
        true
    }

    /// Schedules an rx shrink check of slot `idx` after its ring grew (once).
    fn arm_rx_shrink(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if let Some(live) = slot.live.as_mut().filter(|l| !l.rx_shrink_armed) {
            live.rx_shrink_armed = true;
            live.rx_recent = false;
            let at = self.clock.now() + autosize::SHRINK_AFTER;
            self.shrink_checks.push(Reverse((at, idx, slot.gen, Side::Rx)));
        }
    }

    /// A scheduled check of an rx ring that grew: back to the starting ring if nothing
    /// arrived since the last check and nothing is queued, else checked again later. A
    /// ring lent in place is only marked due, and shrinks in `inplace_sync` once no view is
    /// alive (the connection is reported ready so the mux comes by). See
    /// [`crate::autosize`].
    fn check_rx_shrink(&mut self, idx: u32, gen: u32, now: Instant) {
        let Some(slot) = self.slots.get_mut(idx as usize).filter(|s| s.gen == gen) else { return };
        let Some(live) = slot.live.as_mut().filter(|l| !l.dead) else { return };
        live.rx_shrink_armed = false;
        let sock = slot.set.get_mut::<tcp::Socket<'static>>(live.handle);
        if sock.recv_capacity() <= live.rx_start {
            return;
        }
        let quiet = !std::mem::take(&mut live.rx_recent) && sock.recv_queue() == 0;
        if quiet && !live.lending && shrink_rx(live, sock, None, &self.cfg.budget, &mut self.stats) {
            self.mark_dirty(idx); // the ACK that tells the peer
            return;
        }
        live.rx_shrink_due = quiet && live.lending;
        live.rx_shrink_armed = true;
        let due = live.rx_shrink_due;
        self.shrink_checks.push(Reverse((now + autosize::SHRINK_AFTER, idx, gen, Side::Rx)));
        if due {
            self.mark_ready(idx);
        }
    }

    /// A scheduled check of a tx ring that grew: back to the starting ring if nothing is
    /// queued (sent and acknowledged), else checked again later (see [`crate::autosize`]).
    fn check_tx_shrink(&mut self, idx: u32, gen: u32, now: Instant) {
        let Some(slot) = self.slots.get_mut(idx as usize).filter(|s| s.gen == gen) else { return };
        let Some(live) = slot.live.as_mut().filter(|l| !l.dead) else { return };
        live.tx_shrink_armed = false;
        let sock = slot.set.get_mut::<tcp::Socket<'static>>(live.handle);
        let cap = sock.send_capacity();
        if cap <= live.tx_start {
            return;
        }
        if sock.send_queue() > 0 {
            live.tx_shrink_armed = true;
            self.shrink_checks.push(Reverse((now + autosize::SHRINK_AFTER, idx, gen, Side::Tx)));
            return;
        }
        // A smaller charge always fits where the bigger one was: reserve, then refund.
        let Ok(charge) = self.cfg.budget.reserve(live.tx_start as u64) else { return };
        if rings::swap_plain(live.tx_start, |b| sock.replace_send_buffer(b)).is_err() {
            return;
        }
        self.stats.ring_bytes_in_use = self.stats.ring_bytes_in_use + charge.bytes() - live.tx_charge.bytes();
        live.tx_charge = charge;
        self.stats.tx_ring_shrinks += 1;
    }

    /// After a segment arrived on `idx`: notes rx pressure, and grows at once a ring no
    /// view is lent from (a lent ring grows in `inplace_sync`, once no view is alive).
    fn after_rx(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        let Some(live) = slot.live.as_mut().filter(|l| !l.dead) else { return };
        let sock = slot.set.get_mut::<tcp::Socket<'static>>(live.handle);
        let cap = sock.recv_capacity();
        if cap < live.rx_max && autosize::rx_pressure(sock.recv_queue(), cap) {
            live.rx_pressure = true;
        }
        live.rx_recent = true;
        if live.rx_pressure && !live.lending && grow_rx(live, sock, None, &self.cfg.budget, &mut self.stats) {
            self.mark_dirty(idx); // window update
            self.arm_rx_shrink(idx);
        }
    }

    /// Budget bytes of the connections (rings and the fixed state figure), idle (nothing
    /// queued) and active: the per-connection cost figure (see [`crate::cost`]). Walks
    /// every connection: for stats snapshots, not for every poll.
    pub fn conn_cost(&self) -> ConnCost {
        let mut c = ConnCost::default();
        for slot in &self.slots {
            let Some(live) = slot.live.as_ref().filter(|l| !l.dead) else { continue };
            let s = slot.set.get::<tcp::Socket<'static>>(live.handle);
            let bytes = live.rx_charge.bytes() + live.tx_charge.bytes() + live.state_charge.bytes();
            if s.recv_queue() == 0 && s.send_queue() == 0 {
                c.idle_conns += 1;
                c.idle_bytes += bytes;
            } else {
                c.active_conns += 1;
                c.active_bytes += bytes;
            }
        }
        c
    }

    /// Gives the slot's socket back to the pool, refunds the budget, bumps the generation.
    fn release_slot(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        let Some(live) = slot.live.take() else { return };
        if let Some(t) = live.tuple {
            if self.by_tuple.get(&t) == Some(&idx) {
                self.by_tuple.remove(&t);
            }
        }
        if let Role::Passive { port } = live.role {
            if let Some(l) = self.listeners.get_mut(&port) {
                if !live.open {
                    l.handshaking = l.handshaking.saturating_sub(1);
                } else if live.queued {
                    let id = ConnId { idx, gen: slot.gen };
                    l.accept_q.retain(|c| *c != id);
                }
            }
        }
        if let smoltcp::socket::Socket::Tcp(s) = slot.set.remove(live.handle) {
            let (rx, tx) = s.into_buffers();
            match live.storage {
                Some(storage) => rings::give_mirror(MirrorRing { buf: rx, storage }),
                None => rings::give_plain(rx),
            }
            rings::give_plain(tx);
        }
        self.stats.ring_bytes_in_use -= live.rx_charge.bytes() + live.tx_charge.bytes();
        self.stats.state_bytes_in_use -= live.state_charge.bytes();
        self.live_slots -= 1;
        slot.gen = slot.gen.wrapping_add(1);
        self.free_slots.push(idx);
        // `live` (and its budget charge) drops here.
    }

    fn mark_dirty(&mut self, idx: u32) {
        if let Some(l) = self.slots[idx as usize].live.as_mut() {
            if !l.dirty {
                l.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    fn mark_ready(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if let Some(l) = slot.live.as_mut() {
            if l.open && !l.ready && !l.dead {
                l.ready = true;
                self.ready.push(ConnId { idx, gen: slot.gen });
            }
        }
    }

    /// Looks at the socket's state after smoltcp ran on it: reports transitions, and
    /// recycles the slot when TCP is finished with it.
    fn after_activity(&mut self, idx: u32, now: Instant, ingress: bool) {
        let slot = &mut self.slots[idx as usize];
        let gen = slot.gen;
        let Some(live) = slot.live.as_mut() else { return };
        let sock = slot.set.get::<tcp::Socket<'static>>(live.handle);
        let st = sock.state();
        let id = ConnId { idx, gen };
        let old = live.state;
        if matches!(
            st,
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::TimeWait
                | tcp::State::Closing
                | tcp::State::FinWait1
                | tcp::State::FinWait2
        ) {
            live.fin_seen = true;
        }
        let mut event = None;
        if st != old {
            live.state = st;
            match (live.role, st) {
                (Role::Passive { port }, tcp::State::Established | tcp::State::CloseWait) if !live.open => {
                    live.open = true;
                    live.queued = true;
                    if let Some(l) = self.listeners.get_mut(&port) {
                        l.handshaking = l.handshaking.saturating_sub(1);
                        l.accept_q.push_back(id);
                    }
                    self.stats.accepted += 1;
                    event = Some(Event::Accepted { conn: id, port });
                }
                (Role::Passive { .. }, tcp::State::Listen) if !live.open => {
                    // RST during the handshake: smoltcp went back to LISTEN; drop it.
                    live.dead = true;
                }
                (Role::Active, tcp::State::Established | tcp::State::CloseWait) if !live.open => {
                    live.open = true;
                    self.stats.connected += 1;
                    event = Some(Event::Connected(id));
                }
                _ => {}
            }
        }
        if st == tcp::State::Closed {
            live.dead = true;
        }
        if live.dead {
            // Recycle once smoltcp has nothing left to send for it (e.g. the RST of abort).
            let pending = self.iface.poll_at(now, &slot.set).is_some();
            if !pending || live.state == tcp::State::Listen {
                let reported = live.open || live.role == Role::Active;
                if reported && event.is_none() {
                    event = Some(if live.user_closed || live.fin_seen && !live.rst_seen {
                        self.stats.closed += 1;
                        Event::Closed(id)
                    } else if live.rst_seen {
                        self.stats.reset += 1;
                        Event::Reset(id)
                    } else {
                        self.stats.timed_out += 1;
                        Event::TimedOut(id)
                    });
                }
                self.release_slot(idx);
            } else {
                self.mark_dirty(idx);
            }
        } else if ingress || st != old {
            // readiness: new data, freed tx room (ACKs) or a state change; egress alone
            // changes neither, so it does not wake the application
            self.mark_ready(idx);
        }
        if let Some(e) = event {
            self.push_event(e);
        }
    }

    // ---------------------------------------------------------------- polling

    /// One bounded step: rx burst → smoltcp → timers → tx burst. Returns whether anything
    /// happened (frames moved, events produced).
    pub fn poll(&mut self) -> Result<bool, StackError> {
        let now = self.clock.now();
        self.stats.polls += 1;
        let events_before = self.events.len();
        let mut work = false;

        // 0. neighbours the engines of the other queues learned, and segments of our
        // connections that arrived on their queues
        if self.neighbours.is_some() {
            work |= self.take_neighbour_news(now);
        }
        if self.strays.is_some() {
            work |= self.take_strays(now);
        }

        // 1. ingress, at most max_frames_per_poll frames
        let max = self.cfg.max_frames_per_poll.max(1);
        self.rx_burst_full = false;
        let mut frames = std::mem::take(&mut self.rx_buf);
        let mut budget = max;
        while budget > 0 {
            let Some(f) = self.rx_retry.pop_front() else { break };
            budget -= 1;
            if let Err(f) = self.ingress(now, f) {
                self.rx_retry.push_front(f);
                budget = 0;
            }
        }
        if budget > 0 && self.rx_retry.is_empty() {
            let got = self.dev.port_mut().rx_burst(&mut frames, budget);
            if let Err(e) = got {
                self.rx_buf = frames;
                return Err(e.into());
            }
            self.stats.rx_frames += frames.len() as u64;
            self.rx_burst_full = frames.len() >= budget;
            let mut it = frames.drain(..);
            for f in it.by_ref() {
                work = true;
                if let Err(f) = self.ingress(now, f) {
                    self.rx_retry.push_back(f);
                    break;
                }
            }
            self.rx_retry.extend(it);
        }
        self.rx_buf = frames;

        if std::mem::take(&mut self.neighbor_changed) {
            let waiting: Vec<u32> = self.timers.iter().map(|Reverse((_, i, _))| *i).collect();
            for i in waiting {
                self.mark_dirty(i);
            }
        }

        // 2. timers
        while let Some(Reverse((at, idx, seq))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(l) = self.slots[idx as usize].live.as_mut() {
                if l.timer_seq == seq {
                    l.timer_at = None;
                    self.stats.timer_fires += 1;
                    self.mark_dirty(idx);
                }
            }
        }

        // 2b. rings that grew and may have gone idle
        while let Some(Reverse((at, idx, gen, side))) = self.shrink_checks.peek().copied() {
            if at > now {
                break;
            }
            self.shrink_checks.pop();
            match side {
                Side::Rx => self.check_rx_shrink(idx, gen, now),
                Side::Tx => self.check_tx_shrink(idx, gen, now),
            }
        }

        // 3. egress for connections with work
        let spare = std::mem::take(&mut self.dirty_scratch);
        let mut list = std::mem::replace(&mut self.dirty, spare);
        let tx_before = self.dev.stats().tx_frames;
        let burst = self.burst;
        for &idx in &list {
            if let Some(l) = self.slots[idx as usize].live.as_mut() {
                l.dirty = false;
            } else {
                continue;
            }
            self.egress(now, idx, burst)?;
        }
        list.clear();
        self.dirty_scratch = list;
        if self.dev.stats().tx_frames != tx_before {
            work = true;
        }

        // 4. tx burst
        if self.dev.tx_pending() > 0 {
            self.dev.flush()?;
            work = true;
        }
        if let Some(e) = self.dev.take_error() {
            return Err(e.into());
        }
        Ok(work || self.events.len() != events_before)
    }

    fn egress(&mut self, now: Instant, idx: u32, burst: usize) -> Result<(), StackError> {
        self.stats.egress_polls += 1;
        let max = self.cfg.max_segments_per_conn.max(1);
        let mtu = self.mtu;
        for _ in 0..max {
            if self.dev.tx_pending() >= burst {
                self.dev.flush()?;
            }
            let slot = &mut self.slots[idx as usize];
            let r = self.iface.poll_egress(now, &mut Feed { dev: &mut self.dev, frame: None, mtu }, &mut slot.set);
            if r == PollResult::None {
                break;
            }
        }
        self.after_activity(idx, now, false);
        // schedule the next visit
        let slot = &mut self.slots[idx as usize];
        let Some(live) = slot.live.as_mut() else { return Ok(()) };
        match self.iface.poll_at(now, &slot.set) {
            // more to send than this poll's share, or the device is full: next poll
            Some(t) if t <= now && !live.dirty => {
                live.dirty = true;
                self.dirty.push(idx);
            }
            // Lazy timers: a deadline that moved later (RTO restarted by an ACK, keep-alive
            // pushed back by traffic) keeps its earlier heap entry, which fires, finds
            // nothing due and reschedules; only earlier deadlines add entries. So the heap
            // holds about one entry per connection with a timer, not one per segment.
            Some(t) if t > now && !live.timer_at.is_some_and(|cur| cur > now && cur <= t) => {
                self.timer_seq += 1;
                live.timer_at = Some(t);
                live.timer_seq = self.timer_seq;
                self.timers.push(Reverse((t, idx, self.timer_seq)));
            }
            _ => {}
        }
        Ok(())
    }

    /// Shares what this engine learns about neighbours with the engines of the other queues
    /// of the same address (engine `me` of the group), and learns what they do: see
    /// [`crate::neighbours`]. Without it, a peer whose ARP or neighbour discovery exchange
    /// went through another queue cannot be answered from this one.
    pub fn share_neighbours(&mut self, share: Arc<NeighbourShare>, me: usize) {
        self.neighbours = Some((share, me, 0));
    }

    /// Splits the ephemeral ports with the engines of the other queues of the same address
    /// (engine `me` of the group) and hands them the segments of their connections that
    /// arrive here: see [`crate::strays`]. Without it, an outgoing connection whose replies
    /// the NIC steers to another queue is reset there.
    pub fn share_strays(&mut self, share: Arc<StrayShare>, me: usize) {
        self.strays = Some((share, me));
    }

    /// The engine that owns `key`'s connection when it is another's: a segment to one of
    /// the ephemeral ports the group gave another engine.
    fn stray_owner(&self, key: &FourTuple) -> Option<usize> {
        let (share, me) = self.strays.as_ref()?;
        let (lo, hi) = self.cfg.ephemeral_ports;
        let port = key.local.port;
        let owner = share.owner(port);
        ((lo..=hi).contains(&port) && owner != *me && !self.listeners.contains_key(&port)).then_some(owner)
    }

    /// Takes in the segments other engines handed over (bounded by one queue's capacity
    /// per poll).
    fn take_strays(&mut self, now: Instant) -> bool {
        let mut any = false;
        for _ in 0..crate::strays::CAPACITY {
            let Some(bytes) = self.strays.as_ref().and_then(|(share, me)| share.take(*me)) else { break };
            any = true;
            // Admitted (checksums included) by the engine that handed it over.
            let admission = Admission { checksums: false, ..self.admission };
            let idx = match admit(&bytes, &admission) {
                Ok(Class::Tcp { key, .. }) => self.by_tuple.get(&key).copied(),
                _ => None,
            };
            let Some(idx) = idx else {
                self.stats.rx_stray_dropped += 1; // its connection is gone
                continue;
            };
            self.stats.rx_strays_taken += 1;
            let mtu = self.mtu;
            let mut feed = Feed { dev: &mut self.dev, frame: Some(OwnedRx::Made(bytes)), mtu };
            let set = &mut self.slots[idx as usize].set;
            // No tx room now: the segment is lost here, and TCP retransmits it.
            let _ = self.iface.poll_ingress_single(now, &mut feed, set);
            drop(feed);
            self.mark_dirty(idx);
            self.after_activity(idx, now, true);
        }
        any
    }

    /// Our addresses, as the neighbour share needs them.
    fn ours(&self) -> Ours {
        Ours { v4: self.iface.ipv4_addr(), v6: self.iface.ipv6_addr() }
    }

    /// Feeds the neighbours other engines learned to smoltcp, as ARP replies (IPv4) or
    /// neighbour advertisements (IPv6).
    fn take_neighbour_news(&mut self, now: Instant) -> bool {
        let Some((share, me, seen)) = self.neighbours.as_mut() else { return false };
        let mut news = std::mem::take(&mut self.neighbour_news);
        share.news(*me, seen, &mut news);
        // The engine's interfaces are Ethernet (the only medium built in).
        let HardwareAddress::Ethernet(mac) = self.iface.hardware_addr();
        let ours = self.ours();
        let any = !news.is_empty();
        let mtu = self.mtu;
        for n in news.drain(..) {
            let Some(frame) = reply_frame(n, ours, mac) else { continue };
            let mut feed = Feed { dev: &mut self.dev, frame: Some(OwnedRx::Made(frame)), mtu };
            // No tx token now: the neighbour is learned from its own traffic later.
            let _ = self.iface.poll_ingress_single(now, &mut feed, &mut self.control);
        }
        self.neighbour_news = news;
        if any {
            self.neighbor_changed = true;
        }
        any
    }

    /// Counts one dropped frame; the first drop of a reason in the process is explained in
    /// the log (one line per reason, [`DropNotes`]).
    #[inline]
    fn count_drop(&mut self, r: DropReason) {
        let n = self.stats.drops.bump(r);
        if n == 1 {
            self.drop_notes.note(r, &self.port_name, n);
        }
    }

    /// Steers one frame. `Err(frame)` if smoltcp could not take it now (no tx room).
    fn ingress(&mut self, now: Instant, frame: Frame) -> Result<(), Frame> {
        let mtu = self.mtu;
        let class = match admit(frame.data(), &self.admission) {
            Ok(c) => c,
            Err(refused) => {
                if refused.reason == DropReason::BadTcpChecksum && refused.syn {
                    self.stats.rx_bad_checksum_syn += 1;
                }
                self.count_drop(refused.reason);
                return Ok(()); // dropped, counted; the frame returns to its pool
            }
        };
        let target = match class {
            Class::Tcp { key, syn, ack, rst } => match self.by_tuple.get(&key).copied() {
                Some(idx) => {
                    if rst {
                        if let Some(l) = self.slots[idx as usize].live.as_mut() {
                            l.rst_seen = true;
                        }
                    }
                    Some(idx)
                }
                None if !self.iface.has_ip_addr(key.local.addr) => {
                    self.count_drop(DropReason::NotForUs);
                    return Ok(());
                }
                None if syn && !ack && !rst && self.listeners.contains_key(&key.local.port) => {
                    match self.passive_open(key) {
                        Ok(idx) => Some(idx),
                        Err(reason) => {
                            match reason {
                                RefuseReason::Backlog => self.stats.refused_backlog += 1,
                                RefuseReason::Budget(_) => self.stats.refused_budget += 1,
                                RefuseReason::Memory(_) => self.stats.refused_memory += 1,
                            }
                            self.push_event(Event::Refused { port: key.local.port, remote: key.remote, reason });
                            return Ok(()); // SYN dropped; the frame returns to its pool
                        }
                    }
                }
                None => {
                    if let Some(owner) = self.stray_owner(&key) {
                        let handed = self.strays.as_ref().is_some_and(|(share, _)| share.hand(owner, frame.data()));
                        if handed {
                            self.stats.rx_handed_off += 1;
                        } else {
                            self.stats.rx_stray_dropped += 1;
                        }
                        return Ok(()); // the frame returns to its pool
                    }
                    // smoltcp answers with RST (unless it is one); the segment is dropped.
                    self.count_drop(DropReason::NoSocket);
                    None
                }
            },
            Class::Udp => {
                self.count_drop(DropReason::NoSocket);
                None
            }
            Class::Unsupported => {
                self.count_drop(DropReason::UnsupportedProtocol);
                None
            }
            Class::Neighbor => {
                self.neighbor_changed = true;
                if let Some((share, me, _)) = &self.neighbours {
                    if let Some(n) = learned_from(frame.data(), self.ours()) {
                        share.publish(*me, n);
                    }
                }
                None
            }
            Class::Other => None,
        };
        let mut feed = Feed { dev: &mut self.dev, frame: Some(OwnedRx::Frame(frame)), mtu };
        match target {
            Some(idx) => {
                self.stats.rx_steered += 1;
                let set = &mut self.slots[idx as usize].set;
                let r = self.iface.poll_ingress_single(now, &mut feed, set);
                if r == PollIngressSingleResult::None {
                    if let Some(OwnedRx::Frame(f)) = feed.frame.take() {
                        return Err(f);
                    }
                }
                drop(feed);
                self.after_ingress_passive(idx);
                self.after_rx(idx);
                self.mark_dirty(idx);
                self.after_activity(idx, now, true);
            }
            None => {
                self.stats.rx_control += 1;
                let r = self.iface.poll_ingress_single(now, &mut feed, &mut self.control);
                if r == PollIngressSingleResult::None {
                    if let Some(OwnedRx::Frame(f)) = feed.frame.take() {
                        return Err(f);
                    }
                }
            }
        }
        Ok(())
    }

    fn after_ingress_passive(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if let Some(live) = slot.live.as_mut() {
            if live.state == tcp::State::Listen {
                let st = slot.set.get::<tcp::Socket<'static>>(live.handle).state();
                if st == tcp::State::Listen {
                    // smoltcp did not take the SYN (bad segment): nothing to keep
                    live.dead = true;
                }
            }
        }
    }

    fn passive_open(&mut self, key: FourTuple) -> Result<u32, RefuseReason> {
        let port = key.local.port;
        let l = self.listeners.get(&port).expect("checked by caller");
        if l.handshaking + l.accept_q.len() >= l.backlog {
            return Err(RefuseReason::Backlog);
        }
        let opts = l.opts;
        let idx = self.new_slot(&opts)?;
        let slot = &mut self.slots[idx as usize];
        let live = slot.live.as_mut().expect("new slot is live");
        slot.set
            .get_mut::<tcp::Socket<'static>>(live.handle)
            .listen(IpListenEndpoint { addr: Some(key.local.addr), port })
            .expect("closed socket, nonzero port");
        live.role = Role::Passive { port };
        live.state = tcp::State::Listen;
        live.tuple = Some(key);
        self.by_tuple.insert(key, idx);
        self.listeners.get_mut(&port).expect("checked").handshaking += 1;
        Ok(idx)
    }

    /// When the engine next needs polling if no frame arrives (`None`: only on ingress).
    pub fn poll_at(&self) -> Option<Instant> {
        if !self.dirty.is_empty() || !self.rx_retry.is_empty() || self.dev.tx_pending() > 0 {
            return Some(self.clock.now());
        }
        let shrink = self.shrink_checks.peek().map(|Reverse((t, _, _, _))| *t);
        self.timers.peek().map(|Reverse((t, _, _))| *t).into_iter().chain(shrink).min()
    }

    /// Polls until `done(self)` returns true, idling per the configured strategy when a
    /// poll found nothing to do. `done` runs after every poll (run-to-completion: handle
    /// data inline there).
    pub fn run_until(&mut self, mut done: impl FnMut(&mut Self) -> bool) -> Result<(), StackError> {
        loop {
            let worked = self.poll()?;
            if done(self) {
                return Ok(());
            }
            if worked {
                self.idle_polls = 0;
            } else {
                self.idle();
            }
        }
    }

    /// Changes what `run_until` does when a poll found nothing to do.
    pub fn set_idle(&mut self, idle: crate::config::IdleStrategy) {
        self.cfg.idle = idle;
        self.idle_polls = 0;
    }

    /// One idle step of the configured strategy (called by `run_until`).
    pub fn idle(&mut self) {
        self.idle_polls = self.idle_polls.saturating_add(1);
        match self.cfg.idle.step(self.idle_polls) {
            IdleStep::Spin => std::hint::spin_loop(),
            IdleStep::Yield => std::thread::yield_now(),
            IdleStep::Sleep(d) => self.wait_for_frames(d),
        }
    }

    /// Sleeps until the port has frames, the next TCP timer is due, or `max` has passed,
    /// whichever comes first: on the port's wakeup descriptor when it has one (so the first
    /// frame after a quiet spell is served at once, and an idle engine costs almost no
    /// CPU), by the clock otherwise. Returns at once when work is pending. For idle loops,
    /// after a poll found nothing to do.
    pub fn wait_for_frames(&mut self, max: std::time::Duration) {
        self.wait_for_frames_or(max, None)
    }

    /// [`Engine::wait_for_frames`], also ending when `extra` (another thread's doorbell,
    /// an eventfd) polls readable.
    pub fn wait_for_frames_or(&mut self, max: std::time::Duration, extra: Option<std::os::fd::RawFd>) {
        // Segments another engine hands us (multi-queue, see crate::strays) do not ring our
        // port: nap briefly then.
        let grouped = self.strays.as_ref().is_some_and(|(share, _)| share.engines() > 1);
        let max = if grouped { max.min(STRAY_NAP) } else { max };
        let now = self.clock.now();
        let d = match self.poll_at() {
            Some(t) if t <= now => return,
            Some(t) => max.min(std::time::Duration::from_micros((t - now).total_micros())),
            None => max,
        };
        self.stats.idle_sleeps += 1;
        let mut fds = [0; 2];
        let mut n = 0;
        for fd in [self.dev.port().wakeup_fd(), extra].into_iter().flatten() {
            fds[n] = fd;
            n += 1;
        }
        if n == 0 {
            std::thread::sleep(d);
            return;
        }
        if matches!(ukcm_nic::wakeup::wait_any_readable(&fds[..n], d), Ok(true)) {
            self.stats.idle_port_wakeups += 1;
        }
    }

    fn shutdown_slots(&mut self) {
        for i in 0..self.slots.len() as u32 {
            self.release_slot(i);
        }
        self.by_tuple.clear();
    }
}

impl<P: Port> Drop for Engine<P> {
    fn drop(&mut self) {
        self.shutdown_slots();
    }
}

/// Longest idle sleep of an engine that shares a queue group's strays.
const STRAY_NAP: std::time::Duration = std::time::Duration::from_micros(50);

/// Dequeues `n` bytes from a socket's rx ring (after a `peek`), across the ring's wrap;
/// returns how many were dequeued (fewer only if fewer were queued). Frees window space.
pub fn consume_rx(s: &mut tcp::Socket<'_>, n: usize) -> usize {
    let mut left = n;
    while left > 0 {
        match s.recv(|b| {
            let k = b.len().min(left);
            (k, k)
        }) {
            Ok(0) | Err(_) => break,
            Ok(k) => left -= k,
        }
    }
    n - left
}

/// Writes the concatenation of `bufs`, from byte `skip` on, into the socket's tx ring (at
/// most two contiguous regions: the free space can wrap the ring's end); returns the bytes
/// taken.
fn write_bufs(s: &mut tcp::Socket<'_>, bufs: &[&[u8]], mut skip: usize) -> Result<usize, tcp::SendError> {
    let (mut i, mut off) = (0usize, 0usize);
    while i < bufs.len() && skip >= bufs[i].len() {
        skip -= bufs[i].len();
        i += 1;
    }
    off += skip;
    let mut total = 0;
    for _ in 0..2 {
        if i == bufs.len() {
            break;
        }
        let n = s.send(|space| {
            let mut n = 0;
            while n < space.len() && i < bufs.len() {
                let src = &bufs[i][off..];
                let k = src.len().min(space.len() - n);
                space[n..n + k].copy_from_slice(&src[..k]);
                n += k;
                off += k;
                if off == bufs[i].len() {
                    i += 1;
                    off = 0;
                }
            }
            (n, n)
        })?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(total)
}

/// errno of a mapping refused for want of memory or of map slots (Linux).
const ENOMEM: i32 = 12;

/// Which ring of a connection a shrink check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Rx,
    Tx,
}

/// Gives an idle connection's grown rx ring back: swaps in a ring of the starting size
/// (`shrink_recv_buffer`, the vendored smoltcp patch, which takes it only while nothing is
/// queued or out of order, and retracts the window to it), moves the in-place lender `rx`
/// over (nothing is lent: the caller checked), and gives the big ring back to the pool.
/// Returns whether it shrank; on refusal everything is as it was.
#[allow(unsafe_code)]
fn shrink_rx(
    live: &mut Live,
    sock: &mut tcp::Socket<'static>,
    rx: Option<&mut InPlaceRx>,
    budget: &Arc<PinnedBudget>,
    stats: &mut EngineStats,
) -> bool {
    // A smaller charge always fits where the bigger one was: reserve, then refund.
    let Ok(charge) = budget.reserve(live.rx_start as u64) else { return false };
    match live.storage.take() {
        Some(old_storage) => {
            let Ok(mut ring) = rings::take_mirror(live.rx_start) else {
                live.storage = Some(old_storage);
                return false;
            };
            let old = match sock.shrink_recv_buffer(ring.buf) {
                Ok(old) => old,
                Err(buf) => {
                    rings::give_mirror(MirrorRing { buf, storage: ring.storage });
                    live.storage = Some(old_storage);
                    return false;
                }
            };
            if let Some(rx) = rx {
                // SAFETY: as in `grow_rx`: `ring.storage`'s slice is now `sock`'s rx buffer,
                // only `inplace_sync` dequeues from a lent ring, and the caller checked
                // `can_move` (no view of the old ring alive), so the old ring can be reused.
                unsafe { rx.move_to(&mut ring.storage, sock) }
                    .expect("the lender moves to the ring just swapped in, with nothing lent");
            }
            rings::give_mirror(MirrorRing { buf: old, storage: old_storage });
            live.storage = Some(ring.storage);
        }
        None => {
            if rings::swap_plain(live.rx_start, |b| sock.shrink_recv_buffer(b)).is_err() {
                return false;
            }
        }
    }
    stats.ring_bytes_in_use = stats.ring_bytes_in_use + charge.bytes() - live.rx_charge.bytes();
    live.rx_charge = charge;
    live.rx_shrink_due = false;
    live.rx_pressure = false;
    stats.rx_ring_shrinks += 1;
    true
}

/// Doubles a connection's rx ring (see [`crate::autosize`]): takes a ring of the next size,
/// charges it to `budget`, lets smoltcp move the held bytes into it
/// (`replace_recv_buffer`, which refuses anything that would retract the window), moves the
/// in-place lender `rx` over, and gives the old ring back. A ring being lent grows only
/// when no view of it is alive (`InPlaceRx::can_move`). Returns whether it grew; a refusal
/// by the budget or the memory is counted and leaves everything as it was.
#[allow(unsafe_code)]
fn grow_rx(
    live: &mut Live,
    sock: &mut tcp::Socket<'static>,
    rx: Option<&mut InPlaceRx>,
    budget: &Arc<PinnedBudget>,
    stats: &mut EngineStats,
) -> bool {
    let cap = sock.recv_capacity();
    let Some(next) = autosize::next_size(cap, live.rx_max) else {
        live.rx_pressure = false;
        return false;
    };
    if live.lending && !rx.as_ref().is_some_and(|r| r.can_move()) {
        return false;
    }
    let Ok(charge) = budget.reserve(next as u64) else {
        stats.ring_grow_refused_budget += 1;
        return false;
    };
    let queued = sock.recv_queue();
    match live.storage.take() {
        Some(old_storage) => {
            let Ok(mut ring) = rings::take_mirror(next) else {
                live.storage = Some(old_storage);
                stats.ring_grow_refused_memory += 1;
                return false;
            };
            let old = match sock.replace_recv_buffer(ring.buf) {
                Ok(old) => old,
                Err(buf) => {
                    rings::give_mirror(MirrorRing { buf, storage: ring.storage });
                    live.storage = Some(old_storage);
                    return false;
                }
            };
            if let Some(rx) = rx {
                // SAFETY: `ring.storage`'s slice is now `sock`'s rx buffer (swapped in just
                // above), and this connection is lending, so only `inplace_sync` dequeues
                // from it (`with_tcp` and `recv` refuse it). `can_move` checked that no view
                // of the old ring is alive, so the old ring can be reused by anyone.
                unsafe { rx.move_to(&mut ring.storage, sock) }
                    .expect("the lender moves to the ring just swapped in, with nothing lent");
            }
            rings::give_mirror(MirrorRing { buf: old, storage: old_storage });
            live.storage = Some(ring.storage);
        }
        None => match rings::swap_plain(next, |b| sock.replace_recv_buffer(b)) {
            Ok(()) => {}
            Err(SwapRefused::Memory) => {
                stats.ring_grow_refused_memory += 1;
                return false;
            }
            Err(SwapRefused::Socket) => return false,
        },
    }
    stats.ring_bytes_in_use = stats.ring_bytes_in_use + charge.bytes() - live.rx_charge.bytes();
    live.rx_charge = charge;
    live.rx_pressure = false;
    stats.rx_ring_grows += 1;
    stats.ring_grow_copied_bytes += queued as u64;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed figure charged per connection covers what the engine keeps for one: the
    /// smoltcp socket in its one-socket set, the slot, a 4-tuple map entry and a timer
    /// entry — twice over for the tables, which grow by doubling.
    #[test]
    fn the_state_charge_covers_a_connections_structures() {
        use std::mem::size_of;
        let socket = size_of::<smoltcp::iface::SocketStorage<'static>>();
        let tables = size_of::<Slot>() + size_of::<(FourTuple, u32)>() + size_of::<Reverse<(Instant, u32, u64)>>();
        let need = socket + 2 * tables;
        assert!(
            crate::cost::STACK_STATE_BYTES >= need,
            "STACK_STATE_BYTES {} < {need} (socket {socket}, tables {tables}): measure again and raise it",
            crate::cost::STACK_STATE_BYTES
        );
    }
}
