//! Two ports wired back to back in one process, with seeded fault injection.
//!
//! This is the wire for unit tests and the no-privilege demo: two engines talk through it
//! without root. Faults (loss, reordering, duplication, corruption, delay) are drawn from a
//! seeded generator per direction, so a failing run can be replayed exactly, and each fault
//! is counted so a test can compare what happened with what it asked for.
//!
//! Frames cross the wire without a copy (the receiver gets the sender's pool frame; it
//! returns to the sender's pool when dropped). Each direction holds at most
//! `link_capacity` frames: when it is full `tx_burst` takes fewer frames (backpressure).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::pool::{FramePool, PoolConfig};
use crate::port::{Port, PortCaps, PortError, PortStats};
use crate::region::{HugePolicy, LockPolicy, PinnedBudget};
use crate::Frame;

/// Fault rates for one direction (each a probability per frame, 0.0..=1.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Frame vanishes.
    pub loss: f64,
    /// Frame is held back and delivered after the next frame.
    pub reorder: f64,
    /// Frame is delivered twice.
    pub duplicate: f64,
    /// One random bit of the frame is flipped.
    pub corrupt: f64,
    /// Every frame is delivered no earlier than this after it was sent.
    pub delay: Duration,
    /// Seed of this direction's generator.
    pub seed: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig { loss: 0.0, reorder: 0.0, duplicate: 0.0, corrupt: 0.0, delay: Duration::ZERO, seed: 1 }
    }
}

impl FaultConfig {
    /// A perfect wire.
    pub fn none() -> Self {
        Self::default()
    }
}

/// How many of each fault one direction injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Frames offered to the wire.
    pub offered: u64,
    /// Frames dropped by the loss fault.
    pub lost: u64,
    /// Frames held back and delivered late.
    pub reordered: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Frames with a flipped bit.
    pub corrupted: u64,
    /// Duplications skipped because the sender's pool had no frame for the copy.
    pub duplicate_skipped: u64,
}

/// Configuration of a pair.
#[derive(Debug, Clone)]
pub struct MemPairConfig {
    /// Each side's frame pool.
    pub pool: PoolConfig,
    /// IP MTU reported by both ports.
    pub mtu: usize,
    /// Frames in flight per direction before `tx_burst` pushes back.
    pub link_capacity: usize,
    /// Faults on frames sent by side A.
    pub a_to_b: FaultConfig,
    /// Faults on frames sent by side B.
    pub b_to_a: FaultConfig,
    /// Hugepage policy for the pools' regions.
    pub huge: HugePolicy,
}

impl Default for MemPairConfig {
    fn default() -> Self {
        MemPairConfig {
            pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 4096 },
            mtu: 1500,
            link_capacity: 1024,
            a_to_b: FaultConfig::none(),
            b_to_a: FaultConfig::none(),
            huge: HugePolicy::Prefer,
        }
    }
}

/// splitmix64: tiny, seedable, good enough for fault draws (not for anything secret).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[derive(Debug)]
struct Wire {
    queue: VecDeque<(Instant, Frame)>,
    held: Option<Frame>,
    rng: Rng,
    faults: FaultConfig,
    counts: FaultCounts,
}

#[derive(Debug)]
struct Direction {
    wire: Mutex<Wire>,
    capacity: usize,
}

impl Direction {
    fn new(faults: FaultConfig, capacity: usize) -> Arc<Self> {
        Arc::new(Direction {
            wire: Mutex::new(Wire {
                queue: VecDeque::with_capacity(capacity),
                held: None,
                rng: Rng(faults.seed),
                faults,
                counts: FaultCounts::default(),
            }),
            capacity,
        })
    }
}

/// One end of an in-memory pair.
#[derive(Debug)]
pub struct MemPort {
    side: &'static str,
    pool: FramePool,
    out: Arc<Direction>,
    inp: Arc<Direction>,
    mtu: usize,
    mac: [u8; 6],
    stats: PortStats,
}

/// Creates two connected ports, A and B, each with a pool of its own.
pub fn mem_pair(cfg: &MemPairConfig, budget: &Arc<PinnedBudget>) -> Result<(MemPort, MemPort), PortError> {
    for f in [&cfg.a_to_b, &cfg.b_to_a] {
        for p in [f.loss, f.reorder, f.duplicate, f.corrupt] {
            if !(0.0..=1.0).contains(&p) {
                return Err(PortError::Unsupported(format!("fault probability {p} not in 0..=1")));
            }
        }
    }
    if cfg.link_capacity == 0 {
        return Err(PortError::Unsupported("link_capacity must be at least 1".into()));
    }
    let pool_a = FramePool::with_region_lock(cfg.pool, budget, cfg.huge, LockPolicy::IfAllowed)?;
    let pool_b = FramePool::with_region_lock(cfg.pool, budget, cfg.huge, LockPolicy::IfAllowed)?;
    let ab = Direction::new(cfg.a_to_b, cfg.link_capacity);
    let ba = Direction::new(cfg.b_to_a, cfg.link_capacity);
    let mk = |side, pool, out: &Arc<Direction>, inp: &Arc<Direction>, last| MemPort {
        side,
        pool,
        out: Arc::clone(out),
        inp: Arc::clone(inp),
        mtu: cfg.mtu,
        mac: [0x02, 0x00, 0x00, 0x00, 0x00, last],
        stats: PortStats::default(),
    };
    Ok((mk("a", pool_a, &ab, &ba, 0x0a), mk("b", pool_b, &ba, &ab, 0x0b)))
}

