//! AF_XDP throughput on a veth against the kernel's own UDP path, same traffic, same run.
//!
//! - rx: a sender thread in the peer namespace floods 64-byte UDP datagrams with
//!   `sendmmsg` (socket bound to the peer veth) for a fixed time; received frames/s by
//!   (a) an AF_XDP port on the host veth, (b) a kernel UDP socket with `recvmmsg` on a
//!   second topology where the ukcm address is assigned to the host veth. Ratio a/b.
//! - tx: (a) the AF_XDP port sends 64-byte datagrams to the peer, (b) a kernel UDP socket
//!   in the host namespace does the same with `sendmmsg`; counted by the peer veth's rx
//!   packet counter.
//!
//! Run as root: `cargo bench -p ukcm-nic --bench afxdp`. Without root it says so and exits.
//! Each phase runs `UKCM_BENCH_SECS` seconds (default 3); `UKCM_BENCH_RING` sets the AF_XDP
//! ring size (default 2048).

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ukcm_nic::afxdp::{AfXdpConfig, AfXdpPort};
use ukcm_nic::testnet::{bind_to_device, is_root, TestNet, TestNetOptions};
use ukcm_nic::{Frame, HugePolicy, PinnedBudget, PoolConfig, Port};

const PAYLOAD: usize = 64;
const BATCH: usize = 64;
const DST_PORT: u16 = 9;

fn secs() -> Duration {
    let s = std::env::var("UKCM_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

/// Sends `BATCH`-sized `sendmmsg` bursts of `PAYLOAD`-byte datagrams on a connected
/// socket until `stop`; returns how many the kernel accepted.
fn sendmmsg_flood(sock: &UdpSocket, stop: &AtomicBool) -> u64 {
    let mut bufs = vec![[0u8; PAYLOAD]; BATCH];
    let mut iov: Vec<libc::iovec> =
        bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: PAYLOAD }).collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid "no name, no control" header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs point at iovecs and buffers that live across the call.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        } else {
            std::thread::yield_now(); // ENOBUFS/EAGAIN: the device queue is full
        }
    }
    sent
}

/// Counts datagrams with `recvmmsg` until `stop` and the socket is quiet.
fn recvmmsg_count(sock: &UdpSocket, stop: &AtomicBool) -> u64 {
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iov: Vec<libc::iovec> =
        bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: 2048 }).collect();
    // SAFETY: as in `sendmmsg_flood`.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut got = 0u64;
    loop {
        // SAFETY: as above; MSG_DONTWAIT so we never block.
        let n = unsafe {
            libc::recvmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n > 0 {
            got += n as u64;
        } else if stop.load(Ordering::Relaxed) {
            return got;
        } else {
            std::hint::spin_loop();
        }
    }
}

fn set_rcvbuf(sock: &UdpSocket, bytes: i32) {
    // SAFETY: setsockopt with an int of the right size on a live socket.
    unsafe {
        libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&bytes as *const i32).cast(), 4)
    };
}

/// The peer veth's rx packet counter.
fn peer_rx_packets(net: &TestNet) -> u64 {
    let out = net.peer_ip_cmd(&["-s", "link", "show", "dev", &net.peer_if]).expect("ip -s link");
    let mut lines = out.lines();
    while let Some(l) = lines.next() {
        if l.trim_start().starts_with("RX:") {
            return lines.next().and_then(|v| v.split_whitespace().nth(1)).and_then(|p| p.parse().ok()).unwrap_or(0);
        }
    }
    0
}

/// A flood from the peer for `dur`, while `receive` counts on our side; (sent, received).
fn peer_flood<R: FnOnce(&AtomicBool) -> u64 + Send>(net: &TestNet, dur: Duration, receive: R) -> (u64, u64) {
    let sock = net.peer_udp_socket().expect("peer socket");
    sock.connect((net.ukcm_ip, DST_PORT)).expect("connect");
    let stop_send = AtomicBool::new(false);
    let stop_recv = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sender = s.spawn(|| sendmmsg_flood(&sock, &stop_send));
        let receiver = s.spawn(|| receive(&stop_recv));
        std::thread::sleep(dur);
        stop_send.store(true, Ordering::Relaxed);
        let sent = sender.join().unwrap();
        std::thread::sleep(Duration::from_millis(100)); // drain what is in flight
        stop_recv.store(true, Ordering::Relaxed);
        (sent, receiver.join().unwrap())
    })
}

fn open_port(net: &TestNet) -> AfXdpPort {
    // Ring entries (rx/tx; fill and completion get twice as many); the pool holds 4x.
    let ring: u32 = std::env::var("UKCM_BENCH_RING").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    let cfg = AfXdpConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 4 * ring as usize },
        ring_size: ring,
        ..AfXdpConfig::new(&net.host_if, 0)
    };
    AfXdpPort::open(&cfg, &PinnedBudget::unlimited(), HugePolicy::Prefer).expect("AF_XDP open")
}

fn write_udp(f: &mut Frame, src: ([u8; 6], Ipv4Addr), dst: ([u8; 6], Ipv4Addr), payload: &[u8]) {
    let len = 42 + payload.len();
    let b = &mut f.room_mut()[..len];
    b[0..6].copy_from_slice(&dst.0);
    b[6..12].copy_from_slice(&src.0);
    b[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut b[14..34];
    ip.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[2..4].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src.1.octets());
    ip[16..20].copy_from_slice(&dst.1.octets());
    let mut sum: u32 = ip.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    b[34..36].copy_from_slice(&40_000u16.to_be_bytes());
    b[36..38].copy_from_slice(&DST_PORT.to_be_bytes());
    b[38..40].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    b[40..42].copy_from_slice(&[0, 0]);
    b[42..].copy_from_slice(payload);
    f.set_len(len).unwrap();
}

