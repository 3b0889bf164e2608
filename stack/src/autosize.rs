//! When a connection's rings grow: the policy, kept apart from the mechanics in `Engine`.
//!
//! Like the kernel's receive-buffer autotuning (tcp_rmem min/default/max), a connection
//! starts with small rings ([`START_RING`] each by default in the `ukcm` server) and a
//! window to match, and a ring doubles, up to the connection's configured maximum, when it
//! comes under pressure:
//!
//! - rx: the ring was at least three quarters full ([`rx_pressure`]) — the window nearly
//!   closed, or the parser waits for a message longer than what the ring holds (a partial
//!   message that fills the ring). A ring lent out in place (zero-copy views into it) grows
//!   only once no view is alive: views keep pointing at the bytes they were lent, and the
//!   growth copies only bytes nobody is looking at. The message that needs the growth is
//!   never lent before it is whole, so waiting for views never waits for itself.
//! - tx: a write found the ring full with bytes still to write.
//!
//! Memory goes back when a connection goes quiet: a ring that grew is checked
//! [`SHRINK_AFTER`] later (and again every [`SHRINK_AFTER`] while it is busy) and swapped
//! back to the starting ring once it is idle —
//!
//! - tx: everything written was acknowledged;
//! - rx: no segment arrived since the last check and nothing is queued or out of order; a
//!   ring lent in place also waits until no view of it is alive. smoltcp does not take back
//!   window it advertised (RFC 9293 3.8.6: the right edge should not move left), so the
//!   vendored patch's `shrink_recv_buffer` retracts it explicitly — allowed (senders must be
//!   robust against it; Linux does it under memory pressure), done only on an idle
//!   connection, and announced with an ACK at once; a segment already on its way past the
//!   new edge is trimmed and sent again by the peer.
//!
//! The maximum still bounds the largest message (a 256 KiB message needs a 256 KiB ring to
//! arrive whole and in place). A growth the pinned budget cannot cover is counted and
//! skipped: the connection keeps its ring and its window says so (backpressure), and the
//! growth is tried again at the next pressure.

/// The ring a connection starts with in the `ukcm` server (bytes, rx and tx each): the
/// smallest mirror-mappable ring (one page), which holds 64 B ping-pong traffic with room
/// to spare.
pub const START_RING: usize = 4096;

/// How long after growing a ring is first checked for idleness (and then re-checked).
pub const SHRINK_AFTER: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(1);

/// Whether `queued` bytes of a `cap`-byte rx ring call for a bigger one.
pub fn rx_pressure(queued: usize, cap: usize) -> bool {
    queued.saturating_mul(4) >= cap.saturating_mul(3)
}

/// The next ring size after `cur` (a power of two), or `None` at `max`.
pub fn next_size(cur: usize, max: usize) -> Option<usize> {
    (cur < max).then(|| cur.saturating_mul(2).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_starts_at_three_quarters() {
        assert!(!rx_pressure(3071, 4096));
        assert!(rx_pressure(3072, 4096));
        assert!(rx_pressure(4096, 4096));
        assert!(!rx_pressure(64, 4096), "64 B ping-pong does not grow a 4 KiB ring");
    }

    #[test]
    fn sizes_double_up_to_the_maximum() {
        assert_eq!(next_size(4096, 1 << 19), Some(8192));
        assert_eq!(next_size(1 << 18, 1 << 19), Some(1 << 19));
        assert_eq!(next_size(1 << 19, 1 << 19), None);
    }
}
