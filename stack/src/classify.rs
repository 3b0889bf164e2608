//! Reads just enough of a received frame to steer it: the TCP 4-tuple and flags, or
//! "neighbour discovery" (ARP, ICMPv6), or anything else. smoltcp parses the frame fully
//! afterwards; this is the engine's O(1) demultiplexing step.

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpEndpoint, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
};

/// A TCP connection's identity as seen from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourTuple {
    /// Our address and port.
    pub local: IpEndpoint,
    /// The peer's address and port.
    pub remote: IpEndpoint,
}

/// What a frame is, for steering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A TCP segment (unfragmented, no IPv6 extension headers).
    Tcp { key: FourTuple, syn: bool, ack: bool, rst: bool },
    /// ARP or ICMPv6 (neighbour discovery may have changed).
    Neighbor,
    /// Everything else (ICMPv4, UDP, fragments, malformed): smoltcp decides.
    Other,
}

pub(crate) fn classify(frame: &[u8]) -> Class {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return Class::Other };
    match eth.ethertype() {
        EthernetProtocol::Arp => Class::Neighbor,
        EthernetProtocol::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return Class::Other };
            if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
                return Class::Other;
            }
            tcp(IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()), ip.payload())
        }
        EthernetProtocol::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else { return Class::Other };
            match ip.next_header() {
                IpProtocol::Tcp => tcp(IpAddress::Ipv6(ip.src_addr()), IpAddress::Ipv6(ip.dst_addr()), ip.payload()),
                IpProtocol::Icmpv6 => Class::Neighbor,
                _ => Class::Other,
            }
        }
        _ => Class::Other,
    }
}

/// Whether the TCP checksum of a frame `classify` called TCP is right. Checked for SYNs
/// only (rare, and the one frame whose silent loss looks like a dead server): a veth peer
/// with transmit checksum offload on hands AF_XDP segments with partial checksums.
pub(crate) fn tcp_checksum_ok(frame: &[u8], key: &FourTuple) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return false };
    let payload = match eth.ethertype() {
        EthernetProtocol::Ipv4 => match Ipv4Packet::new_checked(eth.payload()) {
            Ok(ip) => ip.payload(),
            Err(_) => return false,
        },
        EthernetProtocol::Ipv6 => match Ipv6Packet::new_checked(eth.payload()) {
            Ok(ip) => ip.payload(),
            Err(_) => return false,
        },
        _ => return false,
    };
    TcpPacket::new_checked(payload).is_ok_and(|t| t.verify_checksum(&key.remote.addr, &key.local.addr))
}

fn tcp(src: IpAddress, dst: IpAddress, payload: &[u8]) -> Class {
    let Ok(t) = TcpPacket::new_checked(payload) else { return Class::Other };
    Class::Tcp {
        key: FourTuple { local: IpEndpoint::new(dst, t.dst_port()), remote: IpEndpoint::new(src, t.src_port()) },
        syn: t.syn(),
        ack: t.ack(),
        rst: t.rst(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{EthernetAddress, EthernetRepr, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    fn tcp_frame(ctrl: TcpControl, ack: Option<u32>) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            control: ctrl,
            seq_number: TcpSeqNumber(1),
            ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: b"",
        };
        let src = Ipv4Address::new(10, 0, 0, 2);
        let dst = Ipv4Address::new(10, 0, 0, 1);
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = vec![0u8; 14 + 20 + tcp.buffer_len()];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &ChecksumCapabilities::default());
        let mut t = TcpPacket::new_unchecked(p.payload_mut());
        tcp.emit(&mut t, &IpAddress::Ipv4(src), &IpAddress::Ipv4(dst), &ChecksumCapabilities::default());
        buf
    }

    #[test]
    fn tcp_syn_yields_tuple_from_our_side() {
        let c = classify(&tcp_frame(TcpControl::Syn, None));
        let Class::Tcp { key, syn, ack, rst } = c else { panic!("{c:?}") };
        assert!(syn && !ack && !rst);
        assert_eq!(key.local, IpEndpoint::new(IpAddress::v4(10, 0, 0, 1), 80));
        assert_eq!(key.remote, IpEndpoint::new(IpAddress::v4(10, 0, 0, 2), 40000));
        let Class::Tcp { rst, ack, .. } = classify(&tcp_frame(TcpControl::Rst, Some(5))) else { panic!() };
        assert!(rst && ack);
    }

    #[test]
    fn garbage_and_arp_are_not_tcp() {
        assert_eq!(classify(&[0u8; 10]), Class::Other);
        let mut f = tcp_frame(TcpControl::None, Some(1));
        f[12] = 0x08;
        f[13] = 0x06;
        assert_eq!(classify(&f), Class::Neighbor);
        let f = tcp_frame(TcpControl::None, Some(1));
        assert_eq!(classify(&f[..40]), Class::Other, "truncated TCP header");
    }
}
