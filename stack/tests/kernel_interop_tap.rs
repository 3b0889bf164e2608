//! ukcm against the real Linux TCP stack over a TAP port (privileged): the engine owns the
//! TAP's file descriptor, the TAP's kernel side is moved into a throwaway namespace, and the
//! kernel there is the peer. The same four tests as `kernel_interop.rs` (AF_XDP on a veth):
//! the kernel pings the engine; kernel clients → ukcm echo and ukcm clients → kernel echo,
//! 1 and 64 connections, 1 MiB each way per connection, byte-exact. Every kernel-side
//! socket is created inside the namespace and bound to the TAP (SO_BINDTODEVICE).
//!
//! Runs as root (`UKCM_PRIVILEGED=1` makes a missing privilege a failure, not a skip).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Cidr};
use ukcm_nic::tap::{TapConfig, TapPort};
use ukcm_nic::testnet::{bind_to_device, privileged_or_skip, run};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};
use ukcm_stack::{consume_rx, ConnId, Engine, EngineConfig, IdleStrategy, TcpOptions};

const BYTES: usize = 1 << 20;
/// The stack's MAC (locally administered; the TAP's kernel side has its own).
const UKCM_MAC: [u8; 6] = [0x02, 0x75, 0x6b, 0x63, 0x6d, 0x11];

static NEXT: AtomicU32 = AtomicU32::new(0);

fn pattern(seed: u64, i: u64) -> u8 {
    let z = (i / 8).wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((z ^ (z >> 31)) >> ((i % 8) * 8)) as u8
}

/// A TAP whose kernel side lives in namespace `ns` (deleted on drop, which deletes the TAP's
/// kernel side with it; our fd then sees the device gone).
struct TapNet {
    ns: String,
    tap: String,
    ukcm_ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
}

impl TapNet {
    /// Opens TAP `uks<pid>x<n>`, moves it into `ukcm-stap-<pid>-<n>`, addressed
    /// 10.218.<x>.2/24 there (ukcm takes .1), up, tx checksum offload off.
    fn new() -> io::Result<(TapPort, TapNet)> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tap = format!("uks{}x{}", pid % 10_000_000, n % 100);
        let cfg = TapConfig {
            name: tap.clone(),
            pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 4096 },
            ..TapConfig::default()
        };
        let port = TapPort::open(&cfg, &PinnedBudget::unlimited(), HugePolicy::Never).map_err(io::Error::other)?;
        let x = (pid.wrapping_mul(13).wrapping_add(n * 3)) % 250 + 1;
        let net = TapNet {
            ns: format!("ukcm-stap-{pid}-{n}"),
            tap,
            ukcm_ip: Ipv4Addr::new(10, 218, x as u8, 1),
            peer_ip: Ipv4Addr::new(10, 218, x as u8, 2),
        };
        run(Command::new("ip").args(["netns", "add", &net.ns]))?;
        // From here on, drop removes the namespace.
        run(Command::new("ip").args(["link", "set", &net.tap, "netns", &net.ns]))?;
        net.exec(&["ip", "link", "set", "lo", "up"])?;
        let _ = net.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", net.tap)]);
        net.exec(&["ip", "addr", "add", &format!("{}/24", net.peer_ip), "dev", &net.tap])?;
        net.exec(&["ip", "link", "set", &net.tap, "up"])?;
        // Full checksums from the kernel (a TAP without IFF_VNET_HDR has no tx offload; make sure).
        let _ = net.exec(&["ethtool", "-K", &net.tap, "tx", "off"]);
        Ok((port, net))
    }

    fn exec(&self, args: &[&str]) -> io::Result<String> {
        run(Command::new("ip").args(["netns", "exec", &self.ns]).args(args))
    }

    /// Runs `f` on a thread that joined the namespace (setns affects that thread only).
    fn in_ns<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> io::Result<R> {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            s.spawn(|| -> io::Result<R> {
                let file = std::fs::File::open(&path)?;
                // SAFETY: setns with a valid namespace fd; it changes only this thread's namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("namespace thread panicked"))?
        })
    }
}

impl Drop for TapNet {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "del", &self.ns]));
    }
}

fn engine(port: TapPort, net: &TapNet) -> Engine<TapPort> {
    let cfg = EngineConfig {
        mac: Some(UKCM_MAC),
        ipv4: Some(Ipv4Cidr::new(net.ukcm_ip, 24)),
        default_tcp: TcpOptions { rx_buf: 256 * 1024, tx_buf: 256 * 1024, ..TcpOptions::default() },
        idle: IdleStrategy::Backoff { spins: 200, yields: 50, park: Duration::from_micros(100) },
        ..EngineConfig::default()
    };
    Engine::new(port, cfg).expect("engine")
}

/// A kernel TCP client socket made in the namespace, bound to the TAP, connected.
fn kernel_connect(net: &TapNet, to: SocketAddr) -> TcpStream {
    let dev = net.tap.clone();
    net.in_ns(move || {
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
fn echo_ready(e: &mut Engine<TapPort>, ready: &mut Vec<ConnId>) {
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
    let (port, net) = TapNet::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut e = engine(port, &net);
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
    // the kernel pings the userspace stack through the TAP (ARP + ICMP echo answered by the engine)
    let ping = net.exec(&["ping", "-c", "2", "-W", "2", "-I", &net.tap, &net.ukcm_ip.to_string()]);
    let ping = match ping {
        Ok(out) => out,
        Err(err) => {
            stop.store(true, Ordering::Relaxed);
            let st = server.join().unwrap();
            panic!("ping failed: {err}\n{st:?}");
        }
    };
    assert!(ping.contains(" 0% packet loss"), "{ping}");
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
    let (st, pst) = server.join().unwrap();
    assert_eq!(st.accepted, conns as u64, "{st:?}");
    assert!(pst.rx_frames > 0 && pst.tx_frames > 0, "{pst:?}");
}

fn ukcm_client_to_kernel_echo(conns: usize) {
    let (port, net) = TapNet::new().unwrap();
    let addr = SocketAddr::new(net.peer_ip.into(), 7007);
    let dev = net.tap.clone();
    let listener: TcpListener = net
        .in_ns(move || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            bind_to_device(s.as_raw_fd(), &dev).unwrap();
            s.set_reuse_address(true).unwrap();
            s.bind(&addr.into()).unwrap();
            s.listen(128).unwrap();
            TcpListener::from(s)
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
    let mut e = engine(port, &net);
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
}

#[test]
fn tap_kernel_client_to_ukcm_echo_1_conn() {
    if privileged_or_skip("tap_kernel_client_to_ukcm_echo_1_conn") {
        kernel_client_to_ukcm_echo(1);
    }
}

#[test]
fn tap_kernel_client_to_ukcm_echo_64_conns() {
    if privileged_or_skip("tap_kernel_client_to_ukcm_echo_64_conns") {
        kernel_client_to_ukcm_echo(64);
    }
}

#[test]
fn tap_ukcm_client_to_kernel_echo_1_conn() {
    if privileged_or_skip("tap_ukcm_client_to_kernel_echo_1_conn") {
        ukcm_client_to_kernel_echo(1);
    }
}

#[test]
fn tap_ukcm_client_to_kernel_echo_64_conns() {
    if privileged_or_skip("tap_ukcm_client_to_kernel_echo_64_conns") {
        ukcm_client_to_kernel_echo(64);
    }
}
