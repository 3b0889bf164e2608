//! The `Parser` contract, after the kernel's strparser.
//!
//! The mux keeps the bytes of the stream in a ring, and hands a parser the
//! bytes *from the start of the next message* up to what has arrived. The
//! parser answers with one of three things:
//!
//! * [`Parse::NeedMore`]`(n)`: the header is incomplete; do not call again
//!   until at least `n` bytes (counted from the message start, `n > buf.len()`)
//!   are buffered. `n` is a lower bound, never an overestimate, so waiting for
//!   it can never deadlock at the end of a stream.
//! * [`Parse::Message`]`(len)`: the first message is `len` bytes long, header
//!   included (`1 <= len <= max_message()`). `len` may exceed `buf.len()`
//!   (the length field has been read, the body has not arrived): like
//!   strparser, the mux then waits for `len` bytes without calling again.
//! * `Err(`[`ParseError`]`)`: framing is lost; the mux posts `EPROTO` /
//!   `EMSGSIZE` on the connection and stops using it.
//!
//! Between two [`Parser::reset`] calls, successive calls see the *same* bytes,
//! possibly extended: scanning parsers rely on this to resume where they
//! stopped, so a message arriving byte by byte costs O(n), not O(n²).

use core::fmt;

/// Outcome of one [`Parser::parse`] call that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// At least this many bytes (from the message start, `> buf.len()`) are
    /// needed before the parser can say more.
    NeedMore(usize),
    /// The first message is this long, header included (may be `> buf.len()`).
    Message(usize),
}

/// What is wrong with the bytes at the start of a message. Small and `Copy`,
/// so the hot path never allocates to report an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// A magic byte / fixed marker did not match (memcached magic, gRPC flag).
    BadMagic(u8),
    /// A version field out of the accepted range (TLS record version).
    BadVersion(u16),
    /// A type field out of the accepted range (TLS content type, MQTT type 0).
    BadType(u8),
    /// The message would be longer than the configured maximum.
    TooLarge { len: u64, max: u64 },
    /// The length field claims fewer bytes than the header itself occupies.
    ShorterThanHeader { len: i64, header: u64 },
    /// A signed length field holds a negative value (Kafka).
    Negative(i64),
    /// Length arithmetic overflowed (e.g. HTTP/1 chunk sizes).
    Overflow,
    /// A variable-length integer used more bytes than the protocol allows.
    VarintTooLong,
    /// Nesting deeper than the configured limit (RESP aggregates).
    TooDeep { max: u32 },
    /// A header section longer than the configured limit (HTTP/1 head, RESP line).
    HeaderTooLarge { max: u64 },
    /// Any other protocol violation; the text names it.
    Malformed(&'static str),
    /// A BPF parser program failed.
    Bpf(BpfFault),
}

/// Why a BPF parser program failed at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfFault {
    /// The program returned a negative value (KCM: an error, e.g. `-EPROTO`).
    Negative(i64),
    /// The VM stopped the program (out-of-bounds access, bad helper call).
    Vm,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParseError::BadMagic(b) => write!(f, "bad magic byte {b:#04x}"),
            ParseError::BadVersion(v) => write!(f, "bad version {v:#06x}"),
            ParseError::BadType(t) => write!(f, "bad or reserved type {t}"),
            ParseError::TooLarge { len, max } => {
                write!(f, "message length {len} exceeds the maximum {max}")
            }
            ParseError::ShorterThanHeader { len, header } => {
                write!(f, "message length {len} is shorter than its {header}-byte header")
            }
            ParseError::Negative(v) => write!(f, "negative length {v}"),
            ParseError::Overflow => f.write_str("length arithmetic overflow"),
            ParseError::VarintTooLong => f.write_str("variable-length integer too long"),
            ParseError::TooDeep { max } => write!(f, "nesting deeper than {max}"),
            ParseError::HeaderTooLarge { max } => write!(f, "header longer than {max} bytes"),
            ParseError::Malformed(what) => write!(f, "malformed message: {what}"),
            ParseError::Bpf(BpfFault::Negative(v)) => {
                write!(f, "BPF parser program returned error {v}")
            }
            ParseError::Bpf(BpfFault::Vm) => f.write_str("BPF parser program faulted in the VM"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A message delineator for one byte stream (one per connection: parsers
/// may keep per-stream state, hence `&mut self`).
pub trait Parser: Send {
    /// Delineate the first message in `buf` (bytes from the message start to
    /// whatever has arrived, possibly several messages). Never panics, never
    /// reads past `buf`, never allocates.
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError>;

    /// Called after each [`Parse::Message`]: forget the scan state of the
    /// message just delineated.
    fn reset(&mut self) {}

    /// Called when the parser is attached to a fresh stream (construction
    /// counts as one). Differs from `reset` only for parsers with a
    /// stream-start rule, such as the HTTP/2 client preface.
    fn new_stream(&mut self) {
        self.reset()
    }

    /// The largest message this parser will ever accept; the mux sizes its
    /// ring and reports `EMSGSIZE` from it.
    fn max_message(&self) -> usize;

    /// Short protocol name for logs and stats.
    fn name(&self) -> &'static str;
}

impl<P: Parser + ?Sized> Parser for Box<P> {
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        (**self).parse(buf)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn new_stream(&mut self) {
        (**self).new_stream()
    }
    fn max_message(&self) -> usize {
        (**self).max_message()
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
}

/// Default cap for protocols whose wire format allows huge messages: large
/// enough for real traffic, small enough that a hostile header cannot make the
/// mux reserve gigabytes.
pub const DEFAULT_MAX: usize = 16 << 20;

/// Turn a computed total length into a `Message`, enforcing `max`.
#[inline]
pub(crate) fn checked_len(total: u64, max: usize) -> Result<Parse, ParseError> {
    if total > max as u64 {
        Err(ParseError::TooLarge { len: total, max: max as u64 })
    } else {
        Ok(Parse::Message(total as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_what_is_wrong() {
        let e = ParseError::TooLarge { len: 5, max: 4 };
        assert_eq!(e.to_string(), "message length 5 exceeds the maximum 4");
        let e = ParseError::ShorterThanHeader { len: 2, header: 4 };
        assert!(e.to_string().contains("shorter"));
    }

    #[test]
    fn checked_len_enforces_max() {
        assert_eq!(checked_len(4, 4), Ok(Parse::Message(4)));
        assert_eq!(checked_len(5, 4), Err(ParseError::TooLarge { len: 5, max: 4 }));
    }
}
