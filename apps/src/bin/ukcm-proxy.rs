//! `ukcm-proxy`: a Redis and memcached proxy that takes a twemproxy (nutcracker) config,
//! on ukcm.
//!
//! ```text
//! ukcm-proxy -c nutcracker.yml                                  # kernel sockets
//! ukcm-proxy -c nutcracker.yml --nic afxdp:eth0 --addr 10.0.0.2/24
//! ```
//!
//! One server per pool, on the pool's `listen` address (with a userspace stack transport:
//! one pool, on `--addr` and the listen port). Keys go where twemproxy puts them. A
//! `redis: true` pool speaks RESP; any other pool is memcached, and takes text and binary
//! clients on the same port (backends are spoken to in text; binary requests become meta
//! commands, so binary clients need memcached 1.6 or later behind the proxy). A bad config
//! is one line naming the config line, exit 2. SIGINT/SIGTERM print the final stats and
//! exit 0.
//!
//! Figures for operators, on kernel sockets on loopback unless `--stats-addr` says
//! otherwise: twemproxy's stats port (`-s`, default 22222: connect and read one JSON
//! document, the same field names as nutcracker's), Prometheus text at
//! `http://ADDR:PORT/metrics` with `--metrics-port`, and a summary line per pool every
//! `--stats-every` seconds.
//!
//! SIGHUP re-reads the file: servers added, removed or re-weighted and changed pool
//! settings apply without dropping a client connection (requests in flight finish on the
//! backend connections they started on); a file that does not load, or that changes what
//! needs a restart (pools, `listen`, `redis`, the `ukcm:` section), is refused in one log
//! line and the old configuration keeps running.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use ukcm::{signals, Forward, KernelTransport, PoolConfig, Reload, Server, StatsHandle};
use ukcm_apps::cli::{self, TransportSpec};
use ukcm_apps::proxy::config::{Config, Pool};
use ukcm_apps::proxy::endpoints::{Endpoint, Kind, Render};
use ukcm_apps::proxy::memcache::MemcacheForward;
use ukcm_apps::proxy::redis::RedisForward;
use ukcm_apps::proxy::reload::{self, ApplyPool};
use ukcm_apps::proxy::setup;
use ukcm_apps::proxy::stats::{self, PoolFigures};

const PROG: &str = "ukcm-proxy";

/// Redis and memcached proxy over ukcm, configured with a twemproxy YAML file.
#[derive(Debug, Parser)]
#[command(name = "ukcm-proxy", version)]
struct Args {
    /// twemproxy config file (pools, plus an optional `ukcm:` section)
    #[arg(short = 'c', long = "conf-file", value_name = "CONF")]
    conf: PathBuf,
    /// Transport: kernel | afxdp:IF[:QUEUE[,QUEUE...]] | tap:NAME | dpdk:ARGS (default: the
    /// config's `ukcm: transport`, else kernel)
    #[arg(long, value_name = "SPEC")]
    nic: Option<TransportSpec>,
    /// The userspace stack's address, IP[/PREFIX] (default: the config's `ukcm: address`)
    #[arg(long, value_name = "IP[/PREFIX]", value_parser = cli::addr_arg)]
    addr: Option<(IpAddr, Option<u8>)>,
    /// Default gateway of the userspace stack
    #[arg(long, value_name = "IP")]
    gateway: Option<IpAddr>,
    /// Print each pool's summary line and mux stats table every SECS seconds (0: only at exit)
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    stats_every: u64,
    /// twemproxy's stats port: one JSON document per connection (0: any free port). Without
    /// this option 22222 is tried and skipped with a warning when taken.
    #[arg(short = 's', long, value_name = "PORT")]
    stats_port: Option<u16>,
    /// Address of the stats and metrics ports
    #[arg(short = 'a', long, value_name = "IP", default_value = "127.0.0.1")]
    stats_addr: IpAddr,
    /// Serve Prometheus text at http://STATS_ADDR:PORT/metrics (0: any free port)
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,
}

/// The pools as the stats show them: the current config (names change on reload) and each
/// pool's running server.
type Shown = Arc<Mutex<Vec<(Pool, StatsHandle)>>>;

fn figures(pools: &Shown) -> Vec<PoolFigures> {
    pools.lock().iter().map(|(p, h)| PoolFigures::read(p, h)).collect()
}

