#!/usr/bin/env bash
# Memory per mostly idle connection: ukcm against the kernel, side by side in one run
# (issue 14). Root; release builds of ukcm-echo and epoll-echo.
#
#   scripts/conn-memory.sh              # 1000 and 10000 connections
#   scripts/conn-memory.sh 500 2000     # other counts
#
# For each count N, twice: `ukcm-echo --nic afxdp:IF --parser thrift --rtc` on the host end
# of a veth, then the kernel's `epoll-echo` in a namespace on the same kind of veth. A
# client in a namespace (bound to its veth) opens N connections, 512 handshakes at a time,
# sends one 64-byte message on each and checks its echo, then holds them all open while
# the server's memory is read, and finally closes them with RST (no orphans left behind).
#
# Per connection it reports (delta from before the clients to while they are held):
#   ukcm:   what the stats charge per idle connection (rings + state), VmLck, VmRSS, and the
#           machine's slab (Slab in /proc/meminfo: the clients' kernel sockets plus ukcm's
#           own kernel objects, e.g. the rings' memfds and mappings)
#   kernel: epoll-echo's VmRSS, the machine's slab (both ends' sockets), TCP slab objects
#           (2 per connection: client and server) and /proc/net/sockstat's TCP `mem` pages
# The kernel's figures are machine-wide: run it on a quiet machine, or say what else ran.
#
# Environment: UKCM_ECHO, EPOLL_ECHO (binaries; default target/release/…), PORT (7420).
# Namespaces ukcm-cm-<pid>-{c,s} (scripts/cleanup-testnets.sh removes them if killed).
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "$0: must run as root" >&2; exit 1; }
counts=("$@")
[[ ${#counts[@]} -gt 0 ]] || counts=(1000 10000)
UKCM_ECHO=${UKCM_ECHO:-target/release/ukcm-echo}
EPOLL_ECHO=${EPOLL_ECHO:-target/release/epoll-echo}
PORT=${PORT:-7420}
for b in "$UKCM_ECHO" "$EPOLL_ECHO"; do
  [[ -x $b ]] || { echo "$0: $b missing: cargo build --release -p ukcm-apps --bin ukcm-echo --bin epoll-echo" >&2; exit 1; }
done

id=$$
tmp=$(mktemp -d)
cli_ns="ukcm-cm-$id-c"   # the clients
srv_ns="ukcm-cm-$id-s"   # epoll-echo
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
  ip link del "cmu${id}a" 2>/dev/null || true
  ip netns del "$cli_ns" 2>/dev/null || true
  ip netns del "$srv_ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Client namespace with two veths: cmu<id>a/b towards ukcm (host end in this namespace,
# no address: AF_XDP takes it), cmk<id>a/b towards the kernel server's namespace.
ip netns add "$cli_ns"
ip netns add "$srv_ns"
ip link add "cmu${id}a" type veth peer name "cmu${id}b" netns "$cli_ns"
ip link add "cmk${id}a" netns "$srv_ns" type veth peer name "cmk${id}b" netns "$cli_ns"
sysctl -qw "net.ipv6.conf.cmu${id}a.disable_ipv6=1" || true
ip link set "cmu${id}a" up
ip -n "$cli_ns" link set lo up
ip -n "$srv_ns" link set lo up
ip -n "$cli_ns" addr add 10.217.1.2/24 dev "cmu${id}b"
ip -n "$cli_ns" link set "cmu${id}b" up
ip netns exec "$cli_ns" ethtool -K "cmu${id}b" tx off >/dev/null   # full checksums for AF_XDP
ip -n "$cli_ns" addr add 10.217.2.2/24 dev "cmk${id}b"
ip -n "$cli_ns" link set "cmk${id}b" up
ip -n "$srv_ns" addr add 10.217.2.1/24 dev "cmk${id}a"
ip -n "$srv_ns" link set "cmk${id}a" up
# Namespace-local kernel settings: room for the clients' source ports; a listen backlog
# for the kernel server's bursts of 512 handshakes (no SYN cookies needed).
ip netns exec "$cli_ns" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"
ip netns exec "$srv_ns" sysctl -qw net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096

cat >"$tmp/client.py" <<'EOF'
# Opens N connections to DST:PORT through DEV, WINDOW handshakes at a time, one 64-byte
# message each way (checked), prints "ready", holds them until stdin closes, then resets
# them (SO_LINGER 0: no orphans).
import resource, select, socket, struct, sys
dev, dst, port, n, window = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), 512
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1024, n + 1024))
def msg(i):
    body = (b"conn %8d " % i).ljust(60, b"x")
    return struct.pack(">I", len(body)) + body
held = []
for first in range(0, n, window):
    batch = {}
    for i in range(first, min(first + window, n)):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
        s.setblocking(False)
        s.connect_ex((dst, port))
        batch[s.fileno()] = (i, s)
    p = select.poll()
    for fd in batch:
        p.register(fd, select.POLLOUT)
    waiting, got = set(batch), {}
    while waiting:
        ev = p.poll(60_000)
        if not ev:
            sys.exit("no progress in 60 s (%d waiting)" % len(waiting))
        for fd, e in ev:
            i, s = batch[fd]
            if e & select.POLLOUT:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    sys.exit("connection %d: error %d" % (i, err))
                assert s.send(msg(i)) == 64
                p.modify(fd, select.POLLIN)
                got[fd] = b""
            elif e & select.POLLIN:
                got[fd] += s.recv(64 - len(got[fd]))
                if len(got[fd]) == 64:
                    if got[fd] != msg(i):
                        sys.exit("connection %d: echo differs" % i)
                    p.unregister(fd)
                    waiting.discard(fd)
            else:
                sys.exit("connection %d: poll event %d" % (i, e))
    held.extend(s for _, s in batch.values())
