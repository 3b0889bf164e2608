//! Engine and per-connection configuration.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use smoltcp::time::Duration;
use smoltcp::wire::{Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};
use ukcm_nic::PinnedBudget;

/// Congestion control of one connection (smoltcp's implementations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// No congestion control (window-limited only).
    None,
    /// TCP Reno.
    Reno,
    /// CUBIC (RFC 8312), Linux's default.
    #[default]
    Cubic,
}

/// Options of one TCP connection (or of the connections a listener accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// Nagle's algorithm (coalesce small segments while data is unacknowledged).
    pub nagle: bool,
    /// Delayed-ACK time; `None` acknowledges every segment at once.
    pub ack_delay: Option<Duration>,
    /// Congestion control.
    pub congestion: Congestion,
    /// Largest receive ring (bytes, rounded up to a power of two, at least 1 KiB): it
    /// bounds the largest message received in place. Above 64 KiB smoltcp offers window
    /// scaling, chosen at SYN time for this size even while the ring is smaller.
    pub rx_buf: usize,
    /// Largest transmit ring (bytes, rounded up to a power of two, at least 1 KiB).
    pub tx_buf: usize,
    /// Receive ring the connection starts with (rounded like `rx_buf`, at most `rx_buf`);
    /// it doubles under pressure up to `rx_buf` (see `ukcm_stack::autosize`). 0 (the
    /// default) or `rx_buf`: a fixed ring of `rx_buf`.
    pub rx_start: usize,
    /// Transmit ring the connection starts with; doubles up to `tx_buf` when a write
    /// finds it full. 0 (the default): a fixed ring of `tx_buf`.
    pub tx_start: usize,
    /// RFC 7323 timestamps.
    pub timestamps: bool,
    /// Keep-alive probe interval; `None` disables keep-alive.
    pub keep_alive: Option<Duration>,
    /// User timeout (RFC 793/5482): the connection is dropped when data stays
    /// unacknowledged this long; `None` uses smoltcp's retransmission limit only.
    pub user_timeout: Option<Duration>,
    /// Give the connection a mirror-mapped receive ring so received messages can be lent
    /// out in place (`Engine::take_inplace_rx`): the zero-copy receive path of the mux.
    /// The ring is then at least 4 KiB. On by default: a psock over a connection without
    /// it copies every received byte once more. Off saves the mirror mapping (two page
    /// mappings per connection) for connections read only with `recv`/`with_tcp`. If the
    /// mapping fails, the connection gets an ordinary ring (`EngineStats::inplace_fallbacks`).
    pub inplace_rx: bool,
    /// Bytes charged to the pinned budget for the connection's state outside its rings
    /// (heap, not pinned: the smoltcp socket, the engine's slot; a layer above adds what it
    /// keeps per connection, as the `ukcm` server does for the mux), so that the budget
    /// bounds everything a connection holds. Default: [`crate::cost::STACK_STATE_BYTES`].
    pub state_bytes: usize,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            nagle: true,
            ack_delay: Some(Duration::from_millis(10)),
            congestion: Congestion::Cubic,
            rx_buf: 64 * 1024,
            tx_buf: 64 * 1024,
            rx_start: 0,
            tx_start: 0,
            timestamps: true,
            keep_alive: None,
            user_timeout: None,
            inplace_rx: true,
            state_bytes: crate::cost::STACK_STATE_BYTES,
        }
    }
}

/// What an engine does when a poll found no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Busy-poll (lowest latency, one core at 100%).
    Spin,
    /// Yield the core to other threads, then poll again.
    Yield,
    /// Sleep this long (or until the next TCP timer, if sooner).
    Park(StdDuration),
    /// Spin `spins` idle polls, then yield for `yields` more, then park.
    Backoff {
        /// Idle polls spent spinning.
        spins: u32,
        /// Idle polls spent yielding after that.
        yields: u32,
        /// Sleep per idle poll after that.
        park: StdDuration,
    },
}

impl Default for IdleStrategy {
    fn default() -> Self {
        IdleStrategy::Backoff { spins: 1000, yields: 100, park: StdDuration::from_micros(200) }
    }
}

