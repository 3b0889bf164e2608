//! ukcm against the real Linux TCP stack (privileged): the ukcm engine runs on the host
//! end of a veth over AF_XDP, the kernel in a throwaway namespace is the peer. Every
//! kernel-side socket is created inside that namespace and bound to the peer veth.
//!
//! Runs as root (`UKCM_PRIVILEGED=1` makes a missing privilege a failure, not a skip).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Cidr};
use ukcm_nic::afxdp::{AfXdpConfig, AfXdpPort};
use ukcm_nic::testnet::{bind_to_device, privileged_or_skip, TestNet, TestNetOptions};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};
use ukcm_stack::{consume_rx, ConnId, Engine, EngineConfig, IdleStrategy, TcpOptions};

const BYTES: usize = 1 << 20;

fn pattern(seed: u64, i: u64) -> u8 {
    let z = (i / 8).wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((z ^ (z >> 31)) >> ((i % 8) * 8)) as u8
}

fn engine(net: &TestNet) -> Engine<AfXdpPort> {
    let xcfg = AfXdpConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 8192 },
        ring_size: 2048,
        ..AfXdpConfig::new(&net.host_if, 0)
    };
    let port = AfXdpPort::open(&xcfg, &PinnedBudget::unlimited(), HugePolicy::Never).expect("AF_XDP port");
    let cfg = EngineConfig {
        mac: Some(net.host_mac),
        ipv4: Some(Ipv4Cidr::new(net.ukcm_ip, net.prefix)),
        default_tcp: TcpOptions { rx_buf: 256 * 1024, tx_buf: 256 * 1024, ..TcpOptions::default() },
        idle: IdleStrategy::Backoff { spins: 200, yields: 50, park: Duration::from_micros(100) },
        ..EngineConfig::default()
    };
    Engine::new(port, cfg).expect("engine")
}

/// A kernel TCP client socket made in the peer namespace, bound to the peer veth, connected.
fn kernel_connect(net: &TestNet, to: SocketAddr) -> TcpStream {
    let dev = net.peer_if.clone();
    net.in_peer(move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        bind_to_device(s.as_raw_fd(), &dev).unwrap();
        s.connect_timeout(&to.into(), Duration::from_secs(10)).unwrap();
        TcpStream::from(s)
    })
    .unwrap()
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
fn echo_ready(e: &mut Engine<AfXdpPort>, ready: &mut Vec<ConnId>) {
    e.drain_ready(ready);
    for c in ready.drain(..) {
        let _ = e.with_tcp(c, |s| {
            let mut buf = [0u8; 8192];
            loop {
                let room = (s.send_capacity() - s.send_queue()).min(buf.len());
                let n = match s.peek_slice(&mut buf[..room]) {
                    Ok(n) if n > 0 => s.send_slice(&buf[..n]).unwrap_or(0),
                    _ => 0,
                };
                if n == 0 {
                    break;
                }
                consume_rx(s, n);
            }
            if !s.may_recv() && s.recv_queue() == 0 && s.may_send() {
                s.close();
            }
        });
    }
}

fn kernel_client_to_ukcm_echo(conns: usize) {
    let net = TestNet::new("stk", &TestNetOptions::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut e = engine(&net);
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
        e.stats()
    });
    // the kernel pings the userspace stack (ARP + ICMP echo answered by the engine)
    let out = net.peer_cmd(&["ping", "-c", "2", "-W", "2", "-I", &net.peer_if, &net.ukcm_ip.to_string()]).unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");
    let to = SocketAddr::new(net.ukcm_ip.into(), 7);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..conns)
            .map(|i| {
                let net = &net;
                sc.spawn(move || kernel_client_exchange(kernel_connect(net, to), i as u64 + 1))
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    stop.store(true, Ordering::Relaxed);
    let st = server.join().unwrap();
    assert_eq!(st.accepted, conns as u64, "{st:?}");
}

fn ukcm_client_to_kernel_echo(conns: usize) {
    let net = TestNet::new("stk", &TestNetOptions::default()).unwrap();
    let addr = SocketAddr::new(net.peer_ip.into(), 7007);
    let dev = net.peer_if.clone();
    let listener: TcpListener = net
        .in_peer(move || {
            let l = TcpListener::bind(addr).unwrap();
            bind_to_device(l.as_raw_fd(), &dev).unwrap();
            l
        })
        .unwrap();
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
    let mut e = engine(&net);
    let remote = IpEndpoint::new(IpAddress::Ipv4(net.peer_ip), 7007);
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
    kernel.join().unwrap();
    assert_eq!(e.stats().connected, conns as u64);
}

#[test]
fn kernel_client_to_ukcm_echo_1_conn() {
    if privileged_or_skip("kernel_client_to_ukcm_echo_1_conn") {
        kernel_client_to_ukcm_echo(1);
    }
}

#[test]
fn kernel_client_to_ukcm_echo_64_conns() {
    if privileged_or_skip("kernel_client_to_ukcm_echo_64_conns") {
        kernel_client_to_ukcm_echo(64);
    }
}

#[test]
fn ukcm_client_to_kernel_echo_1_conn() {
    if privileged_or_skip("ukcm_client_to_kernel_echo_1_conn") {
        ukcm_client_to_kernel_echo(1);
    }
}

#[test]
fn ukcm_client_to_kernel_echo_64_conns() {
    if privileged_or_skip("ukcm_client_to_kernel_echo_64_conns") {
        ukcm_client_to_kernel_echo(64);
    }
}
