//! Live replay: the client side of a captured flow played into a ukcm engine that takes
//! the server's MAC, address and port, the way tcpreplay's tcpliveplay does.
//!
//! [`LiveClientPort`] is the wire as the engine sees it. It hands the engine the client's
//! captured frames (payload, ports, addresses, MACs, client sequence numbers and options
//! as captured) and rewrites on the fly what belongs to the server's sequence space:
//!
//! - the acknowledgement number becomes the engine's own: everything the engine has sent
//!   so far (the engine's replies are not the captured server's, so the captured numbers
//!   would acknowledge bytes it never sent; the port is lossless, so a live client would
//!   have all of them);
//! - the timestamp echo (TSecr) becomes the engine's latest TSval; SACK blocks, which name
//!   server sequence numbers, become NOPs;
//! - IPv4 and TCP checksums are recomputed.
//!
//! The engine's initial sequence number is learned from its SYN-ACK. Client segments are
//! paced on the engine's ACKs: one is released only when it fits in the window the engine
//! advertised past the last byte it acknowledged, and a FIN only when everything before it
//! was acknowledged; and in the capture's causal order: only once the engine has sent as
//! many bytes as the real server had sent before the real client sent that segment (a
//! pipelining client stays as pipelined as it was, and no more). Retransmissions in the
//! capture (bytes already played) are skipped, and so are the client's RSTs (a reset would
//! throw away what the engine has not yet handed to the application; the replay ends when
//! the client's segments are played). Like a live
//! client, the port acknowledges every engine segment that carries data or a FIN with a pure
//! ACK of its own, and answers the engine's ARP requests for the client's address.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use smoltcp::wire::{ArpOperation, ArpPacket, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};
use ukcm_nic::{Frame, FramePool, HugePolicy, PinnedBudget, PoolConfig, Port, PortCaps, PortError, PortStats};

use crate::capture::{Capture, Segment};
use crate::flows::Flow;
use crate::pcapedit::fix_checksums;

const ETH: usize = 14;

/// A captured client segment ready to play.
#[derive(Debug, Clone)]
struct ClientSeg {
    frame: Vec<u8>,
    /// Stream offset of the first payload byte (relative to the client's ISN + 1).
    rel: u32,
    len: u32,
    syn: bool,
    fin: bool,
    record: u64,
    /// Server stream bytes the real client had received before it sent this segment.
    server_seen: u32,
}

/// Counters of a live replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Captured client segments handed to the engine.
    pub played: u64,
    /// Captured retransmissions skipped (their bytes were already played).
    pub skipped_retransmissions: u64,
    /// Captured client RSTs not played.
    pub skipped_rsts: u64,
    /// Pure ACKs the port made for engine data.
    pub synthetic_acks: u64,
    /// ARP replies the port made.
    pub arp_replies: u64,
    /// Frames from the engine that were not for the client (ignored).
    pub foreign_frames: u64,
}

/// The engine's side of the connection, as learned from what it transmits.
#[derive(Debug, Clone, Copy, Default)]
struct EngineView {
    isn: Option<u32>,
    /// Next sequence number after everything it sent.
    nxt: u32,
    /// Highest acknowledgement it sent (client sequence space).
    ack: Option<u32>,
    /// Its advertised window in bytes (scaled).
    window: u32,
    wscale: u8,
    tsval: Option<u32>,
}

/// A port that plays a captured client into an engine (see the module docs).
#[derive(Debug)]
pub struct LiveClientPort {
    pool: FramePool,
    client: SocketAddrV4,
    server: SocketAddrV4,
    client_mac: [u8; 6],
    client_isn: u32,
    segs: Vec<ClientSeg>,
    next: usize,
    /// Client stream bytes played so far (relative end).
    played_end: u32,
    /// Client sequence number after the last thing played (FIN included).
    client_nxt: u32,
    /// The last client frame played (template of synthetic ACKs).
    template: Option<Vec<u8>>,
    last_tsval: Option<u32>,
    engine: EngineView,
    ack_owed: bool,
    pending: VecDeque<Vec<u8>>,
    stats: PortStats,
    live: LiveStats,
}

