//! The recorder writes what a port saw; the replay port reads it back byte for byte; tshark
//! decodes it.

use std::path::PathBuf;
use std::process::Command;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::icmp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address};
use ukcm_nic::pcap::{PcapRecorder, PcapReplayConfig, PcapReplayPort, PCAP_DIR_ENV};
use ukcm_nic::{mem_pair, HugePolicy, MemPairConfig, MemPort, PinnedBudget, PoolConfig, Port, PortDevice, PortError};

fn tmp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ukcm-pcap-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pair(link_capacity: usize) -> (MemPort, MemPort) {
    let cfg = MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 512 },
        link_capacity,
        huge: HugePolicy::Never,
        ..MemPairConfig::default()
    };
    mem_pair(&cfg, &PinnedBudget::unlimited()).unwrap()
}

fn send(port: &mut impl Port, payloads: &[Vec<u8>]) -> usize {
    let mut v = Vec::new();
    for p in payloads {
        let mut f = port.tx_pool().alloc().unwrap();
        f.fill_from(p).unwrap();
        v.push(f);
    }
    port.tx_burst(&mut v).unwrap()
}

fn recv(port: &mut impl Port) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    port.rx_burst(&mut v, 256).unwrap();
    v.iter().map(|f| f.data().to_vec()).collect()
}

fn replay_all(path: &std::path::Path) -> Vec<Vec<u8>> {
    let cfg = PcapReplayConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 256 },
        huge: HugePolicy::Never,
        ..PcapReplayConfig::default()
    };
    let mut p = PcapReplayPort::open(path, &cfg, &PinnedBudget::unlimited()).unwrap();
    let mut got = Vec::new();
    let mut v = Vec::new();
    while !p.is_finished() {
        p.rx_burst(&mut v, 7).unwrap();
        got.extend(v.drain(..).map(|f| f.data().to_vec()));
    }
    got
}

/// A distinct frame: a fake Ethernet header and a numbered body of varying length.
fn frame(dir: u8, i: u32) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, dir, 0x02, 0, 0, 0, 0, dir ^ 1, 0x88, 0xb5];
    f.extend_from_slice(&i.to_be_bytes());
    f.extend((0..(i as usize * 37) % 1400 + 46).map(|k| (k as u32 ^ i) as u8));
    f
}

#[test]
fn recorded_frames_replay_byte_identical_in_order_both_directions() {
    let dir = tmp_dir("rt");
    let path = dir.join("a.pcap");
    let (a, mut b) = pair(1024);
    let mut rec = PcapRecorder::create(a, &path).unwrap();
    assert!(rec.is_recording());
    let mut expected = Vec::new();
    for round in 0..20u32 {
        let out: Vec<_> = (0..5).map(|k| frame(0xa, round * 10 + k)).collect();
        assert_eq!(send(&mut rec, &out), 5);
        expected.extend(out.iter().cloned());
        assert_eq!(recv(&mut b), out, "the wrapped port's behaviour is unchanged");
        let back: Vec<_> = (0..3).map(|k| frame(0xb, round * 10 + k)).collect();
        assert_eq!(send(&mut b, &back), 3);
        assert_eq!(recv(&mut rec), back);
        expected.extend(back);
    }
    let st = rec.recorder_stats();
    assert_eq!((st.tx_recorded, st.rx_recorded, st.write_errors), (100, 60, 0));
    assert_eq!(rec.stats().tx_frames, 100);
    drop(rec); // flush on drop
    assert_eq!(replay_all(&path), expected);
}

#[test]
fn frames_the_inner_port_refused_are_not_recorded_as_sent() {
    let dir = tmp_dir("full");
    let path = dir.join("full.pcap");
    let (a, mut b) = pair(4);
    let mut rec = PcapRecorder::create(a, &path).unwrap();
    let out: Vec<_> = (0..6).map(|k| frame(0xa, k)).collect();
    let mut v = Vec::new();
    for p in &out {
        let mut f = rec.tx_pool().alloc().unwrap();
        f.fill_from(p).unwrap();
        v.push(f);
    }
    assert_eq!(rec.tx_burst(&mut v).unwrap(), 4);
    assert_eq!(v.len(), 2, "unsent frames stay with the caller");
    assert_eq!(rec.recorder_stats().tx_recorded, 4);
    assert_eq!(recv(&mut b).len(), 4);
    assert_eq!(rec.tx_burst(&mut v).unwrap(), 2);
    let inner = rec.finish().unwrap();
    assert_eq!(inner.stats().tx_full, 1);
    assert_eq!(replay_all(&path), out, "each frame once, in the order it left");
}

