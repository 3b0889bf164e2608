//! Two ukcm engines over the in-memory pair (no privileges needed).

mod common;

use common::*;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::IpEndpoint;
use ukcm_nic::{FaultConfig, PinnedBudget, Port};
use ukcm_stack::Clock;
use ukcm_stack::{ConnId, Event, RefuseReason};

#[test]
fn connect_accept_echo_close() {
    let mut p = pair();
    p.b.listen(7, 4).unwrap();
    let c = p.a.connect(ep4(B4, 7)).unwrap();
    let mut server = None;
    p.drive(10_000, |a, b| {
        if server.is_none() {
            server = b.accept(7);
        }
        server.is_some() && a.info(c).unwrap().state == tcp::State::Established
    });
    let s = server.unwrap();
    assert!(drain_events(&mut p.a).contains(&Event::Connected(c)));
    assert!(drain_events(&mut p.b).contains(&Event::Accepted { conn: s, port: 7 }));
    assert_eq!(p.a.send(c, b"hello ukcm").unwrap(), 10);
    let mut buf = [0u8; 64];
    let mut echoed = Vec::new();
    p.drive(10_000, |a, b| {
        let n = b.recv(s, &mut buf).unwrap();
        if n > 0 {
            b.send(s, &buf[..n]).unwrap();
        }
        let mut out = [0u8; 64];
        let n = a.recv(c, &mut out).unwrap();
        echoed.extend_from_slice(&out[..n]);
        echoed.len() == 10
    });
    assert_eq!(&echoed, b"hello ukcm");
    let mut ready = Vec::new();
    p.b.drain_ready(&mut ready);
    p.a.close(c).unwrap();
    let mut b_closed = false;
    p.drive(10_000, |_, b| {
        if !b_closed && b.info(s).is_ok_and(|i| i.state == tcp::State::CloseWait) {
            b.close(s).unwrap();
            b_closed = true;
        }
        b_closed && b.info(s).is_err()
    });
    assert!(drain_events(&mut p.b).contains(&Event::Closed(s)));
    // a is in TIME-WAIT for smoltcp's 10 s, then its slot is recycled too
    p.settle(Duration::from_secs(11));
    assert!(drain_events(&mut p.a).contains(&Event::Closed(c)));
    assert_eq!(p.a.stats().sockets_in_use + p.b.stats().sockets_in_use, 0);
    assert_eq!(p.a.stats().ring_bytes_in_use + p.b.stats().ring_bytes_in_use, 0);
}

#[test]
fn connect_to_closed_port_is_reset() {
    let mut p = pair();
    let c = p.a.connect(ep4(B4, 9)).unwrap();
    let mut ev = Vec::new();
    p.drive(10_000, |a, _| {
        ev.extend(a.events());
        !ev.is_empty()
    });
    assert_eq!(ev, vec![Event::Reset(c)]);
    assert!(p.a.info(c).is_err(), "slot recycled");
}

fn bulk(v6: bool, bytes: u64, max_steps: usize) {
    let lossy = |seed| FaultConfig { loss: 0.01, reorder: 0.01, duplicate: 0.001, seed, ..FaultConfig::none() };
    let mut p = pair_with(lossy(11), lossy(12), PinnedBudget::unlimited(), PinnedBudget::unlimited(), 8192);
    let o = opts(256 * 1024);
    p.b.listen_with(5001, 1, o).unwrap();
    let remote = if v6 { ep6(B6, 5001) } else { ep4(B4, 5001) };
    let c = p.a.connect_with(remote, o).unwrap();
    let mut s: Option<ConnId> = None;
    let (mut sa, mut sb) = (Stream::default(), Stream::default());
    let t0 = std::time::Instant::now();
    p.drive(max_steps, |a, b| {
        if s.is_none() {
            s = b.accept(5001);
        }
        if a.info(c).is_ok_and(|i| i.state == tcp::State::Established) {
            sa.pump(a, c, 1, 2, bytes);
        }
        if let Some(s) = s {
            sb.pump(b, s, 2, 1, bytes);
        }
        sa.got == bytes && sb.got == bytes
    });
    let faults = p.a.port().tx_faults();
    // lazy timers: the heap stays small however many segments were sent
    assert!(p.a.stats().timer_entries < 16 && p.b.stats().timer_entries < 16, "{:?}", p.a.stats());
    eprintln!(
        "bulk v6={v6}: {bytes} bytes each way in {:?} (wall), {:?} simulated; a->b faults {faults:?}",
        t0.elapsed(),
        p.clock.now()
    );
    assert!(faults.lost > 0 && faults.reordered > 0, "faults were injected");
    assert_eq!((sa.sent, sb.sent), (bytes, bytes));
}

