#!/usr/bin/env bash
# Removes test namespaces and veths left behind by test processes that died (a test's own
# Drop cleans up normally; a SIGKILLed test cannot). Only touches names ukcm's tests create
# (`ukcm-<tag>-<pid>-<n>` namespaces, `uk<pid>x<n>[ab]` links, `ukt*` taps) whose pid is gone.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || exit 0

for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^ukcm-' || true); do
  pid=$(echo "$ns" | awk -F- '{print $(NF-1)}')
  if [[ "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
    ip netns del "$ns" 2>/dev/null && echo "cleanup: removed namespace $ns"
  fi
done
for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^uk[0-9]+x[0-9]+[ab]$' || true); do
  pid=$(echo "$link" | sed -E 's/^uk([0-9]+)x.*/\1/')
  if ! kill -0 "$pid" 2>/dev/null; then
    ip link del "$link" 2>/dev/null && echo "cleanup: removed link $link"
  fi
done
exit 0
