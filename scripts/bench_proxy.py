#!/usr/bin/env python3
"""The proxy benchmark's driver (run through scripts/bench-proxy.sh, which builds the proxy).

Topology, made here and removed on exit: scripts/netns.sh's namespace and veth; in the
namespace, on cpu 0, two redis-servers and redis-benchmark; in the root namespace, on
cpu 1, the proxy under test. Kernel-socket proxies listen on the host end's address .3;
ukcm-proxy on AF_XDP owns the host end and takes .1. Every figure comes from this run.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
SYSTEMS = ["direct", "nutcracker", "ukcm_kernel", "ukcm_afxdp"]
LABEL = {
    "direct": "one redis-server directly",
    "nutcracker": "nutcracker 0.5.0 (kernel sockets)",
    "ukcm_kernel": "ukcm-proxy --nic kernel",
    "ukcm_afxdp": "ukcm-proxy on AF_XDP",
}


def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


class Net:
    """scripts/netns.sh's namespace plus a kernel address (.3) on the host end."""

    def __init__(self):
        self.name = f"ukpb{os.getpid()}"
        out = sh("scripts/netns.sh", "up", self.name).stdout
        self.host_if = re.search(r"host end\s+(\S+)", out).group(1)
        self.peer_ip = re.search(r"peer end\s+\S+ \(in \S+, ([\d.]+)/24\)", out).group(1)
        self.ukcm_ip = re.search(r"ukcm takes ([\d.]+)/24", out).group(1)
        self.kernel_ip = self.ukcm_ip.rsplit(".", 1)[0] + ".3"
        sh("ip", "addr", "replace", f"{self.kernel_ip}/24", "dev", self.host_if)
        # A proxy must reach the backends through this veth and nowhere else.
        route = sh("ip", "route", "get", self.peer_ip).stdout
        if f"dev {self.host_if}" not in route:
            self.down()
            sys.exit(f"bench-proxy: {self.peer_ip} does not route via {self.host_if} ({route.strip()}); refusing")

    def ns(self, *cmd):
        return ["ip", "netns", "exec", self.name, *cmd]

    def down(self):
        sh("scripts/netns.sh", "down", self.name, check=False)


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def core_ticks(cpu):
    """(busy, total) jiffies of one CPU from /proc/stat: busy counts softirq and steal, so a
    core saturated by the kernel's network work on behalf of its processes shows up too."""
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f[0] == f"cpu{cpu}":
            v = [int(x) for x in f[1:]]
            idle = v[3] + v[4]  # idle + iowait
            return sum(v) - idle, sum(v)
    return 0, 0


def core_busy(before, after):
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total * 100 if total else 0


