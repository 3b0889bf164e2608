//! The server API over kernel TCP on loopback (no privileges): replies in request order with
//! 2 and 4 workers under every steering policy and run to completion, quiet requests that
//! release their place, a handler closing its connection, an idle engine woken by news, and forwarding through an upstream pool (routing, a backend killed
//! and brought back, a stalled backend timing out, one client's requests kept in order over a
//! backend's several connections).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{frame, pipelined_clients, read_frame, round_trip_on, slow_echo, Backend, WATCHDOG};
use ukcm::{Model, PoolConfig, Relay, Reply, Server, ServerConfig, SteerKind, UpstreamError};

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

#[test]
fn replies_come_back_in_request_order_with_any_workers_and_policy() {
    for model in [Model::Workers(2), Model::Workers(4), Model::RunToCompletion] {
        for steer in [SteerKind::Batch, SteerKind::LeastLoaded, SteerKind::Sticky, SteerKind::Hash] {
            let cfg = ServerConfig { parser: "thrift".into(), model, steer, ..ServerConfig::default() };
            let server = Server::kernel(listener(), cfg, slow_echo).unwrap();
            pipelined_clients(server.local_addr(), 3, 300);
            let t = server.stop().unwrap();
            let quiet = (0..300).filter(|i| i % 7 == 3).count() as u64 * 3;
            assert_eq!(t.total.rx_msgs, 900, "{model} {steer}");
            assert_eq!(t.total.tx_slots_released, quiet, "{model} {steer}: quiet requests released their place");
            if model == Model::Workers(4) && steer != SteerKind::Sticky {
                assert!(t.total.tx_replies_held > 0, "{model} {steer}: no reply ever waited: the test proves nothing");
            }
        }
    }
}

#[test]
fn a_handler_closes_a_connection_after_the_replies_before_its_request() {
    // "quit" closes: the requests before it are answered, the one after it is not handled.
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::RunToCompletion, ..ServerConfig::default() };
    let server = Server::kernel(listener(), cfg, |req: &[u8], reply: &mut Reply<'_>| {
        if &req[4..] == b"quit" {
            assert!(reply.close());
        } else {
            let _ = reply.send(req);
        }
    })
    .unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    s.write_all(&[frame(b"one"), frame(b"quit"), frame(b"two")].concat()).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), b"one");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the close: {rest:?}");
    // Other connections go on.
    let mut other = TcpStream::connect(server.local_addr()).unwrap();
    other.write_all(&frame(b"three")).unwrap();
    assert_eq!(read_frame(&mut other).unwrap(), b"three");
    // Worker mode cannot close from a handler: it says so.
    let workers = ServerConfig { parser: "thrift".into(), ..ServerConfig::default() };
    let w = Server::kernel(listener(), workers, |req: &[u8], reply: &mut Reply<'_>| {
        let closed = reply.close();
        let _ = reply.send(if closed { &b"\0\0\0\x01y"[..] } else { req });
    })
    .unwrap();
    let mut s = TcpStream::connect(w.local_addr()).unwrap();
    s.write_all(&frame(b"x")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), b"x");
}

