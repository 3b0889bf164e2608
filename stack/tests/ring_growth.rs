//! Rings that grow with the traffic (`ukcm_stack::autosize`), at every boundary: a message
//! exactly the starting ring, one byte over, a ring that wraps when it grows, views alive
//! while growth is due, the budget running out in the middle of growing, the tx ring (and
//! its shrinking back once idle), the rx ring shrinking back once idle (lent in place or
//! not) and growing again, and the per-connection cost figure. Two engines over the
//! in-memory pair on a manual clock; the server side lends its rx ring in place
//! (`InPlaceRx`), as the mux does.

mod common;

use std::sync::Arc;

use common::*;
use smoltcp::socket::tcp;
use ukcm_nic::{InPlaceRx, PinnedBudget, RingView};
use ukcm_stack::{ConnId, TcpOptions, STACK_STATE_BYTES, START_RING};

const MAX: usize = 512 * 1024;

fn server_opts() -> TcpOptions {
    TcpOptions {
        nagle: false,
        rx_buf: MAX,
        tx_buf: MAX,
        rx_start: START_RING,
        tx_start: START_RING,
        inplace_rx: true,
        ..TcpOptions::default()
    }
}

/// A client connection on A (plain rings that also start small) and the server's on B,
/// lent in place.
struct Conn {
    p: Pair,
    a: ConnId,
    b: ConnId,
    rx: InPlaceRx,
    /// Bytes A still has to send.
    out: Vec<u8>,
}

fn connect(budget_b: Arc<PinnedBudget>) -> Conn {
    let mut p = pair_with(
        ukcm_nic::FaultConfig::none(),
        ukcm_nic::FaultConfig::none(),
        PinnedBudget::unlimited(),
        budget_b,
        4096,
    );
    p.b.listen_with(7, 8, server_opts()).unwrap();
    let client = TcpOptions { inplace_rx: false, ..server_opts() };
    let a = p.a.connect_with(ep4(B4, 7), client).unwrap();
    let mut b = None;
    p.drive(100_000, |ea, eb| {
        b = b.or_else(|| eb.accept(7));
        b.is_some() && ea.info(a).is_ok_and(|i| i.state == tcp::State::Established)
    });
    let b = b.unwrap();
    let info = p.b.info(b).unwrap();
    assert_eq!((info.recv_capacity, info.send_capacity), (START_RING, START_RING), "starts small");
    assert_eq!((info.recv_capacity_max, info.send_capacity_max), (MAX, MAX));
    let rx = p.b.take_inplace_rx(b, 1024).unwrap();
    Conn { p, a, b, rx, out: Vec::new() }
}

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    (0..n as u64).map(|i| pattern(seed, i)).collect()
}

impl Conn {
    /// One step: A sends what fits, both engines poll, B syncs its lender.
    fn step(&mut self) {
        if !self.out.is_empty() {
            let n = self.p.a.send(self.a, &self.out).unwrap();
            self.out.drain(..n);
        }
        self.p.drive(1, |_, _| true);
        self.p.b.inplace_sync(self.b, &mut self.rx).unwrap();
    }

    /// Steps until `n` unlent bytes are there, then lends them as one view.
    fn lend(&mut self, n: usize) -> RingView {
        for _ in 0..200_000 {
            self.step();
            if self.rx.unlent().len() >= n {
                let v = self.rx.lend(n).unwrap();
                assert!(self.rx.contains(v.as_ptr(), v.len()), "lent in place, from the ring in use");
                return v;
            }
        }
        panic!("{n} bytes never arrived: {:?}\n{:?}", self.rx, self.p.b.stats());
    }

    fn rx_cap(&self) -> usize {
        self.p.b.info(self.b).unwrap().recv_capacity
    }
}

