//! Kernel-socket psocks whose rx rings start at one page and grow with the traffic
//! (`ukcm_mux::kernel_ring`), over real kernel TCP on loopback: messages of any size up to
//! the maximum arrive whole, byte-exact and in place; a growth waits for lent views, gives
//! way to the pinned budget, and never loses or reorders a byte; an idle ring shrinks back.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{frame, loopback_pair};
use ukcm_mux::kernel::{KernelPsock, KernelReadiness};
use ukcm_mux::kernel_ring::{KernelRingCounts, KernelRingStats};
use ukcm_mux::{Msg, MsgSocket, Mux, MuxConfig, MuxEvent, PsockId, SocketConfig};
use ukcm_nic::PinnedBudget;
use ukcm_parsers::LengthField;

const START: usize = 4096;
const MAX: usize = 512 * 1024;
/// Generous watchdog: reached only if the awaited state never comes.
const WATCHDOG: Duration = Duration::from_secs(60);

fn mux() -> (Mux<KernelPsock>, MsgSocket) {
    let cfg = MuxConfig {
        socket: SocketConfig { rx_queue: 256, tx_queue: 256, max_in_flight: 256, tx_ring: 256 * 1024 },
        max_message: MAX,
        ..MuxConfig::default()
    };
    Mux::new(cfg, &PinnedBudget::unlimited()).unwrap()
}

/// Attaches `s` with a growing ring charged to `budget`; returns its id and ring counters.
fn attach(mux: &mut Mux<KernelPsock>, s: TcpStream, budget: &Arc<PinnedBudget>) -> (PsockId, Arc<KernelRingStats>) {
    let io = KernelPsock::new(s, MAX, 256, budget).unwrap();
    let stats = io.ring_stats();
    (mux.attach(io, Box::new(LengthField::thrift())), stats)
}

/// A framed message of `len` bytes in all (header included) whose every byte says which
/// message it is and where it sits, so a lost, repeated or reordered byte shows.
fn message(seq: u32, len: usize) -> Vec<u8> {
    let body: Vec<u8> =
        (0..len - 4).map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ seq as u8).collect();
    let m = frame(&body);
    assert_eq!(m.len(), len);
    m
}

/// Polls until `n` messages arrived; panics with `what` at the watchdog.
fn recv_n(mux: &mut Mux<KernelPsock>, sock: &MsgSocket, n: usize, what: &str) -> Vec<Msg> {
    let mut got = Vec::new();
    let end = Instant::now() + WATCHDOG;
    while got.len() < n {
        assert!(Instant::now() < end, "{what}: {} of {n} messages arrived", got.len());
        mux.poll(Instant::now());
        let want = n - got.len();
        sock.recv_batch(&mut got, want);
        std::thread::yield_now();
    }
    got
}

/// Waits until `n` bytes are queued on the socket `probe` (a clone of a psock's), so the
/// mux's next fill sees them all at once.
fn wait_queued(probe: &TcpStream, n: usize) {
    let mut buf = vec![0u8; n];
    let end = Instant::now() + WATCHDOG;
    loop {
        match probe.peek(&mut buf) {
            Ok(k) if k >= n => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("peek: {e}"),
        }
        assert!(Instant::now() < end, "{n} bytes never queued");
        std::thread::yield_now();
    }
}

fn counts(s: &Arc<KernelRingStats>) -> KernelRingCounts {
    s.snapshot()
}

#[test]
fn a_message_of_exactly_the_start_ring_is_lent_from_it_without_a_move() {
    let (mut mux, sock) = mux();
    let b = PinnedBudget::unlimited();
    let (s, mut c) = loopback_pair();
    let probe = s.try_clone().unwrap();
    let (p, stats) = attach(&mut mux, s, &b);
    let m = message(1, START);
    c.write_all(&m).unwrap();
    wait_queued(&probe, m.len());
    let got = recv_n(&mut mux, &sock, 1, "exact");
    assert_eq!(&got[0][..], &m[..]);
    assert!(mux.msg_in_ring(&got[0]), "lent in place");
    let k = counts(&stats);
    assert_eq!((k.grows, k.copied_bytes, k.ring_bytes), (0, 0, START as u64), "it fit: nothing grew or moved");
    assert_eq!(mux.psock_stats(p).unwrap().rx_copied_bytes, 0);
}

