//! Redis RESP values: RESP2 (`+ - : $ *`) and the common RESP3 types
//! (`_ , # ( ! = % ~ > |`), nested to a depth limit.
//!
//! Inline commands (a line without a type byte, as typed into telnet, or the empty
//! line `redis-cli --pipe` sends before its closing `ECHO`) are requests only, so they
//! are accepted only when asked for ([`Resp::inline`], spec `resp:inline=true`): a
//! top-level value that starts with no type byte is then the line up to `\n`. Otherwise
//! they are errors, like RESP3 streamed strings/aggregates (`$?`, `*?`).
//!
//! The parser scans, so it keeps its place between calls (the next line to
//! find, the counts of the open aggregates): a value arriving byte by byte is
//! scanned once, O(n).

use crate::contract::{Parse, ParseError, Parser, DEFAULT_MAX};

/// Hard cap on nesting, sizing the fixed stack (no allocation).
pub const MAX_DEPTH_CAP: usize = 128;

/// RESP value parser.
#[derive(Debug, Clone)]
pub struct Resp {
    max: usize,
    max_depth: usize,
    max_line: usize,
    /// Start of the next element to read.
    pos: usize,
    /// Where to resume looking for the `\n` ending the line at `pos`.
    scan: usize,
    /// End of a bulk payload (after its CRLF) still to arrive.
    bulk_end: Option<usize>,
    /// Elements still expected by each open aggregate.
    open: [u64; MAX_DEPTH_CAP],
    depth: usize,
    /// Accept inline commands at the top level (request streams).
    inline: bool,
}

impl Resp {
    /// Max message [`DEFAULT_MAX`], depth 32, line 64 KiB.
    pub fn new() -> Self {
        Resp {
            max: DEFAULT_MAX,
            max_depth: 32,
            max_line: 64 << 10,
            pos: 0,
            scan: 0,
            bulk_end: None,
            open: [0; MAX_DEPTH_CAP],
            depth: 0,
            inline: false,
        }
    }

    /// Accepts inline commands at the top level (for streams of client requests; Redis
    /// itself answers them, and ignores empty ones).
    pub fn inline(mut self, yes: bool) -> Self {
        self.inline = yes;
        self
    }

    /// An inline command starting at 0: the line up to and including `\n`.
    fn inline_line(&self, buf: &[u8]) -> Result<Parse, ParseError> {
        match buf.iter().position(|&b| b == b'\n') {
            Some(nl) if nl > self.max_line => Err(ParseError::HeaderTooLarge { max: self.max_line as u64 }),
            Some(nl) => Ok(Parse::Message(nl + 1)),
            None if buf.len() > self.max_line => Err(ParseError::HeaderTooLarge { max: self.max_line as u64 }),
            None => Ok(Parse::NeedMore(buf.len() + 1)),
        }
    }

    /// Largest accepted value, all nested elements included.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Deepest aggregate nesting accepted (capped at [`MAX_DEPTH_CAP`]).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth.min(MAX_DEPTH_CAP);
        self
    }

    /// One element done: close every aggregate it completes. True when the
    /// whole value is done.
    fn element_done(&mut self) -> bool {
        while self.depth > 0 {
            let top = &mut self.open[self.depth - 1];
            *top -= 1;
            if *top > 0 {
                return false;
            }
            self.depth -= 1;
        }
        true
    }

    fn too_large(&self, len: u64) -> ParseError {
        ParseError::TooLarge { len, max: self.max as u64 }
    }

    /// Open an aggregate of `n` elements (`n > 0`).
    fn push(&mut self, n: u64) -> Result<(), ParseError> {
        if self.depth >= self.max_depth {
            return Err(ParseError::TooDeep { max: self.max_depth as u32 });
        }
        // Every element takes at least 3 bytes ("_\r\n"): refuse early a
        // count that cannot fit, instead of waiting for the bytes.
        let least = (self.pos as u64).saturating_add(n.saturating_mul(3));
        if least > self.max as u64 {
            return Err(self.too_large(least));
        }
        self.open[self.depth] = n;
        self.depth += 1;
        Ok(())
    }
}

