//! `ukcm-echo`: an echo server on the mux. Every message the parser delineates is sent
//! back whole on the connection it came from.
//!
//! ```text
//! ukcm-echo --nic kernel --addr 127.0.0.1 --listen 7000 --parser thrift --workers 2
//! ukcm-echo --nic kernel --addr 127.0.0.1/8 --listen 7000 --parser thrift --rtc
//! ```
//!
//! `--rtc` runs to completion: the engine thread echoes between its polls (no worker
//! threads). `--steer hash` keys on FNV-1a 64 of the 16 bytes after the length header.
//! SIGINT/SIGTERM print the final stats table and exit 0.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use ukcm_apps::cli::{self, NicSpec, SteerKind};
use ukcm_apps::echo::{header_len_of, EchoConfig, EchoServer, Mode};
use ukcm_apps::signals;

const PROG: &str = "ukcm-echo";

/// Echo server over the ukcm mux (KCM-style message sockets).
#[derive(Debug, Parser)]
#[command(name = "ukcm-echo", version)]
struct Args {
    /// Transport: kernel | afxdp:IF[:QUEUE] | tap:NAME | dpdk:ARGS (only kernel in this build)
    #[arg(long, value_name = "SPEC")]
    nic: NicSpec,
    /// Address to listen on, IP[/PREFIX] (the prefix is ignored by --nic kernel)
    #[arg(long, value_name = "IP[/PREFIX]", value_parser = cli::addr_arg)]
    addr: (IpAddr, Option<u8>),
    /// Default gateway (userspace-stack transports only; accepted and unused with --nic kernel)
    #[arg(long, value_name = "IP")]
    gateway: Option<IpAddr>,
    /// TCP port (0: an ephemeral port, printed at start)
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
}

fn main() {
    let a: Args = cli::parse_or_exit(PROG);
    if let Err(e) = a.nic.require_kernel() {
        cli::fail(PROG, &e);
    }
    let stop =
        signals::stop_flag().unwrap_or_else(|e| cli::fail(PROG, &format!("cannot install signal handlers: {e}")));
    let addr = SocketAddr::new(a.addr.0, a.listen);
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("{PROG}: cannot listen on {addr}: {e}");
        std::process::exit(1)
    });
    let mode = if a.rtc { Mode::RunToCompletion } else { Mode::Workers(a.workers.unwrap_or(1)) };
    let cfg = EchoConfig {
        parser: a.parser.clone(),
        mode,
        steer: a.steer,
        hash_header: header_len_of(&a.parser),
        rx_ring: a.ring_kib * 1024,
        ..EchoConfig::default()
    };
    let server = EchoServer::start(listener, cfg).unwrap_or_else(|e| {
        eprintln!("{PROG}: cannot start: {e}");
        std::process::exit(1)
    });
    println!(
        "{PROG}: listening on {} (transport: kernel TCP; parser {}; {mode}; steer {})",
        server.local_addr(),
        a.parser,
        a.steer
    );
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
            let _ = std::io::stdout().flush();
            last = (now, t.total.rx_msgs);
        }
    }
    let accepted = server.counters().accepted.load(Ordering::Relaxed);
    let reply_failed = server.counters().reply_failed.load(Ordering::Relaxed);
    match server.stop() {
        Ok(t) => {
            println!("{PROG}: final stats after {:.1}s ({accepted} connections accepted, {reply_failed} replies failed)\n{t}", t0.elapsed().as_secs_f64());
            let _ = std::io::stdout().flush();
        }
        Err(e) => {
            eprintln!("{PROG}: engine failed: {e}");
            std::process::exit(1)
        }
    }
}