/// 16 MiB each way over IPv4 with 1% loss, 1% reordering, 0.1% duplication.
#[test]
fn bulk_lossy_16mib_v4_each_way_byte_exact() {
    bulk(false, 16 << 20, 200_000_000);
}

/// The same over IPv6 (NDP instead of ARP).
#[test]
fn bulk_lossy_16mib_v6_each_way_byte_exact() {
    bulk(true, 16 << 20, 200_000_000);
}

#[test]
fn backlog_128_simultaneous_connects_all_accepted() {
    let mut p = pair();
    let o = opts(4096);
    p.b.listen_with(80, 128, o).unwrap();
    let conns: Vec<ConnId> = (0..128).map(|_| p.a.connect_with(ep4(B4, 80), o).unwrap()).collect();
    let mut accepted = Vec::new();
    p.drive(100_000, |a, b| {
        b.stats().accepted == 128 && conns.iter().all(|c| a.info(*c).is_ok_and(|i| i.state == tcp::State::Established))
    });
    // nothing accepted yet by the application: all 128 wait in the backlog
    while let Some(s) = p.b.accept(80) {
        accepted.push(s);
    }
    assert_eq!(accepted.len(), 128);
    assert_eq!(p.b.stats().refused_backlog, 0);
    assert_eq!(p.b.stats().accepted, 128);
}

#[test]
fn backlog_full_drops_syns_until_accept_makes_room() {
    let mut p = pair();
    let o = opts(4096);
    p.b.listen_with(81, 2, o).unwrap();
    let conns: Vec<ConnId> = (0..4).map(|_| p.a.connect_with(ep4(B4, 81), o).unwrap()).collect();
    let established = |a: &ukcm_stack::Engine<_>| {
        conns.iter().filter(|c| a.info(**c).is_ok_and(|i| i.state == tcp::State::Established)).count()
    };
    p.settle(Duration::from_millis(200));
    assert_eq!(established(&p.a), 2);
    assert!(p.b.stats().refused_backlog >= 2);
    assert!(p.b.events().any(|e| matches!(e, Event::Refused { port: 81, reason: RefuseReason::Backlog, .. })));
    // accepting makes room; the SYN retransmissions get in
    let mut n = 0;
    p.drive(1_000_000, |a, b| {
        while b.accept(81).is_some() {
            n += 1;
        }
        n == 4 && established(a) == 4
    });
}

#[test]
fn thousand_connections_leave_no_leak() {
    let budget_a = PinnedBudget::new(64 << 20);
    let budget_b = PinnedBudget::new(64 << 20);
    let mut p = pair_with(FaultConfig::none(), FaultConfig::none(), budget_a.clone(), budget_b.clone(), 4096);
    let pool_a = p.a.port().tx_pool().clone();
    let pool_b = p.b.port().tx_pool().clone();
    let o = opts(4096);
    p.b.listen_with(90, 256, o).unwrap();
    let mut done = 0usize;
    for _round in 0..10 {
        let conns: Vec<ConnId> = (0..100).map(|_| p.a.connect_with(ep4(B4, 90), o).unwrap()).collect();
        let mut servers: Vec<ConnId> = Vec::new();
        let mut echoed = vec![false; conns.len()];
        p.drive(1_000_000, |a, b| {
            while let Some(s) = b.accept(90) {
                servers.push(s);
            }
            for (i, c) in conns.iter().enumerate() {
                if let Ok(inf) = a.info(*c) {
                    if inf.state == tcp::State::Established && inf.send_queue == 0 && !echoed[i] && inf.recv_queue == 0
                    {
                        let _ = a.send(*c, b"ping");
                    }
                }
                let mut buf = [0u8; 8];
                if a.recv(*c, &mut buf).is_ok_and(|n| n == 4) {
                    assert_eq!(&buf[..4], b"ping");
                    echoed[i] = true;
                }
            }
            for s in &servers {
                let mut buf = [0u8; 8];
                if let Ok(n) = b.recv(*s, &mut buf) {
                    if n > 0 {
                        b.send(*s, &buf[..n]).unwrap();
                    }
                }
            }
            echoed.iter().all(|e| *e)
        });
        for c in &conns {
            p.a.close(*c).unwrap();
        }
        p.drive(1_000_000, |_, b| {
            for s in &servers {
                if b.info(*s).is_ok_and(|i| i.state == tcp::State::CloseWait) {
                    b.close(*s).unwrap();
                }
            }
            servers.iter().all(|s| b.info(*s).is_err())
        });
        done += conns.len();
    }
    assert_eq!(done, 1000);
    p.settle(Duration::from_secs(11)); // TIME-WAIT
    for e in [&p.a, &p.b] {
        let st = e.stats();
        assert_eq!(st.sockets_in_use, 0, "{st:?}");
        assert_eq!(st.ring_bytes_in_use, 0);
        assert_eq!(e.connection_count(), 0);
    }
    assert_eq!(p.a.stats().closed, 1000);
    assert_eq!(p.b.stats().closed, 1000);
    assert_eq!(p.b.stats().accepted, 1000);
    assert_eq!(budget_a.used() + budget_b.used(), 0, "every ring byte refunded");
    drop(p);
    assert_eq!(pool_a.outstanding() + pool_b.outstanding(), 0, "no frame leaked");
}

