//! The mux over the userspace stack: two engines over the in-memory pair (with loss,
//! reordering and duplication), the server side a mux echoing every message on the
//! connection it came from. No privileges needed.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};
use ukcm_mux::stack_psock::StackPsock;
use ukcm_mux::{Completion, CompletionStatus, Mux, MuxConfig, PsockId, SocketConfig};
use ukcm_nic::{FaultConfig, MemPort, PinnedBudget};
use ukcm_parsers::LengthField;
use ukcm_stack::{Engine, TcpOptions};

use common::{message, EchoClient, Pair};

fn engines(faults: FaultConfig) -> (Engine<MemPort>, Engine<MemPort>, Pair) {
    let tcp = TcpOptions { rx_buf: 256 * 1024, tx_buf: 256 * 1024, ..TcpOptions::default() };
    let pair = Pair { net: 0, faults, seeds: (21, 22), link_capacity: 1024, frames: 8192, tcp };
    let (a, b) = pair.engines();
    (a, b, pair)
}

#[test]
fn zero_copy_echo_over_a_lossy_link_is_byte_exact_and_per_connection_ordered() {
    lossy_echo(true);
}

#[test]
fn copying_echo_over_a_lossy_link_counts_its_copy() {
    lossy_echo(false);
}

fn lossy_echo(zero_copy: bool) {
    let faults = FaultConfig { loss: 0.01, reorder: 0.01, duplicate: 0.001, ..FaultConfig::none() };
    let (mut a, mut b, pair) = engines(faults);
    let budget = PinnedBudget::unlimited();
    let cfg = MuxConfig {
        steer: ukcm_mux::SteerPolicy::Sticky,
        socket: SocketConfig { rx_queue: 256, tx_queue: 256, max_in_flight: 4096, tx_ring: 1 << 20 },
        ..MuxConfig::default()
    };
    let (mut mux, mut sock) = Mux::<StackPsock<MemPort>>::new(cfg, &budget).unwrap();
    let server_tcp =
        TcpOptions { rx_buf: 256 * 1024, tx_buf: 256 * 1024, inplace_rx: zero_copy, ..TcpOptions::default() };
    b.listen_with(7000, 8, server_tcp).unwrap();
    let conns = 4u32;
    let per_conn = 300u32;
    let mut clients: Vec<EchoClient> = (0..conns)
        .map(|_| EchoClient::new(a.connect(IpEndpoint::new(IpAddress::Ipv4(pair.addr_b()), 7000)).unwrap()))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        for seq in 0..per_conn {
            let len = (seq as usize * 7919 + i * 104_729) % 20_000;
            c.out.extend(message(i as u32, seq, len + 1));
        }
    }
    let mut psocks: Vec<PsockId> = Vec::new();
    let mut cookie = 0u32;
    let mut comps: Vec<Completion> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut buf = vec![0u8; 64 * 1024];
    let mut held = None;
    while clients.iter().any(|c| c.next_expected < per_conn) {
        assert!(
            Instant::now() < deadline,
            "echo not complete: {:?}",
            clients.iter().map(|c| c.next_expected).collect::<Vec<_>>()
        );
        a.poll().unwrap();
        b.poll().unwrap();
        // server: accept and attach, then echo
        while let Some(conn) = b.accept(7000) {
            let io = StackPsock::new(&mut b, conn, 256 * 1024, 512, &budget).unwrap();
            assert_eq!(io.is_zero_copy(), zero_copy);
            psocks.push(mux.attach(io, Box::new(LengthField::thrift())));
        }
        mux.poll_engine(&mut b, Instant::now());
        // echo; a message that meets a full tx queue is kept and retried next round
        while let Some(m) = held.take().or_else(|| sock.try_recv()) {
            assert!(mux.msg_in_ring(&m), "a delivered message is a view into its psock's rx ring");
            if sock.send_to(m.origin(), &m, Some(cookie)).is_err() {
                held = Some(m);
                break;
            }
            cookie += 1;
        }
        sock.completions(&mut comps);
        // client: write what fits, read what came back and check it
        for c in clients.iter_mut() {
            if a.info(c.conn).map(|i| i.state) != Ok(tcp::State::Established) {
                continue;
            }
            for (_, seq) in c.exchange(&mut a, &mut buf) {
                assert_eq!(seq, c.next_expected, "per-connection order");
                c.next_expected += 1;
            }
        }
    }
    // every echo was acknowledged by the client's TCP: each cookie completes once
    let end = Instant::now() + Duration::from_secs(30);
    while comps.len() < cookie as usize && Instant::now() < end {
        a.poll().unwrap();
        b.poll().unwrap();
        mux.poll_engine(&mut b, Instant::now());
        sock.completions(&mut comps);
    }
    let mut seen: Vec<u32> = comps.iter().map(|c| c.cookie).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..cookie).collect::<Vec<_>>(), "every cookie exactly once");
    assert!(comps.iter().all(|c| c.status == CompletionStatus::Acked));
    let t = mux.stats_table();
    assert_eq!(t.total.rx_msgs, (conns * per_conn) as u64);
    assert_eq!(t.total.tx_msgs, (conns * per_conn) as u64);
    assert_eq!(psocks.len(), conns as usize);
    // transmit's extra copy (socket tx ring -> smoltcp's tx ring) is counted byte for byte
    assert_eq!(t.total.tx_copied_bytes, t.total.tx_bytes);
    if zero_copy {
        assert_eq!(t.total.rx_copied_bytes, 0, "messages were lent in place");
    } else {
        // the fallback's extra copy is counted, byte for byte (see stack_psock.rs)
        assert_eq!(t.total.rx_copied_bytes, t.total.rx_bytes);
    }
    let _ = Arc::clone(&budget);
}
