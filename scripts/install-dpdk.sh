#!/usr/bin/env bash
# Installs what the `dpdk` feature builds against (Debian bookworm): the system DPDK 22.11
# (libdpdk-dev, with its poll-mode drivers: af_packet, af_xdp, tap, ...), libclang for
# bindgen, and pkg-config. Only when something is missing; idempotent; needs root.
# Exit status: 0 when DPDK can be built against afterwards, 1 otherwise.
set -euo pipefail

have_dpdk() { pkg-config --exists 'libdpdk >= 22.11' 2>/dev/null; }
have_clang() { compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null || compgen -G '/usr/lib/*/libclang.so' >/dev/null; }

if have_dpdk && have_clang; then
  echo "install-dpdk: libdpdk $(pkg-config --modversion libdpdk) and libclang present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-dpdk: libdpdk-dev/libclang-dev missing and not root: cannot install" >&2
  exit 1
fi
echo "install-dpdk: installing libdpdk-dev libclang-dev pkg-config"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends libdpdk-dev libclang-dev pkg-config >/dev/null
if have_dpdk && have_clang; then
  echo "install-dpdk: done (libdpdk $(pkg-config --modversion libdpdk))"
else
  echo "install-dpdk: packages installed but libdpdk/libclang still not found" >&2
  exit 1
fi
