//! KCM behaviours of the mux over kernel TCP sockets on loopback (no privileges needed).
//! The peers are plain kernel TCP streams reading and writing raw bytes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{frame, loopback_pair};
use ukcm_mux::kernel::KernelPsock;
use ukcm_mux::{
    Completion, CompletionStatus, Msg, MsgSocket, Mux, MuxConfig, MuxEvent, PsockErrorKind, PsockId, SendError,
    SocketConfig, SteerPolicy,
};
use ukcm_nic::PinnedBudget;
use ukcm_parsers::LengthField;

const RING: usize = 64 * 1024;

fn mux_with(cfg: MuxConfig) -> (Mux<KernelPsock>, MsgSocket, Arc<PinnedBudget>) {
    let budget = PinnedBudget::unlimited();
    let (m, s) = Mux::new(cfg, &budget).unwrap();
    (m, s, budget)
}

fn small_cfg() -> MuxConfig {
    MuxConfig {
        socket: SocketConfig { rx_queue: 256, tx_queue: 256, max_in_flight: 256, tx_ring: 256 * 1024 },
        ..MuxConfig::default()
    }
}

fn attach(mux: &mut Mux<KernelPsock>, s: TcpStream, budget: &Arc<PinnedBudget>) -> PsockId {
    mux.attach(KernelPsock::new(s, RING, 256, budget).unwrap(), Box::new(LengthField::thrift()))
}

