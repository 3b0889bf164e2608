//! The DPDK port against the Linux kernel (feature `dpdk`, root): raw frames both ways
//! through `net_af_packet` on a veth, mbufs all back afterwards, and EAL errors that are
//! errors (not aborts).
//!
//! DPDK allows one EAL per process, so each scenario runs in a child process: the visible
//! test re-runs this test binary with `--exact child_<scenario> --ignored` and
//! `UKCM_DPDK_CHILD=1`, and checks it passed. The `child_*` tests do nothing without that
//! variable (so `cargo test -- --ignored` does not run them outside their own process).
#![cfg(feature = "dpdk")]

use std::time::{Duration, Instant};

use ukcm_nic::dpdk::testing::{in_own_process, is_child, test_eal_args};
use ukcm_nic::dpdk::{DpdkConfig, DpdkError, DpdkPort, Eal};
use ukcm_nic::testnet::{privileged_or_skip, TestNet, TestNetOptions};
use ukcm_nic::{Frame, PinnedBudget, Port};

fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let mut sum = 0u32;
    for c in ip.chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    f.extend_from_slice(payload);
    f
}

#[test]
fn af_packet_frames_both_ways_with_the_kernel() {
    if privileged_or_skip("af_packet_frames_both_ways_with_the_kernel") {
        in_own_process("child_af_packet_frames_both_ways");
    }
}

#[test]
fn af_xdp_frames_both_ways_with_the_kernel() {
    if privileged_or_skip("af_xdp_frames_both_ways_with_the_kernel") {
        in_own_process("child_af_xdp_frames_both_ways");
    }
}

#[test]
#[ignore = "runs in its own process, started by af_packet_frames_both_ways_with_the_kernel"]
fn child_af_packet_frames_both_ways() {
    if is_child() {
        frames_both_ways("net_af_packet0", "");
    }
}

#[test]
#[ignore = "runs in its own process, started by af_xdp_frames_both_ways_with_the_kernel"]
fn child_af_xdp_frames_both_ways() {
    if is_child() {
        frames_both_ways("net_af_xdp0", ",start_queue=0,queue_count=1");
    }
}

/// Datagrams of up to a full MTU both ways between the kernel and a DPDK vdev on a veth.
fn frames_both_ways(vdev: &str, extra: &str) {
    let net = TestNet::new("dpk", &TestNetOptions::default()).unwrap();
    let eal = Eal::init(&test_eal_args(&format!("{vdev},iface={}{extra}", net.host_if), 256)).expect("EAL init");
    assert_eq!(eal.port_count(), 1);
    let again = Eal::init(&test_eal_args("net_null0", 256)).unwrap_err();
    assert!(matches!(again, DpdkError::EalAlreadyUsed(_)), "{again}");

    let cfg = DpdkConfig { device: Some(vdev.into()), mbufs: 4095, ..DpdkConfig::default() };
    let mut port = DpdkPort::open(&eal, &cfg, &PinnedBudget::unlimited()).expect("open");
    let caps = port.caps();
    assert_eq!(caps.mac, Some(net.host_mac), "the vdev takes the veth's MAC");
    assert!(caps.name.starts_with(&format!("dpdk:{vdev}:0")), "{}", caps.name);
    assert!(port.link().unwrap().up);
    let (free0, pool_size) = port.mbufs_free();

    // kernel -> ukcm: the peer knows our MAC (static neighbour), so its datagrams come straight.
    net.static_neighbour().expect("neighbour entry");
    let sock = net.peer_udp_socket().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // sizes from 4 bytes to a full 1500-byte IP packet
    let size = |i: u32| 4 + (i as usize * 97) % 1469;
    for i in 0..100u32 {
        let mut d = vec![0xa5u8; size(i)];
        d[..4].copy_from_slice(&i.to_be_bytes());
        sock.send_to(&d, (net.ukcm_ip, 9)).unwrap();
        if i % 16 == 15 {
            std::thread::sleep(Duration::from_millis(2)); // stay under the rx ring's size
        }
    }
    let mut got: Vec<Frame> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < 100 && Instant::now() < deadline {
        port.rx_burst(&mut got, 32).unwrap();
        for f in got.drain(..) {
            let d = f.data();
            if d.len() >= 46 && d[12..14] == [0x08, 0x00] && d[23] == 17 && d[36..38] == 9u16.to_be_bytes() {
                let i = u32::from_be_bytes([d[42], d[43], d[44], d[45]]);
                assert_eq!(d.len(), 42 + size(i), "datagram {i} whole");
                seen.push(i);
            }
        }
    }
    assert_eq!(seen, (0..100).collect::<Vec<_>>(), "every datagram, in order; {:?}", port.eth_stats());
    assert!(port.stats().rx_frames >= 100);

    // ukcm -> kernel: frames written into pool frames (copied into mbufs) and received mbuf
    // frames sent back as they are (no copy).
    let port_no = sock.local_addr().unwrap().port();
    let (src, dst) = (net.ukcm_ip.octets(), net.peer_ip.octets());
    let mut out = Vec::new();
    for i in 0..50u32 {
        let mut f = port.tx_pool().alloc().unwrap();
        f.fill_from(&udp_frame(net.host_mac, net.peer_mac, src, dst, port_no, &i.to_be_bytes())).unwrap();
        out.push(f);
    }
    let sent = send_all(&mut port, &mut out);
    assert_eq!(sent, 50);
    assert_eq!(port.tx_copies(), 50);
    for i in 0..50u32 {
        let mut b = [0u8; 64];
        let (n, _) = sock.recv_from(&mut b).expect("kernel got the frame");
        assert_eq!(&b[..n], &i.to_be_bytes());
    }
    // A received mbuf rewritten in place and sent back: zero copy.
    sock.send_to(b"bounce", (net.ukcm_ip, 9)).unwrap();
    let mut mb = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while mb.is_none() && Instant::now() < deadline {
        port.rx_burst(&mut got, 32).unwrap();
        mb = got.drain(..).find(|f| f.data().ends_with(b"bounce"));
    }
    let mut f = mb.expect("bounce frame");
    let frame = udp_frame(net.host_mac, net.peer_mac, src, dst, port_no, b"bounced");
    f.fill_from(&frame).unwrap();
    let mut v = vec![f];
    assert_eq!(send_all(&mut port, &mut v), 1);
    assert_eq!(port.tx_copies(), 50, "the mbuf frame went out without a copy");
    let mut b = [0u8; 64];
    let (n, _) = sock.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], b"bounced");

    // every mbuf back in the pool once the frames are gone
    drop(got);
    let deadline = Instant::now() + Duration::from_secs(2);
    while port.mbufs_free().0 < free0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // af_xdp keeps transmitted mbufs until it reaps its completion ring on a later send.
    let held_by_pmd = if vdev.starts_with("net_af_xdp") { 51 } else { 0 };
    let free = port.mbufs_free().0;
    assert!(free0 - free <= held_by_pmd, "mbufs leaked: {free} free of {pool_size}, {free0} before");
    assert_eq!(port.tx_pool().outstanding(), 0);
    let es = port.eth_stats().unwrap();
    assert!(es.ipackets >= 101 && es.opackets >= 51, "{es:?}");

    drop(port);
    drop(eal); // rte_eal_cleanup
    let after = Eal::init(&test_eal_args("net_null0", 256)).unwrap_err();
    assert!(matches!(after, DpdkError::EalAlreadyUsed(_)), "{after}");
}

