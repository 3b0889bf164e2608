//! Where a server's connections come from: kernel TCP (a `TcpListener`) or the userspace
//! stack (a `ukcm_stack::Engine` over an AF_XDP, TAP, DPDK or in-memory port).
//!
//! The server's engine loop is generic over [`Transport`]: it steps the transport (for the
//! stack: one `Engine::poll` — rx burst, smoltcp, timers, tx burst), attaches what
//! [`Transport::accept`] returns to the mux, and runs `Mux::poll_with(transport.ctx(), …)`
//! (the engine itself is the psocks' context, so mux and engine share one thread and no
//! locks).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ukcm_mux::kernel::{KernelPsock, KernelReadiness};
use ukcm_mux::stack_psock::StackPsock;
use ukcm_mux::{Mux, PsockIo, Request};
use ukcm_nic::{PinnedBudget, Port, PortStats};
use ukcm_stack::smoltcp::socket::tcp::State;
use ukcm_stack::smoltcp::wire::{IpAddress, IpCidr, IpEndpoint};
use ukcm_stack::{ConnCost, ConnId, Engine, EngineConfig, EngineStats, Event, TcpOptions};

/// A run-to-completion handler: each message in place, with its reply buffer.
pub type RtcFn<'a> = dyn FnMut(&mut Request<'_>) + 'a;

/// A source of connections for the echo engine loop.
pub trait Transport {
    /// The psock type its connections become.
    type Io: PsockIo;
    /// An outgoing connection being set up.
    type Connecting: std::fmt::Debug;

    /// One step of the transport's own work (the stack's poll); whether anything happened.
    fn step(&mut self) -> io::Result<bool>;

    /// The next accepted connection, wrapped as a psock with an rx ring of `rx_ring` bytes.
    fn accept(&mut self, rx_ring: usize, budget: &Arc<PinnedBudget>) -> io::Result<Option<Self::Io>>;

    /// Starts connecting to `to` (non-blocking).
    fn connect(&mut self, to: SocketAddr) -> io::Result<Self::Connecting>;

    /// The connection once it is up, wrapped as a psock with an rx ring of `rx_ring` bytes
    /// that its own mux visits every round; `Ok(None)` while the handshake is under way; an
    /// error if it was refused or reset.
    fn poll_connect(
        &mut self,
        c: &mut Self::Connecting,
        rx_ring: usize,
        budget: &Arc<PinnedBudget>,
    ) -> io::Result<Option<Self::Io>>;

    /// Gives up a connection attempt (timed out).
    fn cancel_connect(&mut self, c: Self::Connecting);

    /// The context the mux passes to the psocks (the engine, or `()`).
    fn ctx(&mut self) -> &mut <Self::Io as PsockIo>::Ctx;

    /// One mux round over this transport's connections; with `rtc`, every complete message
    /// goes to that handler on this thread, in place (`Mux::poll_requests`), and its reply
    /// is written straight to the connection.
    fn poll_mux(&mut self, mux: &mut Mux<Self::Io>, now: Instant, rtc: Option<&mut RtcFn<'_>>) -> bool;

    /// The address clients connect to.
    fn local_addr(&self) -> SocketAddr;

    /// One line: what carries the bytes (e.g. `ukcm stack on afxdp:veth0:0 (native, copy)`).
    fn describe(&self) -> String;

    /// Waits at most `max` for work, after a round found none (the idle step of the
    /// engine loop): the stack sleeps on its port's wakeup descriptor and its TCP timers,
    /// kernel sockets on their epoll set; both also on `bell` (readable once another thread
    /// queued a send, see `Mux::wait_idle`).
    fn idle_wait(&mut self, max: Duration, bell: Option<std::os::fd::RawFd>) {
        let _ = bell;
        std::thread::sleep(max);
    }

    /// One line of transport counters for the periodic and final stats (empty: none).
    fn status(&self) -> String {
        String::new()
    }

    /// Something the operator must hear about, once (e.g. SYNs dropped for bad checksums).
    /// Called before every stats snapshot.
    fn take_warning(&mut self) -> Option<String> {
        None
    }

    /// What the connections pin in rings, as of the last snapshot and at the snapshot with
    /// the most connections (`None`: the transport pins nothing per connection).
    fn conn_cost(&self) -> Option<CostReport> {
        None
    }
}

/// Pinned ring bytes of a transport's connections (see `ukcm_stack::cost`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CostReport {
    /// As of the last snapshot.
    pub now: ConnCost,
    /// At the snapshot with the most connections so far (what an exit table shows after
    /// the clients are gone).
    pub peak: ConnCost,
}

