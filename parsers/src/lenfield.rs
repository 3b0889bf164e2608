//! The length-field family: one fixed-position integer gives the message
//! length. Covers Thrift framed, DNS over TCP, Kafka and gRPC message framing
//! as presets of one generic parser.
//!
//! Length rule (as in netty's `LengthFieldBasedFrameDecoder`): with the header
//! being the bytes up to the end of the field (`offset + width`),
//! `total = value + adjust`, plus the header length unless the field already
//! counts it (`includes_header`). The common shapes (fields of up to 4
//! bytes) take a precomputed `i64` fast path; everything else, and every error,
//! is decided in `i128`, so no field value or adjustment can overflow.

use crate::contract::{checked_len, Parse, ParseError, Parser, DEFAULT_MAX};

/// Byte order of the length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Big,
    Little,
}

/// The shape of a length field, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthLayout {
    /// Byte offset of the field.
    pub offset: usize,
    /// Field width in bytes.
    pub width: usize,
    /// Byte order.
    pub endian: Endian,
    /// Added to the field's value to get the message length.
    pub adjust: i64,
    /// Whether the value counts the header too.
    pub includes_header: bool,
    /// Whether the field is signed (negative: framing error).
    pub signed: bool,
}

/// A generic length-field parser (also the presets' implementation).
#[derive(Debug, Clone)]
pub struct LengthField {
    offset: usize,
    width: usize,
    endian: Endian,
    adjust: i64,
    includes_header: bool,
    signed: bool,
    max: usize,
    name: &'static str,
    /// Precomputed fast path (see [`FastShape`]); `Wide` sends every parse to `parse_wide`.
    fast: FastShape,
    /// `adjust`, plus the header length unless the field counts it: `total = value + base`.
    base: i64,
    /// For signed fields, the shift that sign-extends the value from its width (0 if unsigned).
    sign_shift: u32,
}

/// The shapes parsed without `i128`: fields of 1 to 4 bytes (sign-extended when signed) with an adjustment
/// far from `i64`'s limits, where `value + base` is exact in `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastShape {
    U8,
    U16Be,
    U16Le,
    U24Be,
    U24Le,
    U32Be,
    U32Le,
    Wide,
}

/// Why a length-field configuration is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthFieldConfigError {
    /// Width is not 1, 2, 3, 4 or 8.
    Width(usize),
    /// `offset + width` does not fit in `usize`.
    Offset,
}

impl core::fmt::Display for LengthFieldConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Width(w) => write!(f, "length field width {w} is not 1, 2, 3, 4 or 8"),
            Self::Offset => f.write_str("length field offset too large"),
        }
    }
}

impl std::error::Error for LengthFieldConfigError {}

impl LengthField {
    /// A length field of `width` bytes at `offset`; the value counts the bytes
    /// after the field, `signed = false`, max [`DEFAULT_MAX`].
    pub fn new(offset: usize, width: usize, endian: Endian) -> Result<Self, LengthFieldConfigError> {
        if !matches!(width, 1 | 2 | 3 | 4 | 8) {
            return Err(LengthFieldConfigError::Width(width));
        }
        offset.checked_add(width).filter(|h| *h <= isize::MAX as usize).ok_or(LengthFieldConfigError::Offset)?;
        Ok(LengthField {
            offset,
            width,
            endian,
            adjust: 0,
            includes_header: false,
            signed: false,
            max: DEFAULT_MAX,
            name: "lenfield",
            fast: FastShape::Wide,
            base: 0,
            sign_shift: 0,
        }
        .refresh())
    }