impl LiveClientPort {
    /// A port that plays `flow`'s client segments from `cap` (segments with a bad checksum
    /// are left out, as the server's kernel dropped them too). Fails if the flow has no SYN
    /// from the client.
    pub fn new(cap: &Capture, flow: &Flow) -> Result<Self, String> {
        let budget: Arc<PinnedBudget> = PinnedBudget::unlimited();
        let pool = FramePool::with_region(
            PoolConfig { frame_size: 2048, headroom: 0, frames: 512 },
            &budget,
            HugePolicy::Never,
        )
        .map_err(|e| format!("pool: {e}"))?;
        let client_segs: Vec<&Segment> =
            flow.segments.iter().map(|&i| &cap.segments[i]).filter(|s| s.src == flow.client && s.checksum_ok).collect();
        let syn = client_segs
            .iter()
            .find(|s| s.flags.syn && !s.flags.ack)
            .ok_or_else(|| format!("flow {} → {}: no SYN from the client in the capture", flow.client, flow.server))?;
        let client_isn = syn.seq;
        let client_mac: [u8; 6] = syn.frame[6..12].try_into().expect("ethernet header");
        let mut live = LiveStats::default();
        let mut segs = Vec::new();
        let s2c = crate::flows::reassemble(cap, flow).s2c;
        for s in client_segs {
            if s.flags.rst {
                live.skipped_rsts += 1;
                continue;
            }
            let rel = s.seq.wrapping_sub(client_isn.wrapping_add(1));
            segs.push(ClientSeg {
                frame: s.frame.clone(),
                rel: if s.flags.syn { 0 } else { rel },
                len: s.payload_len as u32,
                syn: s.flags.syn,
                fin: s.flags.fin,
                record: s.record,
                server_seen: s2c.chunks.iter().filter(|c| c.0 < s.record).map(|c| c.1 + c.2 as u64).max().unwrap_or(0)
                    as u32,
            });
        }
        Ok(LiveClientPort {
            pool,
            client: flow.client,
            server: flow.server,
            client_mac,
            client_isn,
            segs,
            next: 0,
            played_end: 0,
            client_nxt: client_isn,
            template: None,
            last_tsval: None,
            engine: EngineView::default(),
            ack_owed: false,
            pending: VecDeque::new(),
            stats: PortStats::default(),
            live,
        })
    }

    /// The MAC the captured server had (the engine must take it).
    pub fn server_mac(cap: &Capture, flow: &Flow) -> Option<[u8; 6]> {
        let s = flow.segments.iter().map(|&i| &cap.segments[i]).find(|s| s.src == flow.client)?;
        s.frame[0..6].try_into().ok()
    }

    /// Every captured client segment has been played or skipped, and nothing is pending.
    pub fn is_finished(&self) -> bool {
        self.next == self.segs.len() && self.pending.is_empty() && !self.ack_owed
    }

    /// The record of the next client segment to play, if any (for stall reports).
    pub fn next_record(&self) -> Option<u64> {
        self.segs.get(self.next).map(|s| s.record)
    }

    /// Counters of the replay.
    pub fn live_stats(&self) -> LiveStats {
        self.live
    }

    /// The engine's initial sequence number, once its SYN-ACK was seen.
    pub fn engine_isn(&self) -> Option<u32> {
        self.engine.isn
    }

    /// Whether the next client segment may be played now.
    fn may_play(&self, s: &ClientSeg) -> bool {
        if s.syn {
            return true;
        }
        let Some(isn) = self.engine.isn else {
            return false;
        };
        // causal order: not before the engine sent what the real server had sent by then
        if self.engine.nxt.wrapping_sub(isn.wrapping_add(1)) < s.server_seen {
            return false;
        }
        let acked = self.engine.ack.map_or(0, |a| a.wrapping_sub(self.client_isn.wrapping_add(1)));
        if s.fin && acked < s.rel {
            return false;
        }
        s.rel.wrapping_add(s.len) <= acked.wrapping_add(self.engine.window)
    }

