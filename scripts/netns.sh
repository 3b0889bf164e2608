#!/usr/bin/env bash
# A network namespace with a veth pair into it: the kernel in the namespace is the peer,
# the host end (no address) is where ukcm attaches (AF_XDP or raw).
#
#   host end  <NAME-derived ukh…>  root namespace, up, no address  (ukcm takes .1)
#   peer end  <NAME-derived ukp…>  in namespace NAME, 10.215.<hash(NAME)>.2/24, up,
#                                   tx checksum offload off (userspace stacks need full sums)
#
# 10.215.0.0/16 is used by no test, so a dev topology never collides with test runs.
# Idempotent: `up` twice is fine; `down` is fine when nothing exists. Run as root.
set -euo pipefail

usage() { echo "usage: $0 up|down NAME" >&2; exit 2; }

[[ $# -eq 2 ]] || usage
cmd=$1 name=$2
[[ $name =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || { echo "$0: bad namespace name '$name' (letters, digits, _ . - ; at most 64)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "$0: must run as root" >&2; exit 1; }

# Interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL): 'ukh'/'ukp' + 8 hex digits.
hash=$(printf '%s' "$name" | cksum | cut -d' ' -f1)
hex=$(printf '%08x' "$hash")
host_if="ukh$hex"
peer_if="ukp$hex"
octet=$(( hash % 256 ))
subnet="10.215.$octet"
peer_ip="$subnet.2"
ukcm_ip="$subnet.1"

ns_exists() { [[ -e /var/run/netns/$name ]]; }

case $cmd in
up)
    ns_exists || ip netns add "$name"
    if ! ip link show "$host_if" >/dev/null 2>&1; then
        ip link add "$host_if" type veth peer name "$peer_if" netns "$name"
    fi
    ip -n "$name" link show "$peer_if" >/dev/null 2>&1 || {
        echo "$0: $host_if exists but its peer $peer_if is not in namespace $name; run '$0 down $name' first" >&2
        exit 1
    }
    sysctl -qw "net.ipv6.conf.$host_if.disable_ipv6=1" 2>/dev/null || true
    ip link set "$host_if" up
    ip -n "$name" link set lo up
    ip netns exec "$name" sysctl -qw "net.ipv6.conf.$peer_if.disable_ipv6=1" 2>/dev/null || true
    ip -n "$name" addr replace "$peer_ip/24" dev "$peer_if"
    ip -n "$name" link set "$peer_if" up
    if ! ip netns exec "$name" ethtool -K "$peer_if" tx off >/dev/null 2>&1; then
        echo "$0: warning: could not turn off tx checksum offload on $peer_if (is ethtool installed?)" >&2
    fi
    echo "namespace $name"
    echo "host end  $host_if (root namespace, no address; ukcm takes $ukcm_ip/24)"
    echo "peer end  $peer_if (in $name, $peer_ip/24)"
    ;;
down)
    ip link del "$host_if" 2>/dev/null || true
    if ns_exists; then ip netns del "$name"; fi
    echo "removed namespace $name and veth $host_if/$peer_if (if they existed)"
    ;;
*) usage ;;
esac
