//! Neighbours shared by the engines of one host address on several NIC queues.
//!
//! Each queue's engine has its own smoltcp interface and neighbour cache, but the NIC
//! spreads a peer's frames over queues by flow: the peer's ARP request or reply (IPv6: its
//! neighbour solicitation or advertisement) reaches one engine, while its TCP SYN may reach
//! another, which then asks for the peer's address and never hears the answer (it lands on
//! the first queue again). The SYN is dropped and the client waits out a retransmission, or
//! for good if the answer always lands elsewhere. So every engine publishes what it learns
//! from a neighbour packet aimed at its address (sender IP and MAC) here, and the others
//! take it in before their next ingress, as if they had received a reply themselves: an
//! ARP reply for IPv4, a neighbour advertisement for IPv6.
//!
//! Bounded: the last [`KEEP`] entries; an engine that falls further behind learns the rest
//! from its own neighbour exchanges, as without sharing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Packet,
    Icmpv6Repr, IpAddress, IpProtocol, Ipv4Address, Ipv6Address, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr,
    RawHardwareAddress,
};

/// Entries kept for engines that have not caught up yet.
pub const KEEP: usize = 256;

/// A learned neighbour: its IP address (IPv4 or IPv6) and MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddress,
    pub mac: EthernetAddress,
}

/// Our addresses, which a neighbour packet must be aimed at to be learned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ours {
    /// Our IPv4 address, if any.
    pub v4: Option<Ipv4Address>,
    /// Our IPv6 address, if any.
    pub v6: Option<Ipv6Address>,
}

/// The neighbours learned by a group of engines (one per queue of an interface).
#[derive(Debug, Default)]
pub struct NeighbourShare {
    /// Entries with their sequence number and the engine that published them.
    log: Mutex<VecDeque<(u64, usize, Neighbour)>>,
    /// Sequence number of the newest entry (0: none).
    newest: AtomicU64,
}

impl NeighbourShare {
    /// An empty share.
    pub fn new() -> Self {
        Self::default()
    }

    /// Engine `from` learned `n`.
    pub fn publish(&self, from: usize, n: Neighbour) {
        let mut log = self.log.lock();
        let seq = self.newest.load(Ordering::Relaxed) + 1;
        if log.len() == KEEP {
            log.pop_front();
        }
        log.push_back((seq, from, n));
        self.newest.store(seq, Ordering::Release);
    }

    /// Entries newer than `*seen` published by other engines than `me`; advances `*seen`.
    /// One atomic load when there is nothing new.
    pub fn news(&self, me: usize, seen: &mut u64, out: &mut Vec<Neighbour>) {
        if self.newest.load(Ordering::Acquire) == *seen {
            return;
        }
        let log = self.log.lock();
        for &(seq, from, n) in log.iter() {
            if seq > *seen && from != me {
                out.push(n);
            }
        }
        *seen = log.back().map_or(*seen, |e| e.0);
    }
}

/// The sender of a neighbour packet aimed at `ours`, if `frame` is one: an ARP request or
/// reply for our IPv4 address, a neighbour solicitation for our IPv6 address or a neighbour
/// advertisement sent to it (each with the sender's link-layer address).
pub fn learned_from(frame: &[u8], ours: Ours) -> Option<Neighbour> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
            match arp {
                ArpRepr::EthernetIpv4 { source_hardware_addr, source_protocol_addr, target_protocol_addr, .. }
                    if Some(target_protocol_addr) == ours.v4 && source_hardware_addr.is_unicast() =>
                {
                    Some(Neighbour { ip: source_protocol_addr.into(), mac: source_hardware_addr })
                }
                _ => None,
            }
        }
        EthernetProtocol::Ipv6 => learned_from_ndisc(eth.payload(), ours.v6?),
        _ => None,
    }
}

/// The sender of a neighbour solicitation for `ours` or an advertisement sent to it.
fn learned_from_ndisc(packet: &[u8], ours: Ipv6Address) -> Option<Neighbour> {
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    // Neighbour discovery is link-local only (RFC 4861 7.1.1): hop limit 255.
    if ip.next_header() != IpProtocol::Icmpv6 || ip.hop_limit() != 255 {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    // A solicitation from the unspecified address is duplicate address detection.
    if src.is_unspecified() || src.is_multicast() {
        return None;
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    let (aimed_at_us, lladdr) = match NdiscRepr::parse(&icmp).ok()? {
        NdiscRepr::NeighborSolicit { target_addr, lladdr } => (target_addr == ours, lladdr),
        NdiscRepr::NeighborAdvert { lladdr, .. } => (dst == ours, lladdr),
        _ => return None,
    };
    let mac = ethernet(lladdr?)?;
    (aimed_at_us && mac.is_unicast()).then_some(Neighbour { ip: src.into(), mac })
}

fn ethernet(raw: RawHardwareAddress) -> Option<EthernetAddress> {
    let b = raw.as_bytes();
    (b.len() == 6).then(|| EthernetAddress::from_bytes(b))
}

/// What an engine is fed so its smoltcp fills its cache with `n` exactly as from an answer
/// it received: an ARP reply from `n` to us for IPv4, a solicited neighbour advertisement
/// (override set) for IPv6. Neither is answered. `None` if we have no address of `n`'s
/// family.
pub fn reply_frame(n: Neighbour, ours: Ours, our_mac: EthernetAddress) -> Option<Vec<u8>> {
    match n.ip {
        IpAddress::Ipv4(ip) => Some(arp_reply(n.mac, ip, ours.v4?, our_mac)),
        IpAddress::Ipv6(ip) => Some(neighbour_advert(n.mac, ip, ours.v6?, our_mac)),
    }
}

fn arp_reply(mac: EthernetAddress, ip: Ipv4Address, our_ip: Ipv4Address, our_mac: EthernetAddress) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: our_mac,
        target_protocol_addr: our_ip,
    };
    let eth = EthernetRepr { src_addr: mac, dst_addr: our_mac, ethertype: EthernetProtocol::Arp };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

fn neighbour_advert(mac: EthernetAddress, ip: Ipv6Address, our_ip: Ipv6Address, our_mac: EthernetAddress) -> Vec<u8> {
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
        target_addr: ip,
        lladdr: Some(mac.into()),
    });
    ndisc_frame(mac, our_mac, ip, our_ip, &icmp)
}

