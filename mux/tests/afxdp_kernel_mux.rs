//! The mux's message suite with the Linux kernel as the peer (privileged): the server is a
//! mux on a ukcm engine over AF_XDP on the host end of a veth; the clients are kernel TCP
//! sockets in the peer namespace (bound to the peer veth), reading and writing raw streams.
//! Checked: messages arrive whole (zero-copy views), replies go to their origin and every
//! cookie completes once; EMSGSIZE, EPROTO and EPIPE each stop only their own psock; a
//! receiver that does not read closes the kernel's window and nothing is lost; four threads
//! sending at once never interleave messages on a connection. Each check runs over IPv4 and
//! over IPv6 (the kernel resolves the engine by neighbour discovery).
//!
//! Runs as root (`UKCM_PRIVILEGED=1` makes a missing privilege a failure, not a skip).

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::wire::{IpAddress, IpCidr};
use ukcm_mux::stack_psock::StackPsock;
use ukcm_mux::{
    Completion, CompletionStatus, Msg, MsgSocket, Mux, MuxConfig, MuxEvent, PsockErrorKind, PsockId, SocketConfig,
};
use ukcm_nic::afxdp::{AfXdpConfig, AfXdpPort};
use ukcm_nic::testnet::{privileged_or_skip, Family, Link, TestNet, TestNetOptions};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};
use ukcm_parsers::LengthField;
use ukcm_stack::{Engine, EngineConfig, IdleStrategy, TcpOptions};

use common::{check_message, message};

const PORT: u16 = 7100;
const MAX_MESSAGE: usize = 128 * 1024;

/// A mux server on AF_XDP; the test thread drives it with `round`.
struct Server {
    engine: Engine<AfXdpPort>,
    mux: Mux<StackPsock<AfXdpPort>>,
    budget: Arc<PinnedBudget>,
    psocks: Vec<PsockId>,
}

impl Server {
    fn new(net: &TestNet, link: &Link) -> (Server, MsgSocket) {
        let xcfg = AfXdpConfig {
            pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 8192 },
            ring_size: 2048,
            ..AfXdpConfig::new(&net.host_if, 0)
        };
        let port = AfXdpPort::open(&xcfg, &PinnedBudget::unlimited(), HugePolicy::Never).expect("AF_XDP port");
        let mut cfg = EngineConfig { mac: Some(net.host_mac), idle: IdleStrategy::Spin, ..EngineConfig::default() };
        match IpCidr::new(IpAddress::from(link.ukcm), link.prefix) {
            IpCidr::Ipv4(c) => cfg.ipv4 = Some(c),
            IpCidr::Ipv6(c) => cfg.ipv6 = Some(c),
        }
        let mut engine = Engine::new(port, cfg).expect("engine");
        let tcp = TcpOptions { rx_buf: 256 * 1024, tx_buf: 256 * 1024, inplace_rx: true, ..TcpOptions::default() };
        engine.listen_with(PORT, 16, tcp).unwrap();
        let budget = PinnedBudget::unlimited();
        let mcfg = MuxConfig {
            max_message: MAX_MESSAGE,
            socket: SocketConfig { rx_queue: 1024, tx_queue: 256, max_in_flight: 4096, tx_ring: 1 << 20 },
            ..MuxConfig::default()
        };
        let (mux, sock) = Mux::new(mcfg, &budget).unwrap();
        (Server { engine, mux, budget, psocks: Vec::new() }, sock)
    }

    /// One engine + mux round; new connections are attached (signed 32-bit length field,
    /// so a negative length is a framing error).
    fn round(&mut self) {
        self.engine.poll().unwrap();
        while let Some(conn) = self.engine.accept(PORT) {
            let io = StackPsock::new(&mut self.engine, conn, 256 * 1024, 1024, &self.budget).unwrap();
            assert!(io.is_zero_copy(), "server connections lend messages in place");
            self.psocks.push(self.mux.attach(io, Box::new(LengthField::kafka())));
        }
        self.mux.poll_engine(&mut self.engine, Instant::now());
    }
}

