//! `ukcm-bench`: the system benchmark. One run, one topology, the same load generator and
//! the same CPU pinning for every system; writes `latest.md`, `latest.json` (with the
//! machine) and `latency-cdf.svg` to `--out`.
//!
//! Topology (root): a `TestNet` — a fresh namespace holding the kernel peer end of a veth,
//! whose only route is the veth's /24. `ukcm-load` always runs inside that namespace
//! (`ip netns exec NS`), so it can reach nothing but the veth. The systems:
//!
//! 1. `ukcm-echo --nic afxdp:HOST:0` on the host end (no kernel address on it), worker
//!    thread mode and run-to-completion mode, load over kernel sockets;
//! 2. both ends on ukcm: `ukcm-load --nic afxdp:PEER:0` (its own engine on the namespace's
//!    veth end, at the subnet's .3) against `ukcm-echo` on AF_XDP, run-to-completion;
//! 3. then the host end gets the ukcm address as a kernel address, and the kernel-TCP
//!    servers listen on it, so their traffic crosses the same veth: `ukcm-echo --nic
//!    kernel` (the mux over kernel TCP, run-to-completion), `epoll-echo` (plain epoll: with
//!    the kernel-socket load, the kernel ↔ kernel row), `tokio-echo` (tokio +
//!    `LengthDelimitedCodec`).
//!
//! Without root there is no namespace: the kernel-TCP rows run over loopback (127.0.0.1)
//! and the AF_XDP rows are skipped, which the output says.
//!
//! Every server runs under `taskset -c 1`, the load under `taskset -c 0` (the same for
//! every system). Ratios are msgs/s against `epoll-echo` at the same size and depth.
//! ukcm-echo runs with `--busy-poll` (spin, then yield; never sleeps) in every mode.

// Doc comments here are clap's --help text (`[:QUEUE]` is a syntax, not a link).
#![allow(rustdoc::broken_intra_doc_links)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Parser;
use ukcm_apps::bench::{markdown, plot, to_json, BenchRun, LoadCheck, Row, System};
use ukcm_apps::cli;
use ukcm_apps::cpu::pid_cpu_time;
use ukcm_apps::report::{parse_pairs, Machine};
use ukcm_nic::testnet::{is_root, run, TestNet, TestNetOptions};

const PROG: &str = "ukcm-bench";
const SERVER_CPU: &str = "1";
const LOAD_CPU: &str = "0";

/// System benchmark: ukcm on AF_XDP vs the mux on kernel TCP vs epoll vs tokio.
#[derive(Debug, Parser)]
#[command(name = "ukcm-bench", version)]
struct Args {
    /// One size (1 KiB), depth 64, 3 s per run (development)
    #[arg(long)]
    quick: bool,
    /// Seconds of load per run (default 5; 3 with --quick)
    #[arg(long, value_parser = cli::seconds)]
    duration: Option<f64>,
    /// Output folder for latest.md and latest.json
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Folder of the binaries (default: this program's)
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Connections
    #[arg(long, default_value_t = 4, value_parser = cli::positive)]
    conns: usize,
    /// Run every server and load under SCHED_FIFO at this priority (chrt -f), the same for
    /// all: other work on a shared machine then cannot preempt them (RT throttling still
    /// leaves the rest of the machine 5% of each core)
    #[arg(long, value_name = "PRIO", value_parser = clap::value_parser!(u8).range(1..=99))]
    rt: Option<u8>,
    /// Only these sizes, comma-separated (default 64,1024,65536)
    #[arg(long, value_delimiter = ',', value_parser = cli::positive)]
    sizes: Vec<usize>,
    /// Only these depths, comma-separated (default 1,64)
    #[arg(long, value_delimiter = ',', value_parser = cli::positive)]
    depths: Vec<usize>,
    /// Only these systems, comma-separated: ukcm_afxdp_workers, ukcm_afxdp_rtc,
    /// ukcm_both_ends, mux_kernel_rtc, epoll, tokio (default all)
    #[arg(long, value_delimiter = ',', value_parser = system_key)]
    systems: Vec<String>,
    /// IP MTU of the veth, set on both ends before any server starts, so the AF_XDP rows and
    /// the kernel rows cross the same link (AF_XDP picks 4096-byte UMEM frames past 1778;
    /// veth takes native XDP up to 3506)
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(576..=65535))]
    mtu: u32,
    /// Skip running the plain C epoll client against epoll-echo (the check that ukcm-load is
    /// not the limit of the kernel rows)
    #[arg(long)]
    no_load_check: bool,
}

