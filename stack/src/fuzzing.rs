//! Frame ingest: arbitrary frames into a ukcm engine (the smoltcp adapter, the engine's
//! 4-tuple demux, listen/accept, the in-place echo) over the in-memory port pair.
//!
//! The input is a list of frames `[mode, len_hi, len_lo, bytes...]`. Mode 0 sends the bytes
//! as a raw Ethernet frame; mode 1 wraps them in an Ethernet + IPv4 header to the engine
//! (valid IP checksum, protocol from the first byte); mode 2 makes them a TCP segment to
//! the engine's listening port 80 with valid IP and TCP checksums (the fuzz bytes are the
//! TCP header from the sequence number on, then payload), so the fuzzer gets past the
//! checksum checks into TCP; mode 3 is mode 2 with the sequence and acknowledgement
//! numbers set to continue the conversation (ours after the last segment we sent, the
//! engine's after its last reply), so handshakes complete and data flows. After each frame
//! the engine polls, accepts and echoes; its replies are read off the other port. Invariants: no panic, no frame leaked by the
//! engine's pool once everything is dropped.
//!
//! This is the body of the fuzz target `frame_ingest` (`fuzz/fuzz_targets/`), here so that
//! `cargo test --workspace` replays its committed seeds and crash inputs through exactly the
//! code libFuzzer runs (`tests/fuzz_seeds.rs`).

use ukcm_nic::{mem_pair, FaultConfig, HugePolicy, MemPairConfig, PinnedBudget, PoolConfig, Port};

use crate::smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use crate::{echo_in_place, Engine, EngineConfig};

const PEER_IP: [u8; 4] = [10, 9, 0, 1];
const ENGINE_IP: [u8; 4] = [10, 9, 0, 2];