#[test]
fn a_message_exactly_the_ring_then_one_byte_over_then_256k_arrive_whole_in_place() {
    let mut c = connect(PinnedBudget::unlimited());
    // exactly the starting ring: fits without growing
    let m = bytes(1, START_RING);
    c.out.extend_from_slice(&m);
    let v = c.lend(START_RING);
    assert_eq!(&v[..], &m[..]);
    drop(v);
    // one byte over: the ring must grow (the message is lent only whole)
    let m = bytes(2, START_RING + 1);
    c.out.extend_from_slice(&m);
    let v = c.lend(START_RING + 1);
    assert_eq!(&v[..], &m[..]);
    assert!(c.rx_cap() > START_RING, "grew for the message one byte over");
    drop(v);
    // 256 KiB, whole and in place
    let m = bytes(3, 256 * 1024);
    c.out.extend_from_slice(&m);
    let v = c.lend(256 * 1024);
    assert!(v[..] == m[..], "256 KiB message intact");
    drop(v);
    let cap = c.rx_cap();
    assert!((256 * 1024..=MAX).contains(&cap), "ring {cap} between the message and the maximum");
    let s = c.p.b.stats();
    assert!(s.rx_ring_grows >= 6, "4 KiB doubled to at least 256 KiB: {s:?}");
    assert_eq!(s.ring_grow_refused_budget + s.ring_grow_refused_memory, 0);
    assert_eq!(s.ring_bytes_in_use, (cap + c.p.b.info(c.b).unwrap().send_capacity) as u64, "charged as they are");
}

#[test]
fn a_ring_that_wraps_its_end_when_it_grows_keeps_the_bytes_in_order() {
    let mut c = connect(PinnedBudget::unlimited());
    let (first, mid, big) = (bytes(4, 2900), bytes(5, 100), bytes(6, 6000));
    c.out.extend_from_slice(&first);
    c.out.extend_from_slice(&mid);
    let v1 = c.lend(2900);
    let v2 = c.lend(100);
    assert_eq!((&v1[..], &v2[..]), (&first[..], &mid[..]));
    // the first released: the ring's read position moves to 2900; the held second blocks
    // growth while the big message fills the ring from 3000 round its end
    drop(v1);
    c.out.extend_from_slice(&big);
    for _ in 0..2000 {
        c.step();
    }
    assert_eq!(c.p.b.stats().rx_ring_grows, 0);
    // full to the window's granularity (16 octets with the scale for 512 KiB), and wrapped:
    // from offset 2900, 100 held octets and the big message's first ones past the end
    let q = c.p.b.info(c.b).unwrap().recv_queue;
    assert!(q > START_RING - 16 && 2900 + q > START_RING, "{q}");
    drop(v2);
    let v = c.lend(6000);
    assert_eq!(&v[..], &big[..], "moved across the wrap without loss or reordering");
    let s = c.p.b.stats();
    assert!(s.rx_ring_grows >= 1 && s.ring_grow_copied_bytes >= 3980, "{s:?}");
}

#[test]
fn growth_waits_while_views_are_alive_and_their_bytes_stay_intact() {
    let mut c = connect(PinnedBudget::unlimited());
    // 31 messages of 100 bytes: more than three quarters of the ring, all held
    let small: Vec<Vec<u8>> = (0..31).map(|i| bytes(100 + i, 100)).collect();
    for m in &small {
        c.out.extend_from_slice(m);
    }
    let held: Vec<RingView> = (0..31).map(|_| c.lend(100)).collect();
    // a message that needs a bigger ring
    let big = bytes(6, 5000);
    c.out.extend_from_slice(&big);
    for _ in 0..2000 {
        c.step();
    }
    assert_eq!(c.rx_cap(), START_RING, "no growth while views are alive");
    assert_eq!(c.p.b.stats().rx_ring_grows, 0);
    assert!(c.p.b.info(c.b).unwrap().recv_queue > START_RING - 16, "the ring filled, the window closed");
    for (v, m) in held.iter().zip(&small) {
        assert_eq!(&v[..], &m[..], "a held view's bytes are never overwritten");
    }
    drop(held);
    let v = c.lend(5000);
    assert_eq!(&v[..], &big[..]);
    assert!(c.p.b.stats().rx_ring_grows >= 1);
}

