//! Run-to-completion replies built in place in smoltcp's tx ring (`Request::reply_with`):
//! no copy above the stack while a reply is next on the wire, and the fallbacks (a reply
//! that does not fit the free space, replies behind a deferred answer) keep every byte and
//! the per-connection order. Two engines over the in-memory pair; no privileges needed.

mod common;

use std::time::{Duration, Instant};

use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};
use ukcm_mux::stack_psock::StackPsock;
use ukcm_mux::{Mux, MuxConfig, ReplySlot};
use ukcm_nic::{FaultConfig, MemPort, PinnedBudget};
use ukcm_parsers::LengthField;
use ukcm_stack::TcpOptions;

use common::{message, EchoClient, Pair};

/// What the echo handler does with each request.
#[derive(Clone, Copy, PartialEq)]
enum Answering {
    /// Every reply built with `reply_with` at once.
    InPlace,
    /// Every third request deferred and answered one round later with `Mux::reply`.
    DeferSome,
}

/// Echoes `per_conn` messages of `size(conn, seq)` bytes on `conns` connections, `depth` in
/// flight per connection; checks every byte and the order; returns (tx_bytes, tx_copied_bytes).
fn echo(
    faults: FaultConfig,
    conns: u32,
    per_conn: u32,
    depth: usize,
    size: impl Fn(u32, u32) -> usize,
    answering: Answering,
) -> (u64, u64) {
    let tcp = TcpOptions { nagle: false, ..TcpOptions::default() };
    let pair = Pair { net: 40, faults, seeds: (41, 42), link_capacity: 1024, frames: 8192, tcp };
    let (mut a, mut b) = pair.engines();
    let budget = PinnedBudget::unlimited();
    let cfg = MuxConfig { ordered: true, ..MuxConfig::default() };
    let (mut mux, _sock) = Mux::<StackPsock<MemPort>>::new(cfg, &budget).unwrap();
    // The server's rings start at 4 KiB and grow, as the `ukcm` server's do.
    let server_tcp = TcpOptions {
        rx_buf: 256 * 1024,
        tx_buf: 256 * 1024,
        rx_start: 4096,
        tx_start: 4096,
        inplace_rx: true,
        nagle: false,
        ..TcpOptions::default()
    };
    b.listen_with(7000, 8, server_tcp).unwrap();
    let to = IpEndpoint::new(IpAddress::Ipv4(pair.addr_b()), 7000);
    let mut clients: Vec<EchoClient> = (0..conns).map(|_| EchoClient::new(a.connect(to).unwrap())).collect();
    let mut queued = vec![0u32; conns as usize];
    let mut deferred: Vec<(ReplySlot, Vec<u8>)> = Vec::new();
    let mut count = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut buf = vec![0u8; 64 * 1024];
    while clients.iter().any(|c| c.next_expected < per_conn) {
        assert!(
            Instant::now() < deadline,
            "echo not complete: {:?}",
            clients.iter().map(|c| c.next_expected).collect::<Vec<_>>()
        );
        a.poll().unwrap();
        b.poll().unwrap();
        while let Some(conn) = b.accept(7000) {
            let io = StackPsock::new(&mut b, conn, 256 * 1024, 512, &budget).unwrap();
            mux.attach(io, Box::new(LengthField::thrift()));
        }
        // Last round's deferred requests are answered first, then this round's arrive.
        for (slot, bytes) in deferred.drain(..) {
            mux.reply(slot, &bytes).unwrap();
        }
        mux.poll_engine_requests(&mut b, Instant::now(), |r| {
            count += 1;
            let m = r.bytes();
            if answering == Answering::DeferSome && count % 3 == 0 {
                if let Some(slot) = r.defer() {
                    deferred.push((slot, m.to_vec()));
                    return;
                }
            }
            r.reply_with(m.len(), |dst| dst.copy_from_slice(m));
        });
        for (i, c) in clients.iter_mut().enumerate() {
            if a.info(c.conn).map(|i| i.state) != Ok(tcp::State::Established) {
                continue;
            }
            // keep `depth` messages in flight
            while queued[i] < per_conn && queued[i] < c.next_expected + depth as u32 {
                c.out.extend(message(i as u32, queued[i], size(i as u32, queued[i])));
                queued[i] += 1;
            }
            for (tag, seq) in c.exchange(&mut a, &mut buf) {
                assert_eq!((tag, seq), (i as u32, c.next_expected), "per-connection order");
                c.next_expected += 1;
            }
        }
    }
    let t = mux.stats_table();
    assert_eq!(t.total.rx_msgs, u64::from(conns * per_conn));
    assert_eq!(t.total.tx_msgs, u64::from(conns * per_conn));
    (t.total.tx_bytes, t.total.tx_copied_bytes)
}

#[test]
fn small_replies_next_on_the_wire_are_built_in_smoltcps_ring_with_no_copy() {
    let (tx, copied) = echo(FaultConfig::none(), 4, 200, 1, |_, _| 64, Answering::InPlace);
    assert!(tx > 0);
    assert_eq!(copied, 0, "every reply was built in place: {tx} bytes sent");
}

#[test]
fn pipelined_replies_larger_than_the_free_space_fall_back_in_order_over_a_lossy_link() {
    let faults = FaultConfig { loss: 0.01, reorder: 0.01, duplicate: 0.002, ..FaultConfig::none() };
    // Up to 20 KB, 8 in flight: more than a 4 KiB ring's free space at first, wrapping later.
    let (tx, copied) =
        echo(faults, 3, 150, 8, |c, s| (s as usize * 7919 + c as usize * 104_729) % 20_000 + 1, Answering::InPlace);
    assert!(copied > 0, "some replies did not fit and went through the counted copy");
    assert!(copied < tx, "the rest were built in place: {copied} of {tx} bytes copied");
}

#[test]
fn replies_behind_a_deferred_answer_wait_their_turn() {
    // Order and bytes are checked in `echo`; a deferred answer is copied twice (into the
    // mux, then into smoltcp's ring), and so is a reply held behind one: both counted.
    let (tx, copied) = echo(FaultConfig::none(), 3, 150, 6, |_, s| 40 + (s as usize % 5) * 300, Answering::DeferSome);
    assert!(copied > 0 && tx > 0, "deferred answers and the replies held behind them are copied (counted)");
}
