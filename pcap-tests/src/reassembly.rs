//! One direction of a TCP connection reassembled as its receiver would: sequence numbers
//! unwrapped across 2^32, retransmitted and overlapping bytes checked against the first copy
//! (which is kept; a different second copy is reported as a conflict), segments ahead of
//! the stream buffered up to a bound, and whatever never arrived reported as a gap with its
//! byte offset.

use std::collections::BTreeMap;
use std::fmt;

/// Something a receiver would notice in one direction of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    /// A retransmitted or overlapping segment carries different bytes than the first copy
    /// at stream `offset` (the first copy is kept).
    Conflict {
        /// Stream offset of the first differing byte.
        offset: u64,
        /// The record of the disagreeing copy.
        record: u64,
    },
    /// Stream bytes `[offset, offset + len)` never arrived (a missing segment); bytes
    /// after them, if any, are not part of the reassembled stream.
    Gap {
        /// First missing byte.
        offset: u64,
        /// Missing bytes (up to the next byte that did arrive, or the FIN).
        len: u64,
    },
    /// A segment arrived more than the out-of-order bound ahead of the stream and was
    /// dropped.
    OutOfOrderOverflow {
        /// Its record.
        record: u64,
        /// Its stream offset.
        offset: u64,
    },
    /// No SYN was seen: the stream starts at the first segment's sequence number.
    NoSyn,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Issue::Conflict { offset, record } => {
                write!(f, "record {record} disagrees with an earlier copy of stream byte {offset} (first copy kept)")
            }
            Issue::Gap { offset, len } => {
                write!(f, "missing segment: stream bytes {offset}..{} never arrived", offset + len)
            }
            Issue::OutOfOrderOverflow { record, offset } => {
                write!(f, "record {record} (stream byte {offset}) is beyond the out-of-order bound and was dropped")
            }
            Issue::NoSyn => f.write_str("no SYN seen: stream taken from the first segment"),
        }
    }
}

/// The receiver of one direction.
#[derive(Debug)]
pub struct Reassembler {
    /// Sequence number of stream byte 0.
    base: Option<u32>,
    data: Vec<u8>,
    /// Segments ahead of the stream, by stream offset.
    ahead: BTreeMap<u64, (Vec<u8>, u64)>,
    ahead_bytes: usize,
    max_ahead: usize,
    fin_at: Option<u64>,
    issues: Vec<Issue>,
    /// Record numbers and stream ranges of the segments the stream was built from
    /// (a reader can find which record carried which byte).
    chunks: Vec<(u64, u64, usize)>,
}

/// A reassembled direction.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    /// The contiguous bytes from the start of the stream (up to the first gap).
    pub data: Vec<u8>,
    /// What went wrong, in the order noticed.
    pub issues: Vec<Issue>,
    /// A FIN closed the stream at this offset.
    pub fin_at: Option<u64>,
    /// (record, stream offset, length) of each piece of payload that extended the stream,
    /// in stream order: the segment sizes as they arrived.
    pub chunks: Vec<(u64, u64, usize)>,
}

impl Stream {
    /// The first gap, if any.
    pub fn first_gap(&self) -> Option<(u64, u64)> {
        self.issues.iter().find_map(|i| match i {
            Issue::Gap { offset, len } => Some((*offset, *len)),
            _ => None,
        })
    }
}

impl Reassembler {
    /// A receiver buffering at most `max_ahead` bytes of segments ahead of the stream.
    pub fn new(max_ahead: usize) -> Self {
        Reassembler {
            base: None,
            data: Vec::new(),
            ahead: BTreeMap::new(),
            ahead_bytes: 0,
            max_ahead,
            fin_at: None,
            issues: Vec::new(),
            chunks: Vec::new(),
        }
    }

    /// Stream bytes received in order so far.
    pub fn contiguous(&self) -> u64 {
        self.data.len() as u64
    }

    /// The stream offset of sequence number `seq`, unwrapped to the value nearest the
    /// current end of the stream (so streams longer than 4 GiB work, and old
    /// retransmissions come out negative or below the end).
    fn offset_of(&self, base: u32, seq: u32) -> i64 {
        let rel = seq.wrapping_sub(base) as i64;
        let end = self.data.len() as i64;
        let lap = 1i64 << 32;
        let mut best = (end & !(lap - 1)) + rel;
        for cand in [best - lap, best + lap] {
            if (cand - end).abs() < (best - end).abs() {
                best = cand;
            }
        }
        best
    }

    /// One segment of this direction (in capture order).
    pub fn segment(&mut self, record: u64, seq: u32, syn: bool, fin: bool, payload: &[u8]) {
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        let base = match self.base {
            Some(b) => b,
            None => {
                if !syn {
                    self.issues.push(Issue::NoSyn);
                }
                self.base = Some(data_seq);
                data_seq
            }
        };
        let start = self.offset_of(base, data_seq);
        let end = start + payload.len() as i64;
        if fin && end >= 0 {
            self.fin_at.get_or_insert(end as u64);
        }
        if payload.is_empty() || end <= 0 {
            return;
        }
        // Bytes before the stream's start (a retransmitted SYN's neighbourhood) are cut.
        let (start, payload) = if start < 0 { (0u64, &payload[(-start) as usize..]) } else { (start as u64, payload) };
        self.place(record, start, payload);
        self.drain_ahead();
    }

