//! `ukcm-load`: a load generator for `ukcm-echo` (or any echo server of framed messages).
//!
//! ```text
//! ukcm-load --nic kernel --connect 127.0.0.1:7000 --conns 8 --depth 16 --size 64-1024 --duration 10
//! ukcm-load --nic kernel --connect 127.0.0.1:7000 --conns 8 --depth 64 --size 256 --duration 10 --rate 100000 --json
//! ukcm-load --nic afxdp:veth1:0 --addr 10.0.0.3/24 --connect 10.0.0.1:7000 --conns 4 --depth 64 --size 64
//! ```
//!
//! Closed loop by default (`--depth` outstanding per connection); `--rate` makes it open
//! loop with latency measured from each message's intended send time. Every echoed byte
//! is verified; the exit code is 1 when a message was lost or corrupt.
//!
//! `--nic kernel` uses kernel sockets (`--threads` of them). `--nic afxdp:IF[:Q]` or
//! `tap:NAME` runs the load on its own ukcm engine over that port (`--addr` is its
//! address, IPv4 or IPv6; one thread, busy-polling; closed loop): both ends on ukcm. It
//! sends only on links without a default route, to servers on its own subnet (no gateway).

// Doc comments here are clap's --help text (`[:QUEUE]` is a syntax, not a link).
#![allow(rustdoc::broken_intra_doc_links)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ukcm::ports::{local_mac, open_port, stack_cidr};
use ukcm::signals;
use ukcm_apps::cli::{self, SizeRange, TransportSpec};
use ukcm_apps::cpu::CpuMeter;
use ukcm_apps::load::{self, Live, LoadConfig, LoadReport};
use ukcm_apps::report::{cdf_points, machine_json, percentiles_json, si, JsonObject, Machine};
use ukcm_apps::route::check_load_path;
use ukcm_apps::stack_load::{self, StackLoadConfig};
use ukcm_apps::wire::Framing;
use ukcm_nic::PinnedBudget;
use ukcm_stack::smoltcp::wire::IpEndpoint;

const PROG: &str = "ukcm-load";

/// Load generator for the ukcm echo server: verified, framed messages; latency percentiles.
#[derive(Debug, Parser)]
#[command(name = "ukcm-load", version)]
struct Args {
    /// Transport: kernel (kernel sockets) | afxdp:IF[:QUEUE] | tap:NAME (its own ukcm engine)
    #[arg(long, value_name = "SPEC")]
    nic: TransportSpec,
    /// The load's own address on --nic afxdp/tap, IP/PREFIX (IPv4, default /24, or IPv6, default /64; the server's family); not for kernel
    #[arg(long, value_name = "IP[/PREFIX]", value_parser = cli::addr_arg)]
    addr: Option<(IpAddr, Option<u8>)>,
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
    ukcm::logging::init();
    let a: Args = cli::parse_or_exit(PROG);
    if let Err(e) = a.nic.require_load() {
        cli::fail(PROG, &e);
    }
    let on_stack = a.nic != TransportSpec::Kernel;
    if on_stack {
        if a.addr.is_none() {
            cli::fail(PROG, &format!("--nic {}: needs --addr IP/PREFIX (the load generator's own address)", a.nic));
        }
        if a.rate.is_some() {
            cli::fail(PROG, &format!("--nic {}: --rate (open loop) runs over kernel sockets only; the load on the ukcm stack is closed loop", a.nic));
        }
        if a.threads.is_some_and(|t| t > 1) {
            cli::fail(
                PROG,
                &format!("--nic {}: the load on the ukcm stack runs on one engine thread (--threads 1)", a.nic),
            );
        }
    } else if a.addr.is_some() {
        cli::fail(PROG, "--addr is the load's own address on --nic afxdp/tap; kernel sockets use the kernel's");
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
    let cpu = CpuMeter::start();
    let result = if on_stack {
        let addr = a.addr.unwrap_or_else(|| unreachable!("checked above"));
        run_on_stack(&a.nic, addr, &cfg, &stop)
    } else {
        load::run(&cfg, &stop, &Arc::new(Live::default()))
    };
    // This process's CPU use over the run (connects and drain included): a client near 100 %
    // of its cores is the limit of what it measures.
    let load_cpu = cpu.busy();
    let rep = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{PROG}: {e}");
            std::process::exit(1)
        }
    };
    if a.json {
        println!("{}", json(&a, &cfg, &rep, &machine, load_cpu));
    } else {
        print!("{}", table(&cfg, &rep, load_cpu));
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

/// The load on its own ukcm engine over `nic` (AF_XDP or TAP), on this thread.
fn run_on_stack(
    nic: &TransportSpec,
    addr: (IpAddr, Option<u8>),
    cfg: &LoadConfig,
    stop: &AtomicBool,
) -> std::io::Result<LoadReport> {
    let cidr = stack_cidr(addr).unwrap_or_else(|e| cli::fail(PROG, &e));
    let server = cfg.connect.ip();
    let ifname = match nic {
        TransportSpec::Afxdp { ifname, .. } => ifname.as_str(),
        TransportSpec::Tap { name } => name.as_str(),
        _ => unreachable!("require_load and on_stack leave AF_XDP and TAP"),
    };
    if let Err(e) = check_load_path(ifname, IpAddr::from(cidr.address()), cidr.prefix_len(), server) {
        cli::fail(PROG, &format!("--nic {nic}: {e}"));
    }
    let budget = PinnedBudget::unlimited();
    // The load runs one engine, on the first queue named (queue 0 for `afxdp:IF`).
    let queue = match nic {
        TransportSpec::Afxdp { queues, .. } => queues.first(),
        _ => 0,
    };
    let (port, mac) = open_port(nic, queue, &budget).map_err(std::io::Error::other)?;
    // stderr: stdout may be the JSON report.
    eprintln!("{PROG}: {}", ukcm::memory::describe());
    // TAP ports get a made-up MAC: not the one ukcm-echo's TAP uses.
    let mac = mac.map(|_| local_mac(2));
    let mut engine = stack_load::client_engine(port, mac, cidr)?;
    let scfg = StackLoadConfig {
        server: IpEndpoint::from(cfg.connect),
        conns: cfg.conns,
        depth: cfg.depth,
        sizes: cfg.sizes,
        duration: cfg.duration,
        framing: cfg.framing.clone(),
        drain: cfg.drain,
        progress: cfg.progress,
    };
    let rep = stack_load::run(&mut engine, &scfg, stop);
    // stderr, like the memory line: stdout may be the JSON report.
    eprintln!("{PROG}: load engine: dropped frames by reason: {}", engine.note_port_drops());
    rep
}

fn table(cfg: &LoadConfig, r: &LoadReport, load_cpu: f64) -> String {
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
         latency us      p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n\
         load cpu        {:>11.0}% of a core (this process, whole run)\n",
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
        p.max_us,
        load_cpu * 100.0
    )
}

fn json(a: &Args, cfg: &LoadConfig, r: &LoadReport, m: &Machine, load_cpu: f64) -> String {
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
        .num("load_cpu_pct", load_cpu * 100.0)
        .int("sent", r.sent)
        .int("received", r.received)
        .int("corrupt", r.corrupt)
        .int("lost", r.lost)
        .int("duplicate", r.duplicate)
        .int("out_of_order", r.out_of_order)
        .obj("latency_us", percentiles_json(&r.percentiles()))
        .pairs("latency_cdf_us", &cdf_points(&r.latency))
        .strs("errors", &r.errors)
        .obj("machine", machine_json(m))
        .bool("ok", r.clean());
    o.finish()
}
