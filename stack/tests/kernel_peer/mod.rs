//! The kernel-peer checks every port backend runs (AF_XDP, TAP, ...), over IPv4 or IPv6 (a
//! [`Link`] of the topology): the Linux kernel in a `TestNet` namespace pings the engine
//! (ARP or neighbour discovery and ICMP echo answered by it), kernel clients use ukcm as an
//! echo server, and ukcm clients use a kernel echo server — 1 MiB each way per connection,
//! byte-exact. Every kernel-side socket is created inside the namespace and bound to its
//! interface.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpCidr, IpEndpoint};
use ukcm_nic::afxdp::{AfXdpConfig, AfXdpPort};
use ukcm_nic::testnet::{Family, Link, TestNet, TestNetOptions};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig, Port, PortStats};
use ukcm_stack::{echo_in_place, ConnId, Engine, EngineConfig, IdleStrategy, TcpOptions};

pub const BYTES: usize = 1 << 20;

/// An engine on an AF_XDP port on the host end of a fresh veth (`tag` names the namespace)
/// whose ends have IP MTU `mtu`: a UMEM of `frames` frames (2048 bytes at first; the port
/// grows them when the MTU needs it) and rings of `ring_size`.
pub fn afxdp_engine(
    tag: &str,
    family: Family,
    mtu: u32,
    frames: usize,
    ring_size: u32,
) -> (Engine<AfXdpPort>, TestNet, Link) {
    let net = TestNet::new(tag, &TestNetOptions { mtu, ..TestNetOptions::default() }).unwrap();
    let link = net.link(family).unwrap();
    let xcfg = AfXdpConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 256, frames },
        ring_size,
        ..AfXdpConfig::new(&net.host_if, 0)
    };
    let port = AfXdpPort::open(&xcfg, &PinnedBudget::unlimited(), HugePolicy::Never).expect("AF_XDP port");
    (Engine::new(port, engine_config(&net, &link)).expect("engine"), net, link)
}

/// The engine configuration the checks expect: the topology's MAC, ukcm's address of
/// `link` (only that family), 256 KiB socket buffers, a backoff idle loop (the kernel peer
/// shares the machine's cores).
pub fn engine_config(net: &TestNet, link: &Link) -> EngineConfig {
    let mut cfg = EngineConfig {
        mac: Some(net.host_mac),
        default_tcp: TcpOptions { rx_buf: 256 * 1024, tx_buf: 256 * 1024, ..TcpOptions::default() },
        idle: IdleStrategy::Backoff { spins: 200, yields: 50, park: Duration::from_micros(100) },
        ..EngineConfig::default()
    };
    match IpCidr::new(IpAddress::from(link.ukcm), link.prefix) {
        IpCidr::Ipv4(c) => cfg.ipv4 = Some(c),
        IpCidr::Ipv6(c) => cfg.ipv6 = Some(c),
    }
    cfg
}

fn pattern(seed: u64, i: u64) -> u8 {
    let z = (i / 8).wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((z ^ (z >> 31)) >> ((i % 8) * 8)) as u8
}

/// Writes BYTES of pattern `seed` and reads them back, checking every byte.
fn kernel_client_exchange(mut s: TcpStream, seed: u64) {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let data: Vec<u8> = (0..BYTES as u64).map(|i| pattern(seed, i)).collect();
        w.write_all(&data).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(BYTES);
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), BYTES, "echo length");
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(seed, i as u64)), "echo bytes differ");
}

/// Echoes everything ready, inline on the engine thread; closes after the peer's FIN.
fn echo_ready<P: Port>(e: &mut Engine<P>, ready: &mut Vec<ConnId>) {
    e.drain_ready(ready);
    for c in ready.drain(..) {
        let _ = e.with_tcp(c, echo_in_place);
    }
}

