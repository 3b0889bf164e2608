//! The AF_XDP port against the Linux stack: ukcm owns the host end of a veth, the kernel
//! in a fresh namespace is the peer. Needs root (the tests skip without it, and fail
//! without it under UKCM_PRIVILEGED=1).

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use ukcm_nic::afxdp::xdp_prog::VETH_NATIVE_MAX_MTU;
use ukcm_nic::afxdp::{AfXdpConfig, AfXdpPort, Attached, BindMode, ChunkSize, XdpMode};
use ukcm_nic::testnet::{bind_to_device, privileged_or_skip, run, TestNet, TestNetOptions};
use ukcm_nic::{
    CopyMode, Frame, FramePool, HugePolicy, PinnedBudget, PinnedRegion, PoolConfig, Port, PortDevice, PortError,
    RegionCarver,
};

fn config(net: &TestNet, queue: u32, frames: usize) -> AfXdpConfig {
    AfXdpConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 256, frames },
        ring_size: 512,
        ..AfXdpConfig::new(&net.host_if, queue)
    }
}

fn open(cfg: &AfXdpConfig) -> AfXdpPort {
    AfXdpPort::open(cfg, &PinnedBudget::unlimited(), HugePolicy::Never)
        .unwrap_or_else(|e| panic!("open {}: {e}", cfg.ifname))
}

/// `ip -d link show dev X`: what the kernel says is attached.
fn link_details(dev: &str) -> String {
    run(Command::new("ip").args(["-d", "link", "show", "dev", dev])).unwrap()
}

fn has_xdp(details: &str) -> bool {
    details.contains("prog/xdp") || details.split_whitespace().any(|w| w.starts_with("xdp"))
}

const MAGIC: &[u8; 4] = b"ukcm";

/// The sequence number of one of our datagrams to `port`, if `f` is one.
fn udp_seq(f: &[u8], port: u16) -> Option<u32> {
    if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] || f[14] >> 4 != 4 || f[23] != 17 {
        return None;
    }
    let udp = 14 + (f[14] & 0x0f) as usize * 4;
    let body = f.get(udp..)?;
    if body.len() < 16 || u16::from_be_bytes([body[2], body[3]]) != port || &body[8..12] != MAGIC {
        return None;
    }
    Some(u32::from_be_bytes([body[12], body[13], body[14], body[15]]))
}