fn send_all(port: &mut DpdkPort, frames: &mut Vec<Frame>) -> usize {
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !frames.is_empty() && Instant::now() < deadline {
        sent += port.tx_burst(frames).unwrap();
    }
    sent
}

#[test]
fn bad_eal_arguments_are_errors() {
    if privileged_or_skip("bad_eal_arguments_are_errors") {
        in_own_process("child_bad_eal_arguments");
    }
}

#[test]
#[ignore = "runs in its own process, started by bad_eal_arguments_are_errors"]
fn child_bad_eal_arguments() {
    if !is_child() {
        return;
    }
    // Refused in Rust: the EAL would exit the process, or the interface is missing.
    assert!(matches!(Eal::init(&["--help"]), Err(DpdkError::BadArgs(_))));
    let e = Eal::init(&test_eal_args("net_af_packet0,iface=ukcm-missing0", 256)).unwrap_err();
    assert!(matches!(&e, DpdkError::NoSuchInterface(i) if i == "ukcm-missing0"), "{e}");
    // Refused by DPDK: an option it does not know. An error, not an abort.
    let mut args = test_eal_args("net_null0", 256);
    args.push("--no-such-eal-option".into());
    let e = Eal::init(&args).unwrap_err();
    assert!(matches!(e, DpdkError::EalInit { .. }), "{e}");
    assert!(e.to_string().contains("rte_eal_init"), "{e}");
    // DPDK allows no second try in this process: said clearly.
    let e = Eal::init(&test_eal_args("net_null0", 256)).unwrap_err();
    assert!(matches!(e, DpdkError::EalAlreadyUsed(_)), "{e}");
}

#[test]
fn unknown_vdev_and_missing_port_are_errors() {
    if privileged_or_skip("unknown_vdev_and_missing_port_are_errors") {
        in_own_process("child_unknown_vdev");
        in_own_process("child_missing_port");
    }
}

#[test]
#[ignore = "runs in its own process, started by unknown_vdev_and_missing_port_are_errors"]
fn child_unknown_vdev() {
    if !is_child() {
        return;
    }
    let e = Eal::init(&test_eal_args("net_nosuchdriver0", 256)).unwrap_err();
    assert!(matches!(e, DpdkError::EalInit { .. }), "{e}");
}

#[test]
#[ignore = "runs in its own process, started by unknown_vdev_and_missing_port_are_errors"]
fn child_missing_port() {
    if !is_child() {
        return;
    }
    let eal = Eal::init(&test_eal_args("net_null0", 256)).unwrap();
    let cfg = DpdkConfig { device: Some("net_af_packet7".into()), ..DpdkConfig::default() };
    let e = DpdkPort::open(&eal, &cfg, &PinnedBudget::unlimited()).unwrap_err();
    assert!(matches!(&e, DpdkError::NoSuchPort(m) if m.contains("net_null0")), "{e}");
}
