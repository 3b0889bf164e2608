//! Stream replay: each direction of each flow of a capture, reassembled, is fed through the
//! mux with the fixture's parser (one psock per direction, fed segment by segment as the
//! bytes arrived), and the messages the mux delivers are compared with the manifest.
//!
//! Every problem is reported with its flow, direction and message index, and the cause a
//! receiver would see (damaged capture, bad checksum, missing segment, conflicting
//! retransmission, parser error).
//!
//! Each direction gets the manifest's parser for it. Where the manifest names inner
//! messages (gRPC over HTTP/2), the HTTP/2 frames the mux delivered are taken apart the way
//! an application does: each stream's DATA payloads, padding removed, concatenated in order
//! (each frame's payload one arrival piece) and fed through a second mux with the inner
//! parser, one psock per HTTP/2 stream; its messages are compared with the `imsg` lines.
//! Where the manifest says the parser cannot delineate a direction from some message on
//! (`unframed`), the messages before it must match and that one must not.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ukcm_mux::{Fill, Mux, MuxConfig, MuxEvent, PsockError, PsockId, PsockIo, SocketConfig};
use ukcm_nic::{ByteRing, PinnedBudget, RingError, RingView};
use ukcm_parsers::parser_from_spec;

use crate::capture;
use crate::flows::{self, FlowStreams};
use crate::manifest::{Dir, FlowSpec, Manifest};
use crate::reassembly::{Issue, Stream};

/// Bytes of each psock's rx ring (holds the largest fixture message with room to spare).
pub const RING_BYTES: usize = 256 * 1024;

/// A reassembled byte stream as a psock's transport: each `fill` moves the next piece of
/// the stream, as it arrived in one segment, into the pinned rx ring; then end of stream.
/// What the mux writes back is accepted and counted.
#[derive(Debug)]
pub struct StreamPsock {
    data: Vec<u8>,
    /// Sizes of the pieces, in order (segment payloads as they extended the stream).
    pieces: Vec<usize>,
    next_piece: usize,
    /// Bytes of the current piece already moved.
    piece_done: usize,
    pos: usize,
    ring: ByteRing,
    written: u64,
    label: String,
}

impl StreamPsock {
    /// A transport over `stream` (its bytes and arrival pieces).
    pub fn new(stream: &Stream, label: String, budget: &Arc<PinnedBudget>) -> io::Result<Self> {
        let mut pieces: Vec<usize> = stream.chunks.iter().map(|c| c.2).collect();
        if pieces.is_empty() && !stream.data.is_empty() {
            pieces.push(stream.data.len());
        }
        let ring = ByteRing::new(RING_BYTES, 1024, budget).map_err(io::Error::other)?;
        Ok(StreamPsock {
            data: stream.data.clone(),
            pieces,
            next_piece: 0,
            piece_done: 0,
            pos: 0,
            ring,
            written: 0,
            label,
        })
    }

    /// Bytes the mux wrote to this transport.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl PsockIo for StreamPsock {
    type Ctx = ();

