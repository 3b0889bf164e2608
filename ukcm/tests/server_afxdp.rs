//! The server API over AF_XDP with the Linux kernel as the peer (root; each test makes its
//! own namespace and veth and removes them): kernel clients get replies in request order
//! from four workers; the unanswered-request limit holds a kernel sender back without loss;
//! a forwarder on ukcm's stack reaches kernel backends in the namespace through its
//! upstream pool, loses one and takes it back; two queues get an engine each, over IPv4 and
//! IPv6 (the engines share the neighbours they learn).

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{frame, pipelined_clients_with, read_frame, round_trip_on, slow_echo, Backend, WATCHDOG};
use ukcm::nic::testnet::{privileged_or_skip, TestNet, TestNetOptions};
use ukcm::{
    serve_spec, Model, PoolConfig, Relay, Reply, Server, ServerConfig, SteerKind, TransportSpec, UpstreamError,
};

const PORT: u16 = 7300;

fn afxdp(net: &TestNet) -> TransportSpec {
    TransportSpec::Afxdp { ifname: net.host_if.clone(), queues: ukcm::spec::QueueSet::List(vec![0]) }
}

fn addr(net: &TestNet) -> (IpAddr, Option<u8>) {
    (IpAddr::V4(net.ukcm_ip), Some(net.prefix))
}

fn connect(net: &TestNet) -> TcpStream {
    let s = net.peer_tcp_connect(SocketAddr::new(net.ukcm_ip.into(), PORT), WATCHDOG).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    s
}

/// A forwarder (thrift framing, `Relay` keyed on the body) on AF_XDP queue 0 at `at`.
fn afxdp_forwarder(net: &TestNet, at: (IpAddr, Option<u8>), pool: PoolConfig) -> Server {
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::RunToCompletion, ..ServerConfig::default() };
    let (spec, cidr) = (afxdp(net), ukcm::ports::stack_cidr(at).unwrap());
    Server::forward(
        move || {
            let budget = ukcm::nic::PinnedBudget::unlimited();
            let (port, mac) = ukcm::ports::open_port(&spec, 0, &budget).map_err(std::io::Error::other)?;
            ukcm::StackTransport::new(port, mac, cidr, None, PORT, 1024)
        },
        cfg,
        pool,
        Relay::new(|r| Some(&r[4..]), |e: UpstreamError| frame(format!("ERR {e}").as_bytes())),
    )
    .unwrap()
}

#[test]
fn kernel_clients_get_replies_in_request_order_from_four_workers() {
    if !privileged_or_skip("kernel_clients_get_replies_in_request_order_from_four_workers") {
        return;
    }
    let net = TestNet::new("sord", &TestNetOptions::default()).unwrap();
    for steer in [SteerKind::Batch, SteerKind::Hash] {
        let cfg = ServerConfig { parser: "thrift".into(), model: Model::Workers(4), steer, ..ServerConfig::default() };
        let server = serve_spec(&afxdp(&net), addr(&net), None, PORT, cfg, slow_echo).unwrap();
        pipelined_clients_with(4, 400, || connect(&net));
        let t = server.stop().unwrap();
        assert_eq!(t.total.rx_msgs, 1600, "{steer}");
        assert!(t.total.tx_replies_held > 0, "{steer}: no reply waited: the test proves nothing");
        assert_eq!(t.total.rx_copied_bytes, 0, "zero-copy receive");
    }
}

#[test]
fn the_unanswered_limit_holds_a_kernel_sender_back_and_loses_nothing() {
    if !privileged_or_skip("the_unanswered_limit_holds_a_kernel_sender_back_and_loses_nothing") {
        return;
    }
    let net = TestNet::new("shold", &TestNetOptions::default()).unwrap();
    // Workers answer only once the gate opens.
    let gate = Arc::new(AtomicBool::new(false));
    let g = Arc::clone(&gate);
    let handler = move |req: &[u8], reply: &mut Reply<'_>| {
        while !g.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = reply.send(req);
    };
    let cfg = ServerConfig {
        parser: "thrift".into(),
        model: Model::Workers(2),
        max_unanswered: 8,
        rx_ring: 64 * 1024,
        ..ServerConfig::default()
    };
    let server = serve_spec(&afxdp(&net), addr(&net), None, PORT, cfg, handler).unwrap();
    let mut s = connect(&net);
    let n = 20_000u32;
    let reqs: Vec<Vec<u8>> = (0..n).map(|i| frame(&[&i.to_be_bytes()[..], &[0x5a; 60]].concat())).collect();
    let all: Vec<u8> = reqs.concat();
    let mut w = s.try_clone().unwrap();
    // A fixed send buffer (no autotuning), so the kernel cannot simply buffer it all.
    socket2::SockRef::from(&w).set_send_buffer_size(64 * 1024).unwrap();
    w.set_nonblocking(true).unwrap();
    // Write until the kernel refuses more: the window closed (the sender is held back).
    let mut sent = 0;
    let end = Instant::now() + WATCHDOG;
    let mut stalled_writes = 0;
    while sent < all.len() && stalled_writes < 200 {
        match w.write(&all[sent..]) {
            Ok(k) => {
                sent += k;
                stalled_writes = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stalled_writes += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write: {e}"),
        }
        assert!(Instant::now() < end, "watchdog");
    }
    assert!(sent < all.len(), "the sender was never held back ({sent} bytes taken)");
    let snap = server.snapshot();
    assert!(snap.total.rx_msgs <= 8 + 1, "delivered {} with 8 allowed unanswered", snap.total.rx_msgs);
    // Open the gate: everything arrives and comes back, in order.
    gate.store(true, Ordering::Release);
    w.set_nonblocking(false).unwrap();
    let rest = all[sent..].to_vec();
    let writer = std::thread::spawn(move || w.write_all(&rest).unwrap());
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(read_frame(&mut s).unwrap(), r[4..], "reply {i}");
    }
    writer.join().unwrap();
    let t = server.stop().unwrap();
    assert!(t.total.rx_unanswered_stalls > 0, "the limit stopped delineation (counted)");
}