fn system_key(s: &str) -> Result<String, String> {
    System::from_key(s).map(|_| s.to_owned()).ok_or_else(|| {
        let all: Vec<&str> = System::ALL.iter().map(|s| s.key()).collect();
        format!("unknown system {s:?}; expected one of {}", all.join(", "))
    })
}

struct Server {
    pid: u32,
    child: Option<Child>,
    rest: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    fn start(bin: &Path, args: &[String]) -> Result<Server, String> {
        let mut child = pinned(None, SERVER_CPU)
            .arg(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut err = child.stderr.take().expect("piped");
        let mut first = String::new();
        let _ = out.read_line(&mut first);
        if !first.contains("listening on") {
            let mut e = String::new();
            let _ = err.read_to_string(&mut e);
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} did not start: {}{}", bin.display(), first.trim(), e.trim()));
        }
        let rest = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            let mut e = String::new();
            let _ = err.read_to_string(&mut e);
            s + &e
        });
        Ok(Server { pid: child.id(), child: Some(child), rest: Some(rest) })
    }

    /// SIGINT, wait (bounded), and the rest of its output.
    fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        self.rest.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn json_num(json: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat)? + pat.len();
    json[at..].split([',', '}']).next()?.trim().parse().ok()
}

/// `--rt`: the SCHED_FIFO priority every server and load runs at (set once in main).
static RT_PRIO: OnceLock<Option<u8>> = OnceLock::new();

/// `[ip netns exec NS] [chrt -f PRIO] taskset -c CPU`, ready for the program and its args.
fn pinned(net: Option<&TestNet>, cpu: &str) -> Command {
    let mut words: Vec<String> = Vec::new();
    if let Some(n) = net {
        words.extend(["ip".into(), "netns".into(), "exec".into(), n.ns.clone()]);
    }
    if let Some(p) = RT_PRIO.get().copied().flatten() {
        words.extend(["chrt".into(), "-f".into(), p.to_string()]);
    }
    words.extend(["taskset".into(), "-c".into(), cpu.into()]);
    let mut c = Command::new(&words[0]);
    c.args(&words[1..]);
    c
}

/// The load generator's own address when it runs on ukcm: the subnet's .3 (the kernel peer
/// is .2, the server .1).
fn ukcm_load_addr(n: &TestNet) -> String {
    let o = n.peer_ip.octets();
    format!("{}.{}.{}.3/{}", o[0], o[1], o[2], n.prefix)
}