/// Polls the mux until `done` or the deadline.
fn pump(mux: &mut Mux<KernelPsock>, secs: u64, mut done: impl FnMut(&mut Mux<KernelPsock>) -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        mux.poll(Instant::now());
        if done(mux) {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

/// Generous watchdog for waits on the mux's or the kernel's state: reached only if the
/// awaited state never comes, and then the assertion says where things stood.
const WATCHDOG_SECS: u64 = 60;

/// Waits until `n` bytes are queued on the kernel socket `probe` (a clone of a psock's
/// socket, which is non-blocking), so the mux's next read takes them all in one poll.
fn wait_queued(probe: &TcpStream, n: usize) {
    let mut buf = vec![0u8; n + 1];
    let end = Instant::now() + Duration::from_secs(WATCHDOG_SECS);
    let mut seen = 0;
    while Instant::now() < end {
        match probe.peek(&mut buf) {
            Ok(k) if k >= n => return,
            Ok(k) => seen = k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("peek: {e}"),
        }
        std::thread::yield_now();
    }
    panic!("only {seen} of {n} bytes ever queued on the socket");
}

fn recv_n(mux: &mut Mux<KernelPsock>, sock: &MsgSocket, n: usize) -> Vec<Msg> {
    let mut got = Vec::new();
    let ok = pump(mux, 10, |_| {
        let want = n - got.len();
        sock.recv_batch(&mut got, want);
        got.len() == n
    });
    assert!(ok, "received {} of {n}", got.len());
    got
}

#[test]
fn messages_arrive_whole_and_replies_go_to_their_origin() {
    let (mut mux, mut sock, b) = mux_with(small_cfg());
    let (s1, mut c1) = loopback_pair();
    let (s2, mut c2) = loopback_pair();
    let p1 = attach(&mut mux, s1, &b);
    let p2 = attach(&mut mux, s2, &b);
    // split a message across writes, and two messages in one write
    let m1 = frame(b"first message");
    c1.write_all(&m1[..3]).unwrap();
    c2.write_all(&[frame(b"from two"), frame(b"again")].concat()).unwrap();
    // The rest is written only once the mux holds the first part, waiting for more.
    assert!(
        pump(&mut mux, WATCHDOG_SECS, |m| m.psock_mid_message(p1) == Some(true)),
        "the first 3 bytes never reached the mux: {:?}",
        mux.psock_stats(p1)
    );
    assert_eq!(mux.psock_stats(p1).unwrap().rx_msgs, 0, "3 bytes are not a message");
    c1.write_all(&m1[3..]).unwrap();
    let got = recv_n(&mut mux, &sock, 3);
    let from = |p: PsockId| got.iter().filter(|m| m.origin() == p).map(|m| m.to_vec()).collect::<Vec<_>>();
    assert_eq!(from(p1), vec![m1.clone()]);
    assert_eq!(from(p2), vec![frame(b"from two"), frame(b"again")], "per-psock order kept");
    for m in &got {
        sock.send_to(m.origin(), m, None).unwrap();
    }
    drop(got);
    let mut echo1 = vec![0u8; m1.len()];
    let mut echo2 = vec![0u8; frame(b"from two").len() + frame(b"again").len()];
    let h = std::thread::spawn(move || {
        c1.read_exact(&mut echo1).unwrap();
        c2.read_exact(&mut echo2).unwrap();
        (echo1, echo2)
    });
    pump(&mut mux, 5, |_| h.is_finished());
    let (e1, e2) = h.join().unwrap();
    assert_eq!(e1, m1);
    assert_eq!(e2, [frame(b"from two"), frame(b"again")].concat());
    let t = mux.stats_table();
    assert_eq!(t.total.rx_msgs, 3);
    assert_eq!(t.total.tx_msgs, 3);
    assert!(t.total.tx_bytes > 0);
    assert_eq!(t.total.tx_copied_bytes, 0, "over kernel sockets the write is the one copy");
    assert_eq!(mux.psock_stats(p2).unwrap().rx_msgs, 2);
}

#[test]
fn batch_steering_gives_one_polls_messages_to_one_socket_and_rotates() {
    let (mut mux, s0, b) = mux_with(small_cfg());
    let s1 = s0.try_clone().unwrap();
    let (s, mut c) = loopback_pair();
    let probe = s.try_clone().unwrap();
    attach(&mut mux, s, &b);
    let five = (0..5).map(|i| frame(&[i; 10])).collect::<Vec<_>>().concat();
    c.write_all(&five).unwrap();
    // All five in the kernel's queue before the mux's first poll: one read, one batch.
    wait_queued(&probe, five.len());
    drop(probe);
    assert!(pump(&mut mux, WATCHDOG_SECS, |_| s0.queued() + s1.queued() == 5), "all five delivered");
    let (mut a, mut bb) = (Vec::new(), Vec::new());
    s0.recv_batch(&mut a, 10);
    s1.recv_batch(&mut bb, 10);
    assert!(
        a.len() == 5 && bb.is_empty() || bb.len() == 5 && a.is_empty(),
        "one batch, one socket: {} / {}",
        a.len(),
        bb.len()
    );
    let first_was_0 = !a.is_empty();
    drop((a, bb));
    c.write_all(&frame(b"next poll")).unwrap();
    assert!(pump(&mut mux, WATCHDOG_SECS, |_| s0.queued() + s1.queued() == 1), "the sixth delivered");
    let next = if first_was_0 { s1.try_recv() } else { s0.try_recv() };
    assert!(next.is_some(), "the next poll's batch goes to the other socket");
}

#[test]
fn recv_disable_moves_queued_messages_to_another_socket() {
    let mut cfg = small_cfg();
    cfg.steer = SteerPolicy::Sticky;
    let (mut mux, s0, b) = mux_with(cfg);
    let s1 = s0.try_clone().unwrap();
    let (s, mut c) = loopback_pair();
    attach(&mut mux, s, &b);
    c.write_all(&(0..4).map(|i| frame(&[i; 8])).collect::<Vec<_>>().concat()).unwrap();
    assert!(pump(&mut mux, WATCHDOG_SECS, |_| s0.queued() + s1.queued() == 4), "all four delivered");
    let (holder, other) = if s0.queued() == 4 { (&s0, &s1) } else { (&s1, &s0) };
    assert_eq!((holder.queued(), other.queued()), (4, 0), "sticky: one psock, one socket");
    holder.set_recv_enabled(false);
    let got = recv_n(&mut mux, other, 4);
    let firsts: Vec<u8> = got.iter().map(|m| m[4]).collect();
    assert_eq!(firsts, vec![0, 1, 2, 3], "moved in order");
}

#[test]
fn oversized_message_posts_emsgsize_and_only_that_psock_stops() {
    let mut cfg = small_cfg();
    cfg.max_message = 100;
    let (mut mux, sock, b) = mux_with(cfg);
    let (s1, mut c1) = loopback_pair();
    let (s2, mut c2) = loopback_pair();
    let bad = attach(&mut mux, s1, &b);
    let good = attach(&mut mux, s2, &b);
    c1.write_all(&frame(&[0u8; 200])).unwrap();
    c2.write_all(&frame(b"fine")).unwrap();
    let mut ev = None;
    pump(&mut mux, 5, |_| {
        ev = ev.or(sock.next_event());
        ev.is_some()
    });
    match ev {
        Some(MuxEvent::PsockError(p, e)) => {
            assert_eq!(p, bad);
            assert_eq!(e.kind, PsockErrorKind::MsgSize);
            assert_eq!(e.kind.errno(), 90);
        }
        other => panic!("expected EMSGSIZE, got {other:?}"),
    }
    let m = recv_n(&mut mux, &sock, 1);
    assert_eq!(m[0].origin(), good);
    assert_eq!(mux.psock_stats(bad).unwrap().rx_msg_too_big, 1);
}

#[test]
fn bad_header_posts_eproto() {
    let (mut mux, sock, b) = mux_with(small_cfg());
    let (s, mut c) = loopback_pair();
    let p = mux.attach(KernelPsock::new(s, RING, 64, &b).unwrap(), Box::new(ukcm_parsers::Memcached::default()));
    c.write_all(&[0x55u8; 24]).unwrap();
    let mut ev = None;
    pump(&mut mux, 5, |_| {
        ev = ev.or(sock.next_event());
        ev.is_some()
    });
    assert!(matches!(ev, Some(MuxEvent::PsockError(q, e)) if q == p && e.kind == PsockErrorKind::Proto), "{ev:?}");
}

#[test]
fn slow_message_posts_etimedout() {
    let mut cfg = small_cfg();
    cfg.assembly_timeout = Some(Duration::from_millis(100));
    let (mut mux, sock, b) = mux_with(cfg);
    let (s, mut c) = loopback_pair();
    let p = attach(&mut mux, s, &b);
    c.write_all(&frame(&[1u8; 50])[..20]).unwrap();
    let mut ev = None;
    pump(&mut mux, 5, |_| {
        ev = ev.or(sock.next_event());
        ev.is_some()
    });
    assert!(matches!(ev, Some(MuxEvent::PsockError(q, e)) if q == p && e.kind == PsockErrorKind::TimedOut), "{ev:?}");
    assert_eq!(mux.psock_stats(p).unwrap().rx_msg_timeouts, 1);
}

#[test]
fn close_mid_message_posts_epipe_and_clean_close_does_not() {
    let (mut mux, sock, b) = mux_with(small_cfg());
    let (s1, mut c1) = loopback_pair();
    let (s2, mut c2) = loopback_pair();
    let mid = attach(&mut mux, s1, &b);
    let clean = attach(&mut mux, s2, &b);
    c1.write_all(&frame(&[1u8; 50])[..30]).unwrap();
    c2.write_all(&frame(b"whole")).unwrap();
    drop((c1, c2));
    let mut evs = Vec::new();
    pump(&mut mux, 5, |_| {
        while let Some(e) = sock.next_event() {
            evs.push(e);
        }
        evs.len() == 2
    });
    assert!(
        evs.iter().any(|e| matches!(e, MuxEvent::PsockError(p, er) if *p == mid && er.kind == PsockErrorKind::Pipe)),
        "{evs:?}"
    );
    assert!(evs.contains(&MuxEvent::PsockClosed(clean)), "{evs:?}");
    assert_eq!(recv_n(&mut mux, &sock, 1)[0].to_vec(), frame(b"whole"));
}

#[test]
fn slow_receiver_closes_the_window_and_nothing_is_lost() {
    let mut cfg = small_cfg();
    cfg.socket.rx_queue = 4;
    let (mut mux, sock, b) = mux_with(cfg);
    let (s, c) = loopback_pair();
    attach(&mut mux, s, &b);
    let total = 20_000u32;
    let writer = std::thread::spawn(move || {
        let mut c = c;
        for i in 0..total {
            let mut body = i.to_be_bytes().to_vec();
            body.resize(100, i as u8);
            c.write_all(&frame(&body)).unwrap();
        }
        c
    });
    // Take messages slowly at first so the ring and the kernel buffers fill.
    let mut next = 0u32;
    let deadline = Instant::now() + Duration::from_secs(30);
    while next < total && Instant::now() < deadline {
        mux.poll(Instant::now());
        if next < 200 {
            std::thread::sleep(Duration::from_millis(1));
        }
        while let Some(m) = sock.try_recv() {
            assert_eq!(m.len(), 104);
            assert_eq!(u32::from_be_bytes(m[4..8].try_into().unwrap()), next, "in order, none lost");
            next += 1;
        }
    }
    assert_eq!(next, total);
    writer.join().unwrap();
    assert_eq!(mux.stats().rx_ready_drops, 0);
}

#[test]
fn completions_report_each_cookie_once_after_the_peer_acks() {
    let (mut mux, mut sock, b) = mux_with(small_cfg());
    let (s, mut c) = loopback_pair();
    attach(&mut mux, s, &b);
    for i in 0..100u32 {
        sock.send(&frame(&i.to_be_bytes()), Some(1000 + i)).unwrap();
    }
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 100 * 8];
        c.read_exact(&mut buf).unwrap();
        (c, buf)
    });
    let mut comps: Vec<Completion> = Vec::new();
    pump(&mut mux, 10, |_| {
        sock.completions(&mut comps);
        comps.len() >= 100
    });
    let (_c, buf) = reader.join().unwrap();
    assert_eq!(buf[..8], frame(&0u32.to_be_bytes())[..]);
    pump(&mut mux, 1, |_| false);
    sock.completions(&mut comps);
    let cookies: Vec<u32> = comps.iter().map(|c| c.cookie).collect();
    assert_eq!(cookies, (1000..1100).collect::<Vec<_>>(), "each cookie exactly once, in order");
    assert!(comps.iter().all(|c| c.status == CompletionStatus::Acked));
}