    /// The client frame with the engine's sequence space put in.
    fn rewrite(&self, s: &ClientSeg) -> Vec<u8> {
        let mut f = s.frame.clone();
        let tcp_at = ETH + ((f[ETH] & 0x0f) as usize) * 4;
        {
            let mut tcp = TcpPacket::new_unchecked(&mut f[tcp_at..]);
            if tcp.ack() {
                tcp.set_ack_number(smoltcp::wire::TcpSeqNumber(self.engine.nxt as i32));
            }
            let opts = tcp.options_mut();
            let mut i = 0;
            while i < opts.len() {
                match opts[i] {
                    0 => break,
                    1 => i += 1,
                    kind => {
                        let Some(&len) = opts.get(i + 1) else { break };
                        let len = len as usize;
                        if len < 2 || i + len > opts.len() {
                            break;
                        }
                        if kind == 8 && len == 10 {
                            let ecr = if s.syn { 0 } else { self.engine.tsval.unwrap_or(0) };
                            opts[i + 6..i + 10].copy_from_slice(&ecr.to_be_bytes());
                        } else if kind == 5 {
                            opts[i..i + len].fill(1);
                        }
                        i += len;
                    }
                }
            }
        }
        fix_checksums(&mut f);
        f
    }

    /// A pure ACK from the client of everything the engine sent.
    fn synthetic_ack(&self) -> Option<Vec<u8>> {
        let t = self.template.as_ref()?;
        let tcp_at = ETH + ((t[ETH] & 0x0f) as usize) * 4;
        let src = TcpPacket::new_unchecked(&t[tcp_at..]);
        let window = src.window_len();
        let ts = self.last_tsval.map(|v| (v, self.engine.tsval.unwrap_or(0)));
        let opt_len = if ts.is_some() { 12 } else { 0 };
        let mut f = vec![0u8; tcp_at + 20 + opt_len];
        f[..tcp_at].copy_from_slice(&t[..tcp_at]);
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH..]);
            ip.set_total_len((tcp_at - ETH + 20 + opt_len) as u16);
            ip.set_ident(0);
        }
        let tcp_hdr = &mut f[tcp_at..];
        tcp_hdr[0..2].copy_from_slice(&self.client.port().to_be_bytes());
        tcp_hdr[2..4].copy_from_slice(&self.server.port().to_be_bytes());
        tcp_hdr[4..8].copy_from_slice(&self.client_nxt.to_be_bytes());
        tcp_hdr[8..12].copy_from_slice(&self.engine.nxt.to_be_bytes());
        tcp_hdr[12] = (((20 + opt_len) / 4) as u8) << 4;
        tcp_hdr[13] = 0x10; // ACK
        tcp_hdr[14..16].copy_from_slice(&window.to_be_bytes());
        if let Some((val, ecr)) = ts {
            tcp_hdr[20..22].copy_from_slice(&[1, 1]);
            tcp_hdr[22..24].copy_from_slice(&[8, 10]);
            tcp_hdr[24..28].copy_from_slice(&val.to_be_bytes());
            tcp_hdr[28..32].copy_from_slice(&ecr.to_be_bytes());
        }
        fix_checksums(&mut f);
        Some(f)
    }

    /// Learns from one engine frame.
    fn observe(&mut self, frame: &[u8]) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.live.foreign_frames += 1;
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => self.observe_arp(eth.payload()),
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return };
                if ip.next_header() != IpProtocol::Tcp || ip.dst_addr() != *self.client.ip() {
                    self.live.foreign_frames += 1;
                    return;
                }
                let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return };
                if tcp.dst_port() != self.client.port() {
                    self.live.foreign_frames += 1;
                    return;
                }
                self.observe_tcp(&tcp);
            }
            _ => self.live.foreign_frames += 1,
        }
    }

    fn observe_arp(&mut self, payload: &[u8]) {
        let Ok(arp) = ArpPacket::new_checked(payload) else { return };
        if arp.operation() != ArpOperation::Request || arp.target_protocol_addr() != self.client.ip().octets() {
            return;
        }
        let mut f = vec![0u8; ETH + 28];
        f[0..6].copy_from_slice(arp.source_hardware_addr());
        f[6..12].copy_from_slice(&self.client_mac);
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let r = &mut f[ETH..];
        r[0..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        r[8..14].copy_from_slice(&self.client_mac);
        r[14..18].copy_from_slice(&self.client.ip().octets());
        r[18..24].copy_from_slice(arp.source_hardware_addr());
        r[24..28].copy_from_slice(arp.source_protocol_addr());
        self.pending.push_back(f);
        self.live.arp_replies += 1;
    }

    fn observe_tcp(&mut self, tcp: &TcpPacket<&[u8]>) {
        let seq = tcp.seq_number().0 as u32;
        let mut ts = None;
        let mut opts = tcp.options();
        while let Ok((rest, opt)) = smoltcp::wire::TcpOption::parse(opts) {
            match opt {
                smoltcp::wire::TcpOption::TimeStamp { tsval, .. } => ts = Some(tsval),
                smoltcp::wire::TcpOption::WindowScale(w) if tcp.syn() => self.engine.wscale = w.min(14),
                smoltcp::wire::TcpOption::EndOfList => break,
                _ => {}
            }
            if rest.is_empty() {
                break;
            }
            opts = rest;
        }
        if ts.is_some() {
            self.engine.tsval = ts;
        }
        if tcp.syn() {
            self.engine.isn = Some(seq);
            if self.engine.nxt == 0 || after(seq.wrapping_add(1), self.engine.nxt) {
                self.engine.nxt = seq.wrapping_add(1);
            }
        }
        if self.engine.isn.is_none() {
            return;
        }
        if tcp.rst() {
            return;
        }
        let shift = if tcp.syn() { 0 } else { self.engine.wscale };
        self.engine.window = (tcp.window_len() as u32) << shift;
        if tcp.ack() {
            let a = tcp.ack_number().0 as u32;
            if self.engine.ack.is_none_or(|old| !after(old, a)) {
                self.engine.ack = Some(a);
            }
        }
        let data_len = tcp.payload().len() as u32;
        let end = seq.wrapping_add(if tcp.syn() { 1 } else { 0 }).wrapping_add(data_len).wrapping_add(tcp.fin() as u32);
        if after(end, self.engine.nxt) {
            self.engine.nxt = end;
        }
        if data_len > 0 || tcp.fin() {
            self.ack_owed = true;
        }
    }
}

