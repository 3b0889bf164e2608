//! `ukcm-demo`: the echo server on the mux and a verified load generator, for a few
//! seconds; then a result table. Exit code 1 if any message was lost or corrupt.
//!
//! * default (`--nic auto`): as root, `afxdp` (falling back to `tap` when AF_XDP cannot be
//!   set up); otherwise `mem`. The first lines say which it chose and why.
//! * `--nic mem` (no privileges): two userspace stacks in ONE process over the in-memory
//!   port pair — a server engine with the mux echo, and a client engine whose load
//!   generator speaks over the stack (`Engine::connect` / `send` / `recv`).
//! * `--nic kernel`: the mux over kernel TCP on 127.0.0.1, load over kernel sockets.
//! * `--nic afxdp` (root): a throwaway namespace + veth (`TestNet`); the echo serves on
//!   AF_XDP on the host end, `ukcm-load` runs inside the namespace (whose only route is the
//!   veth's subnet) and connects to the ukcm address over kernel TCP.
//! * `--nic tap` (root): the same namespace, but the echo serves on a TAP device created
//!   inside it (its own /24 there, the kernel side of the TAP addressed in the namespace);
//!   `ukcm-load` runs in the namespace.
//!
//! ```text
//! ukcm-demo               # 3 s: as root over AF_XDP on a veth, else the in-memory pair
//! ukcm-demo --short       # 1 s (tests)
//! ukcm-demo --nic kernel --duration 10 --conns 8 --depth 32 --size 64-4096 --workers 2
//! ```

// Doc comments here are clap's --help text (`[:QUEUE]` is a syntax, not a link).
#![allow(rustdoc::broken_intra_doc_links)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ukcm::ports::local_mac;
use ukcm::StackTransport;
use ukcm::{Model, Server, ServerConfig};
use ukcm_apps::cli::{self, SizeRange, SteerKind};
use ukcm_apps::echo;
use ukcm_apps::load::{self, Live, LoadConfig, LoadReport};
use ukcm_apps::report::{new_histogram, si, Machine, Percentiles};
use ukcm_apps::stack_load::{self, StackLoadConfig};
use ukcm_apps::wire::Framing;
use ukcm_mux::StatsTable;
use ukcm_nic::afxdp::{AfXdpConfig, AfXdpPort};
use ukcm_nic::tap::{TapConfig, TapPort};
use ukcm_nic::testnet::{is_root, TestNet, TestNetOptions};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};
use ukcm_stack::smoltcp::wire::{IpEndpoint, Ipv4Address, Ipv4Cidr};

const PROG: &str = "ukcm-demo";
const MEM_SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PORT: u16 = 7000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DemoNic {
    /// As root: afxdp (tap if AF_XDP cannot be set up); otherwise mem.
    Auto,
    /// Two ukcm stacks over the in-memory pair, one process, no privileges.
    Mem,
    /// The mux over kernel TCP on loopback.
    Kernel,
    /// AF_XDP on a throwaway veth, load from the kernel in its namespace (root).
    Afxdp,
    /// A TAP device in a throwaway namespace, load from the kernel there (root).
    Tap,
}

