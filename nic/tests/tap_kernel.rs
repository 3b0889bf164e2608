//! The TAP port against the Linux stack: the TAP is moved into a fresh namespace (its fd
//! stays ours), so the kernel there is the peer. Needs root.

use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use ukcm_nic::tap::{TapConfig, TapPort};
use ukcm_nic::testnet::{bind_to_device, privileged_or_skip, TestNet};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig, Port, PortDevice};

/// A TAP with `frames` pool frames whose kernel side lives in a fresh namespace.
fn tap_net(frames: usize) -> io::Result<(TapPort, TestNet)> {
    TestNet::with_tap("tap", |name, _| {
        let cfg = TapConfig {
            name: name.to_string(),
            pool: PoolConfig { frame_size: 2048, headroom: 128, frames },
            ..TapConfig::default()
        };
        TapPort::open(&cfg, &PinnedBudget::unlimited(), HugePolicy::Never).map_err(io::Error::other)
    })
}

#[test]
fn kernel_pings_smoltcp_through_the_tap() {
    if !privileged_or_skip("kernel_pings_smoltcp_through_the_tap") {
        return;
    }
    let (port, net) = tap_net(256).unwrap();
    let ukcm_mac = net.host_mac;
    let stop = Arc::new(AtomicBool::new(false));
    let ukcm_ip = net.ukcm_ip;
    let engine = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut dev = PortDevice::new(port);
            let now = smoltcp::time::Instant::now;
            let mut iface = Interface::new(Config::new(EthernetAddress(ukcm_mac).into()), &mut dev, now());
            iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(ukcm_ip), 24)).unwrap());
            let mut sockets = SocketSet::new(vec![]);
            while !stop.load(Ordering::Relaxed) {
                iface.poll(now(), &mut dev, &mut sockets);
                dev.flush().unwrap();
                if let Some(e) = dev.take_error() {
                    panic!("port error: {e}");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            (dev.stats(), dev.port().stats())
        })
    };
    let ping = Command::new("ip")
        .args(["netns", "exec", &net.ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", &net.peer_if])
        .arg(net.ukcm_ip.to_string())
        .output();
    stop.store(true, Ordering::Relaxed);
    let (dstats, pstats) = engine.join().unwrap();
    let out = ping.expect("ping not found: apt-get install -y iputils-ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping failed:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("3 received"), "{text}");
    assert!(pstats.rx_frames >= 4 && pstats.tx_frames >= 4, "ARP + 3 echos each way: {pstats:?}");
    assert_eq!(dstats.tx_dropped, 0);
    assert_eq!(pstats.rx_dropped, 0);
}

#[test]
fn hundred_thousand_udp_datagrams_arrive_exactly() {
    if !privileged_or_skip("hundred_thousand_udp_datagrams_arrive_exactly") {
        return;
    }
    const TOTAL: u32 = 100_000;
    const WINDOW: u64 = 256; // in flight at most: far below the TAP's 1000-frame queue
    const PORT: u16 = 40_214;
    const MAGIC: &[u8; 4] = b"ukcm";
    let (mut port, net) = tap_net(1024).unwrap();
    let mac = net.host_mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    // A permanent neighbour entry: the kernel sends without asking ARP, nothing answers it.
    net.peer_cmd(&[
        "ip",
        "neigh",
        "replace",
        &net.ukcm_ip.to_string(),
        "lladdr",
        &mac,
        "dev",
        &net.peer_if,
        "nud",
        "permanent",
    ])
    .unwrap();

    let received = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let sender = {
            let (received, failed) = (Arc::clone(&received), Arc::clone(&failed));
            let net = &net;
            s.spawn(move || {
                net.in_peer(|| -> Result<(), String> {
                    let sock = std::net::UdpSocket::bind((net.peer_ip, 0)).map_err(|e| e.to_string())?;
                    // Bound to the TAP: this generator can only ever send through it.
                    bind_to_device(sock.as_raw_fd(), &net.peer_if).map_err(|e| e.to_string())?;
                    sock.connect((net.ukcm_ip, PORT)).map_err(|e| e.to_string())?;
                    let mut payload = [0u8; 64];
                    payload[..4].copy_from_slice(MAGIC);
                    for seq in 0..TOTAL {
                        let mut last = (received.load(Ordering::Acquire), Instant::now());
                        while seq as u64 - last.0 >= WINDOW {
                            if failed.load(Ordering::Relaxed) {
                                return Err("receiver gave up".into());
                            }
                            let r = received.load(Ordering::Acquire);
                            if r != last.0 {
                                last = (r, Instant::now());
                            } else if last.1.elapsed() > Duration::from_secs(10) {
                                return Err(format!("stalled at seq {seq}, {r} received"));
                            }
                            std::thread::yield_now();
                        }
                        payload[4..8].copy_from_slice(&seq.to_be_bytes());
                        sock.send(&payload).map_err(|e| format!("send {seq}: {e}"))?;
                    }
                    Ok(())
                })
                .map_err(|e| e.to_string())?
            })
        };

        let mut seen = vec![false; TOTAL as usize];
        let (mut distinct, mut dups, mut others) = (0u32, 0u64, 0u64);
        let mut frames = Vec::with_capacity(64);
        let mut progress = Instant::now();
        while distinct < TOTAL {
            let n = port.rx_burst(&mut frames, 64).unwrap();
            for f in frames.drain(..) {
                match udp_seq(f.data(), PORT, MAGIC) {
                    Some(seq) if seq < TOTAL => {
                        if std::mem::replace(&mut seen[seq as usize], true) {
                            dups += 1;
                        } else {
                            distinct += 1;
                        }
                        received.fetch_add(1, Ordering::Release);
                    }
                    _ => others += 1,
                }
            }
            if n > 0 {
                progress = Instant::now();
            } else if progress.elapsed() > Duration::from_secs(10) {
                failed.store(true, Ordering::Relaxed);
                break;
            } else {
                std::thread::yield_now();
            }
        }
        let sent = sender.join().unwrap();
        assert_eq!(sent, Ok(()), "sender");
        assert_eq!(distinct, TOTAL, "every sequence number exactly once (dups {dups}, other frames {others})");
        assert_eq!(dups, 0);
        let st = port.stats();
        assert_eq!(st.rx_dropped, 0, "{st:?}");
        assert!(st.rx_frames >= TOTAL as u64);
    });
    assert_eq!(port.tx_pool().outstanding(), 0, "no frame leaked");
}

/// The sequence number of one of our datagrams, if `f` is one.
fn udp_seq(f: &[u8], port: u16, magic: &[u8; 4]) -> Option<u32> {
    if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] || f[14] >> 4 != 4 || f[23] != 17 {
        return None;
    }
    let udp = 14 + (f[14] & 0x0f) as usize * 4;
    let body = f.get(udp..)?;
    if body.len() < 16 || u16::from_be_bytes([body[2], body[3]]) != port || &body[8..12] != magic {
        return None;
    }
    Some(u32::from_be_bytes([body[12], body[13], body[14], body[15]]))
}
