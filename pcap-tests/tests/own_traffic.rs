//! Our own traffic, judged by Wireshark: a ukcm session (two engines over the in-memory
//! pair; the server a mux with the protocol's parser answering every message) is recorded
//! with `PcapRecorder` around the server's port, and tshark, with IPv4/TCP checksum
//! validation on, must find no malformed frame and no warning or error, and its dissector
//! must see every request and every reply we sent. A recording with one flipped byte must
//! be caught (the check can fail).
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
