//! Ten thousand kernel clients against one ukcm server over AF_XDP (issue 14; root; the test
//! makes its own namespace and veth and removes them). Every connection exchanges a
//! message, then all but a few go idle while those few carry 256 KiB messages and a
//! pipelined stream: every byte comes back intact, no message is lost, and the stats say
//! what an idle connection pins — checked against the rings it should hold, before the bulk
//! and again once the bulk connections went quiet and gave their grown rings back.
//!
//! Kernel side, in the test's namespace only: a wide ephemeral port range for the clients;
//! the process's file limit is raised for the 10,000 client sockets (root may). The clients
//! open at most [`WINDOW`] handshakes at a time so the server's listen backlog (1024) never
//! drops a SYN (a dropped SYN costs the kernel a one-second retransmission, not a failure).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{frame, read_frame, WATCHDOG};
use socket2::{Domain, Socket, Type};
use ukcm::nic::testnet::{bind_to_device, privileged_or_skip, TestNet, TestNetOptions};
use ukcm::{serve_spec, Model, Reply, ServerConfig, TransportSpec};

const PORT: u16 = 7310;
const CONNS: usize = 10_000;
/// Handshakes and first exchanges in flight at once.
const WINDOW: usize = 512;
/// Connections that carry bulk traffic (the first ones opened).
const BULK: usize = 4;
const BIG: usize = 256 * 1024;
/// Pipelined messages of the bulk stream, per bulk connection, and their body size.
const STREAM_MSGS: usize = 256;
const STREAM_BODY: usize = 4000;

/// The 60-byte body of connection `i`'s first message (64 bytes framed).
fn hello(i: usize) -> Vec<u8> {
    let mut b = format!("hello from {i:>8} ").into_bytes();
    b.resize(60, b'a' + (i % 26) as u8);
    b
}

/// A body whose every byte depends on its position, its connection and its message.
fn pattern(len: usize, conn: usize, msg: usize) -> Vec<u8> {
    (0..len).map(|j| (j as u64).wrapping_mul(2654435761).wrapping_add((conn * 131 + msg * 7) as u64) as u8).collect()
}

/// Raises this process's open-file limit to at least `n` (root may raise the hard limit).
fn raise_nofile(n: u64) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into `r`, which lives across the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0, "getrlimit");
    if r.rlim_cur >= n {
        return;
    }
    let want = libc::rlimit { rlim_cur: n, rlim_max: r.rlim_max.max(n) };
    // SAFETY: setrlimit reads one valid rlimit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) };
    assert_eq!(rc, 0, "setrlimit(RLIMIT_NOFILE, {n}): {}", std::io::Error::last_os_error());
}

/// Waits until every socket in `fds` whose `pending` flag is set reports one of `events`;
/// returns the revents of each (0 for the others). Progress, not time, is the test: the
/// watchdog only stops a hang.
fn poll_all(socks: &[Socket], pending: &[bool], events: libc::c_short) -> Vec<libc::c_short> {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .zip(pending)
        .map(|(s, &p)| libc::pollfd { fd: if p { s.as_raw_fd() } else { -1 }, events, revents: 0 })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, WATCHDOG.as_millis() as libc::c_int) };
    assert!(n > 0, "poll: no progress within {WATCHDOG:?} ({})", std::io::Error::last_os_error());
    fds.iter().map(|f| f.revents).collect()
}

