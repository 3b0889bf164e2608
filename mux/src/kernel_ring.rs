//! The rx ring of a kernel-socket psock, sized by its traffic: it starts at one page and
//! doubles under pressure up to the psock's maximum, then goes back to the start after a
//! quiet spell. The policy is the userspace stack's ([`ukcm_stack::autosize`]); a fixed
//! ring of the maximum cost every idle connection 512 KiB of locked memory.
//!
//! Unlike the stack's rings there is no advertised window to keep honest: the kernel's
//! socket buffer holds what the ring cannot take, so the ring may change size whenever no
//! view of it is alive. Views point into the ring they were lent from, so while one is
//! alive the ring keeps its size; it grows at the first fill after they are all dropped.
//! The message that needs the growth is never lent before it is whole (it does not fit),
//! so waiting for the views never waits for itself. A growth moves the unparsed bytes into
//! the new ring (one copy, counted); a shrink happens only with the ring empty.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ukcm_nic::smoltcp_device::inplace_rx::views_for;
use ukcm_nic::{ByteRing, PinnedBudget, RingError};
use ukcm_stack::autosize;

/// How long a grown ring must stay quiet (nothing received, nothing held) before it goes
/// back to the start size: the stack's tx-ring figure.
pub const SHRINK_AFTER: Duration = Duration::from_micros(autosize::SHRINK_AFTER.total_micros());

/// Counters of kernel-psock rings, shared by any number of psocks (see
/// `KernelPsock::count_into`); read them with [`KernelRingStats::snapshot`].
#[derive(Debug, Default)]
pub struct KernelRingStats {
    grows: AtomicU64,
    shrinks: AtomicU64,
    copied_bytes: AtomicU64,
    refused_budget: AtomicU64,
    refused_memory: AtomicU64,
    ring_bytes: AtomicU64,
}

/// A snapshot of [`KernelRingStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelRingCounts {
    /// Rings doubled.
    pub grows: u64,
    /// Grown rings given back (to the start size) after a quiet spell.
    pub shrinks: u64,
    /// Unparsed bytes moved from an old ring into a bigger one: the one copy a growth costs.
    pub copied_bytes: u64,
    /// Growth attempts the pinned budget refused (the ring kept its size: backpressure; the
    /// growth is tried again at every fill while the pressure lasts), and shrinks it
    /// refused (tried again a quiet spell later).
    pub refused_budget: u64,
    /// Growths (or shrinks) that could not map the new ring.
    pub refused_memory: u64,
    /// Ring bytes mapped now by the psocks counted here (each ring is mapped twice, back to
    /// back, but its pages once).
    pub ring_bytes: u64,
}

impl KernelRingStats {
    /// The counters now.
    pub fn snapshot(&self) -> KernelRingCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        KernelRingCounts {
            grows: get(&self.grows),
            shrinks: get(&self.shrinks),
            copied_bytes: get(&self.copied_bytes),
            refused_budget: get(&self.refused_budget),
            refused_memory: get(&self.refused_memory),
            ring_bytes: get(&self.ring_bytes),
        }
    }

    fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Idle checks of grown rings, due at an instant, by ready key: for psocks visited only on
/// readiness (`KernelReadiness`), which would otherwise never be visited while idle. Stale
/// entries (a ring that shrank or a socket that closed) cost one extra visit.
#[derive(Debug, Default)]
pub(crate) struct IdleChecks {
    due: Mutex<BinaryHeap<Reverse<(Instant, usize)>>>,
}

impl IdleChecks {
    fn push(&self, at: Instant, key: usize) {
        self.due.lock().push(Reverse((at, key)));
    }

    /// When the next check is due.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.due.lock().peek().map(|Reverse((at, _))| *at)
    }

    /// Calls `f` with the key of every check due by `now`, and forgets them.
    pub(crate) fn take_due(&self, now: Instant, mut f: impl FnMut(usize)) {
        let mut due = self.due.lock();
        while let Some(&Reverse((at, key))) = due.peek() {
            if at > now {
                break;
            }
            due.pop();
            f(key);
        }
    }
}

