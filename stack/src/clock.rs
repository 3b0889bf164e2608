//! Time for the engine: the real clock, or one tests move by hand.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use smoltcp::time::{Duration, Instant};

/// Where an engine gets the current time from.
pub trait Clock: Send {
    /// The current time (smoltcp's microsecond instant; only differences matter).
    fn now(&self) -> Instant;
}

/// Monotonic wall time (`std::time::Instant`), counted from the clock's creation.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    epoch: std::time::Instant,
}

impl SystemClock {
    /// A clock starting at zero now.
    pub fn new() -> Self {
        SystemClock { epoch: std::time::Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.micros.fetch_add(d.total_micros() as i64, Ordering::SeqCst);
    }

    /// Sets the clock to `t` if that is later than now (time never goes back).
    pub fn advance_to(&self, t: Instant) {
        self.micros.fetch_max(t.total_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Instant::from_micros(self.micros.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward_and_is_shared() {
        let c = ManualClock::new();
        let c2 = c.clone();
        c.advance(Duration::from_millis(5));
        assert_eq!(c2.now(), Instant::from_millis(5));
        c.advance_to(Instant::from_millis(3));
        assert_eq!(c.now(), Instant::from_millis(5));
        c.advance_to(Instant::from_millis(9));
        assert_eq!(c2.now(), Instant::from_millis(9));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let c = SystemClock::new();
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(c.now() > a);
    }
}
