//! Neighbours shared by the engines of one host address on several NIC queues.
//!
//! Each queue's engine has its own smoltcp interface and ARP cache, but the NIC spreads a
//! peer's frames over queues by flow: the peer's ARP request or reply reaches one engine,
//! while its TCP SYN may reach another, which then asks for the peer's address and never
//! hears the answer (it lands on the first queue again). The SYN is dropped and the client
//! waits out a retransmission. So every engine publishes what it learns from an ARP packet
//! aimed at its address (sender IP and MAC) here, and the others take it in before their
//! next ingress, as if they had received a reply themselves.
//!
//! Bounded: the last [`KEEP`] entries; an engine that falls further behind learns the rest
//! from its own ARP exchange, as without sharing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Ipv4Address,
};

/// Entries kept for engines that have not caught up yet.
pub const KEEP: usize = 256;

/// A learned neighbour: its IPv4 address and MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: Ipv4Address,
    pub mac: EthernetAddress,
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

/// The sender of an ARP packet aimed at `ours` (request or reply), if `frame` is one.
pub fn learned_from(frame: &[u8], ours: Ipv4Address) -> Option<Neighbour> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Arp {
        return None;
    }
    let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
    match arp {
        ArpRepr::EthernetIpv4 { source_hardware_addr, source_protocol_addr, target_protocol_addr, .. }
            if target_protocol_addr == ours && source_hardware_addr.is_unicast() =>
        {
            Some(Neighbour { ip: source_protocol_addr, mac: source_hardware_addr })
        }
        _ => None,
    }
}

/// An ARP reply from `n` to us (`our_ip`, `our_mac`): what an engine is fed so its smoltcp
/// fills its cache exactly as from a reply it received (replies are not answered).
pub fn reply_frame(n: Neighbour, our_ip: Ipv4Address, our_mac: EthernetAddress) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: n.mac,
        source_protocol_addr: n.ip,
        target_hardware_addr: our_mac,
        target_protocol_addr: our_ip,
    };
    let eth = EthernetRepr { src_addr: n.mac, dst_addr: our_mac, ethertype: EthernetProtocol::Arp };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: Neighbour = Neighbour { ip: Ipv4Address::new(10, 0, 0, 2), mac: EthernetAddress([2, 0, 0, 0, 0, 2]) };
    const US: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const US_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);

    #[test]
    fn a_reply_frame_reads_back_as_what_was_learned() {
        let f = reply_frame(PEER, US, US_MAC);
        assert_eq!(learned_from(&f, US), Some(PEER));
        assert_eq!(learned_from(&f, Ipv4Address::new(10, 0, 0, 9)), None, "aimed at someone else");
        assert_eq!(learned_from(&f[..20], US), None, "truncated");
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
            s.publish(0, Neighbour { ip: Ipv4Address::from(i.to_be_bytes()), mac: PEER.mac });
        }
        let (mut seen, mut out) = (0, Vec::new());
        s.news(1, &mut seen, &mut out);
        assert_eq!(out.len(), KEEP);
    }
}