/// Opens `n` connections from the peer namespace, [`WINDOW`] at a time: each connects,
/// sends its 64-byte hello and reads it back whole and intact before the next window opens.
/// Returns them blocking, with the watchdog as read timeout.
fn open_fleet(net: &TestNet, n: usize) -> Vec<TcpStream> {
    let to: socket2::SockAddr = SocketAddr::new(net.ukcm_ip.into(), PORT).into();
    let dev = net.peer_if.clone();
    net.in_peer(move || {
        let mut all = Vec::with_capacity(n);
        for first in (0..n).step_by(WINDOW) {
            let ids: Vec<usize> = (first..(first + WINDOW).min(n)).collect();
            let socks: Vec<Socket> = ids
                .iter()
                .map(|_| {
                    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
                    bind_to_device(s.as_raw_fd(), &dev).expect("SO_BINDTODEVICE");
                    // Closed with a reset, whenever that is (a panic too): a FIN to a server
                    // that is gone would leave orphan sockets retransmitting for minutes
                    // after the namespace is deleted.
                    s.set_linger(Some(Duration::ZERO)).unwrap();
                    s.set_nonblocking(true).unwrap();
                    match s.connect(&to) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                        Err(e) => panic!("connect: {e}"),
                    }
                    s
                })
                .collect();
            // Connected: writable. Then each sends its hello (64 bytes into an empty buffer).
            let mut pending = vec![true; socks.len()];
            while pending.iter().any(|&p| p) {
                for (k, r) in poll_all(&socks, &pending, libc::POLLOUT).into_iter().enumerate() {
                    if r != 0 {
                        if let Some(e) = socks[k].take_error().unwrap() {
                            panic!("connection {}: {e}", ids[k]);
                        }
                        let sent = (&socks[k]).write(&frame(&hello(ids[k]))).unwrap();
                        assert_eq!(sent, 64, "connection {}: a 64-byte hello in one write", ids[k]);
                        pending[k] = false;
                    }
                }
            }
            // Each reads its echo.
            let mut got: Vec<Vec<u8>> = vec![Vec::with_capacity(64); socks.len()];
            let mut pending = vec![true; socks.len()];
            while pending.iter().any(|&p| p) {
                for (k, r) in poll_all(&socks, &pending, libc::POLLIN).into_iter().enumerate() {
                    if r == 0 {
                        continue;
                    }
                    let mut buf = [0u8; 64];
                    let want = 64 - got[k].len();
                    let m = (&socks[k]).read(&mut buf[..want]).unwrap();
                    assert!(m > 0, "connection {}: closed before its echo", ids[k]);
                    got[k].extend_from_slice(&buf[..m]);
                    if got[k].len() == 64 {
                        assert_eq!(got[k], frame(&hello(ids[k])), "connection {}: echo intact", ids[k]);
                        pending[k] = false;
                    }
                }
            }
            for s in socks {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(WATCHDOG)).unwrap();
                all.push(TcpStream::from(s));
            }
        }
        all
    })
    .expect("the peer namespace")
}

/// One bulk connection's traffic: two 256 KiB messages one by one, then a pipelined stream
/// of [`STREAM_MSGS`] messages written by another thread while the replies are read; every
/// byte is compared.
fn bulk(c: usize, s: &mut TcpStream) {
    for k in 0..2 {
        let body = pattern(BIG - 4, c, k);
        let mut w = s.try_clone().unwrap();
        let sent = frame(&body);
        let writer = std::thread::spawn(move || w.write_all(&sent));
        assert!(read_frame(s).unwrap() == body, "bulk connection {c}: 256 KiB message {k} intact");
        writer.join().unwrap().unwrap();
    }
    let stream: Vec<u8> = (0..STREAM_MSGS).flat_map(|k| frame(&pattern(STREAM_BODY, c, 100 + k))).collect();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&stream));
    for k in 0..STREAM_MSGS {
        assert!(read_frame(s).unwrap() == pattern(STREAM_BODY, c, 100 + k), "bulk connection {c}: stream message {k}");
    }
    writer.join().unwrap().unwrap();
}