#[test]
fn addressed_send_to_a_dead_psock_completes_as_failed() {
    let (mut mux, mut sock, b) = mux_with(small_cfg());
    let (s, c) = loopback_pair();
    let p = attach(&mut mux, s, &b);
    let _ = mux.unattach(p);
    drop(c);
    sock.send_to(p, &frame(b"x"), Some(7)).unwrap();
    let mut comps = Vec::new();
    pump(&mut mux, 5, |_| sock.completions(&mut comps) > 0);
    assert_eq!(comps, vec![Completion { cookie: 7, status: CompletionStatus::Failed(PsockErrorKind::Pipe) }]);
}

#[test]
fn unattach_mid_message_counts_an_abort_and_closes_the_stream() {
    let (mut mux, _sock, b) = mux_with(small_cfg());
    let (s1, mut c1) = loopback_pair();
    let (s2, _c2) = loopback_pair();
    let mid = attach(&mut mux, s1, &b);
    let idle = attach(&mut mux, s2, &b);
    c1.write_all(&frame(&[0u8; 40])[..10]).unwrap();
    assert!(
        pump(&mut mux, WATCHDOG_SECS, |m| m.psock_mid_message(mid) == Some(true)),
        "the 10 bytes never reached the mux: {:?}",
        mux.psock_stats(mid)
    );
    assert!(mux.unattach(mid).is_none(), "mid-message stream is not handed back");
    assert!(mux.unattach(idle).is_some(), "idle stream is handed back");
    let st = mux.stats();
    assert_eq!((st.psock_attach, st.psock_unattach), (2, 2));
    assert_eq!(st.folded.rx_aborts, 1);
    let mut buf = [0u8; 1];
    c1.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(c1.read(&mut buf).unwrap_or(0), 0, "closed");
}