/// An idle engine over kernel sockets sleeps on its epoll set: a request that comes while
/// it sleeps wakes it (counted as a sleep ended by news), in worker mode and run to
/// completion. Napping by the clock (as it did) would count none.
#[test]
fn an_idle_kernel_engine_is_woken_by_news_not_the_clock() {
    /// A counter of the status line; 0 before the first snapshot.
    fn count(status: &str, what: &str) -> u64 {
        let Some(at) = status.find(what) else {
            assert!(status.is_empty(), "no {what:?} in {status:?}");
            return 0;
        };
        status[at + what.len()..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    }
    for model in [Model::RunToCompletion, Model::Workers(1)] {
        let cfg = ServerConfig { parser: "thrift".into(), model, ..ServerConfig::default() };
        let server = Server::kernel(listener(), cfg, |req: &[u8], reply: &mut Reply<'_>| {
            let _ = reply.send(req);
        })
        .unwrap();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(WATCHDOG)).unwrap();
        let requests = 10u32;
        for i in 0..requests {
            // Send once the engine is asleep: its sleep count rose in two snapshots in a row
            // (a loaded machine can keep it spinning and yielding for a while first).
            let deadline = Instant::now() + WATCHDOG;
            let mut last = count(&server.transport_status(), "idle sleeps ");
            let mut rises = 0;
            while rises < 2 {
                assert!(Instant::now() < deadline, "{model}: the engine never went to sleep");
                std::thread::sleep(Duration::from_millis(50));
                let now = count(&server.transport_status(), "idle sleeps ");
                if now > last {
                    rises += 1;
                    last = now;
                }
            }
            let m = i.to_be_bytes();
            s.write_all(&frame(&m)).unwrap();
            assert_eq!(read_frame(&mut s).unwrap(), m, "{model}");
        }
        let (t, status) = server.stop_with_status().unwrap();
        assert_eq!(t.total.rx_msgs, u64::from(requests), "{model}");
        let (sleeps, by_news) = (count(&status, "idle sleeps "), count(&status, "ended by news "));
        // Nearly every request lands in a sleep (naps last up to 1 ms, rounds microseconds).
        assert!(
            by_news >= u64::from(requests) / 2,
            "{model}: {by_news} of {sleeps} sleeps ended by news, {requests} requests came while it slept"
        );
    }
}