def status_kib(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class MemPeak:
    """Samples a process's VmRSS and VmLck every 100 ms; keeps the peaks."""

    def __init__(self, pid):
        self.pid, self.rss, self.lck, self.stop = pid, 0, 0, threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.rss = max(self.rss, status_kib(self.pid, "VmRSS"))
                self.lck = max(self.lck, status_kib(self.pid, "VmLck"))
            except OSError:
                return
            time.sleep(0.1)

    def done(self):
        self.stop.set()
        self.t.join()
        return self.rss, self.lck


def parse_benchmark(out):
    """redis-benchmark's per-test results: rps, latency summary, percentile distribution."""
    tests = {}
    for block in re.split(r"====== ", out)[1:]:
        name = block.split(" ", 1)[0].strip()
        rps = re.search(r"throughput summary: ([\d.]+) requests per second", block)
        summ = re.search(r"latency summary \(msec\):\s*\n\s*avg.*\n\s*([\d. ]+)\n", block)
        # The "Latency by percentile distribution" block (the cumulative one after it repeats
        # the same curve at coarser points): up to where the percentile starts over.
        dist = []
        for p, ms in re.findall(r"([\d.]+)% <= ([\d.]+) milliseconds", block):
            if dist and float(p) < dist[-1][0]:
                break
            dist.append((float(p), float(ms)))
        if not rps or not summ:
            continue
        avg, mn, p50, p95, p99, mx = (float(x) for x in summ.group(1).split())
        tests[name] = {"rps": float(rps.group(1)), "avg_ms": avg, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                       "max_ms": mx, "cdf": dist}
    return tests


class Bench:
    def __init__(self, args):
        self.args, self.net = args, Net()
        self.tmp = Path(tempfile.mkdtemp(prefix="ukcm-bench-proxy-"))
        self.children = []
        self.backends = [7001, 7002]

    def spawn(self, cmd, **kw):
        # Output to a file, never an unread pipe (a full pipe would stall a chatty child);
        # kept in the run's temporary directory: the proxies' exit stats (drops by reason).
        prog = next((Path(w).name for w in cmd if any(k in w for k in ("redis", "nutcracker", "ukcm"))), "child")
        log = self.tmp / f"{len(self.children)}-{prog}.err"
        with open(log, "w") as err:
            p = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, text=True, **kw)
        p.log = log
        self.children.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def wait_port(self, ip, port, inside_ns):
        probe = f"import socket; socket.create_connection(('{ip}', {port}), 1)"
        cmd = ["python3", "-c", probe]
        for _ in range(200):
            if subprocess.run(self.net.ns(*cmd) if inside_ns else cmd, capture_output=True).returncode == 0:
                return
            time.sleep(0.05)
        sys.exit(f"bench-proxy: nothing listens on {ip}:{port}")

    def start_backends(self):
        for port in self.backends:
            self.spawn(self.net.ns("taskset", "-c", "0", "redis-server", "--bind", self.net.peer_ip, "--port",
                                   str(port), "--save", "", "--appendonly", "no", "--maxclients", "20000",
                                   "--protected-mode", "no"), preexec_fn=raise_nofile)
            self.wait_port(self.net.peer_ip, port, True)

    def config(self, listen):
        servers = "".join(f"   - {self.net.peer_ip}:{p}:1 server{i}\n" for i, p in enumerate(self.backends))
        return (f"alpha:\n  listen: {listen}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n"
                f"  timeout: 5000\n  server_connections: 1\n  preconnect: true\n  servers:\n{servers}")

    def start_system(self, system):
        """The server redis-benchmark talks to: (pid or None, ip, port)."""
        if system == "direct":
            return None, self.net.peer_ip, self.backends[0]
        if system == "nutcracker":
            conf = self.tmp / "nc.yml"
            conf.write_text(self.config(f"{self.net.kernel_ip}:22121"))
            p = self.spawn(["taskset", "-c", "1", "nutcracker", "-c", str(conf), "-s", str(free_port()), "-a",
                            "127.0.0.1", "-o", str(self.tmp / "nc.log")], preexec_fn=raise_nofile)
            ip = self.net.kernel_ip
        elif system == "ukcm_kernel":
            conf = self.tmp / "uk.yml"
            conf.write_text(self.config(f"{self.net.kernel_ip}:22122"))
            p = self.spawn(["taskset", "-c", "1", self.args.proxy, "-c", str(conf), "--nic", "kernel",
                            "--stats-port", "0"], preexec_fn=raise_nofile)
            ip = self.net.kernel_ip
        else:
            conf = self.tmp / "ux.yml"
            conf.write_text(self.config(f"0.0.0.0:22121"))
            p = self.spawn(["taskset", "-c", "1", self.args.proxy, "-c", str(conf), "--nic",
                            f"afxdp:{self.net.host_if}", "--addr", f"{self.net.ukcm_ip}/24", "--stats-port", "0"],
                           preexec_fn=raise_nofile)
            ip = self.net.ukcm_ip
        port = 22122 if system == "ukcm_kernel" else 22121
        time.sleep(0.2)
        if p.poll() is not None:
            sys.exit(f"bench-proxy: {system} exited at once: {p.log.read_text()[-2000:]}")
        self.wait_port(ip, port, True)
        time.sleep(0.5)  # backends connected
        return p, ip, port

    def run_benchmark(self, ip, port, clients, requests, pipeline, tests, pid):
        cmd = self.net.ns("taskset", "-c", "0", "/usr/bin/time", "-f", "TIME %U %S %e", "redis-benchmark",
                          "-h", ip, "-p", str(port), "-c", str(clients), "-n", str(requests), "-r", "100000",
                          "-P", str(pipeline), "-t", tests, "-d", "16")
        t0 = cpu_ticks(pid) if pid else 0
        c0, c1 = core_ticks(0), core_ticks(1)
        w0 = time.monotonic()
        mem = MemPeak(pid) if pid else None
        r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=raise_nofile)
        wall = time.monotonic() - w0
        proxy_cpu = (cpu_ticks(pid) - t0) / CLK_TCK / wall * 100 if pid else None
        cpu0, cpu1 = core_busy(c0, core_ticks(0)), core_busy(c1, core_ticks(1))
        rss, lck = mem.done() if mem else (None, None)
        failed = None
        if r.returncode != 0:
            lines = [l for l in (r.stdout + r.stderr).replace("\r", "\n").splitlines() if "rror" in l]
            failed = (lines[-1] if lines else f"exit {r.returncode}").strip()
            print(f"bench-proxy: redis-benchmark failed: {failed}", flush=True)
        u, s, e = (float(x) for x in re.search(r"TIME ([\d.]+) ([\d.]+) ([\d.]+)", r.stderr).groups())
        errors = len(re.findall(r"^Error", r.stdout + r.stderr, re.M))
        return {"tests": parse_benchmark(r.stdout.replace("\r", "\n")), "client_cpu": (u + s) / e * 100 if e else 0,
                "proxy_cpu": proxy_cpu, "cpu0": cpu0, "cpu1": cpu1, "rss_kib": rss, "vmlck_kib": lck, "errors": errors, "failed": failed}

    def run(self):
        results = {"machine": machine(), "rows": [], "skipped": []}
        self.start_backends()
        systems = self.args.systems.split(",")
        n1, n16 = (100_000, 1_000_000) if self.args.quick else (300_000, 3_000_000)
        conns = [1000] if self.args.quick else [1000, 10000]
        for system in systems:
            p, ip, port = self.start_system(system)
            pid = p.pid if p else None
            for pipeline, n in ((1, n1), (16, n16)):
                r = self.run_benchmark(ip, port, 50, n, pipeline, "set,get", pid)
                results["rows"].append({"system": system, "clients": 50, "pipeline": pipeline, **r})
                report_row(results["rows"][-1])
            for c in conns:
                if system == "ukcm_afxdp" and c > self.args.max_afxdp_clients:
                    print(f"{system}: {c} clients skipped (--max-afxdp-clients {self.args.max_afxdp_clients})")
                    results["skipped"].append({"system": system, "clients": c})
                    continue
                r = self.run_benchmark(ip, port, c, c * 20, 1, "get", pid)
                results["rows"].append({"system": system, "clients": c, "pipeline": 1, **r})
                report_row(results["rows"][-1])
            if p:
                self.stop(p)
        return results

    def close(self):
        for p in self.children:
            self.stop(p)
        self.net.down()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile():
    """Room for 10,000 clients (and their proxy-side sockets) in every process."""
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def machine():
    return {"cpus": os.cpu_count(), "kernel": os.uname().release, "loadavg": os.getloadavg(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def fmt_rps(x):
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def report_row(row):
    for name, t in row["tests"].items():
        mem = f" rss {row['rss_kib'] // 1024} MiB lck {row['vmlck_kib'] // 1024} MiB" if row["rss_kib"] else ""
        cpu = f" proxy cpu {row['proxy_cpu']:.0f}%" if row["proxy_cpu"] is not None else ""
        print(f"{row['system']:<12} c={row['clients']:<5} P={row['pipeline']:<2} {name:<4} {fmt_rps(t['rps']):>8} req/s"
              f" p50 {t['p50_ms']:.3f} p99 {t['p99_ms']:.3f} ms  client cpu {row['client_cpu']:.0f}%"
              f" cpu0 {row.get('cpu0', 0):.0f}%{cpu}{mem}",
              flush=True)


def bound(row):
    """Which side limits the row: the core at (or near) 100 % busy. cpu 0 carries the load
    generator and the backends (and the kernel's work for them), cpu 1 the proxy; ukcm-proxy
    polls while it has traffic, so its core near 100 % says busy, not necessarily saturated."""
    if row["client_cpu"] >= 90:
        return "client"
    if row.get("cpu0", 0) >= 90:
        return "cpu 0 (load + backends)"
    if row["proxy_cpu"] is not None and row["proxy_cpu"] >= 90:
        return "proxy"
    return "neither (latency)"


def markdown(res):
    lines = [f"# ukcm-proxy vs nutcracker ({res['machine']['date']}, load {res['machine']['loadavg'][0]:.2f})", "",
             "`sudo scripts/bench-proxy.sh`: redis-benchmark `-r 100000 -d 16` in a namespace on cpu 0 with the two",
             "redis-server backends; the proxy on cpu 1. CPU figures are each process's share of one core over",
             "the run; `cpu 0` is that whole core's busy share (redis-benchmark, both redis-servers and the kernel's",
             "network work there); `bound` names the side at ≥ 90 %.", "",
             "| system | clients | -P | test | req/s | p50 ms | p99 ms | client cpu | cpu 0 | proxy cpu | bound | proxy RSS | proxy locked |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for row in res["rows"]:
        if row.get("failed"):
            lines.append(f"| {LABEL[row['system']]} | {row['clients']} | {row['pipeline']} | – | failed: "
                         f"{row['failed']} | | | | | | | | |")
        for name, t in row["tests"].items():
            pc = f"{row['proxy_cpu']:.0f} %" if row["proxy_cpu"] is not None else "–"
            rss = f"{row['rss_kib'] / 1024:.0f} MiB" if row["rss_kib"] else "–"
            lck = f"{row['vmlck_kib'] / 1024:.0f} MiB" if row["rss_kib"] else "–"
            lines.append(f"| {LABEL[row['system']]} | {row['clients']} | {row['pipeline']} | {name} | {fmt_rps(t['rps'])} |"
                         f" {t['p50_ms']:.3f} | {t['p99_ms']:.3f} | {row['client_cpu']:.0f} % | {row.get('cpu0', 0):.0f} % |"
                         f" {pc} | {bound(row)} |"
                         f" {rss} | {lck} |")
    for sk in res.get("skipped", []):
        lines.append(f"| {LABEL[sk['system']]} | {sk['clients']} | 1 | GET | not run (--max-afxdp-clients) |"
                     " | | | | | | | |")
    return "\n".join(lines) + "\n"


def svg(res):
    """Latency CDF of -P 1 GET, one curve per system, log-scaled time axis."""
    import math
    curves = [(r["system"], r["tests"]["GET"]["cdf"]) for r in res["rows"]
              if r["pipeline"] == 1 and r["clients"] == 50 and "GET" in r["tests"]]
    if not curves:
        return None
    w, h, ml, mb = 720, 420, 60, 50
    xs = [ms for _, c in curves for _, ms in c if ms > 0]
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    hi = hi if hi > lo else lo + 1
    X = lambda ms: ml + (math.log10(max(ms, 10 ** lo)) - lo) / (hi - lo) * (w - ml - 20)
    Y = lambda p: h - mb - p / 100 * (h - mb - 20)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="14" text-anchor="middle">GET latency CDF, -c 50 -P 1 (redis-benchmark)</text>',
           f'<line x1="{ml}" y1="{h - mb}" x2="{w - 20}" y2="{h - mb}" stroke="black"/>',
           f'<line x1="{ml}" y1="20" x2="{ml}" y2="{h - mb}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">latency (ms, log scale)</text>']
    for d in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** d
            if lo <= math.log10(v) <= hi:
                out.append(f'<line x1="{X(v):.1f}" y1="{h - mb}" x2="{X(v):.1f}" y2="{h - mb + 5}" stroke="black"/>'
                           f'<text x="{X(v):.1f}" y="{h - mb + 18}" text-anchor="middle">{v:g}</text>')
    for p in (0, 50, 90, 99, 100):
        out.append(f'<text x="{ml - 5}" y="{Y(p) + 4:.1f}" text-anchor="end">{p}%</text>')
    for i, (name, cdf) in enumerate(curves):
        pts = " ".join(f"{X(ms):.1f},{Y(p):.1f}" for p, ms in cdf)
        c = colors[i % len(colors)]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>')
        out.append(f'<text x="{ml + 10}" y="{40 + 16 * i}" fill="{c}">{LABEL[name]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--max-afxdp-clients", type=int, default=1_000_000,
                    help="skip the AF_XDP rows with more clients than this")
    args = ap.parse_args()
    for s in args.systems.split(","):
        if s not in SYSTEMS:
            sys.exit(f"bench-proxy: unknown system {s} (one of {', '.join(SYSTEMS)})")
    b = Bench(args)
    try:
        res = b.run()
    finally:
        b.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "proxy-latest.json").write_text(json.dumps(res, indent=1))
    (out / "proxy-latest.md").write_text(markdown(res))
    plot = svg(res)
    if plot:
        (out / "proxy-latency.svg").write_text(plot)
    print(markdown(res))
    print(f"wrote {out}/proxy-latest.md, proxy-latest.json, proxy-latency.svg; the processes' output "
          f"(the proxies' exit stats) in {b.tmp}")


if __name__ == "__main__":
    main()