/// `a` is after `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Port for LiveClientPort {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> Result<usize, PortError> {
        let mut n = 0;
        // Segments of the capture first (they carry an ACK anyway), then owed ACKs.
        while n < max {
            let frame = if let Some(f) = self.pending.pop_front() {
                f
            } else if let Some(s) = self.segs.get(self.next) {
                if !s.syn && !s.fin && s.len > 0 && !after(s.rel.wrapping_add(s.len), self.played_end) {
                    self.live.skipped_retransmissions += 1;
                    self.next += 1;
                    continue;
                }
                if !self.may_play(s) {
                    break;
                }
                let s = s.clone();
                let f = self.rewrite(&s);
                self.next += 1;
                self.live.played += 1;
                let end = s.rel.wrapping_add(s.len);
                if after(end, self.played_end) {
                    self.played_end = end;
                }
                let nxt = self.client_isn.wrapping_add(1).wrapping_add(end).wrapping_add(s.fin as u32);
                if after(nxt, self.client_nxt) || s.syn {
                    self.client_nxt = if s.syn { self.client_isn.wrapping_add(1) } else { nxt };
                }
                let tcp_at = ETH + ((s.frame[ETH] & 0x0f) as usize) * 4;
                self.last_tsval = tsval_of(&s.frame[tcp_at..]).or(self.last_tsval);
                self.template = Some(s.frame.clone());
                if !s.syn {
                    self.ack_owed = false;
                }
                f
            } else {
                break;
            };
            let mut fr = self.pool.alloc().map_err(PortError::Pool)?;
            fr.fill_from(&frame).map_err(PortError::Pool)?;
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += fr.len() as u64;
            out.push(fr);
            n += 1;
        }
        if n < max && self.ack_owed && self.engine.isn.is_some() {
            if let Some(f) = self.synthetic_ack() {
                self.ack_owed = false;
                let mut fr = self.pool.alloc().map_err(PortError::Pool)?;
                fr.fill_from(&f).map_err(PortError::Pool)?;
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += fr.len() as u64;
                self.live.synthetic_acks += 1;
                out.push(fr);
                n += 1;
            }
        }
        Ok(n)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> Result<usize, PortError> {
        let n = frames.len();
        for f in frames.drain(..) {
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += f.len() as u64;
            self.observe(f.data());
        }
        Ok(n)
    }

    fn caps(&self) -> PortCaps {
        PortCaps::in_process(format!("live-replay:{}→{}", self.client, self.server), 1500, None)
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn tx_pool(&self) -> &FramePool {
        &self.pool
    }
}

