//! What an idle kernel-socket psock costs in ring memory: `CONNS` loopback connections each
//! exchange one 64-byte message and go quiet, once with fixed rings of the maximum (as
//! before rings grew) and once with rings that start at one page. Checks the rings' bytes
//! and prints them with this process's VmRSS / VmLck deltas (`--nocapture`; VmLck counts a
//! ring's pages twice, once per half of its mirror mapping):
//!
//!   cargo test -p ukcm-mux --test kernel_ring_memory -- --nocapture
//!
//! Its own test binary: the /proc figures are the whole process's.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{frame, loopback_pair};
use ukcm_mux::kernel::KernelPsock;
use ukcm_mux::kernel_ring::KernelRingStats;
use ukcm_mux::{Mux, MuxConfig};
use ukcm_nic::PinnedBudget;
use ukcm_parsers::LengthField;

const CONNS: usize = 200;
const MAX: usize = 512 * 1024;
const START: usize = 4096;

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Ring bytes, budget bytes, VmRSS and VmLck deltas (KiB) of `CONNS` idle psocks whose
/// rings start at `start`.
fn idle_cost(start: usize) -> (u64, u64, i64, i64) {
    let budget = PinnedBudget::unlimited();
    let stats = Arc::new(KernelRingStats::default());
    let (mut mux, sock) = Mux::<KernelPsock>::new(MuxConfig::default(), &PinnedBudget::unlimited()).unwrap();
    // After the mux: its socket's tx ring (4 MiB, mapped twice) is not a connection's.
    let (rss0, lck0) = (status_kib("VmRSS:"), status_kib("VmLck:"));
    let mut peers: Vec<TcpStream> = Vec::new();
    for _ in 0..CONNS {
        let (s, c) = loopback_pair();
        let io = KernelPsock::with_start(s, start, MAX, 1024, &budget).unwrap().count_into(&stats);
        mux.attach(io, Box::new(LengthField::thrift()));
        peers.push(c);
    }
    let m = frame(&[7u8; 60]);
    for c in &mut peers {
        c.write_all(&m).unwrap();
    }
    let mut got = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while got < CONNS {
        assert!(Instant::now() < end, "{got} of {CONNS} messages");
        mux.poll(Instant::now());
        while let Some(msg) = sock.try_recv() {
            assert_eq!(&msg[..], &m[..]);
            got += 1;
        }
    }
    // Views dropped; a few rounds reclaim them. Nothing more arrives: the psocks are idle.
    for _ in 0..10 {
        mux.poll(Instant::now());
    }
    let k = stats.snapshot();
    let (rss, lck) = (status_kib("VmRSS:"), status_kib("VmLck:"));
    let out = (k.ring_bytes, budget.used(), rss as i64 - rss0 as i64, lck as i64 - lck0 as i64);
    drop(mux);
    drop(peers);
    out
}

#[test]
fn an_idle_kernel_psock_holds_one_page_of_ring() {
    let n = CONNS as u64;
    let (fixed_ring, fixed_budget, fixed_rss, fixed_lck) = idle_cost(MAX);
    let (grow_ring, grow_budget, grow_rss, grow_lck) = idle_cost(START);
    println!("idle kernel psocks: {CONNS} connections, 64-byte message each, ring maximum {MAX} B");
    println!(
        "  fixed rings:   ring {} B/conn, budget {} B/conn, VmRSS {:.1} KiB/conn, VmLck {:.1} KiB/conn",
        fixed_ring / n,
        fixed_budget / n,
        fixed_rss as f64 / n as f64,
        fixed_lck as f64 / n as f64
    );
    println!(
        "  growing rings: ring {} B/conn, budget {} B/conn, VmRSS {:.1} KiB/conn, VmLck {:.1} KiB/conn",
        grow_ring / n,
        grow_budget / n,
        grow_rss as f64 / n as f64,
        grow_lck as f64 / n as f64
    );
    assert_eq!(fixed_ring, n * MAX as u64, "a fixed ring is the maximum");
    assert_eq!(grow_ring, n * START as u64, "an idle growing ring is one page");
    assert_eq!(grow_budget, grow_ring, "and the budget is charged that");
}