impl CostReport {
    /// The sum of two engines' reports.
    pub fn add(&self, o: &CostReport) -> CostReport {
        CostReport { now: self.now.add(&o.now), peak: self.peak.add(&o.peak) }
    }
}

/// Kernel TCP: a non-blocking listener; connections become [`KernelPsock`]s.
///
/// Accepted connections are registered with an epoll set ([`KernelReadiness`]): a mux
/// round visits only those with news, and an idle engine sleeps on the set (with the
/// listener, the upstream connections and the mux's doorbell) instead of napping by the
/// clock.
#[derive(Debug)]
pub struct KernelTransport {
    listener: TcpListener,
    local: SocketAddr,
    unit: (),
    readiness: KernelReadiness,
    /// Keys with news since the last mux round (psocks' fds, or the wake-only keys below).
    ready: Vec<usize>,
    /// The doorbell registered with the set, once.
    bell: Option<std::os::fd::RawFd>,
    /// Idle sleeps, and how many of them news (a connection, the listener, the pool, the
    /// doorbell) ended rather than the clock.
    idle_sleeps: u64,
    idle_news_wakeups: u64,
}

/// Wake-only keys in the epoll set (no psock has them: psocks' keys are their fds).
const LISTENER_KEY: usize = usize::MAX;
const BELL_KEY: usize = usize::MAX - 1;
/// Upstream connections: their mux visits them every round, so an event only wakes.
const UPSTREAM_KEY: usize = usize::MAX - 2;
/// Pending keys beyond which duplicates are folded.
const READY_DEDUP_AT: usize = 4096;

impl KernelTransport {
    /// Over a bound listener (made non-blocking here).
    pub fn new(listener: TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let readiness = KernelReadiness::new(1024)?;
        readiness.register_fd(listener.as_raw_fd(), LISTENER_KEY)?;
        Ok(KernelTransport {
            listener,
            local,
            unit: (),
            readiness,
            ready: Vec::new(),
            bell: None,
            idle_sleeps: 0,
            idle_news_wakeups: 0,
        })
    }
}

impl Transport for KernelTransport {
    type Io = KernelPsock;
    type Connecting = socket2::Socket;