/// What an idle loop does next (see [`IdleStrategy::step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStep {
    /// Spin once (`spin_loop` hint) and poll again.
    Spin,
    /// Yield the core, then poll again.
    Yield,
    /// Sleep at most this long on the loop's wakeup source (the port's descriptor through
    /// `Engine::wait_for_frames`, or the clock).
    Sleep(StdDuration),
}

impl IdleStrategy {
    /// The one idle policy every engine loop follows (the engine's `run_until`, the
    /// server's engine threads): the step after `idle_polls` consecutive polls that found
    /// nothing to do (1 for the first).
    pub fn step(&self, idle_polls: u32) -> IdleStep {
        match *self {
            IdleStrategy::Spin => IdleStep::Spin,
            IdleStrategy::Yield => IdleStep::Yield,
            IdleStrategy::Park(d) => IdleStep::Sleep(d),
            IdleStrategy::Backoff { spins, yields, park } => {
                if idle_polls <= spins {
                    IdleStep::Spin
                } else if idle_polls <= spins.saturating_add(yields) {
                    IdleStep::Yield
                } else {
                    IdleStep::Sleep(park)
                }
            }
        }
    }
}

#[cfg(test)]
mod idle_tests {
    use super::*;

    #[test]
    fn backoff_spins_then_yields_then_sleeps_and_busy_polling_never_sleeps() {
        let b = IdleStrategy::Backoff { spins: 2, yields: 1, park: StdDuration::from_micros(7) };
        let steps: Vec<IdleStep> = (1..=5).map(|i| b.step(i)).collect();
        let sleep = IdleStep::Sleep(StdDuration::from_micros(7));
        assert_eq!(steps, [IdleStep::Spin, IdleStep::Spin, IdleStep::Yield, sleep, sleep]);
        let busy = IdleStrategy::Backoff { spins: 2, yields: u32::MAX, park: StdDuration::from_micros(7) };
        assert_eq!(busy.step(u32::MAX), IdleStep::Yield);
        assert_eq!(IdleStrategy::Spin.step(u32::MAX), IdleStep::Spin);
    }
}

/// Configuration of one engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Our MAC; `None` takes the port's own.
    pub mac: Option<[u8; 6]>,
    /// IPv4 address and prefix.
    pub ipv4: Option<Ipv4Cidr>,
    /// IPv6 address and prefix.
    pub ipv6: Option<Ipv6Cidr>,
    /// IPv4 default gateway.
    pub gateway_v4: Option<Ipv4Address>,
    /// IPv6 default gateway.
    pub gateway_v6: Option<Ipv6Address>,
    /// IP MTU; `None` takes the port's.
    pub mtu: Option<usize>,
    /// Budget the socket rings in use are charged to.
    pub budget: Arc<PinnedBudget>,
    /// Options of connections made with [`crate::Engine::connect`] without explicit ones.
    pub default_tcp: TcpOptions,
    /// What `run_until` does when idle.
    pub idle: IdleStrategy,
    /// Frames taken from the port per poll at most.
    pub max_frames_per_poll: usize,
    /// Segments one connection may emit per poll at most (fairness between connections).
    pub max_segments_per_conn: usize,
    /// Events kept for the application before new ones are dropped (and counted).
    pub event_capacity: usize,
    /// Ephemeral port range for `connect` (inclusive).
    pub ephemeral_ports: (u16, u16),
    /// Seed of smoltcp's generator (initial sequence numbers); `None` derives one.
    pub random_seed: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            mac: None,
            ipv4: None,
            ipv6: None,
            gateway_v4: None,
            gateway_v6: None,
            mtu: None,
            budget: PinnedBudget::unlimited(),
            default_tcp: TcpOptions::default(),
            idle: IdleStrategy::default(),
            max_frames_per_poll: 64,
            max_segments_per_conn: 32,
            event_capacity: 65536,
            ephemeral_ports: (49152, 65535),
            random_seed: None,
        }
    }
}
