//! The results side of `ukcm-bench`: the systems it measures, one row per run, the
//! markdown tables (servers under a kernel load; both ends on ukcm vs both on the kernel),
//! the goals checked against the measurement, the JSON, and the latency plot.

use std::fmt::Write as _;

use crate::report::{machine_json, JsonObject, Machine};
use crate::svg::{latency_cdf_svg, Curve, Panel};

/// One system under test: a server and the load that drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// `ukcm-echo` on AF_XDP, one worker thread; kernel-socket load.
    UkcmXdpWorkers,
    /// `ukcm-echo` on AF_XDP, run-to-completion; kernel-socket load.
    UkcmXdpRtc,
    /// `ukcm-echo` on AF_XDP, run-to-completion; the load on its own ukcm engine on AF_XDP.
    UkcmBothEnds,
    /// `ukcm-echo --nic kernel` (the mux over kernel TCP), run-to-completion.
    MuxKernelRtc,
    /// `epoll-echo`: the kernel baseline (and, with the kernel-socket load, kernel↔kernel).
    Epoll,
    /// `tokio-echo` (tokio + `LengthDelimitedCodec`).
    Tokio,
}

impl System {
    /// Every system, in the order they run.
    pub const ALL: [System; 6] = [
        System::UkcmXdpWorkers,
        System::UkcmXdpRtc,
        System::UkcmBothEnds,
        System::MuxKernelRtc,
        System::Epoll,
        System::Tokio,
    ];

    /// Table text.
    pub fn name(self) -> &'static str {
        match self {
            System::UkcmXdpWorkers => "ukcm-echo afxdp, 1 worker thread",
            System::UkcmXdpRtc => "ukcm-echo afxdp, run-to-completion",
            System::UkcmBothEnds => "ukcm ↔ ukcm: ukcm-load on AF_XDP → ukcm-echo afxdp, rtc",
            System::MuxKernelRtc => "ukcm-echo kernel (mux over kernel TCP), rtc",
            System::Epoll => "epoll-echo (kernel, baseline)",
            System::Tokio => "tokio-echo (LengthDelimitedCodec)",
        }
    }

    /// JSON and `--systems` name.
    pub fn key(self) -> &'static str {
        match self {
            System::UkcmXdpWorkers => "ukcm_afxdp_workers",
            System::UkcmXdpRtc => "ukcm_afxdp_rtc",
            System::UkcmBothEnds => "ukcm_both_ends",
            System::MuxKernelRtc => "mux_kernel_rtc",
            System::Epoll => "epoll",
            System::Tokio => "tokio",
        }
    }

    /// From [`System::key`].
    pub fn from_key(k: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.key() == k)
    }

    /// The server runs on AF_XDP (needs the namespace, runs before the host end gets a
    /// kernel address).
    pub fn on_afxdp(self) -> bool {
        matches!(self, System::UkcmXdpWorkers | System::UkcmXdpRtc | System::UkcmBothEnds)
    }

    /// The load generator runs on its own ukcm engine (AF_XDP) instead of kernel sockets.
    pub fn load_on_ukcm(self) -> bool {
        self == System::UkcmBothEnds
    }

    fn color(self) -> &'static str {
        match self {
            System::UkcmXdpWorkers => "#ff7f0e",
            System::UkcmXdpRtc => "#d62728",
            System::UkcmBothEnds => "#9467bd",
            System::MuxKernelRtc => "#8c564b",
            System::Epoll => "#1f77b4",
            System::Tokio => "#2ca02c",
        }
    }

    fn plot_label(self) -> &'static str {
        match self {
            System::UkcmXdpWorkers => "ukcm-echo on AF_XDP, 1 worker thread (kernel load)",
            System::UkcmXdpRtc => "ukcm-echo on AF_XDP, run-to-completion (kernel load)",
            System::UkcmBothEnds => "both ends on ukcm (AF_XDP ↔ AF_XDP)",
            System::MuxKernelRtc => "mux over kernel TCP, rtc (kernel load)",
            System::Epoll => "epoll-echo: kernel ↔ kernel (baseline)",
            System::Tokio => "tokio-echo, LengthDelimitedCodec (kernel load)",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Row {
    /// What ran.
    pub system: System,
    /// Message size, header included.
    pub size: usize,
    /// Outstanding messages per connection.
    pub depth: usize,
    /// Verified echoes per second.
    pub msgs_per_s: f64,
    /// Verified echo bytes per second.
    pub bytes_per_s: f64,
    /// Latency percentiles (µs).
    pub p50: f64,
    /// 99th percentile (µs).
    pub p99: f64,
    /// 99.9th percentile (µs).
    pub p999: f64,
    /// Corrupt echoes.
    pub corrupt: u64,
    /// Messages never echoed.
    pub lost: u64,
    /// Clean run (nothing lost, corrupt or duplicated; no connection failed).
    pub ok: bool,
    /// The mux's copies per payload byte (ukcm-echo rows).
    pub copies: Option<f64>,
    /// Why a run failed.
    pub note: String,
    /// (fraction, µs) latency distribution from the load generator's histogram.
    pub cdf: Vec<(f64, f64)>,
    /// The load generator's CPU use over its run, % of one core (its own getrusage).
    pub load_cpu: Option<f64>,
    /// The server's CPU use over the load's run, % of one core (from /proc; a busy-polling
    /// ukcm-echo shows 100 whatever its load).
    pub server_cpu: Option<f64>,
}

/// A load generator at or above this share of its core is taken to be the limit of a row.
pub const LOAD_BOUND_PCT: f64 = 90.0;

impl Row {
    /// Which side limits the row: the load generator when it used ≥ 90 % of its core,
    /// otherwise the server side (the server and the kernel path between them).
    pub fn bound(&self) -> &'static str {
        match self.load_cpu {
            Some(c) if c >= LOAD_BOUND_PCT => "load",
            Some(_) => "server",
            None => "—",
        }
    }
}

