//! Both receive windows closed by application backpressure, over two engines on the
//! in-memory pair (no loss). The server behaves like an echo server that cannot read until
//! its reply is acknowledged: it writes a full tx ring, then reads nothing until the client
//! has acknowledged all of it. The client keeps its tx ring full and reads everything.
//!
//! The server's rx ring fills while its tx is in flight, so its window reaches zero with
//! the client's ACKs still to come. smoltcp rounds the scaled window down on every ACK, so
//! the advertised right edge can retract a few octets behind data the client already sent;
//! the client's later segments (pure ACKs at its SND.NXT, window probes) then fall outside
//! the server's zero window, and smoltcp 0.14 ignored their ACK fields: the server never
//! saw its data acknowledged, never read, and the connection stalled for good (the 64 KiB
//! depth-64 rows of the system benchmark). Fixed in vendor/smoltcp (RFC 9293 3.10.7.4:
//! valid ACKs are accepted even when the window is zero). The server takes 3 frames per
//! poll so that its ACKs land inside the client's bursts, which is what retracts the edge.
//!
//! Both engines run on one manual clock that moves only when neither has anything to do, to
//! its next timer: a stall is "only a retransmission timeout moved the connection on", told
//! apart by clock time, whatever the machine's speed.

use std::time::{Duration, Instant};

use smoltcp::time::Duration as SimDuration;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr};
use ukcm_nic::{mem_pair, FaultConfig, HugePolicy, MemPairConfig, PinnedBudget, PoolConfig};
use ukcm_stack::{Clock, Engine, EngineConfig, ManualClock, TcpOptions};

const A: Ipv4Address = Ipv4Address::new(10, 8, 3, 1);
const B: Ipv4Address = Ipv4Address::new(10, 8, 3, 2);
const PORT: u16 = 7300;

#[test]
fn acks_are_taken_while_the_receive_window_is_closed() {
    let pc = MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 8192 },
        link_capacity: 2048,
        a_to_b: FaultConfig::none(),
        b_to_a: FaultConfig::none(),
        huge: HugePolicy::Never,
        ..MemPairConfig::default()
    };
    let (pa, pb) = mem_pair(&pc, &PinnedBudget::unlimited()).unwrap();
    let tcp = TcpOptions { rx_buf: 512 * 1024, tx_buf: 512 * 1024, nagle: false, ..TcpOptions::default() };
    let cfg = |ip| EngineConfig { ipv4: Some(Ipv4Cidr::new(ip, 24)), default_tcp: tcp, ..EngineConfig::default() };
    // The server takes a few frames per poll and acknowledges each handful, so its ACKs
    // land in the middle of the client's bursts: with the window scaled by 16, the
    // rounded-down right edge then moves back behind bytes the client already sent.
    let server_cfg = EngineConfig { max_frames_per_poll: 3, ..cfg(B) };
    let clock = ManualClock::new();
    let mut a = Engine::with_clock(pa, cfg(A), Box::new(clock.clone())).unwrap();
    let mut b = Engine::with_clock(pb, server_cfg, Box::new(clock.clone())).unwrap();
    b.listen(PORT, 4).unwrap();
    let client = a.connect(IpEndpoint::new(IpAddress::Ipv4(B), PORT)).unwrap();
    let mut server = None;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut buf = vec![0u8; 256 * 1024];
    const ROUNDS: usize = 8;
    let mut rounds = 0;
    // Server phase: false = writing its reply (tx ring full), not reading; true = reading.
    let mut reading = false;
    let mut replying = false;
    const REPLY: usize = 512 * 1024;
    let mut reply_left = REPLY;
    let (mut last, mut progress) = ((0usize, 0usize), clock.now());
    let (mut client_rx, mut server_rx) = (0usize, 0usize);
    // Only against a livelock (polls that always find work, so the clock never moves).
    let watchdog = Instant::now() + Duration::from_secs(120);
    while rounds < ROUNDS {
        let worked = a.poll().unwrap() | b.poll().unwrap();
        if server.is_none() {
            server = b.accept(PORT);
        }
        // client: keep the tx ring full, read everything
        while a.send(client, &chunk).unwrap_or(0) > 0 {}
        loop {
            let n = a.recv(client, &mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            client_rx += n;
        }
        if let Some(s) = server {
            // the reply goes out once the client has closed our receive window
            let info = b.info(s).unwrap();
            if !reading && (replying || info.recv_capacity - info.recv_queue < 1024) {
                replying = true;
                // one reply: a full tx ring
                while reply_left > 0 {
                    let n = b.send(s, &chunk[..reply_left.min(chunk.len())]).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    reply_left -= n;
                }
                // read only once the whole reply is acknowledged
                if reply_left == 0 && b.info(s).unwrap().send_queue == 0 {
                    reading = true;
                }
            }
            if reading {
                loop {
                    let n = b.recv(s, &mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    server_rx += n;
                }
                reading = false;
                replying = false;
                reply_left = REPLY;
                rounds += 1;
            }
        }
        let moved = (client_rx, server_rx) != last;
        if moved {
            last = (client_rx, server_rx);
            progress = clock.now();
        } else if !worked {
            // Nothing to do until a timer: move the clock to the earliest one.
            let next = [a.poll_at(), b.poll_at()].into_iter().flatten().min();
            match next {
                Some(t) if t > clock.now() => clock.advance_to(t),
                _ => clock.advance(SimDuration::from_millis(1)),
            }
        }
        // Under 1 s of clock time: smoltcp's minimum RTO, the only thing that ever moved a
        // stalled connection on (delayed ACKs and window probes come sooner).
        let stalled = clock.now() - progress >= SimDuration::from_millis(900);
        assert!(
            !stalled && Instant::now() < watchdog,
            "{} after {rounds} rounds: client received {client_rx}, server received {server_rx}\nclient {:?}\nserver {:?}",
            if stalled { "stalled (only a retransmission timeout would move it on)" } else { "watchdog: still polling after 120 s" },
            a.info(client).unwrap(),
            server.map(|s| b.info(s).unwrap())
        );
    }
}