impl Default for Resp {
    fn default() -> Self {
        Self::new()
    }
}

/// Parse a RESP integer line (`-?[0-9]+`).
fn int(line: &[u8]) -> Result<i64, ParseError> {
    let (neg, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() {
        return Err(ParseError::Malformed("resp: empty integer"));
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ParseError::Malformed("resp: bad digit in length"));
        }
        let d = (d - b'0') as i64;
        v = v
            .checked_mul(10)
            .and_then(|v| if neg { v.checked_sub(d) } else { v.checked_add(d) })
            .ok_or(ParseError::Overflow)?;
    }
    Ok(v)
}

/// Bytes that start a RESP value.
fn is_type_byte(b: u8) -> bool {
    matches!(b, b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' | b'$' | b'!' | b'=' | b'*' | b'~' | b'>' | b'%' | b'|')
}

impl Parser for Resp {
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        if self.inline && self.pos == 0 && self.depth == 0 && self.bulk_end.is_none() {
            match buf.first() {
                None => return Ok(Parse::NeedMore(1)),
                Some(&b) if !is_type_byte(b) => return self.inline_line(buf),
                Some(_) => {}
            }
        }
        loop {
            if let Some(end) = self.bulk_end {
                if buf.len() < end {
                    return Ok(Parse::NeedMore(end));
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(ParseError::Malformed("resp: bulk string not followed by CRLF"));
                }
                self.bulk_end = None;
                self.pos = end;
                self.scan = end;
                if self.element_done() {
                    return Ok(Parse::Message(end));
                }
                continue;
            }
            let pos = self.pos;
            let from = self.scan.max(pos + 1);
            let Some(nl) = buf.get(from..).and_then(|t| t.iter().position(|&b| b == b'\n')).map(|i| from + i) else {
                if buf.len().saturating_sub(pos) > self.max_line {
                    return Err(ParseError::HeaderTooLarge { max: self.max_line as u64 });
                }
                if buf.len() > self.max {
                    return Err(self.too_large(buf.len() as u64));
                }
                self.scan = buf.len().max(pos + 1);
                // The shortest line ("_\r\n") is 3 bytes.
                return Ok(Parse::NeedMore((buf.len() + 1).max(pos + 3)));
            };
            if nl - pos > self.max_line {
                return Err(ParseError::HeaderTooLarge { max: self.max_line as u64 });
            }
            if buf[nl - 1] != b'\r' || nl - 1 < pos + 1 {
                return Err(ParseError::Malformed("resp: line not ended by CRLF"));
            }
            let line = &buf[pos + 1..nl - 1];
            let next = nl + 1;
            if next > self.max {
                return Err(self.too_large(next as u64));
            }
            self.pos = next;
            self.scan = next;
            let complete = match buf[pos] {
                b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => {
                    if line.contains(&b'\r') {
                        return Err(ParseError::Malformed("resp: CR inside a simple value"));
                    }
                    true
                }
                t @ (b'$' | b'!' | b'=') => {
                    if line == b"?" {
                        return Err(ParseError::Malformed("resp: streamed strings are not supported"));
                    }
                    match int(line)? {
                        -1 if t == b'$' => true,
                        n if n < 0 => return Err(ParseError::Malformed("resp: negative bulk length")),
                        n => {
                            let end = (next as u64).saturating_add(n as u64).saturating_add(2);
                            if end > self.max as u64 {
                                return Err(self.too_large(end));
                            }
                            self.bulk_end = Some(end as usize);
                            continue;
                        }
                    }
                }
                t @ (b'*' | b'~' | b'>' | b'%' | b'|') => {
                    if line == b"?" {
                        return Err(ParseError::Malformed("resp: streamed aggregates are not supported"));
                    }
                    match int(line)? {
                        -1 if t == b'*' => true,
                        n if n < 0 => return Err(ParseError::Malformed("resp: negative aggregate length")),
                        n => {
                            let n = n as u64;
                            // Maps count pairs; an attribute also owns the value after it.
                            let elems = match t {
                                b'%' => n.saturating_mul(2),
                                b'|' => n.saturating_mul(2).saturating_add(1),
                                _ => n,
                            };
                            if elems == 0 {
                                true
                            } else {
                                self.push(elems)?;
                                false
                            }
                        }
                    }
                }
                _ => return Err(ParseError::Malformed("resp: unknown type byte (inline commands are not supported)")),
            };
            if complete && self.element_done() {
                return Ok(Parse::Message(next));
            }
        }
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.scan = 0;
        self.bulk_end = None;
        self.depth = 0;
    }

    fn max_message(&self) -> usize {
        self.max
    }

    fn name(&self) -> &'static str {
        "resp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_commands_only_when_asked_for() {
        let mut p = Resp::new().inline(true);
        assert_eq!(p.parse(b"\r\n*1\r\n$4\r\nPING\r\n"), Ok(Parse::Message(2)));
        p.reset();
        assert_eq!(p.parse(b"PING\r\n"), Ok(Parse::Message(6)));
        p.reset();
        assert_eq!(p.parse(b"\n"), Ok(Parse::Message(1)));
        p.reset();
        assert_eq!(p.parse(b"SET a"), Ok(Parse::NeedMore(6)));
        p.reset();
        assert_eq!(p.parse(b"*1\r\n$4\r\nPING\r\n"), Ok(Parse::Message(14)));
        p.reset();
        assert!(Resp::new().inline(true).parse(&[b'x'; 70_000]).is_err(), "an endless line is an error");
        assert!(Resp::new().parse(b"\r\n").is_err(), "replies never inline");
    }
    use crate::testing::{assert_boundaries, concat, split_stream};
    use proptest::prelude::*;

    static SET_CMD: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    static OK: &[u8] = b"+OK\r\n";
    static ERR: &[u8] = b"-ERR unknown command 'foo'\r\n";
    static INT: &[u8] = b":-1000\r\n";
    static NULL_BULK: &[u8] = b"$-1\r\n";
    static NULL_ARRAY: &[u8] = b"*-1\r\n";
    static EMPTY_BULK: &[u8] = b"$0\r\n\r\n";
    static NESTED: &[u8] = b"*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Hello\r\n-World\r\n";
    static RESP3_MAP: &[u8] = b"%2\r\n+first\r\n:1\r\n+second\r\n#t\r\n";
    static RESP3_MISC: &[u8] = b"~2\r\n,3.14\r\n(3492890328409238509324850943850943825024385\r\n";
    static RESP3_ATTR: &[u8] = b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2039123\r\n";
    static RESP3_VERBATIM: &[u8] = b"=15\r\ntxt:Some string\r\n";
    static RESP3_PUSH: &[u8] = b">2\r\n$7\r\nmessage\r\n_\r\n";
    static BLOB_ERR: &[u8] = b"!21\r\nSYNTAX invalid syntax\r\n";

    const ALL: &[&[u8]] = &[
        SET_CMD,
        OK,
        ERR,
        INT,
        NULL_BULK,
        NULL_ARRAY,
        EMPTY_BULK,
        NESTED,
        RESP3_MAP,
        RESP3_MISC,
        RESP3_ATTR,
        RESP3_VERBATIM,
        RESP3_PUSH,
        BLOB_ERR,
    ];

    #[test]
    fn fixtures_delineate() {
        for f in ALL {
            assert_eq!(Resp::new().parse(f), Ok(Parse::Message(f.len())), "{}", String::from_utf8_lossy(f));
        }
        let (stream, lens) = concat(&ALL.iter().map(|f| f.to_vec()).collect::<Vec<_>>());
        assert_boundaries(&mut Resp::new(), &stream, &lens, &[3, 40, 41, 100]);
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let deep: Vec<u8> = b"*1\r\n".repeat(33);
        assert_eq!(split_stream(&mut Resp::new(), &deep), Err(ParseError::TooDeep { max: 32 }));
        let deep_ok: Vec<u8> = [b"*1\r\n".repeat(32), b":1\r\n".to_vec()].concat();
        assert_eq!(split_stream(&mut Resp::new(), &deep_ok), Ok(vec![deep_ok.len()]));
        assert!(matches!(Resp::new().parse(b"$9223372036854775807\r\n"), Err(ParseError::TooLarge { .. })));
        assert_eq!(Resp::new().parse(b"$99999999999999999999\r\n"), Err(ParseError::Overflow));
        assert!(matches!(Resp::new().parse(b"*4611686018427387904\r\n"), Err(ParseError::TooLarge { .. })));
        assert!(matches!(Resp::new().parse(b"$-2\r\n"), Err(ParseError::Malformed(_))));
        assert!(matches!(Resp::new().parse(b"PING\r\n"), Err(ParseError::Malformed(_))));
        assert!(matches!(Resp::new().parse(b"+OK\n"), Err(ParseError::Malformed(_))));
        assert!(matches!(Resp::new().parse(b"$3\r\nabcXY"), Err(ParseError::Malformed(_))));
        assert!(matches!(Resp::new().parse(b"$?\r\n"), Err(ParseError::Malformed(_))));
        // A line that never ends.
        let long = [b"+".as_slice(), &[b'a'; 70_000]].concat();
        assert_eq!(Resp::new().parse(&long), Err(ParseError::HeaderTooLarge { max: 64 << 10 }));
    }

    #[test]
    fn partial_values_need_more() {
        assert_eq!(Resp::new().parse(b""), Ok(Parse::NeedMore(3)));
        assert_eq!(Resp::new().parse(b"*"), Ok(Parse::NeedMore(3)));
        assert_eq!(Resp::new().parse(b"*1\r\n"), Ok(Parse::NeedMore(7)));
        assert_eq!(Resp::new().parse(b"$5\r\nhel"), Ok(Parse::NeedMore(11)));
        let mut p = Resp::new();
        assert_eq!(p.parse(&SET_CMD[..20]), Ok(Parse::NeedMore(22)));
        assert_eq!(p.parse(SET_CMD), Ok(Parse::Message(SET_CMD.len())));
    }

    #[test]
    fn byte_by_byte_is_linear() {
        // 20 000 elements fed one byte at a time: each byte is examined a
        // bounded number of times, so this stays fast (quadratic would not).
        let big: Vec<u8> = [format!("*{}\r\n", 20_000).into_bytes(), b":12345\r\n".repeat(20_000)].concat();
        assert_eq!(crate::testing::split_bytewise(&mut Resp::new(), &big), Ok(vec![big.len()]));
    }

    fn value(depth: u32) -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
            any::<i64>().prop_map(|i| format!(":{i}\r\n").into_bytes()),
            prop::collection::vec(any::<u8>(), 0..30).prop_map(|b| [
                format!("${}\r\n", b.len()).into_bytes(),
                b,
                b"\r\n".to_vec()
            ]
            .concat()),
            Just(b"$-1\r\n".to_vec()),
            Just(b"_\r\n".to_vec()),
        ];
        leaf.prop_recursive(depth, 64, 5, |inner| {
            prop::collection::vec(inner, 0..5)
                .prop_map(|items| [format!("*{}\r\n", items.len()).into_bytes(), items.concat()].concat())
        })
    }

    proptest! {
        #[test]
        fn every_split(vals in prop::collection::vec(value(4), 1..5), cuts in prop::collection::vec(0usize..600, 0..8)) {
            let (stream, lens) = concat(&vals);
            assert_boundaries(&mut Resp::new(), &stream, &lens, &cuts);
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(prop::sample::select(b"*$:+-_%|~>#,!=?0123456789\r\nab".to_vec()), 0..60)) {
            let _ = split_stream(&mut Resp::new().max_depth(3).max(100), &bytes);
        }
    }
}
