//! memcached text protocol, one parser per direction because the grammar differs:
//! [`MemcacheText::requests`] (spec `memcache-text`) and [`MemcacheText::replies`]
//! (`memcache-text-reply`).
//!
//! Requests are one line, plus a data block for the storage commands
//! (`set/add/replace/append/prepend <key> <flags> <exptime> <bytes> [noreply]`, `cas`
//! with one more field) and `ms <key> <datalen> <flags>*`. Any other line is one message
//! (memcached answers an unknown command with `ERROR` and goes on; so can a proxy).
//!
//! Replies: a `get` reply is *one* message, `VALUE <key> <flags> <bytes> [<cas>]` blocks
//! up to `END`; so is a `stats` reply (`STAT`/`ITEM` lines up to `END`), a `stats detail
//! dump` reply (`PREFIX` lines) and an `lru_crawler metadump` reply (`key=...` lines, which
//! memcached ends with a bare LF, up to `END`). `VA <size>
//! <flags>*` carries a data block. Every other reply is one line (`STORED`, `HD`, `EN`,
//! numbers, `SERVER_ERROR ...`, ...).
//!
//! Lines are bounded (default 2048 bytes, memcached's own limit, keys being at most 250),
//! so a stream without CRLF is an error, not endless waiting. `get`-family request lines
//! carry many keys and may run to the message maximum instead. The scan state (how far a
//! line was searched, where the current reply line starts) makes byte-by-byte arrival
//! O(n).

use crate::contract::{checked_len, Parse, ParseError, Parser, DEFAULT_MAX};

/// memcached's line limit for everything but multi-key gets.
pub const DEFAULT_MAX_LINE: usize = 2048;

/// Which direction the parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Requests,
    Replies,
}

/// memcached text protocol parser; see the module doc.
#[derive(Debug, Clone)]
pub struct MemcacheText {
    side: Side,
    max: usize,
    max_line: usize,
    /// Start of the line being read (replies: after earlier `VALUE`/`STAT` parts).
    line_start: usize,
    /// Bytes from `line_start` already searched for `\n` without finding it.
    scanned: usize,
    /// Inside a multi-part reply (`VALUE ...` or `STAT ...` seen).
    multi: bool,
}

impl MemcacheText {
    /// Request side (`memcache-text`).
    pub fn requests() -> Self {
        Self::new(Side::Requests)
    }

    /// Reply side (`memcache-text-reply`).
    pub fn replies() -> Self {
        Self::new(Side::Replies)
    }

    pub fn new(side: Side) -> Self {
        MemcacheText { side, max: DEFAULT_MAX, max_line: DEFAULT_MAX_LINE, line_start: 0, scanned: 0, multi: false }
    }

    /// Largest message (a data block or a whole multi-get reply, lines included).
    pub fn max(mut self, max: usize) -> Self {
        self.max = max.max(4);
        self
    }

    /// Longest line, CRLF included.
    pub fn max_line(mut self, n: usize) -> Self {
        self.max_line = n.max(8);
        self
    }

