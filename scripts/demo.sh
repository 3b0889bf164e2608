#!/usr/bin/env bash
# ukcm demo: builds the apps in release and runs ukcm-demo: the echo server on the mux and a
# verified load generator for a few seconds, then a result table. It says which transport it
# chose:
#   * as root (default --nic auto): a throwaway namespace + veth; the echo serves on AF_XDP
#     on the host end, the load comes from kernel sockets inside the namespace (if AF_XDP
#     cannot be set up it falls back to a TAP device inside the namespace, and says so);
#   * without root: two ukcm userspace stacks over the in-memory port pair in ONE process —
#     the echo on one engine, the load generator on the other — no privileges needed.
#   scripts/demo.sh                           # 3 s, as above
#   scripts/demo.sh --nic mem                 # the in-memory pair, also as root
#   scripts/demo.sh --nic kernel              # the mux over kernel TCP on loopback
#   sudo scripts/demo.sh --nic tap            # a TAP device in a throwaway namespace
#   scripts/demo.sh --duration 10 --conns 8 --depth 32 --size 64-4096 --workers 1
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ukcm-apps --bin ukcm-demo --bin ukcm-load
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/ukcm-demo" "$@"
