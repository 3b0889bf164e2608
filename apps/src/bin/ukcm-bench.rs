//! `ukcm-bench`: the system benchmark. One run, one topology, one load generator, every
//! server; writes `latest.md` and `latest.json` (with the machine) to `--out`.
//!
//! Topology (root): a `TestNet` — a fresh namespace holding the kernel peer end of a veth,
//! whose only route is the veth's /24. `ukcm-load` (kernel sockets) always runs inside that
//! namespace (`ip netns exec NS`), so it can reach nothing but the veth. The servers:
//!
//! 1. `ukcm-echo --nic afxdp:HOST:0` on the host end (no kernel address on it), worker
//!    thread mode and run-to-completion mode;
//! 2. then the host end gets the ukcm address as a kernel address, and the kernel-TCP
//!    servers listen on it, so their traffic crosses the same veth: `ukcm-echo --nic
//!    kernel` (the mux over kernel TCP, run-to-completion), `epoll-echo` (plain epoll),
//!    `tokio-echo` (tokio + `LengthDelimitedCodec`).
//!
//! Without root there is no namespace: the kernel-TCP rows run over loopback (127.0.0.1)
//! and the AF_XDP rows are skipped, which the output says.
//!
//! Every server runs under `taskset -c 1`, the load under `taskset -c 0` (the same for
//! every system). Ratios are msgs/s against `epoll-echo` at the same size and depth.
//! ukcm-echo runs with `--busy-poll` (spin, then yield; never sleeps) in every mode.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use ukcm_apps::cli;
use ukcm_apps::report::{machine_json, JsonObject, Machine};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    UkcmXdpWorkers,
    UkcmXdpRtc,
    MuxKernelRtc,
    Epoll,
    Tokio,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::UkcmXdpWorkers => "ukcm-echo afxdp, 1 worker thread",
            System::UkcmXdpRtc => "ukcm-echo afxdp, run-to-completion",
            System::MuxKernelRtc => "ukcm-echo kernel (mux over kernel TCP), rtc",
            System::Epoll => "epoll-echo (kernel, baseline)",
            System::Tokio => "tokio-echo (LengthDelimitedCodec)",
        }
    }
    fn key(self) -> &'static str {
        match self {
            System::UkcmXdpWorkers => "ukcm_afxdp_workers",
            System::UkcmXdpRtc => "ukcm_afxdp_rtc",
            System::MuxKernelRtc => "mux_kernel_rtc",
            System::Epoll => "epoll",
            System::Tokio => "tokio",
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    system: System,
    size: usize,
    depth: usize,
    msgs_per_s: f64,
    bytes_per_s: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    corrupt: u64,
    lost: u64,
    ok: bool,
    copies: Option<f64>,
    note: String,
}

