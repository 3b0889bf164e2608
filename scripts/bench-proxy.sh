#!/usr/bin/env bash
# ukcm-proxy against nutcracker (twemproxy), measured side by side in ONE run with
# redis-benchmark, on one veth into a throwaway namespace:
#   namespace (cpu 0): two redis-server backends and redis-benchmark
#   root namespace (cpu 1): the proxy under test, on the host end of the veth
# Rows: one backend directly, nutcracker (kernel sockets), ukcm-proxy --nic kernel, and
# ukcm-proxy on AF_XDP; `-c 50 -r 100000 -t set,get` at -P 1 and -P 16; then 1,000 and
# 10,000 clients with few requests each, with the proxy's resident and locked memory.
# Each row shows redis-benchmark's and the proxy's CPU use, so a row bound by the client
# core is visible. Writes bench/results/proxy-latest.md, proxy-latest.json and
# proxy-latency.svg (latency CDF, -P 1 GET). A benchmark, run by hand (root; ~3 min):
#   sudo scripts/bench-proxy.sh
#   sudo scripts/bench-proxy.sh --quick             # fewer requests, no 10k-client rows
#   sudo scripts/bench-proxy.sh --systems nutcracker,ukcm_afxdp
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench-proxy.sh: needs root (namespace, veth, AF_XDP)" >&2
  exit 1
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "bench-proxy.sh: needs 2 CPUs (proxy on cpu 1, backends and load on cpu 0)" >&2
  exit 1
fi
scripts/install-deps.sh
cargo build --release -q -p ukcm-apps --bin ukcm-proxy
exec python3 scripts/bench_proxy.py --proxy "${CARGO_TARGET_DIR:-target}/release/ukcm-proxy" "$@"