/// Writes an Ethernet/IPv4/UDP frame carrying `payload` into `f`.
fn write_udp(f: &mut Frame, src: ([u8; 6], Ipv4Addr, u16), dst: ([u8; 6], Ipv4Addr, u16), payload: &[u8]) {
    let len = 14 + 20 + 8 + payload.len();
    let b = &mut f.room_mut()[..len];
    b[0..6].copy_from_slice(&dst.0);
    b[6..12].copy_from_slice(&src.0);
    b[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut b[14..34];
    ip.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[2..4].copy_from_slice(&((20 + 8 + payload.len()) as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src.1.octets());
    ip[16..20].copy_from_slice(&dst.1.octets());
    let mut sum: u32 = ip.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut b[34..42];
    udp[0..2].copy_from_slice(&src.2.to_be_bytes());
    udp[2..4].copy_from_slice(&dst.2.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]); // no UDP checksum (allowed for IPv4)
    b[42..].copy_from_slice(payload);
    f.set_len(len).unwrap();
}

#[test]
fn kernel_pings_smoltcp_over_afxdp() {
    if !privileged_or_skip("kernel_pings_smoltcp_over_afxdp") {
        return;
    }
    let net = TestNet::new("xdp", &TestNetOptions::default()).unwrap();
    let port = open(&config(&net, 0, 1024));
    let caps = port.caps();
    assert_eq!(caps.name, format!("afxdp:{}:0 (native, copy)", net.host_if), "veth: native XDP, copy mode");
    assert_eq!(caps.copy_mode, CopyMode::Copy);
    assert_eq!(caps.mac, Some(net.host_mac));
    let pool = port.tx_pool().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (mac, ip) = (net.host_mac, net.ukcm_ip);
    let engine = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut dev = PortDevice::new(port);
            let now = smoltcp::time::Instant::now;
            let mut iface = Interface::new(Config::new(EthernetAddress(mac).into()), &mut dev, now());
            iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap());
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
    let ukcm_ip = net.ukcm_ip.to_string();
    let ping = net.peer_cmd(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", &net.peer_if, &ukcm_ip]);
    stop.store(true, Ordering::Relaxed);
    let (dstats, pstats) = engine.join().unwrap();
    let text = ping.expect("ping failed (is iputils-ping installed?)");
    assert!(text.contains("3 received"), "{text}");
    assert!(pstats.rx_frames >= 4 && pstats.tx_frames >= 4, "ARP + 3 echos each way: {pstats:?}");
    assert_eq!(dstats.tx_dropped, 0);
    assert_eq!(pstats.rx_dropped, 0, "{pstats:?}");
    assert!(pstats.wakeups > 0, "copy-mode tx always needs a sendto kick: {pstats:?}");
    assert_eq!(pool.outstanding(), 0, "engine (and port) dropped: every frame is back");
}

#[test]
fn hundred_thousand_udp_datagrams_arrive_exactly() {
    if !privileged_or_skip("hundred_thousand_udp_datagrams_arrive_exactly") {
        return;
    }
    const TOTAL: u32 = 100_000;
    const WINDOW: u64 = 256; // in flight at most: half the rx ring
    const PORT: u16 = 9;
    let net = TestNet::new("xdp", &TestNetOptions::default()).unwrap();
    let mut port = open(&config(&net, 0, 2048));
    let pool = port.tx_pool().clone();
    net.static_neighbour().expect("neighbour entry");
    let sock = net.peer_udp_socket().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let sender = {
            let (received, failed, sock, dst) =
                (Arc::clone(&received), Arc::clone(&failed), &sock, (net.ukcm_ip, PORT));
            s.spawn(move || -> Result<(), String> {
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
                    sock.send_to(&payload, dst).map_err(|e| format!("send {seq}: {e}"))?;
                }
                Ok(())
            })
        };
        let mut seen = vec![false; TOTAL as usize];
        let (mut distinct, mut dups, mut others) = (0u32, 0u64, 0u64);
        let mut frames = Vec::with_capacity(64);
        let mut progress = Instant::now();
        while distinct < TOTAL {
            let n = port.rx_burst(&mut frames, 64).unwrap();
            for f in frames.drain(..) {
                match udp_seq(f.data(), PORT) {
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
        assert_eq!(sender.join().unwrap(), Ok(()), "sender");
        // Anything still in flight would show up now.
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            port.rx_burst(&mut frames, 64).unwrap();
            for f in frames.drain(..) {
                match udp_seq(f.data(), PORT) {
                    Some(_) => dups += 1,
                    None => others += 1,
                }
            }
        }
        assert_eq!(distinct, TOTAL, "every sequence number (other frames {others})");
        assert_eq!(dups, 0, "no sequence number twice, nothing extra");
        let st = port.stats();
        assert_eq!(st.rx_dropped, 0, "{st:?}");
        assert_eq!(st.rx_frames, TOTAL as u64 + others);
    });
    drop(port);
    assert_eq!(pool.outstanding(), 0, "no frame leaked");
}