impl MemPort {
    /// Faults injected on frames this port sent.
    pub fn tx_faults(&self) -> FaultCounts {
        self.out.wire.lock().counts
    }

    /// A locally administered MAC address for this side (02:00:00:00:00:0a / :0b).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Frames in flight towards this port.
    pub fn rx_pending(&self) -> usize {
        let w = self.inp.wire.lock();
        w.queue.len() + usize::from(w.held.is_some())
    }

    /// Changes the faults applied to frames this port sends (e.g. to heal a link mid-test).
    pub fn set_tx_faults(&self, faults: FaultConfig) {
        let mut w = self.out.wire.lock();
        w.faults = faults;
        w.rng = Rng(faults.seed);
    }
}

impl Port for MemPort {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> Result<usize, PortError> {
        let now = Instant::now();
        let mut w = self.inp.wire.lock();
        // A held (reordered) frame with nothing behind it must not wait forever.
        if w.queue.is_empty() {
            if let Some(f) = w.held.take() {
                w.queue.push_back((now, f));
            }
        }
        let mut n = 0;
        while n < max {
            match w.queue.front() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            let (_, f) = w.queue.pop_front().expect("front checked");
            self.stats.rx_bytes += f.len() as u64;
            out.push(f);
            n += 1;
        }
        drop(w);
        self.stats.rx_frames += n as u64;
        Ok(n)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> Result<usize, PortError> {
        let now = Instant::now();
        let mut w = self.out.wire.lock();
        let room = self.out.capacity.saturating_sub(w.queue.len() + usize::from(w.held.is_some()));
        let n = room.min(frames.len());
        if n < frames.len() {
            self.stats.tx_full += 1;
        }
        let at = now + w.faults.delay;
        for mut f in frames.drain(..n) {
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += f.len() as u64;
            w.counts.offered += 1;
            let faults = w.faults;
            if w.rng.chance(faults.loss) {
                w.counts.lost += 1;
                continue;
            }
            if w.rng.chance(faults.corrupt) && !f.is_empty() {
                let i = w.rng.below(f.len());
                let bit = w.rng.below(8);
                f.data_mut()[i] ^= 1 << bit;
                w.counts.corrupted += 1;
            }
            let dup = if w.rng.chance(faults.duplicate) {
                match self.pool.alloc().map(|mut d| d.fill_from(f.data()).map(|()| d)) {
                    Ok(Ok(d)) => {
                        w.counts.duplicated += 1;
                        Some(d)
                    }
                    _ => {
                        w.counts.duplicate_skipped += 1;
                        None
                    }
                }
            } else {
                None
            };
            if w.held.is_none() && w.rng.chance(faults.reorder) {
                w.counts.reordered += 1;
                w.held = Some(f);
            } else {
                w.queue.push_back((at, f));
                if let Some(h) = w.held.take() {
                    w.queue.push_back((at, h));
                }
            }
            if let Some(d) = dup {
                w.queue.push_back((at, d));
            }
        }
        Ok(n)
    }

    fn caps(&self) -> PortCaps {
        PortCaps::in_process(format!("mem:{}", self.side), self.mtu, Some(self.mac))
    }

    fn stats(&self) -> PortStats {
        // the wire never discards on receive: lost frames are counted as faults instead
        self.stats
    }

    fn tx_pool(&self) -> &FramePool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_cfg(a_to_b: FaultConfig) -> MemPairConfig {
        MemPairConfig {
            pool: PoolConfig { frame_size: 2048, headroom: 64, frames: 1024 },
            link_capacity: 512,
            a_to_b,
            huge: HugePolicy::Never,
            ..MemPairConfig::default()
        }
    }

    fn send_numbered(a: &mut MemPort, from: u32, n: u32) {
        let mut v = Vec::new();
        for i in from..from + n {
            let mut f = a.tx_pool().alloc().unwrap();
            let mut payload = [0u8; 64];
            payload[..4].copy_from_slice(&i.to_be_bytes());
            f.fill_from(&payload).unwrap();
            v.push(f);
        }
        while !v.is_empty() {
            a.tx_burst(&mut v).unwrap();
        }
    }