#[test]
fn too_big_and_full_sends_are_errors_not_losses() {
    let mut cfg = small_cfg();
    cfg.socket.tx_queue = 2;
    let (_mux, mut sock, _b) = mux_with(cfg);
    assert!(matches!(sock.send(&vec![0u8; 300 * 1024], None), Err(SendError::TooBig { .. })));
    sock.send(b"a", None).unwrap();
    sock.send(b"b", None).unwrap();
    assert_eq!(sock.send(b"c", None), Err(SendError::WouldBlock), "no psock drains the queue: backpressure");
}

/// `has_room` answers for the whole batch asked about: once the sent messages are on the
/// wire, room for several messages comes back (their views are counted back first), round
/// after round, far past the number of view slots.
#[test]
fn has_room_comes_back_for_a_batch_once_sent_messages_left() {
    let mut cfg = small_cfg();
    cfg.socket.tx_queue = 4;
    let (mut mux, mut sock, budget) = mux_with(cfg);
    let (ours, mut peer) = loopback_pair();
    attach(&mut mux, ours, &budget);
    let msg = frame(b"x");
    let mut sent = 0usize;
    for round in 0..200 {
        let room = pump(&mut mux, WATCHDOG_SECS, |_| sock.has_room(2, 2 * msg.len()));
        assert!(room, "round {round}: no room for 2 messages after {sent} sent and drained");
        sock.send(&msg, None).unwrap();
        sock.send(&msg, None).unwrap();
        sent += 2;
    }
    pump(&mut mux, 1, |_| false);
    let mut got = vec![0u8; sent * msg.len()];
    peer.set_read_timeout(Some(Duration::from_secs(WATCHDOG_SECS))).unwrap();
    peer.read_exact(&mut got).unwrap();
    assert!(got.chunks(msg.len()).all(|c| c == msg.as_slice()));
}

