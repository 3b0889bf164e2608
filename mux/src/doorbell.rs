//! Parking a receiving thread until the engine has news for it.
//!
//! A worker blocked in `MsgSocket::recv` must wake as soon as the engine queues a message
//! to it (a timed sleep costs tens of microseconds per message at depth 1), and the engine
//! must not pay a system call per message when nobody sleeps. So the waiter announces that
//! it sleeps, re-checks its queue and parks; the engine, after queueing, looks at the
//! announcement and unparks only a thread that really sleeps. The two SeqCst fences make
//! the classic store-then-load handshake sound: either the waiter sees the new message, or
//! the engine sees the waiter asleep (or both).

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::thread::Thread;
use std::time::Duration;

use parking_lot::Mutex;

/// One waiter's doorbell.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    sleeping: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

impl Doorbell {
    /// Parks the calling thread for at most `timeout`, unless `ready()` holds once the
    /// sleep is announced. Returns early when rung (or spuriously: callers re-check).
    pub(crate) fn wait(&self, timeout: Duration, ready: impl Fn() -> bool) {
        let me = std::thread::current();
        {
            let mut t = self.thread.lock();
            if t.as_ref().map(Thread::id) != Some(me.id()) {
                *t = Some(me);
            }
        }
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !ready() {
            std::thread::park_timeout(timeout);
        }
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Whether the waiter announced that it sleeps. Call [`Doorbell::fence`] after
    /// publishing the news and before this.
    pub(crate) fn sleeping(&self) -> bool {
        self.sleeping.load(Ordering::Relaxed)
    }

    /// The notifier's half of the handshake: orders the news before the `sleeping` check.
    pub(crate) fn fence() {
        fence(Ordering::SeqCst);
    }

    /// Wakes the waiter if it sleeps; returns whether it did.
    pub(crate) fn ring(&self) -> bool {
        if !self.sleeping.swap(false, Ordering::AcqRel) {
            return false;
        }
        if let Some(t) = self.thread.lock().as_ref() {
            t.unpark();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_ring_wakes_a_long_wait_early() {
        // The waiter's timeout is an hour: only the ring can end its wait within the
        // watchdog, which reports a lost wake-up instead of hanging the test.
        let bell = Arc::new(Doorbell::default());
        let news = Arc::new(AtomicBool::new(false));
        let (b2, n2) = (Arc::clone(&bell), Arc::clone(&news));
        let t = std::thread::spawn(move || {
            while !n2.load(Ordering::SeqCst) {
                b2.wait(Duration::from_secs(3600), || n2.load(Ordering::SeqCst));
            }
        });
        while !bell.sleeping() {
            std::thread::yield_now();
        }
        news.store(true, Ordering::SeqCst);
        Doorbell::fence();
        assert!(bell.ring(), "the waiter had announced its sleep");
        let watchdog = Instant::now() + Duration::from_secs(120);
        while !t.is_finished() {
            assert!(Instant::now() < watchdog, "watchdog: the ring did not wake the waiter");
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().unwrap();
    }

    #[test]
    fn no_wakeup_is_lost_between_check_and_park() {
        // A producer publishing news and ringing, a consumer waiting with timeouts far
        // longer than the test: the last item's wake-up, if lost, leaves the consumer
        // parked with news pending, which the watchdog below reports.
        let bell = Arc::new(Doorbell::default());
        let produced = Arc::new(AtomicU64::new(0));
        let consumed = Arc::new(AtomicU64::new(0));
        let (b2, p2, c2) = (Arc::clone(&bell), Arc::clone(&produced), Arc::clone(&consumed));
        const N: u64 = 20_000;
        let consumer = std::thread::spawn(move || {
            let mut seen = 0;
            while seen < N {
                let now = p2.load(Ordering::SeqCst);
                if now > seen {
                    seen = now;
                    c2.store(seen, Ordering::SeqCst);
                    continue;
                }
                b2.wait(Duration::from_secs(3600), || p2.load(Ordering::SeqCst) > seen);
            }
        });
        for i in 1..=N {
            produced.store(i, Ordering::SeqCst);
            Doorbell::fence();
            if bell.sleeping() {
                bell.ring();
            }
        }
        let watchdog = Instant::now() + Duration::from_secs(120);
        while !consumer.is_finished() {
            assert!(
                Instant::now() < watchdog,
                "a wake-up was lost: the consumer saw {} of {N} and sleeps ({})",
                consumed.load(Ordering::SeqCst),
                bell.sleeping()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        consumer.join().unwrap();
        assert_eq!(consumed.load(Ordering::SeqCst), N);
    }
}