/// The TSval of a TCP header's timestamp option.
fn tsval_of(tcp: &[u8]) -> Option<u32> {
    let p = TcpPacket::new_checked(tcp).ok()?;
    let mut opts = p.options();
    while let Ok((rest, opt)) = smoltcp::wire::TcpOption::parse(opts) {
        if let smoltcp::wire::TcpOption::TimeStamp { tsval, .. } = opt {
            return Some(tsval);
        }
        if rest.is_empty() || matches!(opt, smoltcp::wire::TcpOption::EndOfList) {
            break;
        }
        opts = rest;
    }
    None
}

/// For each server message of `spec`: how many client messages the real client had
/// completely sent (in capture records) before the record that carries the server
/// message's first byte.
fn causal_needs(cap: &Capture, flow: &Flow, spec: &crate::manifest::FlowSpec) -> Vec<usize> {
    let fs = crate::flows::reassemble(cap, flow);
    let c2s_ends: Vec<u64> = spec
        .c2s
        .iter()
        .scan(0u64, |end, m| {
            *end += m.len as u64;
            Some(*end)
        })
        .collect();
    let mut start = 0u64;
    spec.s2c
        .iter()
        .map(|m| {
            let at = start;
            start += m.len as u64;
            let record = fs.s2c.chunks.iter().find(|c| c.1 <= at && at < c.1 + c.2 as u64).map_or(u64::MAX, |c| c.0);
            let client_bytes =
                fs.c2s.chunks.iter().filter(|c| c.0 < record).map(|c| c.1 + c.2 as u64).max().unwrap_or(0);
            c2s_ends.iter().take_while(|&&e| e <= client_bytes).count()
        })
        .collect()
}

/// The IPv4 address of an endpoint (for engine configuration).
pub fn ip_of(a: SocketAddrV4) -> Ipv4Addr {
    *a.ip()
}

/// What a live replay of one flow gave.
#[derive(Debug, Clone)]
pub struct LiveOutcome {
    /// Messages the mux on the engine delivered (length, FNV-1a 64), in order.
    pub delivered: Vec<crate::stream_replay::Got>,
    /// Counters of the client port.
    pub stats: LiveStats,
    /// The engine's initial sequence number (the client's acks were rewritten to it).
    pub engine_isn: u32,
    /// Server messages the engine sent back (the capture's server messages, in order).
    pub replies: usize,
    /// Frames the recorder wrote (client frames as played, and the engine's).
    pub recorded_frames: u64,
}

