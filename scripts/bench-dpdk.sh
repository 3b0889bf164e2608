#!/usr/bin/env bash
# DPDK vs our own AF_XDP port, same run, same veth (root; by hand, not part of CI):
# ukcm-echo (run to completion, thrift framing, pinned to cpu 1) serves on the host end of
# a throwaway veth through, in turn, `afxdp:IF` (ukcm's AF_XDP port), DPDK's `net_af_xdp`
# vdev and DPDK's `net_af_packet` vdev; ukcm-load with kernel sockets in the namespace
# (cpu 0) drives it. Prints msgs/s (every echo verified) and frames/s through the port
# ((rx + tx frames) / load duration), per row.
#
#   sudo scripts/bench-dpdk.sh [SECONDS] [SIZE] [DEPTH]      (defaults: 5 64 16)
#   ECHO_EXTRA=--busy-poll sudo -E scripts/bench-dpdk.sh ...   (extra ukcm-echo flags)
#
# Traffic stays in the namespace made here (10.215.x.0/24, scripts/netns.sh), removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "$0: must run as root" >&2; exit 1; }
secs=${1:-5} size=${2:-64} depth=${3:-16}
scripts/install-dpdk.sh >/dev/null
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p ukcm-apps --features dpdk --bin ukcm-echo --bin ukcm-load
bin=$CARGO_TARGET_DIR/release
ns=ukcm-bdpdk
trap 'scripts/netns.sh down $ns >/dev/null' EXIT
out=$(scripts/netns.sh up $ns)
host_if=$(awk '/^host end/ {print $3}' <<<"$out")
ukcm_ip=$(sed -n 's/.*ukcm takes \([0-9.]*\)\/24.*/\1/p' <<<"$out")
eal="--no-pci --no-huge -m 512 --no-shconf --no-telemetry -l 1 --file-prefix=ukcmbench$$"

row() { # name nic
  local name=$1 nic=$2 log json
  log=$(mktemp)
  taskset -c 1 "$bin/ukcm-echo" --nic "$nic" --addr "$ukcm_ip/24" --listen 7000 --parser thrift --rtc ${ECHO_EXTRA:-} >"$log" 2>&1 &
  local pid=$!
  sleep 2
  json=$(ip netns exec $ns taskset -c 0 "$bin/ukcm-load" --nic kernel --connect "$ukcm_ip:7000" --conns 4 \
    --depth "$depth" --size "$size" --duration "$secs" --json 2>/dev/null || echo '{}')
  kill -INT $pid 2>/dev/null || { echo "ukcm-echo on $nic died:" >&2; cat "$log" >&2; }
  wait $pid || true
  local msgs lost frames
  msgs=$(grep -o '"msgs_per_s":[0-9.]*' <<<"$json" | cut -d: -f2 | cut -d. -f1)
  lost=$(grep -o '"lost":[0-9]*' <<<"$json" | cut -d: -f2)
  frames=$(grep -o 'port: rx [0-9]* frames ([0-9]* dropped), tx [0-9]*' "$log" | tail -1 |
    awk -v s="$secs" '{print int(($3 + $8) / s)}')
  printf '| %-28s | %12s | %12s | %4s |\n' "$name" "${msgs:-FAILED}" "${frames:-?}" "${lost:-?}"
  rm -f "$log"
}

echo "size $size B, depth $depth x 4 connections, $secs s per row; $(date -u +%FT%TZ)"
echo "| port | msgs/s | frames/s | lost |"
echo "|---|---:|---:|---:|"
row "ukcm AF_XDP (afxdp:)" "afxdp:$host_if:0"
row "DPDK net_af_xdp vdev" "dpdk:$eal --vdev=net_af_xdp0,iface=$host_if,start_queue=0,queue_count=1"
row "DPDK net_af_packet vdev" "dpdk:$eal --vdev=net_af_packet0,iface=$host_if"