#[test]
fn one_byte_over_the_start_ring_grows_it_once_moving_what_was_read() {
    let (mut mux, sock) = mux();
    let b = PinnedBudget::unlimited();
    let (s, mut c) = loopback_pair();
    let probe = s.try_clone().unwrap();
    let (p, stats) = attach(&mut mux, s, &b);
    let m = message(2, START + 1);
    c.write_all(&m).unwrap();
    wait_queued(&probe, m.len());
    let got = recv_n(&mut mux, &sock, 1, "one byte over");
    assert_eq!(&got[0][..], &m[..]);
    assert!(mux.msg_in_ring(&got[0]), "lent in place from the grown ring");
    let k = counts(&stats);
    assert_eq!(k.grows, 1);
    assert_eq!(k.copied_bytes, START as u64, "the full start ring moved, once");
    assert_eq!(k.ring_bytes, 2 * START as u64);
    assert_eq!(mux.psock_stats(p).unwrap().rx_copied_bytes, START as u64, "the move shows in the psock's stats");
}

#[test]
fn messages_of_256_kib_arrive_whole_and_byte_exact() {
    let (mut mux, sock) = mux();
    let b = PinnedBudget::unlimited();
    let (s, c) = loopback_pair();
    let (p, stats) = attach(&mut mux, s, &b);
    let n = 12u32;
    let len = 256 * 1024 + 4;
    let writer = std::thread::spawn(move || {
        let mut c = c;
        for i in 0..n {
            c.write_all(&message(i, len)).unwrap();
        }
        c
    });
    let end = Instant::now() + WATCHDOG;
    let mut next = 0u32;
    let mut got = Vec::new();
    while next < n {
        assert!(Instant::now() < end, "{next} of {n} messages: {:?} {:?}", mux.psock_stats(p), counts(&stats));
        mux.poll(Instant::now());
        sock.recv_batch(&mut got, 4);
        for m in got.drain(..) {
            assert!(mux.msg_in_ring(&m), "lent in place");
            assert!(m[..] == message(next, len)[..], "message {next} whole, byte-exact, in order");
            next += 1;
        }
    }
    writer.join().unwrap();
    let k = counts(&stats);
    assert_eq!(k.grows, 7, "4 KiB doubled up to the 512 KiB a 256 KiB message needs: {k:?}");
    assert_eq!(k.ring_bytes, MAX as u64);
    assert_eq!(mux.psock_stats(p).unwrap().rx_msgs, n as u64);
}

#[test]
fn a_growth_moves_bytes_that_wrap_the_ring_end_in_order() {
    let (mut mux, sock) = mux();
    let b = PinnedBudget::unlimited();
    let (s, mut c) = loopback_pair();
    let probe = s.try_clone().unwrap();
    let (_, stats) = attach(&mut mux, s, &b);
    // 3000 bytes (below the three-quarter mark: no pressure) leave the ring's next byte at
    // offset 3000; the next message is read 4096 bytes at a time, wrapping the end.
    let a = message(3, 3000);
    c.write_all(&a).unwrap();
    let got = recv_n(&mut mux, &sock, 1, "first");
    assert_eq!(&got[0][..], &a[..]);
    drop(got);
    assert_eq!(counts(&stats).grows, 0, "3000 bytes put no pressure on 4096");
    let big = message(4, 7000);
    let after = message(5, 100);
    c.write_all(&[big.clone(), after.clone()].concat()).unwrap();
    wait_queued(&probe, big.len() + after.len());
    let got = recv_n(&mut mux, &sock, 2, "wrapped");
    assert!(got[0][..] == big[..], "the wrapped bytes moved intact");
    assert_eq!(&got[1][..], &after[..], "and the stream goes on in order");
    let k = counts(&stats);
    assert!(k.grows >= 1 && k.copied_bytes >= START as u64, "{k:?}");
}

#[test]
fn live_views_hold_off_a_growth_until_they_are_dropped_and_nothing_deadlocks() {
    let (mut mux, sock) = mux();
    let b = PinnedBudget::unlimited();
    let (s, mut c) = loopback_pair();
    let probe = s.try_clone().unwrap();
    let (p, stats) = attach(&mut mux, s, &b);
    let small: Vec<Vec<u8>> = (0..3).map(|i| message(10 + i, 1000)).collect();
    c.write_all(&small.concat()).unwrap();
    let held = recv_n(&mut mux, &sock, 3, "small");
    let ring = counts(&stats).ring_bytes;
    // A message bigger than the ring: it needs a growth, which must wait for the views.
    let big = message(20, 3 * START);
    c.write_all(&big).unwrap();
    wait_queued(&probe, big.len());
    for _ in 0..200 {
        mux.poll(Instant::now());
    }
    let k = counts(&stats);
    assert_eq!((k.grows, k.ring_bytes), (0, ring), "no growth under live views: {k:?}");
    assert!(sock.try_recv().is_none(), "not whole yet: never lent");
    assert_eq!(mux.psock_mid_message(p), Some(true), "the mux has read the start of it");
    for (v, m) in held.iter().zip(&small) {
        assert_eq!(&v[..], &m[..], "held views intact");
    }
    drop(held);
    let got = recv_n(&mut mux, &sock, 1, "big after the views dropped");
    assert!(got[0][..] == big[..], "whole and byte-exact");
    assert!(counts(&stats).grows >= 1);
}

