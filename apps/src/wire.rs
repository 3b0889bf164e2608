//! The load generator's messages: framed for the server's parser, each carrying a
//! connection number, a sequence number, its (intended) send time and a checksum, so
//! every echoed byte is verified.
//!
//! Layout of a `len`-byte message (`h` = header length of the framing):
//!
//! ```text
//! [0, h)        framing header (bytes before the length field are 0; then the field)
//! [h, h+4)      connection number, u32 little-endian
//! [h+4, h+8)    magic "UKCM"
//! [h+8, h+16)   sequence number, u64 LE
//! [h+16, h+24)  intended send time, ns since the run's start, u64 LE
//! [h+24, h+32)  check word: a multiplicative mix of length, connection, sequence and time
//! [h+32, len)   filler (a pattern that depends on the sequence number)
//! ```
//!
//! Verification compares every byte: the header with the one a message of that length gets,
//! the magic and connection exactly, sequence and time through the check word, and the
//! filler byte for byte with the pattern the sequence number selects (a `memcmp`). That
//! costs a load generator a fraction of a byte-wise hash (FNV-1a: a multiply per byte, so
//! ~90 µs per 64 KiB message each way, which made the generator the limit of bulk runs).
//!
//! Framings we can generate: `thrift`, `kafka`, `dns`, `grpc` and any `lenfield:…`.
//! Every framing is checked against the real parser (`parser_from_spec`) at the smallest
//! and largest size before a run, so a message we generate is one the server delineates.

use std::collections::VecDeque;

use ukcm_parsers::spec::length_field_from_spec;
use ukcm_parsers::{parser_from_spec, Endian, Parse};

use crate::cli::SizeRange;

/// Bytes of the body fields before the filler.
pub const BODY_MIN: usize = 32;
const MAGIC: [u8; 4] = *b"UKCM";
const SUM_AT: usize = 24;

pub use ukcm_parsers::fnv::{fnv1a64, fnv1a64_from};

/// How to write the length header for a parser spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    spec: String,
    offset: usize,
    width: usize,
    big: bool,
    adjust: i64,
    includes_header: bool,
    signed: bool,
}

impl Framing {
    /// The framing for a parser spec, or a clear reason why we cannot generate messages
    /// for it.
    pub fn from_spec(spec: &str) -> Result<Framing, String> {
        parser_from_spec(spec).map_err(|e| format!("bad parser spec {spec:?}: {e}"))?;
        let mut f = Framing {
            spec: spec.to_owned(),
            offset: 0,
            width: 4,
            big: true,
            adjust: 0,
            includes_header: false,
            signed: false,
        };
        match length_field_from_spec(spec).map_err(|e| format!("bad parser spec {spec:?}: {e}"))? {
            Some(lf) => {
                let l = lf.layout();
                f.offset = l.offset;
                f.width = l.width;
                f.big = l.endian == Endian::Big;
                f.adjust = l.adjust;
                f.includes_header = l.includes_header;
                f.signed = l.signed;
            }
            None if spec.trim() == "grpc" => f.offset = 1, // flag byte 0 (not compressed), u32 BE length
            None => {
                let name = spec.trim().split(':').next().unwrap_or("");
                return Err(format!(
                    "cannot generate messages for parser {name:?}: the load generator frames thrift, kafka, dns, grpc and lenfield:… only"
                ));
            }
        }
        if f.header_len() > MAX_HEADER {
            return Err(format!(
                "cannot generate messages for {spec:?}: its length field ends at byte {}, the load generator writes headers of up to {MAX_HEADER} bytes",
                f.header_len()
            ));
        }
        Ok(f)
    }

    /// Bytes up to the end of the length field.
    pub fn header_len(&self) -> usize {
        self.offset + self.width
    }

    /// Smallest message this framing can carry with our body.
    pub fn min_len(&self) -> usize {
        self.header_len() + BODY_MIN
    }

