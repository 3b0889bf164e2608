//! `ukcm-load`: a load generator for `ukcm-echo` (or any echo server of framed messages).
//!
//! ```text
//! ukcm-load --nic kernel --connect 127.0.0.1:7000 --conns 8 --depth 16 --size 64-1024 --duration 10
//! ukcm-load --nic kernel --connect 127.0.0.1:7000 --conns 8 --depth 64 --size 256 --duration 10 --rate 100000 --json
//! ```
//!
//! Closed loop by default (`--depth` outstanding per connection); `--rate` makes it open
//! loop with latency measured from each message's intended send time. Every echoed byte
//! is verified; the exit code is 1 when a message was lost or corrupt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ukcm_apps::cli::{self, NicSpec, SizeRange};
use ukcm_apps::load::{self, Live, LoadConfig, LoadReport};
use ukcm_apps::report::{machine_json, percentiles_json, si, JsonObject, Machine};
use ukcm_apps::signals;
use ukcm_apps::wire::Framing;

const PROG: &str = "ukcm-load";

/// Load generator for the ukcm echo server: verified, framed messages; latency percentiles.
#[derive(Debug, Parser)]
#[command(name = "ukcm-load", version)]
struct Args {
    /// Transport: kernel (the load side uses plain kernel sockets)
    #[arg(long, value_name = "SPEC")]
    nic: NicSpec,
    /// Server address
    #[arg(long, value_name = "IP:PORT")]
    connect: SocketAddr,
    /// Connections
    #[arg(long, value_name = "C", default_value_t = 4, value_parser = cli::positive)]
    conns: usize,
    /// Messages outstanding per connection (closed loop), or their cap (open loop)
    #[arg(long, value_name = "D", default_value_t = 1, value_parser = cli::positive)]
    depth: usize,
    /// Message size in bytes, header included: BYTES or MIN-MAX
    #[arg(long, value_name = "BYTES|MIN-MAX", default_value = "128")]
    size: SizeRange,
    /// Seconds to send (fractions allowed)
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = cli::seconds)]
    duration: f64,
    /// Open loop: messages per second over all connections
    #[arg(long, value_name = "MSGS_PER_S", value_parser = cli::seconds)]
    rate: Option<f64>,
    /// Parser spec of the server (frames the messages): thrift, kafka, dns, grpc, lenfield:…
    #[arg(long, value_name = "SPEC", default_value = "thrift")]
    parser: String,
    /// Threads (default: one per core, at most one per connection)
    #[arg(long, value_name = "N", value_parser = cli::positive)]
    threads: Option<usize>,
    /// Print one JSON object on stdout instead of the table
    #[arg(long)]
    json: bool,
}

fn main() {
    let a: Args = cli::parse_or_exit(PROG);
    if let Err(e) = a.nic.require_kernel() {
        cli::fail(PROG, &e);
    }
    let framing = Framing::from_spec(&a.parser).unwrap_or_else(|e| cli::fail(PROG, &e));
    if let Err(e) = framing.check_sizes(a.size) {
        cli::fail(PROG, &e);
    }
    let stop =
        signals::stop_flag().unwrap_or_else(|e| cli::fail(PROG, &format!("cannot install signal handlers: {e}")));
    let machine = Machine::detect();
    let cfg = LoadConfig {
        connect: a.connect,
        conns: a.conns,
        depth: a.depth,
        sizes: a.size,
        duration: Duration::from_secs_f64(a.duration),
        rate: a.rate,
        framing,
        threads: a.threads.unwrap_or(machine.cores),
        drain: Duration::from_secs(2),
        progress: true,
    };
    let live = Arc::new(Live::default());
    let rep = match load::run(&cfg, &stop, &live) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{PROG}: {e}");
            std::process::exit(1)
        }
    };
    if a.json {
        println!("{}", json(&a, &cfg, &rep, &machine));
    } else {
        print!("{}", table(&cfg, &rep));
    }
    if !rep.clean() {
        eprintln!(
            "{PROG}: FAILED: {} lost, {} corrupt, {} duplicate, {} connection errors",
            rep.lost,
            rep.corrupt,
            rep.duplicate,
            rep.errors.len()
        );
        for e in &rep.errors {
            eprintln!("{PROG}: {e}");
        }
        std::process::exit(1);
    }
}

fn table(cfg: &LoadConfig, r: &LoadReport) -> String {
    let p = r.percentiles();
    let mode = match r.rate {
        Some(x) => format!("open loop at {} msgs/s (latency from intended send time), depth cap {}", si(x), cfg.depth),
        None => format!("closed loop, depth {}", cfg.depth),
    };
    format!(
        "load: {} conns to {}, {mode}, size {}, parser {}, {:.1}s\n\
         messages/s      {:>12.0}\n\
         bytes/s         {:>12}B/s\n\
         sent            {:>12}\n\
         received        {:>12}\n\
         corrupt         {:>12}\n\
         lost            {:>12}\n\
         duplicate       {:>12}\n\
         out-of-order    {:>12}\n\
         latency us      p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n",
        cfg.conns,
        cfg.connect,
        cfg.sizes,
        cfg.framing.spec(),
        r.elapsed.as_secs_f64(),
        r.msgs_per_sec(),
        si(r.bytes_per_sec()),
        r.sent,
        r.received,
        r.corrupt,
        r.lost,
        r.duplicate,
        r.out_of_order,
        p.p50_us,
        p.p90_us,
        p.p99_us,
        p.p999_us,
        p.max_us
    )
}

fn json(a: &Args, cfg: &LoadConfig, r: &LoadReport, m: &Machine) -> String {
    let mut o = JsonObject::new();
    o.str("tool", PROG)
        .str("nic", &a.nic.to_string())
        .str("connect", &cfg.connect.to_string())
        .int("conns", cfg.conns as u64)
        .int("depth", cfg.depth as u64)
        .int("size_min", cfg.sizes.min as u64)
        .int("size_max", cfg.sizes.max as u64)
        .str("parser", cfg.framing.spec())
        .str("mode", if r.rate.is_some() { "open" } else { "closed" })
        .num("rate_target", r.rate.unwrap_or(0.0))
        .num("duration_s", r.elapsed.as_secs_f64())
        .num("msgs_per_s", r.msgs_per_sec())
        .num("bytes_per_s", r.bytes_per_sec())
        .int("sent", r.sent)
        .int("received", r.received)
        .int("corrupt", r.corrupt)
        .int("lost", r.lost)
        .int("duplicate", r.duplicate)
        .int("out_of_order", r.out_of_order)
        .obj("latency_us", percentiles_json(&r.percentiles()))
        .strs("errors", &r.errors)
        .obj("machine", machine_json(m))
        .bool("ok", r.clean());
    o.finish()
}
