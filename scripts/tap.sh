#!/usr/bin/env bash
# A persistent TAP device whose kernel side is addressed and up: the kernel side of the
# TAP dev loop. A ukcm TapPort then attaches to it by name (TapConfig { name, must_exist:
# true, .. }) and the stack takes another address in the subnet: by convention .1 (for the
# default 10.216.0.2/24 the stack is 10.216.0.1/24).
#
# When run under sudo, the device is owned by $SUDO_USER, so that user's ukcm process can
# attach without CAP_NET_ADMIN. UKCM_TAP_MULTI_QUEUE=1 makes a multi-queue TAP (then open it
# with TapPort::open_queues). Idempotent; `down` is fine when the device is absent. Run as root.
set -euo pipefail

usage() { echo "usage: $0 up|down NAME [CIDR]   (CIDR default 10.216.0.2/24: the kernel side)" >&2; exit 2; }

[[ $# -ge 2 && $# -le 3 ]] || usage
cmd=$1 name=$2 cidr=${3:-10.216.0.2/24}
[[ ${#name} -le 15 && $name =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "$0: bad interface name '$name' (at most 15 of letters, digits, _ . -)" >&2; exit 2; }
[[ $cidr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] || { echo "$0: bad CIDR '$cidr' (e.g. 10.216.0.2/24)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "$0: must run as root" >&2; exit 1; }

case $cmd in
up)
    if ! ip link show "$name" >/dev/null 2>&1; then
        [[ -e /dev/net/tun ]] || { echo "$0: /dev/net/tun missing (modprobe tun)" >&2; exit 1; }
        args=(tuntap add dev "$name" mode tap)
        [[ ${UKCM_TAP_MULTI_QUEUE:-0} == 1 ]] && args+=(multi_queue)
        [[ -n ${SUDO_USER:-} ]] && args+=(user "$SUDO_USER")
        ip "${args[@]}"
    elif [[ ! -e /sys/class/net/$name/tun_flags ]]; then
        echo "$0: $name exists and is not a TAP device" >&2
        exit 1
    fi
    sysctl -qw "net.ipv6.conf.$name.disable_ipv6=1" 2>/dev/null || true
    ip addr replace "$cidr" dev "$name"
    ip link set "$name" up
    ethtool -K "$name" tx off >/dev/null 2>&1 || true
    echo "TAP $name: kernel side $cidr, up (persistent)"
    echo "ukcm: attach to $name and take another address in that subnet (convention: .1)"
    ;;
down)
    if ip link show "$name" >/dev/null 2>&1; then
        ip tuntap del dev "$name" mode tap 2>/dev/null || ip tuntap del dev "$name" mode tap multi_queue 2>/dev/null \
            || ip link del "$name"
    fi
    echo "TAP $name removed (if it existed)"
    ;;
*) usage ;;
esac