#[test]
fn a_forwarder_on_afxdp_reaches_kernel_backends_loses_one_and_takes_it_back() {
    if !privileged_or_skip("a_forwarder_on_afxdp_reaches_kernel_backends_loses_one_and_takes_it_back") {
        return;
    }
    let net = TestNet::new("sfwd", &TestNetOptions::default()).unwrap();
    let b0 = Backend::start(net.peer_tcp_listener(7401).unwrap(), "b0:", false);
    let b1 = Backend::start(net.peer_tcp_listener(7402).unwrap(), "b1:", false);
    let backends = vec![SocketAddr::new(net.peer_ip.into(), 7401), SocketAddr::new(net.peer_ip.into(), 7402)];
    let pool = PoolConfig {
        backends,
        conns_per_backend: 2,
        parser: "thrift".into(),
        request_timeout: Some(Duration::from_secs(5)),
        failure_limit: 2,
        retry_after: Duration::from_millis(300),
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..PoolConfig::default()
    };
    let server = afxdp_forwarder(&net, addr(&net), pool);
    let round_trip = |prefix: &str, n: usize| round_trip_on(connect(&net), prefix, n);
    let owner = |k: &[u8]| (ukcm::parsers::fnv::fnv1a64(k) % 2) as usize;
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let end = Instant::now() + WATCHDOG;
        while !f() {
            assert!(Instant::now() < end, "watchdog: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("both backends up", &|| round_trip("warm", 20).iter().all(|(_, r)| !r.starts_with(b"ERR")));
    for (req, reply) in round_trip("k", 400) {
        assert_eq!(reply, [format!("b{}:", owner(&req)).into_bytes(), req].concat());
    }
    b1.kill();
    wait("backend 1 ejected", &|| round_trip("d", 50).iter().all(|(_, r)| r.starts_with(b"b0:")));
    let b1 = Backend::start(net.peer_tcp_listener(7402).unwrap(), "b1:", false);
    wait("backend 1 back", &|| round_trip("back", 50).iter().any(|(_, r)| r.starts_with(b"b1:")));
    for (req, reply) in round_trip("again", 400) {
        assert_eq!(reply, [format!("b{}:", owner(&req)).into_bytes(), req].concat());
    }
    drop(server.stop().unwrap());
    b0.kill();
    b1.kill();
}

#[test]
fn every_queue_of_the_interface_gets_an_engine_and_every_message_comes_back() {
    if !privileged_or_skip("every_queue_of_the_interface_gets_an_engine_and_every_message_comes_back") {
        return;
    }
    let net = TestNet::new("sq2", &TestNetOptions { queues: 2, ..TestNetOptions::default() }).unwrap();
    // `afxdp:IF`: every queue of the interface, one shared-nothing engine each.
    let spec: TransportSpec = format!("afxdp:{}", net.host_if).parse().unwrap();
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::Workers(2), ..ServerConfig::default() };
    let server = serve_spec(&spec, addr(&net), None, PORT, cfg, slow_echo).unwrap();
    assert_eq!(server.engine_count(), 2);
    // The kernel spreads flows over the veth's two queues by their hash: with 24
    // connections, both queues get some (a 2^-23 chance otherwise).
    pipelined_clients_with(24, 60, || connect(&net));
    let per_engine = server.stop_each().unwrap();
    let t = ukcm::server::merge_tables(&per_engine);
    let attached: Vec<u64> = per_engine.iter().map(|e| e.mux.psock_attach).collect();
    assert!(attached.iter().all(|&n| n > 0), "connections per engine: {attached:?}");
    assert_eq!(attached.iter().sum::<u64>(), 24);
    assert_eq!(t.total.rx_msgs, 24 * 60, "the total adds the engines up");
}

#[test]
fn ipv6_on_every_queue_the_engines_share_what_neighbour_discovery_taught_them() {
    if !privileged_or_skip("ipv6_on_every_queue_the_engines_share_what_neighbour_discovery_taught_them") {
        return;
    }
    let net = TestNet::new("sq6", &TestNetOptions { queues: 2, ..TestNetOptions::default() }).unwrap();
    let (ukcm6, _) = net.enable_ipv6().unwrap();
    // The kernel knows ukcm's MAC (a permanent entry), so the only neighbour discovery on
    // the link is an engine soliciting the peer and the kernel's advertisement in answer,
    // which the veth puts on one queue (by the hash of its addresses) whichever engine
    // asked. The other queue's engine can learn the peer only from the share: without it,
    // the connections whose SYN lands there never get a SYN-ACK.
    net.static_neighbour_at(ukcm6.into()).unwrap();
    let spec: TransportSpec = format!("afxdp:{}", net.host_if).parse().unwrap();
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::Workers(2), ..ServerConfig::default() };
    let server = serve_spec(&spec, (IpAddr::V6(ukcm6), Some(64)), None, PORT, cfg, slow_echo).unwrap();
    assert_eq!(server.engine_count(), 2);
    let at = SocketAddr::new(ukcm6.into(), PORT);
    // 24 connections: both queues get some (a 2^-23 chance otherwise).
    pipelined_clients_with(24, 60, || {
        let s = net.peer_tcp_connect(at, Duration::from_secs(10)).expect("connected within 10 s");
        s.set_read_timeout(Some(WATCHDOG)).unwrap();
        s
    });
    let per_engine = server.stop_each().unwrap();
    let attached: Vec<u64> = per_engine.iter().map(|e| e.mux.psock_attach).collect();
    assert!(attached.iter().all(|&n| n > 0), "connections per engine: {attached:?}");
    assert_eq!(attached.iter().sum::<u64>(), 24);
    assert_eq!(ukcm::server::merge_tables(&per_engine).total.rx_msgs, 24 * 60);
}