#[test]
fn ten_thousand_datagrams_sent_by_ukcm_reach_the_kernel() {
    if !privileged_or_skip("ten_thousand_datagrams_sent_by_ukcm_reach_the_kernel") {
        return;
    }
    const TOTAL: u32 = 10_000;
    const WINDOW: u32 = 256;
    const PORT: u16 = 40_215;
    let net = TestNet::new("xdp", &TestNetOptions::default()).unwrap();
    let mut port = open(&config(&net, 0, 1024));
    let pool = port.tx_pool().clone();
    let (dev, ip) = (net.peer_if.clone(), net.peer_ip);
    let rx: UdpSocket = net
        .in_peer(move || {
            let s = UdpSocket::bind((ip, PORT)).unwrap();
            bind_to_device(s.as_raw_fd(), &dev).unwrap();
            // Room for the whole window even at a small datagram's full skb truesize.
            let size: libc::c_int = 8 << 20;
            // SAFETY: setsockopt with a c_int value of the right length on a live socket.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    4,
                )
            };
            assert_eq!(rc, 0, "SO_RCVBUFFORCE");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .unwrap();
    let got = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        let counter = {
            let got = Arc::clone(&got);
            s.spawn(move || {
                let mut seen = vec![false; TOTAL as usize];
                let mut buf = [0u8; 2048];
                let (mut distinct, mut dups) = (0u32, 0u32);
                while distinct < TOTAL {
                    let Ok(n) = rx.recv(&mut buf) else { break };
                    let seq = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                    if n == 64 && &buf[..4] == MAGIC && seq < TOTAL {
                        if std::mem::replace(&mut seen[seq as usize], true) {
                            dups += 1;
                        } else {
                            distinct += 1;
                        }
                    }
                    got.fetch_add(1, Ordering::Release);
                }
                (distinct, dups)
            })
        };
        let mut batch = Vec::with_capacity(64);
        let mut payload = [0u8; 64];
        payload[..4].copy_from_slice(MAGIC);
        let mut seq = 0;
        // Progress is a datagram queued or one received; only a long time without either
        // (a watchdog, not a rate) means tx stalled.
        let (mut last, mut progress) = ((0u32, 0u64), Instant::now());
        while seq < TOTAL || !batch.is_empty() {
            let state = (seq, got.load(Ordering::Acquire));
            if state != last {
                (last, progress) = (state, Instant::now());
            }
            assert!(
                progress.elapsed() < Duration::from_secs(60),
                "tx stalled: {seq} queued, {} received, {} in the batch; port {:?}",
                state.1,
                batch.len(),
                port.stats()
            );
            let inflight = seq as u64 - got.load(Ordering::Acquire);
            while seq < TOTAL && batch.len() < 64 && inflight + (batch.len() as u64) < WINDOW as u64 {
                let Ok(mut f) = pool.alloc() else { break };
                payload[4..8].copy_from_slice(&seq.to_be_bytes());
                write_udp(&mut f, (net.host_mac, net.ukcm_ip, 40_000), (net.peer_mac, net.peer_ip, PORT), &payload);
                batch.push(f);
                seq += 1;
            }
            port.tx_burst(&mut batch).unwrap();
            // rx_burst also reclaims completions and re-kicks a partly sent tx ring.
            let mut sink = Vec::new();
            port.rx_burst(&mut sink, 64).unwrap();
        }
        let (distinct, dups) = counter.join().unwrap();
        let snmp = net.peer_cmd(&["cat", "/proc/net/snmp"]).unwrap_or_default();
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        assert_eq!((distinct, dups), (TOTAL, 0), "every datagram exactly once; peer {udp:?}, port {:?}", port.stats());
    });
    let st = port.stats();
    assert_eq!(st.tx_frames, TOTAL as u64, "{st:?}");
    let (_, tx_out) = port.lent();
    assert!(tx_out < 64, "completions come back: {tx_out} still out");
    drop(port);
    assert_eq!(pool.outstanding(), 0, "no frame leaked");
}