/// twemproxy's default stats port.
const DEFAULT_STATS_PORT: u16 = 22222;

/// Starts the stats and metrics endpoints over the running pools.
fn endpoints(a: &Args, pools: &Shown) -> Result<Vec<Endpoint>, String> {
    let t0 = Instant::now();
    let figures = {
        let pools = Arc::clone(pools);
        move || figures(&pools)
    };
    let source = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let json: Render = {
        let figures = figures.clone();
        Arc::new(move || stats::twemproxy_json(&figures(), &source, t0.elapsed().as_secs(), SystemTime::now()))
    };
    let metrics: Render = Arc::new(move || stats::prometheus(&figures(), t0.elapsed().as_secs()));
    let mut out = Vec::new();
    let stats_at = SocketAddr::new(a.stats_addr, a.stats_port.unwrap_or(DEFAULT_STATS_PORT));
    match Endpoint::start(stats_at, Kind::StatsJson, json) {
        Ok(e) => {
            println!("{PROG}: stats on {} (twemproxy JSON)", e.local_addr());
            out.push(e);
        }
        Err(e) if a.stats_port.is_none() => {
            eprintln!("{PROG}: warning: no stats port: {stats_at}: {e} (choose one with --stats-port)");
        }
        Err(e) => return Err(format!("cannot listen on the stats port {stats_at}: {e}")),
    }
    if let Some(port) = a.metrics_port {
        let at = SocketAddr::new(a.stats_addr, port);
        let e = Endpoint::start(at, Kind::Metrics, metrics)
            .map_err(|e| format!("cannot listen on the metrics port {at}: {e}"))?;
        println!("{PROG}: metrics on http://{}/metrics (Prometheus)", e.local_addr());
        out.push(e);
    }
    Ok(out)
}

/// A pool's running server and what reconfigures it.
struct Running {
    server: Server,
    reload: Box<dyn ApplyPool>,
}

fn start(a: &Args, cfg: &Config) -> Result<Vec<Running>, String> {
    let nic = a.nic.clone().or_else(|| cfg.ukcm.transport.clone()).unwrap_or(TransportSpec::Kernel);
    nic.require_reachable_server()?;
    let stack = !matches!(nic, TransportSpec::Kernel);
    if stack && cfg.pools.len() != 1 {
        return Err(format!("{nic}: one pool per process on a userspace stack transport"));
    }
    let mut servers = Vec::new();
    for pool in &cfg.pools {
        let at = setup::listen_addr(pool).map_err(|e| e.to_string())?;
        let up = setup::pool_config(pool).map_err(|e| e.to_string())?;
        let (server, reload) = if pool.redis {
            serve(a, cfg, &nic, pool, at, up, RedisForward::new(pool))
        } else {
            serve(a, cfg, &nic, pool, at, up, MemcacheForward::new(pool))
        }
        .map_err(|e| format!("pool {}: {e}", pool.name))?;
        println!("{PROG}: pool {} listening on {} ({})", pool.name, server.local_addr(), server.describe());
        servers.push(Running { server, reload });
    }
    println!("{PROG}: {}", ukcm::memory::describe());
    Ok(servers)
}

/// One pool's server with its forwarder `fwd`, on the kernel or a userspace stack.
fn serve<W: Forward + Clone>(
    a: &Args,
    cfg: &Config,
    nic: &TransportSpec,
    pool: &Pool,
    at: SocketAddr,
    up: PoolConfig,
    fwd: W,
) -> Result<(Server, Box<dyn ApplyPool>), String>
where
    Reload<W>: ApplyPool,
{
    let (server, reload) = if !matches!(nic, TransportSpec::Kernel) {
        let addr = a.addr.or(cfg.ukcm.address).ok_or_else(|| format!("{nic} needs --addr IP/PREFIX"))?;
        let makes = ukcm::server::stack_engines(nic, addr, a.gateway, at.port()).map_err(|e| e.to_string())?;
        Server::forward_reloadable(makes, setup::server_config(pool), up, fwd)
    } else {
        let l = TcpListener::bind(at).map_err(|e| format!("cannot listen on {at}: {e}"))?;
        let t = KernelTransport::new(l).map_err(|e| e.to_string())?;
        Server::forward_reloadable(vec![move || Ok(t)], setup::server_config(pool), up, fwd)
    }
    .map_err(|e| e.to_string())?;
    Ok((server, Box::new(reload)))
}

