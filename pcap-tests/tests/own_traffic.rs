//! Our own traffic, judged by Wireshark: a ukcm session (two engines over the in-memory
//! pair; the server a mux with the protocol's parser answering every message) is recorded
//! with `PcapRecorder` around the server's port, and tshark, with IPv4/TCP checksum
//! validation on, must find no malformed frame and no warning or error, and its dissector
//! must see every request and every reply we sent. A recording with one flipped byte must
//! be caught (the check can fail).
//!
//! And every committed fixture re-recorded: each flow played live into an engine (ukcm's
//! stack and mux send the server's side), the recordings judged the same way, with the
//! fixture's own messages counted by tshark's dissectors.
//!
//! Needs tshark (scripts/install-deps.sh installs it): without it the tests say SKIP, unless
//! UKCM_PRIVILEGED=1 (scripts/test.sh as root), where they fail.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr};
use ukcm_mux::stack_psock::StackPsock;
use ukcm_mux::{Mux, MuxConfig};
use ukcm_nic::pcap::PcapRecorder;
use ukcm_nic::{mem_pair, HugePolicy, MemPairConfig, MemPort, PinnedBudget, PoolConfig};
use ukcm_parsers::parser_from_spec;
use ukcm_pcap_tests::pcapedit::{fix_checksums, Records};
use ukcm_pcap_tests::tshark;
use ukcm_stack::{Engine, EngineConfig, TcpOptions};

const CLIENT: Ipv4Address = Ipv4Address::new(10, 219, 1, 2);
const SERVER: Ipv4Address = Ipv4Address::new(10, 219, 1, 1);

fn tshark_or_skip(test: &str) -> bool {
    if tshark::available() {
        return true;
    }
    assert!(!ukcm_nic::testnet::privileged_required(), "{test}: UKCM_PRIVILEGED=1 but tshark is not installed");
    eprintln!("SKIP {test}: tshark not installed (scripts/install-deps.sh)");
    false
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ukcm-pcap-own-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A protocol tshark dissects: how to make request `i` and the server's reply to a request.
struct Proto {
    port: u16,
    parser: &'static str,
    request: fn(u32) -> Vec<u8>,
    reply: fn(&[u8]) -> Vec<u8>,
}

/// Runs `n` requests over `conns` connections (pipelined) and records the server's port to
/// `path`; returns after every reply came back byte-exact and the connections closed.
fn session(p: &Proto, n: u32, conns: u32, path: &Path) {
    let pc = MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 4096 },
        huge: HugePolicy::Never,
        ..MemPairConfig::default()
    };
    let (pa, pb) = mem_pair(&pc, &PinnedBudget::unlimited()).unwrap();
    let tcp_opts = TcpOptions { inplace_rx: true, ..TcpOptions::default() };
    let cfg = |ip| EngineConfig {
        ipv4: Some(Ipv4Cidr::new(ip, 24)),
        default_tcp: tcp_opts,
        random_seed: Some(7),
        ..EngineConfig::default()
    };
    let mut a = Engine::new(pa, cfg(CLIENT)).unwrap();
    let mut b = Engine::new(PcapRecorder::create(pb, path).unwrap(), cfg(SERVER)).unwrap();
    b.listen_with(p.port, 8, tcp_opts).unwrap();
    let budget = PinnedBudget::unlimited();
    let (mut mux, mut sock) = Mux::<StackPsock<PcapRecorder<MemPort>>>::new(MuxConfig::default(), &budget).unwrap();
    struct Client {
        conn: ukcm_stack::ConnId,
        out: VecDeque<u8>,
        want: Vec<u8>,
        got: Vec<u8>,
        closed: bool,
    }
    let mut clients: Vec<Client> = (0..conns)
        .map(|_| Client {
            conn: a.connect(IpEndpoint::new(IpAddress::Ipv4(SERVER), p.port)).unwrap(),
            out: VecDeque::new(),
            want: Vec::new(),
            got: Vec::new(),
            closed: false,
        })
        .collect();
    for i in 0..n {
        let c = &mut clients[(i % conns) as usize];
        let req = (p.request)(i);
        c.want.extend((p.reply)(&req));
        c.out.extend(req);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 64 * 1024];
    let mut held = None;
    loop {
        assert!(Instant::now() < deadline, "session did not finish");
        a.poll().unwrap();
        b.poll().unwrap();
        while let Some(conn) = b.accept(p.port) {
            let io = StackPsock::new(&mut b, conn, 256 * 1024, 512, &budget).unwrap();
            mux.attach(io, parser_from_spec(p.parser).unwrap());
        }
        mux.poll_engine(&mut b, Instant::now());
        while let Some(m) = held.take().or_else(|| sock.try_recv()) {
            let reply = (p.reply)(m.bytes());
            if sock.send_to(m.origin(), &reply, None).is_err() {
                held = Some(m);
                break;
            }
        }
        for c in clients.iter_mut() {
            if a.info(c.conn).map(|i| i.state) != Ok(tcp::State::Established) {
                continue;
            }
            while !c.out.is_empty() {
                let n = a.send(c.conn, c.out.as_slices().0).unwrap();
                if n == 0 {
                    break;
                }
                c.out.drain(..n);
            }
            loop {
                let n = a.recv(c.conn, &mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                c.got.extend_from_slice(&buf[..n]);
            }
            if c.got.len() >= c.want.len() && !c.closed {
                assert_eq!(c.got, c.want, "replies byte-exact");
                a.close(c.conn).unwrap();
                c.closed = true;
            }
        }
        if clients.iter().all(|c| c.closed) {
            break;
        }
    }
    // let the FINs go through and be acknowledged
    for _ in 0..200 {
        a.poll().unwrap();
        b.poll().unwrap();
        mux.poll_engine(&mut b, Instant::now());
    }
    b.port_mut().flush().unwrap();
    assert!(b.port().recorder_stats().rx_recorded > 0 && b.port().recorder_stats().tx_recorded > 0);
}