#[test]
fn budget_exhausted_mid_growth_keeps_the_ring_counts_and_resumes_when_memory_frees() {
    let limit = 64 * 1024u64;
    let budget = PinnedBudget::new(limit);
    let mut c = connect(budget.clone());
    let state = STACK_STATE_BYTES as u64;
    assert_eq!(budget.used(), 2 * START_RING as u64 + state, "the rings and the connection's state");
    // leave room for one doubling of the rx ring (8 KiB charged while the 4 KiB one is swapped out)
    let hog = budget.reserve(limit - 2 * START_RING as u64 - state - 2 * START_RING as u64).unwrap();
    let m = bytes(7, 10_000); // needs a 16 KiB ring
    c.out.extend_from_slice(&m);
    for _ in 0..5000 {
        c.step();
    }
    let s = c.p.b.stats();
    assert_eq!(s.rx_ring_grows, 1, "4 KiB -> 8 KiB fitted: {s:?}");
    assert!(s.ring_grow_refused_budget > 0, "8 KiB -> 16 KiB did not, and was counted: {s:?}");
    assert_eq!(c.rx_cap(), 2 * START_RING, "the connection kept its ring");
    let info = c.p.b.info(c.b).unwrap();
    assert_eq!(info.state, tcp::State::Established, "not aborted");
    assert_eq!(info.recv_queue, 2 * START_RING, "the window closed at what the ring takes: no byte lost");
    assert_eq!(
        s.ring_bytes_in_use + state + hog.bytes(),
        budget.used(),
        "the budget holds exactly the rings and the state"
    );
    assert_eq!(s.state_bytes_in_use, state);
    assert_eq!(c.rx.unlent().len(), 2 * START_RING, "nothing lent: the message is not whole");
    drop(hog);
    let v = c.lend(10_000);
    assert_eq!(&v[..], &m[..], "resumed once the budget had room");
    drop(v);
    let Conn { mut p, a, b, .. } = c;
    p.a.close(a).unwrap();
    p.b.close(b).unwrap();
    p.drive(1_000_000, |ea, eb| ea.connection_count() == 0 && eb.connection_count() == 0);
    assert_eq!((p.b.stats().ring_bytes_in_use, p.b.stats().state_bytes_in_use), (0, 0));
    assert_eq!(budget.used(), 0, "every ring and state charge went back");
}

