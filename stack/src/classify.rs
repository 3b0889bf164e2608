//! Reads just enough of a received frame to steer it — the TCP 4-tuple and flags, or
//! "neighbour discovery" (ARP, ICMPv6), or anything else — and rejects what smoltcp would
//! drop silently, naming the reason ([`DropReason`]): truncated headers, other MACs,
//! unsupported ethertypes, fragments, bad checksums. smoltcp parses an admitted frame fully
//! afterwards; this is the engine's O(1) demultiplexing step, and the only place received
//! checksums are verified (the engine turns smoltcp's receive checks off).

use smoltcp::wire::{
    ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv6Packet, IpAddress, IpEndpoint,
    IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

use crate::drops::DropReason;

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
    /// A UDP datagram (the engine has no UDP sockets: smoltcp answers port unreachable).
    Udp,
    /// An IPv4 protocol other than TCP, UDP, ICMP, IGMP (smoltcp answers unreachable).
    Unsupported,
    /// Everything else smoltcp handles itself (ICMPv4, IGMP, IPv6 extension headers).
    Other,
}

/// What [`admit`] checks besides the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Our MAC: unicast frames for another one are dropped.
    pub mac: EthernetAddress,
    /// Verify the IPv4, TCP, UDP and ICMP checksums (the port does not).
    pub checksums: bool,
}

/// A frame [`admit`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Why.
    pub reason: DropReason,
    /// It was a TCP SYN without ACK (a connection attempt).
    pub syn: bool,
}

fn refuse(reason: DropReason) -> Refused {
    Refused { reason, syn: false }
}

/// Classifies `frame`, or says why smoltcp would drop it.
pub(crate) fn admit(frame: &[u8], a: &Admission) -> Result<Class, Refused> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| refuse(DropReason::Malformed))?;
    let dst = eth.dst_addr();
    if dst != a.mac && !dst.is_broadcast() && !dst.is_multicast() {
        return Err(refuse(DropReason::NotForUs));
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => match ArpPacket::new_checked(eth.payload()) {
            Ok(_) => Ok(Class::Neighbor),
            Err(_) => Err(refuse(DropReason::Malformed)),
        },
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| refuse(DropReason::Malformed))?;
            if ip.version() != 4 {
                return Err(refuse(DropReason::Malformed));
            }
            if a.checksums && !ip.verify_checksum() {
                return Err(refuse(DropReason::BadIpChecksum));
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(refuse(DropReason::Fragment));
            }
            let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
            match ip.next_header() {
                IpProtocol::Tcp => tcp(src, dst, ip.payload(), a.checksums),
                IpProtocol::Udp => udp(src, dst, ip.payload(), a.checksums),
                IpProtocol::Icmp => {
                    let ok = Icmpv4Packet::new_checked(ip.payload()).map_err(|_| refuse(DropReason::Malformed))?;
                    if a.checksums && !ok.verify_checksum() {
                        return Err(refuse(DropReason::BadIcmpChecksum));
                    }
                    Ok(Class::Other)
                }
                IpProtocol::Igmp => Ok(Class::Other),
                _ => Ok(Class::Unsupported),
            }
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).map_err(|_| refuse(DropReason::Malformed))?;
            let (src, dst) = (IpAddress::Ipv6(ip.src_addr()), IpAddress::Ipv6(ip.dst_addr()));
            match ip.next_header() {
                IpProtocol::Tcp => tcp(src, dst, ip.payload(), a.checksums),
                IpProtocol::Udp => udp(src, dst, ip.payload(), a.checksums),
                IpProtocol::Icmpv6 => {
                    let p = Icmpv6Packet::new_checked(ip.payload()).map_err(|_| refuse(DropReason::Malformed))?;
                    if a.checksums && !p.verify_checksum(&ip.src_addr(), &ip.dst_addr()) {
                        return Err(refuse(DropReason::BadIcmpChecksum));
                    }
                    Ok(Class::Neighbor)
                }
                _ => Ok(Class::Other),
            }
        }
        _ => Err(refuse(DropReason::UnsupportedEthertype)),
    }
}