    /// The line starting at `self.line_start`: `Ok(Some(end))` with `end` just past its
    /// `\n`, `Ok(None)` if it has not all arrived.
    fn line(&mut self, buf: &[u8], may_be_long: bool) -> Result<Option<usize>, ParseError> {
        let start = self.line_start;
        let avail = &buf[start.min(buf.len())..];
        let from = self.scanned.min(avail.len());
        match avail[from..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let len = from + i + 1;
                // memcached ends `lru_crawler metadump` lines with a bare LF
                let lf_ok = self.side == Side::Replies && avail.starts_with(METADUMP);
                if !lf_ok && (len < 2 || avail[len - 2] != b'\r') {
                    return Err(ParseError::Malformed("memcache text: line not ended by CRLF"));
                }
                self.scanned = 0;
                Ok(Some(start + len))
            }
            None => {
                self.scanned = avail.len();
                let limit = if may_be_long && is_get_family(avail) { self.max } else { self.max_line };
                if avail.len() >= limit {
                    return Err(ParseError::HeaderTooLarge { max: limit as u64 });
                }
                Ok(None)
            }
        }
    }

    fn need_line(&self, buf: &[u8]) -> Parse {
        Parse::NeedMore(buf.len() + 1)
    }

    fn parse_request(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        let Some(end) = self.line(buf, true)? else {
            return Ok(self.need_line(buf));
        };
        let line = &buf[..end - 2];
        let mut t = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let data = match t.next().unwrap_or(b"") {
            b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
                // <key> <flags> <exptime> <bytes>
                Some(number(t.nth(3)).ok_or(ParseError::Malformed("memcache text: bad <bytes> in storage command"))?)
            }
            b"ms" => Some(number(t.nth(1)).ok_or(ParseError::Malformed("memcache text: bad <datalen> in ms"))?),
            _ => None,
        };
        match data {
            None => checked_len(end as u64, self.max),
            Some(n) => checked_len(end as u64 + n + 2, self.max),
        }
    }

    fn parse_reply(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        loop {
            let Some(end) = self.line(buf, false)? else {
                return Ok(self.need_line(buf));
            };
            let eol = if buf[..end].ends_with(b"\r\n") { 2 } else { 1 };
            let line = &buf[self.line_start..end - eol];
            let mut t = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
            let first = t.next().unwrap_or(b"");
            let first = if first.starts_with(METADUMP) { METADUMP } else { first };
            match first {
                b"VALUE" => {
                    // VALUE <key> <flags> <bytes> [<cas>]
                    let n = number(t.nth(2)).ok_or(ParseError::Malformed("memcache text: bad <bytes> in VALUE"))?;
                    let next = end as u64 + n + 2;
                    if next > self.max as u64 {
                        return Err(ParseError::TooLarge { len: next, max: self.max as u64 });
                    }
                    let next = next as usize;
                    if buf.len() < next {
                        // The data block is not all here: wait for it and the next line's
                        // first byte; the scan resumes at the next line.
                        self.multi = true;
                        return Ok(Parse::NeedMore(next + 1));
                    }
                    if &buf[next - 2..next] != b"\r\n" {
                        return Err(ParseError::Malformed("memcache text: VALUE data not ended by CRLF"));
                    }
                    self.multi = true;
                    self.line_start = next;
                }
                // `stats`, `stats cachedump`, `stats detail dump`, `lru_crawler metadump`
                b"STAT" | b"ITEM" | b"PREFIX" | METADUMP => {
                    self.multi = true;
                    self.line_start = end;
                    if end >= self.max {
                        return Err(ParseError::TooLarge { len: end as u64 + 1, max: self.max as u64 });
                    }
                }
                b"END" => return checked_len(end as u64, self.max),
                _ if self.multi => {
                    return Err(ParseError::Malformed("memcache text: multi-part reply not ended by END"))
                }
                b"VA" => {
                    let n = number(t.next()).ok_or(ParseError::Malformed("memcache text: bad <size> in VA"))?;
                    return checked_len(end as u64 + n + 2, self.max);
                }
                _ => return checked_len(end as u64, self.max),
            }
            // Continue with the next line of a multi-part reply.
            if buf.len() <= self.line_start {
                return Ok(Parse::NeedMore(self.line_start + 1));
            }
        }
    }
}

/// How each line of an `lru_crawler metadump` reply starts.
const METADUMP: &[u8] = b"key=";

/// `get`, `gets`, `gat`, `gats` lines may list many keys.
fn is_get_family(line: &[u8]) -> bool {
    [&b"get "[..], b"gets ", b"gat ", b"gats "].iter().any(|p| line.starts_with(p))
}

/// A decimal field (memcached's `safe_strtoull`: digits only).
fn number(field: Option<&[u8]>) -> Option<u64> {
    let f = field?;
    if f.is_empty() || f.len() > 19 || !f.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(f.iter().fold(0u64, |n, &d| n * 10 + (d - b'0') as u64))
}