/// A topology and the link's addresses in `family`.
fn topology(tag: &str, family: Family) -> (TestNet, Link) {
    let net = TestNet::new(tag, &TestNetOptions::default()).unwrap();
    let link = net.link(family).unwrap();
    (net, link)
}

fn connect(net: &TestNet, link: &Link) -> TcpStream {
    let s = net.peer_tcp_connect(SocketAddr::new(link.ukcm, PORT), Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// `n` kernel connections, made while the server runs (it answers ARP and the handshakes).
fn connect_while_serving(srv: &mut Server, net: &TestNet, link: &Link, n: usize) -> Vec<TcpStream> {
    std::thread::scope(|sc| {
        let h = sc.spawn(|| (0..n).map(|_| connect(net, link)).collect::<Vec<_>>());
        while !h.is_finished() {
            srv.round();
        }
        h.join().unwrap()
    })
}

/// Reads one length-prefixed message from a kernel stream.
fn read_message(s: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes(head) as usize;
    let mut m = head.to_vec();
    m.resize(4 + len, 0);
    s.read_exact(&mut m[4..]).unwrap();
    m
}

fn body_len(conn: usize, seq: u32) -> usize {
    1 + (seq as usize * 7919 + conn * 104_729) % 60_000
}

#[test]
fn kernel_clients_get_every_message_back_whole_from_its_origin() {
    if privileged_or_skip("kernel_clients_get_every_message_back_whole_from_its_origin") {
        every_message_back_whole_from_its_origin(Family::V4);
    }
}

#[test]
fn ipv6_kernel_clients_get_every_message_back_whole_from_its_origin() {
    if privileged_or_skip("ipv6_kernel_clients_get_every_message_back_whole_from_its_origin") {
        every_message_back_whole_from_its_origin(Family::V6);
    }
}

fn every_message_back_whole_from_its_origin(family: Family) {
    const CONNS: usize = 4;
    const PER_CONN: u32 = 200;
    let (net, link) = topology("mxk", family);
    let (mut srv, mut sock) = Server::new(&net, &link);
    let done = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|sc| {
        for c in 0..CONNS {
            let (net, link, done) = (&net, &link, done.clone());
            sc.spawn(move || {
                let mut s = connect(net, link);
                let mut w = s.try_clone().unwrap();
                let writer = std::thread::spawn(move || {
                    for seq in 0..PER_CONN {
                        w.write_all(&message(c as u32, seq, body_len(c, seq))).unwrap();
                    }
                });
                for seq in 0..PER_CONN {
                    let m = read_message(&mut s);
                    assert_eq!(check_message(&m), Ok((c as u32, seq)), "conn {c}: echo {seq} whole and in order");
                }
                writer.join().unwrap();
                done.fetch_add(1, Ordering::Release);
            });
        }
        let (mut cookie, mut comps, mut held): (u32, Vec<Completion>, Option<Msg>) = (0, Vec::new(), None);
        let deadline = Instant::now() + Duration::from_secs(90);
        while done.load(Ordering::Acquire) < CONNS || comps.len() < cookie as usize {
            assert!(Instant::now() < deadline, "stalled: {} echoed, {} completions", cookie, comps.len());
            srv.round();
            while let Some(m) = held.take().or_else(|| sock.try_recv()) {
                assert!(srv.mux.msg_in_ring(&m), "a delivered message is a view into its psock's rx ring");
                if sock.send_to(m.origin(), &m, Some(cookie)).is_err() {
                    held = Some(m);
                    break;
                }
                cookie += 1;
            }
            sock.completions(&mut comps);
        }
        assert_eq!(cookie, CONNS as u32 * PER_CONN);
        let seen: HashSet<u32> = comps.iter().map(|c| c.cookie).collect();
        assert_eq!(seen.len(), comps.len(), "each cookie once");
        assert!(comps.iter().all(|c| c.status == CompletionStatus::Acked), "every reply acknowledged");
    });
    let t = srv.mux.stats_table();
    assert_eq!(t.total.rx_msgs, (CONNS as u32 * PER_CONN) as u64);
    assert_eq!(t.total.rx_copied_bytes, 0, "zero-copy receive");
}

#[test]
fn msgsize_eproto_and_epipe_stop_only_their_own_psock() {
    if privileged_or_skip("msgsize_eproto_and_epipe_stop_only_their_own_psock") {
        errors_stop_only_their_own_psock(Family::V4);
    }
}

#[test]
fn ipv6_msgsize_eproto_and_epipe_stop_only_their_own_psock() {
    if privileged_or_skip("ipv6_msgsize_eproto_and_epipe_stop_only_their_own_psock") {
        errors_stop_only_their_own_psock(Family::V6);
    }
}

fn errors_stop_only_their_own_psock(family: Family) {
    let (net, link) = topology("mxe", family);
    let (mut srv, mut sock) = Server::new(&net, &link);
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        // four clients: too big, negative length, half a message then close, and a good one
        let bad = sc.spawn(|| {
            let mut big = connect(&net, &link);
            big.write_all(&((MAX_MESSAGE as u32) * 2).to_be_bytes()).unwrap();
            let mut neg = connect(&net, &link);
            neg.write_all(&(-5i32).to_be_bytes()).unwrap();
            let mut half = connect(&net, &link);
            half.write_all(&message(9, 0, 1000)[..600]).unwrap();
            half.shutdown(std::net::Shutdown::Write).unwrap();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            (big, neg, half)
        });
        let good = sc.spawn(|| {
            let mut s = connect(&net, &link);
            for seq in 0..50 {
                s.write_all(&message(1, seq, 3000)).unwrap();
                assert_eq!(check_message(&read_message(&mut s)), Ok((1, seq)));
            }
        });
        let mut errors = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while errors.len() < 3 || !good.is_finished() {
            assert!(Instant::now() < deadline, "errors so far {errors:?}");
            srv.round();
            while let Some(m) = sock.try_recv() {
                sock.send_to(m.origin(), &m, None).unwrap();
            }
            while let Some(ev) = sock.next_event() {
                if let MuxEvent::PsockError(id, e) = ev {
                    errors.push((id, e.kind));
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        good.join().unwrap();
        drop(bad.join().unwrap());
        let mut kinds: Vec<_> = errors.iter().map(|e| e.1).collect();
        kinds.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(kinds, vec![PsockErrorKind::MsgSize, PsockErrorKind::Pipe, PsockErrorKind::Proto], "{errors:?}");
        let failed: HashSet<PsockId> = errors.iter().map(|e| e.0).collect();
        assert_eq!(failed.len(), 3, "three different psocks failed");
        let t = srv.mux.stats_table();
        assert_eq!(t.total.rx_msg_too_big, 1);
        assert_eq!(t.total.rx_msgs, 50, "only the good client's messages were delivered");
    });
}

#[test]
fn a_receiver_that_does_not_read_closes_the_window_and_nothing_is_lost() {
    if privileged_or_skip("a_receiver_that_does_not_read_closes_the_window_and_nothing_is_lost") {
        closed_window_loses_nothing(Family::V4);
    }
}

#[test]
fn ipv6_a_receiver_that_does_not_read_closes_the_window_and_nothing_is_lost() {
    if privileged_or_skip("ipv6_a_receiver_that_does_not_read_closes_the_window_and_nothing_is_lost") {
        closed_window_loses_nothing(Family::V6);
    }
}

fn closed_window_loses_nothing(family: Family) {
    const COUNT: u32 = 400; // ~8 MiB: far more than the 256 KiB ring and the kernel's buffers
    let (net, link) = topology("mxb", family);
    let (mut srv, sock) = Server::new(&net, &link);
    let written = Arc::new(AtomicUsize::new(0));
    let s = connect_while_serving(&mut srv, &net, &link, 1).pop().unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = {
        let written = written.clone();
        std::thread::spawn(move || {
            for seq in 0..COUNT {
                w.write_all(&message(3, seq, 20_000)).unwrap();
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // nobody receives for a while: the psock stops parsing, its ring fills, the window closes
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        srv.round();
    }
    let stuck = written.load(Ordering::Relaxed);
    assert!(stuck < COUNT as usize, "the kernel sender was held back by the closed window ({stuck} written)");
    let mut held = Vec::new();
    while let Some(m) = sock.try_recv() {
        held.push(m);
    }
    // then the application reads everything: all of it arrives, in order, intact
    let mut next = 0u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    for m in held.drain(..) {
        assert_eq!(check_message(&m), Ok((3, next)));
        next += 1;
    }
    while next < COUNT {
        assert!(Instant::now() < deadline, "stalled at {next}");
        srv.round();
        while let Some(m) = sock.try_recv() {
            assert_eq!(check_message(&m), Ok((3, next)), "message {next} whole and in order");
            next += 1;
        }
    }
    writer.join().unwrap();
    s.shutdown(std::net::Shutdown::Both).unwrap();
    assert_eq!(srv.mux.stats_table().mux.rx_ready_drops, 0, "backpressure, not drops");
}

#[test]
fn four_threads_sending_at_once_never_interleave_messages() {
    if privileged_or_skip("four_threads_sending_at_once_never_interleave_messages") {
        sends_never_interleave(Family::V4);
    }
}

#[test]
fn ipv6_four_threads_sending_at_once_never_interleave_messages() {
    if privileged_or_skip("ipv6_four_threads_sending_at_once_never_interleave_messages") {
        sends_never_interleave(Family::V6);
    }
}

fn sends_never_interleave(family: Family) {
    const CONNS: usize = 4;
    const THREADS: u32 = 4;
    const PER_THREAD: u32 = 2_000;
    let (net, link) = topology("mxa", family);
    let (mut srv, sock) = Server::new(&net, &link);
    let mut clients = connect_while_serving(&mut srv, &net, &link, CONNS);
    while srv.psocks.len() < CONNS {
        srv.round();
    }
    // every kernel client reads its raw stream and checks each message is whole
    let readers: Vec<_> = clients
        .drain(..)
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let mut head = [0u8; 4];
                    if s.read_exact(&mut head).is_err() {
                        break got;
                    }
                    let len = u32::from_be_bytes(head) as usize;
                    let mut m = head.to_vec();
                    m.resize(4 + len, 0);
                    s.read_exact(&mut m[4..]).unwrap();
                    got.push(check_message(&m).unwrap_or_else(|e| panic!("a message mixed with another: {e}")));
                }
            })
        })
        .collect();
    let sent = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut s = sock.try_clone().unwrap();
            let sent = sent.clone();
            std::thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    let m = message(t, seq, 1 + (seq as usize * 31 + t as usize * 977) % 9_000);
                    while s.send(&m, None).is_err() {
                        std::thread::yield_now();
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while senders.iter().any(|h| !h.is_finished())
        || srv.mux.psock_ids().iter().any(|id| srv.mux.psock_tx_idle(*id) == Some(false))
    {
        assert!(Instant::now() < deadline, "stalled after {} sends", sent.load(Ordering::Relaxed));
        srv.round();
    }
    for h in senders {
        h.join().unwrap();
    }
    // everything is acknowledged: close the connections so each reader sees its end
    for id in srv.mux.psock_ids() {
        let io = srv.mux.unattach_with(&mut srv.engine, id).expect("an idle psock is handed back");
        srv.engine.close(io.conn()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while readers.iter().any(|r| !r.is_finished()) {
        assert!(Instant::now() < deadline, "the readers never saw the end of their streams");
        srv.round();
    }
    let mut all = HashSet::new();
    for r in readers {
        let got = r.join().unwrap();
        assert!(!got.is_empty(), "connected-mode sends are spread over every psock");
        for (t, seq) in got {
            assert!(all.insert((t, seq)), "message ({t}, {seq}) twice");
        }
    }
    assert_eq!(all.len(), (THREADS * PER_THREAD) as usize, "every message arrived once, whole");
}