fn ones_complement(sum: &mut u32, bytes: &[u8]) {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        *sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        *sum += (*last as u32) << 8;
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 (protocol `proto`, valid header checksum) around `payload`.
fn ipv4_frame(dst_mac: [u8; 6], src_mac: [u8; 6], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + payload.len()) as u16;
    let mut ip = [0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[12..16].copy_from_slice(&PEER_IP);
    ip[16..20].copy_from_slice(&ENGINE_IP);
    let mut sum = 0;
    ones_complement(&mut sum, &ip);
    ip[10..12].copy_from_slice(&fold(sum).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

/// A TCP segment from port 40000 to 80: `rest` is the header from the sequence number on
/// (padded to 16 bytes) and the payload; the checksum is made valid.
fn tcp_segment(rest: &[u8]) -> Vec<u8> {
    let mut seg = vec![0x9c, 0x40, 0, 80];
    seg.extend_from_slice(rest);
    if seg.len() < 20 {
        seg.resize(20, 0);
    }
    seg[16] = 0;
    seg[17] = 0;
    let mut sum = 0;
    ones_complement(&mut sum, &PEER_IP);
    ones_complement(&mut sum, &ENGINE_IP);
    ones_complement(&mut sum, &[0, 6]);
    ones_complement(&mut sum, &(seg.len() as u16).to_be_bytes());
    ones_complement(&mut sum, &seg);
    let c = fold(sum);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    seg
}

/// Where each side of the fuzzed conversation is: the next sequence numbers.
#[derive(Default)]
struct Conversation {
    ours: u32,
    engine: u32,
}

/// Sequence space a TCP segment `seg` (header + payload) takes.
fn seq_len(seg: &[u8]) -> Option<(u32, u32)> {
    let off = (*seg.get(12)? >> 4) as usize * 4;
    let flags = *seg.get(13)?;
    let seq = u32::from_be_bytes(seg.get(4..8)?.try_into().ok()?);
    let len = seg.len().saturating_sub(off) as u32 + (flags & 0x01) as u32 + ((flags >> 1) & 1) as u32;
    Some((seq, len))
}

impl Conversation {
    /// Learns the engine's next sequence number from a reply frame to our port.
    fn engine_sent(&mut self, frame: &[u8]) {
        let Some(ip) = frame.get(14..) else { return };
        if frame.get(12..14) != Some(&[0x08, 0x00]) || ip.first().map(|b| b >> 4) != Some(4) || ip.get(9) != Some(&6) {
            return;
        }
        let Some(tcp) = ip.get((ip[0] & 0x0f) as usize * 4..) else { return };
        if tcp.get(2..4) != Some(&[0x9c, 0x40]) {
            return;
        }
        if let Some((seq, len)) = seq_len(tcp) {
            self.engine = seq.wrapping_add(len);
        }
    }

    /// Sets seq/ack of a segment to continue the conversation (and the ACK flag).
    fn continue_segment(&self, seg: &mut Vec<u8>) {
        if seg.len() < 20 {
            seg.resize(20, 0);
        }
        seg[4..8].copy_from_slice(&self.ours.to_be_bytes());
        seg[8..12].copy_from_slice(&self.engine.to_be_bytes());
        seg[13] |= 0x10;
    }
}

/// The fuzz target `frame_ingest`: `data` is a list of frames (see the module docs). Panics
/// on a finding (the engine panicked or leaked frames).
pub fn frame_ingest(data: &[u8]) {
    let cfg = MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 128 },
        link_capacity: 64,
        a_to_b: FaultConfig::none(),
        b_to_a: FaultConfig::none(),
        huge: HugePolicy::Never,
        ..MemPairConfig::default()
    };
    let (mut wire, port) = mem_pair(&cfg, &PinnedBudget::unlimited()).expect("in-memory pair");
    let (peer_mac, engine_mac) = (wire.mac(), port.mac());
    let engine_pool = port.tx_pool().clone();
    let ecfg = EngineConfig { ipv4: Some(Ipv4Cidr::new(Ipv4Address::from(ENGINE_IP), 24)), ..EngineConfig::default() };
    let mut engine = Engine::new(port, ecfg).expect("engine");
    engine.listen(80, 4).expect("listen");
    let mut replies = Vec::new();
    let mut ready = Vec::new();
    // An ARP request from the peer first: the engine learns the peer's MAC from it, so its
    // replies go out at once instead of waiting on ARP.
    let mut arp = Vec::with_capacity(42);
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&peer_mac);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    arp.extend_from_slice(&peer_mac);
    arp.extend_from_slice(&PEER_IP);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&ENGINE_IP);
    let mut f = wire.tx_pool().alloc().expect("a frame");
    f.fill_from(&arp).expect("ARP fits");
    let _ = wire.tx_burst(&mut vec![f]);
    let _ = engine.poll();
    let _ = wire.rx_burst(&mut replies, 64);
    replies.clear();
    let mut conv = Conversation::default();
    let mut rest = data;
    while let [mode, hi, lo, tail @ ..] = rest {
        let len = (u16::from_be_bytes([*hi, *lo]) as usize % 1600).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let frame = match mode % 4 {
            0 => bytes.to_vec(),
            1 => ipv4_frame(engine_mac, peer_mac, bytes.first().copied().unwrap_or(6), bytes),
            m => {
                let mut seg = vec![0x9c, 0x40, 0, 80];
                seg.extend_from_slice(bytes);
                if m == 3 {
                    conv.continue_segment(&mut seg);
                }
                let seg = tcp_segment(&seg[4..]);
                if let Some((seq, len)) = seq_len(&seg) {
                    conv.ours = seq.wrapping_add(len);
                }
                ipv4_frame(engine_mac, peer_mac, 6, &seg)
            }
        };
        let Ok(mut f) = wire.tx_pool().alloc() else { break };
        if f.fill_from(&frame).is_err() {
            continue; // longer than a frame: nothing to send
        }
        let mut out = vec![f];
        let _ = wire.tx_burst(&mut out);
        let _ = engine.poll();
        while engine.accept(80).is_some() {}
        engine.drain_ready(&mut ready);
        for c in ready.drain(..) {
            let _ = engine.with_tcp(c, echo_in_place);
        }
        let _ = engine.poll();
        let _ = wire.rx_burst(&mut replies, 64);
        for r in replies.drain(..) {
            conv.engine_sent(r.data());
        }
    }
    if std::env::var_os("UKCM_FUZZ_DEBUG").is_some() {
        eprintln!("{:?} {:?}", engine.stats(), wire.stats());
    }
    drop(engine);
    assert_eq!(engine_pool.outstanding(), 0, "the engine leaked frames");
}