/// 8 threads × 4 psocks sending messages of random sizes at once: every message reaches the
/// kernel peers whole and unmixed.
#[test]
fn concurrent_senders_never_interleave_messages() {
    let (mut mux, sock, b) = mux_with(MuxConfig {
        socket: SocketConfig { rx_queue: 64, tx_queue: 512, max_in_flight: 64, tx_ring: 1 << 20 },
        ..MuxConfig::default()
    });
    let mut peers = Vec::new();
    for _ in 0..4 {
        let (s, c) = loopback_pair();
        attach(&mut mux, s, &b);
        peers.push(c);
    }
    let per_thread = 12_500u32; // 8 threads: 100k messages
    let threads = 8u32;
    let senders: Vec<_> = (0..threads)
        .map(|t| {
            let mut s = sock.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9u32.wrapping_mul(t + 1);
                for i in 0..per_thread {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let len = 8 + (x % 3000) as usize;
                    let mut body = vec![0u8; len];
                    body[..4].copy_from_slice(&t.to_be_bytes());
                    body[4..8].copy_from_slice(&i.to_be_bytes());
                    for (k, byte) in body[8..].iter_mut().enumerate() {
                        *byte = (t as usize * 31 + i as usize + k) as u8;
                    }
                    s.send_blocking(&frame(&body), None, None, Duration::from_secs(30)).unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = peers
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut n = 0u32;
                loop {
                    let mut hdr = [0u8; 4];
                    if c.read_exact(&mut hdr).is_err() {
                        return n;
                    }
                    let len = u32::from_be_bytes(hdr) as usize;
                    let mut body = vec![0u8; len];
                    c.read_exact(&mut body).expect("whole message");
                    let t = u32::from_be_bytes(body[..4].try_into().unwrap());
                    let i = u32::from_be_bytes(body[4..8].try_into().unwrap());
                    for (k, byte) in body[8..].iter().enumerate() {
                        assert_eq!(*byte, (t as usize * 31 + i as usize + k) as u8, "message {t}/{i} mixed or corrupt");
                    }
                    n += 1;
                }
            })
        })
        .collect();
    pump(&mut mux, 60, |_| senders.iter().all(|h| h.is_finished()));
    pump(&mut mux, 60, |m| m.stats_table().total.tx_msgs == (threads * per_thread) as u64);
    for h in senders {
        h.join().unwrap();
    }
    // let the readers drain, then stop them by their read timeout
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && !readers.iter().all(|h| h.is_finished()) {
        mux.poll(Instant::now());
    }
    let total: u32 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, threads * per_thread);
    let t = mux.stats_table();
    assert!(t.psocks.iter().all(|r| r.stats.tx_msgs > 0), "load spread over every psock");
}

#[test]
fn a_psock_becomes_tx_idle_once_the_peer_acked_messages_sent_without_cookies() {
    let (mut mux, mut sock, b) = mux_with(small_cfg());
    let (s, mut c) = loopback_pair();
    let id = attach(&mut mux, s, &b);
    for i in 0..10u8 {
        sock.send_to(id, &frame(&[i; 100]), None).unwrap();
    }
    let mut got = vec![0u8; 10 * 104];
    let reader = std::thread::spawn(move || {
        c.read_exact(&mut got).unwrap();
        (c, got)
    });
    assert!(pump(&mut mux, 5, |m| m.psock_tx_idle(id) == Some(true)), "never tx-idle: {:?}", mux.psock_stats(id));
    let (_c, got) = reader.join().unwrap();
    assert_eq!(got[104..108], [0, 0, 0, 100]);
}