#[test]
fn two_queues_of_one_veth_get_two_ports() {
    if !privileged_or_skip("two_queues_of_one_veth_get_two_ports") {
        return;
    }
    const PORT: u16 = 9;
    const FLOWS: u32 = 32;
    let net = TestNet::new("xdp", &TestNetOptions { queues: 2, ..TestNetOptions::default() }).unwrap();
    let mut q0 = open(&config(&net, 0, 512));
    // Queue 1's pool is carved from a region shared with other data, as an engine does.
    let pcfg = PoolConfig { frame_size: 2048, headroom: 256, frames: 512 };
    let region = PinnedRegion::new(pcfg.bytes() + 65536, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap();
    let mut carver = RegionCarver::new(region);
    let _rings = carver.carve(4096 + 100, 64).unwrap();
    let shared = FramePool::new(carver.carve(pcfg.bytes(), 4096).unwrap(), pcfg).unwrap();
    let mut q1 = AfXdpPort::open_with_pool(&config(&net, 1, 512), shared).unwrap();
    assert_eq!((q0.queue_id(), q1.queue_id()), (0, 1));
    assert_eq!((q0.caps().queue_id, q1.caps().queue_id), (0, 1));
    assert_eq!(q0.caps().queues, 2);
    assert!(q1.caps().name.starts_with(&format!("afxdp:{}:1 (", net.host_if)), "{}", q1.caps().name);
    let (p0, p1) = (q0.tx_pool().clone(), q1.tx_pool().clone());
    assert!(has_xdp(&link_details(&net.host_if)));

    // Many flows (source ports) so the peer's tx hash spreads them over both queues; each
    // datagram must arrive on exactly one port.
    net.static_neighbour().expect("neighbour entry");
    let socks: Vec<UdpSocket> = (0..FLOWS).map(|_| net.peer_udp_socket().unwrap()).collect();
    let mut payload = [0u8; 64];
    payload[..4].copy_from_slice(MAGIC);
    for (i, s) in socks.iter().enumerate() {
        payload[4..8].copy_from_slice(&(i as u32).to_be_bytes());
        s.send_to(&payload, (net.ukcm_ip, PORT)).unwrap();
    }
    let mut per_queue = [0u32; 2];
    let mut seen = vec![false; FLOWS as usize];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut frames = Vec::new();
    while per_queue.iter().sum::<u32>() < FLOWS && Instant::now() < deadline {
        for (q, p) in [&mut q0, &mut q1].into_iter().enumerate() {
            p.rx_burst(&mut frames, 64).unwrap();
            for f in frames.drain(..) {
                if let Some(seq) = udp_seq(f.data(), PORT) {
                    assert!(!std::mem::replace(&mut seen[seq as usize], true), "datagram {seq} twice");
                    per_queue[q] += 1;
                }
            }
        }
    }
    assert_eq!(per_queue.iter().sum::<u32>(), FLOWS, "all datagrams arrived: {per_queue:?}");
    assert!(per_queue[0] > 0 && per_queue[1] > 0, "both queues carried traffic: {per_queue:?}");

    let ifindex = q0.netdev().ifindex;
    assert_eq!(ukcm_nic::afxdp::xdp_prog::attached_here(ifindex), Some(Attached::Native));
    drop(q0);
    assert!(has_xdp(&link_details(&net.host_if)), "queue 1 still uses the program");
    drop(q1);
    assert_eq!(ukcm_nic::afxdp::xdp_prog::attached_here(ifindex), None, "registry entry gone");
    let d = link_details(&net.host_if);
    assert!(!has_xdp(&d), "detached after the last port dropped:\n{d}");
    assert_eq!(p0.outstanding() + p1.outstanding(), 0, "no frame leaked");
}

/// A veth whose two ends have IP MTU `mtu`.
fn net_with_mtu(mtu: u32) -> TestNet {
    TestNet::new("mtu", &TestNetOptions { mtu, ..TestNetOptions::default() }).unwrap()
}

#[test]
fn frames_follow_the_mtu_up_to_the_largest_and_the_refusal_says_it() {
    if !privileged_or_skip("frames_follow_the_mtu_up_to_the_largest_and_the_refusal_says_it") {
        return;
    }
    // veth's own limit for native XDP without frags: one more byte and it refuses (ERANGE).
    let net = net_with_mtu(VETH_NATIVE_MAX_MTU as u32);
    let native = AfXdpConfig { mode: XdpMode::Native, ..config(&net, 0, 256) };
    let port = open(&native);
    assert_eq!((port.tx_pool().frame_size(), port.caps().mtu), (4096, VETH_NATIVE_MAX_MTU));
    drop(port);
    drop(net);
    let net = net_with_mtu(VETH_NATIVE_MAX_MTU as u32 + 1);
    let native = AfXdpConfig { mode: XdpMode::Native, ..config(&net, 0, 256) };
    let err = AfXdpPort::open(&native, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap_err();
    assert!(err.to_string().contains(&format!("must be at most {VETH_NATIVE_MAX_MTU}")), "{err}");
    // Auto mode then runs generic XDP, which has no such limit.
    let port = open(&config(&net, 0, 256));
    assert_eq!(port.xdp_mode(), Attached::Generic);
    drop(port);
    drop(net);

    // 2048-byte frames held fixed: the error names their largest MTU and the way out.
    let net = net_with_mtu(3500);
    let fixed = AfXdpConfig { chunk: ChunkSize::Fixed, ..config(&net, 0, 256) };
    let err = AfXdpPort::open(&fixed, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("does not fit a 2048-byte frame: the largest MTU for it is 1778"), "{msg}");
    assert!(msg.contains("use 4096-byte frames"), "{msg}");
    drop(net);

    // Past what 4096-byte chunks hold (the largest the kernel takes): the exact largest MTU.
    let net = net_with_mtu(9000);
    let err = AfXdpPort::open(&config(&net, 0, 256), &PinnedBudget::unlimited(), HugePolicy::Never).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("MTU 9000 of {} is too large for AF_XDP here", net.host_if)), "{msg}");
    assert!(msg.contains(&format!("ip link set dev {} mtu 3826", net.host_if)), "{msg}");
    assert!(msg.contains("multi-buffer AF_XDP"), "{msg}");
}