#[test]
fn a_write_that_finds_the_tx_ring_full_grows_it_and_the_bytes_arrive() {
    let mut c = connect(PinnedBudget::unlimited());
    let m = bytes(8, 100_000);
    let n = c.p.b.send(c.b, &m).unwrap();
    assert_eq!(n, 100_000, "the tx ring grew until the write fitted");
    let s = c.p.b.stats();
    assert_eq!(s.tx_ring_grows, 5, "4 KiB -> 128 KiB: {s:?}");
    assert_eq!(c.p.b.info(c.b).unwrap().send_capacity, 128 * 1024);
    // A reads with plain rings that grow too (not lent: they grow at once)
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let a = c.a;
    c.p.drive(1_000_000, |ea, _| {
        while let Ok(k) = ea.recv(a, &mut buf) {
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
        got.len() == m.len()
    });
    assert!(got == m, "intact and in order");
    // acknowledged, then quiet for a while: the tx ring goes back to the small one
    c.p.settle(smoltcp::time::Duration::from_secs(3));
    let i = c.p.b.info(c.b).unwrap();
    assert_eq!(i.send_capacity, START_RING, "shrunk once idle");
    assert_eq!(c.p.b.stats().tx_ring_shrinks, 1);
    assert_eq!(c.p.b.stats().ring_bytes_in_use, (i.recv_capacity + START_RING) as u64, "and the budget refunded");
    // a bigger write than the maximum takes what the maximum ring holds
    let big = bytes(9, MAX + 1000);
    let n = c.p.b.send(c.b, &big).unwrap();
    assert!(n <= MAX && c.p.b.info(c.b).unwrap().send_capacity == MAX, "never past the maximum");
}

#[test]
fn idle_connections_cost_the_small_rings_and_active_ones_what_they_grew_to() {
    let mut c = connect(PinnedBudget::unlimited());
    // nine more connections that exchange one small message each way, then go idle
    let mut idle = Vec::new();
    let client = TcpOptions { inplace_rx: false, ..server_opts() };
    for _ in 0..9 {
        idle.push(c.p.a.connect_with(ep4(B4, 7), client).unwrap());
    }
    let mut accepted = Vec::new();
    c.p.drive(100_000, |_, eb| {
        while let Some(x) = eb.accept(7) {
            accepted.push(x);
        }
        accepted.len() == 9
    });
    for &x in &idle {
        assert_eq!(c.p.a.send(x, &[1u8; 64]).unwrap(), 64);
    }
    for &x in &accepted {
        assert_eq!(c.p.b.send(x, &[2u8; 64]).unwrap(), 64);
    }
    let mut sink = [0u8; 64];
    c.p.drive(100_000, |ea, eb| {
        let a_done = idle.iter().all(|&x| ea.info(x).is_ok_and(|i| i.recv_queue == 64 && i.send_queue == 0));
        let b_done = accepted.iter().all(|&x| eb.info(x).is_ok_and(|i| i.recv_queue == 64 && i.send_queue == 0));
        a_done && b_done
    });
    for &x in &idle {
        assert_eq!(c.p.a.recv(x, &mut sink).unwrap(), 64);
    }
    for &x in &accepted {
        assert_eq!(c.p.b.recv(x, &mut sink).unwrap(), 64);
    }
    // the first connection carries a 64 KiB message and keeps it
    let m = bytes(10, 64 * 1024);
    c.out.extend_from_slice(&m);
    let held = c.lend(64 * 1024);
    let cost = c.p.b.conn_cost();
    assert_eq!(cost.idle_conns, 9, "{cost}");
    let state = STACK_STATE_BYTES as u64;
    assert_eq!(
        cost.per_idle(),
        2 * START_RING as u64 + state,
        "an idle connection: the small rings and its state: {cost}"
    );
    assert_eq!(cost.active_conns, 1);
    assert!(cost.per_active() >= 64 * 1024, "the active one what it grew to: {cost}");
    let s = c.p.b.stats();
    assert_eq!(cost.total(), s.ring_bytes_in_use + s.state_bytes_in_use);
    drop(held);
    // the clients' plain rings, after 64 B each way, stayed small too
    for &x in &idle {
        let i = c.p.a.info(x).unwrap();
        assert_eq!(i.recv_capacity + i.send_capacity, 2 * START_RING);
    }
}

#[test]
fn an_idle_rx_ring_lent_in_place_shrinks_back_and_grows_again_for_the_next_burst() {
    let mut c = connect(PinnedBudget::unlimited());
    let m = bytes(11, 256 * 1024);
    c.out.extend_from_slice(&m);
    let v = c.lend(256 * 1024);
    assert!(v[..] == m[..]);
    let big = c.rx_cap();
    assert!(big >= 256 * 1024);
    // quiet, but a view is alive: the ring stays (the view points into it)
    c.p.settle(smoltcp::time::Duration::from_secs(3));
    c.step();
    assert_eq!(c.rx_cap(), big, "no shrink under a live view");
    drop(v);
    c.step();
    // quiet with nothing lent: back to the starting ring, the budget refunded
    c.p.settle(smoltcp::time::Duration::from_secs(3));
    c.step();
    assert_eq!(c.rx_cap(), START_RING, "shrunk once idle: {:?}", c.p.b.stats());
    let s = c.p.b.stats();
    assert_eq!(s.rx_ring_shrinks, 1);
    assert_eq!(s.ring_bytes_in_use, (START_RING + c.p.b.info(c.b).unwrap().send_capacity) as u64);
    // the next burst, queued at A before the ACK that tells of the smaller window reached
    // it: A sends by the old window, B takes what fits and trims the rest, A sends that
    // again (its retransmission timer: time must pass) and everything arrives whole, the
    // ring growing again as it goes
    let grows = s.rx_ring_grows;
    let m = bytes(12, 100_000);
    c.out.extend_from_slice(&m);
    let mut rounds = 0;
    while c.rx.unlent().len() < m.len() {
        c.step();
        c.p.settle(smoltcp::time::Duration::from_millis(20));
        rounds += 1;
        assert!(rounds < 10_000, "the burst never arrived: {:?} {:?}", c.rx, c.p.b.stats());
    }
    let v = c.rx.lend(m.len()).unwrap();
    assert!(v[..] == m[..], "the next burst intact");
    assert!(c.p.b.stats().rx_ring_grows > grows, "grew again");
    // a small message on the small ring needs nothing more
    drop(v);
    c.step();
    c.p.settle(smoltcp::time::Duration::from_secs(3));
    c.step();
    assert_eq!(c.rx_cap(), START_RING);
    c.out.extend_from_slice(&bytes(13, 64));
    let v = c.lend(64);
    assert_eq!(&v[..], &bytes(13, 64)[..]);
}

#[test]
fn a_plain_rx_ring_shrinks_once_idle_and_not_while_traffic_flows() {
    let mut c = connect(PinnedBudget::unlimited());
    // B sends 100 KB to A, whose plain rx ring grows; A reads everything
    let m = bytes(14, 100_000);
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let (a, b) = (c.a, c.b);
    // A reads only once its ring is under pressure, so it grows
    c.p.drive(1_000_000, |ea, eb| {
        if sent < m.len() {
            sent += eb.send(b, &m[sent..]).unwrap();
        }
        if ea.info(a).unwrap().recv_capacity > START_RING {
            while let Ok(k) = ea.recv(a, &mut buf) {
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..k]);
            }
        }
        got.len() == m.len()
    });
    assert!(got == m);
    let grown = c.p.a.info(a).unwrap().recv_capacity;
    assert!(grown > START_RING, "A's ring grew: {:?}", c.p.a.stats());
    // traffic every half second: not idle, no shrink
    for i in 0..6 {
        c.p.settle(smoltcp::time::Duration::from_millis(500));
        assert_eq!(c.p.b.send(b, &[i; 64]).unwrap(), 64);
        c.p.drive(100_000, |ea, _| ea.info(a).is_ok_and(|x| x.recv_queue == 64));
        assert_eq!(c.p.a.recv(a, &mut buf).unwrap(), 64);
    }
    assert_eq!(c.p.a.info(a).unwrap().recv_capacity, grown, "busy: kept");
    assert_eq!(c.p.a.stats().rx_ring_shrinks, 0);
    c.p.settle(smoltcp::time::Duration::from_secs(3));
    assert_eq!(c.p.a.info(a).unwrap().recv_capacity, START_RING, "idle: shrunk");
    assert_eq!(c.p.a.stats().rx_ring_shrinks, 1);
    // and B's next 100 KB still arrive whole
    let mut sent = 0;
    let mut got = Vec::new();
    c.p.drive(1_000_000, |ea, eb| {
        if sent < m.len() {
            sent += eb.send(b, &m[sent..]).unwrap();
        }
        while let Ok(k) = ea.recv(a, &mut buf) {
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
        got.len() == m.len()
    });
    assert!(got == m, "intact after the shrink");
}
