//! 64 KiB messages at depth 64 on 4 connections through the mux over the userspace stack
//! (two engines over the in-memory pair), with the echo server's settings: 256 KiB psock
//! rings, 512 KiB smoltcp rings: the system benchmark's row that stalled. The server's
//! windows close under backpressure; before the zero-window ACK fix in vendor/smoltcp the
//! run-to-completion variants stalled in most runs (the deterministic reproduction is
//! zero_window_ack.rs).
//!
//! The engines and the mux run on a manual clock that moves, to the next timer, only when
//! nothing else can happen; a connection is stalled when the clock has run far past every
//! retransmission timeout without a byte echoed.

mod common;

use std::time::{Duration, Instant};

use smoltcp::time::Duration as SimDuration;
use smoltcp::wire::{IpAddress, IpEndpoint};
use ukcm_mux::stack_psock::StackPsock;
use ukcm_mux::{Mux, MuxConfig, SocketConfig};
use ukcm_nic::{FaultConfig, MemPort, PinnedBudget};
use ukcm_parsers::LengthField;
use ukcm_stack::{Clock, ConnId, Engine, ManualClock, TcpOptions};

use common::Pair;

const PORT: u16 = 7200;

/// Clock time without a byte echoed that means stalled: twice smoltcp's largest
/// retransmission timeout (60 s), so loss recovery with backoff is not mistaken for a stall.
const STALL: SimDuration = SimDuration::from_secs(120);

fn engines(faults: FaultConfig, clock: &ManualClock) -> (Engine<MemPort>, Engine<MemPort>, Pair) {
    let tcp = TcpOptions { rx_buf: 512 * 1024, tx_buf: 512 * 1024, nagle: false, ..TcpOptions::default() };
    let pair = Pair { net: 2, faults, seeds: (31, 32), link_capacity: 2048, frames: 8192, tcp };
    let (a, b) = pair.engines_on(clock);
    (a, b, pair)
}

struct Client {
    conn: ConnId,
    sent: usize,
    partial: usize,
    got_bytes: usize,
}

fn run(rtc: bool, faults: FaultConfig) {
    const CONNS: usize = 4;
    const SIZE: usize = 64 * 1024;
    const DEPTH: usize = 64;
    const TOTAL: usize = 256; // messages per connection
    let clock = ManualClock::new();
    let (mut a, mut b, pair) = engines(faults, &clock);
    // The mux's time (assembly timeouts) is the same clock.
    let epoch = Instant::now();
    let mux_now = |clock: &ManualClock| epoch + Duration::from_micros(clock.now().total_micros() as u64);
    let budget = PinnedBudget::unlimited();
    b.listen(PORT, 16).unwrap();
    let cfg = MuxConfig {
        socket: SocketConfig { rx_queue: 1024, tx_queue: 1024, max_in_flight: 1024, tx_ring: 1 << 20 },
        max_message: 256 * 1024,
        ..MuxConfig::default()
    };
    let (mut mux, mut sock) = Mux::<StackPsock<MemPort>>::new(cfg, &budget).unwrap();
    let mut clients: Vec<Client> = (0..CONNS)
        .map(|_| Client {
            conn: a.connect(IpEndpoint::new(IpAddress::Ipv4(pair.addr_b()), PORT)).unwrap(),
            sent: 0,
            partial: 0,
            got_bytes: 0,
        })
        .collect();
    let mut msg = ((SIZE - 4) as u32).to_be_bytes().to_vec();
    msg.resize(SIZE, 0x5a);
    let mut buf = vec![0u8; 256 * 1024];
    let mut held = None;
    let mut server_conns: Vec<ConnId> = Vec::new();
    let mut last_progress = clock.now();
    let mut last_total = 0;
    // Only against a livelock (polls that always find work, so the clock never moves).
    let watchdog = Instant::now() + Duration::from_secs(120);
    loop {
        let mut worked = a.poll().unwrap() | b.poll().unwrap();
        while let Some(conn) = b.accept(PORT) {
            worked = true;
            server_conns.push(conn);
            let io = StackPsock::new(&mut b, conn, 256 * 1024, 1024, &budget).unwrap();
            mux.attach(io, Box::new(LengthField::thrift()));
        }
        if rtc {
            worked |= mux.poll_engine_rtc(&mut b, mux_now(&clock), |_, m, out| out.extend_from_slice(m));
        } else {
            worked |= mux.poll_engine(&mut b, mux_now(&clock));
            while let Some(m) = held.take().or_else(|| sock.try_recv()) {
                if sock.send_to(m.origin(), &m, None).is_err() {
                    held = Some(m);
                    break;
                }
                worked = true;
            }
        }
        for c in clients.iter_mut() {
            // keep DEPTH messages in flight
            while c.sent < TOTAL && c.sent < c.got_bytes / SIZE + DEPTH {
                let n = a.send(c.conn, &msg[c.partial..]).unwrap_or(0);
                if n == 0 {
                    break;
                }
                worked = true;
                c.partial += n;
                if c.partial == SIZE {
                    c.partial = 0;
                    c.sent += 1;
                }
            }
            loop {
                let n = a.recv(c.conn, &mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                c.got_bytes += n;
            }
        }
        let total: usize = clients.iter().map(|c| c.got_bytes).sum();
        if total == CONNS * TOTAL * SIZE {
            break;
        }
        if total != last_total {
            last_total = total;
            last_progress = clock.now();
        } else if !worked {
            // Nothing to do until a timer: move the clock to the earliest one.
            match [a.poll_at(), b.poll_at()].into_iter().flatten().min() {
                Some(t) if t > clock.now() => clock.advance_to(t),
                _ => clock.advance(SimDuration::from_millis(1)),
            }
        }
        let stalled = clock.now() - last_progress >= STALL;
        assert!(
            !stalled && Instant::now() < watchdog,
            "{} (rtc {rtc}): echoed {:?} of {TOTAL} per connection, sent {:?}\nclient conns {:?}\nserver conns {:?}\nserver {:?}\nclient {:?}\n{}",
            if stalled { "stalled: no byte echoed in 120 s of clock time" } else { "watchdog: still polling after 120 s" },
            clients.iter().map(|c| c.got_bytes as f64 / SIZE as f64).collect::<Vec<_>>(),
            clients.iter().map(|c| c.sent).collect::<Vec<_>>(),
            clients.iter().map(|c| a.info(c.conn).unwrap()).collect::<Vec<_>>(),
            server_conns.iter().map(|c| b.info(*c).unwrap()).collect::<Vec<_>>(),
            b.stats(),
            a.stats(),
            mux.stats_table()
        );
    }
}

#[test]
fn big_messages_deep_pipeline_workers() {
    run(false, FaultConfig::none());
}

#[test]
fn big_messages_deep_pipeline_rtc() {
    run(true, FaultConfig::none());
}

#[test]
fn big_messages_deep_pipeline_lossy_workers() {
    run(false, FaultConfig { loss: 0.002, reorder: 0.002, ..FaultConfig::none() });
}

#[test]
fn big_messages_deep_pipeline_lossy_rtc() {
    run(true, FaultConfig { loss: 0.002, reorder: 0.002, ..FaultConfig::none() });
}
