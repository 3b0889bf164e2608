//! Counters with KCM's names, per psock, per message socket and per mux.
//!
//! As in the kernel, a psock's counters are folded into its mux when it is unattached, so
//! the mux totals never go backwards; [`StatsTable`] prints them the way
//! `/proc/net/kcm_stats` does.

use std::fmt::{self, Write as _};

/// Counters of one attached TCP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PsockStats {
    /// Messages delineated and delivered.
    pub rx_msgs: u64,
    /// Bytes in those messages.
    pub rx_bytes: u64,
    /// Messages sent whole on this psock.
    pub tx_msgs: u64,
    /// Bytes in those messages.
    pub tx_bytes: u64,
    /// Assemblies aborted (any reason below, or unattach mid-message).
    pub rx_aborts: u64,
    /// Parser calls that needed more header bytes.
    pub rx_need_more_hdr: u64,
    /// Messages over the size limit (EMSGSIZE).
    pub rx_msg_too_big: u64,
    /// Messages not complete within the assembly timeout (ETIMEDOUT).
    pub rx_msg_timeouts: u64,
    /// Headers with an impossible length (EPROTO).
    pub rx_bad_hdr_len: u64,
    /// Messages that could not be sent whole on this psock.
    pub tx_aborts: u64,
    /// Bytes copied while receiving beyond the transport's one copy: messages that wrapped
    /// an unmirrored ring, and over kernel sockets the unparsed bytes a growing rx ring
    /// moved into its bigger successor (`kernel_ring`).
    pub rx_copied_bytes: u64,
    /// Bytes the mux copied while sending beyond the transport's one allowed copy: over the
    /// userspace stack, every sent byte is copied from the socket's tx ring (or the
    /// run-to-completion reply buffer) into smoltcp's tx ring, which smoltcp copies into
    /// frames again. Zero over kernel sockets (the write system call is their one copy).
    pub tx_copied_bytes: u64,
    /// Replies that arrived before an earlier request of their connection was answered and
    /// waited their turn (ordered replies).
    pub tx_replies_held: u64,
    /// Reply slots given up without a reply (dropped, or no reply from a handler).
    pub tx_slots_released: u64,
    /// Times delineation paused because the unanswered-request limit was reached.
    pub rx_unanswered_stalls: u64,
    /// Messages a run-to-completion handler postponed ([`crate::Request::postpone`]: its
    /// own downstream was full), offered again on a later round.
    pub rx_postponed: u64,
}

impl PsockStats {
    /// Adds `other` into `self` (folding on unattach).
    pub fn fold(&mut self, o: &PsockStats) {
        self.rx_msgs += o.rx_msgs;
        self.rx_bytes += o.rx_bytes;
        self.tx_msgs += o.tx_msgs;
        self.tx_bytes += o.tx_bytes;
        self.rx_aborts += o.rx_aborts;
        self.rx_need_more_hdr += o.rx_need_more_hdr;
        self.rx_msg_too_big += o.rx_msg_too_big;
        self.rx_msg_timeouts += o.rx_msg_timeouts;
        self.rx_bad_hdr_len += o.rx_bad_hdr_len;
        self.tx_aborts += o.tx_aborts;
        self.rx_copied_bytes += o.rx_copied_bytes;
        self.tx_copied_bytes += o.tx_copied_bytes;
        self.tx_replies_held += o.tx_replies_held;
        self.tx_slots_released += o.tx_slots_released;
        self.rx_unanswered_stalls += o.rx_unanswered_stalls;
        self.rx_postponed += o.rx_postponed;
    }
}

/// Counters of one message socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockStats {
    /// Messages received by the application.
    pub rx_msgs: u64,
    /// Bytes in those messages.
    pub rx_bytes: u64,
    /// Messages the application sent.
    pub tx_msgs: u64,
    /// Bytes in those messages.
    pub tx_bytes: u64,
    /// Completions posted (acknowledged by the peer).
    pub tx_completions: u64,
    /// Sends reported as failed.
    pub tx_failed: u64,
}

/// Counters of a mux: its own, plus the folded totals of psocks that have left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MuxStats {
    /// Messages that could not be queued to a socket and were dropped (always 0: the mux
    /// applies backpressure instead; kept for KCM parity and as a guard).
    pub rx_ready_drops: u64,
    /// Messages re-sent from their start on another psock after a psock failed mid-message.
    pub tx_retries: u64,
    /// Psocks attached.
    pub psock_attach: u64,
    /// Psocks unattached.
    pub psock_unattach: u64,
    /// Psocks unattached while reserved by a sender (a message in flight on them).
    pub psock_unattach_rsvd: u64,
    /// Totals of psocks already unattached.
    pub folded: PsockStats,
}

impl MuxStats {
    /// Adds another mux's counters (several engines shown as one).
    pub fn add(&mut self, o: &MuxStats) {
        self.rx_ready_drops += o.rx_ready_drops;
        self.tx_retries += o.tx_retries;
        self.psock_attach += o.psock_attach;
        self.psock_unattach += o.psock_unattach;
        self.psock_unattach_rsvd += o.psock_unattach_rsvd;
        self.folded.fold(&o.folded);
    }
}

/// One row of a stats table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRow {
    /// What the row describes, e.g. `psock 3 (10.0.0.2:5000)`.
    pub label: String,
    /// Its counters.
    pub stats: PsockStats,
}