struct Row {
    what: &'static str,
    offered: u64,
    done: u64,
    secs: f64,
    note: String,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    if !is_root() {
        eprintln!("SKIP afxdp bench: needs root (AF_XDP, namespaces)");
        return;
    }
    let dur = secs();
    let mut rows = Vec::new();

    // rx, AF_XDP
    {
        let net = TestNet::new("xbr", &TestNetOptions::default()).expect("testnet");
        net.static_neighbour().expect("neighbour entry");
        let port = std::sync::Mutex::new(open_port(&net));
        let name = port.lock().unwrap().caps().name;
        let (sent, got) = peer_flood(&net, dur, |stop| {
            let mut p = port.lock().unwrap();
            let mut frames = Vec::with_capacity(BATCH);
            let mut got = 0u64;
            loop {
                let n = p.rx_burst(&mut frames, BATCH).unwrap();
                frames.clear();
                got += n as u64;
                if n == 0 && stop.load(Ordering::Relaxed) {
                    return got;
                }
            }
        });
        let st = port.lock().unwrap().stats();
        rows.push(Row {
            what: "rx AF_XDP port",
            offered: sent,
            done: got,
            secs: dur.as_secs_f64(),
            note: format!("{name}; kernel drops {}, wakeups {}", st.rx_dropped, st.wakeups),
        });
    }
    // rx, kernel UDP socket
    {
        let net = TestNet::new("xbk", &TestNetOptions::default()).expect("testnet");
        ukcm_nic::testnet::run(std::process::Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/{}", net.ukcm_ip, net.prefix),
            "dev",
            &net.host_if,
        ]))
        .expect("ip addr add");
        net.static_neighbour().expect("neighbour entry");
        let rx = UdpSocket::bind((net.ukcm_ip, DST_PORT)).expect("bind");
        bind_to_device(rx.as_raw_fd(), &net.host_if).expect("bind to device");
        set_rcvbuf(&rx, 16 << 20);
        let (sent, got) = peer_flood(&net, dur, |stop| recvmmsg_count(&rx, stop));
        rows.push(Row {
            what: "rx kernel UDP recvmmsg",
            offered: sent,
            done: got,
            secs: dur.as_secs_f64(),
            note: "same veth setup, address on the host end".into(),
        });
    }
    // tx, AF_XDP
    {
        let net = TestNet::new("xbt", &TestNetOptions::default()).expect("testnet");
        let mut port = open_port(&net);
        let pool = port.tx_pool().clone();
        let before = peer_rx_packets(&net);
        let payload = [0u8; PAYLOAD];
        let mut batch: Vec<Frame> = Vec::with_capacity(BATCH);
        let mut sink = Vec::new();
        let start = Instant::now();
        let mut offered = 0u64;
        while start.elapsed() < dur {
            while batch.len() < BATCH {
                let Ok(mut f) = pool.alloc() else { break };
                write_udp(&mut f, (net.host_mac, net.ukcm_ip), (net.peer_mac, net.peer_ip), &payload);
                batch.push(f);
                offered += 1;
            }
            port.tx_burst(&mut batch).unwrap();
            if !batch.is_empty() {
                port.rx_burst(&mut sink, BATCH).unwrap(); // reclaims completions, re-kicks
                sink.clear();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        offered -= batch.len() as u64;
        drop(batch);
        std::thread::sleep(Duration::from_millis(100));
        let st = port.stats();
        let delivered = peer_rx_packets(&net) - before;
        rows.push(Row {
            what: "tx AF_XDP port",
            offered: st.tx_frames.min(offered),
            done: delivered,
            secs,
            note: format!("tx_full {}, wakeups {}", st.tx_full, st.wakeups),
        });
    }
    // tx, kernel UDP socket
    {
        let net = TestNet::new("xbu", &TestNetOptions::default()).expect("testnet");
        ukcm_nic::testnet::run(std::process::Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/{}", net.ukcm_ip, net.prefix),
            "dev",
            &net.host_if,
        ]))
        .expect("ip addr add");
        let tx = UdpSocket::bind((net.ukcm_ip, 0)).expect("bind");
        bind_to_device(tx.as_raw_fd(), &net.host_if).expect("bind to device");
        tx.connect((net.peer_ip, DST_PORT)).expect("connect");
        // Resolve the peer once so the flood does not start behind ARP.
        let _ = tx.send(&[0u8; PAYLOAD]);
        std::thread::sleep(Duration::from_millis(200));
        let before = peer_rx_packets(&net);
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let sent = std::thread::scope(|s| {
            let h = s.spawn(|| sendmmsg_flood(&tx, &stop));
            std::thread::sleep(dur);
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap()
        });
        let secs = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(100));
        let delivered = peer_rx_packets(&net) - before;
        rows.push(Row { what: "tx kernel UDP sendmmsg", offered: sent, done: delivered, secs, note: String::new() });
    }

    println!("\nAF_XDP vs kernel on a veth, {PAYLOAD}-byte UDP payloads, {:.1} s per phase", dur.as_secs_f64());
    println!("{:<24} {:>12} {:>12} {:>12}  note", "phase", "offered", "done", "done/s");
    for r in &rows {
        println!("{:<24} {:>12} {:>12} {:>12.0}  {}", r.what, r.offered, r.done, r.done as f64 / r.secs, r.note);
    }
    let rate = |i: usize| rows[i].done as f64 / rows[i].secs;
    println!("rx ratio AF_XDP / kernel: {:.2}", rate(0) / rate(1));
    println!("tx ratio AF_XDP / kernel: {:.2}", rate(2) / rate(3));
    println!("(rx: offered = sent by the peer, done = received; tx: offered = accepted by the sender, done = peer veth rx packets)");
}
