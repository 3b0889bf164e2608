//! TLS records (RFC 8446 5.1, RFC 5246 6.2): content type (20..=24), legacy
//! version (major 3, minor 0..=4), u16 BE length, fragment. A TLS peer never
//! sends more than 2^14 + 2048 bytes of fragment (TLS 1.2 `TLSCiphertext`).

use crate::contract::{Parse, ParseError, Parser};

/// Record header size.
pub const HEADER: usize = 5;
/// Largest fragment any TLS version allows.
pub const MAX_FRAGMENT: usize = (1 << 14) + 2048;

/// TLS record-layer parser.
#[derive(Debug, Clone, Default)]
pub struct Tls;

impl Tls {
    pub fn new() -> Self {
        Tls
    }
}

impl Parser for Tls {
    #[inline]
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        // Validate each header byte as soon as it arrives.
        if let Some(&t) = buf.first() {
            if !(20..=24).contains(&t) {
                return Err(ParseError::BadType(t));
            }
        }
        if let Some(&major) = buf.get(1) {
            if major != 3 {
                return Err(ParseError::BadVersion(u16::from_be_bytes([major, buf.get(2).copied().unwrap_or(0)])));
            }
        }
        if let Some(&minor) = buf.get(2) {
            if minor > 4 {
                return Err(ParseError::BadVersion(u16::from_be_bytes([3, minor])));
            }
        }
        let Some(h) = buf.get(..HEADER) else {
            return Ok(Parse::NeedMore(HEADER));
        };
        let len = u16::from_be_bytes([h[3], h[4]]) as usize;
        if len > MAX_FRAGMENT {
            return Err(ParseError::TooLarge { len: (HEADER + len) as u64, max: (HEADER + MAX_FRAGMENT) as u64 });
        }
        Ok(Parse::Message(HEADER + len))
    }

    fn max_message(&self) -> usize {
        HEADER + MAX_FRAGMENT
    }

    fn name(&self) -> &'static str {
        "tls"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_boundaries, concat};
    use proptest::prelude::*;

    /// TLS 1.2 ChangeCipherSpec record.
    static CCS: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];
    /// Fatal alert, handshake_failure, record version TLS 1.0 (as in ClientHellos).
    static ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28];
    /// Start of a ClientHello record header, 512 bytes of handshake.
    static HELLO_HDR: [u8; 9] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

    #[test]
    fn fixtures_delineate() {
        assert_eq!(Tls.parse(&CCS), Ok(Parse::Message(6)));
        assert_eq!(Tls.parse(&ALERT), Ok(Parse::Message(7)));
        assert_eq!(Tls.parse(&HELLO_HDR), Ok(Parse::Message(517)));
        assert_eq!(Tls.parse(&HELLO_HDR[..4]), Ok(Parse::NeedMore(5)));
        let (stream, lens) = concat(&[CCS.to_vec(), ALERT.to_vec(), CCS.to_vec()]);
        assert_boundaries(&mut Tls, &stream, &lens, &[2, 8]);
    }

    #[test]
    fn hostile_headers_are_errors() {
        assert_eq!(Tls.parse(b"GET / HTTP/1.1"), Err(ParseError::BadType(b'G')));
        assert_eq!(Tls.parse(&[0x17, 0x02]), Err(ParseError::BadVersion(0x0200)));
        assert_eq!(Tls.parse(&[0x17, 0x03, 0x05]), Err(ParseError::BadVersion(0x0305)));
        assert_eq!(Tls.parse(&[0x19]), Err(ParseError::BadType(25)));
        assert_eq!(
            Tls.parse(&[0x17, 0x03, 0x03, 0xff, 0xff]),
            Err(ParseError::TooLarge { len: 65540, max: (HEADER + MAX_FRAGMENT) as u64 })
        );
        let max = (MAX_FRAGMENT as u16).to_be_bytes();
        assert_eq!(Tls.parse(&[0x17, 0x03, 0x03, max[0], max[1]]), Ok(Parse::Message(HEADER + MAX_FRAGMENT)));
    }

    proptest! {
        #[test]
        fn every_split(recs in prop::collection::vec((20u8..=24, 0u8..=4, prop::collection::vec(any::<u8>(), 0..60)), 1..6),
                       cuts in prop::collection::vec(0usize..400, 0..8)) {
            let msgs: Vec<Vec<u8>> = recs.iter().map(|(t, minor, body)| {
                let mut v = vec![*t, 3, *minor];
                v.extend_from_slice(&(body.len() as u16).to_be_bytes());
                v.extend_from_slice(body);
                v
            }).collect();
            let (stream, lens) = concat(&msgs);
            assert_boundaries(&mut Tls, &stream, &lens, &cuts);
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..12)) {
            let _ = Tls.parse(&bytes);
        }
    }
}