#[test]
fn peer_reset_mid_transfer_is_reported_and_others_keep_going() {
    let mut p = pair();
    let o = opts(64 * 1024);
    p.b.listen_with(70, 8, o).unwrap();
    let c1 = p.a.connect_with(ep4(B4, 70), o).unwrap();
    let c2 = p.a.connect_with(ep4(B4, 70), o).unwrap();
    let mut srv = Vec::new();
    p.drive(100_000, |_, b| {
        while let Some(s) = b.accept(70) {
            srv.push(s);
        }
        srv.len() == 2
    });
    let find = |b: &ukcm_stack::Engine<_>, c: ConnId, a: &ukcm_stack::Engine<_>| {
        let local: IpEndpoint = a.info(c).unwrap().local.unwrap();
        *srv.iter().find(|s| b.info(**s).unwrap().remote == Some(local)).unwrap()
    };
    let s1 = find(&p.b, c1, &p.a);
    let s2 = find(&p.b, c2, &p.a);
    let (mut st1, mut st2) = (Stream::default(), Stream::default());
    let (mut r1, mut r2) = (Stream::default(), Stream::default());
    // transfer on both, then the server resets c1's peer half-way
    let mut aborted = false;
    let mut a_events = Vec::new();
    let total = 1 << 20;
    p.drive(10_000_000, |a, b| {
        if a.info(c1).is_ok() {
            st1.pump(a, c1, 5, 6, total);
        }
        st2.pump(a, c2, 7, 8, total);
        if !aborted && b.info(s1).is_ok() {
            r1.pump(b, s1, 6, 5, total);
            if r1.got > total / 2 {
                b.abort(s1).unwrap();
                aborted = true;
            }
        }
        r2.pump(b, s2, 8, 7, total);
        a_events.extend(a.events());
        r2.got == total && st2.got == total && a_events.contains(&Event::Reset(c1))
    });
    assert!(p.a.stats().reset >= 1);
    assert!(p.a.info(c1).is_err(), "reset connection's slot is gone");
    assert_eq!(p.a.info(c2).unwrap().state, tcp::State::Established, "the other connection is unaffected");
    assert!(matches!(p.a.send(c1, b"x"), Err(ukcm_stack::StackError::NoSuchConn(_))));
}

#[test]
fn budget_exhaustion_refuses_cleanly() {
    // each side has room for exactly two connections (2 × (4 KiB + 4 KiB rings + state))
    let conn = 8 * 1024 + ukcm_stack::STACK_STATE_BYTES as u64;
    let budget_a = PinnedBudget::new(2 * conn);
    let budget_b = PinnedBudget::new(2 * conn);
    let mut p = pair_with(FaultConfig::none(), FaultConfig::none(), budget_a.clone(), budget_b.clone(), 4096);
    let o = opts(4096);
    p.b.listen_with(60, 16, o).unwrap();
    let c1 = p.a.connect_with(ep4(B4, 60), o).unwrap();
    let c2 = p.a.connect_with(ep4(B4, 60), o).unwrap();
    // the client's budget is used up: a third connect is an error, not a panic
    assert!(matches!(p.a.connect_with(ep4(B4, 60), o), Err(ukcm_stack::StackError::Budget(_))));
    assert_eq!(p.a.stats().refused_budget, 1);
    let mut srv = Vec::new();
    p.drive(100_000, |_, b| {
        while let Some(s) = b.accept(60) {
            srv.push(s);
        }
        srv.len() == 2
    });
    assert_eq!(budget_b.used(), 2 * conn);
    // aborting c1 refunds both sides (the RST reaches the server)
    p.a.abort(c1).unwrap();
    p.drive(100_000, |a, _| a.info(c1).is_err());
    p.settle(Duration::from_millis(10));
    assert_eq!(budget_b.used(), conn, "server refunded c1's rings and state after the RST");
    let c3 = p.a.connect_with(ep4(B4, 60), o).unwrap();
    p.drive(100_000, |a, _| a.info(c3).is_ok_and(|i| i.state == tcp::State::Established));
    assert_eq!(budget_b.used(), 2 * conn, "server full again (c2, c3)");
    // the client aborts c2 but its RST is lost: the client has room, the server does not
    p.a.abort(c2).unwrap();
    p.a.port().set_tx_faults(FaultConfig { loss: 1.0, ..FaultConfig::none() });
    p.settle(Duration::from_millis(10));
    p.a.port().set_tx_faults(FaultConfig::none());
    let c4 = p.a.connect_with(ep4(B4, 60), o).unwrap();
    p.settle(Duration::from_millis(500));
    let srv_full = p.b.stats();
    assert!(srv_full.refused_budget >= 1, "server dropped the SYN for lack of budget: {srv_full:?}");
    assert!(p.b.events().any(|e| matches!(e, Event::Refused { port: 60, reason: RefuseReason::Budget(_), .. })));
    assert_ne!(p.a.info(c4).unwrap().state, tcp::State::Established);
    // the server closes one of its connections: the retransmitted SYN gets in
    let victim = *srv.iter().find(|s| p.b.info(**s).is_ok()).unwrap();
    p.b.abort(victim).unwrap();
    p.drive(1_000_000, |a, _| a.info(c4).is_ok_and(|i| i.state == tcp::State::Established));
    assert!(budget_a.used() <= 2 * conn && budget_b.used() <= 2 * conn);
}