    /// Puts bytes at `start`: checks the part already received, appends what extends the
    /// stream, buffers what is ahead.
    fn place(&mut self, record: u64, start: u64, payload: &[u8]) {
        let have = self.data.len() as u64;
        if start <= have {
            let overlap = ((have - start) as usize).min(payload.len());
            self.check(record, start, &payload[..overlap]);
            let new = &payload[overlap..];
            if !new.is_empty() {
                self.chunks.push((record, have, new.len()));
                self.data.extend_from_slice(new);
            }
            return;
        }
        // Ahead: compare with any buffered copy at the same offset; keep its bytes and take
        // only what the new copy adds past its end. (Copies at different offsets are
        // compared when they reach the stream.)
        let mut bytes = payload.to_vec();
        if let Some((old, _)) = self.ahead.get(&start) {
            let n = old.len().min(payload.len());
            if old[..n] != payload[..n] {
                let at = old.iter().zip(payload).position(|(a, b)| a != b).unwrap_or(0);
                self.issues.push(Issue::Conflict { offset: start + at as u64, record });
            }
            if payload.len() <= old.len() {
                return;
            }
            bytes[..n].copy_from_slice(&old[..n]);
        }
        if self.ahead_bytes + payload.len() > self.max_ahead {
            self.issues.push(Issue::OutOfOrderOverflow { record, offset: start });
            return;
        }
        self.ahead_bytes += bytes.len();
        if let Some((old, _)) = self.ahead.insert(start, (bytes, record)) {
            self.ahead_bytes -= old.len();
        }
    }

    /// Reports the first byte of `bytes` (at stream `start`) that differs from the stream.
    fn check(&mut self, record: u64, start: u64, bytes: &[u8]) {
        let s = start as usize;
        let old = &self.data[s..s + bytes.len()];
        if let Some(at) = old.iter().zip(bytes).position(|(a, b)| a != b) {
            self.issues.push(Issue::Conflict { offset: start + at as u64, record });
        }
    }

    fn drain_ahead(&mut self) {
        while let Some((&start, _)) = self.ahead.first_key_value() {
            if start > self.data.len() as u64 {
                break;
            }
            let (bytes, record) = self.ahead.remove(&start).expect("present");
            self.ahead_bytes -= bytes.len();
            self.place(record, start, &bytes);
        }
    }

    /// The stream; what is still ahead of it becomes a gap.
    pub fn finish(mut self) -> Stream {
        let have = self.data.len() as u64;
        let next = self.ahead.keys().next().copied().or(self.fin_at.filter(|&f| f > have));
        if let Some(next) = next {
            self.issues.push(Issue::Gap { offset: have, len: next - have });
        }
        Stream { data: self.data, issues: self.issues, fin_at: self.fin_at, chunks: self.chunks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(isn: u32, segs: &[(u32, &[u8])]) -> Stream {
        let mut r = Reassembler::new(1 << 16);
        r.segment(1, isn, true, false, b"");
        for (i, (off, p)) in segs.iter().enumerate() {
            r.segment(i as u64 + 2, isn.wrapping_add(1).wrapping_add(*off), false, false, p);
        }
        r.finish()
    }

    #[test]
    fn in_order_out_of_order_and_retransmitted_bytes_make_one_stream() {
        let s = stream(1000, &[(0, b"hello "), (11, b"!"), (6, b"world"), (0, b"hello "), (3, b"lo wo")]);
        assert_eq!(s.data, b"hello world!");
        assert!(s.issues.is_empty(), "{:?}", s.issues);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let isn = u32::MAX - 3;
        let s = stream(isn, &[(0, b"abcdef"), (6, b"ghij")]);
        assert_eq!(s.data, b"abcdefghij");
        assert!(s.issues.is_empty());
    }

    #[test]
    fn a_different_retransmission_is_a_conflict_and_the_first_copy_stays() {
        let s = stream(7, &[(0, b"abcdef"), (2, b"cX")]);
        assert_eq!(s.data, b"abcdef");
        assert_eq!(s.issues, vec![Issue::Conflict { offset: 3, record: 3 }]);
        // the same ahead of the stream
        let s = stream(7, &[(4, b"efgh"), (4, b"eXgh"), (0, b"abcd")]);
        assert_eq!(s.data, b"abcdefgh");
        assert_eq!(s.issues, vec![Issue::Conflict { offset: 5, record: 3 }]);
        // ahead, a longer second copy adds its tail but not its different bytes
        let s = stream(7, &[(4, b"efgh"), (4, b"eXghij"), (0, b"abcd")]);
        assert_eq!(s.data, b"abcdefghij");
        assert_eq!(s.issues, vec![Issue::Conflict { offset: 5, record: 3 }]);
    }

    #[test]
    fn a_missing_segment_is_a_gap_with_its_offset() {
        let s = stream(0, &[(0, b"abc"), (10, b"klm")]);
        assert_eq!(s.data, b"abc");
        assert_eq!(s.issues, vec![Issue::Gap { offset: 3, len: 7 }]);
        let mut r = Reassembler::new(100);
        r.segment(1, 0, true, false, b"");
        r.segment(2, 1, false, false, b"abc");
        r.segment(3, 9, false, true, b"");
        assert_eq!(r.finish().issues, vec![Issue::Gap { offset: 3, len: 5 }]);
    }

    #[test]
    fn buffering_ahead_is_bounded() {
        let mut r = Reassembler::new(4);
        r.segment(1, 0, true, false, b"");
        r.segment(2, 5, false, false, b"efgh");
        r.segment(3, 9, false, false, b"ijkl");
        r.segment(4, 1, false, false, b"abcd");
        let s = r.finish();
        assert_eq!(s.data, b"abcdefgh");
        assert_eq!(s.issues, vec![Issue::OutOfOrderOverflow { record: 3, offset: 8 }]);
    }

    #[test]
    fn no_syn_starts_at_the_first_segment() {
        let mut r = Reassembler::new(100);
        r.segment(1, 500, false, false, b"xy");
        r.segment(2, 502, false, false, b"z");
        let s = r.finish();
        assert_eq!(s.data, b"xyz");
        assert_eq!(s.issues, vec![Issue::NoSyn]);
    }
}