#[test]
fn the_builder_serves_in_a_few_lines() {
    let server = Server::builder()
        .transport("kernel")
        .addr("127.0.0.1")
        .listen(0)
        .parser("thrift")
        .workers(2)
        .serve(|req: &[u8], reply: &mut Reply<'_>| {
            let _ = reply.send(req);
        })
        .unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(&frame(b"hello")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), b"hello");
    assert!(Server::builder().transport("nonsense").serve(|_: &[u8], _: &mut Reply<'_>| {}).is_err());
    assert!(Server::builder().parser("nope").serve(|_: &[u8], _: &mut Reply<'_>| {}).is_err());
}

fn error_reply(e: UpstreamError) -> Vec<u8> {
    frame(format!("ERR {e}").as_bytes())
}

fn key(req: &[u8]) -> Option<&[u8]> {
    Some(&req[4..])
}

fn forwarder(backends: Vec<SocketAddr>, timeout: Duration) -> Server {
    let pool = pool_config(backends, timeout);
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::RunToCompletion, ..ServerConfig::default() };
    let t = ukcm::KernelTransport::new(listener()).unwrap();
    Server::forward(move || Ok(t), cfg, pool, Relay::new(key, error_reply)).unwrap()
}

fn pool_config(backends: Vec<SocketAddr>, timeout: Duration) -> PoolConfig {
    PoolConfig {
        backends,
        conns_per_backend: 2,
        parser: "thrift".into(),
        request_timeout: Some(timeout),
        failure_limit: 2,
        retry_after: Duration::from_millis(300),
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..PoolConfig::default()
    }
}

/// Sends `n` pipelined requests to `at` and returns (request, reply body) pairs, in order.
fn round_trip(at: SocketAddr, prefix: &str, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let s = TcpStream::connect(at).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    round_trip_on(s, prefix, n)
}

/// Which backend a key goes to while both are up (FNV-1a 64 of the key, modulo 2).
fn owner(key: &[u8]) -> usize {
    (ukcm::parsers::fnv::fnv1a64(key) % 2) as usize
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + WATCHDOG;
    while !f() {
        assert!(Instant::now() < end, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_forwarder_routes_by_key_survives_a_dead_backend_and_takes_it_back() {
    let l1 = listener();
    let addr1 = l1.local_addr().unwrap();
    let b0 = Backend::start(listener(), "b0:", false);
    let b1 = Backend::start(l1, "b1:", false);
    let server = forwarder(vec![b0.addr, b1.addr], Duration::from_secs(5));
    let at = server.local_addr();
    wait_until("both backends connected", || round_trip(at, "warm", 20).iter().all(|(_, r)| !r.starts_with(b"ERR")));
    // Every reply is its own request's, from the backend its key hashes to, in order.
    for (req, reply) in round_trip(at, "k", 500) {
        let want = format!("b{}:", owner(&req)).into_bytes();
        assert_eq!(reply, [want, req].concat());
    }
    // Backend 1 dies: requests caught on it get error replies (the client connection goes
    // on), then it is marked down and its keys move to the next backend that is up
    // (rehashing, as twemproxy's auto_eject_hosts does); one reply per request, in order.
    b1.kill();
    wait_until("backend 1 marked down", || round_trip(at, "d", 50).iter().all(|(_, r)| r.starts_with(b"b0:")));
    for (req, reply) in round_trip(at, "after", 300) {
        assert_eq!(reply, [b"b0:".to_vec(), req].concat());
    }
    // It comes back on the same port: retried after retry_after, its keys return to it.
    let b1 = Backend::start(TcpListener::bind(addr1).unwrap(), "b1:", false);
    wait_until("backend 1 back", || round_trip(at, "back", 50).iter().any(|(_, r)| r.starts_with(b"b1:")));
    for (req, reply) in round_trip(at, "again", 300) {
        let want = format!("b{}:", owner(&req)).into_bytes();
        assert_eq!(reply, [want, req].concat());
    }
    drop(server.stop().unwrap());
    b0.kill();
    b1.kill();
}

#[test]
fn a_reload_moves_keys_without_dropping_a_client_or_a_request() {
    let (b0, b1, b2) = (
        Backend::start(listener(), "b0:", false),
        Backend::start(listener(), "b1:", false),
        Backend::start(listener(), "b2:", false),
    );
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::RunToCompletion, ..ServerConfig::default() };
    let t = ukcm::KernelTransport::new(listener()).unwrap();
    let pool = pool_config(vec![b0.addr, b1.addr], Duration::from_secs(5));
    let (server, reload) =
        Server::forward_reloadable(vec![move || Ok(t)], cfg, pool.clone(), Relay::new(key, error_reply)).unwrap();
    let at = server.local_addr();
    wait_until("both backends connected", || round_trip(at, "warm", 20).iter().all(|(_, r)| !r.starts_with(b"ERR")));

    // One client connection keeps requests in flight across the reload: every reply is its
    // own request's, from a backend, never an error.
    let client = TcpStream::connect(at).unwrap();
    client.set_read_timeout(Some(WATCHDOG)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.try_clone().unwrap(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) || rounds < 3 {
                for (req, reply) in round_trip_on(client.try_clone().unwrap(), &format!("r{rounds}"), 200) {
                    let from = &reply[..3];
                    assert!([&b"b0:"[..], b"b1:", b"b2:"].contains(&from), "{:?}", String::from_utf8_lossy(&reply));
                    assert_eq!(&reply[3..], &req[..]);
                }
                rounds += 1;
            }
            rounds
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    // b1 removed, b2 added.
    let gen = reload.apply(pool_config(vec![b0.addr, b2.addr], Duration::from_secs(5)), std::sync::Arc::new(|_| {}));
    assert_eq!(reload.wait(gen, WATCHDOG), Ok(1));
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Release);
    assert!(load.join().unwrap() >= 3);
    wait_until("b2 connected", || round_trip(at, "b2", 50).iter().all(|(_, r)| !r.starts_with(b"ERR")));
    // The new placement: index 0 is b0, index 1 is b2; b1's connections drained and closed.
    for (req, reply) in round_trip(at, "after", 300) {
        let want = if owner(&req) == 0 { b"b0:" } else { b"b2:" };
        assert_eq!(reply, [want.to_vec(), req].concat());
    }
    wait_until("b1's connections closed", || b1.open.load(std::sync::atomic::Ordering::Acquire) == 0);
    assert_eq!(b2.open.load(std::sync::atomic::Ordering::Acquire), 2);

    // Fewer connections per backend: the extra ones retire and close.
    let mut one = pool_config(vec![b0.addr, b2.addr], Duration::from_secs(5));
    one.conns_per_backend = 1;
    let gen = reload.apply(one, std::sync::Arc::new(|_| {}));
    assert_eq!(reload.wait(gen, WATCHDOG), Ok(1));
    wait_until("one connection each", || {
        round_trip(at, "one", 20);
        b0.open.load(std::sync::atomic::Ordering::Acquire) == 1
            && b2.open.load(std::sync::atomic::Ordering::Acquire) == 1
    });
    // Another protocol is refused, and the old configuration keeps serving.
    let mut other = pool_config(vec![b0.addr], Duration::from_secs(5));
    other.parser = "resp".into();
    let gen = reload.apply(other, std::sync::Arc::new(|_| {}));
    assert!(reload.wait(gen, WATCHDOG).unwrap_err().contains("protocol"));
    assert!(round_trip_on(client, "still", 100)
        .iter()
        .all(|(req, reply)| reply.ends_with(req) && !reply.starts_with(b"ERR")));
    let stats = server.upstream_stats().unwrap();
    assert_eq!(stats.backends.len(), 2);
    drop(server.stop().unwrap());
    for b in [b0, b1, b2] {
        b.kill();
    }
}

#[test]
fn a_stalled_backend_times_out_each_request_with_an_error_reply() {
    let b = Backend::start(listener(), "", true);
    let server = forwarder(vec![b.addr], Duration::from_millis(200));
    let at = server.local_addr();
    wait_until("the backend connected", || {
        round_trip(at, "t", 3).iter().all(|(_, r)| r.starts_with(b"ERR backend timed out"))
    });
    drop(server.stop().unwrap());
    b.kill();
}

#[test]
fn requests_on_a_backend_that_dies_fail_with_an_error_and_none_is_lost() {
    let b = Backend::start(listener(), "", true);
    let server = forwarder(vec![b.addr], Duration::from_secs(60));
    let at = server.local_addr();
    let mut s = TcpStream::connect(at).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    // Until the pool is connected, requests are refused at once ("backend down"); once it
    // is, they wait on the stalled backend.
    let mut sent = 0;
    loop {
        s.write_all(&frame(b"probe")).unwrap();
        sent += 1;
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        match read_frame(&mut s) {
            Ok(r) => assert_eq!(r, b"ERR backend down"),
            Err(_) => break, // held by the backend: it is connected
        }
        assert!(sent < 300, "the pool never connected");
    }
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    for i in 0..9 {
        s.write_all(&frame(format!("held-{i}").as_bytes())).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    b.kill();
    for _ in 0..10 {
        assert_eq!(read_frame(&mut s).unwrap(), b"ERR backend connection lost");
    }
    drop(server.stop().unwrap());
}

#[test]
fn replies_matched_by_id_from_a_backend_that_answers_out_of_order() {
    // The backend answers each pair of requests second first; replies carry the request's id.
    let l = listener();
    let at = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        while let (Ok(a), Ok(b)) = (read_frame(&mut s), read_frame(&mut s)) {
            let answer = |m: &[u8]| frame(&[&m[..4], b"r:", &m[4..]].concat());
            if s.write_all(&[answer(&b), answer(&a)].concat()).is_err() {
                return;
            }
        }
    });
    let id = |m: &[u8]| m.get(4..8).map(|b| u64::from(u32::from_be_bytes(b.try_into().unwrap())));
    let pool = PoolConfig { backends: vec![at], parser: "thrift".into(), match_id: Some(id), ..PoolConfig::default() };
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::RunToCompletion, ..ServerConfig::default() };
    let t = ukcm::KernelTransport::new(listener()).unwrap();
    let server = Server::forward(move || Ok(t), cfg, pool, Relay::new(key, error_reply)).unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    let body = |i: u32| [&i.to_be_bytes()[..], format!("req-{i}").as_bytes()].concat();
    // Until the pool is up, requests come back "backend down": retry the first pair.
    let end = Instant::now() + WATCHDOG;
    loop {
        s.write_all(&[frame(&body(0)), frame(&body(1))].concat()).unwrap();
        let (a, b) = (read_frame(&mut s).unwrap(), read_frame(&mut s).unwrap());
        if a.starts_with(b"ERR") {
            assert!(Instant::now() < end, "the pool never connected");
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        assert_eq!(a, [&0u32.to_be_bytes()[..], b"r:req-0"].concat());
        assert_eq!(b, [&1u32.to_be_bytes()[..], b"r:req-1"].concat());
        break;
    }
    let reqs: Vec<u8> = (2..200).flat_map(|i| frame(&body(i))).collect();
    s.write_all(&reqs).unwrap();
    for i in 2..200u32 {
        let want = [&i.to_be_bytes()[..], format!("r:req-{i}").as_bytes()].concat();
        assert_eq!(read_frame(&mut s).unwrap(), want, "reply {i}: each reply is its own request's, in order");
    }
    drop(server.stop().unwrap());
}

/// A backend that numbers the requests it runs, over all its connections (one thread per
/// connection, so two connections run concurrently): each reply is the running count.
fn counting_backend() -> SocketAddr {
    let l = listener();
    let at = l.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                while let Ok(_req) = read_frame(&mut s) {
                    let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if s.write_all(&frame(n.to_string().as_bytes())).is_err() {
                        return;
                    }
                }
            });
        }
    });
    at
}