/// Plays flow `fi` of a capture into an engine that takes the server's MAC, address and
/// port, with a mux (parser `spec`) on the accepted connection; the engine answers with the
/// capture's server messages (from `s2c`, the server stream cut at the manifest's message
/// boundaries), sent as atomic mux messages in the capture's causal order: server message k
/// leaves once the engine's mux has delivered every client message the real client had
/// finished sending before the real server began message k (so a response never precedes
/// its request, as an HTTP/1.1 dissector must see it), then closes. Every frame in and out is recorded to `record` (pcap).
pub fn replay_flow(
    cap: &Capture,
    flow: &Flow,
    spec: &crate::manifest::FlowSpec,
    parser: &str,
    s2c: &[u8],
    record: &std::path::Path,
) -> Result<LiveOutcome, String> {
    use smoltcp::wire::Ipv4Cidr;
    use std::time::{Duration, Instant};
    use ukcm_mux::stack_psock::StackPsock;
    use ukcm_mux::{Mux, MuxConfig, MuxEvent, PsockId};
    use ukcm_nic::pcap::PcapRecorder;
    use ukcm_stack::{Engine, EngineConfig, TcpOptions};

    let port = LiveClientPort::new(cap, flow)?;
    let mac = LiveClientPort::server_mac(cap, flow);
    let rec = PcapRecorder::create(port, record).map_err(|e| format!("recorder: {e}"))?;
    let tcp = TcpOptions {
        inplace_rx: true,
        ack_delay: None,
        nagle: false,
        rx_buf: 256 * 1024,
        tx_buf: 256 * 1024,
        ..TcpOptions::default()
    };
    let cfg = EngineConfig {
        mac,
        ipv4: Some(Ipv4Cidr::new(ip_of(flow.server), 24)),
        default_tcp: tcp,
        random_seed: Some(0x5eed_0000 ^ flow.client.port() as u64),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(rec, cfg).map_err(|e| format!("engine: {e}"))?;
    engine.listen_with(flow.server.port(), 4, tcp).map_err(|e| format!("listen: {e}"))?;
    let budget = PinnedBudget::unlimited();
    type Io = StackPsock<ukcm_nic::pcap::PcapRecorder<LiveClientPort>>;
    let (mut mux, mut sock) = Mux::<Io>::new(MuxConfig::default(), &budget).map_err(|e| format!("mux: {e}"))?;
    // the server's messages, cut at the manifest's boundaries
    let mut replies: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    for m in &spec.s2c {
        let Some(b) = s2c.get(at..at + m.len) else { break };
        replies.push(b);
        at += m.len;
    }
    let needs = causal_needs(cap, flow, spec);
    let mut sent = 0;
    let mut delivered = Vec::new();
    let mut psock: Option<(PsockId, ukcm_stack::ConnId)> = None;
    let mut origin = None;
    let mut closed = false;
    let mut error = None;
    let mut completions = Vec::new();
    let mut last_progress = (0, 0, 0, LiveStats::default());
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        engine.poll().map_err(|e| format!("engine poll: {e}"))?;
        while let Some(conn) = engine.accept(flow.server.port()) {
            let io =
                StackPsock::new(&mut engine, conn, 256 * 1024, 1024, &budget).map_err(|e| format!("psock: {e}"))?;
            let p = ukcm_parsers::parser_from_spec(parser).map_err(|e| format!("parser: {e}"))?;
            let id = mux.attach(io, p);
            psock = Some((id, conn));
            origin = Some(id); // a server that speaks first (HTTP/2 SETTINGS) may
        }
        mux.poll_engine(&mut engine, Instant::now());
        while let Some(m) = sock.try_recv() {
            origin = Some(m.origin());
            delivered.push((m.bytes().len(), crate::fnv1a64(m.bytes())));
        }
        while let Some(ev) = sock.next_event() {
            if let MuxEvent::PsockError(_, e) = ev {
                error = Some(e);
            }
        }
        if let Some(o) = origin {
            // with cookies: the mux tracks the peer's acks only for messages that have one
            while sent < replies.len()
                && delivered.len() >= needs[sent]
                && sock.send_to(o, replies[sent], Some(sent as u32)).is_ok()
            {
                sent += 1;
            }
        }
        sock.completions(&mut completions);
        let port = engine.port().inner();
        let all_in = delivered.len() >= spec.c2s.len() && port.is_finished();
        if let Some((id, conn)) = psock {
            if !closed && all_in && sent == replies.len() && mux.psock_tx_idle(id) == Some(true) {
                mux.unattach_with(&mut engine, id);
                engine.close(conn).map_err(|e| format!("close: {e}"))?;
                closed = true;
            }
        }
        if closed && engine.port().inner().is_finished() {
            // let the FIN go out and be acknowledged
            for _ in 0..50 {
                engine.poll().map_err(|e| format!("engine poll: {e}"))?;
            }
            break;
        }
        if let Some(e) = error {
            return Err(format!("the mux reported {e} after {} of {} messages", delivered.len(), spec.c2s.len()));
        }
        let progress = (delivered.len(), sent, completions.len(), engine.port().inner().live_stats());
        if progress != last_progress {
            last_progress = progress;
            quiet_since = Instant::now();
        }
        // Nothing moves (the port is lossless, so nothing waits for a timer): the engine
        // waits for bytes that never came (a gap in the capture) or a message that is not there.
        let quiet = quiet_since.elapsed() > Duration::from_secs(1);
        if quiet || Instant::now() > deadline {
            let p = engine.port().inner();
            let idle = psock.and_then(|(id, _)| mux.psock_tx_idle(id));
            return Err(format!(
                "message {} not delivered: live replay stalled with {} of {} client messages delivered, {} of {} replies sent, tx idle {idle:?}, closed {closed}, port finished {}, next client record {:?}, engine ISN {:?}, {:?}",
                delivered.len(),
                delivered.len(),
                spec.c2s.len(),
                sent,
                replies.len(),
                p.is_finished(),
                p.next_record(),
                p.engine_isn(),
                p.live_stats()
            ));
        }
    }
    engine.port_mut().flush().map_err(|e| format!("recorder: {e}"))?;
    let rs = engine.port().recorder_stats();
    let port = engine.port().inner();
    Ok(LiveOutcome {
        delivered,
        stats: port.live_stats(),
        engine_isn: port.engine_isn().unwrap_or(0),
        replies: sent,
        recorded_frames: rs.rx_recorded + rs.tx_recorded,
    })
}
