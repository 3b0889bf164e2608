//! Idle connections must cost nothing per poll (the basis of the scaling benchmark).

mod common;

use common::*;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use ukcm_stack::ConnId;

#[test]
fn idle_established_connections_are_not_polled() {
    let mut p = pair();
    let o = opts(2048);
    p.b.listen_with(7, 512, o).unwrap();
    let conns: Vec<ConnId> = (0..300).map(|_| p.a.connect_with(ep4(B4, 7), o).unwrap()).collect();
    p.drive(1_000_000, |a, b| {
        while b.accept(7).is_some() {}
        b.stats().accepted == 300 && conns.iter().all(|c| a.info(*c).is_ok_and(|i| i.state == tcp::State::Established))
    });
    p.settle(Duration::from_secs(1));
    let (a0, b0) = (p.a.stats(), p.b.stats());
    for _ in 0..100 {
        p.a.poll().unwrap();
        p.b.poll().unwrap();
        p.clock.advance(Duration::from_millis(1));
    }
    let (a1, b1) = (p.a.stats(), p.b.stats());
    assert_eq!(a1.egress_polls - a0.egress_polls, 0, "client polled idle connections: {a1:?}");
    assert_eq!(b1.egress_polls - b0.egress_polls, 0, "server polled idle connections: {b1:?}");

    // touching every ready connection must not make them ready again by itself
    let mut ready = Vec::new();
    for _ in 0..3 {
        for e in [&mut p.a, &mut p.b] {
            ready.clear();
            e.drain_ready(&mut ready);
            for c in &ready {
                e.with_tcp(*c, |s| s.recv_queue()).unwrap();
            }
            e.poll().unwrap();
        }
    }
    for e in [&mut p.a, &mut p.b] {
        ready.clear();
        e.drain_ready(&mut ready);
        assert!(ready.is_empty(), "{} connections became ready without traffic", ready.len());
    }
}