/// ukcm demo: echo server on the mux + verified load, in one run.
#[derive(Debug, Parser)]
#[command(name = "ukcm-demo", version)]
struct Args {
    /// Transport: auto (root: afxdp, else mem) | mem (two ukcm stacks, in-memory pair) |
    /// kernel (loopback) | afxdp (root, veth) | tap (root, TAP in a namespace)
    #[arg(long, value_enum, default_value = "auto")]
    nic: DemoNic,
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

fn die(msg: &str) -> ! {
    eprintln!("{PROG}: {msg}");
    std::process::exit(1)
}

/// Transport, load report, mux stats, latency (when measured elsewhere), and the engines'
/// counters lines (dropped frames by reason).
type Outcome = (String, LoadReport, StatsTable, Option<Percentiles>, String);

fn main() {
    ukcm::logging::init();
    let a: Args = cli::parse_or_exit(PROG);
    let framing = Framing::from_spec(&a.parser).unwrap_or_else(|e| cli::fail(PROG, &e));
    if let Err(e) = framing.check_sizes(a.size) {
        cli::fail(PROG, &e);
    }
    let duration = if a.short { 1.0 } else { a.duration };
    let machine = Machine::detect();
    let ring = (4 * a.size.max).next_multiple_of(4096).max(64 * 1024);
    let mode = a.workers.map_or(Model::RunToCompletion, Model::Workers);
    let echo_cfg = ServerConfig {
        parser: a.parser.clone(),
        model: mode,
        steer: a.steer,
        hash_header: framing.header_len(),
        rx_ring: ring,
        tx_ring: (4 * ring).max(1 << 20),
        busy_poll: false,
        ..ServerConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let nic = match a.nic {
        DemoNic::Auto if is_root() => {
            println!("{PROG}: running as root: AF_XDP on a throwaway veth, load from the kernel side (TAP if AF_XDP cannot be set up; --nic mem for the in-memory pair)");
            DemoNic::Auto
        }
        DemoNic::Auto => {
            println!("{PROG}: not root: two ukcm stacks over the in-memory pair (as root the demo runs on AF_XDP)");
            DemoNic::Mem
        }
        n => n,
    };
    let (transport, rep, table, pct, engines) = match nic {
        DemoNic::Mem => run_mem(&a, framing, echo_cfg, duration, &stop),
        DemoNic::Kernel => run_kernel(&a, framing, echo_cfg, duration, &machine, &stop),
        DemoNic::Afxdp => run_in_namespace(&a, echo_cfg, duration, Want::Afxdp),
        DemoNic::Tap => run_in_namespace(&a, echo_cfg, duration, Want::Tap),
        DemoNic::Auto => run_in_namespace(&a, echo_cfg, duration, Want::AfxdpOrTap),
    };
    let p = pct.unwrap_or_else(|| rep.percentiles());
    let t = &table.total;
    let copies = if t.rx_bytes > 0 { t.rx_copied_bytes as f64 / t.rx_bytes as f64 } else { f64::NAN };
    println!();
    println!("== result ({} cores, kernel {}) ==", machine.cores, machine.kernel);
    println!("transport                {transport}");
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
        "mux copies/payload byte  {:.3} (measured: rx_copied_bytes {} / rx_bytes {}; on receive the only copy is the TCP stack's own: smoltcp frame→ring, or the kernel's recv into the pinned ring)",
        copies, t.rx_copied_bytes, t.rx_bytes
    );
    let tx_copies = if t.tx_bytes > 0 { t.tx_copied_bytes as f64 / t.tx_bytes as f64 } else { f64::NAN };
    println!(
        "mux tx copies/byte       {tx_copies:.3} (measured: tx_copied_bytes {} / tx_bytes {}; a run-to-completion reply next on the wire is built in smoltcp's tx ring, no copy; a worker's message, a reply that did not fit or one held behind a deferred answer is copied into it once more)",
        t.tx_copied_bytes, t.tx_bytes
    );
    println!();
    print!("{table}");
    if !engines.is_empty() {
        println!("{engines}");
    }
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

fn print_plan(transport: &str, server: &str, a: &Args, mode: Model, duration: f64) {
    println!("{PROG}: transport: {transport}");
    println!("{PROG}: echo server on {server}: mux, parser {}, {mode}, steer {}", a.parser, a.steer);
    println!("{PROG}: load: {} conns, closed loop depth {}, size {}, {duration:.1}s", a.conns, a.depth, a.size);
    println!("{PROG}: {}", ukcm::memory::describe());
}

/// Two engines over the in-memory pair: the echo server on the `mem` transport (its own
/// thread), the client (stack load generator) on the pair's other end, on this one.
fn run_mem(a: &Args, framing: Framing, cfg: ServerConfig, duration: f64, stop: &Arc<AtomicBool>) -> Outcome {
    let mode = cfg.model;
    let at = (IpAddr::V4(MEM_SERVER), Some(24));
    let mut server = ukcm::serve_spec(&ukcm::TransportSpec::Mem, at, None, PORT, cfg, echo::echo)
        .unwrap_or_else(|e| die(&format!("cannot start the echo server: {e}")));
    let peer = server.take_mem_peer().unwrap_or_else(|| die("the mem server kept no peer"));
    let transport = "ukcm stack ↔ ukcm stack over the in-memory pair".to_owned();
    print_plan(&transport, &server.local_addr().to_string(), a, mode, duration);
    let to = IpEndpoint::from(peer.server);
    let mut client = stack_load::client_engine(peer.port, None, peer.addr).unwrap_or_else(|e| die(&e.to_string()));
    let lcfg = StackLoadConfig {
        server: to,
        conns: a.conns,
        depth: a.depth,
        sizes: a.size,
        duration: Duration::from_secs_f64(duration),
        framing,
        drain: Duration::from_secs(2),
        progress: true,
    };
    let rep = stack_load::run(&mut client, &lcfg, stop);
    let stopped = server.stop_with_status();
    let client_drops = client.note_port_drops();
    drop(client);
    let rep = rep.unwrap_or_else(|e| die(&format!("load failed: {e}")));
    let (table, status) = stopped.unwrap_or_else(|e| die(&format!("echo server failed: {e}")));
    let engines = format!("echo server {status}\nload engine: dropped frames by reason: {client_drops}");
    (transport, rep, table, None, engines)
}

fn run_kernel(
    a: &Args,
    framing: Framing,
    cfg: ServerConfig,
    duration: f64,
    machine: &Machine,
    stop: &Arc<AtomicBool>,
) -> Outcome {
    let listener =
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| die(&format!("cannot listen on 127.0.0.1: {e}")));
    let mode = cfg.model;
    let server = echo::start(listener, cfg).unwrap_or_else(|e| die(&format!("cannot start the echo server: {e}")));
    let addr = server.local_addr();
    let transport = "mux over kernel TCP ↔ kernel TCP, loopback".to_owned();
    print_plan(&transport, &addr.to_string(), a, mode, duration);
    // Leave the cores to the engine: the load uses one thread when the machine is small.
    let threads = if machine.cores <= 2 { 1 } else { (machine.cores / 2).min(a.conns) };
    let lcfg = LoadConfig {
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
    let rep = load::run(&lcfg, stop, &Arc::new(Live::default()));
    let table = server.stop();
    let rep = rep.unwrap_or_else(|e| die(&format!("load failed: {e}")));
    let table = table.unwrap_or_else(|e| die(&format!("echo server failed: {e}")));
    (transport, rep, table, None, String::new())
}

/// What `run_in_namespace` serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Afxdp,
    Tap,
    /// AF_XDP, and TAP if AF_XDP cannot be set up.
    AfxdpOrTap,
}

/// The echo on AF_XDP on the host end of the veth, at the TestNet's ukcm address.
fn start_afxdp(net: &TestNet, cfg: ServerConfig) -> std::io::Result<(Server, Ipv4Addr)> {
    let (ifname, ip, prefix) = (net.host_if.clone(), net.ukcm_ip, net.prefix);
    let server = echo::start_with(
        move || {
            let xcfg = AfXdpConfig {
                pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 8192 },
                ..AfXdpConfig::new(&ifname, 0)
            };
            let port = AfXdpPort::open(&xcfg, &PinnedBudget::unlimited(), HugePolicy::Prefer)
                .map_err(|e| std::io::Error::other(format!("AF_XDP on {ifname}: {e}")))?;
            StackTransport::new(port, None, Ipv4Cidr::new(Ipv4Address::from(ip.octets()), prefix), None, PORT, 1024)
        },
        cfg,
    )?;
    Ok((server, ip))
}