    /// Recomputes the fast path after a configuration change.
    fn refresh(mut self) -> Self {
        let header = (self.offset + self.width) as i64;
        let base = self.adjust.checked_add(if self.includes_header { 0 } else { header });
        const LIMIT: i64 = 1 << 61; // |base| + u32::MAX stays far inside i64
        self.fast = match (base, self.signed, self.width, self.endian) {
            (Some(b), _, w, e) if b.unsigned_abs() < LIMIT as u64 => match (w, e) {
                (1, _) => FastShape::U8,
                (2, Endian::Big) => FastShape::U16Be,
                (2, Endian::Little) => FastShape::U16Le,
                (3, Endian::Big) => FastShape::U24Be,
                (3, Endian::Little) => FastShape::U24Le,
                (4, Endian::Big) => FastShape::U32Be,
                (4, Endian::Little) => FastShape::U32Le,
                _ => FastShape::Wide,
            },
            _ => FastShape::Wide,
        };
        self.base = base.unwrap_or(0);
        self.sign_shift = if self.signed { 64 - 8 * self.width as u32 } else { 0 };
        self
    }

    /// Signed adjustment added to the field value (e.g. a trailer the field
    /// does not count).
    pub fn adjust(mut self, adjust: i64) -> Self {
        self.adjust = adjust;
        self.refresh()
    }

    /// Whether the field value already counts the header bytes.
    pub fn includes_header(mut self, yes: bool) -> Self {
        self.includes_header = yes;
        self.refresh()
    }

    /// Interpret the field as two's complement; negative values are errors.
    pub fn signed(mut self, yes: bool) -> Self {
        self.signed = yes;
        self.refresh()
    }

    /// Largest accepted message, header included.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Thrift framed transport: u32 BE frame size, then the frame.
    pub fn thrift() -> Self {
        Self::preset(0, 4).named("thrift")
    }

    /// DNS over TCP (RFC 1035 4.2.2): u16 BE length, then the message.
    pub fn dns() -> Self {
        Self::preset(0, 2).named("dns")
    }

    /// Kafka: i32 BE size, then the request/response; negative is an error.
    pub fn kafka() -> Self {
        Self::preset(0, 4).signed(true).named("kafka")
    }

    fn preset(offset: usize, width: usize) -> Self {
        match Self::new(offset, width, Endian::Big) {
            Ok(p) => p,
            Err(_) => unreachable!("presets use valid widths"),
        }
    }

    /// Bytes up to the end of the length field.
    pub fn header_len(&self) -> usize {
        self.offset + self.width
    }

    /// Where the field is and what it counts (for tools that write this framing).
    pub fn layout(&self) -> LengthLayout {
        LengthLayout {
            offset: self.offset,
            width: self.width,
            endian: self.endian,
            adjust: self.adjust,
            includes_header: self.includes_header,
            signed: self.signed,
        }
    }

    /// Read the raw field, sign-extended if signed, from a buffer holding at
    /// least the header. Fixed-size reads per width so the common cases
    /// compile to one load and a byte swap.
    #[inline(always)]
    fn field(&self, h: &[u8]) -> i128 {
        let o = self.offset;
        let big = self.endian == Endian::Big;
        let v = match self.width {
            1 => h[o] as u64,
            2 => {
                let b = [h[o], h[o + 1]];
                (if big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }) as u64
            }
            3 => {
                let (a, b, c) = (h[o] as u64, h[o + 1] as u64, h[o + 2] as u64);
                if big {
                    a << 16 | b << 8 | c
                } else {
                    c << 16 | b << 8 | a
                }
            }
            4 => {
                let b = [h[o], h[o + 1], h[o + 2], h[o + 3]];
                (if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }) as u64
            }
            _ => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[o..o + 8]);
                if big {
                    u64::from_be_bytes(b)
                } else {
                    u64::from_le_bytes(b)
                }
            }
        };
        if self.signed {
            // Sign-extend from the field width.
            let shift = 64 - 8 * self.width as u32;
            (((v << shift) as i64) >> shift) as i128
        } else {
            v as i128
        }
    }
}

impl LengthField {
    /// The general rule in `i128`: any width, sign, adjustment and header, no overflow.
    #[cold]
    fn parse_wide(&self, buf: &[u8], header: usize) -> Result<Parse, ParseError> {
        let value = self.field(buf);
        if value < 0 {
            return Err(ParseError::Negative(value as i64));
        }
        let mut total = value + self.adjust as i128;
        if !self.includes_header {
            total += header as i128;
        }
        if total < header as i128 {
            let len = total.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            return Err(ParseError::ShorterThanHeader { len, header: header as u64 });
        }
        // total >= header >= 1 here; beyond u64 only with an 8-byte field plus adjust.
        let total = u64::try_from(total).map_err(|_| ParseError::Overflow)?;
        checked_len(total, self.max)
    }
}

