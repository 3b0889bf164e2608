//! Every frame the engine drops is counted by reason, and each reason is explained in the
//! log once: frames injected on the in-memory pair (bad TCP and IP checksums, truncated,
//! for another MAC, an unknown ethertype, a fragment, UDP and TCP for no socket).

mod common;

use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};
use ukcm_nic::Port;
use ukcm_stack::{DropNotes, DropReason};

use common::{pair, A4, B4};

/// An Ethernet + IPv4 frame from A to B carrying `proto` with `payload_len` bytes written by
/// `fill` (checksums right).
fn ipv4_frame(dst_mac: [u8; 6], proto: IpProtocol, payload_len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let ip = Ipv4Repr { src_addr: A4, dst_addr: B4, next_header: proto, payload_len, hop_limit: 64 };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 0xa]),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; 14 + 20 + payload_len];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &ChecksumCapabilities::default());
    fill(p.payload_mut());
    buf
}

fn tcp_frame(dst_mac: [u8; 6], dst_port: u16, ctrl: TcpControl) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: 40000,
        dst_port,
        control: ctrl,
        seq_number: TcpSeqNumber(1),
        ack_number: None,
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: b"",
    };
    ipv4_frame(dst_mac, IpProtocol::Tcp, tcp.buffer_len(), |b| {
        let mut t = TcpPacket::new_unchecked(b);
        tcp.emit(&mut t, &IpAddress::Ipv4(A4), &IpAddress::Ipv4(B4), &ChecksumCapabilities::default());
    })
}

fn udp_frame(dst_mac: [u8; 6]) -> Vec<u8> {
    let udp = UdpRepr { src_port: 5000, dst_port: 53 };
    ipv4_frame(dst_mac, IpProtocol::Udp, udp.header_len() + 4, |b| {
        let mut u = UdpPacket::new_unchecked(b);
        udp.emit(
            &mut u,
            &IpAddress::Ipv4(A4),
            &IpAddress::Ipv4(B4),
            4,
            |p| p.copy_from_slice(b"ping"),
            &ChecksumCapabilities::default(),
        );
    })
}

/// A tracing writer into a shared buffer: what the engine logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, what: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock()).lines().filter(|l| l.contains(what)).count()
    }
}

#[test]
fn each_dropped_frame_is_counted_by_reason_and_each_reason_logged_once() {
    let mut p = pair();
    p.b.set_drop_notes(Arc::new(DropNotes::default()));
    p.b.listen(80, 8).unwrap();
    let b_mac = p.b.port().mac();

    let good_syn = tcp_frame(b_mac, 80, TcpControl::Syn);
    let mut bad_tcp = good_syn.clone();
    bad_tcp[14 + 20 + 16] ^= 0x5a; // TCP checksum
    let mut bad_ip = good_syn.clone();
    bad_ip[14 + 10] ^= 0x5a; // IPv4 header checksum
    let truncated = good_syn[..14 + 20 + 10].to_vec(); // half a TCP header
    let mut other_mac = good_syn.clone();
    other_mac[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x77]);
    let mut lldp = good_syn.clone();
    lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
    let mut fragment = good_syn.clone();
    fragment[14 + 6] |= 0x20; // more fragments
    Ipv4Packet::new_unchecked(&mut fragment[14..]).fill_checksum();
    let closed_port = tcp_frame(b_mac, 81, TcpControl::None);

    // (what, frame): the names say which reason each one is for.
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("bad tcp", bad_tcp.clone()),
        ("bad tcp again", bad_tcp),
        ("bad ip", bad_ip),
        ("truncated", truncated),
        ("other mac", other_mac),
        ("lldp", lldp),
        ("fragment", fragment),
        ("udp", udp_frame(b_mac)),
        ("closed port", closed_port),
    ];
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let pool = p.a.port().tx_pool().clone();
        let mut out = Vec::new();
        for (_, bytes) in &frames {
            let mut f = pool.alloc().unwrap();
            f.set_len(bytes.len()).unwrap();
            f.data_mut().copy_from_slice(bytes);
            out.push(f);
        }
        assert_eq!(p.a.port_mut().tx_burst(&mut out).unwrap(), frames.len());
        for _ in 0..4 {
            p.b.poll().unwrap();
        }
    });

    let s = p.b.stats();
    let d = s.drops;
    assert_eq!(d.get(DropReason::BadTcpChecksum), 2, "{d}");
    assert_eq!(s.rx_bad_checksum_syn, 2, "both were SYNs");
    assert_eq!(d.get(DropReason::BadIpChecksum), 1, "{d}");
    assert_eq!(d.get(DropReason::Malformed), 1, "{d}");
    assert_eq!(d.get(DropReason::NotForUs), 1, "{d}");
    assert_eq!(d.get(DropReason::UnsupportedEthertype), 1, "{d}");
    assert_eq!(d.get(DropReason::Fragment), 1, "{d}");
    assert_eq!(d.get(DropReason::NoSocket), 2, "UDP and TCP to a closed port: {d}");
    assert_eq!(d.total(), 9, "nothing else: {d}");
    assert_eq!(s.rx_frames, frames.len() as u64);
    assert_eq!(s.accepted + p.b.connection_count() as u64, 0, "no bad SYN opened a connection");

    // One line per reason, however many frames had it.
    for r in [
        DropReason::BadTcpChecksum,
        DropReason::BadIpChecksum,
        DropReason::Malformed,
        DropReason::NotForUs,
        DropReason::UnsupportedEthertype,
        DropReason::Fragment,
        DropReason::NoSocket,
    ] {
        assert_eq!(log.lines_with(&format!("({},", r.name())), 1, "{r:?}: {}", String::from_utf8_lossy(&log.0.lock()));
    }
    assert_eq!(log.lines_with("dropped a frame"), 7);

    // The port-side reasons are read on demand and explained the same way.
    let all = p.b.note_port_drops();
    assert_eq!(all.get(DropReason::PortNoBuffer) + all.get(DropReason::TxNoFrame), 0);
    assert!(all.get(DropReason::TxNeighbourMiss) >= 1, "the RST to A asked for A's MAC first: {all}");

    // A good SYN still opens a connection: the checks refuse only what is wrong.
    let mut f = p.a.port().tx_pool().alloc().unwrap();
    f.set_len(good_syn.len()).unwrap();
    f.data_mut().copy_from_slice(&good_syn);
    p.a.port_mut().tx_burst(&mut vec![f]).unwrap();
    p.b.poll().unwrap();
    assert_eq!(p.b.connection_count(), 1, "the SYN made a handshaking connection");
    let after = p.b.stats().drops;
    assert_eq!(after.total() - after.get(DropReason::TxNeighbourMiss), 9, "no new drop: {after}");
}