/// The next idle check of a grown ring.
#[derive(Debug, Clone, Copy)]
struct IdleCheck {
    at: Instant,
    /// Bytes received when the check was armed: unchanged at the check means quiet since.
    received: u64,
}

/// A [`ByteRing`] that grows under pressure and shrinks when idle (see the module docs).
pub struct GrowingRing {
    ring: ByteRing,
    start: usize,
    max: usize,
    /// The caller's bound on live views (each ring allows `views_for` its size).
    max_views: usize,
    budget: Arc<PinnedBudget>,
    /// Came under pressure since it last grew.
    pressure: bool,
    /// Stream bytes received over every ring this one has been.
    received: u64,
    check: Option<IdleCheck>,
    /// Where idle checks are scheduled, under which key (psocks visited on readiness).
    wake: Option<(Arc<IdleChecks>, usize)>,
    stats: Arc<KernelRingStats>,
}

impl fmt::Debug for GrowingRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrowingRing")
            .field("ring", &self.ring)
            .field("start", &self.start)
            .field("max", &self.max)
            .field("pressure", &self.pressure)
            .finish()
    }
}

impl GrowingRing {
    /// A ring of `start` bytes that may grow to `max` (multiples of 4096; a `start` of 0 or
    /// above `max` means `max`: a fixed ring), lending at most `max_views` views at once
    /// (fewer on a small ring: one per 64 bytes, as the stack's in-place rings).
    pub fn new(start: usize, max: usize, max_views: usize, budget: &Arc<PinnedBudget>) -> Result<Self, RingError> {
        let start = if start == 0 { max } else { start.min(max) };
        let max_views = max_views.max(1);
        let ring = ByteRing::new(start, views_for(start, max_views), budget)?;
        let stats = Arc::new(KernelRingStats::default());
        KernelRingStats::bump(&stats.ring_bytes, start as u64);
        Ok(GrowingRing {
            ring,
            start,
            max,
            max_views,
            budget: Arc::clone(budget),
            pressure: false,
            received: 0,
            check: None,
            wake: None,
            stats,
        })
    }

    /// The ring as it is now.
    pub fn ring(&self) -> &ByteRing {
        &self.ring
    }

    /// The ring as it is now, to lend from, reclaim and discard.
    pub fn ring_mut(&mut self) -> &mut ByteRing {
        &mut self.ring
    }

    /// The size the ring may grow to: the largest message it can hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// This ring's counters.
    pub fn stats(&self) -> &Arc<KernelRingStats> {
        &self.stats
    }

    /// Counts into `stats` from now on (the ring's bytes move there).
    pub fn count_into(&mut self, stats: &Arc<KernelRingStats>) {
        let cap = self.ring.capacity() as u64;
        self.stats.ring_bytes.fetch_sub(cap, Ordering::Relaxed);
        KernelRingStats::bump(&stats.ring_bytes, cap);
        self.stats = Arc::clone(stats);
    }

    /// Schedules this ring's idle checks in `checks` under `key` (a psock visited only when
    /// its key is marked ready).
    pub(crate) fn wake_with(&mut self, checks: &Arc<IdleChecks>, key: usize) {
        if let Some(c) = self.check {
            checks.push(c.at, key);
        }
        self.wake = Some((Arc::clone(checks), key));
    }

    /// Before reading: shrinks a grown ring that has been quiet, and grows one that came
    /// under pressure if no view of it is alive. Returns the bytes a growth copied.
    pub fn before_fill(&mut self) -> usize {
        self.idle_check();
        self.grow()
    }

    /// Free space to read into (empty when full: see [`GrowingRing::full`]).
    pub fn free_space(&mut self) -> &mut [u8] {
        self.ring.free_space()
    }