/// The kernel pings the engine (ARP or neighbour solicitation, and ICMP echo, answered by
/// it: the kernel's neighbour entry then holds the engine's MAC), then `conns` kernel
/// clients each send 1 MiB to the engine's echo server on port 7 and check the echo.
/// Returns the port's counters at the end.
pub fn kernel_clients_to_ukcm_echo<P: Port + Send + 'static>(
    net: &TestNet,
    link: &Link,
    mut e: Engine<P>,
    conns: usize,
) -> PortStats {
    let stop = Arc::new(AtomicBool::new(false));
    e.listen(7, conns.max(16)).unwrap();
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        let mut ready = Vec::new();
        e.run_until(|e| {
            while e.accept(7).is_some() {}
            echo_ready(e, &mut ready);
            stop2.load(Ordering::Relaxed)
        })
        .unwrap();
        (e.stats(), e.port_stats())
    });
    let ping = net.peer_cmd(&["ping", "-c", "2", "-W", "2", "-I", &net.peer_if, &link.ukcm.to_string()]);
    let ping = match ping {
        Ok(out) => out,
        Err(err) => {
            stop.store(true, Ordering::Relaxed);
            let st = server.join().unwrap();
            panic!("ping failed: {err}\n{st:?}");
        }
    };
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    let neighbour = net.peer_neighbour(link.ukcm).unwrap();
    assert!(neighbour.contains(&format!("lladdr {}", net.host_mac_string())), "the kernel's entry: {neighbour:?}");
    let to = SocketAddr::new(link.ukcm, 7);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..conns)
            .map(|i| {
                sc.spawn(move || {
                    let s = net.peer_tcp_connect(to, Duration::from_secs(10)).expect("kernel client connects");
                    kernel_client_exchange(s, i as u64 + 1)
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    stop.store(true, Ordering::Relaxed);
    let (st, pst) = server.join().unwrap();
    assert_eq!(st.accepted, conns as u64, "{st:?}");
    assert!(pst.rx_frames > 0 && pst.tx_frames > 0, "{pst:?}");
    pst
}

/// `conns` engine clients each send 1 MiB to a kernel echo server in the namespace, check
/// every echoed byte, close, and wait until the kernel's side has seen EOF. Returns the
/// port's counters at the end.
pub fn ukcm_clients_to_kernel_echo<P: Port>(net: &TestNet, link: &Link, mut e: Engine<P>, conns: usize) -> PortStats {
    let listener = net.peer_tcp_listener_at(SocketAddr::new(link.peer, 7007)).expect("kernel listener");
    let kernel = std::thread::spawn(move || {
        let mut hs = Vec::new();
        for _ in 0..conns {
            let (mut s, _) = listener.accept().unwrap();
            hs.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).unwrap();
                }
                s.shutdown(std::net::Shutdown::Write).unwrap();
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
    });
    let remote = IpEndpoint::new(IpAddress::from(link.peer), 7007);
    let cs: Vec<ConnId> = (0..conns).map(|_| e.connect(remote).unwrap()).collect();
    let mut sent = vec![0usize; conns];
    let mut got = vec![0usize; conns];
    let mut closed = vec![false; conns];
    let deadline = Instant::now() + Duration::from_secs(60);
    e.run_until(|e| {
        if Instant::now() > deadline {
            let infos: Vec<_> = cs.iter().take(3).map(|c| e.info(*c)).collect();
            panic!(
                "timed out: got {} sent {}\n{infos:?}\n{:?}\n{:?}\n{:?}",
                got.iter().sum::<usize>(),
                sent.iter().sum::<usize>(),
                e.stats(),
                e.port_stats(),
                e.device_stats()
            );
        }
        for (i, c) in cs.iter().enumerate() {
            let seed = 100 + i as u64;
            let (sent, got, closed) = (&mut sent[i], &mut got[i], &mut closed[i]);
            let _ = e.with_tcp(*c, |s| {
                // (FIN-WAIT and TIME-WAIT still receive: read in every state)
                while *sent < BYTES && s.may_send() && s.can_send() {
                    let k = s
                        .send(|b| {
                            let k = b.len().min(BYTES - *sent);
                            for (j, x) in b[..k].iter_mut().enumerate() {
                                *x = pattern(seed, (*sent + j) as u64);
                            }
                            (k, k)
                        })
                        .unwrap();
                    *sent += k;
                }
                while s.can_recv() {
                    let k = s
                        .recv(|b| {
                            for (j, x) in b.iter().enumerate() {
                                assert_eq!(*x, pattern(seed, (*got + j) as u64), "byte {}", *got + j);
                            }
                            (b.len(), b.len())
                        })
                        .unwrap();
                    *got += k;
                }
                if *sent == BYTES && !*closed && s.state() == tcp::State::Established {
                    s.close();
                    *closed = true;
                }
            });
        }
        got.iter().all(|g| *g == BYTES)
    })
    .unwrap();
    // Let the FINs and final ACKs out so the kernel's echo threads see EOF.
    let kernel_done = Arc::new(AtomicBool::new(false));
    let waiter = {
        let kernel_done = kernel_done.clone();
        std::thread::spawn(move || {
            let r = kernel.join();
            kernel_done.store(true, Ordering::Relaxed);
            r
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    e.run_until(|_| kernel_done.load(Ordering::Relaxed) || Instant::now() > deadline).unwrap();
    assert!(kernel_done.load(Ordering::Relaxed), "the kernel's echo threads never saw EOF");
    waiter.join().unwrap().unwrap();
    assert_eq!(e.stats().connected, conns as u64);
    e.port_stats()
}

/// An idle engine sleeps on its port's descriptor. With naps of 2 s and no connection (so
/// no TCP timer to cut them short), the kernel's pings are answered within ping's 1 s
/// deadline only if each frame wakes the engine; the stats count those wakeups.
pub fn idle_engine_wakes_for_frames<P: Port + Send + 'static>(net: &TestNet, link: &Link, mut e: Engine<P>) {
    e.set_idle(IdleStrategy::Park(Duration::from_secs(2)));
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        e.run_until(|_| stop2.load(Ordering::Relaxed)).unwrap();
        e.stats()
    });
    let ping = net.peer_cmd(&["ping", "-c", "3", "-i", "0.3", "-W", "1", "-I", &net.peer_if, &link.ukcm.to_string()]);
    stop.store(true, Ordering::Relaxed);
    // The engine notices the stop flag after its current nap (at most 2 s).
    let st = server.join().unwrap();
    let ping = ping.unwrap_or_else(|e| panic!("ping failed: {e}\n{st:?}"));
    assert!(ping.contains(" 0% packet loss"), "{ping}\n{st:?}");
    assert!(st.idle_port_wakeups >= 1, "{st:?}");
}