#[test]
fn from_env_records_only_when_the_directory_is_set() {
    let dir = tmp_dir("env");
    // This is the only test in this binary that touches the variable.
    std::env::remove_var(PCAP_DIR_ENV);
    let (a, _b) = pair(16);
    let rec = PcapRecorder::from_env(a, "engine/0").unwrap();
    assert!(!rec.is_recording() && rec.path().is_none());
    let a = rec.into_inner();

    std::env::set_var(PCAP_DIR_ENV, dir.join("sub"));
    let mut rec = PcapRecorder::from_env(a, "engine/0").unwrap();
    std::env::remove_var(PCAP_DIR_ENV);
    let expect = dir.join("sub").join("engine_0.pcap");
    assert_eq!(rec.path(), Some(expect.as_path()));
    send(&mut rec, &[frame(1, 1)]);
    drop(rec);
    assert_eq!(replay_all(&expect), vec![frame(1, 1)]);
}

#[test]
fn truncated_and_garbage_recordings_are_clear_errors() {
    let dir = tmp_dir("bad");
    let path = dir.join("cut.pcap");
    let (a, mut b) = pair(64);
    let mut rec = PcapRecorder::create(a, &path).unwrap();
    send(&mut rec, &(0..5).map(|k| frame(0xa, k)).collect::<Vec<_>>());
    recv(&mut b);
    drop(rec);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let cfg = PcapReplayConfig { huge: HugePolicy::Never, ..PcapReplayConfig::default() };
    let mut p = PcapReplayPort::open(&path, &cfg, &PinnedBudget::unlimited()).unwrap();
    let mut v = Vec::new();
    assert_eq!(p.rx_burst(&mut v, 64).unwrap(), 4);
    match p.rx_burst(&mut v, 64) {
        Err(PortError::BadInput(msg)) => {
            assert!(msg.contains("cut.pcap") && msg.contains("truncated"), "{msg}")
        }
        other => panic!("expected BadInput, got {other:?}"),
    }

    let junk = dir.join("junk.pcap");
    std::fs::write(&junk, (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>()).unwrap();
    match PcapReplayPort::open(&junk, &cfg, &PinnedBudget::unlimited()) {
        Err(PortError::BadInput(msg)) => assert!(msg.contains("junk.pcap") && msg.contains("not a pcap"), "{msg}"),
        other => panic!("expected BadInput, got {other:?}"),
    }
}

fn iface<D: smoltcp::phy::Device>(dev: &mut D, mac: [u8; 6], ip: Ipv4Address) -> Interface {
    let mut i = Interface::new(Config::new(EthernetAddress(mac).into()), dev, Instant::from_millis(0));
    i.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap());
    i
}

