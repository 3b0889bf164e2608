//! Per-connection events, counted and summarised instead of logged one by one: 10,000
//! clients closing mid-message are one summary line with counts (`EPIPE 10000`), not 10,000
//! lines. The first few events are logged as they come (they are usually the interesting
//! ones); after that, at most one summary per interval with the counts by kind since the
//! last one, and a final summary when the server stops.

use std::time::{Duration, Instant};

use ukcm_mux::PsockErrorKind;

/// Events logged one by one before summaries take over.
const FIRST: u64 = 5;
/// At most one summary line per this long.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnEvent {
    /// The mux posted an error on its psock (EPIPE, ETIMEDOUT, EPROTO, EMSGSIZE).
    Error(PsockErrorKind),
    /// An accepted connection could not be attached (no memory for its ring, …).
    AttachFailed,
}

impl ConnEvent {
    fn name(self) -> &'static str {
        match self {
            ConnEvent::Error(k) => k.name(),
            ConnEvent::AttachFailed => "attach failed",
        }
    }
}

const KINDS: [ConnEvent; 5] = [
    ConnEvent::Error(PsockErrorKind::Pipe),
    ConnEvent::Error(PsockErrorKind::TimedOut),
    ConnEvent::Error(PsockErrorKind::Proto),
    ConnEvent::Error(PsockErrorKind::MsgSize),
    ConnEvent::AttachFailed,
];

/// Counts of connection errors by kind (a fixed array: bounded whatever the load).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ByKind([u64; KINDS.len()]);

impl ByKind {
    fn slot(k: ConnEvent) -> usize {
        KINDS.iter().position(|&x| x == k).unwrap_or(0)
    }
    fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// `EPIPE 9990, ETIMEDOUT 3`.
    fn describe(&self) -> String {
        KINDS
            .iter()
            .zip(self.0)
            .filter(|&(_, n)| n > 0)
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The engine thread's log of connection errors.
#[derive(Debug)]
pub(crate) struct ConnLog {
    logged: u64,
    pending: ByKind,
    total: ByKind,
    since: Instant,
}

impl ConnLog {
    pub(crate) fn new(now: Instant) -> Self {
        ConnLog { logged: 0, pending: ByKind::default(), total: ByKind::default(), since: now }
    }

    /// One connection error; `what` describes it (called only when it is logged).
    /// Returns the line logged, if any (for tests).
    pub(crate) fn note(&mut self, kind: ConnEvent, now: Instant, what: impl FnOnce() -> String) -> Option<String> {
        self.total.0[ByKind::slot(kind)] += 1;
        if self.logged < FIRST {
            self.logged += 1;
            let line = what();
            tracing::warn!("{line}");
            return Some(line);
        }
        self.pending.0[ByKind::slot(kind)] += 1;
        self.tick(now)
    }

    /// Logs a summary if events are pending and the interval has passed (call it now and
    /// then, so a burst that ended is still reported). Returns the line, if any.
    pub(crate) fn tick(&mut self, now: Instant) -> Option<String> {
        if self.pending.total() == 0 || now.duration_since(self.since) < SUMMARY_EVERY {
            return None;
        }
        let line = format!(
            "{} more connection errors in the last {:.0} s ({}); not logged one by one (see the stats table)",
            self.pending.total(),
            now.duration_since(self.since).as_secs_f64(),
            self.pending.describe()
        );
        tracing::warn!("{line}");
        self.pending = ByKind::default();
        self.since = now;
        Some(line)
    }

    /// The final summary when the server stops (every error since the start, by kind), if
    /// any went unlogged.
    pub(crate) fn finish(&mut self) -> Option<String> {
        if self.total.total() <= self.logged {
            return None;
        }
        let line = format!("connection errors while serving: {} ({})", self.total.total(), self.total.describe());
        tracing::warn!("{line}");
        self.pending = ByKind::default();
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_broken_connections_are_a_few_lines_with_counts() {
        let t0 = Instant::now();
        let mut log = ConnLog::new(t0);
        let mut lines = Vec::new();
        for i in 0..10_000u64 {
            // 10,000 clients close mid-message over 25 s; two assemblies time out.
            let now = t0 + Duration::from_millis(i * 25 / 10);
            let kind = if i % 4000 == 3999 { PsockErrorKind::TimedOut } else { PsockErrorKind::Pipe };
            lines.extend(log.note(ConnEvent::Error(kind), now, || format!("psock {i}: {}", kind.name())));
        }
        lines.extend(log.tick(t0 + Duration::from_secs(60)));
        lines.extend(log.finish());
        // 5 one by one, summaries at 10 s and 20 s, the rest at 60 s, then the total.
        assert_eq!(lines.len(), 5 + 3 + 1, "{lines:#?}");
        assert!(lines[5].contains("EPIPE"), "{}", lines[5]);
        let last = lines.last().unwrap();
        assert!(last.contains("10000 (EPIPE 9998, ETIMEDOUT 2)"), "{last}");
        let summed: u64 =
            lines[5..8].iter().map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(summed + 5, 10_000, "every error is in exactly one line");
    }

    #[test]
    fn a_few_errors_are_each_logged_and_need_no_summary() {
        let t0 = Instant::now();
        let mut log = ConnLog::new(t0);
        for _ in 0..3 {
            assert!(log.note(ConnEvent::AttachFailed, t0, || "no ring memory".into()).is_some());
        }
        assert_eq!(log.tick(t0 + Duration::from_secs(60)), None);
        assert_eq!(log.finish(), None);
    }
}