#[test]
fn ipv6_kernel_clients_and_an_ipv6_backend_through_a_forwarder_on_afxdp() {
    if !privileged_or_skip("ipv6_kernel_clients_and_an_ipv6_backend_through_a_forwarder_on_afxdp") {
        return;
    }
    let net = TestNet::new("sv6", &TestNetOptions::default()).unwrap();
    let (ukcm6, peer6) = net.enable_ipv6().unwrap();
    let b = Backend::start(net.peer_tcp_listener_at(SocketAddr::new(peer6.into(), 7403)).unwrap(), "v6:", false);
    let pool = PoolConfig {
        backends: vec![SocketAddr::new(peer6.into(), 7403)],
        parser: "thrift".into(),
        ..PoolConfig::default()
    };
    let server = afxdp_forwarder(&net, (IpAddr::V6(ukcm6), Some(64)), pool);
    assert_eq!(server.local_addr(), SocketAddr::new(ukcm6.into(), PORT));
    // Kernel clients over IPv6 (NDP resolves ukcm's address), requests forwarded to the
    // IPv6 backend by ukcm's own connections, replies back in order.
    let end = Instant::now() + WATCHDOG;
    loop {
        let s = net.peer_tcp_connect(SocketAddr::new(ukcm6.into(), PORT), WATCHDOG).unwrap();
        s.set_read_timeout(Some(WATCHDOG)).unwrap();
        let pairs = round_trip_on(s, "six", 200);
        if pairs.iter().any(|(_, r)| r.starts_with(b"ERR backend down")) {
            assert!(Instant::now() < end, "the pool never reached the IPv6 backend");
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        for (req, reply) in pairs {
            assert_eq!(reply, [b"v6:".to_vec(), req].concat());
        }
        break;
    }
    drop(server.stop().unwrap());
    b.kill();
}

#[test]
fn syns_with_bad_checksums_are_counted_not_silently_lost() {
    if !privileged_or_skip("syns_with_bad_checksums_are_counted_not_silently_lost") {
        return;
    }
    // The peer keeps transmit checksum offload on (the veth default): its SYNs reach AF_XDP
    // with partial checksums.
    let net =
        TestNet::new("sbad", &TestNetOptions { peer_tx_checksum_off: false, ..TestNetOptions::default() }).unwrap();
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::RunToCompletion, ..ServerConfig::default() };
    let server = serve_spec(&afxdp(&net), addr(&net), None, PORT, cfg, slow_echo).unwrap();
    let c = net.peer_tcp_connect(SocketAddr::new(net.ukcm_ip.into(), PORT), Duration::from_millis(1500));
    assert!(c.is_err(), "a SYN with a partial checksum was accepted");
    let end = Instant::now() + WATCHDOG;
    let bad = loop {
        let status = server.transport_status();
        let n: u64 = status
            .split("bad-checksum SYNs ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < end, "no bad-checksum SYN counted: {status}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(bad >= 1);
    let status = server.transport_status();
    assert!(status.contains("dropped frames by reason: rx_bad_tcp_csum "), "counted by reason too: {status}");
    drop(server.stop().unwrap());
}

/// Rings that grow with the traffic (issue 14), against the kernel: 500 connections
/// exchange one small message and go idle while four others carry 256 KiB messages; every
/// byte comes back intact, the bulk connections' rings grew (the messages arrived whole and
/// in place), and the stats say an idle connection pins at most the small rings. The cost
/// is read while each bulk connection holds half a message in its server's ring (active,
/// deterministically), then the halves are completed.
#[test]
fn idle_connections_pin_the_small_rings_while_bulk_ones_carry_256k_messages() {
    if !privileged_or_skip("idle_connections_pin_the_small_rings_while_bulk_ones_carry_256k_messages") {
        return;
    }
    const IDLE: usize = 500;
    const BULK: usize = 4;
    const BIG: usize = 256 * 1024;
    let net = TestNet::new("sgrow", &TestNetOptions::default()).unwrap();
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::Workers(2), ..ServerConfig::default() };
    let echo = |req: &[u8], reply: &mut Reply<'_>| {
        let _ = reply.send(req);
    };
    let server = serve_spec(&afxdp(&net), addr(&net), None, PORT, cfg, echo).unwrap();
    let mut idle = Vec::new();
    for i in 0..IDLE {
        let mut s = connect(&net);
        let body = vec![i as u8; 60];
        s.write_all(&frame(&body)).unwrap();
        assert_eq!(read_frame(&mut s).unwrap(), body, "idle connection {i}");
        idle.push(s);
    }
    let body = |c: usize, k: usize| -> Vec<u8> {
        (0..BIG - 4).map(|j| (j as u64).wrapping_mul(2654435761).wrapping_add((c * 131 + k) as u64) as u8).collect()
    };
    let mut bulk: Vec<TcpStream> = (0..BULK).map(|_| connect(&net)).collect();
    for (c, s) in bulk.iter_mut().enumerate() {
        for k in 0..3 {
            let b = body(c, k);
            let mut r = s.try_clone().unwrap();
            let sent = frame(&b);
            let writer = std::thread::spawn(move || r.write_all(&sent));
            assert!(read_frame(s).unwrap() == b, "bulk connection {c} message {k} intact");
            writer.join().unwrap().unwrap();
        }
    }
    // half a message in each bulk connection's ring: active while the cost is read
    let halves: Vec<Vec<u8>> = (0..BULK).map(|c| frame(&body(c, 9))).collect();
    for (s, h) in bulk.iter_mut().zip(&halves) {
        s.write_all(&h[..BIG / 2]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(700)); // a few stats snapshots (every 200 ms)
    let cost = server.conn_cost().expect("the userspace stack reports what its connections pin").now;
    eprintln!("{cost}");
    assert_eq!(cost.idle_conns, IDLE as u64, "{cost}");
    let state = ukcm::transport::server_tcp_options().state_bytes as u64;
    assert_eq!(
        cost.per_idle(),
        2 * ukcm_stack_start() as u64 + state,
        "an idle connection: the small rings and its state: {cost}"
    );
    assert_eq!(cost.active_conns, BULK as u64, "{cost}");
    assert!(cost.per_active() >= BIG as u64, "the bulk connections' rx rings grew to hold 256 KiB: {cost}");
    for (c, (s, h)) in bulk.iter_mut().zip(&halves).enumerate() {
        s.write_all(&h[BIG / 2..]).unwrap();
        assert!(read_frame(s).unwrap() == h[4..], "bulk connection {c}: the completed message intact");
    }
    // the idle ones still work
    for (i, s) in idle.iter_mut().enumerate().step_by(50) {
        s.write_all(&frame(b"again")).unwrap();
        assert_eq!(read_frame(s).unwrap(), b"again", "idle connection {i}");
    }
    let (t, status) = server.stop_with_status().unwrap();
    eprintln!("{status}");
    assert_eq!(t.total.rx_msgs, (IDLE + BULK * 4 + IDLE.div_ceil(50)) as u64);
    assert_eq!(t.total.rx_copied_bytes, 0, "zero-copy receive, 256 KiB messages included");
    assert_eq!(t.total.rx_msg_too_big, 0);
}

fn ukcm_stack_start() -> usize {
    ukcm::stack::START_RING
}
