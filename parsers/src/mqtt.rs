//! MQTT control packets (3.1.1 and 5.0, section 2.1): a fixed-header byte
//! (type, flags), the Remaining Length as a variable byte integer of at most
//! 4 bytes, then the variable header and payload.

use crate::contract::{checked_len, Parse, ParseError, Parser, DEFAULT_MAX};

/// Largest Remaining Length the 4-byte encoding can carry (256 MiB - 1).
pub const MAX_REMAINING: usize = 268_435_455;

/// MQTT parser; also checks the fixed-header flags the spec reserves.
#[derive(Debug, Clone)]
pub struct Mqtt {
    max: usize,
}

impl Mqtt {
    /// Max [`DEFAULT_MAX`] (the protocol allows 256 MiB).
    pub fn new() -> Self {
        Mqtt { max: DEFAULT_MAX }
    }

    /// Largest accepted packet, fixed header included.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }
}

impl Default for Mqtt {
    fn default() -> Self {
        Self::new()
    }
}

/// Flags are fixed for every type but PUBLISH (MQTT 3.1.1 table 2.2).
fn check_flags(b: u8) -> Result<(), ParseError> {
    let (ty, flags) = (b >> 4, b & 0x0f);
    match ty {
        0 => Err(ParseError::BadType(0)),
        3 if flags & 0b0110 == 0b0110 => Err(ParseError::Malformed("mqtt: PUBLISH with QoS 3")),
        3 => Ok(()),
        6 | 8 | 10 if flags != 0b0010 => Err(ParseError::Malformed("mqtt: reserved flags must be 0010")),
        6 | 8 | 10 => Ok(()),
        _ if flags != 0 => Err(ParseError::Malformed("mqtt: reserved flags must be 0000")),
        _ => Ok(()),
    }
}

impl Parser for Mqtt {
    #[inline]
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        let Some(&first) = buf.first() else {
            return Ok(Parse::NeedMore(2));
        };
        check_flags(first)?;
        let mut remaining = 0usize;
        for i in 0..4 {
            let Some(&b) = buf.get(1 + i) else {
                return Ok(Parse::NeedMore(2 + i));
            };
            remaining |= ((b & 0x7f) as usize) << (7 * i);
            if b & 0x80 == 0 {
                return checked_len((2 + i + remaining) as u64, self.max);
            }
        }
        // The fourth byte had its continuation bit set.
        Err(ParseError::VarintTooLong)
    }

    fn max_message(&self) -> usize {
        self.max
    }

    fn name(&self) -> &'static str {
        "mqtt"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_boundaries, concat};
    use proptest::prelude::*;

    /// CONNECT, MQTT 3.1.1, clean session, keepalive 60, client id "ab".
    static CONNECT: [u8; 16] =
        [0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02, b'a', b'b'];
    /// CONNACK, accepted.
    static CONNACK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
    /// PINGREQ.
    static PINGREQ: [u8; 2] = [0xc0, 0x00];
    /// SUBSCRIBE id 1 to "a/b" QoS 1.
    static SUBSCRIBE: [u8; 10] = [0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x01];

    fn encode(first: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![first];
        let mut n = body.len();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            v.push(b);
            if n == 0 {
                break;
            }
        }
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn fixtures_delineate() {
        assert_eq!(Mqtt::new().parse(&CONNECT), Ok(Parse::Message(16)));
        assert_eq!(Mqtt::new().parse(&CONNACK), Ok(Parse::Message(4)));
        assert_eq!(Mqtt::new().parse(&PINGREQ), Ok(Parse::Message(2)));
        assert_eq!(Mqtt::new().parse(&SUBSCRIBE), Ok(Parse::Message(10)));
        let (stream, lens) = concat(&[CONNECT.to_vec(), CONNACK.to_vec(), PINGREQ.to_vec(), SUBSCRIBE.to_vec()]);
        assert_boundaries(&mut Mqtt::new(), &stream, &lens, &[1, 17]);
    }

    #[test]
    fn varint_lengths() {
        // Spec table 2.4 boundaries.
        assert_eq!(Mqtt::new().parse(&[0x30, 0x7f]), Ok(Parse::Message(2 + 127)));
        assert_eq!(Mqtt::new().parse(&[0x30, 0x80, 0x01]), Ok(Parse::Message(3 + 128)));
        assert_eq!(Mqtt::new().parse(&[0x30, 0xff, 0x7f]), Ok(Parse::Message(3 + 16_383)));
        assert_eq!(Mqtt::new().parse(&[0x30, 0x80, 0x80]), Ok(Parse::NeedMore(4)));
        let mut big = Mqtt::new().max(usize::MAX);
        assert_eq!(big.parse(&[0x30, 0xff, 0xff, 0xff, 0x7f]), Ok(Parse::Message(5 + MAX_REMAINING)));
    }

    #[test]
    fn hostile_headers_are_errors() {
        assert_eq!(Mqtt::new().parse(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), Err(ParseError::VarintTooLong));
        assert_eq!(Mqtt::new().parse(&[0x30, 0x80, 0x80, 0x80, 0x80]), Err(ParseError::VarintTooLong));
        assert_eq!(Mqtt::new().parse(&[0x00, 0x00]), Err(ParseError::BadType(0)));
        assert!(matches!(Mqtt::new().parse(&[0x30, 0xff, 0xff, 0xff, 0x7f]), Err(ParseError::TooLarge { .. })));
        assert!(Mqtt::new().parse(&[0x36, 0x00]).is_err()); // QoS 3
        assert!(Mqtt::new().parse(&[0x80, 0x00]).is_err()); // SUBSCRIBE flags 0
        assert!(Mqtt::new().parse(&[0xc1, 0x00]).is_err()); // PINGREQ flags 1
    }

    proptest! {
        #[test]
        fn every_split(pkts in prop::collection::vec((prop::sample::select(vec![0x10u8, 0x20, 0x30, 0x32, 0x3d, 0x62, 0x82, 0xa2, 0xc0, 0xe0, 0xf0]),
                                                      prop::collection::vec(any::<u8>(), 0..300)), 1..5),
                       cuts in prop::collection::vec(0usize..1300, 0..8)) {
            let msgs: Vec<Vec<u8>> = pkts.iter().map(|(f, b)| encode(*f, b)).collect();
            let (stream, lens) = concat(&msgs);
            assert_boundaries(&mut Mqtt::new(), &stream, &lens, &cuts);
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..8)) {
            if let Ok(Parse::Message(l)) = Mqtt::new().parse(&bytes) {
                prop_assert!(l >= 2);
            }
        }
    }
}