fn tcp(src: IpAddress, dst: IpAddress, payload: &[u8], checksums: bool) -> Result<Class, Refused> {
    let t = TcpPacket::new_checked(payload).map_err(|_| refuse(DropReason::Malformed))?;
    let syn = t.syn() && !t.ack();
    if checksums && !t.verify_checksum(&src, &dst) {
        return Err(Refused { reason: DropReason::BadTcpChecksum, syn });
    }
    if t.src_port() == 0 || t.dst_port() == 0 {
        return Err(refuse(DropReason::Malformed));
    }
    Ok(Class::Tcp {
        key: FourTuple { local: IpEndpoint::new(dst, t.dst_port()), remote: IpEndpoint::new(src, t.src_port()) },
        syn: t.syn(),
        ack: t.ack(),
        rst: t.rst(),
    })
}

fn udp(src: IpAddress, dst: IpAddress, payload: &[u8], checksums: bool) -> Result<Class, Refused> {
    let u = UdpPacket::new_checked(payload).map_err(|_| refuse(DropReason::Malformed))?;
    if checksums && !u.verify_checksum(&src, &dst) {
        return Err(refuse(DropReason::BadUdpChecksum));
    }
    Ok(Class::Udp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{EthernetRepr, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    const US: Admission = Admission { mac: EthernetAddress([2, 0, 0, 0, 0, 1]), checksums: true };

    fn classify(f: &[u8]) -> Result<Class, DropReason> {
        admit(f, &US).map_err(|r| r.reason)
    }

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
        let c = classify(&tcp_frame(TcpControl::Syn, None)).unwrap();
        let Class::Tcp { key, syn, ack, rst } = c else { panic!("{c:?}") };
        assert!(syn && !ack && !rst);
        assert_eq!(key.local, IpEndpoint::new(IpAddress::v4(10, 0, 0, 1), 80));
        assert_eq!(key.remote, IpEndpoint::new(IpAddress::v4(10, 0, 0, 2), 40000));
        let Ok(Class::Tcp { rst, ack, .. }) = classify(&tcp_frame(TcpControl::Rst, Some(5))) else { panic!() };
        assert!(rst && ack);
    }

    #[test]
    fn garbage_and_truncated_frames_are_malformed() {
        assert_eq!(classify(&[0u8; 10]), Err(DropReason::Malformed));
        let f = tcp_frame(TcpControl::None, Some(1));
        assert_eq!(classify(&f[..40]), Err(DropReason::Malformed), "truncated TCP header");
        assert_eq!(classify(&f[..30]), Err(DropReason::Malformed), "truncated IP header");
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(classify(&arp), Ok(Class::Neighbor));
        assert_eq!(classify(&arp[..14 + 6]), Err(DropReason::Malformed), "truncated ARP");
    }

    #[test]
    fn each_bad_checksum_and_foreign_frame_has_its_reason() {
        let good = tcp_frame(TcpControl::Syn, None);
        let mut f = good.clone();
        f[14 + 10] ^= 0xff; // IPv4 header checksum
        assert_eq!(classify(&f), Err(DropReason::BadIpChecksum));
        let mut f = good.clone();
        f[14 + 20 + 16] ^= 0xff; // TCP checksum
        assert_eq!(admit(&f, &US), Err(Refused { reason: DropReason::BadTcpChecksum, syn: true }));
        assert!(admit(&f, &Admission { checksums: false, ..US }).is_ok(), "the port verified it");
        let mut f = good.clone();
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        assert_eq!(classify(&f), Err(DropReason::NotForUs));
        f[0..6].copy_from_slice(&[0xff; 6]);
        assert!(classify(&f).is_ok(), "broadcast is for everyone");
        let mut f = good.clone();
        f[12..14].copy_from_slice(&[0x88, 0xcc]); // LLDP
        assert_eq!(classify(&f), Err(DropReason::UnsupportedEthertype));
        let mut f = good.clone();
        f[14 + 6] |= 0x20; // more fragments
        let mut p = Ipv4Packet::new_unchecked(&mut f[14..]);
        p.fill_checksum();
        assert_eq!(classify(&f), Err(DropReason::Fragment));
    }

    #[test]
    fn unknown_ip_protocols_are_admitted_for_smoltcp_to_answer() {
        let mut f = tcp_frame(TcpControl::Syn, None);
        let mut p = Ipv4Packet::new_unchecked(&mut f[14..]);
        p.set_next_header(IpProtocol::Unknown(253));
        p.fill_checksum();
        assert_eq!(classify(&f), Ok(Class::Unsupported));
    }
}