    /// The parser spec.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    fn field_value(&self, len: usize) -> Result<u64, String> {
        let h = self.header_len() as i128;
        let v = len as i128 - self.adjust as i128 - if self.includes_header { 0 } else { h };
        let bits = 8 * self.width as u32 - u32::from(self.signed);
        let limit: i128 = 1i128 << bits;
        if v < 0 || v >= limit {
            return Err(format!(
                "a {len}-byte message cannot be expressed in the {}-byte length field of {:?}",
                self.width, self.spec
            ));
        }
        Ok(v as u64)
    }

    /// Checks that messages of every size in `sizes` can be generated and are delineated
    /// by the real parser exactly.
    pub fn check_sizes(&self, sizes: SizeRange) -> Result<(), String> {
        if sizes.min < self.min_len() {
            return Err(format!(
                "--size {sizes}: messages for {:?} need at least {} bytes ({}-byte header + {BODY_MIN}-byte body with sequence, time and checksum)",
                self.spec,
                self.min_len(),
                self.header_len()
            ));
        }
        let mut gen = Generator::new(self.clone(), 0, sizes);
        for len in [sizes.min, sizes.max] {
            self.field_value(len).map_err(|e| format!("--size {sizes}: {e}"))?;
            let mut buf = Vec::new();
            gen.push(&mut buf, len, 0, 0);
            let mut p = parser_from_spec(&self.spec).map_err(|e| e.to_string())?;
            match p.parse(&buf) {
                Ok(Parse::Message(n)) if n == len => {}
                Ok(other) => {
                    return Err(format!(
                        "--size {sizes}: parser {:?} reads our {len}-byte message as {other:?}",
                        self.spec
                    ))
                }
                Err(e) => {
                    return Err(format!("--size {sizes}: parser {:?} rejects a {len}-byte message: {e}", self.spec))
                }
            }
        }
        Ok(())
    }
}

/// Builds the messages of one connection.
#[derive(Debug)]
pub struct Generator {
    framing: Framing,
    conn: u32,
    sizes: SizeRange,
    rng: u64,
    pattern: Vec<u8>,
    /// The framing header of the last length used (every message, with one size).
    header: (usize, [u8; MAX_HEADER]),
}

/// Longest framing header we generate (offset + width of the length field).
const MAX_HEADER: usize = 16;

/// Filler pattern period (prime, so sizes and sequence numbers do not line up).
const PATTERN_PERIOD: usize = 251;

impl Generator {
    /// A generator for connection `conn`.
    pub fn new(framing: Framing, conn: u32, sizes: SizeRange) -> Self {
        let pattern = (0..sizes.max + PATTERN_PERIOD).map(|i| (i % PATTERN_PERIOD) as u8 ^ 0x5a).collect();
        let mut header = [0u8; MAX_HEADER];
        write_header(&framing, &mut header, sizes.min);
        Generator {
            framing,
            conn,
            sizes,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (conn as u64) << 17,
            pattern,
            header: (sizes.min, header),
        }
    }

    /// The size of the next message (uniform in the range, xorshift).
    pub fn next_len(&mut self) -> usize {
        if self.sizes.min == self.sizes.max {
            return self.sizes.min;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.sizes.min + (self.rng % (self.sizes.max - self.sizes.min + 1) as u64) as usize
    }

    /// Appends message `seq` of `len` bytes stamped with `t_ns` to `out` (appended piece by
    /// piece: no zero-fill first).
    pub fn push(&mut self, out: &mut Vec<u8>, len: usize, seq: u64, t_ns: u64) {
        let h = self.framing.header_len();
        if self.header.0 != len {
            write_header(&self.framing, &mut self.header.1, len);
            self.header.0 = len;
        }
        out.reserve(len);
        out.extend_from_slice(&self.header.1[..h]);
        out.extend_from_slice(&self.conn.to_le_bytes());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&t_ns.to_le_bytes());
        out.extend_from_slice(&check_word(len, self.conn, seq, t_ns).to_le_bytes());
        let from = (seq % PATTERN_PERIOD as u64) as usize;
        out.extend_from_slice(&self.pattern[from..from + len - h - BODY_MIN]);
    }

