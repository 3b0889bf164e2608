#!/usr/bin/env bash
# ukcm demo: builds the apps in release and runs ukcm-demo — the echo server on the mux
# (kernel TCP over loopback, an ephemeral port on 127.0.0.1) and the verified load
# generator in one process, no privileges needed. Extra arguments go to ukcm-demo, e.g.
#   scripts/demo.sh --duration 10 --conns 8 --depth 32 --size 64-4096 --workers 1
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ukcm-apps --bin ukcm-demo
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/ukcm-demo" "$@"