    fn fill(&mut self, _: &mut ()) -> io::Result<Fill> {
        let mut fill = Fill::default();
        if self.pos == self.data.len() {
            fill.eof = true;
            return Ok(fill);
        }
        let piece = self.pieces.get(self.next_piece).copied().unwrap_or(self.data.len() - self.pos);
        let want = piece - self.piece_done;
        let space = self.ring.free_space();
        if space.is_empty() {
            fill.ring_full = true;
            return Ok(fill);
        }
        let n = want.min(space.len());
        space[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.ring.commit(n);
        self.pos += n;
        self.piece_done += n;
        if self.piece_done == piece {
            self.next_piece += 1;
            self.piece_done = 0;
        }
        fill.new_bytes = n;
        Ok(fill)
    }

    fn unparsed(&self) -> &[u8] {
        self.ring.unparsed()
    }

    fn take_view(&mut self, len: usize) -> Result<RingView, RingError> {
        self.ring.take_view(len)
    }

    fn reclaim(&mut self) -> usize {
        self.ring.reclaim()
    }

    fn discard(&mut self, len: usize) -> Result<(), RingError> {
        self.ring.discard(len)
    }

    fn write(&mut self, _: &mut (), bytes: &[u8]) -> io::Result<usize> {
        self.written += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn acked_total(&mut self, _: &mut ()) -> io::Result<u64> {
        Ok(self.written)
    }

    fn rx_capacity(&self) -> usize {
        self.ring.capacity()
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn close(&mut self, _: &mut ()) {
        self.pos = self.data.len();
    }

    fn rx_contains(&self, p: *const u8, len: usize) -> bool {
        self.ring.contains(p, len)
    }
}

/// A delivered message: length and FNV-1a 64.
pub type Got = (usize, u64);

/// What the mux delivered for one direction of one flow.
#[derive(Debug, Clone, Default)]
pub struct DirOutcome {
    /// Messages in delivery order.
    pub msgs: Vec<Got>,
    /// The error the psock stopped with, if it did not end cleanly.
    pub error: Option<PsockError>,
    /// The psock ended (closed or failed) before the replay stopped.
    pub ended: bool,
    /// Every delivered message was a view into the psock's rx ring (no copy).
    pub in_place: bool,
    /// The delivered messages' bytes, in order.
    pub bytes: Vec<Vec<u8>>,
}

/// Feeds `streams` (label, stream) through one mux with the parser `spec`, one psock
/// each; returns what each delivered.
pub fn run_mux(spec: &str, streams: &[(String, &Stream)]) -> Result<Vec<DirOutcome>, String> {
    let each: Vec<(String, &str, &Stream)> = streams.iter().map(|(l, s)| (l.clone(), spec, *s)).collect();
    run_mux_each(&each)
}

/// Like [`run_mux`], with a parser spec per stream: (label, spec, stream).
pub fn run_mux_each(streams: &[(String, &str, &Stream)]) -> Result<Vec<DirOutcome>, String> {
    let budget = PinnedBudget::unlimited();
    let cfg = MuxConfig {
        socket: SocketConfig { rx_queue: 4096, tx_queue: 64, max_in_flight: 64, tx_ring: 64 * 1024 },
        ..MuxConfig::default()
    };
    let (mut mux, sock) = Mux::<StreamPsock>::new(cfg, &budget).map_err(|e| format!("mux: {e}"))?;
    let mut ids: Vec<PsockId> = Vec::new();
    for (label, spec, s) in streams {
        let parser = parser_from_spec(spec).map_err(|e| format!("parser {spec:?}: {e}"))?;
        let io = StreamPsock::new(s, label.clone(), &budget).map_err(|e| format!("psock: {e}"))?;
        ids.push(mux.attach(io, parser));
    }
    let mut out: Vec<DirOutcome> = vec![DirOutcome { in_place: true, ..DirOutcome::default() }; ids.len()];
    let slot = |id: PsockId| ids.iter().position(|&i| i == id);
    let mut idle = 0;
    while out.iter().any(|o| !o.ended) && idle < 1000 {
        let work = mux.poll(Instant::now());
        let mut got_any = false;
        while let Some(m) = sock.try_recv() {
            got_any = true;
            if let Some(i) = slot(m.origin()) {
                out[i].in_place &= mux.msg_in_ring(&m);
                out[i].msgs.push((m.bytes().len(), crate::fnv1a64(m.bytes())));
                out[i].bytes.push(m.bytes().to_vec());
            }
        }
        while let Some(ev) = sock.next_event() {
            match ev {
                MuxEvent::PsockClosed(id) => {
                    if let Some(i) = slot(id) {
                        out[i].ended = true;
                    }
                }
                MuxEvent::PsockError(id, e) => {
                    if let Some(i) = slot(id) {
                        out[i].ended = true;
                        out[i].error = Some(e);
                    }
                }
            }
        }
        idle = if work || got_any { 0 } else { idle + 1 };
    }
    Ok(out)
}

/// Why a replay did not give the manifest's messages: one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError {
    /// The capture file.
    pub capture: String,
    /// The problems, each naming flow, direction and message.
    pub problems: Vec<String>,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} problem(s)", self.capture, self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ReplayError {}

/// Counts of a successful replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplaySummary {
    /// Flows replayed.
    pub flows: usize,
    /// Messages delivered (and matched).
    pub messages: usize,
    /// Stream bytes delivered.
    pub bytes: u64,
    /// Directions where the parser, as the manifest says, lost the framing at the named
    /// message (`unframed`).
    pub unframed: usize,
    /// Inner messages (gRPC in HTTP/2 DATA) delivered and matched.
    pub inner_messages: usize,
}

/// Replays the fixture `name` (from the committed fixtures directory).
pub fn replay_fixture(name: &str) -> Result<ReplaySummary, ReplayError> {
    let dir = crate::fixtures_dir();
    let manifest = Manifest::load(&dir.join(format!("{name}.manifest")))
        .map_err(|e| ReplayError { capture: name.into(), problems: vec![e] })?;
    replay_file(&dir.join(format!("{name}.pcap")), &manifest)
}

/// Replays `path` and compares with `manifest`.
pub fn replay_file(path: &Path, manifest: &Manifest) -> Result<ReplaySummary, ReplayError> {
    let (cap, damage) = capture::read_partial(path);
    let mut problems = Vec::new();
    if let Some(d) = &damage {
        problems.push(format!("capture damaged: {d}"));
    }
    let found = flows::flows(&cap);
    // Match the manifest's flows to the capture's by endpoints.
    let mut streams: Vec<(usize, FlowStreams)> = Vec::new();
    for (fi, spec) in manifest.flows.iter().enumerate() {
        match found.iter().find(|f| f.client == spec.client && f.server == spec.server) {
            Some(f) => streams.push((fi, flows::reassemble(&cap, f))),
            None => problems
                .push(format!("flow {fi} ({} → {}): message 0: not in the capture at all", spec.client, spec.server)),
        }
    }
    for f in &found {
        if !manifest.flows.iter().any(|m| m.client == f.client && m.server == f.server) {
            problems.push(format!("flow {} → {}: in the capture but not in the manifest", f.client, f.server));
        }
    }
    let mut inputs: Vec<(String, &str, &Stream)> = Vec::new();
    let mut keys: Vec<(usize, Dir, &FlowStreams)> = Vec::new();
    for (fi, fs) in &streams {
        for d in Dir::BOTH {
            inputs.push((format!("flow {fi} {d}"), manifest.parser_for(d), fs.dir(d)));
            keys.push((*fi, d, fs));
        }
    }
    let outcomes =
        run_mux_each(&inputs).map_err(|e| ReplayError { capture: path.display().to_string(), problems: vec![e] })?;
    let mut summary = ReplaySummary { flows: streams.len(), ..ReplaySummary::default() };
    for ((fi, d, fs), out) in keys.iter().zip(&outcomes) {
        let spec = &manifest.flows[*fi];
        match compare(spec, *d, fs, out, damage.is_some()) {
            Ok(matched) => {
                summary.messages += matched;
                summary.bytes += out.msgs[..matched].iter().map(|m| m.0 as u64).sum::<u64>();
                summary.unframed += usize::from(spec.unframed_from(*d).is_some());
                if let Some(inner) = &manifest.inner {
                    match compare_inner(inner, spec, *d, &out.bytes) {
                        Ok(n) => summary.inner_messages += n,
                        Err(p) => problems.push(format!("flow {fi} {d} ({}): {p}", spec.describe(*d))),
                    }
                }
            }
            Err(p) => problems.push(format!("flow {fi} {d} ({}): {p}", spec.describe(*d))),
        }
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(ReplayError { capture: path.display().to_string(), problems })
    }
}

/// Compares one direction's delivered messages with the manifest; the text names the
/// first message that broke and why. Returns how many messages matched.
fn compare(spec: &FlowSpec, d: Dir, fs: &FlowStreams, out: &DirOutcome, damaged: bool) -> Result<usize, String> {
    let unframed = spec.unframed_from(d);
    let want = &spec.msgs(d)[..unframed.map_or(spec.msgs(d).len(), |u| u.0)];
    let stream = fs.dir(d);
    let mut start = 0u64;
    for (i, w) in want.iter().enumerate() {
        let range = format!("message {i} (stream bytes {start}..{})", start + w.len as u64);
        match out.msgs.get(i) {
            Some(&(len, fnv)) if len == w.len && fnv == w.fnv => {}
            Some(&(len, fnv)) => {
                let mut why = format!(
                    "{range}: delivered {len} bytes fnv {fnv:016x}, expected {} bytes fnv {:016x}",
                    w.len, w.fnv
                );
                if let Some(c) = conflict_in(stream, start, w.len) {
                    why.push_str(&format!(" ({c})"));
                }
                if let Some(&(_, rec)) = fs.bad_checksums.iter().find(|b| b.0 == d) {
                    why.push_str(&format!(" (record {rec} had a bad checksum)"));
                }
                return Err(why);
            }
            None => return Err(format!("{range}: not delivered: {}", missing_cause(spec, d, fs, out, damaged))),
        }
        start += w.len as u64;
    }
    if let Some((k, why)) = unframed {
        // The parser cannot know where message k ends: it must not claim to.
        let w = spec.msgs(d)[k];
        if out.msgs.get(k) == Some(&(w.len, w.fnv)) {
            return Err(format!(
                "message {k}: delivered as the manifest has it, but the manifest says this parser cannot \
                 delineate it ({why}): the parser changed, drop the `unframed` line"
            ));
        }
        if !out.in_place {
            return Err("a delivered message was not a view into the psock's rx ring".into());
        }
        return Ok(k);
    }
    if out.msgs.len() > want.len() {
        return Err(format!(
            "message {}: delivered but not in the manifest ({} bytes)",
            want.len(),
            out.msgs[want.len()].0
        ));
    }
    if !out.in_place {
        return Err("a delivered message was not a view into the psock's rx ring".into());
    }
    if let Some(e) = out.error {
        return Err(format!("psock failed after the last message: {e}"));
    }
    Ok(want.len())
}

/// The DATA payloads of each HTTP/2 stream in `frames` (whole frames, as the HTTP/2 parser
/// delivered them; the connection preface and other frame types skipped), padding removed:
/// stream id, the concatenated payload, and each frame's share as an arrival piece.
pub fn h2_data_streams(frames: &[Vec<u8>]) -> Result<Vec<(u32, Stream)>, String> {
    let mut out: Vec<(u32, Stream)> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if f.len() < 9 || f.starts_with(b"PRI * HTTP/2.0") || f[3] != 0 {
            continue;
        }
        let sid = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
        let mut payload = &f[9..];
        if f[4] & 0x8 != 0 {
            let pad = *payload.first().ok_or(format!("frame {i}: padded DATA without a pad length"))? as usize;
            if pad + 1 > payload.len() {
                return Err(format!("frame {i}: DATA padding {pad} longer than the payload"));
            }
            payload = &payload[1..payload.len() - pad];
        }
        if payload.is_empty() {
            continue;
        }
        let at = match out.iter().position(|o| o.0 == sid) {
            Some(at) => at,
            None => {
                out.push((sid, Stream { data: Vec::new(), issues: Vec::new(), fin_at: None, chunks: Vec::new() }));
                out.len() - 1
            }
        };
        let s = &mut out[at].1;
        s.chunks.push((i as u64, s.data.len() as u64, payload.len()));
        s.data.extend_from_slice(payload);
    }
    Ok(out)
}

