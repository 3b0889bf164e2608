//! Test setup shared by the two-engine tests: an engine pair over the in-memory port pair
//! (with seeded faults), and a self-checking message format.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::VecDeque;

use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use ukcm_nic::{mem_pair, FaultConfig, HugePolicy, MemPairConfig, MemPort, PinnedBudget, PoolConfig};
use ukcm_stack::{Clock, ConnId, Engine, EngineConfig, ManualClock, SystemClock, TcpOptions};

/// Two engines, A = 10.8.`net`.1 and B = 10.8.`net`.2, joined by an in-memory pair.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    /// Third octet of both addresses (each test file its own).
    pub net: u8,
    /// Faults of both directions (their seeds are replaced by `seeds`).
    pub faults: FaultConfig,
    /// Fault seeds A→B and B→A.
    pub seeds: (u64, u64),
    /// Frames each direction of the wire holds.
    pub link_capacity: usize,
    /// Frames in each side's pool.
    pub frames: usize,
    /// The engines' default TCP options (connections and listeners).
    pub tcp: TcpOptions,
}

impl Pair {
    pub fn addr_a(&self) -> Ipv4Address {
        Ipv4Address::new(10, 8, self.net, 1)
    }

    pub fn addr_b(&self) -> Ipv4Address {
        Ipv4Address::new(10, 8, self.net, 2)
    }

    /// The two engines (A, B).
    pub fn engines(&self) -> (Engine<MemPort>, Engine<MemPort>) {
        self.engines_clocked(|| Box::new(SystemClock::new()))
    }

    /// The two engines (A, B) on one manual clock: time moves only when the test moves it.
    pub fn engines_on(&self, clock: &ManualClock) -> (Engine<MemPort>, Engine<MemPort>) {
        self.engines_clocked(|| Box::new(clock.clone()))
    }

    fn engines_clocked(&self, clock: impl Fn() -> Box<dyn Clock>) -> (Engine<MemPort>, Engine<MemPort>) {
        let pc = MemPairConfig {
            pool: PoolConfig { frame_size: 2048, headroom: 128, frames: self.frames },
            link_capacity: self.link_capacity,
            a_to_b: FaultConfig { seed: self.seeds.0, ..self.faults },
            b_to_a: FaultConfig { seed: self.seeds.1, ..self.faults },
            huge: HugePolicy::Never,
            ..MemPairConfig::default()
        };
        let (pa, pb) = mem_pair(&pc, &PinnedBudget::unlimited()).unwrap();
        let tcp = self.tcp;
        let cfg = |ip| EngineConfig { ipv4: Some(Ipv4Cidr::new(ip, 24)), default_tcp: tcp, ..EngineConfig::default() };
        (
            Engine::with_clock(pa, cfg(self.addr_a()), clock()).unwrap(),
            Engine::with_clock(pb, cfg(self.addr_b()), clock()).unwrap(),
        )
    }
}

/// Bytes before the body: 4-byte length (Thrift framing: the bytes after it), 4-byte tag,
/// 4-byte sequence number, 8-byte checksum of the body.
pub const HEADER: usize = 20;

/// FNV-1a over the body's 8-byte words (then its tail bytes): any flipped bit changes it.
pub fn checksum(b: &[u8]) -> u64 {
    const P: u64 = 0x100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(P);
    }
    for &x in words.remainder() {
        h = (h ^ x as u64).wrapping_mul(P);
    }
    h
}

/// Writes a whole message into `buf` (its length is the message's): header, then a body
/// of pseudo-random bytes derived from (`tag`, `seq`).
pub fn write_message(buf: &mut [u8], tag: u32, seq: u32) {
    assert!(buf.len() > HEADER, "a message has a body of at least one byte");
    let len_field = (buf.len() - 4) as u32;
    let (head, body) = buf.split_at_mut(HEADER);
    let mut x = ((tag as u64) << 32 | seq as u64) ^ 0x9e37_79b9_7f4a_7c15 | 1;
    let mut words = body.chunks_exact_mut(8);
    for w in &mut words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    for b in words.into_remainder() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sum = checksum(body);
    head[0..4].copy_from_slice(&len_field.to_be_bytes());
    head[4..8].copy_from_slice(&tag.to_be_bytes());
    head[8..12].copy_from_slice(&seq.to_be_bytes());
    head[12..20].copy_from_slice(&sum.to_be_bytes());
}

/// A message as a new vector (`body_len` ≥ 1).
pub fn message(tag: u32, seq: u32, body_len: usize) -> Vec<u8> {
    let mut m = vec![0u8; HEADER + body_len];
    write_message(&mut m, tag, seq);
    m
}

/// A received message's (tag, seq), after checking its framing and checksum.
pub fn check_message(m: &[u8]) -> Result<(u32, u32), String> {
    if m.len() <= HEADER {
        return Err(format!("message of {} bytes is shorter than a header and one body byte", m.len()));
    }
    let be32 = |i: usize| u32::from_be_bytes(m[i..i + 4].try_into().unwrap());
    let (len, tag, seq) = (be32(0) as usize, be32(4), be32(8));
    if len + 4 != m.len() {
        return Err(format!("tag {tag} seq {seq}: length field says {} bytes, message has {}", len + 4, m.len()));
    }
    let sum = u64::from_be_bytes(m[12..20].try_into().unwrap());
    if checksum(&m[HEADER..]) != sum {
        return Err(format!("tag {tag} seq {seq}: checksum mismatch over {} body bytes", m.len() - HEADER));
    }
    Ok((tag, seq))
}

/// A client connection of an engine that sends framed test messages ([`message`]) and reads
/// what an echo sends back.
pub struct EchoClient {
    pub conn: ConnId,
    /// Bytes still to send.
    pub out: VecDeque<u8>,
    inbuf: Vec<u8>,
    /// The sequence number of the next echo expected back.
    pub next_expected: u32,
}

impl EchoClient {
    pub fn new(conn: ConnId) -> Self {
        EchoClient { conn, out: VecDeque::new(), inbuf: Vec::new(), next_expected: 0 }
    }

    /// Writes what the connection takes of `out` and reads what arrived; returns the
    /// (tag, seq) of every whole message received, in order, each checked intact.
    pub fn exchange<P: ukcm_nic::Port>(&mut self, e: &mut Engine<P>, buf: &mut [u8]) -> Vec<(u32, u32)> {
        while !self.out.is_empty() {
            let (front, _) = self.out.as_slices();
            let n = e.send(self.conn, front).unwrap();
            if n == 0 {
                break;
            }
            self.out.drain(..n);
        }
        loop {
            let n = e.recv(self.conn, buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            self.inbuf.extend_from_slice(&buf[..n]);
        }
        let mut got = Vec::new();
        while self.inbuf.len() >= 4 {
            let len = u32::from_be_bytes(self.inbuf[..4].try_into().unwrap()) as usize + 4;
            if self.inbuf.len() < len {
                break;
            }
            let m: Vec<u8> = self.inbuf.drain(..len).collect();
            got.push(check_message(&m).unwrap_or_else(|e| panic!("payload intact: {e}")));
        }
        got
    }
}

/// A 4-byte big-endian length prefix and `body` (the thrift framing the kernel tests use).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// A connected kernel TCP pair on loopback: (our end for the mux, the raw peer end).
pub fn loopback_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (s, c)
}