    fn connect(&mut self, to: SocketAddr) -> io::Result<socket2::Socket> {
        let s = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)?;
        s.set_nonblocking(true)?;
        match s.connect(&to.into()) {
            Ok(()) => Ok(s),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(s),
            Err(e) => Err(e),
        }
    }

    fn poll_connect(
        &mut self,
        c: &mut socket2::Socket,
        rx_ring: usize,
        budget: &Arc<PinnedBudget>,
    ) -> io::Result<Option<KernelPsock>> {
        if let Some(e) = c.take_error()? {
            return Err(e);
        }
        match c.peer_addr() {
            Ok(_) => {
                let s = c.try_clone()?;
                // Wakes an idle engine when a reply arrives (dropped from the set with the
                // socket).
                self.readiness.register_fd(s.as_raw_fd(), UPSTREAM_KEY)?;
                KernelPsock::new(s.into(), rx_ring, 1024, budget).map(Some)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn cancel_connect(&mut self, c: socket2::Socket) {
        drop(c);
    }

    /// Collects the epoll set's news for the next mux round (without waiting).
    fn step(&mut self) -> io::Result<bool> {
        self.readiness.wait(Some(Duration::ZERO), &mut self.ready)?;
        if self.ready.len() > READY_DEDUP_AT {
            // Steps without a mux round in between (a pool preconnecting).
            self.ready.sort_unstable();
            self.ready.dedup();
        }
        Ok(false)
    }

    fn idle_wait(&mut self, max: Duration, bell: Option<std::os::fd::RawFd>) {
        if let Some(fd) = bell {
            if self.bell != Some(fd) && self.readiness.register_fd(fd, BELL_KEY).is_ok() {
                self.bell = Some(fd);
            }
        }
        self.idle_sleeps += 1;
        match self.readiness.wait(Some(max), &mut self.ready) {
            Ok(0) => {}
            Ok(_) => self.idle_news_wakeups += 1,
            Err(e) => {
                tracing::debug!("epoll wait: {e}");
                std::thread::sleep(max);
            }
        }
    }

    fn status(&self) -> String {
        format!("kernel TCP: idle sleeps {}, ended by news {}", self.idle_sleeps, self.idle_news_wakeups)
    }

    fn accept(&mut self, rx_ring: usize, budget: &Arc<PinnedBudget>) -> io::Result<Option<KernelPsock>> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let mut p = KernelPsock::new(stream, rx_ring, 1024, budget)?;
                    self.readiness.register(&mut p)?;
                    return Ok(Some(p));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn ctx(&mut self) -> &mut () {
        &mut self.unit
    }

    fn poll_mux(&mut self, mux: &mut Mux<KernelPsock>, now: Instant, rtc: Option<&mut RtcFn<'_>>) -> bool {
        // Keys of another mux's psocks (a server's and its pool's share this set) and the
        // wake-only keys are ignored by this one; each mux is polled once per round.
        for k in self.ready.drain(..) {
            mux.mark_ready_key(k);
        }
        match rtc {
            Some(h) => mux.poll_requests(&mut (), now, h),
            None => mux.poll_with(&mut (), now),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn describe(&self) -> String {
        "kernel TCP".into()
    }
}

/// The userspace stack: an engine over a port, listening on one TCP port; connections
/// become [`StackPsock`]s.
pub struct StackTransport<P: Port> {
    engine: Engine<P>,
    port: u16,
    local: SocketAddr,
    what: String,
    resets: u64,
    /// The bad-checksum warning was given.
    warned_checksum: bool,
    /// Pinned ring bytes of the connections (refreshed before every snapshot).
    cost: CostReport,
}

impl<P: Port> std::fmt::Debug for StackTransport<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackTransport").field("local", &self.local).field("what", &self.what).finish()
    }
}

/// Most engine polls per server round (each takes up to `max_frames_per_poll` frames).
const POLLS_PER_STEP: usize = 16;

/// TCP options of the echo server's (and the stack client's) connections: Nagle off (as
/// the kernel paths set `TCP_NODELAY`); rings that start at 4 KiB each (an idle connection
/// pins 8 KiB, and is charged its engine and mux state on top) and double under pressure up to 512 KiB, so a 64 KiB message at depth 64
/// keeps the window open and a 256 KiB message arrives whole, in place
/// (`ukcm_stack::autosize`).
pub fn server_tcp_options() -> TcpOptions {
    TcpOptions {
        nagle: false,
        rx_buf: 512 * 1024,
        tx_buf: 512 * 1024,
        rx_start: ukcm_stack::START_RING,
        tx_start: ukcm_stack::START_RING,
        inplace_rx: true,
        // The budget covers the mux's state for the connection too.
        state_bytes: ukcm_stack::STACK_STATE_BYTES + ukcm_mux::stack_psock::PSOCK_STATE_BYTES,
        ..TcpOptions::default()
    }
}

impl<P: Port> StackTransport<P> {
    /// An engine on `port` with address `addr` (and `gateway`), listening on `listen`.
    pub fn new(
        port: P,
        mac: Option<[u8; 6]>,
        addr: impl Into<IpCidr>,
        gateway: Option<IpAddress>,
        listen: u16,
        backlog: usize,
    ) -> io::Result<Self> {
        let caps = port.caps();
        let addr: IpCidr = addr.into();
        let mut cfg = EngineConfig { mac, default_tcp: server_tcp_options(), ..EngineConfig::default() };
        match addr {
            IpCidr::Ipv4(a) => cfg.ipv4 = Some(a),
            IpCidr::Ipv6(a) => cfg.ipv6 = Some(a),
        }
        match gateway {
            Some(IpAddress::Ipv4(g)) => cfg.gateway_v4 = Some(g),
            Some(IpAddress::Ipv6(g)) => cfg.gateway_v6 = Some(g),
            None => {}
        }
        let mut engine = Engine::new(port, cfg).map_err(|e| io::Error::other(format!("engine: {e}")))?;
        if listen == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the userspace stack needs a --listen port above 0",
            ));
        }
        engine
            .listen_with(listen, backlog, server_tcp_options())
            .map_err(|e| io::Error::other(format!("listen: {e}")))?;
        let local = SocketAddr::new(IpAddr::from(addr.address()), listen);
        Ok(StackTransport {
            engine,
            port: listen,
            local,
            what: format!("ukcm stack on {}", caps.name),
            resets: 0,
            warned_checksum: false,
            cost: CostReport::default(),
        })
    }

    /// Joins the engines of the other queues of the same address in sharing learned
    /// neighbours (see `ukcm_stack::neighbours`); `me` is this engine's index in the group.
    pub fn share_neighbours(mut self, share: Arc<ukcm_stack::NeighbourShare>, me: usize) -> Self {
        self.engine.share_neighbours(share, me);
        self
    }

    /// Joins the engines of the other queues of the same address in splitting the
    /// ephemeral ports and handing each other the segments of their outgoing connections
    /// that the NIC steered to the wrong queue (see `ukcm_stack::strays`).
    pub fn share_strays(mut self, share: Arc<ukcm_stack::StrayShare>, me: usize) -> Self {
        self.engine.share_strays(share, me);
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Engine<P> {
        &self.engine
    }

    /// Engine and port counters.
    pub fn counters(&self) -> (EngineStats, PortStats) {
        (self.engine.stats(), self.engine.port_stats())
    }
}