/// An NDP message as a whole Ethernet frame from (`src_mac`, `src`) to (`dst_mac`, `dst`),
/// hop limit 255 (RFC 4861: from the link).
fn ndisc_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv6Address,
    dst: Ipv6Address,
    icmp: &Icmpv6Repr<'_>,
) -> Vec<u8> {
    let ipr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let eth = EthernetRepr { src_addr: src_mac, dst_addr: dst_mac, ethertype: EthernetProtocol::Ipv6 };
    let mut buf = vec![0u8; eth.buffer_len() + ipr.buffer_len() + icmp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
    ipr.emit(&mut p);
    icmp.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(p.payload_mut()), &ChecksumCapabilities::default());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: Neighbour =
        Neighbour { ip: IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 2)), mac: EthernetAddress([2, 0, 0, 0, 0, 2]) };
    const US: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const US6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const PEER6: Neighbour = Neighbour {
        ip: IpAddress::Ipv6(Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
        mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
    };
    const US_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const OURS: Ours = Ours { v4: Some(US), v6: Some(US6) };

    #[test]
    fn a_reply_frame_reads_back_as_what_was_learned() {
        let f = reply_frame(PEER, OURS, US_MAC).unwrap();
        assert_eq!(learned_from(&f, OURS), Some(PEER));
        let other = Ours { v4: Some(Ipv4Address::new(10, 0, 0, 9)), ..OURS };
        assert_eq!(learned_from(&f, other), None, "aimed at someone else");
        assert_eq!(learned_from(&f[..20], OURS), None, "truncated");
        assert_eq!(reply_frame(PEER, Ours { v4: None, ..OURS }, US_MAC), None, "no IPv4 address of ours");
    }

    #[test]
    fn an_advertisement_reads_back_as_what_was_learned() {
        let f = reply_frame(PEER6, OURS, US_MAC).unwrap();
        assert_eq!(learned_from(&f, OURS), Some(PEER6));
        let other = Ours { v6: Some(Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 9)), ..OURS };
        assert_eq!(learned_from(&f, other), None, "sent to someone else");
        assert_eq!(learned_from(&f, Ours { v6: None, ..OURS }), None, "we have no IPv6 address");
        let mut low_hop = f.clone();
        low_hop[14 + 7] = 64;
        assert_eq!(learned_from(&low_hop, OURS), None, "hop limit below 255: not from the link");
        assert_eq!(learned_from(&f[..60], OURS), None, "truncated");
        assert_eq!(reply_frame(PEER6, Ours { v6: None, ..OURS }, US_MAC), None, "no IPv6 address of ours");
    }

    /// A neighbour solicitation from `src` for `target`, with `src`'s link-layer address.
    fn solicitation(src: Ipv6Address, target: Ipv6Address) -> Vec<u8> {
        let icmp =
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: target, lladdr: Some(PEER6.mac.into()) });
        let t = target.segments();
        let dst = Ipv6Address::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | (t[6] & 0xff), t[7]);
        ndisc_frame(PEER6.mac, EthernetAddress([0x33, 0x33, 0xff, 0, 0, 1]), src, dst, &icmp)
    }

    #[test]
    fn a_solicitation_for_our_address_teaches_its_sender() {
        let IpAddress::Ipv6(peer) = PEER6.ip else { unreachable!() };
        assert_eq!(learned_from(&solicitation(peer, US6), OURS), Some(PEER6));
        let someone = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 7);
        assert_eq!(learned_from(&solicitation(peer, someone), OURS), None, "for another address");
        assert_eq!(
            learned_from(&solicitation(Ipv6Address::UNSPECIFIED, US6), OURS),
            None,
            "duplicate address detection"
        );
    }

    #[test]
    fn engines_see_each_others_news_once_and_not_their_own() {
        let s = NeighbourShare::new();
        let (mut seen0, mut seen1) = (0, 0);
        s.publish(0, PEER);
        let mut out = Vec::new();
        s.news(0, &mut seen0, &mut out);
        assert!(out.is_empty());
        s.news(1, &mut seen1, &mut out);
        assert_eq!(out, [PEER]);
        out.clear();
        s.news(1, &mut seen1, &mut out);
        assert!(out.is_empty(), "once");
    }

    #[test]
    fn the_log_is_bounded() {
        let s = NeighbourShare::new();
        for i in 0..(KEEP as u32 + 10) {
            s.publish(0, Neighbour { ip: Ipv4Address::from(i.to_be_bytes()).into(), mac: PEER.mac });
        }
        let (mut seen, mut out) = (0, Vec::new());
        s.news(1, &mut seen, &mut out);
        assert_eq!(out.len(), KEEP);
    }
}