/// A printable snapshot of a mux, like `/proc/net/kcm_stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsTable {
    /// Mux-level counters.
    pub mux: MuxStats,
    /// The mux totals: live psocks plus folded ones.
    pub total: PsockStats,
    /// One row per live psock (at most a cap's worth in periodic snapshots).
    pub psocks: Vec<StatsRow>,
    /// Live psocks left without a row by that cap (the totals count them).
    pub psocks_not_shown: usize,
    /// One row per socket: label and counters.
    pub socks: Vec<(String, SockStats)>,
}

impl fmt::Display for StatsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.mux;
        writeln!(
            f,
            "{:<28} {:>10} {:>12} {:>10} {:>12} {:>8} {:>8} {:>8} {:>8}",
            "MUX", "RX-Msgs", "RX-Bytes", "TX-Msgs", "TX-Bytes", "Attach", "Unattch", "Retries", "RdyDrps"
        )?;
        writeln!(
            f,
            "{:<28} {:>10} {:>12} {:>10} {:>12} {:>8} {:>8} {:>8} {:>8}",
            "mux",
            self.total.rx_msgs,
            self.total.rx_bytes,
            self.total.tx_msgs,
            self.total.tx_bytes,
            m.psock_attach,
            m.psock_unattach,
            m.tx_retries,
            m.rx_ready_drops
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<28} {:>10} {:>12} {:>10} {:>12} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>10} {:>7} {:>7} {:>7} {:>7}",
            "PSOCK",
            "RX-Msgs",
            "RX-Bytes",
            "TX-Msgs",
            "TX-Bytes",
            "Aborts",
            "NeedHdr",
            "TooBig",
            "Timeout",
            "BadHdr",
            "TxAbrt",
            "Copied",
            "TxCopied",
            "Held",
            "NoRply",
            "OrdStl",
            "Postpn"
        )?;
        for r in &self.psocks {
            let s = &r.stats;
            writeln!(
                f,
                "{:<28} {:>10} {:>12} {:>10} {:>12} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>10} {:>7} {:>7} {:>7} {:>7}",
                r.label,
                s.rx_msgs,
                s.rx_bytes,
                s.tx_msgs,
                s.tx_bytes,
                s.rx_aborts,
                s.rx_need_more_hdr,
                s.rx_msg_too_big,
                s.rx_msg_timeouts,
                s.rx_bad_hdr_len,
                s.tx_aborts,
                s.rx_copied_bytes,
                s.tx_copied_bytes,
                s.tx_replies_held,
                s.tx_slots_released,
                s.rx_unanswered_stalls,
                s.rx_postponed
            )?;
        }
        if self.psocks_not_shown > 0 {
            writeln!(f, "... and {} more psocks (rows capped; the totals count them)", self.psocks_not_shown)?;
        }
        if !self.socks.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<28} {:>10} {:>12} {:>10} {:>12} {:>10} {:>8}",
                "SOCK", "RX-Msgs", "RX-Bytes", "TX-Msgs", "TX-Bytes", "Complete", "Failed"
            )?;
            for (label, s) in &self.socks {
                let mut l = String::new();
                let _ = write!(l, "{label}");
                writeln!(
                    f,
                    "{:<28} {:>10} {:>12} {:>10} {:>12} {:>10} {:>8}",
                    l, s.rx_msgs, s.rx_bytes, s.tx_msgs, s.tx_bytes, s.tx_completions, s.tx_failed
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_adds_every_counter() {
        let one = PsockStats {
            rx_msgs: 1,
            rx_bytes: 2,
            tx_msgs: 3,
            tx_bytes: 4,
            rx_aborts: 5,
            rx_need_more_hdr: 6,
            rx_msg_too_big: 7,
            rx_msg_timeouts: 8,
            rx_bad_hdr_len: 9,
            tx_aborts: 10,
            rx_copied_bytes: 11,
            tx_copied_bytes: 12,
            tx_replies_held: 13,
            tx_slots_released: 14,
            rx_unanswered_stalls: 15,
            rx_postponed: 16,
        };
        let mut t = one;
        t.fold(&one);
        assert_eq!(t.rx_msgs, 2);
        assert_eq!(t.rx_copied_bytes, 22);
        assert_eq!(t.tx_copied_bytes, 24);
        assert_eq!(t.tx_aborts, 20);
        assert_eq!(t.rx_bad_hdr_len, 18);
        assert_eq!(t.tx_replies_held, 26);
        assert_eq!(t.tx_slots_released, 28);
        assert_eq!(t.rx_unanswered_stalls, 30);
        assert_eq!(t.rx_postponed, 32);
    }

    #[test]
    fn table_prints_kcm_columns_and_rows() {
        let t = StatsTable {
            mux: MuxStats { psock_attach: 2, ..Default::default() },
            total: PsockStats { rx_msgs: 7, ..Default::default() },
            psocks: vec![StatsRow { label: "psock 0".into(), stats: PsockStats { rx_msgs: 7, ..Default::default() } }],
            psocks_not_shown: 3,
            socks: vec![("sock 0".into(), SockStats { rx_msgs: 7, ..Default::default() })],
        };
        let s = t.to_string();
        assert!(s.contains("RX-Msgs") && s.contains("NeedHdr") && s.contains("TxCopied") && s.contains("psock 0"));
        assert!(s.contains("and 3 more psocks"), "capped rows are said: {s}");
        let mux_line = s.lines().nth(1).unwrap();
        assert!(mux_line.split_whitespace().any(|w| w == "7"));
    }
}