#[test]
fn an_exhausted_budget_slows_a_growth_and_loses_nothing() {
    let (mut mux, sock) = mux();
    // Room for the start ring and one doubling (both mapped during the move), plus ballast
    // that takes the rest until the test lets go of it.
    let ballast_bytes = 1 << 20;
    let b = PinnedBudget::new((START + 2 * START + ballast_bytes) as u64);
    let ballast = b.reserve(ballast_bytes as u64).unwrap();
    let (s, c) = loopback_pair();
    let (p, stats) = attach(&mut mux, s, &b);
    // 20 KB needs a 32 KiB ring: 8 KiB is the most the budget allows now.
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| message(30 + i, 20_000)).collect();
    let all = msgs.concat();
    let writer = std::thread::spawn(move || {
        let mut c = c;
        c.write_all(&all).unwrap();
        c
    });
    let end = Instant::now() + WATCHDOG;
    while counts(&stats).refused_budget < 3 {
        assert!(mux.psock_error(p).is_none(), "a refusal is backpressure, not an abort");
        assert!(Instant::now() < end, "the budget never refused: {:?}", counts(&stats));
        mux.poll(Instant::now());
    }
    assert!(sock.try_recv().is_none(), "no message fits 8 KiB");
    assert_eq!(counts(&stats).ring_bytes, 2 * START as u64, "grew as far as the budget allowed");
    assert!(mux.psock_error(p).is_none(), "a refusal is backpressure, not an abort");
    drop(ballast);
    let got = recv_n(&mut mux, &sock, msgs.len(), "after the budget freed up");
    for (g, m) in got.iter().zip(&msgs) {
        assert!(g[..] == m[..], "whole, byte-exact, in order");
    }
    writer.join().unwrap();
    assert!(mux.next_event().is_none_or(|e| !matches!(e, MuxEvent::PsockError(..))));
    assert_eq!(b.used(), counts(&stats).ring_bytes, "the budget is charged the ring it has");
}

/// Grows a psock's ring with one message, then waits for the idle shrink, polling with
/// `poll` (every round, or on readiness); checks the ring still works afterwards.
fn shrinks_after_idle(mut poll: impl FnMut(&mut Mux<KernelPsock>), register: impl FnOnce(&mut KernelPsock)) {
    let (mut mux, sock) = mux();
    let b = PinnedBudget::unlimited();
    let (s, mut c) = loopback_pair();
    let mut io = KernelPsock::new(s, MAX, 256, &b).unwrap();
    register(&mut io);
    let stats = io.ring_stats();
    mux.attach(io, Box::new(LengthField::thrift()));
    let m = message(40, 5 * START);
    c.write_all(&m).unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + WATCHDOG;
    while got.is_empty() {
        assert!(Instant::now() < end, "never arrived: {:?}", counts(&stats));
        poll(&mut mux);
        sock.recv_batch(&mut got, 1);
    }
    assert!(got[0][..] == m[..]);
    drop(got);
    let grown = counts(&stats);
    assert!(grown.grows >= 1 && grown.ring_bytes > START as u64, "{grown:?}");
    assert_eq!(b.used(), grown.ring_bytes);
    while counts(&stats).shrinks == 0 {
        assert!(Instant::now() < end, "never shrank: {:?}", counts(&stats));
        poll(&mut mux);
    }
    let k = counts(&stats);
    assert_eq!(k.ring_bytes, START as u64, "back to the start ring: {k:?}");
    assert_eq!(b.used(), START as u64, "and the budget got the rest back");
    let again = message(41, 100);
    c.write_all(&again).unwrap();
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(Instant::now() < end, "nothing after the shrink");
        poll(&mut mux);
        sock.recv_batch(&mut got, 1);
    }
    assert_eq!(&got[0][..], &again[..]);
}

#[test]
fn a_grown_ring_polled_every_round_shrinks_after_a_quiet_spell() {
    shrinks_after_idle(
        |mux| {
            mux.poll(Instant::now());
            std::thread::sleep(Duration::from_millis(1));
        },
        |_| {},
    );
}

#[test]
fn a_grown_ring_visited_on_readiness_shrinks_after_a_quiet_spell() {
    let ready = std::cell::RefCell::new(KernelReadiness::new(16).unwrap());
    shrinks_after_idle(
        |mux| {
            // Long waits: only news or a due idle check wakes the poll early.
            ready.borrow_mut().poll(mux, Some(Duration::from_secs(5))).unwrap();
            mux.poll(Instant::now());
        },
        |io| ready.borrow().register(io).unwrap(),
    );
}
