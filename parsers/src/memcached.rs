//! memcached binary protocol: a 24-byte header (magic 0x80 request / 0x81
//! response, key length u16 BE at 2, extras length u8 at 4, total body length
//! u32 BE at 8), then extras, key and value.

use crate::contract::{checked_len, Parse, ParseError, Parser};

/// Header size of every binary-protocol packet.
pub const HEADER: usize = 24;

/// memcached binary protocol parser (requests and responses).
#[derive(Debug, Clone)]
pub struct Memcached {
    max: usize,
}

impl Memcached {
    /// Max 1 MiB of body plus the header: memcached's default item size limit.
    pub fn new() -> Self {
        Memcached { max: HEADER + (1 << 20) }
    }

    /// Largest accepted packet, header included.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }
}

impl Default for Memcached {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser for Memcached {
    #[inline]
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        // Check the magic as soon as it is there: a desynchronised stream is
        // reported at once instead of after 24 bytes of garbage.
        match buf.first() {
            None => return Ok(Parse::NeedMore(HEADER)),
            Some(0x80 | 0x81) => {}
            Some(&m) => return Err(ParseError::BadMagic(m)),
        }
        let Some(h) = buf.get(..HEADER) else {
            return Ok(Parse::NeedMore(HEADER));
        };
        let key_len = u16::from_be_bytes([h[2], h[3]]) as u64;
        let extras_len = h[4] as u64;
        let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as u64;
        if key_len + extras_len > body {
            return Err(ParseError::Malformed("memcached: key + extras longer than body"));
        }
        checked_len(HEADER as u64 + body, self.max)
    }

    fn max_message(&self) -> usize {
        self.max
    }

    fn name(&self) -> &'static str {
        "memcached"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_boundaries, concat};
    use proptest::prelude::*;

    /// GET "Hello" request (protocol spec, "Example: Get request").
    static GET_REQ: [u8; 29] = [
        0x80, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, // magic, GET, key len 5
        0x00, 0x00, 0x00, 0x05, // body 5
        0x00, 0x00, 0x00, 0x00, // opaque
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // cas
        b'H', b'e', b'l', b'l', b'o',
    ];

    /// GET response, success, flags 0xdeadbeef, value "World" (spec example).
    static GET_RESP: [u8; 33] = [
        0x81, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, // extras 4
        0x00, 0x00, 0x00, 0x09, // body 9
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // opaque, cas 1
        0xde, 0xad, 0xbe, 0xef, b'W', b'o', b'r', b'l', b'd',
    ];

    #[test]
    fn fixtures_delineate() {
        assert_eq!(Memcached::new().parse(&GET_REQ), Ok(Parse::Message(29)));
        assert_eq!(Memcached::new().parse(&GET_RESP), Ok(Parse::Message(33)));
        assert_eq!(Memcached::new().parse(&GET_REQ[..23]), Ok(Parse::NeedMore(24)));
        assert_eq!(Memcached::new().parse(&GET_REQ[..24]), Ok(Parse::Message(29)));
        let (stream, lens) = concat(&[GET_REQ.to_vec(), GET_RESP.to_vec()]);
        assert_boundaries(&mut Memcached::new(), &stream, &lens, &[3, 30]);
    }

    #[test]
    fn hostile_headers_are_errors() {
        assert_eq!(Memcached::new().parse(b"GET "), Err(ParseError::BadMagic(b'G')));
        let mut h = GET_REQ;
        h[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Memcached::new().parse(&h), Err(ParseError::TooLarge { .. })));
        let mut h = GET_REQ;
        h[11] = 4; // body 4 < key 5
        assert!(matches!(Memcached::new().parse(&h), Err(ParseError::Malformed(_))));
        let mut h = GET_RESP;
        h[2] = 0xff; // key len 0xff00 + extras 4 > body
        assert!(matches!(Memcached::new().parse(&h), Err(ParseError::Malformed(_))));
    }

    fn packet(magic: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
        let body = extras.len() + key.len() + value.len();
        let mut v = vec![magic, 0x01];
        v.extend_from_slice(&(key.len() as u16).to_be_bytes());
        v.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
        v.extend_from_slice(&(body as u32).to_be_bytes());
        v.extend_from_slice(&[0; 12]);
        v.extend_from_slice(extras);
        v.extend_from_slice(key);
        v.extend_from_slice(value);
        v
    }

    proptest! {
        #[test]
        fn every_split(parts in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..9),
                                                       prop::collection::vec(any::<u8>(), 0..20), prop::collection::vec(any::<u8>(), 0..40)), 1..5),
                       cuts in prop::collection::vec(0usize..400, 0..8)) {
            let msgs: Vec<Vec<u8>> = parts.iter().map(|(r, e, k, v)| packet(if *r { 0x81 } else { 0x80 }, e, k, v)).collect();
            let (stream, lens) = concat(&msgs);
            assert_boundaries(&mut Memcached::new(), &stream, &lens, &cuts);
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(Parse::Message(l)) = Memcached::new().parse(&bytes) {
                prop_assert!(l >= HEADER);
            }
        }
    }
}