fn dns_query(i: u32) -> Vec<u8> {
    let mut m = vec![0u8; 2];
    m.extend_from_slice(&(i as u16).to_be_bytes()); // id
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    for label in [format!("q{i}").as_str(), "example", "test"] {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]); // root, A, IN
    let len = (m.len() - 2) as u16;
    m[..2].copy_from_slice(&len.to_be_bytes());
    m
}

fn dns_answer(q: &[u8]) -> Vec<u8> {
    let mut m = q.to_vec();
    m[4..6].copy_from_slice(&[0x81, 0x80]); // response, RD, RA, no error
    m[8..10].copy_from_slice(&[0, 1]); // one answer
    m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 219, 9, q[3]]);
    let len = (m.len() - 2) as u16;
    m[..2].copy_from_slice(&len.to_be_bytes());
    m
}

fn mc_get(i: u32) -> Vec<u8> {
    let key = format!("key-{i}");
    let mut m = vec![0x80, 0x00];
    m.extend_from_slice(&(key.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]); // extras, data type, vbucket
    m.extend_from_slice(&(key.len() as u32).to_be_bytes());
    m.extend_from_slice(&i.to_be_bytes()); // opaque
    m.extend_from_slice(&[0; 8]); // cas
    m.extend_from_slice(key.as_bytes());
    m
}

fn mc_value(req: &[u8]) -> Vec<u8> {
    let opaque = u32::from_be_bytes(req[12..16].try_into().unwrap());
    let value_len = (opaque as usize * 997) % 5000; // some span several segments
    let mut m = vec![0x81, 0x00, 0, 0, 4, 0, 0, 0];
    m.extend_from_slice(&(4 + value_len as u32).to_be_bytes());
    m.extend_from_slice(&opaque.to_be_bytes());
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // flags
    m.extend((0..value_len).map(|k| b'a' + (k % 26) as u8));
    m
}

const DNS: Proto = Proto { port: 53, parser: "dns", request: dns_query, reply: dns_answer };
const MEMCACHED: Proto = Proto { port: 11211, parser: "memcached", request: mc_get, reply: mc_value };

fn assert_clean(path: &Path) {
    let v = tshark::check_frames(path, &[]).unwrap();
    assert!(v.frames > 0);
    assert!(
        v.problems.is_empty(),
        "{}: tshark found {} problem(s):\n{}",
        path.display(),
        v.problems.len(),
        v.problems.join("\n")
    );
}