impl Row {
    /// An empty (failed until filled) row.
    pub fn new(system: System, size: usize, depth: usize) -> Row {
        Row {
            system,
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
            cdf: Vec::new(),
            load_cpu: None,
            server_cpu: None,
        }
    }
}

/// Everything one run of the harness produced.
#[derive(Debug)]
pub struct BenchRun<'a> {
    /// The rows, in run order.
    pub rows: &'a [Row],
    /// Where it ran.
    pub machine: &'a Machine,
    /// Topology, pinning, load, skipped parts, machine load.
    pub notes: &'a [String],
    /// Sizes measured.
    pub sizes: &'a [usize],
    /// Depths measured.
    pub depths: &'a [usize],
    /// Seconds of load per run.
    pub secs: f64,
    /// Connections.
    pub conns: usize,
    /// Wall time of the whole run.
    pub total_s: f64,
    /// `--quick`.
    pub quick: bool,
    /// Server and load CPUs.
    pub cpus: (&'a str, &'a str),
    /// ukcm-load against the plain C epoll client, on the same epoll-echo server.
    pub load_checks: &'a [LoadCheck],
}

/// The load generator checked against a plain C epoll client (`apps/bench-clients/
/// epoll-client.c`) on the same server, size and depth: if the C client gets more out of
/// the server, ukcm-load is the limit of its rows there.
#[derive(Debug, Clone)]
pub struct LoadCheck {
    /// Message size.
    pub size: usize,
    /// Outstanding messages per connection.
    pub depth: usize,
    /// ukcm-load's msgs/s and CPU % (the epoll row).
    pub ukcm_load: (f64, f64),
    /// The C client's msgs/s and CPU %, or why it did not run.
    pub c_client: Result<(f64, f64), String>,
}

fn find(rows: &[Row], sys: System, size: usize, depth: usize) -> Option<&Row> {
    rows.iter().find(|r| r.system == sys && r.size == size && r.depth == depth && r.ok)
}

/// msgs/s of the kernel baseline (epoll-echo under the kernel-socket load: kernel ↔ kernel).
pub fn baseline(rows: &[Row], size: usize, depth: usize) -> Option<f64> {
    find(rows, System::Epoll, size, depth).map(|r| r.msgs_per_s)
}

fn size_name(size: usize) -> String {
    match size {
        s if s >= 1024 && s % 1024 == 0 => format!("{} KiB", s / 1024),
        s => format!("{s} B"),
    }
}

/// One goal of the issue, checked against this run.
#[derive(Debug, Clone)]
pub struct Goal {
    /// The goal, as the issue states it.
    pub goal: &'static str,
    /// Size the check is for.
    pub size: usize,
    /// What was measured (one line).
    pub measured: String,
    /// Met, not met, or not measured (None).
    pub met: Option<bool>,
}