/// Two smoltcp interfaces ping over the in-memory pair; side A is recorded.
fn record_ping(path: &std::path::Path) {
    let (a, b) = pair(256);
    let (mac_a, mac_b) = (a.mac(), b.mac());
    let mut da = PortDevice::new(PcapRecorder::create(a, path).unwrap());
    let mut db = PortDevice::new(b);
    let ip_a = Ipv4Address::new(10, 9, 0, 1);
    let ip_b = Ipv4Address::new(10, 9, 0, 2);
    let mut ia = iface(&mut da, mac_a, ip_a);
    let mut ib = iface(&mut db, mac_b, ip_b);
    let mut sa = SocketSet::new(vec![]);
    let mut sb = SocketSet::new(vec![]);
    let h = sa.add(icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
    ));
    sa.get_mut::<icmp::Socket<'_>>(h).bind(icmp::Endpoint::Ident(0x4242)).unwrap();
    let mut next_seq = 1u16;
    let mut replies = 0;
    for t in 0..500 {
        let now = Instant::from_millis(t * 10);
        let s = sa.get_mut::<icmp::Socket<'_>>(h);
        if next_seq <= 3 && s.can_send() && next_seq == replies + 1 {
            let repr = Icmpv4Repr::EchoRequest { ident: 0x4242, seq_no: next_seq, data: b"ukcm-pcap-ping" };
            let buf = s.send(repr.buffer_len(), IpAddress::Ipv4(ip_b)).unwrap();
            repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &ChecksumCapabilities::default());
            next_seq += 1;
        }
        if s.can_recv() {
            s.recv().unwrap();
            replies += 1;
            if replies == 3 {
                break;
            }
        }
        ia.poll(now, &mut da, &mut sa);
        da.flush().unwrap();
        ib.poll(now, &mut db, &mut sb);
        db.flush().unwrap();
    }
    assert_eq!(replies, 3, "three echo replies");
    da.into_port().finish().unwrap();
}

fn have_tshark() -> bool {
    Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn tshark_decodes_a_recorded_smoltcp_ping() {
    let dir = tmp_dir("tshark");
    let path = dir.join("ping.pcap");
    record_ping(&path);
    // Our own reader sees ARP request + reply and 3 echo requests + 3 replies.
    let frames = replay_all(&path);
    assert_eq!(frames.len(), 8, "ARP pair + 3 pings + 3 replies");
    if !have_tshark() {
        assert!(
            !ukcm_nic::testnet::privileged_required(),
            "tshark missing but UKCM_PRIVILEGED=1 (apt-get install -y tshark)"
        );
        eprintln!("SKIP tshark_decodes_a_recorded_smoltcp_ping: tshark not installed (apt-get install -y tshark)");
        return;
    }
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&path)
        .args(["-T", "fields", "-e", "frame.protocols", "-e", "icmp.type", "-e", "icmp.seq", "-e", "_ws.expert"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 8, "tshark sees every frame:\n{stdout}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("eth:ethertype:arp")).count(), 2, "{stdout}");
    let icmp: Vec<_> = lines.iter().filter(|l| l.starts_with("eth:ethertype:ip:icmp")).collect();
    assert_eq!(icmp.len(), 6, "{stdout}");
    for seq in 1..=3 {
        for ty in [8, 0] {
            assert!(
                icmp.iter()
                    .any(|l| l.split('\t').nth(1) == Some(&ty.to_string())
                        && l.split('\t').nth(2) == Some(&seq.to_string())),
                "ICMP type {ty} seq {seq} decoded:\n{stdout}"
            );
        }
    }
    assert!(!stdout.contains("Malformed"), "no malformed frames:\n{stdout}");
}

#[test]
fn replay_port_drives_a_stack_and_keeps_its_answers() {
    // Record side B's view of a ping, then replay it into a fresh interface with B's
    // address: it must answer the ARP request and the echo requests again.
    let dir = tmp_dir("drive");
    let path = dir.join("a.pcap");
    record_ping(&path);
    let cfg = PcapReplayConfig { huge: HugePolicy::Never, ..PcapReplayConfig::default() };
    let replay = PcapReplayPort::open(&path, &cfg, &PinnedBudget::unlimited()).unwrap();
    let mut dev = PortDevice::new(replay);
    let mut iface = iface(&mut dev, [0x02, 0, 0, 0, 0, 0x0b], Ipv4Address::new(10, 9, 0, 2));
    let mut sockets = SocketSet::new(vec![]);
    for t in 0..50 {
        iface.poll(Instant::from_millis(t), &mut dev, &mut sockets);
        dev.flush().unwrap();
    }
    assert!(dev.port().is_finished());
    let answers = dev.port_mut().take_transmitted();
    let replies = answers.iter().filter(|f| f.len() > 34 && f[12..14] == [8, 0] && f[23] == 1 && f[34] == 0).count();
    assert_eq!(replies, 3, "the replayed echo requests were answered");
}