impl<P: Port> Transport for StackTransport<P> {
    type Io = StackPsock<P>;
    type Connecting = ConnId;

    fn connect(&mut self, to: SocketAddr) -> io::Result<ConnId> {
        self.engine
            .connect_with(IpEndpoint::from(to), server_tcp_options())
            .map_err(|e| io::Error::other(format!("connect to {to}: {e}")))
    }

    fn poll_connect(
        &mut self,
        c: &mut ConnId,
        rx_ring: usize,
        budget: &Arc<PinnedBudget>,
    ) -> io::Result<Option<StackPsock<P>>> {
        let info = match self.engine.info(*c) {
            Ok(i) => i,
            Err(_) => return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused or reset")),
        };
        match info.state {
            State::SynSent | State::SynReceived => Ok(None),
            State::Established => {
                StackPsock::new(&mut self.engine, *c, rx_ring, 1024, budget).map(|p| Some(p.poll_always()))
            }
            other => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("connection went to {other} before it was up"),
            )),
        }
    }

    fn cancel_connect(&mut self, c: ConnId) {
        let _ = self.engine.abort(c);
    }

    /// Engine polls until the port's rx burst comes back short (at most
    /// `POLLS_PER_STEP`): a server round visits every connection with news, which takes
    /// long with thousands of them, and one burst per round let the port's rx ring
    /// overflow (10,000 redis-benchmark clients through ukcm-proxy: 114,680 of 273,709
    /// frames dropped as `rx_ring_full`).
    fn step(&mut self) -> io::Result<bool> {
        let mut work = false;
        for _ in 0..POLLS_PER_STEP {
            work |= self.engine.poll().map_err(|e| io::Error::other(format!("engine poll: {e}")))?;
            for e in self.engine.events() {
                if matches!(e, Event::Reset(_) | Event::TimedOut(_)) {
                    self.resets += 1;
                }
            }
            if !self.engine.rx_burst_was_full() {
                break;
            }
        }
        Ok(work)
    }

    fn accept(&mut self, rx_ring: usize, budget: &Arc<PinnedBudget>) -> io::Result<Option<StackPsock<P>>> {
        let Some(conn): Option<ConnId> = self.engine.accept(self.port) else { return Ok(None) };

        match StackPsock::new(&mut self.engine, conn, rx_ring, 1024, budget) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                let _ = self.engine.abort(conn);
                Err(e)
            }
        }
    }

    fn ctx(&mut self) -> &mut Engine<P> {
        &mut self.engine
    }

    fn idle_wait(&mut self, max: Duration, bell: Option<std::os::fd::RawFd>) {
        // Without a wakeup descriptor (DPDK) this sleeps by the clock, or until `bell`, for
        // all of `max`: the server grows its naps only after a while idle (`nap_after`).
        self.engine.wait_for_frames_or(max, bell);
    }

    fn poll_mux(&mut self, mux: &mut Mux<StackPsock<P>>, now: Instant, rtc: Option<&mut RtcFn<'_>>) -> bool {
        match rtc {
            Some(h) => mux.poll_engine_requests(&mut self.engine, now, h),
            None => mux.poll_engine(&mut self.engine, now),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn describe(&self) -> String {
        self.what.clone()
    }

    fn take_warning(&mut self) -> Option<String> {
        // The port's drop counters cost a system call to read: once per snapshot, here,
        // which also explains any port drop reason seen for the first time.
        self.engine.note_port_drops();
        self.cost.now = self.engine.conn_cost();
        let conns = |c: &ConnCost| c.idle_conns + c.active_conns;
        if conns(&self.cost.now) >= conns(&self.cost.peak) {
            self.cost.peak = self.cost.now;
        }
        let bad = self.engine.stats().rx_bad_checksum_syn;
        if bad == 0 || self.warned_checksum {
            return None;
        }
        self.warned_checksum = true;
        Some(format!(
            "{}: {bad} SYN(s) dropped for a bad TCP checksum: clients cannot connect. A veth peer with transmit checksum offload on (the default) hands AF_XDP partial checksums; turn it off on the peer: `ethtool -K <peer interface> tx off`",
            self.what
        ))
    }

    fn conn_cost(&self) -> Option<CostReport> {
        Some(self.cost)
    }

    fn status(&self) -> String {
        let (e, p) = self.counters();
        let peak = &self.cost.peak;
        format!(
            "engine: {} connections, accepted {}, closed {}, reset/timed out {}, bad-checksum SYNs {}; rings: {} pinned now, connection state {} B charged; at most connections ({}): {} B per idle one, {} B per active one, {} B in all (rings and state); ring growths rx {} tx {}, refused by the budget {}; port: rx {} frames ({} dropped), tx {} frames, tx_full {}, wakeups {}, largest frames rx {} B tx {} B; dropped frames by reason: {}",
            self.engine.connection_count(),
            e.accepted,
            e.closed,
            self.resets,
            e.rx_bad_checksum_syn,
            e.ring_bytes_in_use,
            e.state_bytes_in_use,
            peak.idle_conns + peak.active_conns,
            peak.per_idle(),
            peak.per_active(),
            peak.total(),
            e.rx_ring_grows,
            e.tx_ring_grows,
            e.ring_grow_refused_budget,
            p.rx_frames,
            p.rx_dropped,
            p.tx_frames,
            p.tx_full,
            p.wakeups,
            p.rx_max_frame,
            p.tx_max_frame,
            e.drops
        )
    }
}