/// Runs the load against `connect` (inside the namespace when there is one); with
/// `on_ukcm`, on its own ukcm engine on the namespace's veth end.
#[allow(clippy::too_many_arguments)]
fn load(
    bins: &Path,
    net: Option<&TestNet>,
    on_ukcm: bool,
    connect: &str,
    conns: usize,
    size: usize,
    depth: usize,
    secs: f64,
) -> Result<String, String> {
    let load = bins.join("ukcm-load");
    let mut cmd = pinned(net, LOAD_CPU);
    cmd.arg(&load);
    match (on_ukcm, net) {
        (true, Some(n)) => {
            cmd.args(["--nic", &format!("afxdp:{}:0", n.peer_if), "--addr", &ukcm_load_addr(n)]);
        }
        (true, None) => return Err("the load on ukcm needs the namespace (root)".into()),
        (false, _) => {
            cmd.args(["--nic", "kernel", "--threads", "1"]);
        }
    }
    cmd.args(["--connect", connect, "--parser", "thrift", "--json"])
        .args(["--conns", &conns.to_string(), "--depth", &depth.to_string(), "--size", &size.to_string()])
        .args(["--duration", &secs.to_string()]);
    let out = cmd.output().map_err(|e| format!("run {}: {e}", load.display()))?;
    let json = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !json.starts_with('{') {
        return Err(format!("ukcm-load: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(json)
}

/// The plain C epoll client, compiled from the copy built into this program.
const EPOLL_CLIENT_C: &str = include_str!("../../bench-clients/epoll-client.c");

/// Compiles the C client with `cc -O2` into a temporary folder.
fn build_c_client() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("ukcm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (src, bin) = (dir.join("epoll-client.c"), dir.join("epoll-client"));
    std::fs::write(&src, EPOLL_CLIENT_C).map_err(|e| format!("{}: {e}", src.display()))?;
    let out = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| format!("cc: {e} (install gcc)"))?;
    if !out.status.success() {
        return Err(format!("cc failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(bin)
}

/// For every clean epoll-echo row: the C epoll client against a fresh epoll-echo, same
/// size, depth, connections and core as ukcm-load had.
fn check_load(
    bins: &Path,
    net: Option<&TestNet>,
    server_ip: &str,
    rows: &[Row],
    conns: usize,
    secs: f64,
    notes: &mut Vec<String>,
) -> Vec<LoadCheck> {
    let client = match build_c_client() {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("load generator check skipped: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (k, r) in rows.iter().filter(|r| r.system == System::Epoll && r.ok).enumerate() {
        let port = 7300 + k as u16;
        eprintln!("{PROG}: load check: C epoll client, size {} depth {} ...", r.size, r.depth);
        let c_client = Server::start(&bins.join("epoll-echo"), &["--listen".into(), format!("{server_ip}:{port}")])
            .and_then(|server| {
                let mut cmd = pinned(net, LOAD_CPU);
                cmd.arg(&client).args(["-c", &format!("{server_ip}:{port}")]);
                if let Some(n) = net {
                    cmd.args(["-I", &n.peer_if]);
                }
                cmd.args(["-n", &conns.to_string(), "-d", &r.depth.to_string(), "-s", &r.size.to_string()])
                    .args(["-t", &secs.to_string()]);
                let res = cmd.output().map_err(|e| format!("run {}: {e}", client.display()));
                server.stop();
                let o = res?;
                let json = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                match (o.status.success(), json_num(&json, "msgs_per_s"), json_num(&json, "cpu_pct")) {
                    (true, Some(m), Some(c)) => Ok((m, c)),
                    _ => Err(format!("epoll-client: {}{}", json, String::from_utf8_lossy(&o.stderr).trim())),
                }
            });
        if let Ok((m, _)) = &c_client {
            eprintln!("{PROG}:        {m:.0} msgs/s (ukcm-load: {:.0})", r.msgs_per_s);
        }
        out.push(LoadCheck {
            size: r.size,
            depth: r.depth,
            ukcm_load: (r.msgs_per_s, r.load_cpu.unwrap_or(f64::NAN)),
            c_client,
        });
    }
    let _ = std::fs::remove_dir_all(client.parent().unwrap_or(Path::new("/nonexistent")));
    out
}

/// "largest frames rx N B tx M B" from a ukcm server's last status line: the frames its
/// port really carried (shows whether `--mtu` was used).
fn largest_frames(server_output: &str) -> Option<String> {
    let line = server_output.lines().rev().find(|l| l.contains("largest frames rx "))?;
    let at = line.find("largest frames rx ")?;
    let text = line[at..].split(';').next()?.trim();
    Some(format!("{text} (the server's port)"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    ukcm::logging::init();
    let a: Args = cli::parse_or_exit(PROG);
    let bins = a.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default()
    });
    for b in ["ukcm-echo", "ukcm-load", "epoll-echo", "tokio-echo"] {
        if !bins.join(b).exists() {
            cli::fail(
                PROG,
                &format!("{} not found (build the apps: cargo build --release -p ukcm-apps)", bins.join(b).display()),
            );
        }
    }
    let _ = RT_PRIO.set(a.rt);
    let secs = a.duration.unwrap_or(if a.quick { 3.0 } else { 5.0 });
    let sizes: Vec<usize> = match (&a.sizes[..], a.quick) {
        ([], true) => vec![1024],
        ([], false) => vec![64, 1024, 65536],
        (v, _) => v.to_vec(),
    };
    let depths: Vec<usize> = match (&a.depths[..], a.quick) {
        ([], true) => vec![64],
        ([], false) => vec![1, 64],
        (v, _) => v.to_vec(),
    };
    let wanted = |s: System| a.systems.is_empty() || a.systems.iter().any(|k| k == s.key());
    let machine = Machine::detect();
    let root = is_root();
    let mut notes: Vec<String> = Vec::new();
    notes.push(format!(
        "cores pinned with taskset: every server on cpu {SERVER_CPU}, the load generator on cpu {LOAD_CPU}{}",
        match a.rt {
            Some(p) => format!("; every server and load under SCHED_FIFO priority {p} (chrt -f {p}), so other processes on the machine cannot preempt them"),
            None => String::new(),
        }
    ));
    notes.push(format!(
        "load: ukcm-load (kernel sockets, 1 thread; for the both-ends rows its own ukcm engine on AF_XDP, 1 thread), {} connections, closed loop, thrift framing, {secs} s per run, every echo verified",
        a.conns
    ));
    let load_start = loadavg();
    let net = if root {
        match TestNet::new("bench", &TestNetOptions { mtu: a.mtu, ..TestNetOptions::default() }) {
            Ok(n) => Some(n),
            Err(e) => {
                notes.push(format!("could not create the veth/namespace ({e}): kernel rows over loopback only"));
                None
            }
        }
    } else {
        notes.push("not root: no namespace, no AF_XDP — only the kernel-TCP rows, over loopback (127.0.0.1)".into());
        if a.mtu != 1500 {
            notes.push(format!("--mtu {} not applied: loopback keeps its own MTU", a.mtu));
        }
        None
    };
    if let Some(n) = &net {
        notes.push(format!(
            "topology: veth {} (host) <-> {} in namespace {} (kernel peer {}, only route {}/{}), MTU {} on both ends; ukcm-load runs in the namespace",
            n.host_if, n.peer_if, n.ns, n.peer_ip, n.ukcm_ip, n.prefix, a.mtu
        ));
        notes.push(format!(
            "AF_XDP rows: ukcm on the host end over AF_XDP at {} (no kernel address on the host end); kernel rows: the host end then gets {}/{} as a kernel address and the servers listen there, so all traffic crosses the same veth",
            n.ukcm_ip, n.ukcm_ip, n.prefix
        ));
    }
    eprintln!("{PROG}: {}", notes.join(&format!("\n{PROG}: ")));
    let server_ip = net.as_ref().map_or("127.0.0.1".to_owned(), |n| n.ukcm_ip.to_string());
    let mut plan: Vec<System> = Vec::new();
    for sys in System::ALL.into_iter().filter(|&s| wanted(s)) {
        if sys.on_afxdp() && net.is_none() {
            notes.push(format!("skipped: {} (needs root and the namespace)", sys.name()));
        } else {
            plan.push(sys);
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut addr_added = false;
    let t0 = Instant::now();
    for (k, sys) in plan.iter().copied().enumerate() {
        let port = 7100 + k as u16;
        if !sys.on_afxdp() && !addr_added {
            if let Some(n) = &net {
                let cidr = format!("{}/{}", n.ukcm_ip, n.prefix);
                if let Err(e) = run(Command::new("ip").args(["addr", "add", &cidr, "dev", &n.host_if])) {
                    cli::fail(PROG, &format!("cannot give {} the address {cidr}: {e}", n.host_if));
                }
            }
            addr_added = true;
        }
        for &size in &sizes {
            for &depth in &depths {
                let args: Vec<String> = match (sys, &net) {
                    (System::UkcmXdpWorkers | System::UkcmXdpRtc | System::UkcmBothEnds, Some(n)) => {
                        let mode: &[&str] =
                            if sys == System::UkcmXdpWorkers { &["--workers", "1"] } else { &["--rtc"] };
                        let mut v = vec![
                            "--nic".into(),
                            format!("afxdp:{}:0", n.host_if),
                            "--addr".into(),
                            format!("{}/{}", n.ukcm_ip, n.prefix),
                        ];
                        v.extend([
                            "--listen".into(),
                            port.to_string(),
                            "--parser".into(),
                            "thrift".into(),
                            "--busy-poll".into(),
                        ]);
                        v.extend(mode.iter().map(|s| s.to_string()));
                        v
                    }
                    (System::MuxKernelRtc, _) => vec![
                        "--nic".into(),
                        "kernel".into(),
                        "--addr".into(),
                        server_ip.clone(),
                        "--listen".into(),
                        port.to_string(),
                        "--parser".into(),
                        "thrift".into(),
                        "--rtc".into(),
                        "--busy-poll".into(),
                    ],
                    (System::Epoll | System::Tokio, _) => vec!["--listen".into(), format!("{server_ip}:{port}")],
                    _ => unreachable!("AF_XDP rows only run with a namespace"),
                };
                let bin = bins.join(match sys {
                    System::Epoll => "epoll-echo",
                    System::Tokio => "tokio-echo",
                    _ => "ukcm-echo",
                });
                eprintln!(
                    "{PROG}: [{:>4.0}s] {} size {size} depth {depth} ...",
                    t0.elapsed().as_secs_f64(),
                    sys.name()
                );
                let mut row = Row::new(sys, size, depth);
                match Server::start(&bin, &args) {
                    Err(e) => row.note = e,
                    Ok(server) => {
                        let connect = format!("{server_ip}:{port}");
                        let (cpu0, t) = (pid_cpu_time(server.pid), Instant::now());
                        let r = load(&bins, net.as_ref(), sys.load_on_ukcm(), &connect, a.conns, size, depth, secs);
                        if let (Some(c0), Some(c1)) = (cpu0, pid_cpu_time(server.pid)) {
                            row.server_cpu =
                                Some(100.0 * c1.saturating_sub(c0).as_secs_f64() / t.elapsed().as_secs_f64());
                        }
                        let rest = server.stop();
                        if let Some(frames) = largest_frames(&rest) {
                            notes.push(format!("{} size {size} depth {depth}: {frames}", sys.name()));
                        }
                        if let Some(l) = rest.lines().find(|l| l.contains("mux copies/payload byte")) {
                            row.copies = l
                                .rsplit("mux copies/payload byte ")
                                .next()
                                .and_then(|t| t.trim_end_matches(')').trim().parse().ok());
                        }
                        match r {
                            Ok(json) => {
                                row.msgs_per_s = json_num(&json, "msgs_per_s").unwrap_or(0.0);
                                row.bytes_per_s = json_num(&json, "bytes_per_s").unwrap_or(0.0);
                                row.p50 = json_num(&json, "p50").unwrap_or(0.0);
                                row.p99 = json_num(&json, "p99").unwrap_or(0.0);
                                row.p999 = json_num(&json, "p99_9").unwrap_or(0.0);
                                row.corrupt = json_num(&json, "corrupt").unwrap_or(0.0) as u64;
                                row.lost = json_num(&json, "lost").unwrap_or(0.0) as u64;
                                row.ok = json.contains("\"ok\":true");
                                row.cdf = parse_pairs(&json, "latency_cdf_us").unwrap_or_default();
                                row.load_cpu = json_num(&json, "load_cpu_pct");
                            }
                            Err(e) => row.note = e,
                        }
                    }
                }
                eprintln!(
                    "{PROG}:        {:.0} msgs/s, p50 {:.1} us, p99 {:.1} us{}",
                    row.msgs_per_s,
                    row.p50,
                    row.p99,
                    if row.ok { String::new() } else { format!(" — NOT OK {}", row.note) }
                );
                rows.push(row);
            }
        }
    }
    let load_checks = if plan.contains(&System::Epoll) && !a.no_load_check {
        check_load(&bins, net.as_ref(), &server_ip, &rows, a.conns, secs, &mut notes)
    } else {
        Vec::new()
    };
    if addr_added {
        if let Some(n) = &net {
            let _ = run(Command::new("ip").args(["addr", "flush", "dev", &n.host_if]));
        }
    }
    drop(net);
    let total = t0.elapsed().as_secs_f64();
    let load_end = loadavg();
    notes.push(format!(
        "machine load average (1, 5, 15 min) at the start: {load_start}; at the end: {load_end} (the harness itself keeps about 2 busy)"
    ));
    let b = BenchRun {
        rows: &rows,
        machine: &machine,
        notes: &notes,
        sizes: &sizes,
        depths: &depths,
        secs,
        conns: a.conns,
        total_s: total,
        quick: a.quick,
        cpus: (SERVER_CPU, LOAD_CPU),
        load_checks: &load_checks,
    };
    let md = markdown(&b);
    let json = to_json(&b);
    let subtitle = format!(
        "{} cores, {}, kernel {}; {} connections, closed loop; servers on cpu {SERVER_CPU}, load on cpu {LOAD_CPU}",
        machine.cores, machine.cpu, machine.kernel, a.conns
    );
    let svg = depths.contains(&1).then(|| plot(&rows, &sizes, 1, &subtitle));
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        cli::fail(PROG, &format!("cannot create {}: {e}", a.out.display()));
    }
    let mut files = vec![("latest.md", md.clone()), ("latest.json", json)];
    if let Some(svg) = svg {
        files.push(("latency-cdf.svg", svg));
    }
    for (name, text) in &files {
        let p = a.out.join(name);
        if let Err(e) = std::fs::write(&p, text) {
            cli::fail(PROG, &format!("cannot write {}: {e}", p.display()));
        }
    }
    print!("{md}");
    let names: Vec<String> = files.iter().map(|(n, _)| a.out.join(n).display().to_string()).collect();
    eprintln!("{PROG}: wrote {}", names.join(", "));
    if rows.iter().any(|r| !r.ok) {
        std::process::exit(1);
    }
}
