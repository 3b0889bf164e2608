#!/usr/bin/env bash
# The test command: unit, property and in-process tests, and, as root, the privileged
# integration tests against the Linux kernel in throwaway namespaces.
#
#   scripts/test.sh            # everything this machine allows
#   scripts/test.sh -p ukcm-nic  # extra arguments go to cargo test (workspace tests only)
#
# As root it installs missing system packages, reserves hugepages for the run and gives
# them back afterwards, sets UKCM_PRIVILEGED=1 (so a privileged test that cannot run fails
# instead of skipping), and removes every namespace/veth/TAP a dead test left behind.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  scripts/install-deps.sh
  export UKCM_PRIVILEGED=1
  if [ -x scripts/hugepages.sh ]; then
    scripts/hugepages.sh reserve 256 || echo "test: hugepages unavailable, 4 KiB fallback will be used"
  fi
  cleanup() {
    scripts/cleanup-testnets.sh || true
    if [ -x scripts/hugepages.sh ]; then scripts/hugepages.sh release || true; fi
  }
  trap cleanup EXIT
  scripts/cleanup-testnets.sh
else
  echo "test: not root: privileged integration tests will be skipped (run as root for all)"
fi

# DPDK (root, full runs): the `dpdk` features of the crates that have one, so that the DPDK
# tests (nic/tests/dpdk_port.rs, stack/tests/kernel_interop_dpdk.rs, apps/tests/dpdk_echo.rs)
# build and run with everything else, in one build, instead of rebuilding the workspace with
# other features afterwards. The system DPDK comes from scripts/install-dpdk.sh; each DPDK
# scenario runs in a process of its own (one EAL each).
features=()
if [ "$(id -u)" -eq 0 ] && [ $# -eq 0 ]; then
  if ! scripts/install-dpdk.sh; then
    # As root the DPDK tests must run (like every privileged test under UKCM_PRIVILEGED=1).
    echo "test: DPDK could not be installed (scripts/install-dpdk.sh): the DPDK tests cannot run" >&2
    exit 1
  fi
  features=(--features ukcm-nic/dpdk,ukcm-stack/dpdk,ukcm/dpdk,ukcm-apps/dpdk)
fi

cargo test --workspace "${features[@]}" "$@"

# The unprivileged suite once more as an ordinary user gets it (as root, full runs only):
# no capabilities (so the privileged tests skip; UKCM_PRIVILEGED unset) and Debian's default
# 8 MiB RLIMIT_MEMLOCK, so that memory which need not be locked keeps working unlocked.
# Reuses the test binaries built above.
if [ "$(id -u)" -eq 0 ] && [ $# -eq 0 ]; then
  echo "test: the unprivileged suite again, without capabilities, under an 8 MiB memory-lock limit"
  setpriv --inh-caps=-all --bounding-set=-all prlimit --memlock=8388608:8388608 \
    env -u UKCM_PRIVILEGED cargo test --workspace "${features[@]}"
fi

# Lints and docs stay true (full runs only): clippy and rustdoc with warnings denied.
if [ $# -eq 0 ]; then
  cargo clippy --workspace --all-targets -- -D warnings
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
fi

# The vendored smoltcp (outside the workspace) against upstream's own suite plus the tests of
# our patch (vendor/smoltcp/UKCM-PATCH.md): full runs only. Opt-level 1 keeps netsim short.
if [ $# -eq 0 ]; then
  (cd vendor/smoltcp && CARGO_PROFILE_DEV_OPT_LEVEL=1 CARGO_PROFILE_DEV_DEBUG=line-tables-only \
    cargo test --features _netsim --lib --test netsim)
fi
