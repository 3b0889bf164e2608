//! Why a frame went nowhere: every frame the engine, its port or the smoltcp adapter had to
//! drop is counted under one [`DropReason`], and the first time a reason appears in the
//! process one warning says what it means ([`DropNotes`]).
//!
//! smoltcp drops bad frames silently (a `net_debug!` line at most), so the engine checks
//! what smoltcp would reject *before* handing a frame over (`classify::admit`) and turns
//! smoltcp's own receive checksum checks off: each checksum is still computed once per
//! frame, only by us, and a drop costs one counter increment. Frames smoltcp answers
//! itself (a TCP segment for no connection gets a RST, UDP an ICMP port unreachable) are
//! counted and still handed over.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its headers say, or a header field out of range (engine).
    Malformed,
    /// For another MAC or IP address (engine).
    NotForUs,
    /// An ethertype other than ARP, IPv4, IPv6 (engine).
    UnsupportedEthertype,
    /// An IPv4 protocol the stack does not serve; smoltcp answers ICMP unreachable (engine).
    UnsupportedProtocol,
    /// An IP fragment: the stack does not reassemble (engine).
    Fragment,
    /// Bad IPv4 header checksum (engine).
    BadIpChecksum,
    /// Bad TCP checksum (engine).
    BadTcpChecksum,
    /// Bad UDP checksum (engine).
    BadUdpChecksum,
    /// Bad ICMP / ICMPv6 checksum (engine).
    BadIcmpChecksum,
    /// TCP for no connection or listener (smoltcp answers RST), or UDP (the engine has no
    /// UDP sockets; smoltcp answers ICMP port unreachable) (engine).
    NoSocket,
    /// The port had no free frame to receive into (port).
    PortNoBuffer,
    /// The port's receive ring was full: the engine fell behind (port).
    PortRingFull,
    /// The port got a descriptor or frame it could not use (port).
    PortInvalid,
    /// A frame smoltcp built could not be kept: no pool frame, or larger than one (adapter).
    TxNoFrame,
    /// A packet to send found no neighbour entry (ARP/NDP solicitation sent): TCP
    /// retransmits it later, an ICMP reply is lost (adapter).
    TxNeighbourMiss,
}

impl DropReason {
    /// Every reason, in table order.
    pub const ALL: [DropReason; 15] = [
        DropReason::Malformed,
        DropReason::NotForUs,
        DropReason::UnsupportedEthertype,
        DropReason::UnsupportedProtocol,
        DropReason::Fragment,
        DropReason::BadIpChecksum,
        DropReason::BadTcpChecksum,
        DropReason::BadUdpChecksum,
        DropReason::BadIcmpChecksum,
        DropReason::NoSocket,
        DropReason::PortNoBuffer,
        DropReason::PortRingFull,
        DropReason::PortInvalid,
        DropReason::TxNoFrame,
        DropReason::TxNeighbourMiss,
    ];

