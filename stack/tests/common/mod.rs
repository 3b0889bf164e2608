//! Shared helpers: two engines over the in-memory pair, driven by a manual clock.
#![allow(dead_code)]

use std::sync::Arc;

use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};
use ukcm_nic::{mem_pair, FaultConfig, HugePolicy, MemPairConfig, MemPort, PinnedBudget, PoolConfig};
use ukcm_stack::{Clock, ConnId, Engine, EngineConfig, Event, ManualClock, TcpOptions};

pub const A4: Ipv4Address = Ipv4Address::new(10, 7, 0, 1);
pub const B4: Ipv4Address = Ipv4Address::new(10, 7, 0, 2);
pub const A6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const B6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

pub struct Pair {
    pub a: Engine<MemPort>,
    pub b: Engine<MemPort>,
    pub clock: ManualClock,
}

pub fn cfg(v4: Ipv4Address, v6: Ipv6Address, budget: Arc<PinnedBudget>) -> EngineConfig {
    EngineConfig {
        ipv4: Some(Ipv4Cidr::new(v4, 24)),
        ipv6: Some(Ipv6Cidr::new(v6, 64)),
        budget,
        ..EngineConfig::default()
    }
}

pub fn pair_with(
    ab: FaultConfig,
    ba: FaultConfig,
    budget_a: Arc<PinnedBudget>,
    budget_b: Arc<PinnedBudget>,
    frames: usize,
) -> Pair {
    let pc = MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames },
        link_capacity: 1024,
        a_to_b: ab,
        b_to_a: ba,
        huge: HugePolicy::Never,
        ..MemPairConfig::default()
    };
    let (pa, pb) = mem_pair(&pc, &PinnedBudget::unlimited()).unwrap();
    let clock = ManualClock::new();
    let a = Engine::with_clock(pa, cfg(A4, A6, budget_a), Box::new(clock.clone())).unwrap();
    let b = Engine::with_clock(pb, cfg(B4, B6, budget_b), Box::new(clock.clone())).unwrap();
    Pair { a, b, clock }
}

pub fn pair() -> Pair {
    pair_with(FaultConfig::none(), FaultConfig::none(), PinnedBudget::unlimited(), PinnedBudget::unlimited(), 4096)
}

impl Pair {
    /// Polls both engines; when neither has work, jumps the clock to the next timer
    /// (at least 1 ms). Stops when `done` says so; panics after `max_steps`.
    pub fn drive(
        &mut self,
        max_steps: usize,
        mut done: impl FnMut(&mut Engine<MemPort>, &mut Engine<MemPort>) -> bool,
    ) {
        for _ in 0..max_steps {
            let wa = self.a.poll().unwrap();
            let wb = self.b.poll().unwrap();
            if done(&mut self.a, &mut self.b) {
                return;
            }
            if !wa && !wb {
                let now = self.clock.now();
                let next = [self.a.poll_at(), self.b.poll_at()].into_iter().flatten().min();
                match next {
                    Some(t) if t > now => self.clock.advance_to(t),
                    _ => self.clock.advance(Duration::from_millis(1)),
                }
            }
        }
        panic!("not done after {max_steps} steps; a: {:?}\nb: {:?}", self.a.stats(), self.b.stats());
    }

    /// Lets time pass with both engines polled.
    pub fn settle(&mut self, d: Duration) {
        let end = self.clock.now() + d;
        let clock = self.clock.clone();
        self.drive(10_000_000, |_, _| clock.now() >= end);
    }
}

pub fn ep4(ip: Ipv4Address, port: u16) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(ip), port)
}

pub fn ep6(ip: Ipv6Address, port: u16) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv6(ip), port)
}

/// Deterministic test bytes: position `i` of stream `seed`.
pub fn pattern(seed: u64, i: u64) -> u8 {
    let x = (i / 8).wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut z = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 31;
    (z >> ((i % 8) * 8)) as u8
}

pub fn opts(buf: usize) -> TcpOptions {
    TcpOptions { rx_buf: buf, tx_buf: buf, ..TcpOptions::default() }
}

/// A stream each way on one connection: sends `n` pattern bytes, checks what arrives.
#[derive(Debug, Default)]
pub struct Stream {
    pub sent: u64,
    pub got: u64,
}

impl Stream {
    pub fn pump(&mut self, e: &mut Engine<MemPort>, c: ConnId, seed_out: u64, seed_in: u64, n: u64) {
        let sent = &mut self.sent;
        let got = &mut self.got;
        e.with_tcp(c, |s| {
            while *sent < n && s.can_send() {
                let k = s
                    .send(|buf| {
                        let k = buf.len().min((n - *sent) as usize);
                        for (j, b) in buf[..k].iter_mut().enumerate() {
                            *b = pattern(seed_out, *sent + j as u64);
                        }
                        (k, k)
                    })
                    .unwrap();
                *sent += k as u64;
                if k == 0 {
                    break;
                }
            }
            while s.can_recv() {
                let k = s
                    .recv(|buf| {
                        for (j, b) in buf.iter().enumerate() {
                            assert_eq!(*b, pattern(seed_in, *got + j as u64), "byte {} differs", *got + j as u64);
                        }
                        (buf.len(), buf.len())
                    })
                    .unwrap();
                *got += k as u64;
            }
        })
        .unwrap();
    }
}

pub fn drain_events(e: &mut Engine<MemPort>) -> Vec<Event> {
    e.events().collect()
}
