//! `ukcm-demo`: the echo server (mux over kernel TCP on 127.0.0.1, an ephemeral port) and
//! the load generator in one process, for a few seconds; then a result table. No
//! privileges needed. Exit code 1 if any message was lost or corrupt.
//!
//! ```text
//! ukcm-demo               # 3 s
//! ukcm-demo --short       # 1 s (tests)
//! ukcm-demo --duration 10 --conns 8 --depth 32 --size 64-4096 --workers 2
//! ```

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ukcm_apps::cli::{self, SizeRange, SteerKind};
use ukcm_apps::echo::{EchoConfig, EchoServer, Mode};
use ukcm_apps::load::{self, Live, LoadConfig};
use ukcm_apps::report::{si, Machine};
use ukcm_apps::wire::Framing;

const PROG: &str = "ukcm-demo";

/// ukcm demo: echo server on the mux + verified load, in one process, over loopback.
#[derive(Debug, Parser)]
#[command(name = "ukcm-demo", version)]
struct Args {
    /// Seconds of load
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = cli::seconds)]
    duration: f64,
    /// One second of load (for tests)
    #[arg(long)]
    short: bool,
    /// Connections
    #[arg(long, default_value_t = 4, value_parser = cli::positive)]
    conns: usize,
    /// Outstanding messages per connection
    #[arg(long, default_value_t = 16, value_parser = cli::positive)]
    depth: usize,
    /// Message size, header included: BYTES or MIN-MAX
    #[arg(long, default_value = "64-1024")]
    size: SizeRange,
    /// Parser spec (thrift, kafka, dns, grpc, lenfield:…)
    #[arg(long, default_value = "thrift")]
    parser: String,
    /// Worker threads (default: run to completion on the engine thread)
    #[arg(long, value_parser = cli::positive)]
    workers: Option<usize>,
    /// Steering: batch | least-loaded | sticky | hash
    #[arg(long, default_value = "batch")]
    steer: SteerKind,
}

fn main() {
    let a: Args = cli::parse_or_exit(PROG);
    let framing = Framing::from_spec(&a.parser).unwrap_or_else(|e| cli::fail(PROG, &e));
    if let Err(e) = framing.check_sizes(a.size) {
        cli::fail(PROG, &e);
    }
    let duration = if a.short { 1.0 } else { a.duration };
    let machine = Machine::detect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| {
        eprintln!("{PROG}: cannot listen on 127.0.0.1: {e}");
        std::process::exit(1)
    });
    let ring = (4 * a.size.max).next_multiple_of(4096).max(64 * 1024);
    let mode = a.workers.map_or(Mode::RunToCompletion, Mode::Workers);
    let server = EchoServer::start(
        listener,
        EchoConfig {
            parser: a.parser.clone(),
            mode,
            steer: a.steer,
            hash_header: framing.header_len(),
            rx_ring: ring,
            tx_ring: (4 * ring).max(1 << 20),
            busy_poll: false,
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("{PROG}: cannot start the echo server: {e}");
        std::process::exit(1)
    });
    let addr = server.local_addr();
    println!("{PROG}: transport: kernel TCP over loopback (the userspace-stack path lands with the mux issue)");
    println!("{PROG}: echo server on {addr}: mux, parser {}, {mode}, steer {}", a.parser, a.steer);
    println!("{PROG}: load: {} conns, closed loop depth {}, size {}, {duration:.1}s", a.conns, a.depth, a.size);
    // Leave the cores to the engine: the load uses one thread when the machine is small.
    let threads = if machine.cores <= 2 { 1 } else { (machine.cores / 2).min(a.conns) };
    let cfg = LoadConfig {
        connect: addr,
        conns: a.conns,
        depth: a.depth,
        sizes: a.size,
        duration: Duration::from_secs_f64(duration),
        rate: None,
        framing,
        threads,
        drain: Duration::from_secs(2),
        progress: true,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let rep = load::run(&cfg, &stop, &Arc::new(Live::default()));
    let table = server.stop();
    let rep = rep.unwrap_or_else(|e| {
        eprintln!("{PROG}: load failed: {e}");
        std::process::exit(1)
    });
    let table = table.unwrap_or_else(|e| {
        eprintln!("{PROG}: echo server failed: {e}");
        std::process::exit(1)
    });
    let p = rep.percentiles();
    let t = &table.total;
    let copies = if t.rx_bytes > 0 { t.rx_copied_bytes as f64 / t.rx_bytes as f64 } else { f64::NAN };
    println!();
    println!("== result ({} cores, kernel {}) ==", machine.cores, machine.kernel);
    println!("transport                kernel TCP over loopback (the userspace-stack path lands with the mux issue)");
    println!("messages/s               {:.0}", rep.msgs_per_sec());
    println!("bytes/s                  {}B/s", si(rep.bytes_per_sec()));
    println!("messages sent/received   {} / {}", rep.sent, rep.received);
    println!("corrupt                  {}", rep.corrupt);
    println!("lost                     {}", rep.lost);
    println!("duplicate                {}", rep.duplicate);
    println!("out-of-order             {}", rep.out_of_order);
    println!(
        "latency us               p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us
    );
    println!(
        "mux copies/payload byte  {:.3} (rx_copied_bytes {} / rx_bytes {}; the kernel's recv into the pinned ring is not a mux copy)",
        copies, t.rx_copied_bytes, t.rx_bytes
    );
    println!();
    print!("{table}");
    for e in &rep.errors {
        eprintln!("{PROG}: {e}");
    }
    if !rep.clean() || t.rx_msgs == 0 {
        eprintln!(
            "{PROG}: FAILED: {} lost, {} corrupt, {} duplicate, {} connection errors",
            rep.lost,
            rep.corrupt,
            rep.duplicate,
            rep.errors.len()
        );
        std::process::exit(1);
    }
    println!("{PROG}: OK: every message came back whole and verified");
}
