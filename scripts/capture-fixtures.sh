#!/usr/bin/env bash
# Records the pcap fixtures of pcap-tests: TCP sessions between real programs none of us
# wrote, captured by tcpdump, with a manifest of the messages each flow carried, derived by
# Wireshark's dissectors (never by ukcm's parsers).
#
#   sudo scripts/capture-fixtures.sh                 # every fixture, into pcap-tests/fixtures
#   sudo scripts/capture-fixtures.sh memcached dns   # only these
#   OUT=/tmp/fx sudo -E scripts/capture-fixtures.sh  # somewhere else
#
# Fixtures (name: server <- client, parser):
#   memcached_binary: Debian's memcached <- libmemcached's memccp/memccat/memcexist/memcrm
#                     with --binary (memcached binary protocol)               parser memcached
#   http2_h2c:        nghttpd --no-tls <- nghttp (HTTP/2 with prior knowledge; GETs, a POST)
#                                                                             parser http2
#   dns_tcp:          dnslib's zoneresolver (python3-dnslib) --tcp <- kdig +tcp (knot-dnsutils)
#                                                                             parser dns
#   thrift_framed:    Apache Thrift's Python library (python3-thrift): TSimpleServer with
#                     TFramedTransport + TBinaryProtocol <- a client on the same library
#                                                                             parser thrift
#   redis_resp:       redis-server <- redis-cli (commands as arguments, one connection each)
#                                                                             parser resp
#
# Topology, made here and torn down on any exit: two throwaway namespaces joined by a veth,
#   ukcm-caps-<pid>-0  (server, 10.219.0.1/24, MAC 02:00:0a:db:00:01, veth uk<pid>x9a)
#   ukcm-capc-<pid>-0  (client, 10.219.0.2/24, MAC 02:00:0a:db:00:02, veth uk<pid>x9b)
# Both programs run inside the namespaces: nothing is routed out of them (they have no
# default route), so no traffic can leave the machine. tcpdump listens on the client's veth
# (the far end from the server). Offloads are off on both ends (no TSO/GSO/GRO, full
# checksums in software) so the capture holds wire-sized segments with valid checksums, as
# a NIC would deliver them.
#
# Manifest (<name>.manifest, text): for each TCP flow (tshark's tcp.stream order) its client
# and server endpoints, then per direction (c2s, s2c) each message's index, length and
# FNV-1a 64 hash of its bytes (offset basis 0xcbf29ce484222325, prime 0x100000001b3, over
# the whole message, header included). Message boundaries come from Wireshark's dissectors
# (`tshark -T fields` with the protocol's length fields, or for RESP the size of each
# top-level value in PDML) and the bytes from tshark's own TCP reassembly (`-z follow,tcp,raw`);
# the script checks that the lengths add up to each direction's stream exactly.
#
# Installs what it needs with apt (only what is missing). Re-runnable: each run replaces
# the named fixtures. CI does not run it; it uses the committed fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-pcap-tests/fixtures}
ALL=(memcached_binary http2_h2c dns_tcp thrift_framed redis_resp)
[[ $(id -u) -eq 0 ]] || { echo "$0: must run as root (namespaces, tcpdump)" >&2; exit 1; }

# --- dependencies ---------------------------------------------------------------------
PKGS=(iproute2 ethtool tcpdump tshark memcached libmemcached-tools nghttp2-client nghttp2-server
      knot-dnsutils redis-server redis-tools python3 python3-thrift python3-dnslib)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "capture: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's python carries python3-thrift/python3-dnslib (not a pyenv one that may shadow it).
PY=/usr/bin/python3