print("ready %d" % len(held), flush=True)
sys.stdin.read()
for s in held:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
EOF

status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
slab_kb() { awk '$1 == "Slab:" { print $2 }' /proc/meminfo; }
tcp_objs() { awk '$1 == "TCP" { print $2 }' /proc/slabinfo; }
tcp_mem_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
per() { echo $(( ($1) / $2 )); }

# Runs the client against DST through DEV with N connections; returns once they are held
# (the client's stdin is fd 3 of this shell: closing it ends the client).
start_clients() {
  local dev=$1 dst=$2 n=$3
  rm -f "$tmp/ctl" && mkfifo "$tmp/ctl"
  ip netns exec "$cli_ns" /usr/bin/python3 "$tmp/client.py" "$dev" "$dst" "$PORT" "$n" <"$tmp/ctl" >"$tmp/client.out" &
  client_pid=$!
  exec 3>"$tmp/ctl"
  while ! grep -q '^ready' "$tmp/client.out"; do
    kill -0 "$client_pid" 2>/dev/null || { echo "$0: the client failed" >&2; exit 1; }
    sleep 0.2
  done
  sleep 1 # a stats snapshot or two, and the kernel's delayed ACKs
}
stop_clients() {
  exec 3>&-
  wait "$client_pid"
}
wait_for() { # file pattern
  for _ in $(seq 100); do grep -q "$2" "$1" && return 0; sleep 0.1; done
  echo "$0: '$2' not seen in $1:" >&2; cat "$1" >&2; exit 1
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# ukcm: $UKCM_ECHO --nic afxdp:cmu${id}a --parser thrift --rtc; kernel: $EPOLL_ECHO"
printf '%-6s %-7s %12s %12s %12s %12s %12s %12s\n' conns server charged/idle VmLck/conn VmRSS/conn slab/conn TCP-objs sockstat-mem
for n in "${counts[@]}"; do
  # ukcm
  "$UKCM_ECHO" --nic "afxdp:cmu${id}a" --addr 10.217.1.1/24 --listen "$PORT" --parser thrift --rtc >"$tmp/ukcm.out" 2>&1 &
  server_pid=$!
  wait_for "$tmp/ukcm.out" "listening on"
  rss0=$(status_kb "$server_pid" VmRSS) lck0=$(status_kb "$server_pid" VmLck) slab0=$(slab_kb)
  start_clients "cmu${id}b" 10.217.1.1 "$n"
  rss1=$(status_kb "$server_pid" VmRSS) lck1=$(status_kb "$server_pid" VmLck) slab1=$(slab_kb)
  kill -INT "$server_pid"
  wait "$server_pid" || true
  server_pid=""
  stop_clients
  charged=$(grep -o 'at most connections ([0-9]*): [0-9]* B per idle one' "$tmp/ukcm.out" | tail -1 | awk '{print $5}')
  printf '%-6s %-7s %12s %12s %12s %12s %12s %12s\n' "$n" ukcm "${charged:-?}" \
    "$(per "(lck1 - lck0) * 1024" "$n")" "$(per "(rss1 - rss0) * 1024" "$n")" "$(per "(slab1 - slab0) * 1024" "$n")" - -
  grep -o 'rings: .*in all (rings and state)' "$tmp/ukcm.out" | tail -1 | sed 's/^/#   ukcm stats: /' || true

  # kernel
  ip netns exec "$srv_ns" "$EPOLL_ECHO" --listen "10.217.2.1:$PORT" >"$tmp/epoll.out" 2>&1 &
  server_pid=$!
  wait_for "$tmp/epoll.out" "listening on"
  # `ip netns exec` execs the server: same pid.
  rss0=$(status_kb "$server_pid" VmRSS) slab0=$(slab_kb) objs0=$(tcp_objs) mem0=$(tcp_mem_pages)
  start_clients "cmk${id}b" 10.217.2.1 "$n"
  rss1=$(status_kb "$server_pid" VmRSS) slab1=$(slab_kb) objs1=$(tcp_objs) mem1=$(tcp_mem_pages)
  stop_clients
  kill -INT "$server_pid"
  wait "$server_pid" || true
  server_pid=""
  printf '%-6s %-7s %12s %12s %12s %12s %12s %12s\n' "$n" kernel - - \
    "$(per "(rss1 - rss0) * 1024" "$n")" "$(per "(slab1 - slab0) * 1024" "$n")" "$((objs1 - objs0))" "$((mem1 - mem0))"
done
echo "# per connection, in bytes; slab/conn is machine-wide (both ends' kernel sockets in the kernel rows, the clients' and ukcm's own kernel objects in the ukcm rows); TCP-objs: slab TCP objects added (client + server sockets); sockstat-mem: TCP pages in use added"
