//! `ukcm-echo`: an echo server on the mux. Every message the parser delineates is sent
//! back whole on the connection it came from.
//!
//! ```text
//! ukcm-echo --nic kernel --addr 127.0.0.1 --listen 7000 --parser thrift --workers 2
//! ukcm-echo --nic kernel --addr 127.0.0.1/8 --listen 7000 --parser thrift --rtc
//! ukcm-echo --nic afxdp:veth0:0 --addr 10.0.0.1/24 --listen 7000 --parser thrift --rtc --busy-poll
//! ukcm-echo --nic tap:ukcm0 --addr 10.0.0.1/24 --gateway 10.0.0.254 --listen 7000 --parser thrift
//! ```
//!
//! `--nic afxdp:IF` serves every queue of IF with one engine each (`afxdp:IF:0,2` those
//! queues); `--nic afxdp:…` and `--nic tap:NAME` run the mux over the userspace stack: a
//! `ukcm_stack::Engine` over the port, with `--addr` (IPv4 or IPv6, `/PREFIX`, default /24
//! or /64) and
//! `--gateway`, listening on `--listen`; `--nic kernel` runs it over kernel TCP sockets.
//!
//! Replies leave each connection in request order whatever worker answered first (the
//! server API's reply slots).
//!
//! `--rtc` runs to completion: the engine thread echoes between its polls (no worker
//! threads). `--steer hash` keys on FNV-1a 64 of the 16 bytes after the length header.
//! SIGINT/SIGTERM print the final stats table and exit 0.

// Doc comments here are clap's --help text (`[:QUEUE]` is a syntax, not a link).
#![allow(rustdoc::broken_intra_doc_links)]

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use ukcm::server::header_len_of;
use ukcm::signals;
use ukcm::{Model, ServerConfig};
use ukcm_apps::cli::{self, SteerKind, TransportSpec};
use ukcm_apps::echo;

const PROG: &str = "ukcm-echo";

/// Echo server over the ukcm mux (KCM-style message sockets).
#[derive(Debug, Parser)]
#[command(name = "ukcm-echo", version)]
struct Args {
    /// Transport: kernel | afxdp:IF[:QUEUE[,QUEUE...]] (all queues by default, one engine each) | tap:NAME | dpdk:ARGS (EAL arguments, with --features dpdk); mem (the in-memory pair) is refused: no client outside the process could reach it (ukcm-demo --nic mem runs it)
    #[arg(long, value_name = "SPEC")]
    nic: TransportSpec,
    /// Address, IP[/PREFIX]: the stack's own address for afxdp/tap (IPv4, default /24); the
    /// address to bind for kernel (the prefix is ignored there)
    #[arg(long, value_name = "IP[/PREFIX]", value_parser = cli::addr_arg)]
    addr: (IpAddr, Option<u8>),
    /// Default gateway of the userspace stack (accepted and unused with --nic kernel)
    #[arg(long, value_name = "IP")]
    gateway: Option<IpAddr>,
    /// TCP port (0: an ephemeral port, printed at start; kernel only)
    #[arg(long, value_name = "PORT")]
    listen: u16,
    /// Parser spec, e.g. thrift, lenfield:offset=0,width=4,endian=big, memcached
    #[arg(long, value_name = "SPEC", value_parser = cli::parser_spec)]
    parser: String,
    /// Worker threads, each with its own message socket (default 1)
    #[arg(long, value_name = "N", value_parser = cli::positive, conflicts_with = "rtc")]
    workers: Option<usize>,
    /// Run to completion: the engine thread echoes between polls, no worker threads
    #[arg(long)]
    rtc: bool,
    /// Steering: batch | least-loaded | sticky | hash
    #[arg(long, value_name = "POLICY", default_value = "batch")]
    steer: SteerKind,
    /// Print msgs/s and the mux stats table every SECS seconds (0: only at exit)
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    stats_every: u64,
    /// Pinned rx ring per connection in KiB (bounds the largest message)
    #[arg(long, value_name = "KIB", default_value_t = 256, value_parser = cli::positive)]
    ring_kib: usize,
    /// Never sleep when idle: spin, then yield the core (lowest latency, a busy core)
    #[arg(long)]
    busy_poll: bool,
}

fn main() {
    ukcm::logging::init();
    let a: Args = cli::parse_or_exit(PROG);
    if let Err(e) = a.nic.require_reachable_server() {
        cli::fail(PROG, &e);
    }
    let mode = if a.rtc { Model::RunToCompletion } else { Model::Workers(a.workers.unwrap_or(1)) };
    let cfg = ServerConfig {
        parser: a.parser.clone(),
        model: mode,
        steer: a.steer,
        hash_header: header_len_of(&a.parser),
        rx_ring: (a.ring_kib * 1024).next_multiple_of(4096),
        busy_poll: a.busy_poll,
        ..ServerConfig::default()
    };
    let stop =
        signals::stop_flag().unwrap_or_else(|e| cli::fail(PROG, &format!("cannot install signal handlers: {e}")));
    // One engine per NIC queue (`afxdp:IF` serves every queue of IF), one for kernel TCP.
    let started = ukcm::serve_spec(&a.nic, a.addr, a.gateway, a.listen, cfg, echo::echo);
    let server = started.unwrap_or_else(|e| {
        eprintln!("{PROG}: {e}");
        std::process::exit(1)
    });
    println!(
        "{PROG}: listening on {} (transport: {}; parser {}; {mode}; steer {})",
        server.local_addr(),
        server.describe(),
        a.parser,
        a.steer
    );
    println!("{PROG}: {}", ukcm::memory::describe());
    let _ = std::io::stdout().flush();
    let t0 = Instant::now();
    let mut last = (t0, 0u64);
    let every = Duration::from_secs(a.stats_every);
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        if server.engine_finished() {
            break; // the engine ended on its own: an error, reported by stop() below
        }
        if a.stats_every > 0 && last.0.elapsed() >= every {
            let t = server.snapshot();
            let now = Instant::now();
            let rate = (t.total.rx_msgs - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            println!(
                "[{:>5.0}s] {rate:.0} msgs/s, {} connections accepted\n{t}",
                t0.elapsed().as_secs_f64(),
                server.counters().accepted.load(Ordering::Relaxed)
            );
            let status = server.transport_status();
            if !status.is_empty() {
                println!("{status}");
            }
            let _ = std::io::stdout().flush();
            last = (now, t.total.rx_msgs);
        }
    }
    let accepted = server.counters().accepted.load(Ordering::Relaxed);
    let reply_failed = server.counters().reply_failed.load(Ordering::Relaxed);
    let lingered = server.counters().lingered.load(Ordering::Relaxed);
    let what = server.describe().to_owned();
    let elapsed = t0.elapsed().as_secs_f64();
    let result = server.stop_with_status();
    match result {
        Ok((t, status)) => {
            let copies =
                if t.total.rx_bytes > 0 { t.total.rx_copied_bytes as f64 / t.total.rx_bytes as f64 } else { 0.0 };
            println!(
                "{PROG}: final stats after {elapsed:.1}s ({accepted} connections accepted, {reply_failed} replies failed, {lingered} closed with replies unacknowledged; transport {what}; mux copies/payload byte {copies:.3})\n{t}"
            );
            if !status.is_empty() {
                println!("{status}");
            }
            let _ = std::io::stdout().flush();
        }
        Err(e) => {
            eprintln!("{PROG}: engine failed: {e}");
            std::process::exit(1)
        }
    }
}
