#!/usr/bin/env bash
# ukcm demo: builds the apps in release and runs ukcm-demo. By default (--nic mem) two
# ukcm userspace stacks talk over the in-memory port pair in ONE process — the echo server
# on the mux on one engine, the verified load generator on the other — no privileges needed.
#   scripts/demo.sh                           # 3 s, ukcm stack <-> ukcm stack (in-memory pair)
#   scripts/demo.sh --nic kernel              # the mux over kernel TCP on loopback
#   sudo scripts/demo.sh --nic afxdp          # AF_XDP on a throwaway veth, load from its namespace
#   scripts/demo.sh --duration 10 --conns 8 --depth 32 --size 64-4096 --workers 1
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ukcm-apps --bin ukcm-demo --bin ukcm-load
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/ukcm-demo" "$@"