struct Server {
    child: Option<Child>,
    rest: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    fn start(bin: &Path, args: &[String]) -> Result<Server, String> {
        let mut child = Command::new("taskset")
            .args(["-c", SERVER_CPU])
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
        Ok(Server { child: Some(child), rest: Some(rest) })
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

/// Runs the load against `connect` (inside the namespace when there is one).
fn load(
    bins: &Path,
    net: Option<&TestNet>,
    connect: &str,
    conns: usize,
    size: usize,
    depth: usize,
    secs: f64,
) -> Result<String, String> {
    let load = bins.join("ukcm-load");
    let mut cmd = match net {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &n.ns]);
            c.arg("taskset");
            c
        }
        None => Command::new("taskset"),
    };
    cmd.args(["-c", LOAD_CPU]).arg(&load);
    cmd.args(["--nic", "kernel", "--connect", connect, "--parser", "thrift", "--threads", "1", "--json"])
        .args(["--conns", &conns.to_string(), "--depth", &depth.to_string(), "--size", &size.to_string()])
        .args(["--duration", &secs.to_string()]);
    let out = cmd.output().map_err(|e| format!("run {}: {e}", load.display()))?;
    let json = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !json.starts_with('{') {
        return Err(format!("ukcm-load: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(json)
}

fn main() {
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
    let secs = a.duration.unwrap_or(if a.quick { 3.0 } else { 5.0 });
    let sizes: Vec<usize> = if a.quick { vec![1024] } else { vec![64, 1024, 65536] };
    let depths: Vec<usize> = if a.quick { vec![64] } else { vec![1, 64] };
    let machine = Machine::detect();
    let root = is_root();
    let mut notes: Vec<String> = Vec::new();
    notes.push(format!(
        "cores pinned with taskset: every server on cpu {SERVER_CPU}, the load generator on cpu {LOAD_CPU}"
    ));
    notes.push(format!(
        "load: ukcm-load (kernel sockets, 1 thread), {} connections, closed loop, thrift framing, {secs} s per run, every echo verified",
        a.conns
    ));
    let net = if root {
        match TestNet::new("bench", &TestNetOptions::default()) {
            Ok(n) => Some(n),
            Err(e) => {
                notes.push(format!("could not create the veth/namespace ({e}): kernel rows over loopback only"));
                None
            }
        }
    } else {
        notes.push("not root: no namespace, no AF_XDP — only the kernel-TCP rows, over loopback (127.0.0.1)".into());
        None
    };
    if let Some(n) = &net {
        notes.push(format!(
            "topology: veth {} (host) <-> {} in namespace {} (kernel peer {}, only route {}/{}); ukcm-load runs in the namespace",
            n.host_if, n.peer_if, n.ns, n.peer_ip, n.ukcm_ip, n.prefix
        ));
        notes.push(format!(
            "AF_XDP rows: ukcm on the host end over AF_XDP at {} (no kernel address on the host end); kernel rows: the host end then gets {}/{} as a kernel address and the servers listen there, so all traffic crosses the same veth",
            n.ukcm_ip, n.ukcm_ip, n.prefix
        ));
    }
    eprintln!("{PROG}: {}", notes.join(&format!("\n{PROG}: ")));
    let server_ip = net.as_ref().map_or("127.0.0.1".to_owned(), |n| n.ukcm_ip.to_string());
    let mut plan: Vec<System> = Vec::new();
    if net.is_some() {
        plan.extend([System::UkcmXdpWorkers, System::UkcmXdpRtc]);
    } else {
        notes.push("skipped: ukcm-echo on AF_XDP (needs root)".into());
    }
    plan.extend([System::MuxKernelRtc, System::Epoll, System::Tokio]);
    notes.push("not measured yet: both ends on ukcm vs both ends on kernel (item (e) of the plan)".into());
    let mut rows: Vec<Row> = Vec::new();
    let mut addr_added = false;
    let t0 = Instant::now();
    for (k, sys) in plan.iter().copied().enumerate() {
        let port = 7100 + k as u16;
        let is_xdp = matches!(sys, System::UkcmXdpWorkers | System::UkcmXdpRtc);
        if !is_xdp && !addr_added {
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
                    (System::UkcmXdpWorkers | System::UkcmXdpRtc, Some(n)) => {
                        let mode: &[&str] = if sys == System::UkcmXdpRtc { &["--rtc"] } else { &["--workers", "1"] };
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
                let mut row = Row {
                    system: sys,
                    size,
                    depth,
                    msgs_per_s: 0.0,
                    bytes_per_s: 0.0,
                    p50: 0.0,
                    p99: 0.0,
                    p999: 0.0,
                    corrupt: 0,
                    lost: 0,
                    ok: false,
                    copies: None,
                    note: String::new(),
                };
                match Server::start(&bin, &args) {
                    Err(e) => row.note = e,
                    Ok(server) => {
                        let r = load(&bins, net.as_ref(), &format!("{server_ip}:{port}"), a.conns, size, depth, secs);
                        let rest = server.stop();
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
    if addr_added {
        if let Some(n) = &net {
            let _ = run(Command::new("ip").args(["addr", "flush", "dev", &n.host_if]));
        }
    }
    drop(net);
    let total = t0.elapsed().as_secs_f64();
    let md = markdown(&rows, &machine, &notes, &sizes, &depths, total, a.quick);
    let json = to_json(&rows, &machine, &notes, secs, a.conns, total, a.quick);
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        cli::fail(PROG, &format!("cannot create {}: {e}", a.out.display()));
    }
    for (name, text) in [("latest.md", &md), ("latest.json", &json)] {
        let p = a.out.join(name);
        if let Err(e) = std::fs::write(&p, text) {
            cli::fail(PROG, &format!("cannot write {}: {e}", p.display()));
        }
    }
    print!("{md}");
    eprintln!("{PROG}: wrote {} and {}", a.out.join("latest.md").display(), a.out.join("latest.json").display());
    if rows.iter().any(|r| !r.ok) {
        std::process::exit(1);
    }
}

fn baseline(rows: &[Row], size: usize, depth: usize) -> Option<f64> {
    rows.iter().find(|r| r.system == System::Epoll && r.size == size && r.depth == depth && r.ok).map(|r| r.msgs_per_s)
}

fn markdown(
    rows: &[Row],
    m: &Machine,
    notes: &[String],
    sizes: &[usize],
    depths: &[usize],
    total: f64,
    quick: bool,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# ukcm system benchmark{}\n", if quick { " (--quick)" } else { "" });
    let _ = writeln!(s, "Machine: {} cores, {}, kernel {}. Total run time {total:.0} s.\n", m.cores, m.cpu, m.kernel);
    for n in notes {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(s, "\nRatio = msgs/s against `epoll-echo` at the same size and depth. Latency in microseconds, measured by the load generator (send to verified echo).\n");
    let _ = writeln!(
        s,
        "| size | depth | server | msgs/s | MB/s | p50 us | p99 us | p99.9 us | vs epoll | mux copies/B | ok |"
    );
    let _ = writeln!(s, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for &size in sizes {
        for &depth in depths {
            let base = baseline(rows, size, depth);
            for r in rows.iter().filter(|r| r.size == size && r.depth == depth) {
                let ratio = match base {
                    Some(b) if b > 0.0 && r.ok => format!("{:.2}x", r.msgs_per_s / b),
                    _ => "—".into(),
                };
                let copies = r.copies.map_or("—".into(), |c| format!("{c:.2}"));
                let ok = if r.ok {
                    "yes".to_owned()
                } else {
                    format!("NO: {} lost, {} corrupt {}", r.lost, r.corrupt, r.note.replace('|', "/"))
                };
                let _ = writeln!(
                    s,
                    "| {size} | {depth} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {ratio} | {copies} | {ok} |",
                    r.system.name(),
                    r.msgs_per_s,
                    r.bytes_per_s / 1e6,
                    r.p50,
                    r.p99,
                    r.p999
                );
            }
        }
    }
    s
}

fn to_json(rows: &[Row], m: &Machine, notes: &[String], secs: f64, conns: usize, total: f64, quick: bool) -> String {
    let mut runs = String::from("[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            runs.push(',');
        }
        let mut o = JsonObject::new();
        o.str("system", r.system.key())
            .str("description", r.system.name())
            .int("size", r.size as u64)
            .int("depth", r.depth as u64)
            .num("msgs_per_s", r.msgs_per_s)
            .num("bytes_per_s", r.bytes_per_s)
            .num("p50_us", r.p50)
            .num("p99_us", r.p99)
            .num("p99_9_us", r.p999)
            .int("corrupt", r.corrupt)
            .int("lost", r.lost)
            .bool("ok", r.ok)
            .num("vs_epoll", baseline(rows, r.size, r.depth).map_or(f64::NAN, |b| r.msgs_per_s / b))
            .num("mux_copies_per_byte", r.copies.unwrap_or(f64::NAN))
            .str("note", &r.note);
        runs.push_str(&o.finish());
    }
    runs.push(']');
    let mut o = JsonObject::new();
    o.str("tool", PROG)
        .bool("quick", quick)
        .num("duration_per_run_s", secs)
        .int("conns", conns as u64)
        .num("total_s", total)
        .str("server_cpu", SERVER_CPU)
        .str("load_cpu", LOAD_CPU)
        .strs("notes", notes)
        .obj("machine", machine_json(m));
    // JsonObject has no raw-array member: splice the runs in before the closing brace.
    let mut text = o.finish();
    text.pop();
    text.push_str(",\"runs\":");
    text.push_str(&runs);
    text.push_str("}\n");
    text
}