#[test]
fn ten_thousand_kernel_clients_mostly_idle_a_few_bulk_every_byte_checked() {
    if !privileged_or_skip("ten_thousand_kernel_clients_mostly_idle_a_few_bulk_every_byte_checked") {
        return;
    }
    let t0 = Instant::now();
    raise_nofile(CONNS as u64 + 4096);
    let net = TestNet::new("s10k", &TestNetOptions::default()).unwrap();
    // Room for the clients' source ports towards one server address (namespace-local).
    net.peer_cmd(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000"]).unwrap();
    let spec = TransportSpec::Afxdp { ifname: net.host_if.clone(), queues: ukcm::spec::QueueSet::List(vec![0]) };
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::RunToCompletion, ..ServerConfig::default() };
    let echo = |req: &[u8], reply: &mut Reply<'_>| {
        let _ = reply.send(req);
    };
    let server = serve_spec(&spec, (net.ukcm_ip.into(), Some(net.prefix)), None, PORT, cfg, echo).unwrap();

    let mut conns = open_fleet(&net, CONNS);
    let opened = t0.elapsed();
    assert_eq!(conns.len(), CONNS);

    // A few carry bulk traffic, in parallel; the rest stay idle.
    std::thread::scope(|sc| {
        for (c, s) in conns[..BULK].iter_mut().enumerate() {
            sc.spawn(move || bulk(c, s));
        }
    });
    // Half a 256 KiB message in each bulk connection's ring: active while the cost is read.
    let halves: Vec<Vec<u8>> = (0..BULK).map(|c| frame(&pattern(BIG - 4, c, 9))).collect();
    for (s, h) in conns.iter_mut().zip(&halves) {
        s.write_all(&h[..BIG / 2]).unwrap();
    }
    // The first snapshot (every 200 ms) taken after the bulk traffic that sees the idle ones
    // and the four half-full ones. The stats table and the cost are published together:
    // reading the table first makes the cost read after it at least as recent.
    let bulk_done = (CONNS + BULK * (2 + STREAM_MSGS)) as u64;
    let end = Instant::now() + WATCHDOG;
    let cost = loop {
        let after_bulk = server.snapshot().total.rx_msgs >= bulk_done;
        let c = server.conn_cost().expect("the userspace stack reports what its connections pin").now;
        if after_bulk && c.active_conns == BULK as u64 && c.idle_conns == (CONNS - BULK) as u64 {
            break c;
        }
        assert!(Instant::now() < end, "never saw {BULK} active and {} idle connections: {c}", CONNS - BULK);
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("{CONNS} connections: {cost}");
    // Its two starting rings and the fixed figure for its engine and mux state.
    let expected = 2 * ukcm::stack::START_RING as u64 + ukcm::transport::server_tcp_options().state_bytes as u64;
    assert_eq!(cost.per_idle(), expected, "an idle connection is charged its starting rings and its state: {cost}");
    assert!(cost.per_active() >= BIG as u64, "the bulk connections' rx rings grew to hold 256 KiB: {cost}");
    for (c, (s, h)) in conns.iter_mut().zip(&halves).enumerate() {
        s.write_all(&h[BIG / 2..]).unwrap();
        assert!(read_frame(s).unwrap() == h[4..], "bulk connection {c}: the completed message intact");
    }
    // Quiet again, the bulk connections give their grown rings back (rx: the window
    // retracted to the small ring, the kernel peer told): every connection is charged its
    // starting rings once more.
    let end = Instant::now() + WATCHDOG;
    loop {
        let c = server.conn_cost().expect("cost").now;
        if c.idle_conns == CONNS as u64 && c.per_idle() == expected {
            break;
        }
        assert!(Instant::now() < end, "the bulk connections never shrank back: {c}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the next 256 KiB message on each arrives whole, the rings growing again.
    std::thread::scope(|sc| {
        for (c, s) in conns[..BULK].iter_mut().enumerate() {
            sc.spawn(move || {
                let body = pattern(BIG - 4, c, 10);
                let mut w = s.try_clone().unwrap();
                let sent = frame(&body);
                let writer = std::thread::spawn(move || w.write_all(&sent));
                assert!(read_frame(s).unwrap() == body, "bulk connection {c}: 256 KiB after the shrink intact");
                writer.join().unwrap().unwrap();
            });
        }
    });
    // The idle ones still answer (one in a hundred, spread over the fleet).
    for (i, s) in conns.iter_mut().enumerate().skip(BULK).step_by(100) {
        let body = hello(i + 1);
        s.write_all(&frame(&body)).unwrap();
        assert_eq!(read_frame(s).unwrap(), body, "idle connection {i} again");
    }
    let again = (CONNS - BULK).div_ceil(100);
    let (t, status) = server.stop_with_status().unwrap();
    eprintln!("{status}");
    assert_eq!(t.mux.psock_attach, CONNS as u64, "every connection was accepted once");
    assert_eq!(t.total.rx_msgs, (CONNS + BULK * (2 + STREAM_MSGS + 2) + again) as u64, "no message lost");
    assert_eq!(t.total.tx_msgs, t.total.rx_msgs, "every message answered");
    assert_eq!(t.total.rx_copied_bytes, 0, "zero-copy receive, 256 KiB messages included");
    drop(conns); // resets (SO_LINGER 0)
    eprintln!(
        "wall time: {:.1} s ({CONNS} opened and echoed in {:.1} s)",
        t0.elapsed().as_secs_f64(),
        opened.as_secs_f64()
    );
}