    /// Marks `n` bytes of the free space as received.
    pub fn commit(&mut self, n: usize) {
        self.ring.commit(n);
        self.received += n as u64;
    }

    /// The ring is full with bytes waiting: pressure. Grows now if it may; returns the
    /// bytes copied if it grew (then there is free space again), `None` if it did not.
    pub fn full(&mut self) -> Option<usize> {
        self.pressure |= self.ring.capacity() < self.max;
        let before = self.ring.capacity();
        let copied = self.grow();
        (self.ring.capacity() > before).then_some(copied)
    }

    /// After reading all there was: a ring at least three quarters full is under pressure.
    pub fn after_fill(&mut self) {
        let cap = self.ring.capacity();
        if cap < self.max && autosize::rx_pressure(self.ring.used(), cap) {
            self.pressure = true;
        }
    }

    /// Doubles the ring if it came under pressure and no view of it is alive; returns the
    /// unparsed bytes moved. A refusal (budget, memory) is counted and leaves the ring as
    /// it was, still under pressure.
    fn grow(&mut self) -> usize {
        if !self.pressure || self.ring.views_outstanding() > 0 {
            return 0;
        }
        let cap = self.ring.capacity();
        let Some(next) = autosize::next_size(cap, self.max) else {
            self.pressure = false;
            return 0;
        };
        let Some(copied) = self.replace(next) else { return 0 };
        self.pressure = false;
        KernelRingStats::bump(&self.stats.grows, 1);
        KernelRingStats::bump(&self.stats.copied_bytes, copied as u64);
        if self.check.is_none() {
            self.arm(Instant::now());
        }
        copied
    }

    /// Swaps in a ring of `cap` bytes holding the unparsed bytes of the old one; `None`
    /// (counted) when it cannot be had. Call only with no view alive.
    fn replace(&mut self, cap: usize) -> Option<usize> {
        debug_assert_eq!(self.ring.views_outstanding(), 0, "a view points into the old ring");
        let mut ring = match ByteRing::new(cap, views_for(cap, self.max_views), &self.budget) {
            Ok(r) => r,
            Err(RingError::Budget(_)) => {
                KernelRingStats::bump(&self.stats.refused_budget, 1);
                return None;
            }
            Err(_) => {
                KernelRingStats::bump(&self.stats.refused_memory, 1);
                return None;
            }
        };
        let old = self.ring.unparsed();
        let n = old.len();
        ring.free_space()[..n].copy_from_slice(old);
        ring.commit(n);
        let before = self.ring.capacity() as u64;
        self.ring = ring;
        self.stats.ring_bytes.fetch_sub(before, Ordering::Relaxed);
        KernelRingStats::bump(&self.stats.ring_bytes, cap as u64);
        Some(n)
    }

    /// A due idle check of a grown ring: back to the start size if nothing arrived since
    /// the last check and the ring is empty with no view alive; else checked again later.
    /// Reads the clock only while a check is armed (a grown ring).
    fn idle_check(&mut self) {
        let Some(c) = self.check else { return };
        let now = Instant::now();
        if now < c.at {
            return;
        }
        self.check = None;
        if self.ring.capacity() <= self.start {
            return;
        }
        let quiet = self.received == c.received && self.ring.used() == 0 && self.ring.views_outstanding() == 0;
        if quiet && self.replace(self.start).is_some() {
            self.pressure = false;
            KernelRingStats::bump(&self.stats.shrinks, 1);
            return;
        }
        self.arm(now);
    }

    fn arm(&mut self, now: Instant) {
        let at = now + SHRINK_AFTER;
        self.check = Some(IdleCheck { at, received: self.received });
        if let Some((checks, key)) = &self.wake {
            checks.push(at, *key);
        }
    }
}

impl Drop for GrowingRing {
    fn drop(&mut self) {
        self.stats.ring_bytes.fetch_sub(self.ring.capacity() as u64, Ordering::Relaxed);
    }
}