#[test]
fn a_stale_psock_id_never_reaches_the_connection_that_reuses_its_slot() {
    let (mut mux, mut sock, b) = mux_with(small_cfg());
    let (s1, _c1) = loopback_pair();
    let old = attach(&mut mux, s1, &b);
    assert!(mux.unattach(old).is_some());
    let (s2, mut c2) = loopback_pair();
    let new = attach(&mut mux, s2, &b);
    assert_eq!(old.index(), new.index(), "slot reused");
    assert_ne!(old, new);
    sock.send_to(old, &frame(b"for the old one"), Some(1)).unwrap();
    let mut comps = Vec::new();
    pump(&mut mux, 5, |_| sock.completions(&mut comps) > 0);
    assert_eq!(comps[0].status, CompletionStatus::Failed(PsockErrorKind::Pipe));
    assert_eq!(mux.psock_tx_idle(new), Some(true));
    assert_eq!(mux.psock_tx_idle(old), None);
    c2.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 4];
    assert!(c2.read(&mut buf).is_err(), "nothing reached the new connection");
}

#[test]
fn run_to_completion_handler_echoes_in_place_and_keeps_order() {
    let (mut mux, mut sock, b) = mux_with(small_cfg());
    let (s1, c1) = loopback_pair();
    let (s2, c2) = loopback_pair();
    let p1 = attach(&mut mux, s1, &b);
    attach(&mut mux, s2, &b);
    let n = 3000u32;
    let peers: Vec<_> = [c1, c2]
        .into_iter()
        .enumerate()
        .map(|(k, mut c)| {
            std::thread::spawn(move || {
                let mut all = Vec::new();
                for i in 0..n {
                    let mut body = vec![k as u8; 1 + (i as usize * 37) % 700];
                    body[0] = (i % 251) as u8;
                    all.extend(frame(&body));
                }
                let w = {
                    let mut c = c.try_clone().unwrap();
                    let all = all.clone();
                    std::thread::spawn(move || c.write_all(&all).unwrap())
                };
                let mut back = vec![0u8; all.len() + 4 * n as usize];
                c.read_exact(&mut back).unwrap();
                w.join().unwrap();
                (all, back)
            })
        })
        .collect();
    // The handler replies with "OK" + the message, as two frames appended in one reply.
    let mut handled = 0u32;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !peers.iter().all(|h| h.is_finished()) && Instant::now() < deadline {
        mux.poll_rtc(&mut (), Instant::now(), |_, msg, out| {
            out.extend_from_slice(&frame(b""));
            out.extend_from_slice(msg);
            handled += 1;
        });
    }
    assert_eq!(handled, 2 * n);
    for h in peers {
        let (sent, back) = h.join().unwrap();
        // every reply is an empty frame followed by the message, in order
        let mut expect = Vec::new();
        let mut off = 0;
        while off < sent.len() {
            let len = u32::from_be_bytes(sent[off..off + 4].try_into().unwrap()) as usize + 4;
            expect.extend_from_slice(&frame(b""));
            expect.extend_from_slice(&sent[off..off + len]);
            off += len;
        }
        assert!(back == expect, "replies whole, in order, unmixed");
    }
    assert!(mux.psock_stats(p1).unwrap().tx_msgs == n as u64);
    // message sockets still send alongside the handler
    sock.send(&frame(b"from a socket"), None).unwrap();
    pump(&mut mux, 1, |_| false);
}

#[test]
fn least_loaded_steering_prefers_the_emptier_socket() {
    let mut cfg = small_cfg();
    cfg.steer = SteerPolicy::LeastLoaded;
    let (mut mux, s0, b) = mux_with(cfg);
    let s1 = s0.try_clone().unwrap();
    let (p, mut c) = loopback_pair();
    attach(&mut mux, p, &b);
    // first batch: both empty, the lower id wins
    c.write_all(&[frame(b"a"), frame(b"b")].concat()).unwrap();
    assert!(pump(&mut mux, 5, |_| s0.queued() + s1.queued() == 2));
    assert_eq!((s0.queued(), s1.queued()), (2, 0));
    // next batch goes to the socket with the shorter queue
    c.write_all(&frame(b"c")).unwrap();
    assert!(pump(&mut mux, 5, |_| s0.queued() + s1.queued() == 3));
    assert_eq!((s0.queued(), s1.queued()), (2, 1));
}