/// The three goals per size: AF_XDP ≥ 1.5× the epoll server's msgs/s at depth
/// 64; ≤ half its p99 at depth 1; both ends on ukcm ≥ 3× kernel↔kernel (depth 64 and 1).
pub fn goals(rows: &[Row], sizes: &[usize]) -> Vec<Goal> {
    let mut out = Vec::new();
    for &size in sizes {
        let best = |depth: usize, key: &dyn Fn(&Row) -> f64, higher: bool| -> Option<&Row> {
            [System::UkcmXdpRtc, System::UkcmXdpWorkers].iter().filter_map(|&s| find(rows, s, size, depth)).reduce(
                |a, b| {
                    if (key(b) > key(a)) == higher {
                        b
                    } else {
                        a
                    }
                },
            )
        };
        let mode = |r: &Row| if r.system == System::UkcmXdpRtc { "rtc" } else { "1 worker" };
        let (x, e) = (best(64, &|r| r.msgs_per_s, true), find(rows, System::Epoll, size, 64));
        out.push(match (x, e) {
            (Some(x), Some(e)) => {
                let ratio = x.msgs_per_s / e.msgs_per_s;
                Goal {
                    goal: "ukcm-echo on AF_XDP ≥ 1.5× the epoll server's msgs/s at depth 64",
                    size,
                    measured: format!(
                        "{:.0} vs {:.0} msgs/s = {ratio:.2}× (best mode: {})",
                        x.msgs_per_s,
                        e.msgs_per_s,
                        mode(x)
                    ),
                    met: Some(ratio >= 1.5),
                }
            }
            _ => Goal {
                goal: "ukcm-echo on AF_XDP ≥ 1.5× the epoll server's msgs/s at depth 64",
                size,
                measured: "not measured".into(),
                met: None,
            },
        });
        let (x, e) = (best(1, &|r| r.p99, false), find(rows, System::Epoll, size, 1));
        out.push(match (x, e) {
            (Some(x), Some(e)) => {
                let ratio = x.p99 / e.p99;
                Goal {
                    goal: "ukcm-echo on AF_XDP ≤ 0.5× the epoll server's p99 at depth 1",
                    size,
                    measured: format!("p99 {:.1} vs {:.1} µs = {ratio:.2}× (best mode: {})", x.p99, e.p99, mode(x)),
                    met: Some(ratio <= 0.5),
                }
            }
            _ => Goal {
                goal: "ukcm-echo on AF_XDP ≤ 0.5× the epoll server's p99 at depth 1",
                size,
                measured: "not measured".into(),
                met: None,
            },
        });
        for depth in [64, 1] {
            let (u, k) = (find(rows, System::UkcmBothEnds, size, depth), find(rows, System::Epoll, size, depth));
            let goal = if depth == 64 {
                "both ends on ukcm ≥ 3× kernel↔kernel msgs/s (depth 64)"
            } else {
                "both ends on ukcm ≥ 3× kernel↔kernel msgs/s (depth 1)"
            };
            out.push(match (u, k) {
                (Some(u), Some(k)) => {
                    let ratio = u.msgs_per_s / k.msgs_per_s;
                    Goal {
                        goal,
                        size,
                        measured: format!("{:.0} vs {:.0} msgs/s = {ratio:.2}×", u.msgs_per_s, k.msgs_per_s),
                        met: Some(ratio >= 3.0),
                    }
                }
                _ => Goal { goal, size, measured: "not measured".into(), met: None },
            });
        }
    }
    out
}

fn pct(x: Option<f64>) -> String {
    x.map_or("—".into(), |c| format!("{c:.0}%"))
}

fn ok_cell(r: &Row) -> String {
    if r.ok {
        "yes".to_owned()
    } else {
        format!("NO: {} lost, {} corrupt {}", r.lost, r.corrupt, r.note.replace('|', "/"))
    }
}

