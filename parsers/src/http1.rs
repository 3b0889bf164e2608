//! HTTP/1.1 messages (RFC 9112): the head up to the empty line (size
//! limited), then a body framed by Content-Length or chunked
//! Transfer-Encoding (chunk extensions and trailers included).
//!
//! Scope, as a delineator that sees one direction of a connection:
//! * requests: no Content-Length and no Transfer-Encoding means no body;
//! * responses: 1xx, 204 and 304 have no body; others need Content-Length or
//!   chunked. A body delimited by connection close, and responses to HEAD
//!   (whose Content-Length describes a body that is not sent), cannot be
//!   delineated without the other direction: they are errors here.
//! * Content-Length together with Transfer-Encoding, differing
//!   Content-Length values, and obsolete line folding are errors (they are
//!   the request-smuggling vectors RFC 9112 6.3 warns about).
//!
//! The parser scans, so it keeps its place between calls: a message arriving
//! byte by byte is scanned once, O(n).

use crate::contract::{Parse, ParseError, Parser, DEFAULT_MAX};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the end of the head; resume the search at `scan`.
    Head { scan: usize },
    /// Chunked body: the chunk-size line starts at `at`; resume at `scan`.
    ChunkSize { at: usize, scan: usize },
    /// Chunk data ends at `end` (the CRLF after it included).
    ChunkData { end: usize },
    /// Trailer section starting at `begin`: the next field line starts at
    /// `at`; resume at `scan`.
    Trailer { begin: usize, at: usize, scan: usize },
}

/// HTTP/1.1 request or response parser.
#[derive(Debug, Clone)]
pub struct Http1 {
    max: usize,
    max_head: usize,
    state: State,
}

impl Http1 {
    /// Max message [`DEFAULT_MAX`], head (and trailers) 64 KiB.
    pub fn new() -> Self {
        Http1 { max: DEFAULT_MAX, max_head: 64 << 10, state: State::Head { scan: 0 } }
    }

    /// Largest accepted message, head and body.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Largest accepted head (start line and header fields).
    pub fn max_head(mut self, max: usize) -> Self {
        self.max_head = max;
        self
    }

    fn too_large(&self, len: u64) -> ParseError {
        ParseError::TooLarge { len, max: self.max as u64 }
    }
}

impl Default for Http1 {
    fn default() -> Self {
        Self::new()
    }
}

fn malformed(what: &'static str) -> ParseError {
    ParseError::Malformed(what)
}

/// How the body after the head is framed.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked,
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let e = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(s, |e| e + 1);
    &v[s..e.max(s)]
}

fn decimal(v: &[u8]) -> Result<u64, ParseError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(malformed("http1: bad Content-Length"));
    }
    v.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add((d - b'0') as u64)).ok_or(ParseError::Overflow)
}