#[test]
fn key_hash_steering_keeps_a_key_on_one_socket() {
    let mut cfg = small_cfg();
    // key: the first body byte
    cfg.steer = SteerPolicy::KeyHash(Arc::new(|m: &[u8]| m.get(4).copied().unwrap_or(0) as u64));
    let (mut mux, s0, b) = mux_with(cfg);
    let s1 = s0.try_clone().unwrap();
    let (p, mut c) = loopback_pair();
    attach(&mut mux, p, &b);
    let keys = [0u8, 1, 0, 1, 1, 0, 0];
    c.write_all(&keys.iter().map(|&k| frame(&[k, 9])).collect::<Vec<_>>().concat()).unwrap();
    assert!(pump(&mut mux, 5, |_| s0.queued() + s1.queued() == keys.len()));
    let mut got0 = Vec::new();
    let mut got1 = Vec::new();
    s0.recv_batch(&mut got0, 16);
    s1.recv_batch(&mut got1, 16);
    assert!(got0.iter().all(|m| m[4] == 0) && got1.iter().all(|m| m[4] == 1), "each key on its own socket");
    assert_eq!((got0.len(), got1.len()), (4, 3));
}

#[test]
fn readiness_driven_psocks_deliver_split_messages_and_replies() {
    use ukcm_mux::kernel::KernelReadiness;
    let (mut mux, mut sock, budget) = mux_with(small_cfg());
    let mut ready = KernelReadiness::new(64).unwrap();
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (s, c) = loopback_pair();
        let mut io = KernelPsock::new(s, RING, 256, &budget).unwrap();
        ready.register(&mut io).unwrap();
        ids.push(mux.attach(io, Box::new(LengthField::thrift())));
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        peers.push(c);
    }
    // Idle rounds first: nothing arrives, nothing breaks.
    for _ in 0..10 {
        ready.poll(&mut mux, Some(Duration::ZERO)).unwrap();
        mux.poll(Instant::now());
    }
    assert!(sock.try_recv().is_none());
    // A message split over two writes with idle rounds between; only peer 1 talks.
    let m = frame(b"split across two writes");
    peers[1].write_all(&m[..7]).unwrap();
    // The second half is written only once readiness has led the mux to read the first and
    // its assembler waits mid-message: then the rest must come by a second readiness event.
    let end = Instant::now() + Duration::from_secs(WATCHDOG_SECS);
    while mux.psock_mid_message(ids[1]) != Some(true) {
        assert!(Instant::now() < end, "the first half never reached the mux: {:?}", mux.psock_stats(ids[1]));
        ready.poll(&mut mux, Some(Duration::from_millis(5))).unwrap();
        mux.poll(Instant::now());
    }
    assert!(sock.try_recv().is_none(), "half a message is not a message");
    peers[1].write_all(&m[7..]).unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(WATCHDOG_SECS);
    while got.is_empty() && Instant::now() < end {
        ready.poll(&mut mux, Some(Duration::from_millis(5))).unwrap();
        mux.poll(Instant::now());
        sock.recv_batch(&mut got, 1);
    }
    assert_eq!(got.len(), 1, "the whole message arrived: {:?}", mux.psock_stats(ids[1]));
    assert_eq!(&got[0][..], &m[..]);
    assert_eq!(got[0].origin(), ids[1]);
    // The reply goes back on the origin psock.
    sock.send_to(ids[1], &got[0], None).unwrap();
    drop(got);
    let mut back = vec![0u8; m.len()];
    let end = Instant::now() + Duration::from_secs(10);
    let mut read = 0;
    peers[1].set_nonblocking(true).unwrap();
    while read < m.len() && Instant::now() < end {
        ready.poll(&mut mux, Some(Duration::from_millis(1))).unwrap();
        mux.poll(Instant::now());
        match peers[1].read(&mut back[read..]) {
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(back, m);
    assert_eq!(mux.stats_table().total.rx_msgs, 1);
}
