//! memcached requests in either protocol on one connection (spec `memcache`), the way
//! memcached itself accepts them: a message starting with the binary request magic `0x80`
//! is a binary packet ([`Memcached`]), anything else a text command ([`MemcacheText`]
//! requests). memcached decides once per connection from its first byte; this parser
//! decides per message, which accepts the same streams and costs nothing more (the first
//! byte of a message never changes between calls, so each inner parser keeps its own scan
//! state). A proxy in front of memcached serves both kinds of client on one port this way.

use crate::contract::{Parse, ParseError, Parser};
use crate::memcache_text::MemcacheText;
use crate::memcached::Memcached;

/// The binary protocol's request magic.
pub const REQUEST_MAGIC: u8 = 0x80;

/// Text or binary memcached requests, chosen per message by its first byte.
#[derive(Debug, Clone)]
pub struct MemcacheAny {
    text: MemcacheText,
    binary: Memcached,
}

impl MemcacheAny {
    /// Both protocols with their default limits.
    pub fn new() -> Self {
        MemcacheAny { text: MemcacheText::requests(), binary: Memcached::new() }
    }

    /// Largest message in either protocol.
    pub fn max(mut self, max: usize) -> Self {
        self.text = self.text.max(max);
        self.binary = self.binary.max(max);
        self
    }

    /// Longest text line, CRLF included.
    pub fn max_line(mut self, n: usize) -> Self {
        self.text = self.text.max_line(n);
        self
    }
}

impl Default for MemcacheAny {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser for MemcacheAny {
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        match buf.first() {
            None => Ok(Parse::NeedMore(1)),
            Some(&REQUEST_MAGIC) => self.binary.parse(buf),
            Some(_) => self.text.parse(buf),
        }
    }

    fn reset(&mut self) {
        self.text.reset();
        self.binary.reset();
    }

    fn max_message(&self) -> usize {
        self.text.max_message().max(self.binary.max_message())
    }

    fn name(&self) -> &'static str {
        "memcache"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_boundaries, concat, fuzz_splits, split_stream};
    use proptest::prelude::*;

    /// A binary GET of `key` (no extras).
    fn binary_get(key: &[u8]) -> Vec<u8> {
        let mut v = vec![REQUEST_MAGIC, 0x00];
        v.extend_from_slice(&(key.len() as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&(key.len() as u32).to_be_bytes());
        v.extend_from_slice(&[0; 12]);
        v.extend_from_slice(key);
        v
    }

    #[test]
    fn mixed_streams_split_at_every_boundary() {
        let msgs = vec![
            b"set foo 0 0 3\r\nbar\r\n".to_vec(),
            binary_get(b"foo"),
            b"get a b c\r\n".to_vec(),
            // A text value that starts with the magic byte is still inside the text message.
            b"set bin 0 0 2\r\n\x80\x00\r\n".to_vec(),
            binary_get(b"\r\nget x\r\n"),
            b"mn\r\n".to_vec(),
        ];
        let (stream, lens) = concat(&msgs);
        assert_boundaries(&mut MemcacheAny::new(), &stream, &lens, &[1, 24, 30, 50, 51]);
    }

    #[test]
    fn each_protocol_keeps_its_errors() {
        assert!(matches!(split_stream(&mut MemcacheAny::new(), b"get k\n"), Err(ParseError::Malformed(_))));
        let mut bad = binary_get(b"key");
        bad[11] = 1; // body shorter than the key
        assert!(matches!(split_stream(&mut MemcacheAny::new(), &bad), Err(ParseError::Malformed(_))));
        assert_eq!(MemcacheAny::new().parse(&[]), Ok(Parse::NeedMore(1)));
        assert_eq!(MemcacheAny::new().parse(&[REQUEST_MAGIC]), Ok(Parse::NeedMore(24)));
    }

    proptest! {
        /// Streams of protocol-ish bytes: the contract holds and pieces split as the whole.
        #[test]
        fn contract_holds_on_protocol_soup(bytes in prop::collection::vec(
            prop::sample::select(vec![b'g', b'e', b't', b's', b'm', b' ', b'1', b'3', b'\r', b'\n', 0x80, 0, 5]),
            0..200,
        )) {
            fuzz_splits(&mut MemcacheAny::new().max(512).max_line(32), &bytes);
        }
    }
}