    /// Verifies an echoed message of this generator's connection: every byte is compared
    /// (see the module docs).
    pub fn verify(&self, m: &[u8]) -> Result<Echoed, Corrupt> {
        let h = self.framing.header_len();
        if m.len() < h + BODY_MIN {
            return Err(Corrupt::TooShort(m.len()));
        }
        let expected = if self.header.0 == m.len() {
            self.header.1
        } else {
            let mut x = [0u8; MAX_HEADER];
            write_header(&self.framing, &mut x, m.len());
            x
        };
        if m[..h] != expected[..h] {
            return Err(Corrupt::Header);
        }
        if m[h + 4..h + 8] != MAGIC {
            return Err(Corrupt::Magic);
        }
        let c = u32::from_le_bytes(m[h..h + 4].try_into().expect("4 bytes"));
        if c != self.conn {
            return Err(Corrupt::WrongConn(c));
        }
        let u64_at = |i: usize| u64::from_le_bytes(m[i..i + 8].try_into().expect("8 bytes"));
        let (seq, t_ns) = (u64_at(h + 8), u64_at(h + 16));
        if check_word(m.len(), c, seq, t_ns) != u64_at(h + SUM_AT) {
            return Err(Corrupt::Checksum);
        }
        let from = (seq % PATTERN_PERIOD as u64) as usize;
        let fill = m.len() - h - BODY_MIN;
        if self.pattern.get(from..from + fill) != Some(&m[h + BODY_MIN..]) {
            return Err(Corrupt::Filler);
        }
        Ok(Echoed { seq, t_ns })
    }
}

/// The framing header of a `len`-byte message into `out` (its first `header_len` bytes).
fn write_header(f: &Framing, out: &mut [u8; MAX_HEADER], len: usize) {
    out.fill(0);
    let value = f.field_value(len).unwrap_or(0);
    if let Some(field) = out.get_mut(f.offset..f.offset + f.width) {
        if f.big {
            field.copy_from_slice(&value.to_be_bytes()[8 - f.width..]);
        } else {
            field.copy_from_slice(&value.to_le_bytes()[..f.width]);
        }
    }
}

/// Mixes the fields a corrupted echo could carry unnoticed otherwise (a flipped bit in any
/// of them changes the word): a few multiplies instead of a hash over the message.
fn check_word(len: usize, conn: u32, seq: u64, t_ns: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut x = (len as u64) << 32 ^ conn as u64;
    for w in [seq, t_ns] {
        x = (x ^ w).wrapping_mul(K);
        x ^= x >> 29;
    }
    x.wrapping_mul(K) ^ 0x554b_434d
}

/// What a verified echo carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echoed {
    /// Sequence number.
    pub seq: u64,
    /// Intended send time (ns since the run's start).
    pub t_ns: u64,
}

/// Why an echoed message is not one we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// Shorter than header + body fields.
    TooShort(usize),
    /// Magic bytes wrong.
    Magic,
    /// Came back on another connection.
    WrongConn(u32),
    /// The framing header is not the one a message of its length gets.
    Header,
    /// The check word does not match length, connection, sequence and time.
    Checksum,
    /// The filler differs from the pattern.
    Filler,
}

/// Which of a connection's sent sequence numbers have come back: the load generators'
/// check that every echo arrives once (order noted, duplicates and never-sent ones caught)
/// in O(1) per message, whatever the window's width.
#[derive(Debug, Default)]
pub struct EchoWindow {
    next: u64,
    /// Lowest sequence number not yet echoed; `seen[i]` is whether `base + i` was.
    base: u64,
    seen: VecDeque<bool>,
}

/// What an echoed sequence number was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The oldest outstanding one.
    InOrder,
    /// Outstanding, but an older one is still missing.
    OutOfOrder,
    /// Already echoed.
    Duplicate,
    /// Never sent (a corrupt echo whose checksum happened to match).
    NeverSent,
}

impl EchoWindow {
    /// The sequence number of the next message to send (now outstanding).
    pub fn send(&mut self) -> u64 {
        let s = self.next;
        self.next += 1;
        self.seen.push_back(false);
        s
    }