/// SIGHUP: the config file again, whole or not at all (per pool, in file order).
fn reload(path: &std::path::Path, current: &mut Config, running: &[Running], shown: &Shown) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            return eprintln!("{PROG}: reload refused, the old configuration keeps running: {}: {e}", path.display())
        }
    };
    let checked = reload::check(current, &new).and_then(|()| {
        new.pools.iter().try_for_each(|p| setup::check(p).map_err(|e| e.to_string()))?;
        new.pools.iter().map(|p| setup::pool_config(p).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()
    });
    let ups = match checked {
        Ok(ups) => ups,
        Err(e) => {
            return eprintln!("{PROG}: reload refused, the old configuration keeps running: {}: {e}", path.display())
        }
    };
    for ((pool, up), (old, r)) in new.pools.iter().zip(ups).zip(current.pools.iter().zip(running)) {
        match r.reload.apply(pool, up) {
            Ok(engines) => {
                println!("{PROG}: reloaded pool {} ({engines} engines): {}", pool.name, reload::describe(old, pool))
            }
            Err(e) => {
                eprintln!("{PROG}: pool {}: reload not applied, its old configuration keeps running: {e}", pool.name)
            }
        }
    }
    for ((p, _), n) in shown.lock().iter_mut().zip(&new.pools) {
        *p = n.clone();
    }
    *current = new;
}

fn main() {
    ukcm::logging::init();
    let a: Args = cli::parse_or_exit(PROG);
    let mut cfg = Config::load(&a.conf).unwrap_or_else(|e| cli::fail(PROG, &e.to_string()));
    if cfg.pools.is_empty() {
        cli::fail(PROG, &format!("{}: no pools", a.conf.display()));
    }
    for pool in &cfg.pools {
        if let Err(e) = setup::check(pool) {
            cli::fail(PROG, &format!("{}: {e}", a.conf.display()));
        }
    }
    let stop =
        signals::stop_flag().unwrap_or_else(|e| cli::fail(PROG, &format!("cannot install signal handlers: {e}")));
    let hangup =
        signals::hangup_flag().unwrap_or_else(|e| cli::fail(PROG, &format!("cannot install signal handlers: {e}")));
    let running = start(&a, &cfg).unwrap_or_else(|e| {
        eprintln!("{PROG}: {e}");
        std::process::exit(1)
    });
    let servers: Vec<&Server> = running.iter().map(|r| &r.server).collect();
    let shown: Shown =
        Arc::new(Mutex::new(cfg.pools.iter().cloned().zip(servers.iter().map(|s| s.stats_handle())).collect()));
    let endpoints = endpoints(&a, &shown).unwrap_or_else(|e| {
        eprintln!("{PROG}: {e}");
        std::process::exit(1)
    });
    let _ = std::io::stdout().flush();
    let (t0, every) = (Instant::now(), Duration::from_secs(a.stats_every));
    let mut last = t0;
    while !stop.load(Ordering::Acquire) && !servers.iter().any(|s| s.engine_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if hangup.swap(false, Ordering::AcqRel) {
            reload(&a.conf, &mut cfg, &running, &shown);
            let _ = std::io::stdout().flush();
        }
        if a.stats_every > 0 && last.elapsed() >= every {
            last = Instant::now();
            for (f, s) in figures(&shown).iter().zip(&servers) {
                println!("[{:>5.0}s] {}\n{}", t0.elapsed().as_secs_f64(), stats::summary_line(f), s.snapshot());
                let status = s.transport_status();
                if !status.is_empty() {
                    println!("{status}");
                }
            }
            let _ = std::io::stdout().flush();
        }
    }
    drop(endpoints);
    for f in figures(&shown) {
        println!("{PROG}: {}", stats::summary_line(&f));
    }
    let mut failed = false;
    drop(servers);
    for r in running {
        match r.server.stop_with_status() {
            Ok((t, status)) if status.is_empty() => println!("{PROG}: final stats\n{t}"),
            Ok((t, status)) => println!("{PROG}: final stats\n{t}\n{status}"),
            Err(e) => {
                eprintln!("{PROG}: {e}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}
