#!/usr/bin/env bash
# Installs the system packages ukcm's tests and tools use (Debian), only those missing.
# Idempotent; needs root for apt-get. Usage: scripts/install-deps.sh
set -euo pipefail

# command -> Debian package
declare -A PKG=(
  [ip]=iproute2
  [ethtool]=ethtool
  [ping]=iputils-ping
  [tcpdump]=tcpdump
  [tshark]=tshark
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [nutcracker]=nutcracker
  [memcached]=memcached
  [memccp]=libmemcached-tools
)

missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done

# Python libraries the real-client tests use (Apache Thrift's own library, pymemcache),
# from PyPI.
for mod in thrift pymemcache; do
  if ! python3 -c "import $mod" >/dev/null 2>&1; then
    python3 -m pip install --quiet "$mod" >/dev/null 2>&1 \
      || python3 -m pip install --quiet --break-system-packages "$mod" >/dev/null 2>&1 \
      || echo "install-deps: pip install $mod failed; the tests that use it will say so" >&2
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]} but not root; privileged tests will be skipped" >&2
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer once, non-interactively.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