#[test]
fn missing_interface_is_a_clear_error() {
    if !privileged_or_skip("missing_interface_is_a_clear_error") {
        return;
    }
    let err =
        AfXdpPort::open(&AfXdpConfig::new("ukcm-nope0", 0), &PinnedBudget::unlimited(), HugePolicy::Never).unwrap_err();
    assert!(matches!(err, PortError::LinkDown(_)), "{err:?}");
    assert!(err.to_string().contains("\"ukcm-nope0\" does not exist"), "{err}");
}

#[test]
fn program_detaches_on_drop_and_errors_name_the_problem() {
    if !privileged_or_skip("program_detaches_on_drop_and_errors_name_the_problem") {
        return;
    }
    let net = TestNet::new("xdp", &TestNetOptions::default()).unwrap();
    assert!(!has_xdp(&link_details(&net.host_if)));
    let cfg = config(&net, 0, 256);
    let port = open(&cfg);
    assert_eq!(port.xdp_mode(), Attached::Native);
    let d = link_details(&net.host_if);
    assert!(d.contains("prog/xdp"), "attached while open:\n{d}");
    let pool = port.tx_pool().clone();
    assert!(pool.outstanding() > 0, "fill ring holds frames");

    // The same queue twice: the kernel refuses, and the error says why.
    let err = AfXdpPort::open(&cfg, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap_err();
    assert!(err.to_string().contains("already has an AF_XDP socket"), "{err}");
    // A queue the device does not have.
    let err = AfXdpPort::open(&config(&net, 3, 256), &PinnedBudget::unlimited(), HugePolicy::Never).unwrap_err();
    assert!(err.to_string().contains("queue 3 out of range"), "{err}");
    // veth has no zero-copy support: asking for it only is an error, not a silent copy.
    let zc = AfXdpConfig { bind: BindMode::ZeroCopy, ..config(&net, 0, 256) };
    assert!(AfXdpPort::open(&zc, &PinnedBudget::unlimited(), HugePolicy::Never).is_err());
    // A failed open leaves the existing attachment alone, and the live port still receives.
    assert!(link_details(&net.host_if).contains("prog/xdp"));
    net.static_neighbour().expect("neighbour entry");
    let sock = net.peer_udp_socket().unwrap();
    let mut payload = [0u8; 64];
    payload[..4].copy_from_slice(MAGIC);
    sock.send_to(&payload, (net.ukcm_ip, 9)).unwrap();
    let mut port = port;
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !frames.iter().any(|f: &Frame| udp_seq(f.data(), 9) == Some(0)) && Instant::now() < deadline {
        port.rx_burst(&mut frames, 64).unwrap();
    }
    assert!(frames.iter().any(|f| udp_seq(f.data(), 9) == Some(0)), "the first port's map slot survived");
    drop(frames);

    drop(port);
    let d = link_details(&net.host_if);
    assert!(!has_xdp(&d), "detached after drop:\n{d}");
    assert_eq!(pool.outstanding(), 0, "every lent frame came back");

    // Generic mode works too, and detaches the same way.
    let g = open(&AfXdpConfig { mode: XdpMode::Generic, ..config(&net, 0, 256) });
    assert_eq!(g.xdp_mode(), Attached::Generic);
    assert!(g.caps().name.ends_with("(generic, copy)"), "{}", g.caps().name);
    assert!(link_details(&net.host_if).contains("xdpgeneric"));
    drop(g);
    assert!(!has_xdp(&link_details(&net.host_if)));
}

#[test]
fn busy_poll_without_need_wakeup_moves_traffic_and_copies_foreign_frames() {
    if !privileged_or_skip("busy_poll_without_need_wakeup_moves_traffic_and_copies_foreign_frames") {
        return;
    }
    const N: u32 = 100;
    const PORT: u16 = 40_216;
    let net = TestNet::new("xdp", &TestNetOptions::default()).unwrap();
    let cfg = AfXdpConfig { need_wakeup: false, busy_poll: true, ..config(&net, 0, 512) };
    let mut port = open(&cfg);
    let pool = port.tx_pool().clone();

    // rx: N datagrams from the peer.
    net.static_neighbour().expect("neighbour entry");
    let sock = net.peer_udp_socket().unwrap();
    let mut payload = [0u8; 64];
    payload[..4].copy_from_slice(MAGIC);
    for seq in 0..N {
        payload[4..8].copy_from_slice(&seq.to_be_bytes());
        sock.send_to(&payload, (net.ukcm_ip, PORT)).unwrap();
    }
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut frames = Vec::new();
    while got < N && Instant::now() < deadline {
        port.rx_burst(&mut frames, 64).unwrap();
        got += frames.drain(..).filter(|f| udp_seq(f.data(), PORT).is_some()).count() as u32;
    }
    assert_eq!(got, N);
    assert_eq!(port.rx_burst(&mut frames, 64).unwrap(), 0);
    let rx_wakeups = port.stats().wakeups;
    assert!(rx_wakeups > 0, "an empty busy-poll burst calls recvfrom");

    // tx: frames from a different pool are copied into the UMEM, then sent.
    let (dev, ip) = (net.peer_if.clone(), net.peer_ip);
    let rx: UdpSocket = net
        .in_peer(move || {
            let s = UdpSocket::bind((ip, PORT)).unwrap();
            bind_to_device(s.as_raw_fd(), &dev).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .unwrap();
    let other = ukcm_nic::FramePool::with_region(
        PoolConfig { frame_size: 2048, headroom: 64, frames: 64 },
        &PinnedBudget::unlimited(),
        HugePolicy::Never,
    )
    .unwrap();
    let mut batch = Vec::new();
    for seq in 0..32u32 {
        let mut f = other.alloc().unwrap();
        payload[4..8].copy_from_slice(&seq.to_be_bytes());
        write_udp(&mut f, (net.host_mac, net.ukcm_ip, 40_000), (net.peer_mac, net.peer_ip, PORT), &payload);
        batch.push(f);
    }
    assert_eq!(port.tx_burst(&mut batch).unwrap(), 32);
    assert!(batch.is_empty());
    assert_eq!(port.tx_copies(), 32);
    assert_eq!(other.outstanding(), 0, "the originals went back to their pool");
    let mut buf = [0u8; 2048];
    for _ in 0..32 {
        assert_eq!(rx.recv(&mut buf).expect("datagram sent through AF_XDP"), 64);
    }
    assert!(port.stats().wakeups > rx_wakeups, "without need_wakeup every tx burst kicks");
    drop(port);
    assert_eq!(pool.outstanding(), 0, "no frame leaked");
}