/// Feeds each HTTP/2 stream's DATA (from the delivered `frames`) through the `inner` parser
/// and compares with the manifest's inner messages; returns how many matched.
fn compare_inner(inner: &str, spec: &FlowSpec, d: Dir, frames: &[Vec<u8>]) -> Result<usize, String> {
    let streams = h2_data_streams(frames)?;
    let inputs: Vec<(String, &Stream)> = streams.iter().map(|(sid, s)| (format!("h2 stream {sid}"), s)).collect();
    let outs = run_mux(inner, &inputs)?;
    let mut n = 0;
    for ((sid, _), out) in streams.iter().zip(&outs) {
        let want: Vec<Got> = spec
            .inner
            .iter()
            .find(|i| i.0 == d && i.1 == *sid)
            .map(|i| i.2.iter().map(|m| (m.len, m.fnv)).collect())
            .unwrap_or_default();
        if let Some(k) = (0..want.len().max(out.msgs.len())).find(|&k| want.get(k) != out.msgs.get(k)) {
            let got = out.msgs.get(k).map_or("nothing".to_string(), |g| format!("{} bytes fnv {:016x}", g.0, g.1));
            let exp = want.get(k).map_or("nothing".to_string(), |g| format!("{} bytes fnv {:016x}", g.0, g.1));
            let err = out.error.map(|e| format!(" (the {inner} psock reported {e})")).unwrap_or_default();
            return Err(format!("h2 stream {sid}: {inner} message {k}: delivered {got}, expected {exp}{err}"));
        }
        if let Some(e) = out.error {
            return Err(format!("h2 stream {sid}: {inner} psock failed after the last message: {e}"));
        }
        n += want.len();
    }
    if let Some(i) = spec.inner.iter().find(|i| i.0 == d && !streams.iter().any(|s| s.0 == i.1)) {
        return Err(format!("h2 stream {}: {} {inner} message(s) expected, no DATA delivered", i.1, i.2.len()));
    }
    Ok(n)
}

