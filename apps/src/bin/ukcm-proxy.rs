//! `ukcm-proxy`: a Redis proxy that takes a twemproxy (nutcracker) config, on ukcm.
//!
//! ```text
//! ukcm-proxy -c nutcracker.yml                                  # kernel sockets
//! ukcm-proxy -c nutcracker.yml --nic afxdp:eth0 --addr 10.0.0.2/24
//! ```
//!
//! One server per `redis: true` pool, on the pool's `listen` address (with a userspace
//! stack transport: one pool, on `--addr` and the listen port). Keys go where twemproxy
//! puts them. A bad config is one line naming the config line, exit 2. SIGINT/SIGTERM
//! print the final stats and exit 0.

use std::io::Write;
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use ukcm::{signals, KernelTransport, Server};
use ukcm_apps::cli::{self, TransportSpec};
use ukcm_apps::proxy::config::Config;
use ukcm_apps::proxy::redis::RedisForward;
use ukcm_apps::proxy::setup;

const PROG: &str = "ukcm-proxy";

/// Redis proxy over ukcm, configured with a twemproxy YAML file.
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
    /// Print the mux stats table every SECS seconds (0: only at exit)
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    stats_every: u64,
}

fn start(a: &Args, cfg: &Config) -> Result<Vec<Server>, String> {
    let nic = a.nic.clone().or_else(|| cfg.ukcm.transport.clone()).unwrap_or(TransportSpec::Kernel);
    let stack = !matches!(nic, TransportSpec::Kernel);
    if stack && cfg.pools.len() != 1 {
        return Err(format!("{nic}: one pool per process on a userspace stack transport"));
    }
    let mut servers = Vec::new();
    for pool in &cfg.pools {
        let at = setup::listen_addr(pool).map_err(|e| e.to_string())?;
        let up = setup::pool_config(pool).map_err(|e| e.to_string())?;
        let fwd = RedisForward::new(pool);
        let server = if stack {
            let addr = a.addr.or(cfg.ukcm.address).ok_or_else(|| format!("{nic} needs --addr IP/PREFIX"))?;
            let makes = ukcm::server::stack_engines(&nic, addr, a.gateway, at.port()).map_err(|e| e.to_string())?;
            Server::forward_engines(makes, setup::server_config(), up, fwd)
        } else {
            let l = TcpListener::bind(at).map_err(|e| format!("pool {}: cannot listen on {at}: {e}", pool.name))?;
            let t = KernelTransport::new(l).map_err(|e| e.to_string())?;
            Server::forward(move || Ok(t), setup::server_config(), up, fwd)
        }
        .map_err(|e| format!("pool {}: {e}", pool.name))?;
        println!("{PROG}: pool {} listening on {} ({})", pool.name, server.local_addr(), server.describe());
        servers.push(server);
    }
    println!("{PROG}: {}", ukcm::memory::describe());
    Ok(servers)
}

fn main() {
    ukcm::logging::init();
    let a: Args = cli::parse_or_exit(PROG);
    let cfg = Config::load(&a.conf).unwrap_or_else(|e| cli::fail(PROG, &e.to_string()));
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
    let servers = start(&a, &cfg).unwrap_or_else(|e| {
        eprintln!("{PROG}: {e}");
        std::process::exit(1)
    });
    let _ = std::io::stdout().flush();
    let (t0, every) = (Instant::now(), Duration::from_secs(a.stats_every));
    let mut last = t0;
    while !stop.load(Ordering::Acquire) && !servers.iter().any(Server::engine_finished) {
        std::thread::sleep(Duration::from_millis(50));
        if a.stats_every > 0 && last.elapsed() >= every {
            last = Instant::now();
            for s in &servers {
                println!("[{:>5.0}s] {}\n{}", t0.elapsed().as_secs_f64(), s.local_addr(), s.snapshot());
                let status = s.transport_status();
                if !status.is_empty() {
                    println!("{status}");
                }
            }
            let _ = std::io::stdout().flush();
        }
    }
    let mut failed = false;
    for s in servers {
        match s.stop_with_status() {
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