impl Parser for MemcacheText {
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        match self.side {
            Side::Requests => self.parse_request(buf),
            Side::Replies => self.parse_reply(buf),
        }
    }

    fn reset(&mut self) {
        self.line_start = 0;
        self.scanned = 0;
        self.multi = false;
    }

    fn max_message(&self) -> usize {
        self.max
    }

    fn name(&self) -> &'static str {
        match self.side {
            Side::Requests => "memcache-text",
            Side::Replies => "memcache-text-reply",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_boundaries, concat, split_stream};

    fn msgs(list: &[&[u8]]) -> Vec<Vec<u8>> {
        list.iter().map(|m| m.to_vec()).collect()
    }

    const REQUESTS: &[&[u8]] = &[
        b"set foo 0 0 3\r\nbar\r\n",
        b"add k 5 100 0 noreply\r\n\r\n",
        b"replace k 0 0 5\r\na\r\nb\r\r\n",
        b"append k 0 0 1\r\nx\r\n",
        b"prepend k 0 0 1\r\ny\r\n",
        b"cas k 0 0 2 12345\r\nhi\r\n",
        b"get a b c\r\n",
        b"gets a\r\n",
        b"gat 100 a b\r\n",
        b"gats 100 a\r\n",
        b"delete k\r\n",
        b"incr n 5\r\n",
        b"decr n 1 noreply\r\n",
        b"touch k 10\r\n",
        b"version\r\n",
        b"flush_all 0\r\n",
        b"verbosity 1\r\n",
        b"stats\r\n",
        b"stats slabs\r\n",
        b"mg foo v f t\r\n",
        b"ms foo 2 T90 F5\r\nhi\r\n",
        b"ms foo 0\r\n\r\n",
        b"md foo q\r\n",
        b"ma n D5\r\n",
        b"mn\r\n",
        b"me foo\r\n",
        b"bogus command\r\n",
        b"quit\r\n",
    ];

    const REPLIES: &[&[u8]] = &[
        b"VALUE foo 0 3\r\nbar\r\nEND\r\n",
        b"VALUE a 1 1 77\r\nx\r\nVALUE b 2 0 78\r\n\r\nVALUE c 0 4\r\nEND\r\r\nEND\r\n",
        b"END\r\n",
        b"STORED\r\n",
        b"NOT_STORED\r\n",
        b"EXISTS\r\n",
        b"NOT_FOUND\r\n",
        b"DELETED\r\n",
        b"TOUCHED\r\n",
        b"42\r\n",
        b"ERROR\r\n",
        b"CLIENT_ERROR bad data chunk\r\n",
        b"SERVER_ERROR out of memory\r\n",
        b"VERSION 1.6.21\r\n",
        b"OK\r\n",
        b"STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n",
        b"VA 3 f1 t-1\r\nabc\r\n",
        b"VA 0\r\n\r\n",
        b"HD\r\n",
        b"EN\r\n",
        b"NF\r\n",
        b"NS\r\n",
        b"EX\r\n",
        b"MN\r\n",
        b"ME foo exp=-1 la=1\r\n",
        b"PREFIX pre get 1 hit 1 set 1 del 0\r\nPREFIX other get 1 hit 0 set 0 del 0\r\nEND\r\n",
        b"key=pre%3Aa exp=-1 la=1796301189 cas=1 fetch=yes cls=1 size=65\nkey=b exp=-1 la=7 cas=2 fetch=no cls=1 size=64\nEND\r\n",
    ];

    #[test]
    fn requests_split_at_every_boundary() {
        let (stream, lens) = concat(&msgs(REQUESTS));
        assert_boundaries(&mut MemcacheText::requests(), &stream, &lens, &[3, 17, 40, 41, 99]);
    }

    #[test]
    fn replies_split_at_every_boundary() {
        let (stream, lens) = concat(&msgs(REPLIES));
        assert_boundaries(&mut MemcacheText::replies(), &stream, &lens, &[5, 16, 30, 60, 61, 200]);
    }

    /// memcached 1.6.18's answers to `stats detail dump` (PREFIX lines) and `lru_crawler
    /// metadump` (`key=` lines ended by a bare LF, as memcached writes them) are one reply
    /// each, up to END; found by the memcache_text capture.
    #[test]
    fn dump_replies_are_one_message_up_to_end() {
        let detail = b"PREFIX pre get 1 hit 1 set 1 del 0\r\nPREFIX other get 1 hit 0 set 0 del 0\r\nEND\r\n";
        assert_eq!(split_stream(&mut MemcacheText::replies(), detail), Ok(vec![detail.len()]));
        let meta =
            b"key=a exp=-1 la=1 cas=1 fetch=no cls=1 size=65\nkey=b exp=-1 la=2 cas=2 fetch=no cls=1 size=64\nEND\r\n";
        assert_eq!(split_stream(&mut MemcacheText::replies(), meta), Ok(vec![meta.len()]));
        let mut p = MemcacheText::replies();
        assert_eq!(p.parse(&meta[..30]), Ok(Parse::NeedMore(31)));
        assert_eq!(p.parse(&meta[..60]), Ok(Parse::NeedMore(61)));
        assert_eq!(p.parse(meta), Ok(Parse::Message(meta.len())));
        // a bare LF is accepted only on a metadump line: elsewhere it is still an error
        assert!(matches!(split_stream(&mut MemcacheText::replies(), b"STORED\n"), Err(ParseError::Malformed(_))));
        assert!(matches!(split_stream(&mut MemcacheText::requests(), b"key=a\n"), Err(ParseError::Malformed(_))));
    }

    #[test]
    fn incomplete_messages_wait() {
        let mut p = MemcacheText::requests();
        assert_eq!(p.parse(b"set foo 0 0 3\r"), Ok(Parse::NeedMore(15)));
        // length known from the header: the body need not be there yet
        assert_eq!(p.parse(b"set foo 0 0 3\r\n"), Ok(Parse::Message(20)));
        let mut p = MemcacheText::replies();
        assert_eq!(p.parse(b"VALUE k 0 3\r\nab"), Ok(Parse::NeedMore(19)));
        assert_eq!(p.parse(b"VALUE k 0 3\r\nabc\r\nEN"), Ok(Parse::NeedMore(21)));
        assert_eq!(p.parse(b"VALUE k 0 3\r\nabc\r\nEND\r\n"), Ok(Parse::Message(23)));
    }

    #[test]
    fn bad_streams_are_errors() {
        let e = |p: &mut MemcacheText, b: &[u8]| split_stream(p, b).unwrap_err();
        assert!(matches!(e(&mut MemcacheText::requests(), b"set k 0 0 x\r\n"), ParseError::Malformed(_)));
        assert!(matches!(e(&mut MemcacheText::requests(), b"cas k 0 0\r\n"), ParseError::Malformed(_)));
        assert!(matches!(e(&mut MemcacheText::requests(), b"get k\n"), ParseError::Malformed(_)));
        let long = vec![b'x'; 3000];
        assert_eq!(e(&mut MemcacheText::requests(), &long), ParseError::HeaderTooLarge { max: 2048 });
        let mut get = b"get".to_vec();
        for i in 0..500 {
            get.extend_from_slice(format!(" key{i}").as_bytes());
        }
        get.extend_from_slice(b"\r\n");
        assert_eq!(split_stream(&mut MemcacheText::requests(), &get), Ok(vec![get.len()]));
        let huge = b"set k 0 0 99999999999\r\n";
        assert!(matches!(e(&mut MemcacheText::requests(), huge), ParseError::TooLarge { .. }));
        assert!(matches!(e(&mut MemcacheText::replies(), b"VALUE k 0 1\r\nab\r\nEND\r\n"), ParseError::Malformed(_)));
        assert!(matches!(e(&mut MemcacheText::replies(), b"VALUE k 0 1\r\na\r\nSTORED\r\n"), ParseError::Malformed(_)));
        assert!(matches!(e(&mut MemcacheText::replies(), b"VA x\r\n"), ParseError::Malformed(_)));
        let stat_flood: Vec<u8> = b"STAT x 1\r\n".repeat(1000);
        let mut small = MemcacheText::replies().max(4096);
        assert!(matches!(e(&mut small, &stat_flood), ParseError::TooLarge { .. }));
    }

    #[test]
    fn random_splits_agree_with_whole_stream() {
        // A cheap property test: many pseudo-random cut sets over both streams.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for (list, side) in [(REQUESTS, Side::Requests), (REPLIES, Side::Replies)] {
            let (stream, lens) = concat(&msgs(list));
            for _ in 0..200 {
                let cuts: Vec<usize> = (0..8)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed % stream.len() as u64) as usize
                    })
                    .collect();
                let got = crate::testing::split_chunks(&mut MemcacheText::new(side), &stream, &cuts);
                assert_eq!(got.as_deref(), Ok(&lens[..]), "{side:?} cuts {cuts:?}");
            }
        }
    }
}