fn conflict_in(stream: &Stream, start: u64, len: usize) -> Option<String> {
    stream.issues.iter().find_map(|i| match i {
        Issue::Conflict { offset, .. } if (start..start + len as u64).contains(offset) => Some(i.to_string()),
        _ => None,
    })
}

/// Why a message was not delivered, as a receiver sees it.
fn missing_cause(spec: &FlowSpec, d: Dir, fs: &FlowStreams, out: &DirOutcome, damaged: bool) -> String {
    let stream = fs.dir(d);
    let mut why = Vec::new();
    let bad: Vec<String> = fs.bad_checksums.iter().filter(|b| b.0 == d).map(|b| b.1.to_string()).collect();
    if !bad.is_empty() {
        why.push(format!("record(s) {} dropped for a bad checksum", bad.join(", ")));
    }
    for i in &stream.issues {
        if matches!(i, Issue::Gap { .. } | Issue::OutOfOrderOverflow { .. }) {
            let at = match i {
                Issue::Gap { offset, .. } => spec.msg_at(d, *offset).map(|(k, _)| format!(" (inside message {k})")),
                _ => None,
            };
            why.push(format!("{i}{}", at.unwrap_or_default()));
        }
    }
    if stream.first_gap().is_none() && (stream.data.len() as u64) < spec.msgs(d).iter().map(|m| m.len as u64).sum() {
        why.push(format!("the stream ends after {} bytes", stream.data.len()));
    }
    if damaged {
        why.push("the capture is damaged (see above)".into());
    }
    if let Some(e) = out.error {
        why.push(format!("the mux reported {e}"));
    } else if !out.ended {
        why.push("the psock never finished".into());
    }
    why.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[ty, flags]);
        f.extend_from_slice(&sid.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn grpc(flag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![flag];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// gRPC messages cut across DATA frames, one of them padded, two streams interleaved,
    /// HEADERS and the preface in between: each stream's messages come out whole.
    #[test]
    fn grpc_inside_http2_data_across_frames() {
        let a = grpc(0, &[b'a'; 300]);
        let b = grpc(1, &[b'b'; 40]);
        let c = grpc(0, b"");
        let mut padded = vec![7u8]; // pad length
        padded.extend_from_slice(&a[100..]);
        padded.extend_from_slice(&[0; 7]);
        let frames = vec![
            vec![0u8; 8], // too short to be a frame: skipped
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            frame(1, 4, 1, b"headers"),
            frame(0, 0, 1, &a[..100]),
            frame(0, 0, 3, &b[..3]),
            frame(0, 0x8, 1, &padded),
            frame(0, 0, 3, &b[3..]),
            frame(0, 1, 3, &c),
            frame(0, 1, 1, b""),
        ];
        let streams = h2_data_streams(&frames).unwrap();
        assert_eq!(streams.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(streams[0].1.data, a);
        assert_eq!(streams[0].1.chunks.iter().map(|c| c.2).collect::<Vec<_>>(), vec![100, 205]);
        let inputs: Vec<(String, &Stream)> = streams.iter().map(|(sid, s)| (format!("h2 {sid}"), s)).collect();
        let out = run_mux("grpc", &inputs).unwrap();
        assert_eq!(out[0].msgs, vec![(a.len(), crate::fnv1a64(&a))]);
        let want = vec![(b.len(), crate::fnv1a64(&b)), (c.len(), crate::fnv1a64(&c))];
        assert_eq!(out[1].msgs, want);
        assert!(out.iter().all(|o| o.error.is_none() && o.in_place));
        // padding longer than the payload is an error, not a panic
        assert!(h2_data_streams(&[frame(0, 0x8, 1, &[9, 1, 2])]).is_err());
    }
}