impl Parser for LengthField {
    /// Fast path for the common shapes (fields up to 4 bytes: Thrift, DNS, gRPC, Kafka,
    /// most custom framings): one bounds check, one load, a precomputed base; everything
    /// else, and every error, is decided by the exact `i128` rule in `parse_wide`.
    #[inline]
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        let header = self.offset + self.width;
        let Some(h) = buf.get(self.offset..header) else {
            return Ok(Parse::NeedMore(header));
        };
        let value = match (self.fast, h) {
            (FastShape::U8, &[a]) => a as u32,
            (FastShape::U16Be, &[a, b]) => u16::from_be_bytes([a, b]) as u32,
            (FastShape::U16Le, &[a, b]) => u16::from_le_bytes([a, b]) as u32,
            (FastShape::U24Be, &[a, b, c]) => u32::from_be_bytes([0, a, b, c]),
            (FastShape::U24Le, &[a, b, c]) => u32::from_le_bytes([a, b, c, 0]),
            (FastShape::U32Be, &[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            (FastShape::U32Le, &[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
            _ => return self.parse_wide(buf, header),
        };
        // Sign-extended from the field's width when signed; a negative value is an error.
        let value = ((value as i64) << self.sign_shift) >> self.sign_shift;
        let total = value + self.base;
        if value < 0 || total < header as i64 {
            return self.parse_wide(buf, header);
        }
        checked_len(total as u64, self.max)
    }

    fn max_message(&self) -> usize {
        self.max
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

/// gRPC message framing over HTTP/2 DATA (the Length-Prefixed-Message of the
/// gRPC wire spec): compressed-flag byte (0 or 1), u32 BE length, message.
#[derive(Debug, Clone)]
pub struct Grpc {
    inner: LengthField,
}

impl Grpc {
    /// Max [`DEFAULT_MAX`] (gRPC's own default receive limit is 4 MiB; ours is
    /// a framing limit, not a policy).
    pub fn new() -> Self {
        Grpc { inner: LengthField::preset(1, 4).named("grpc") }
    }

    /// Largest accepted message, 5-byte prefix included.
    pub fn max(mut self, max: usize) -> Self {
        self.inner = self.inner.max(max);
        self
    }
}

impl Default for Grpc {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser for Grpc {
    #[inline]
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        match buf.first() {
            None => Ok(Parse::NeedMore(5)),
            Some(&flag) if flag > 1 => Err(ParseError::BadMagic(flag)),
            Some(_) => self.inner.parse(buf),
        }
    }
    fn max_message(&self) -> usize {
        self.inner.max_message()
    }
    fn name(&self) -> &'static str {
        "grpc"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_boundaries, concat, split_stream};
    use proptest::prelude::*;

    /// Thrift framed `ping()` call, TBinaryProtocol strict: frame size 17.
    static THRIFT_PING: [u8; 21] = [
        0x00, 0x00, 0x00, 0x11, // frame size 17
        0x80, 0x01, 0x00, 0x01, // version 1, CALL
        0x00, 0x00, 0x00, 0x04, b'p', b'i', b'n', b'g', // name
        0x00, 0x00, 0x00, 0x01, // seqid
        0x00, // T_STOP
    ];

    /// DNS over TCP: query for example.com A, id 0x1234, RD.
    static DNS_QUERY: [u8; 31] = [
        0x00, 0x1d, // length 29
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // header
        7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, // qname
        0x00, 0x01, 0x00, 0x01, // A IN
    ];

    /// Kafka ApiVersions v0 request: size 12 (api key 18, version 0, correlation id 1, client "ab").
    static KAFKA_APIVERSIONS: [u8; 16] = [
        0x00, 0x00, 0x00, 0x0c, // size 12
        0x00, 0x12, 0x00, 0x00, // api key 18, version 0
        0x00, 0x00, 0x00, 0x01, // correlation id
        0x00, 0x02, b'a', b'b', // client id
    ];

    /// gRPC: uncompressed 3-byte protobuf message (field 1 = 150).
    static GRPC_MSG: [u8; 8] = [0x00, 0x00, 0x00, 0x00, 0x03, 0x08, 0x96, 0x01];

    #[test]
    fn fixtures_delineate() {
        assert_eq!(LengthField::thrift().parse(&THRIFT_PING), Ok(Parse::Message(21)));
        assert_eq!(LengthField::dns().parse(&DNS_QUERY), Ok(Parse::Message(31)));
        assert_eq!(LengthField::kafka().parse(&KAFKA_APIVERSIONS), Ok(Parse::Message(16)));
        assert_eq!(Grpc::new().parse(&GRPC_MSG), Ok(Parse::Message(8)));
        let (stream, lens) = concat(&[THRIFT_PING.to_vec(), THRIFT_PING.to_vec()]);
        assert_eq!(split_stream(&mut LengthField::thrift(), &stream), Ok(lens));
    }

    #[test]
    fn short_header_needs_exactly_the_header() {
        assert_eq!(LengthField::thrift().parse(&[0, 0, 0]), Ok(Parse::NeedMore(4)));
        assert_eq!(LengthField::dns().parse(&[]), Ok(Parse::NeedMore(2)));
        assert_eq!(Grpc::new().parse(&[0, 0]), Ok(Parse::NeedMore(5)));
        // The length is reported before the body arrives (strparser style).
        assert_eq!(LengthField::thrift().parse(&THRIFT_PING[..4]), Ok(Parse::Message(21)));
    }

    #[test]
    fn hostile_lengths_are_errors() {
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            LengthField::thrift().parse(&huge),
            Err(ParseError::TooLarge { len: 0xffff_ffff + 4, max: DEFAULT_MAX as u64 })
        );
        assert_eq!(LengthField::kafka().parse(&huge), Err(ParseError::Negative(-1)));
        assert_eq!(LengthField::kafka().parse(&[0x80, 0, 0, 0]), Err(ParseError::Negative(i32::MIN as i64)));
        assert_eq!(Grpc::new().parse(&[2, 0, 0, 0, 0]), Err(ParseError::BadMagic(2)));
        // 8-byte field at u64::MAX with a positive adjust: no overflow.
        let mut p = LengthField::new(0, 8, Endian::Little).unwrap().adjust(i64::MAX).max(usize::MAX);
        assert_eq!(p.parse(&[0xff; 8]), Err(ParseError::Overflow));
        let mut p = LengthField::new(0, 8, Endian::Big).unwrap().max(usize::MAX);
        assert_eq!(p.parse(&[0xff; 8]), Err(ParseError::Overflow));
        // Field counting the header but smaller than it.
        let mut p = LengthField::new(2, 2, Endian::Big).unwrap().includes_header(true);
        assert_eq!(p.parse(&[9, 9, 0, 3]), Err(ParseError::ShorterThanHeader { len: 3, header: 4 }));
        let mut p = LengthField::new(0, 1, Endian::Big).unwrap().adjust(-100);
        assert_eq!(p.parse(&[1]), Err(ParseError::ShorterThanHeader { len: -98, header: 1 }));
    }

    #[test]
    fn generic_widths_and_endianness() {
        let mut le3 = LengthField::new(1, 3, Endian::Little).unwrap().includes_header(true);
        assert_eq!(le3.parse(&[0xaa, 0x05, 0x01, 0x00]), Ok(Parse::Message(0x105)));
        let mut be3 = LengthField::new(1, 3, Endian::Big).unwrap();
        assert_eq!(be3.parse(&[0xaa, 0x00, 0x01, 0x05]), Ok(Parse::Message(0x105 + 4)));
        let mut s1 = LengthField::new(0, 1, Endian::Big).unwrap().signed(true);
        assert_eq!(s1.parse(&[0xfe]), Err(ParseError::Negative(-2)));
        let mut adj = LengthField::new(0, 2, Endian::Big).unwrap().adjust(-2).includes_header(false);
        assert_eq!(adj.parse(&[0, 10]), Ok(Parse::Message(10)));
        assert_eq!(LengthField::new(0, 5, Endian::Big).unwrap_err(), LengthFieldConfigError::Width(5));
        assert!(LengthField::new(usize::MAX, 4, Endian::Big).is_err());
    }

    fn frame(prefix: &[u8], len_bytes: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.extend_from_slice(len_bytes);
        v.extend_from_slice(body);
        v
    }

    proptest! {
        #[test]
        fn thrift_every_split(bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6),
                              cuts in prop::collection::vec(0usize..300, 0..8)) {
            let msgs: Vec<Vec<u8>> = bodies.iter().map(|b| frame(&[], &(b.len() as u32).to_be_bytes(), b)).collect();
            let (stream, lens) = concat(&msgs);
            assert_boundaries(&mut LengthField::thrift(), &stream, &lens, &cuts);
            assert_boundaries(&mut LengthField::kafka(), &stream, &lens, &cuts);
        }

        #[test]
        fn dns_and_grpc_every_split(bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6),
                                    flags in prop::collection::vec(0u8..2, 6),
                                    cuts in prop::collection::vec(0usize..300, 0..8)) {
            let msgs: Vec<Vec<u8>> = bodies.iter().map(|b| frame(&[], &(b.len() as u16).to_be_bytes(), b)).collect();
            let (stream, lens) = concat(&msgs);
            assert_boundaries(&mut LengthField::dns(), &stream, &lens, &cuts);
            let msgs: Vec<Vec<u8>> = bodies.iter().zip(&flags).map(|(b, f)| frame(&[*f], &(b.len() as u32).to_be_bytes(), b)).collect();
            let (stream, lens) = concat(&msgs);
            assert_boundaries(&mut Grpc::new(), &stream, &lens, &cuts);
        }

        #[test]
        fn generic_never_panics(offset in 0usize..4, width in prop::sample::select(vec![1usize, 2, 3, 4, 8]),
                                little in any::<bool>(), adjust in any::<i64>(), incl in any::<bool>(), signed in any::<bool>(),
                                bytes in prop::collection::vec(any::<u8>(), 0..20)) {
            let endian = if little { Endian::Little } else { Endian::Big };
            let mut p = LengthField::new(offset, width, endian).unwrap().adjust(adjust).includes_header(incl).signed(signed);
            match p.parse(&bytes) {
                Ok(Parse::NeedMore(n)) => prop_assert!(n > bytes.len()),
                Ok(Parse::Message(l)) => prop_assert!(l >= offset + width && l <= DEFAULT_MAX),
                Err(_) => {}
            }
        }

        /// The fast path decides exactly as the `i128` rule for every configuration and
        /// every header, including adjustments next to `i64`'s limits.
        #[test]
        fn fast_path_equals_the_exact_rule(
            offset in 0usize..4,
            width in prop::sample::select(vec![1usize, 2, 3, 4, 8]),
            little in any::<bool>(),
            adjust in prop_oneof![-70_000i64..70_000, any::<i64>(), Just(i64::MAX), Just(i64::MIN),
                                  Just((1 << 61) - 1), Just(-(1 << 61) + 1), Just(1 << 61)],
            includes_header in any::<bool>(),
            signed in any::<bool>(),
            max in prop_oneof![Just(DEFAULT_MAX), 0usize..100_000],
            bytes in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            let endian = if little { Endian::Little } else { Endian::Big };
            let mut p = LengthField::new(offset, width, endian).unwrap()
                .adjust(adjust).includes_header(includes_header).signed(signed).max(max);
            let header = offset + width;
            let exact = if bytes.len() < header { Ok(Parse::NeedMore(header)) } else { p.parse_wide(&bytes, header) };
            prop_assert_eq!(p.parse(&bytes), exact);
        }
    }
}