    fn drain(b: &mut MemPort) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut v = Vec::new();
        while b.rx_burst(&mut v, 64).unwrap() > 0 {
            got.extend(v.drain(..).map(|f| f.data().to_vec()));
        }
        got
    }

    #[test]
    fn clean_wire_delivers_in_order_without_copy() {
        let (mut a, mut b) = mem_pair(&small_cfg(FaultConfig::none()), &PinnedBudget::unlimited()).unwrap();
        let mut f = a.tx_pool().alloc().unwrap();
        f.fill_from(b"frame").unwrap();
        let ptr = f.as_ptr();
        a.tx_burst(&mut vec![f]).unwrap();
        let mut v = Vec::new();
        assert_eq!(b.rx_burst(&mut v, 8).unwrap(), 1);
        assert_eq!(v[0].data(), b"frame");
        assert_eq!(v[0].as_ptr(), ptr, "frames cross the wire in place");
        drop(v);
        assert_eq!(a.tx_pool().outstanding(), 0);
        assert_eq!(b.rx_burst(&mut Vec::new(), 8).unwrap(), 0);
    }

    #[test]
    fn full_link_pushes_back_and_keeps_the_rest() {
        let mut cfg = small_cfg(FaultConfig::none());
        cfg.link_capacity = 4;
        let (mut a, mut b) = mem_pair(&cfg, &PinnedBudget::unlimited()).unwrap();
        let mut v = Vec::new();
        a.tx_pool().alloc_bulk(&mut v, 6).unwrap();
        for (i, f) in v.iter_mut().enumerate() {
            f.fill_from(&[i as u8]).unwrap();
        }
        assert_eq!(a.tx_burst(&mut v).unwrap(), 4);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].data(), &[4]);
        assert_eq!(a.stats().tx_full, 1);
        assert_eq!(drain(&mut b).len(), 4);
        assert_eq!(a.tx_burst(&mut v).unwrap(), 2);
        assert_eq!(drain(&mut b), vec![vec![4], vec![5]]);
    }

    fn run_faulty(seed: u64, total: u32) -> (FaultCounts, Vec<Vec<u8>>) {
        let faults =
            FaultConfig { loss: 0.01, reorder: 0.02, duplicate: 0.005, corrupt: 0.003, delay: Duration::ZERO, seed };
        let (mut a, mut b) = mem_pair(&small_cfg(faults), &PinnedBudget::unlimited()).unwrap();
        let mut got = Vec::new();
        let mut sent = 0;
        while sent < total {
            let n = 256.min(total - sent);
            send_numbered(&mut a, sent, n);
            sent += n;
            got.extend(drain(&mut b));
        }
        got.extend(drain(&mut b));
        (a.tx_faults(), got)
    }

    /// Within 5 standard deviations of a binomial(n, p) count.
    fn within(count: u64, n: u64, p: f64) -> bool {
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        (count as f64 - mean).abs() <= 5.0 * sd
    }

    #[test]
    fn fault_rates_over_a_million_frames_match_and_replay_with_the_same_seed() {
        let total = 1_000_000u32;
        let (c, got) = run_faulty(42, total);
        assert_eq!(c.offered, total as u64);
        assert!(within(c.lost, c.offered, 0.01), "lost {c:?}");
        let kept = c.offered - c.lost;
        assert!(within(c.corrupted, kept, 0.003), "corrupted {c:?}");
        assert!(within(c.duplicated + c.duplicate_skipped, kept, 0.005), "duplicated {c:?}");
        // reorder is only drawn while nothing is held back, so its base is slightly smaller
        assert!(within(c.reordered, kept - c.reordered, 0.02), "reordered {c:?}");
        assert_eq!(got.len() as u64, kept + c.duplicated, "every surviving frame arrives");
        let out_of_order = got.windows(2).filter(|w| w[0][..4] > w[1][..4]).count();
        assert!(out_of_order as u64 >= c.reordered / 2, "reordering is visible");

        let (c2, got2) = run_faulty(42, total);
        assert_eq!(c, c2, "same seed, same faults");
        assert_eq!(got, got2, "same seed, same frames");
        let (c3, _) = run_faulty(43, total);
        assert_ne!(c, c3, "another seed, other faults");
    }

    #[test]
    fn delay_holds_frames_until_due() {
        let faults = FaultConfig { delay: Duration::from_millis(30), ..FaultConfig::none() };
        let (mut a, mut b) = mem_pair(&small_cfg(faults), &PinnedBudget::unlimited()).unwrap();
        send_numbered(&mut a, 0, 3);
        assert_eq!(drain(&mut b).len(), 0);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(drain(&mut b).len(), 3);
    }

    #[test]
    fn bad_probabilities_are_refused() {
        let cfg = small_cfg(FaultConfig { loss: 1.5, ..FaultConfig::none() });
        assert!(matches!(mem_pair(&cfg, &PinnedBudget::unlimited()), Err(PortError::Unsupported(_))));
    }
}