    /// The next sequence number `send` will give.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Marks `seq` echoed, saying how it came.
    pub fn echoed(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            return Arrival::NeverSent;
        }
        if seq < self.base || self.seen[(seq - self.base) as usize] {
            return Arrival::Duplicate;
        }
        let how = if seq == self.base { Arrival::InOrder } else { Arrival::OutOfOrder };
        self.seen[(seq - self.base) as usize] = true;
        while self.seen.front() == Some(&true) {
            self.seen.pop_front();
            self.base += 1;
        }
        how
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_window_tells_order_duplicates_and_strangers_apart() {
        let mut w = EchoWindow::default();
        let (a, b, c) = (w.send(), w.send(), w.send());
        assert_eq!(w.echoed(b), Arrival::OutOfOrder);
        assert_eq!(w.echoed(b), Arrival::Duplicate);
        assert_eq!(w.echoed(a), Arrival::InOrder);
        assert_eq!(w.echoed(a), Arrival::Duplicate);
        assert_eq!(w.echoed(c + 1), Arrival::NeverSent);
        assert_eq!(w.echoed(c), Arrival::InOrder);
        assert_eq!(w.next(), 3);
    }

    fn sizes(a: usize, b: usize) -> SizeRange {
        SizeRange { min: a, max: b }
    }

    #[test]
    fn generated_messages_verify_and_every_flipped_byte_is_caught() {
        let f = Framing::from_spec("thrift").unwrap();
        f.check_sizes(sizes(36, 4096)).unwrap();
        let mut g = Generator::new(f.clone(), 7, sizes(36, 300));
        let mut buf = Vec::new();
        g.push(&mut buf, 100, 42, 1234);
        assert_eq!(&buf[..4], &96u32.to_be_bytes());
        assert_eq!(g.verify(&buf), Ok(Echoed { seq: 42, t_ns: 1234 }));
        let other = Generator::new(f.clone(), 8, sizes(36, 300));
        assert_eq!(other.verify(&buf), Err(Corrupt::WrongConn(7)));
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                assert!(g.verify(&bad).is_err(), "flip of bit {bit} at {i} not caught");
            }
        }
        assert_eq!(g.verify(&buf[..99]), Err(Corrupt::Header), "a cut message");
        // Another message's filler (sequence 43) in message 42's frame.
        let mut swapped = buf.clone();
        g.push(&mut swapped, 100, 43, 1234);
        let (a, b) = swapped.split_at_mut(100);
        a[36..].copy_from_slice(&b[36..]);
        assert_eq!(g.verify(&swapped[..100]), Err(Corrupt::Filler));
    }

    #[test]
    fn framings_agree_with_the_real_parsers() {
        for spec in [
            "thrift",
            "kafka",
            "dns",
            "grpc",
            "lenfield:offset=2,width=2,endian=little,adjust=-4,includes_header=true",
            "lenfield:offset=0,width=8,endian=big",
        ] {
            let f = Framing::from_spec(spec).unwrap();
            f.check_sizes(sizes(f.min_len(), 2000)).unwrap_or_else(|e| panic!("{spec}: {e}"));
        }
        assert!(Framing::from_spec("http1").unwrap_err().contains("cannot generate messages"));
        assert!(Framing::from_spec("thirft").unwrap_err().contains("unknown parser"));
        let dns = Framing::from_spec("dns").unwrap();
        assert!(dns.check_sizes(sizes(64, 70000)).unwrap_err().contains("length field"));
        assert!(dns.check_sizes(sizes(10, 100)).unwrap_err().contains("at least 34 bytes"));
        let far = Framing::from_spec("lenfield:offset=20,width=4,endian=big");
        assert!(far.as_ref().is_err_and(|e| e.contains("headers of up to 16 bytes")), "{far:?}");
        let small = Framing::from_spec("thrift:max=100").unwrap();
        assert!(small.check_sizes(sizes(64, 200)).unwrap_err().contains("rejects"));
    }
}