/// The echo on a TAP device created inside the TestNet's namespace, on a /24 of its own
/// there (10.214.N.0/24, N from the TestNet's subnet): ukcm at .1, the TAP's kernel side
/// at .2. The namespace's only routes are its veth's and this TAP's subnets.
fn start_tap(net: &TestNet, cfg: ServerConfig) -> std::io::Result<(Server, Ipv4Addr)> {
    let n = net.ukcm_ip.octets()[2];
    let (ukcm, kernel) = (Ipv4Addr::new(10, 214, n, 1), Ipv4Addr::new(10, 214, n, 2));
    // The veth names are unique per TestNet: the TAP takes the same stem.
    let name = format!("{}t", net.host_if.trim_end_matches('a'));
    let tcfg = TapConfig {
        name: name.clone(),
        pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 4096 },
        ..TapConfig::default()
    };
    // Created from a thread inside the namespace, so the device lives there.
    let port = net
        .in_peer(move || TapPort::open(&tcfg, &PinnedBudget::unlimited(), HugePolicy::Prefer))?
        .map_err(|e| std::io::Error::other(format!("TAP {name} in {}: {e}", net.ns)))?;
    net.peer_ip_cmd(&["addr", "add", &format!("{kernel}/24"), "dev", &name])?;
    net.peer_ip_cmd(&["link", "set", &name, "up"])?;
    let server = echo::start_with(
        move || {
            StackTransport::new(
                port,
                Some(local_mac(1)),
                Ipv4Cidr::new(Ipv4Address::from(ukcm.octets()), 24),
                None,
                PORT,
                1024,
            )
        },
        cfg,
    )?;
    Ok((server, ukcm))
}

