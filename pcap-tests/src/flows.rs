//! A capture's TCP segments grouped into flows, each direction reassembled.

use std::net::SocketAddrV4;

use crate::capture::{Capture, Segment};
use crate::manifest::Dir;
use crate::reassembly::{Reassembler, Stream};

/// Out-of-order bytes a direction may buffer (a receive window's worth, generously).
pub const MAX_AHEAD: usize = 4 << 20;

/// One TCP flow.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The side that sent the SYN (or, without one, the first segment).
    pub client: SocketAddrV4,
    /// The other side.
    pub server: SocketAddrV4,
    /// Indices into the capture's segments, in capture order.
    pub segments: Vec<usize>,
}

impl Flow {
    /// The direction of a segment of this flow.
    pub fn dir_of(&self, s: &Segment) -> Dir {
        if s.src == self.client {
            Dir::C2s
        } else {
            Dir::S2c
        }
    }
}

/// Both directions of a flow, reassembled.
#[derive(Debug, Clone)]
pub struct FlowStreams {
    /// Client to server.
    pub c2s: Stream,
    /// Server to client.
    pub s2c: Stream,
    /// Records dropped for a bad checksum, with their direction (a receiver drops them).
    pub bad_checksums: Vec<(Dir, u64)>,
}

impl FlowStreams {
    /// One direction.
    pub fn dir(&self, d: Dir) -> &Stream {
        match d {
            Dir::C2s => &self.c2s,
            Dir::S2c => &self.s2c,
        }
    }
}

/// The flows of a capture, in order of their first segment.
pub fn flows(cap: &Capture) -> Vec<Flow> {
    let mut out: Vec<Flow> = Vec::new();
    for (i, s) in cap.segments.iter().enumerate() {
        let found =
            out.iter_mut().find(|f| (f.client, f.server) == (s.src, s.dst) || (f.client, f.server) == (s.dst, s.src));
        match found {
            Some(f) => {
                // A SYN without ACK names the client even if another segment came first.
                if s.flags.syn && !s.flags.ack && f.client != s.src {
                    std::mem::swap(&mut f.client, &mut f.server);
                }
                f.segments.push(i);
            }
            None => {
                let (client, server) = if s.flags.syn && s.flags.ack { (s.dst, s.src) } else { (s.src, s.dst) };
                out.push(Flow { client, server, segments: vec![i] });
            }
        }
    }
    out
}

/// Reassembles both directions of `flow`. Segments with a bad checksum are dropped, as a
/// receiver drops them, and listed.
pub fn reassemble(cap: &Capture, flow: &Flow) -> FlowStreams {
    let mut c2s = Reassembler::new(MAX_AHEAD);
    let mut s2c = Reassembler::new(MAX_AHEAD);
    let mut bad = Vec::new();
    for &i in &flow.segments {
        let s = &cap.segments[i];
        let d = flow.dir_of(s);
        if !s.checksum_ok {
            bad.push((d, s.record));
            continue;
        }
        if s.flags.rst {
            continue;
        }
        let r = match d {
            Dir::C2s => &mut c2s,
            Dir::S2c => &mut s2c,
        };
        r.segment(s.record, s.seq, s.flags.syn, s.flags.fin, s.payload());
    }
    FlowStreams { c2s: c2s.finish(), s2c: s2c.finish(), bad_checksums: bad }
}