fn ids(path: &Path, filter: &str, field: &str) -> Vec<u32> {
    let mut v: Vec<u32> = tshark::field_values(path, &[], filter, field)
        .unwrap()
        .iter()
        .map(|s| {
            let s = s.trim();
            s.strip_prefix("0x").map_or_else(|| s.parse().unwrap(), |h| u32::from_str_radix(h, 16).unwrap())
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn dns_over_tcp_session_decodes_cleanly_and_tshark_sees_every_message() {
    if !tshark_or_skip("dns_over_tcp_session_decodes_cleanly_and_tshark_sees_every_message") {
        return;
    }
    let path = tmp("dns.pcap");
    let n = 200;
    session(&DNS, n, 4, &path);
    assert_clean(&path);
    let all: Vec<u32> = (0..n).collect();
    assert_eq!(ids(&path, "dns.flags.response == 0", "dns.id"), all, "queries tshark saw");
    assert_eq!(ids(&path, "dns.flags.response == 1", "dns.id"), all, "responses tshark saw");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn memcached_binary_session_decodes_cleanly_and_tshark_sees_every_message() {
    if !tshark_or_skip("memcached_binary_session_decodes_cleanly_and_tshark_sees_every_message") {
        return;
    }
    let path = tmp("memcached.pcap");
    let n = 100;
    session(&MEMCACHED, n, 2, &path);
    assert_clean(&path);
    let all: Vec<u32> = (0..n).collect();
    assert_eq!(ids(&path, "memcache.magic == 0x80", "memcache.opaque"), all, "requests tshark saw");
    assert_eq!(ids(&path, "memcache.magic == 0x81", "memcache.opaque"), all, "responses tshark saw");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_flipped_byte_in_our_recording_is_caught() {
    if !tshark_or_skip("a_flipped_byte_in_our_recording_is_caught") {
        return;
    }
    let path = tmp("flip.pcap");
    session(&DNS, 10, 1, &path);
    let mut r = Records::read(&path).unwrap();
    // the first frame with TCP payload: flip its last byte, keep the checksum
    let i = r.records.iter().position(|(_, f)| f.len() > 66).unwrap();
    *r.records[i].1.last_mut().unwrap() ^= 0x5a;
    let bad = tmp("flip-bad.pcap");
    r.write(&bad).unwrap();
    let v = tshark::check_frames(&bad, &[]).unwrap();
    assert!(
        v.problems.iter().any(|p| p.starts_with(&format!("frame {}: ", i + 1)) && p.contains("Bad checksum")),
        "{v:?}"
    );
    // with the checksum recomputed, tshark decodes it again (the check is the checksum's)
    fix_checksums(&mut r.records[i].1);
    r.write(&bad).unwrap();
    assert!(tshark::check_frames(&bad, &[]).unwrap().problems.iter().all(|p| !p.contains("checksum")));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&bad);
}

/// How tshark is told about a fixture's protocol and which of its fields gives each
/// message's length (None where the dissector has no length field to count by).
struct Judge {
    fixture: &'static str,
    decode_as: &'static [&'static str],
    /// (field, header bytes to add; 0 with `varint` = MQTT's 1 + remaining-length bytes)
    length: Option<(&'static str, usize)>,
    varint: bool,
}

const JUDGES: &[Judge] = &[
    Judge {
        fixture: "memcached_binary",
        decode_as: &[],
        length: Some(("memcache.total_body_length", 24)),
        varint: false,
    },
    Judge {
        fixture: "http2_h2c",
        decode_as: &["tcp.port==8080,http2"],
        length: Some(("http2.length", 9)),
        varint: false,
    },
    Judge { fixture: "dns_tcp", decode_as: &[], length: Some(("dns.length", 2)), varint: false },
    Judge {
        fixture: "thrift_framed",
        decode_as: &["tcp.port==9090,thrift"],
        length: Some(("thrift.frame_len", 4)),
        varint: false,
    },
    Judge { fixture: "redis_resp", decode_as: &[], length: None, varint: false },
    Judge { fixture: "redis_resp3", decode_as: &["tcp.port==6380,resp"], length: None, varint: false },
    Judge { fixture: "tls", decode_as: &["tcp.port==4433,tls"], length: Some(("tls.record.length", 5)), varint: false },
    Judge { fixture: "mqtt", decode_as: &[], length: Some(("mqtt.len", 0)), varint: true },
    Judge { fixture: "http1", decode_as: &["tcp.port==8081,http"], length: None, varint: false },
    Judge { fixture: "memcache_text", decode_as: &[], length: None, varint: false },
    Judge { fixture: "kafka", decode_as: &[], length: Some(("kafka.len", 4)), varint: false },
    Judge {
        fixture: "grpc_h2c",
        decode_as: &["tcp.port==50051,http2"],
        length: Some(("http2.length", 9)),
        varint: false,
    },
];

/// Every fixture's every flow, played live into an engine (the server's side is ukcm's:
/// its stack and mux send the server's messages) and recorded; the fixture's recordings,
/// one file, judged by tshark with checksum validation: no malformed frame and no warning
/// or error that tshark does not also find in the real programs' capture (the dissector's
/// opinions of their messages, e.g. that a memcached `add` should carry a value; never a
/// checksum), and where the protocol has a length field its dissector finds exactly the
/// manifest's messages of each flow, both ways (HTTP/1.1: as many requests and responses;
/// gRPC: the manifest's inner message lengths).
#[test]
fn every_fixture_re_recorded_live_is_judged_by_tshark() {
    use ukcm_pcap_tests::manifest::{Dir, Manifest};
    use ukcm_pcap_tests::{capture, flows, live};
    if !tshark_or_skip("every_fixture_re_recorded_live_is_judged_by_tshark") {
        return;
    }
    for name in ukcm_pcap_tests::FIXTURES {
        let j = JUDGES.iter().find(|j| j.fixture == *name).unwrap_or_else(|| panic!("{name}: no judge"));
        let fx = ukcm_pcap_tests::fixtures_dir();
        let manifest = Manifest::load(&fx.join(format!("{name}.manifest"))).unwrap();
        let cap = capture::read(&fx.join(format!("{name}.pcap"))).unwrap();
        let found = flows::flows(&cap);
        // what tshark already says about the real programs' messages
        // (each problem line: `frame N: message,message,...|malformed`; judged item by item)
        let items = |p: &str| -> Vec<String> {
            let rest = p.split_once(": ").map_or(p, |(_, m)| m);
            rest.split([',', '|']).map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).collect()
        };
        let known: Vec<String> = tshark::check_frames(&fx.join(format!("{name}.pcap")), j.decode_as)
            .unwrap()
            .problems
            .iter()
            .flat_map(|p| items(p))
            .filter(|m| !m.contains("hecksum"))
            .collect();
        let mut all: Option<Records> = None;
        for (fi, spec) in manifest.flows.iter().enumerate() {
            let flow = found.iter().find(|f| f.client == spec.client && f.server == spec.server).unwrap();
            let streams = flows::reassemble(&cap, flow);
            let rec = tmp(&format!("judge-{name}-{fi}.pcap"));
            live::replay_flow(&cap, flow, spec, manifest.parser_for(Dir::C2s), &streams.s2c.data, &rec)
                .unwrap_or_else(|e| panic!("{name} flow {fi}: {e}"));
            let r = Records::read(&rec).unwrap();
            match &mut all {
                None => all = Some(r),
                Some(a) => a.records.extend(r.records),
            }
            let _ = std::fs::remove_file(&rec);
        }
        let rec = tmp(&format!("judge-{name}.pcap"));
        all.unwrap().write(&rec).unwrap();
        let v = tshark::check_frames(&rec, j.decode_as).unwrap();
        let ours: Vec<&String> = v.problems.iter().filter(|p| items(p).iter().any(|i| !known.contains(i))).collect();
        assert!(v.frames > 0 && ours.is_empty(), "{name}: {ours:?} (the real capture's own: {known:?})");
        // per frame: source port, destination port, then the judged fields
        let mut fields =
            vec!["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;", "-e", "tcp.srcport", "-e", "tcp.dstport"];
        fields.extend(["-e", j.length.map_or("frame.number", |l| l.0), "-e", "http.request", "-e", "http.response"]);
        fields.extend(["-e", "grpc.message_length"]);
        let out = tshark::run(&rec, j.decode_as, &fields).unwrap();
        let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
        let values = |port: u16, d: Dir, col: usize| -> Vec<usize> {
            rows.iter()
                .filter(|r| r.len() > col && r[if d == Dir::C2s { 0 } else { 1 }] == port.to_string())
                .flat_map(|r| r[col].split(';').filter(|v| !v.is_empty()).map(|v| v.trim().parse::<usize>().unwrap()))
                .collect()
        };
        for (fi, spec) in manifest.flows.iter().enumerate() {
            let cport = spec.client.port();
            for d in Dir::BOTH {
                let mut want: Vec<usize> = spec.msgs(d).iter().map(|m| m.len).collect();
                if let Some((_, hdr)) = j.length {
                    if j.decode_as.iter().any(|x| x.ends_with("http2")) && d == Dir::C2s {
                        assert_eq!(want.first(), Some(&24), "{name} flow {fi}: the connection preface");
                        want.remove(0);
                    }
                    let got: Vec<usize> = values(cport, d, 2)
                        .into_iter()
                        .map(|n| n + if j.varint { 1 + (1..=4).find(|b| n < 1 << (7 * b)).unwrap() } else { hdr })
                        .collect();
                    assert_eq!(got, want, "{name} flow {fi} {d}: message lengths tshark found in our recording");
                }
                if *name == "http1" {
                    let n = values(cport, d, if d == Dir::C2s { 3 } else { 4 }).len();
                    assert_eq!(n, want.len(), "{name} flow {fi} {d}: HTTP messages tshark found in our recording");
                }
                if manifest.inner.is_some() {
                    assert_eq!(manifest.inner.as_deref(), Some("grpc"));
                    let mut got: Vec<usize> = values(cport, d, 5).into_iter().map(|n| n + 5).collect();
                    let mut want: Vec<usize> =
                        spec.inner.iter().filter(|i| i.0 == d).flat_map(|i| i.2.iter().map(|m| m.len)).collect();
                    got.sort_unstable();
                    want.sort_unstable();
                    assert!(!want.is_empty(), "{name} flow {fi} {d}");
                    assert_eq!(got, want, "{name} flow {fi} {d}: gRPC messages tshark found in our recording");
                }
            }
        }
        let _ = std::fs::remove_file(&rec);
        eprintln!("{name}: {} flows re-recorded, judged by tshark", manifest.flows.len());
    }
}
