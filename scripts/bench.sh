#!/usr/bin/env bash
# ukcm system benchmark: builds the apps in release and runs ukcm-bench, which measures in
# ONE run, on one veth/namespace topology (TestNet) with one load generator (ukcm-load
# inside the namespace):
#   ukcm-echo on AF_XDP (worker thread, run-to-completion), ukcm-echo --nic kernel (the mux
#   over kernel TCP), epoll-echo (plain epoll) and tokio-echo (tokio + LengthDelimitedCodec)
#   under a kernel-socket load; and both ends on ukcm (ukcm-load on its own engine on
#   AF_XDP against ukcm-echo on AF_XDP) against kernel <-> kernel (the epoll row);
#   at 64 B / 1 KiB / 64 KiB, depth 1 and 64, 4 connections; servers on cpu 1, load on cpu 0.
# Writes bench/results/latest.md, latest.json (with the machine and its load average) and
# latency-cdf.svg (depth 1, one curve per system). Needs root for AF_XDP and the namespace;
# without root it runs the kernel-TCP rows over loopback and says so.
#   sudo scripts/bench.sh            # full run (~6 min)
#   sudo scripts/bench.sh --quick    # 1 KiB, depth 64, 3 s per server
#   sudo scripts/bench.sh --sizes 64 --depths 1 --systems ukcm_afxdp_workers,epoll --out /tmp/b
#   sudo scripts/bench.sh --rt 20    # every server and load under SCHED_FIFO 20 (a shared machine)
#   sudo scripts/bench.sh --mtu 3500 # veth MTU on both ends, for the AF_XDP and the kernel rows
#                                    # (AF_XDP takes up to 3826; veth native XDP up to 3506)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench.sh: not root: AF_XDP rows skipped, kernel rows over loopback" >&2
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "bench.sh: needs 2 CPUs (server on cpu 1, load on cpu 0)" >&2
  exit 1
fi
cargo build --release -q -p ukcm-apps
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/ukcm-bench" --out bench/results "$@"
