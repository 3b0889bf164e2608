#!/usr/bin/env bash
# 2 MiB hugepages for ukcm's pinned regions (MAP_HUGETLB).
#
#   reserve [N]  ask for N pages (default 512 = 1 GiB); the previous count is saved in
#                /run/ukcm-hugepages.prev (once: repeated reserves keep the first value).
#                The kernel may give fewer (fragmented memory): that is reported, not fatal.
#   release      put back the count saved by the first reserve.
#   status       configured, free and reserved pages, and the hugetlbfs mount.
#   mount        mount hugetlbfs (pagesize=2M) at /dev/hugepages if it is not mounted.
#
# ukcm falls back to locked 4 KiB pages without hugepages, so nothing here is required.
# Idempotent. Run as root.
set -euo pipefail

usage() { echo "usage: $0 reserve [N]|release|status|mount" >&2; exit 2; }

PREV=/run/ukcm-hugepages.prev
SYS=/sys/kernel/mm/hugepages/hugepages-2048kB
if [[ -d $SYS ]]; then NR=$SYS/nr_hugepages; else NR=/proc/sys/vm/nr_hugepages; fi

count() { cat "$NR" 2>/dev/null || echo 0; }
free_pages() { cat "$SYS/free_hugepages" 2>/dev/null || awk '/HugePages_Free/ {print $2}' /proc/meminfo; }

status() {
    echo "2 MiB hugepages: $(count) configured, $(free_pages) free ($NR)"
    if [[ -f $PREV ]]; then echo "saved previous count: $(cat "$PREV") ($PREV)"; fi
    local m
    m=$(awk '$3 == "hugetlbfs" {print $2}' /proc/mounts | tr '\n' ' ')
    echo "hugetlbfs mounted at: ${m:-(none)}"
}

need_root() { [[ $(id -u) -eq 0 ]] || { echo "$0: must run as root" >&2; exit 1; }; }

set_count() {
    if ! { echo "$1" > "$NR"; } 2>/dev/null; then
        echo "$0: warning: cannot write $NR (read-only /proc or /sys, e.g. in a container)" >&2
        return 1
    fi
}

[[ $# -ge 1 ]] || usage
case $1 in
reserve)
    [[ $# -le 2 ]] || usage
    want=${2:-512}
    [[ $want =~ ^[0-9]+$ ]] || { echo "$0: N must be a number of pages" >&2; exit 2; }
    need_root
    [[ -f $PREV ]] || count > "$PREV"
    set_count "$want" || true
    got=$(count)
    if (( got < want )); then
        echo "asked for $want 2 MiB hugepages, the kernel gave $got (memory fragmented or limited); ukcm falls back to 4 KiB pages where needed"
    else
        echo "reserved $got 2 MiB hugepages ($(( got * 2 )) MiB)"
    fi
    status
    ;;
release)
    [[ $# -eq 1 ]] || usage
    need_root
    if [[ -f $PREV ]]; then
        prev=$(cat "$PREV")
        if set_count "$prev"; then rm -f "$PREV"; fi
        echo "hugepages back to $(count) (was $prev before reserve)"
    else
        echo "nothing to release: no saved count in $PREV"
    fi
    ;;
status)
    [[ $# -eq 1 ]] || usage
    status
    ;;
mount)
    [[ $# -eq 1 ]] || usage
    need_root
    mkdir -p /dev/hugepages
    if mountpoint -q /dev/hugepages; then
        echo "/dev/hugepages already mounted"
    else
        mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages
        echo "mounted hugetlbfs at /dev/hugepages"
    fi
    ;;
*) usage ;;
esac