/// `latest.md`.
pub fn markdown(b: &BenchRun<'_>) -> String {
    let rows = b.rows;
    let m = b.machine;
    let mut s = String::new();
    let _ = writeln!(s, "# ukcm system benchmark{}\n", if b.quick { " (--quick)" } else { "" });
    let _ =
        writeln!(s, "Machine: {} cores, {}, kernel {}. Total run time {:.0} s.\n", m.cores, m.cpu, m.kernel, b.total_s);
    for n in b.notes {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(s, "\n## Servers under the same kernel-socket load\n");
    let _ = writeln!(s, "Ratio = msgs/s against `epoll-echo` at the same size and depth. Latency in microseconds, measured by the load generator (send to verified echo).\n");
    let _ = writeln!(
        s,
        "| size | depth | server | msgs/s | MB/s | p50 us | p99 us | p99.9 us | vs epoll | mux copies/B | load cpu | server cpu | bound by | ok |"
    );
    let _ = writeln!(s, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for &size in b.sizes {
        for &depth in b.depths {
            let base = baseline(rows, size, depth);
            for r in rows.iter().filter(|r| r.size == size && r.depth == depth && !r.system.load_on_ukcm()) {
                let ratio = match base {
                    Some(x) if x > 0.0 && r.ok => format!("{:.2}x", r.msgs_per_s / x),
                    _ => "—".into(),
                };
                let copies = r.copies.map_or("—".into(), |c| format!("{c:.2}"));
                let _ = writeln!(
                    s,
                    "| {size} | {depth} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {ratio} | {copies} | {} | {} | {} | {} |",
                    r.system.name(),
                    r.msgs_per_s,
                    r.bytes_per_s / 1e6,
                    r.p50,
                    r.p99,
                    r.p999,
                    pct(r.load_cpu),
                    pct(r.server_cpu),
                    r.bound(),
                    ok_cell(r)
                );
            }
        }
    }
    if rows.iter().any(|r| r.system.load_on_ukcm()) {
        let _ = writeln!(s, "\n## Both ends on ukcm vs both ends on the kernel\n");
        let _ = writeln!(s, "ukcm ↔ ukcm: `ukcm-load --nic afxdp:PEER` (the load on its own ukcm engine, AF_XDP on the namespace's veth end, one busy-polling thread) against `ukcm-echo` on AF_XDP, run-to-completion. kernel ↔ kernel: the `epoll-echo` row above (kernel-socket load, kernel server). Same veth, same CPUs. Goal: ≥ 3×.\n");
        let _ = writeln!(
            s,
            "| size | depth | ukcm ↔ ukcm msgs/s | p50 us | p99 us | kernel ↔ kernel msgs/s | p50 us | p99 us | ratio | ≥ 3× | ukcm load cpu | ok |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|");
        for &size in b.sizes {
            for &depth in b.depths {
                let Some(u) = rows.iter().find(|r| r.system.load_on_ukcm() && r.size == size && r.depth == depth)
                else {
                    continue;
                };
                let k = find(rows, System::Epoll, size, depth);
                let (kk, ratio, met) = match k {
                    Some(k) if u.ok && k.msgs_per_s > 0.0 => {
                        let x = u.msgs_per_s / k.msgs_per_s;
                        (
                            format!("{:.0} | {:.1} | {:.1}", k.msgs_per_s, k.p50, k.p99),
                            format!("{x:.2}x"),
                            if x >= 3.0 { "met" } else { "not met" },
                        )
                    }
                    _ => ("— | — | —".into(), "—".into(), "—"),
                };
                let _ = writeln!(
                    s,
                    "| {size} | {depth} | {:.0} | {:.1} | {:.1} | {kk} | {ratio} | {met} | {} | {} |",
                    u.msgs_per_s,
                    u.p50,
                    u.p99,
                    pct(u.load_cpu),
                    ok_cell(u)
                );
            }
        }
    }
    if !b.load_checks.is_empty() {
        let _ = writeln!(s, "\n## The load generator against a plain epoll client\n");
        let _ = writeln!(s, "Same `epoll-echo` server, size, depth and connections; the C client (`apps/bench-clients/epoll-client.c`: one thread, level-triggered epoll, every echoed byte compared) on the same core as ukcm-load. Where the C client gets clearly more from the server, the rows above at that size and depth are bound by ukcm-load.\n");
        let _ = writeln!(
            s,
            "| size | depth | ukcm-load msgs/s | its cpu | C epoll client msgs/s | its cpu | ukcm-load / C |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
        for c in b.load_checks {
            let (cc, ratio) = match &c.c_client {
                Ok((m, cpu)) if *m > 0.0 => (format!("{m:.0} | {cpu:.0}%"), format!("{:.2}x", c.ukcm_load.0 / m)),
                Ok(_) => ("0 | —".into(), "—".into()),
                Err(e) => (format!("did not run: {} | —", e.replace('|', "/")), "—".into()),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {:.0}% | {cc} | {ratio} |",
                c.size, c.depth, c.ukcm_load.0, c.ukcm_load.1
            );
        }
    }
    let gs = goals(rows, b.sizes);
    if gs.iter().any(|g| g.met.is_some()) {
        let _ = writeln!(s, "\n## The issue's goals, against this run (reported, not asserted)\n");
        let _ = writeln!(s, "| goal | size | measured | |");
        let _ = writeln!(s, "|---|---:|---|---|");
        for g in gs.iter().filter(|g| g.met.is_some()) {
            let verdict = if g.met == Some(true) { "met" } else { "not met" };
            let _ = writeln!(s, "| {} | {} | {} | {verdict} |", g.goal, size_name(g.size), g.measured);
        }
    }
    if rows.iter().any(|r| r.depth == 1 && !r.cdf.is_empty()) {
        let _ = writeln!(
            s,
            "\n## Latency at depth 1\n\n![latency CDF per system, depth 1](latency-cdf.svg)\n\nTop: fraction of messages echoed within a latency; bottom: fraction slower than it (the tail). Both axes from the load generator's HdrHistograms."
        );
    }
    s
}

/// `latest.json`.
pub fn to_json(b: &BenchRun<'_>) -> String {
    let rows = b.rows;
    let mut runs = String::from("[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            runs.push(',');
        }
        let mut o = JsonObject::new();
        let base = if r.system.load_on_ukcm() { "kernel_kernel" } else { "epoll" };
        o.str("system", r.system.key())
            .str("description", r.system.name())
            .str(
                "load",
                if r.system.load_on_ukcm() {
                    "ukcm-load on its own ukcm engine (AF_XDP)"
                } else {
                    "ukcm-load, kernel sockets"
                },
            )
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
            .str("ratio_against", base)
            .num("ratio", baseline(rows, r.size, r.depth).map_or(f64::NAN, |x| r.msgs_per_s / x))
            .num("mux_copies_per_byte", r.copies.unwrap_or(f64::NAN))
            .num("load_cpu_pct", r.load_cpu.unwrap_or(f64::NAN))
            .num("server_cpu_pct", r.server_cpu.unwrap_or(f64::NAN))
            .str("bound_by", r.bound())
            .str("note", &r.note)
            .pairs("latency_cdf_us", &r.cdf);
        runs.push_str(&o.finish());
    }
    runs.push(']');
    let mut gj = String::from("[");
    for (i, g) in goals(rows, b.sizes).iter().enumerate() {
        if i > 0 {
            gj.push(',');
        }
        let mut o = JsonObject::new();
        o.str("goal", g.goal).int("size", g.size as u64).str("measured", &g.measured).str(
            "verdict",
            match g.met {
                Some(true) => "met",
                Some(false) => "not met",
                None => "not measured",
            },
        );
        gj.push_str(&o.finish());
    }
    gj.push(']');
    let mut lc = String::from("[");
    for (i, c) in b.load_checks.iter().enumerate() {
        if i > 0 {
            lc.push(',');
        }
        let mut o = JsonObject::new();
        o.int("size", c.size as u64)
            .int("depth", c.depth as u64)
            .num("ukcm_load_msgs_per_s", c.ukcm_load.0)
            .num("ukcm_load_cpu_pct", c.ukcm_load.1);
        match &c.c_client {
            Ok((m, cpu)) => o.num("c_client_msgs_per_s", *m).num("c_client_cpu_pct", *cpu),
            Err(e) => o.str("c_client_error", e),
        };
        lc.push_str(&o.finish());
    }
    lc.push(']');
    let mut o = JsonObject::new();
    o.str("tool", "ukcm-bench")
        .bool("quick", b.quick)
        .num("duration_per_run_s", b.secs)
        .int("conns", b.conns as u64)
        .num("total_s", b.total_s)
        .str("server_cpu", b.cpus.0)
        .str("load_cpu", b.cpus.1)
        .strs("notes", b.notes)
        .obj("machine", machine_json(b.machine));
    // JsonObject has no raw-array member: splice the arrays in before the closing brace.
    let mut text = o.finish();
    text.pop();
    let _ = write!(text, ",\"goals\":{gj},\"load_checks\":{lc},\"runs\":{runs}}}");
    text.push('\n');
    text
}

/// `latency-cdf.svg`: one column per size, one curve per system, at `depth`.
pub fn plot(rows: &[Row], sizes: &[usize], depth: usize, subtitle: &str) -> String {
    let panels: Vec<Panel> = sizes
        .iter()
        .map(|&size| Panel {
            title: format!("{} messages, depth {depth}", size_name(size)),
            curves: System::ALL
                .iter()
                .filter_map(|&sys| find(rows, sys, size, depth))
                .map(|r| Curve {
                    label: r.system.plot_label().into(),
                    color: r.system.color().into(),
                    dashed: r.system == System::Epoll,
                    points: r.cdf.clone(),
                })
                .collect(),
        })
        .collect();
    latency_cdf_svg("ukcm system benchmark: latency per system", subtitle, &panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: System, size: usize, depth: usize, msgs: f64, p99: f64) -> Row {
        Row {
            msgs_per_s: msgs,
            p99,
            ok: true,
            cdf: vec![(0.0, 5.0), (0.5, p99 / 2.0), (0.99, p99)],
            ..Row::new(system, size, depth)
        }
    }

    #[test]
    fn goals_are_checked_against_the_rows_and_the_tables_split_by_load() {
        let rows = vec![
            row(System::UkcmXdpRtc, 64, 64, 300.0, 10.0),
            row(System::UkcmXdpWorkers, 64, 64, 100.0, 10.0),
            row(System::Epoll, 64, 64, 100.0, 10.0),
            row(System::UkcmBothEnds, 64, 64, 250.0, 10.0),
            row(System::UkcmXdpRtc, 64, 1, 10.0, 40.0),
            row(System::UkcmXdpWorkers, 64, 1, 10.0, 30.0),
            row(System::Epoll, 64, 1, 10.0, 100.0),
            Row { note: "a|b".into(), ..Row::new(System::UkcmBothEnds, 64, 1) },
        ];
        let g = goals(&rows, &[64]);
        assert_eq!(g.len(), 4);
        assert_eq!(g[0].met, Some(true), "{:?}", g[0]);
        assert!(g[0].measured.contains("3.00×") && g[0].measured.contains("rtc"), "{:?}", g[0]);
        assert_eq!(g[1].met, Some(true), "{:?}", g[1]);
        assert!(g[1].measured.contains("0.30×") && g[1].measured.contains("1 worker"), "{:?}", g[1]);
        assert_eq!(g[2].met, Some(false), "2.5× < 3×: {:?}", g[2]);
        assert_eq!(g[3].met, None, "the failed both-ends row is not a measurement: {:?}", g[3]);
        let m = Machine { cores: 2, kernel: "k".into(), cpu: "c".into() };
        let b = BenchRun {
            rows: &rows,
            machine: &m,
            notes: &[],
            sizes: &[64],
            depths: &[1, 64],
            secs: 1.0,
            conns: 4,
            total_s: 1.0,
            quick: false,
            cpus: ("1", "0"),
            load_checks: &[
                LoadCheck { size: 64, depth: 64, ukcm_load: (90.0, 99.0), c_client: Ok((100.0, 80.0)) },
                LoadCheck { size: 64, depth: 1, ukcm_load: (9.0, 40.0), c_client: Err("no cc".into()) },
            ],
        };
        assert_eq!(Row { load_cpu: Some(95.0), ..Row::new(System::Epoll, 64, 64) }.bound(), "load");
        assert_eq!(Row { load_cpu: Some(50.0), ..Row::new(System::Epoll, 64, 64) }.bound(), "server");
        assert_eq!(Row::new(System::Epoll, 64, 64).bound(), "—");
        let md = markdown(&b);
        let check = md.split("## The load generator").nth(1).expect("load check table");
        assert!(check.contains("| 64 | 64 | 90 | 99% | 100 | 80% | 0.90x |"), "{check}");
        assert!(check.contains("did not run: no cc"), "{check}");
        let both = md.split("## Both ends").nth(1).expect("both-ends table");
        assert!(both.contains("| 64 | 64 | 250 |") && both.contains("| 2.50x | not met |"), "{both}");
        assert!(both.contains("NO: 0 lost, 0 corrupt a/b"), "{both}");
        let main = md.split("## Both ends").next().unwrap();
        assert!(!main.contains("ukcm ↔ ukcm"), "both-ends rows are not in the kernel-load table");
        assert!(md.contains("| both ends on ukcm ≥ 3× kernel↔kernel msgs/s (depth 64) | 64 B | 250 vs 100 msgs/s = 2.50× | not met |"), "{md}");
        let json = to_json(&b);
        assert!(json.contains("\"goals\":[{") && json.ends_with("]}\n"), "{json}");
        assert!(
            json.contains("\"c_client_msgs_per_s\":100") && json.contains("\"c_client_error\":\"no cc\""),
            "{json}"
        );
        assert!(json.contains("\"latency_cdf_us\":[[0,5],[0.5,20],[0.99,40]]"), "{json}");
        let svg = plot(&rows, &[64], 1, "sub");
        assert_eq!(svg.matches("<polyline").count(), 2 * 3, "three clean depth-1 rows, two plot rows");
    }
}