    /// The counter's name in stats tables.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "rx_malformed",
            DropReason::NotForUs => "rx_not_for_us",
            DropReason::UnsupportedEthertype => "rx_bad_ethertype",
            DropReason::UnsupportedProtocol => "rx_bad_protocol",
            DropReason::Fragment => "rx_fragment",
            DropReason::BadIpChecksum => "rx_bad_ip_csum",
            DropReason::BadTcpChecksum => "rx_bad_tcp_csum",
            DropReason::BadUdpChecksum => "rx_bad_udp_csum",
            DropReason::BadIcmpChecksum => "rx_bad_icmp_csum",
            DropReason::NoSocket => "rx_no_socket",
            DropReason::PortNoBuffer => "rx_no_buffer",
            DropReason::PortRingFull => "rx_ring_full",
            DropReason::PortInvalid => "rx_invalid",
            DropReason::TxNoFrame => "tx_no_frame",
            DropReason::TxNeighbourMiss => "tx_neighbour_miss",
        }
    }

    /// What it means and what to do about it, for the once-per-reason log line.
    pub fn meaning(self) -> &'static str {
        match self {
            DropReason::Malformed => "frames shorter than their headers say (truncated or corrupt) are dropped",
            DropReason::NotForUs => "frames for another MAC or IP address are dropped (a switch flooding, or a wrong --addr)",
            DropReason::UnsupportedEthertype => "frames that are not ARP, IPv4 or IPv6 are dropped",
            DropReason::UnsupportedProtocol => "IPv4 packets of a protocol the stack does not serve are dropped (answered with ICMP unreachable)",
            DropReason::Fragment => "IP fragments are dropped: the stack does not reassemble (the peer should use path MTU discovery or a smaller MTU)",
            DropReason::BadIpChecksum => "IPv4 packets with a bad header checksum are dropped (corruption on the path)",
            DropReason::BadTcpChecksum => "TCP segments with a bad checksum are dropped (corruption on the path)",
            DropReason::BadUdpChecksum => "UDP datagrams with a bad checksum are dropped (corruption on the path)",
            DropReason::BadIcmpChecksum => "ICMP messages with a bad checksum are dropped (corruption on the path)",
            DropReason::NoSocket => "TCP segments for no connection are answered with RST and UDP datagrams (no UDP sockets here) with ICMP port unreachable",
            DropReason::PortNoBuffer => "the port had no free frame to receive into: the frame pool is too small for the load",
            DropReason::PortRingFull => "the port's receive ring overflowed: the engine did not poll often enough (busy machine, or raise the per-poll frame budget)",
            DropReason::PortInvalid => "the port got descriptors or frames it could not use (truncated reads, bad descriptors)",
            DropReason::TxNoFrame => "a frame the stack built was lost: no free pool frame, or larger than a pool frame",
            DropReason::TxNeighbourMiss => "a packet to send had no ARP/NDP entry for its next hop: a solicitation went out, TCP segments wait for the answer and are retransmitted, ICMP replies are lost (repeated misses: the peer or gateway does not answer ARP/NDP)",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Per-reason counters of dropped frames (one engine, or a sum of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// Frames dropped for `r`.
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r as usize]
    }

    /// Adds one; returns the new count.
    #[inline]
    pub fn bump(&mut self, r: DropReason) -> u64 {
        let c = &mut self.0[r as usize];
        *c += 1;
        *c
    }

    /// Sets the count of `r` (for counters kept elsewhere, such as the port's).
    pub fn set(&mut self, r: DropReason, n: u64) {
        self.0[r as usize] = n;
    }

    /// Every frame dropped, all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The reasons with a nonzero count, with their counts, in table order.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r))).filter(|&(_, n)| n > 0)
    }

    /// Adds `other` in (totals over engines).
    pub fn add(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

impl std::fmt::Display for DropCounts {
    /// `name count` pairs of the nonzero reasons, or `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut any = false;
        for (r, n) in self.nonzero() {
            write!(f, "{}{} {n}", if any { ", " } else { "" }, r.name())?;
            any = true;
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// Which reasons have been explained in the log already: one warning per reason per
/// process (or per `DropNotes` a test makes), however many engines see it.
#[derive(Debug, Default)]
pub struct DropNotes {
    said: AtomicU32,
}

impl DropNotes {
    /// The process-wide notes engines use unless given others.
    pub fn process() -> Arc<DropNotes> {
        static P: OnceLock<Arc<DropNotes>> = OnceLock::new();
        Arc::clone(P.get_or_init(Default::default))
    }

    /// Marks `r` as seen; true only the first time (the caller then logs).
    pub fn first(&self, r: DropReason) -> bool {
        self.said.fetch_or(r.bit(), Ordering::Relaxed) & r.bit() == 0
    }

    /// Logs the one warning for `r` if it is new. `port` names where it happened (its
    /// [`ukcm_nic::PortCaps`] name); `count` is the count so far.
    pub fn note(&self, r: DropReason, port: &str, count: u64) {
        if !self.first(r) {
            return;
        }
        if r == DropReason::TxNeighbourMiss {
            // Every start resolves its peers this way: routine, so not a warning.
            tracing::info!("{port}: {} ({}, {count} so far)", r.meaning(), r.name());
            return;
        }
        let csum = matches!(r, DropReason::BadTcpChecksum | DropReason::BadUdpChecksum);
        let hint = if csum && port.starts_with("afxdp") {
            // The one cause seen in practice: a veth peer with tx checksum offload on hands
            // AF_XDP segments whose checksum the kernel never filled in.
            "; on AF_XDP over a veth the likely cause is the peer keeping transmit checksum offload on, which delivers partial checksums: turn it off on the peer with `ethtool -K <peer> tx off` (scripts/netns.sh does)"
        } else {
            ""
        };
        tracing::warn!(
            "{port}: dropped a frame ({}, {count} so far): {}{hint}; counted in the stats from now on, not logged again",
            r.name(),
            r.meaning()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_bits_and_names() {
        let mut bits = 0u32;
        let mut names = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert_eq!(bits & r.bit(), 0, "{r:?}");
            bits |= r.bit();
            assert!(names.insert(r.name()), "{r:?}");
            assert_eq!(DropReason::ALL[r as usize], r, "ALL is in declaration order");
        }
    }

    #[test]
    fn counts_sum_and_print_only_nonzero_reasons() {
        let mut c = DropCounts::default();
        assert_eq!(c.to_string(), "none");
        c.bump(DropReason::BadTcpChecksum);
        c.bump(DropReason::BadTcpChecksum);
        c.bump(DropReason::Malformed);
        assert_eq!(c.total(), 3);
        assert_eq!(c.to_string(), "rx_malformed 1, rx_bad_tcp_csum 2");
        let mut sum = DropCounts::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(sum.get(DropReason::BadTcpChecksum), 4);
    }

    /// What `note` logged, through a subscriber for this thread only.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<parking_lot::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt().with_writer(move || w.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(sub, f);
        let out = String::from_utf8_lossy(&buf.0.lock()).into_owned();
        out
    }

    #[test]
    fn a_bad_tcp_checksum_on_af_xdp_names_the_veth_offload_fix() {
        let n = DropNotes::default();
        let out = logged(|| {
            n.note(DropReason::BadTcpChecksum, "afxdp:veth0:0 (native, copy)", 1);
            n.note(DropReason::BadTcpChecksum, "afxdp:veth0:0 (native, copy)", 2);
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("rx_bad_tcp_csum") && out.contains("ethtool -K <peer> tx off"), "{out}");
        let other = logged(|| DropNotes::default().note(DropReason::BadTcpChecksum, "mem:a", 1));
        assert!(!other.contains("ethtool"), "the veth hint is for AF_XDP only: {other}");
    }

    #[test]
    fn notes_say_each_reason_once() {
        let n = DropNotes::default();
        assert!(n.first(DropReason::Fragment));
        assert!(!n.first(DropReason::Fragment));
        assert!(n.first(DropReason::NoSocket));
    }
}