# --- topology -------------------------------------------------------------------------
NS_S="ukcm-caps-$$-0"
NS_C="ukcm-capc-$$-0"
IF_S="uk$$x9a"
IF_C="uk$$x9b"
IP_S=10.219.0.1
IP_C=10.219.0.2
WORK=$(mktemp -d /tmp/ukcm-capture.XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS_S" 2>/dev/null || true
  ip netns del "$NS_C" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

S() { ip netns exec "$NS_S" "$@"; }
C() { ip netns exec "$NS_C" "$@"; }

ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add "$IF_S" netns "$NS_S" type veth peer name "$IF_C" netns "$NS_C"
S ip link set "$IF_S" address 02:00:0a:db:00:01
C ip link set "$IF_C" address 02:00:0a:db:00:02
for side in S C; do
  ifc=IF_$side ip=IP_$side
  $side sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  $side ip link set lo up
  $side ip addr add "${!ip}/24" dev "${!ifc}"
  $side ethtool -K "${!ifc}" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
  $side ip link set "${!ifc}" up
done
# No default route in either namespace: a wrong address fails instead of leaving.
if S ip route | grep -q default || C ip route | grep -q default; then
  echo "$0: a namespace has a default route; refusing" >&2; exit 1
fi
C ping -c1 -W2 "$IP_S" >/dev/null

wait_port() { # ns port: until something listens on TCP port
  for _ in $(seq 100); do
    if ip netns exec "$1" ss -Htln "sport = :$2" | grep -q .; then return 0; fi
    sleep 0.05
  done
  echo "$0: nothing listens on port $2 in $1" >&2; return 1
}

start_bg() { # log cmd... : start in background, remember the pid
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
}

capture_start() { # pcap port
  start_bg "$WORK/tcpdump.log" ip netns exec "$NS_C" tcpdump -i "$IF_C" -n -s 0 -U --immediate-mode -Z root -w "$1" "tcp port $2"
  TCPDUMP=$!
  for _ in $(seq 100); do grep -q "listening on" "$WORK/tcpdump.log" 2>/dev/null && return 0; sleep 0.05; done
  echo "$0: tcpdump did not start: $(cat "$WORK/tcpdump.log")" >&2; return 1
}

capture_stop() {
  sleep 0.3
  kill -INT "$TCPDUMP"; wait "$TCPDUMP" 2>/dev/null || true
  cat "$WORK/tcpdump.log" >&2
}

stop_server() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# --- manifest -------------------------------------------------------------------------
# manifest NAME PARSER PORT LENGTH-RULE [tshark decode-as]
manifest() {
  "$PY" - "$OUT/$1.pcap" "$OUT/$1.manifest" "$2" "$3" "$4" "${5:-}" "$DESC" <<'EOF'
import subprocess, sys, re
pcap, out, parser, port, rule, decode, desc = sys.argv[1:8]
port = int(port)

def tshark(*args):
    cmd = ["tshark", "-n", "-r", pcap, "-o", "tcp.desegment_tcp_streams:TRUE"]
    if decode:
        cmd += ["-d", decode]
    r = subprocess.run(cmd + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"tshark failed: {r.stderr}")
    return r.stdout

def fnv(b):
    h = 0xcbf29ce484222325
    for x in b:
        h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h

# The flows and their bytes, per direction, from tshark's reassembly.
streams = sorted({int(s) for s in tshark("-T", "fields", "-e", "tcp.stream").split() if s})
flows = {}
for s in streams:
    txt = tshark("-q", "-z", f"follow,tcp,raw,{s}")
    nodes = re.findall(r"Node [01]: (\S+)", txt)
    body = txt.split(nodes[1], 1)[1] if len(nodes) == 2 else ""
    c2s, s2c = bytearray(), bytearray()
    for line in body.splitlines():
        if line.startswith("====") or not line.strip():
            continue
        (s2c if line.startswith("\t") else c2s).extend(bytes.fromhex(line.strip()))
    client, server = nodes
    if int(server.rsplit(":", 1)[1]) != port:
        sys.exit(f"stream {s}: node 1 {server} is not the server port {port}")
    flows[s] = {"client": client, "server": server, "c2s": bytes(c2s), "s2c": bytes(s2c), "lens": {"c2s": [], "s2c": []}}

# Message lengths from the dissector, frame by frame (PDUs appear in the frame that completes them).
def direction(srcport):
    return "s2c" if int(srcport) == port else "c2s"

if rule == "resp-pdml":
    # RESP has no length field: take the size of each top-level RESP value in PDML.
    import xml.etree.ElementTree as ET
    root = ET.fromstring(tshark("-T", "pdml", "-Y", "resp"))
    for pkt in root.iter("packet"):
        protos = {p.get("name"): p for p in pkt.iter("proto")}
        tcp = protos["tcp"]
        fields = {f.get("name"): f.get("show") for f in tcp.iter("field")}
        d = direction(fields["tcp.srcport"])
        for p in pkt.iter("proto"):
            if p.get("name") != "resp":
                continue
            # A frame that ends inside a message shows a partial decode, marked; the whole
            # message is dissected again in the frame that completes it.
            if any(f.get("name") in ("resp.reassembled_in_next_frame", "resp.partial") for f in p.iter("field")):
                continue
            # Each direct child of the PDU is one top-level RESP value: one message.
            for top in p.findall("field"):
                flows[int(fields["tcp.stream"])]["lens"][d].append(int(top.get("size")))
else:
    # rule: FIELD+HEADER, optionally MAGIC_FIELD=LEN for a preface counted as one message
    parts = rule.split(";")
    field, hdr = parts[0].split("+")
    magic = parts[1].split("=") if len(parts) > 1 else None
    extra = ["-e", magic[0]] if magic else []
    out_f = tshark("-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,",
                   "-e", "tcp.stream", "-e", "tcp.srcport", "-e", field, *extra)
    for line in out_f.splitlines():
        cols = line.split("\t")
        if len(cols) < 3 or not cols[2] and not (magic and cols[3]):
            continue
        lens = flows[int(cols[0])]["lens"][direction(cols[1])]
        if magic and cols[3]:
            lens.append(int(magic[1]))
        lens.extend(int(v, 0) + int(hdr) for v in cols[2].split(",") if v)

with open(out, "w") as f:
    f.write("# ukcm pcap fixture manifest v1\n")
    f.write(f"# source: {desc}\n")
    f.write("# message boundaries: Wireshark's dissectors (tshark); bytes: tshark's TCP reassembly\n")
    f.write("# hash: FNV-1a 64 over each whole message (offset 0xcbf29ce484222325, prime 0x100000001b3)\n")
    f.write("# lines: flow INDEX CLIENT SERVER / msg FLOW DIR INDEX LEN HASH\n")
    f.write(f"parser {parser}\n")
    for i, s in enumerate(streams):
        fl = flows[s]
        f.write(f"flow {i} {fl['client']} {fl['server']}\n")
        for d in ("c2s", "s2c"):
            data, lens = fl[d], fl["lens"][d]
            if sum(lens) != len(data):
                sys.exit(f"stream {s} {d}: dissector lengths add up to {sum(lens)}, stream has {len(data)} bytes")
            off = 0
            for k, n in enumerate(lens):
                f.write(f"msg {i} {d} {k} {n} {fnv(data[off:off+n]):016x}\n")
                off += n
    total = sum(len(fl["lens"][d]) for fl in flows.values() for d in ("c2s", "s2c"))
    print(f"manifest: {out}: {len(streams)} flows, {total} messages")
EOF
}

# --- fixtures -------------------------------------------------------------------------
fx_memcached_binary() {
  DESC="memcached $(memcached -V | cut -d' ' -f2) (Debian) driven by libmemcached-tools (memccp, memccat, memcexist, memcrm, --binary)"
  start_bg "$WORK/memcached.log" ip netns exec "$NS_S" memcached -u nobody -l "$IP_S" -p 11211 -U 0 -m 16
  local srv=$!
  wait_port "$NS_S" 11211
  mkdir -p "$WORK/mc" && cd "$WORK/mc"
  printf 'hello, memcached\n' >small.txt
  head -c 3000 /dev/zero | tr '\0' 'm' >medium.txt
  seq 1 2000 >numbers.txt
  capture_start "$WORK/cap.pcap" 11211
  local s="--servers=$IP_S:11211"
  C memccp "$s" --binary small.txt medium.txt numbers.txt
  C memccat "$s" --binary small.txt medium.txt numbers.txt >/dev/null
  C memcexist "$s" --binary small.txt nosuchkey >/dev/null || true
  C memcrm "$s" --binary medium.txt
  C memccat "$s" --binary medium.txt >/dev/null 2>&1 || true
  capture_stop
  cd - >/dev/null
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/memcached_binary.pcap"
  manifest memcached_binary memcached 11211 "memcache.total_body_length+24"
}

fx_http2_h2c() {
  DESC="nghttpd $(nghttpd --version | awk '{print $2}') --no-tls <- nghttp (Debian nghttp2), h2c with prior knowledge"
  mkdir -p "$WORK/www"
  printf '<html><body>ukcm http2 fixture</body></html>\n' >"$WORK/www/index.html"
  seq 1 6000 >"$WORK/www/numbers.txt"
  seq 1 800 >"$WORK/post.txt"
  start_bg "$WORK/nghttpd.log" ip netns exec "$NS_S" nghttpd --no-tls -d "$WORK/www" 8080
  local srv=$!
  wait_port "$NS_S" 8080
  capture_start "$WORK/cap.pcap" 8080
  C nghttp -n "http://$IP_S:8080/index.html" "http://$IP_S:8080/numbers.txt"
  C nghttp -n -d "$WORK/post.txt" "http://$IP_S:8080/index.html"
  capture_stop
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/http2_h2c.pcap"
  manifest http2_h2c http2 8080 "http2.length+9;http2.magic=24" "tcp.port==8080,http2"
}

fx_dns_tcp() {
  DESC="dnslib $($PY -c 'import dnslib; print(dnslib.version)') zoneresolver --tcp (python3-dnslib) <- kdig +tcp (knot-dnsutils $(kdig -V | awk '{print $NF}'))"
  {
    echo '$ORIGIN example.test.'
    echo '$TTL 300'
    echo '@ IN SOA ns1 admin 1 3600 600 86400 300'
    echo '@ IN NS ns1'
    echo 'ns1 IN A 10.219.0.1'
    echo 'www IN A 10.219.0.10'
    echo 'www IN AAAA fd00::10'
    echo 'mail IN MX 10 mx1'
    for i in $(seq 1 40); do
      echo "big IN TXT \"record $i: padding padding padding padding padding padding padding padding\""
    done
  } >"$WORK/zone"
  start_bg "$WORK/dns.log" ip netns exec "$NS_S" "$PY" -m dnslib.zoneresolver --zone "$WORK/zone" \
    --address "$IP_S" --port 53 --tcp
  local srv=$!
  wait_port "$NS_S" 53
  capture_start "$WORK/cap.pcap" 53
  for q in "www.example.test A" "www.example.test AAAA" "mail.example.test MX" "big.example.test TXT" \
           "nosuch.example.test A"; do
    # shellcheck disable=SC2086
    C kdig +tcp +nocookie "@$IP_S" -p 53 $q >/dev/null
  done
  capture_stop
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/dns_tcp.pcap"
  manifest dns_tcp dns 53 "dns.length+2"
}

fx_thrift_framed() {
  DESC="Apache Thrift $($PY -c 'import thrift, importlib.metadata as m; print(m.version("thrift"))' 2>/dev/null || echo '(Debian python3-thrift)') Python library: TSimpleServer + TFramedTransport + TBinaryProtocol, both ends"
  cat >"$WORK/thrift_app.py" <<'EOF'
"""A tiny Thrift service on the library's own transport and protocol classes: method
'echo(1: string s)' returns s, 'add(1: i32 a, 2: i32 b)' returns a + b."""
import sys
from thrift.Thrift import TMessageType, TType
from thrift.transport import TSocket, TTransport
from thrift.protocol import TBinaryProtocol
from thrift.server import TServer

def read_args(p):
    vals = {}
    p.readStructBegin()
    while True:
        _, t, fid = p.readFieldBegin()
        if t == TType.STOP:
            break
        vals[fid] = p.readString() if t == TType.STRING else p.readI32()
        p.readFieldEnd()
    p.readStructEnd()
    return vals

def write_result(p, name, seqid, t, v):
    p.writeMessageBegin(name, TMessageType.REPLY, seqid)
    p.writeStructBegin(name + "_result")
    p.writeFieldBegin("success", t, 0)
    p.writeString(v) if t == TType.STRING else p.writeI32(v)
    p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()
    p.writeMessageEnd()
    p.trans.flush()

class Processor:
    def process(self, iprot, oprot):
        name, _, seqid = iprot.readMessageBegin()
        args = read_args(iprot)
        iprot.readMessageEnd()
        if name == "echo":
            write_result(oprot, name, seqid, TType.STRING, args[1])
        else:
            write_result(oprot, name, seqid, TType.I32, args[1] + args[2])
        return True

def serve(host, port):
    server = TServer.TSimpleServer(Processor(), TSocket.TServerSocket(host=host, port=port),
                                   TTransport.TFramedTransportFactory(), TBinaryProtocol.TBinaryProtocolFactory())
    server.serve()

def call(p, seqid, name, fields):
    p.writeMessageBegin(name, TMessageType.CALL, seqid)
    p.writeStructBegin(name + "_args")
    for fid, (t, v) in enumerate(fields, 1):
        p.writeFieldBegin("f%d" % fid, t, fid)
        p.writeString(v) if t == TType.STRING else p.writeI32(v)
        p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()
    p.writeMessageEnd()
    p.trans.flush()
    rname, _, rseq = p.readMessageBegin()
    assert rseq == seqid, (rseq, seqid)
    res = read_args(p)
    p.readMessageEnd()
    return res[0]

def client(host, port):
    sock = TSocket.TSocket(host, port)
    trans = TTransport.TFramedTransport(sock)
    p = TBinaryProtocol.TBinaryProtocol(trans)
    trans.open()
    assert call(p, 1, "add", [(TType.I32, 40), (TType.I32, 2)]) == 42
    for i, n in enumerate([0, 10, 100, 1400, 5000]):
        s = ("thrift-%d-" % n + "x" * n)
        assert call(p, 2 + i, "echo", [(TType.STRING, s)]) == s
    trans.close()

if __name__ == "__main__":
    (serve if sys.argv[1] == "serve" else client)(sys.argv[2], int(sys.argv[3]))
EOF
  start_bg "$WORK/thrift.log" ip netns exec "$NS_S" "$PY" "$WORK/thrift_app.py" serve "$IP_S" 9090
  local srv=$!
  wait_port "$NS_S" 9090
  capture_start "$WORK/cap.pcap" 9090
  C "$PY" "$WORK/thrift_app.py" client "$IP_S" 9090
  C "$PY" "$WORK/thrift_app.py" client "$IP_S" 9090
  capture_stop
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/thrift_framed.pcap"
  manifest thrift_framed thrift 9090 "thrift.frame_len+4" "tcp.port==9090,thrift"
}

fx_redis_resp() {
  DESC="redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2) <- redis-cli (Debian), commands as arguments"
  start_bg "$WORK/redis.log" ip netns exec "$NS_S" redis-server --bind "$IP_S" --port 6379 --save '' \
    --appendonly no --protected-mode no --dir "$WORK"
  local srv=$!
  wait_port "$NS_S" 6379
  capture_start "$WORK/cap.pcap" 6379
  local big r=(redis-cli -h "$IP_S" -p 6379)
  big=$(head -c 4000 /dev/zero | tr '\0' 'r')
  # Commands as arguments (on stdin redis-cli first fetches COMMAND DOCS: 180 KB of noise).
  C "${r[@]}" SET greeting hello >/dev/null
  C "${r[@]}" -r 3 INCR counter >/dev/null
  C "${r[@]}" RPUSH list a b c d e >/dev/null
  C "${r[@]}" LRANGE list 0 -1 >/dev/null
  C "${r[@]}" SET big "$big" >/dev/null
  C "${r[@]}" -r 2 GET big >/dev/null
  C "${r[@]}" HSET h f1 v1 f2 v2 >/dev/null
  C "${r[@]}" HGETALL h >/dev/null
  C "${r[@]}" GET nosuch >/dev/null
  C "${r[@]}" NOSUCHCOMMAND >/dev/null || true
  capture_stop
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/redis_resp.pcap"
  manifest redis_resp resp 6379 resp-pdml
}

mkdir -p "$OUT"
todo=("$@")
[[ ${#todo[@]} -gt 0 ]] || todo=("${ALL[@]}")
for name in "${todo[@]}"; do
  match=""
  for a in "${ALL[@]}"; do [[ $a == "$name"* ]] && match=$a; done
  [[ -n $match ]] || { echo "$0: unknown fixture '$name' (one of: ${ALL[*]})" >&2; exit 2; }
  echo "capture: $match"
  "fx_$match"
  ls -l "$OUT/$match.pcap"
done
