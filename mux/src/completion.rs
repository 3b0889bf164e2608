//! Send completions with per-message cookies (RDS zerocopy / MSG_ZEROCOPY semantics).
//!
//! Each message written to a psock's tx ring may carry a 32-bit cookie. The message is
//! complete when the peer's TCP has acknowledged its last byte: the transport reports
//! how many bytes of the stream the peer has acknowledged in total, and every message
//! ending at or before that offset completes, in order, exactly once. A psock that fails
//! completes its pending messages as failed: nothing is silently forgotten.

use std::collections::VecDeque;

use crate::error::PsockErrorKind;
use crate::ids::SockId;

/// How a sent message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionStatus {
    /// The peer acknowledged every byte.
    Acked,
    /// The psock failed before that (the message may or may not have arrived).
    Failed(PsockErrorKind),
}

/// One completion notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The cookie given at send time.
    pub cookie: u32,
    /// How it ended.
    pub status: CompletionStatus,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    end: u64,
    cookie: u32,
    sock: SockId,
}

/// Messages of one psock waiting for the peer's acknowledgement.
#[derive(Debug, Default)]
pub struct CompletionTracker {
    /// Stream bytes written to the tx ring so far.
    written: u64,
    /// Stream bytes the peer has acknowledged so far.
    acked: u64,
    pending: VecDeque<Pending>,
}

impl CompletionTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a message of `len` bytes just written; `cookie` asks for a completion.
    pub fn written(&mut self, len: usize, cookie: Option<u32>, sock: SockId) {
        self.written += len as u64;
        if let Some(cookie) = cookie {
            self.pending.push_back(Pending { end: self.written, cookie, sock });
        }
    }

    /// Stream bytes written so far.
    pub fn written_total(&self) -> u64 {
        self.written
    }

    /// The peer has now acknowledged `acked_total` bytes of the stream; emits completions
    /// for every message ending at or before it.
    pub fn acked(&mut self, acked_total: u64, mut emit: impl FnMut(SockId, Completion)) -> usize {
        debug_assert!(acked_total <= self.written, "peer acked unsent bytes");
        self.acked = self.acked.max(acked_total.min(self.written));
        let mut n = 0;
        while let Some(p) = self.pending.front() {
            if p.end > self.acked {
                break;
            }
            emit(p.sock, Completion { cookie: p.cookie, status: CompletionStatus::Acked });
            self.pending.pop_front();
            n += 1;
        }
        n
    }

    /// The psock failed: every pending message completes as failed.
    pub fn fail_all(&mut self, why: PsockErrorKind, mut emit: impl FnMut(SockId, Completion)) -> usize {
        let n = self.pending.len();
        for p in self.pending.drain(..) {
            emit(p.sock, Completion { cookie: p.cookie, status: CompletionStatus::Failed(why) });
        }
        n
    }

    /// Messages still waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes written but not yet acknowledged.
    pub fn unacked_bytes(&self) -> u64 {
        self.written - self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(t: &mut CompletionTracker, acked: u64) -> Vec<(SockId, Completion)> {
        let mut v = Vec::new();
        t.acked(acked, |s, c| v.push((s, c)));
        v
    }

    #[test]
    fn completes_only_when_the_last_byte_is_acked() {
        let mut t = CompletionTracker::new();
        t.written(100, Some(1), SockId(0));
        t.written(50, None, SockId(0));
        t.written(10, Some(3), SockId(1));
        assert!(collect(&mut t, 99).is_empty());
        let c = collect(&mut t, 100);
        assert_eq!(c, vec![(SockId(0), Completion { cookie: 1, status: CompletionStatus::Acked })]);
        assert!(collect(&mut t, 159).is_empty());
        let c = collect(&mut t, 160);
        assert_eq!(c[0].1.cookie, 3);
        assert_eq!(c[0].0, SockId(1));
        assert!(collect(&mut t, 160).is_empty(), "each cookie exactly once");
        assert_eq!(t.unacked_bytes(), 0);
    }

    #[test]
    fn a_batch_of_acks_completes_in_order() {
        let mut t = CompletionTracker::new();
        for i in 0..10 {
            t.written(8, Some(i), SockId(0));
        }
        let c = collect(&mut t, 80);
        let cookies: Vec<u32> = c.iter().map(|(_, c)| c.cookie).collect();
        assert_eq!(cookies, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn failure_reports_every_pending_cookie_once() {
        let mut t = CompletionTracker::new();
        t.written(10, Some(7), SockId(2));
        t.written(10, Some(8), SockId(2));
        collect(&mut t, 10);
        let mut failed = Vec::new();
        assert_eq!(t.fail_all(PsockErrorKind::Pipe, |_, c| failed.push(c)), 1);
        assert_eq!(failed, vec![Completion { cookie: 8, status: CompletionStatus::Failed(PsockErrorKind::Pipe) }]);
        assert_eq!(t.pending(), 0);
    }
}
