//! Per-packet cost vs. number of established connections (issue item 5).
//!
//! Two engines over the in-memory pair, both polled on this thread. N connections are
//! established (N = 1, 100, 1,000, 10,000); one of them carries 64-byte request/response
//! round trips, the others stay idle. Goal: the rate at 10,000 is at most 10% below 1.
//!
//! `cargo bench -p ukcm-stack --bench conn_scaling` (criterion, time per round trip), and
//! a summary line per N with round trips/s and frames/s from a fixed run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr};
use ukcm_nic::{mem_pair, HugePolicy, MemPairConfig, MemPort, PinnedBudget, PoolConfig, Port};
use ukcm_stack::{smoltcp::socket::tcp, ConnId, Engine, EngineConfig, TcpOptions};

struct Setup {
    client: Engine<MemPort>,
    server: Engine<MemPort>,
    active: ConnId,
    ready: Vec<ConnId>,
}

/// Raw connections read with `with_tcp`, never lent: no in-place ring (10,000 of them a side
/// would also be 40,000 mirror mappings, near the default `vm.max_map_count`).
fn opts() -> TcpOptions {
    TcpOptions { nagle: false, rx_buf: 2048, tx_buf: 2048, inplace_rx: false, ..TcpOptions::default() }
}

fn setup(n: usize) -> Setup {
    let pc = MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 8192 },
        link_capacity: 2048,
        huge: HugePolicy::Never,
        ..MemPairConfig::default()
    };
    let (pa, pb) = mem_pair(&pc, &PinnedBudget::unlimited()).unwrap();
    let cfg = |ip| EngineConfig {
        ipv4: Some(Ipv4Cidr::new(ip, 16)),
        default_tcp: opts(),
        max_frames_per_poll: 64,
        ..EngineConfig::default()
    };
    let mut client = Engine::new(pa, cfg(Ipv4Address::new(10, 9, 0, 1))).unwrap();
    let mut server = Engine::new(pb, cfg(Ipv4Address::new(10, 9, 0, 2))).unwrap();
    server.listen(7, 1024).unwrap();
    let remote = IpEndpoint::new(IpAddress::v4(10, 9, 0, 2), 7);
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        let batch = (n - conns.len()).min(512);
        let new: Vec<ConnId> = (0..batch).map(|_| client.connect(remote).unwrap()).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            client.poll().unwrap();
            server.poll().unwrap();
            while server.accept(7).is_some() {}
            if new.iter().all(|c| client.info(*c).is_ok_and(|i| i.state == tcp::State::Established)) {
                break;
            }
            assert!(Instant::now() < deadline, "setup stalled at {} connections", conns.len());
        }
        conns.extend(new);
    }
    // let the last ACKs land and timers go quiet
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(50) {
        client.poll().unwrap();
        server.poll().unwrap();
        while server.accept(7).is_some() {}
    }
    let mut ready = Vec::new();
    server.drain_ready(&mut ready);
    client.drain_ready(&mut ready);
    ready.clear();
    Setup { client, server, active: conns[0], ready }
}

impl Setup {
    /// One 64-byte request and its 64-byte response.
    fn round_trip(&mut self) {
        let req = [0x5au8; 64];
        assert_eq!(self.client.send(self.active, &req).unwrap(), 64);
        let mut got = 0;
        let mut buf = [0u8; 128];
        while got < 64 {
            self.client.poll().unwrap();
            self.server.poll().unwrap();
            // server: run-to-completion echo of whatever is ready
            self.server.drain_ready(&mut self.ready);
            for c in self.ready.drain(..) {
                let _ = self.server.with_tcp(c, |s| {
                    let mut b = [0u8; 128];
                    let n = s.recv_slice(&mut b).unwrap_or(0);
                    if n > 0 {
                        s.send_slice(&b[..n]).unwrap();
                    }
                });
            }
            self.client.poll().unwrap();
            got += self.client.recv(self.active, &mut buf).unwrap();
        }
        black_box(&buf);
    }

    fn frames(&self) -> u64 {
        self.client.port().stats().tx_frames + self.server.port().stats().tx_frames
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rr64");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let ns: Vec<usize> = std::env::var("UKCM_BENCH_CONNS")
        .ok()
        .map(|v| v.split(',').map(|x| x.trim().parse().expect("UKCM_BENCH_CONNS: numbers")).collect())
        .unwrap_or_else(|| vec![1, 100, 1_000, 10_000]);
    let mut setups: Vec<(usize, Setup)> = ns.iter().map(|&n| (n, setup(n))).collect();
    let mut seen = std::collections::HashSet::new();
    for (n, s) in setups.iter_mut() {
        if seen.insert(*n) {
            g.bench_function(format!("{n}_conns"), |b| b.iter(|| s.round_trip()));
        }
    }
    g.finish();
    // Fixed runs for the summary, interleaved across N (7 rounds, each measuring every N
    // for 10,000 round trips) so that load changes on a shared machine hit all N alike;
    // the best round per N is reported.
    let rounds = 10_000;
    let reps = 7;
    let mut best = vec![f64::MAX; setups.len()];
    let before: Vec<_> = setups.iter().map(|(_, s)| (s.frames(), s.client.stats(), s.server.stats())).collect();
    for _ in 0..reps {
        for (k, (_, s)) in setups.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..rounds {
                s.round_trip();
            }
            best[k] = best[k].min(t.elapsed().as_secs_f64());
        }
    }
    let mut summary = Vec::new();
    for (k, (n, s)) in setups.iter().enumerate() {
        let (f0, c0, s0) = &before[k];
        let total = (reps * rounds) as f64;
        let (c1, s1) = (s.client.stats(), s.server.stats());
        let per = |x: u64| x as f64 / total;
        eprintln!(
            "  n={n}: per round trip: egress polls client {:.2} server {:.2}, timer fires client {:.2} server {:.2}, polls client {:.2}",
            per(c1.egress_polls - c0.egress_polls),
            per(s1.egress_polls - s0.egress_polls),
            per(c1.timer_fires - c0.timer_fires),
            per(s1.timer_fires - s0.timer_fires),
            per(c1.polls - c0.polls),
        );
        let frames_per_rt = (s.frames() - f0) as f64 / total;
        let rt_per_s = rounds as f64 / best[k];
        summary.push((*n, rt_per_s, rt_per_s * frames_per_rt, frames_per_rt));
    }
    eprintln!("\nconn_scaling summary (64-byte request/response, one active connection):");
    for (n, rr, pps, per) in &summary {
        eprintln!(
            "  {n:>6} established: {rr:>10.0} round trips/s  {pps:>10.0} frames/s  ({per:.2} frames per round trip)"
        );
    }
    let base = summary[0].1;
    for (n, rr, ..) in &summary[1..] {
        eprintln!("  {n:>6} vs 1: {:+.1}%", (rr / base - 1.0) * 100.0);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