/// Read the head (without its final CRLFCRLF) and decide the body framing.
fn head_framing(head: &[u8]) -> Result<Body, ParseError> {
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = lines.next().unwrap_or_default();
    let is_response = start.starts_with(b"HTTP/");
    let mut no_body_status = false;
    if is_response {
        // HTTP/1.x SP 3DIGIT [SP reason]
        let code = start.get(9..12).ok_or(malformed("http1: bad status line"))?;
        if !(start.len() >= 12
            && start[5..].starts_with(b"1.")
            && start[8] == b' '
            && code.iter().all(u8::is_ascii_digit))
        {
            return Err(malformed("http1: bad status line"));
        }
        no_body_status = code[0] == b'1' || code == b"204" || code == b"304";
    } else {
        let mut parts = start.split(|&b| b == b' ');
        let (m, t, v) = (parts.next(), parts.next(), parts.next());
        match (m, t, v, parts.next()) {
            (Some(m), Some(t), Some(v), None)
                if !m.is_empty() && !t.is_empty() && v.starts_with(b"HTTP/1.") && v.len() == 8 => {}
            _ => return Err(malformed("http1: bad request line")),
        }
    }
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    for line in lines {
        if line.first().is_some_and(|b| matches!(b, b' ' | b'\t')) {
            return Err(malformed("http1: obsolete line folding"));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(malformed("http1: header line without colon"))?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || name.iter().any(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            return Err(malformed("http1: bad header name"));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            for v in value.split(|&b| b == b',') {
                let v = decimal(trim(v))?;
                if length.is_some_and(|l| l != v) {
                    return Err(malformed("http1: conflicting Content-Length values"));
                }
                length = Some(v);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the final coding matters for framing; several fields concatenate.
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or_default();
            if !last.is_empty() {
                chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
        }
    }
    match (length, chunked) {
        (Some(_), Some(_)) => Err(malformed("http1: both Content-Length and Transfer-Encoding")),
        _ if no_body_status => Ok(Body::Length(0)),
        (_, Some(true)) => Ok(Body::Chunked),
        (_, Some(false)) => Err(malformed("http1: body not chunked (delimited by close) is not supported")),
        (Some(l), None) => Ok(Body::Length(l)),
        (None, None) if is_response => Err(malformed("http1: response body delimited by close is not supported")),
        (None, None) => Ok(Body::Length(0)),
    }
}

/// Find `\n` at or after `from`; returns its index.
fn find_nl(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?.iter().position(|&b| b == b'\n').map(|i| from + i)
}

/// Parse a chunk-size line (without CRLF): hex size, optional `;ext`.
fn chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let hex_end = line.iter().position(|b| !b.is_ascii_hexdigit()).unwrap_or(line.len());
    let (hex, rest) = line.split_at(hex_end);
    let rest = trim(rest);
    if hex.is_empty() || !(rest.is_empty() || rest[0] == b';') {
        return Err(malformed("http1: bad chunk size line"));
    }
    hex.iter()
        .try_fold(0u64, |acc, &d| {
            let v = (d as char).to_digit(16)? as u64;
            acc.checked_mul(16)?.checked_add(v)
        })
        .ok_or(ParseError::Overflow)
}

impl Parser for Http1 {
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        loop {
            match self.state {
                State::Head { scan } => {
                    // Resume 3 bytes back: the terminator may straddle calls.
                    let from = scan.saturating_sub(3);
                    let found = buf.get(from..).and_then(|t| t.windows(4).position(|w| w == b"\r\n\r\n"));
                    let Some(i) = found else {
                        if buf.len() > self.max_head {
                            return Err(ParseError::HeaderTooLarge { max: self.max_head as u64 });
                        }
                        self.state = State::Head { scan: buf.len() };
                        return Ok(Parse::NeedMore((buf.len() + 1).max(4)));
                    };
                    let head_len = from + i + 4;
                    if head_len > self.max_head {
                        return Err(ParseError::HeaderTooLarge { max: self.max_head as u64 });
                    }
                    match head_framing(&buf[..head_len - 4])? {
                        Body::Length(l) => {
                            let total = (head_len as u64).checked_add(l).ok_or(ParseError::Overflow)?;
                            if total > self.max as u64 {
                                return Err(self.too_large(total));
                            }
                            return Ok(Parse::Message(total as usize));
                        }
                        Body::Chunked => self.state = State::ChunkSize { at: head_len, scan: head_len },
                    }
                }
                State::ChunkSize { at, scan } => {
                    let Some(nl) = find_nl(buf, scan) else {
                        if buf.len() - at > 4096 {
                            return Err(ParseError::HeaderTooLarge { max: 4096 });
                        }
                        self.state = State::ChunkSize { at, scan: buf.len() };
                        // Shortest chunk-size line: "0\r\n".
                        return Ok(Parse::NeedMore((buf.len() + 1).max(at + 3)));
                    };
                    if nl == at || buf[nl - 1] != b'\r' {
                        return Err(malformed("http1: chunk size line not ended by CRLF"));
                    }
                    let size = chunk_size(&buf[at..nl - 1])?;
                    let data = nl as u64 + 1;
                    if size == 0 {
                        let d = data as usize;
                        self.state = State::Trailer { begin: d, at: d, scan: d };
                        continue;
                    }
                    let end = data.checked_add(size).and_then(|e| e.checked_add(2)).ok_or(ParseError::Overflow)?;
                    // The last chunk and final CRLF follow: at least 5 more bytes.
                    if end + 5 > self.max as u64 {
                        return Err(self.too_large(end + 5));
                    }
                    self.state = State::ChunkData { end: end as usize };
                }
                State::ChunkData { end } => {
                    if buf.len() < end {
                        return Ok(Parse::NeedMore(end));
                    }
                    if &buf[end - 2..end] != b"\r\n" {
                        return Err(malformed("http1: chunk data not followed by CRLF"));
                    }
                    self.state = State::ChunkSize { at: end, scan: end };
                }
                State::Trailer { begin, at, scan } => {
                    let Some(nl) = find_nl(buf, scan) else {
                        if buf.len() - begin > self.max_head {
                            return Err(ParseError::HeaderTooLarge { max: self.max_head as u64 });
                        }
                        self.state = State::Trailer { begin, at, scan: buf.len() };
                        return Ok(Parse::NeedMore((buf.len() + 1).max(at + 2)));
                    };
                    if nl == at || buf[nl - 1] != b'\r' {
                        return Err(malformed("http1: trailer line not ended by CRLF"));
                    }
                    if nl - begin > self.max_head {
                        return Err(ParseError::HeaderTooLarge { max: self.max_head as u64 });
                    }
                    if nl - 1 == at {
                        // Empty line: the message ends here.
                        let total = nl + 1;
                        if total > self.max {
                            return Err(self.too_large(total as u64));
                        }
                        return Ok(Parse::Message(total));
                    }
                    if !buf[at..nl].contains(&b':') {
                        return Err(malformed("http1: trailer line without colon"));
                    }
                    self.state = State::Trailer { begin, at: nl + 1, scan: nl + 1 };
                }
            }
        }
    }

    fn reset(&mut self) {
        self.state = State::Head { scan: 0 };
    }

    fn max_message(&self) -> usize {
        self.max
    }

    fn name(&self) -> &'static str {
        "http1"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_boundaries, concat, split_bytewise, split_stream};
    use proptest::prelude::*;

    static GET: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nAccept: */*\r\n\r\n";
    static POST: &[u8] =
        b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Type: text/plain\r\n\r\nfoo=bar";
    static CHUNKED_REQ: &[u8] =
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nWiki\r\n5;name=v\r\npedia\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\n";
    static RESP_200: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello";
    static RESP_CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
    static RESP_204: &[u8] = b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n";
    static RESP_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    static RESP_304: &[u8] = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n";

    #[test]
    fn fixtures_delineate() {
        for f in [GET, POST, CHUNKED_REQ, RESP_200, RESP_CHUNKED, RESP_204, RESP_100, RESP_304] {
            assert_eq!(Http1::new().parse(f), Ok(Parse::Message(f.len())), "{}", String::from_utf8_lossy(f));
            assert_eq!(split_bytewise(&mut Http1::new(), f), Ok(vec![f.len()]));
        }
        let (stream, lens) = concat(&[GET.to_vec(), POST.to_vec(), CHUNKED_REQ.to_vec(), GET.to_vec()]);
        assert_boundaries(&mut Http1::new(), &stream, &lens, &[10, 70, 71, 200]);
        let (stream, lens) = concat(&[RESP_100.to_vec(), RESP_200.to_vec(), RESP_CHUNKED.to_vec(), RESP_204.to_vec()]);
        assert_boundaries(&mut Http1::new(), &stream, &lens, &[1, 30]);
        // The length is known as soon as the head is complete.
        assert_eq!(Http1::new().parse(&POST[..POST.len() - 7]), Ok(Parse::Message(POST.len())));
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let m = |s: &[u8]| Http1::new().parse(s);
        assert!(matches!(
            m(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            m(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(m(b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc"), Ok(Parse::Message(44)));
        assert_eq!(m(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"), Err(ParseError::Overflow));
        assert_eq!(m(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"), Err(ParseError::Overflow));
        assert!(matches!(
            m(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551000\r\n\r\n"),
            Err(ParseError::TooLarge { .. })
        ));
        assert!(matches!(m(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), Err(ParseError::Malformed(_))));
        assert!(matches!(
            m(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"),
            Err(ParseError::Overflow)
        ));
        assert!(matches!(
            m(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffff\r\n"),
            Err(ParseError::TooLarge { .. })
        ));
        assert!(matches!(
            m(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            m(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(m(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), Err(ParseError::Malformed(_))));
        assert!(matches!(m(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"), Err(ParseError::Malformed(_))));
        assert!(matches!(m(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), Err(ParseError::Malformed(_))));
        assert!(matches!(m(b"HTTP/1.1 200 OK\r\n\r\n"), Err(ParseError::Malformed(_))));
        assert!(matches!(m(b"GARBAGE\r\n\r\n"), Err(ParseError::Malformed(_))));
        // Header bomb: a head that never ends.
        let bomb = [b"GET / HTTP/1.1\r\n".as_slice(), &b"X-A: b\r\n".repeat(10_000)].concat();
        assert_eq!(split_stream(&mut Http1::new(), &bomb), Err(ParseError::HeaderTooLarge { max: 64 << 10 }));
        let trailer_bomb =
            [b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".as_slice(), &b"X-A: b\r\n".repeat(10_000)]
                .concat();
        assert_eq!(split_stream(&mut Http1::new(), &trailer_bomb), Err(ParseError::HeaderTooLarge { max: 64 << 10 }));
    }

    #[test]
    fn byte_by_byte_is_linear() {
        let body: Vec<u8> = b"10\r\n0123456789abcdef\r\n".repeat(20_000);
        let msg = [b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(), &body, b"0\r\n\r\n"].concat();
        assert_eq!(split_bytewise(&mut Http1::new(), &msg), Ok(vec![msg.len()]));
        let head = [b"GET / HTTP/1.1\r\n".as_slice(), &b"X-A: b\r\n".repeat(7_000), b"\r\n"].concat();
        assert_eq!(split_bytewise(&mut Http1::new(), &head), Ok(vec![head.len()]));
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        let body = prop::collection::vec(any::<u8>(), 0..60);
        let chunks = prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 0..4);
        prop_oneof![
            "[a-z/]{1,10}".prop_map(|p| format!("GET /{p} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()),
            body.prop_map(
                |b| [format!("PUT /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", b.len()).into_bytes(), b].concat()
            ),
            (chunks, any::<bool>()).prop_map(|(cs, trailer)| {
                let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for c in cs {
                    v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    v.extend_from_slice(&c);
                    v.extend_from_slice(b"\r\n");
                }
                v.extend_from_slice(if trailer { b"0\r\nT: 1\r\n\r\n".as_slice() } else { b"0\r\n\r\n" });
                v
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_split(msgs in prop::collection::vec(message(), 1..5), cuts in prop::collection::vec(0usize..600, 0..8)) {
            let (stream, lens) = concat(&msgs);
            assert_boundaries(&mut Http1::new(), &stream, &lens, &cuts);
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(prop::sample::select(b"GET / HTTP/1.1\r\n:0123456789abcdefContent-Length Transfer-Encoding chunked".to_vec()), 0..120)) {
            let _ = split_stream(&mut Http1::new().max(200).max_head(100), &bytes);
        }
    }
}