#[test]
fn options_are_applied_per_connection_and_user_timeout_times_out() {
    let mut p = pair();
    let o = ukcm_stack::TcpOptions {
        nagle: false,
        ack_delay: None,
        congestion: ukcm_stack::Congestion::Reno,
        rx_buf: 128 * 1024,
        tx_buf: 8 * 1024,
        rx_start: 0,
        tx_start: 0,
        timestamps: false,
        keep_alive: Some(Duration::from_secs(5)),
        user_timeout: Some(Duration::from_secs(2)),
        inplace_rx: false,
        state_bytes: ukcm_stack::STACK_STATE_BYTES,
    };
    p.b.listen(77, 4).unwrap();
    let c = p.a.connect_with(ep4(B4, 77), o).unwrap();
    p.drive(100_000, |a, b| b.accept(77).is_some() && a.info(c).is_ok_and(|i| i.state == tcp::State::Established));
    p.a.with_tcp(c, |s| {
        assert!(!s.nagle_enabled());
        assert_eq!(s.ack_delay(), None);
        assert_eq!(s.congestion_control(), tcp::CongestionControl::Reno);
        assert!(!s.timestamp_enabled());
        assert_eq!(s.keep_alive(), Some(Duration::from_secs(5)));
        assert_eq!(s.timeout(), Some(Duration::from_secs(2)));
        assert_eq!((s.recv_capacity(), s.send_capacity()), (128 * 1024, 8 * 1024));
    })
    .unwrap();
    // the link dies; unacknowledged data outlives the user timeout
    p.a.port().set_tx_faults(FaultConfig { loss: 1.0, ..FaultConfig::none() });
    p.a.send(c, b"into the void").unwrap();
    let mut ev = Vec::new();
    p.drive(1_000_000, |a, _| {
        ev.extend(a.events());
        ev.contains(&Event::TimedOut(c))
    });
    assert!(p.a.info(c).is_err());
    assert_eq!(p.a.stats().timed_out, 1);
}

#[test]
fn a_full_rx_burst_tells_the_caller_that_more_frames_wait() {
    let mut p = pair();
    p.b.listen(7, 256).unwrap();
    // One connection first, so a knows b's MAC and sends the burst at once.
    let c = p.a.connect(ep4(B4, 7)).unwrap();
    p.drive(10_000, |a, b| {
        let _ = b.accept(7);
        a.info(c).unwrap().state == tcp::State::Established
    });
    p.settle(Duration::from_millis(100));
    let before = p.b.stats().rx_frames;
    for _ in 0..200 {
        p.a.connect(ep4(B4, 7)).unwrap();
    }
    // All SYNs out while b does not poll.
    for _ in 0..20 {
        p.a.poll().unwrap();
    }
    let burst = ukcm_stack::EngineConfig::default().max_frames_per_poll;
    p.b.poll().unwrap();
    assert!(p.b.rx_burst_was_full(), "{burst} of 200 SYNs taken: more wait");
    let mut polls = 1;
    while p.b.rx_burst_was_full() {
        p.b.poll().unwrap();
        polls += 1;
        assert!(polls < 100, "the flag never clears");
    }
    assert!(polls >= 200 / burst, "{polls} polls took 200 SYNs at {burst} a poll");
    assert_eq!(p.b.stats().rx_frames - before, 200);
}