/// A throwaway namespace (TestNet); the echo on AF_XDP (its veth) or TAP (inside it);
/// `ukcm-load` over kernel sockets inside the namespace.
fn run_in_namespace(a: &Args, cfg: ServerConfig, duration: f64, want: Want) -> Outcome {
    if !is_root() {
        die("--nic afxdp and --nic tap need root (namespaces, XDP, TAP); --nic mem runs without privileges");
    }
    let net = TestNet::new("demo", &TestNetOptions::default()).unwrap_or_else(|e| die(&format!("test network: {e}")));
    let mode = cfg.model;
    let started = match want {
        Want::Afxdp | Want::AfxdpOrTap => match start_afxdp(&net, cfg.clone()) {
            Ok(x) => Ok(x),
            Err(e) if want == Want::AfxdpOrTap => {
                println!("{PROG}: AF_XDP could not be set up ({e}); falling back to TAP");
                start_tap(&net, cfg)
            }
            Err(e) => Err(e),
        },
        Want::Tap => start_tap(&net, cfg),
    };
    let (server, ip) = started.unwrap_or_else(|e| die(&format!("cannot start the echo server: {e}")));
    let transport = format!("{} ↔ kernel TCP in namespace {}", server.describe(), net.ns);
    let addr = SocketAddr::new(IpAddr::V4(ip), PORT);
    print_plan(&transport, &addr.to_string(), a, mode, duration);
    let load_bin = std::env::current_exe()
        .map(|p| p.with_file_name("ukcm-load"))
        .unwrap_or_else(|e| die(&format!("cannot find ukcm-load: {e}")));
    // The namespace has no route but its own subnets; the load can reach nothing else.
    let out = net
        .peer_command(&load_bin.to_string_lossy())
        .args(["--nic", "kernel", "--connect", &addr.to_string(), "--parser", &a.parser])
        .args(["--conns", &a.conns.to_string(), "--depth", &a.depth.to_string(), "--size", &a.size.to_string()])
        .args(["--duration", &duration.to_string(), "--json"])
        .output()
        .unwrap_or_else(|e| die(&format!("cannot run ukcm-load in {}: {e}", net.ns)));
    let (table, status) = server.stop_with_status().unwrap_or_else(|e| die(&format!("echo server failed: {e}")));
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rep, pct) = report_from_json(&json)
        .unwrap_or_else(|| die(&format!("ukcm-load gave no result: {}", String::from_utf8_lossy(&out.stderr).trim())));
    (transport, rep, table, Some(pct), format!("echo server {status}"))
}

/// The numbers the demo prints, from `ukcm-load --json`, and its latency percentiles.
fn report_from_json(json: &str) -> Option<(LoadReport, Percentiles)> {
    let num = |k: &str| -> Option<f64> {
        let pat = format!("\"{k}\":");
        let at = json.find(&pat)? + pat.len();
        json[at..].split([',', '}']).next()?.trim().parse().ok()
    };
    let secs = num("duration_s")?;
    let pct = Percentiles {
        count: num("count")? as u64,
        mean_us: num("mean")?,
        p50_us: num("p50")?,
        p90_us: num("p90")?,
        p99_us: num("p99")?,
        p999_us: num("p99_9")?,
        max_us: num("max")?,
    };
    let rep = LoadReport {
        elapsed: Duration::from_secs_f64(secs.max(0.001)),
        sent: num("sent")? as u64,
        received: num("received")? as u64,
        tx_bytes: 0,
        rx_bytes: (num("bytes_per_s")? * secs) as u64,
        corrupt: num("corrupt")? as u64,
        lost: num("lost")? as u64,
        duplicate: num("duplicate")? as u64,
        out_of_order: num("out_of_order")? as u64,
        latency: new_histogram(),
        errors: Vec::new(),
        rate: None,
    };
    Some((rep, pct))
}