#[test]
fn a_clients_requests_run_in_its_order_on_a_backend_with_several_connections() {
    let backend = counting_backend();
    let mut pool = pool_config(vec![backend], WATCHDOG);
    pool.conns_per_backend = 4;
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::RunToCompletion, ..ServerConfig::default() };
    let t = ukcm::KernelTransport::new(listener()).unwrap();
    let server = Server::forward(move || Ok(t), cfg, pool, Relay::new(key, error_reply)).unwrap();
    let at = server.local_addr();
    std::thread::scope(|sc| {
        for c in 0..3 {
            sc.spawn(move || {
                // The backend numbers what it runs: one client's numbers rise only if its
                // pipelined requests ran in the order it sent them, on one connection.
                let got = round_trip(at, &format!("c{c}"), 300);
                let numbers: Vec<u64> =
                    got.iter().map(|(_, r)| String::from_utf8_lossy(r).parse().expect("a count")).collect();
                assert!(numbers.windows(2).all(|w| w[0] < w[1]), "client {c} ran out of order: {numbers:?}");
            });
        }
    });
    drop(server.stop().unwrap());
}

#[test]
fn requests_wait_for_room_in_a_full_pool_instead_of_failing() {
    // A pool whose queue holds 4 requests, and 3 clients pipelining 300 each: the forwarding
    // server postpones what the queue cannot take (the client's bytes wait in its stream)
    // rather than answering "busy"; every request gets its backend's reply, in order.
    let b0 = Backend::start(listener(), "b0:", false);
    let mut pool = pool_config(vec![b0.addr], WATCHDOG);
    pool.queue = 4;
    let cfg = ServerConfig { parser: "thrift".into(), model: Model::RunToCompletion, ..ServerConfig::default() };
    let t = ukcm::KernelTransport::new(listener()).unwrap();
    let server = Server::forward(move || Ok(t), cfg, pool, Relay::new(key, error_reply)).unwrap();
    let at = server.local_addr();
    wait_until("backend connected", || round_trip(at, "warm", 1).iter().all(|(_, r)| !r.starts_with(b"ERR")));
    std::thread::scope(|sc| {
        for c in 0..3 {
            sc.spawn(move || {
                for (req, reply) in round_trip(at, &format!("c{c}-"), 300) {
                    assert_eq!(reply, [b"b0:".to_vec(), req].concat(), "client {c}");
                }
            });
        }
    });
    let t = server.stop().unwrap();
    assert!(t.total.rx_postponed > 0, "the queue never filled: the test proves nothing");
    b0.kill();
}
