//! twemproxy's key hash functions (`hash:` in a pool), bit for bit as nutcracker 0.5.0
//! computes them on x86-64 Linux, so a key lands on the same server.
//!
//! Several are *not* the textbook functions of the same name; the quirks are kept on
//! purpose, since changing any of them moves keys:
//!
//! * `fnv1a_64` runs in 32 bits, with the 64-bit offset basis and prime truncated to 32
//!   bits (`0x84222325`, `0x1b3`). The low 32 bits of a product only depend on the low
//!   32 bits of its factors, so this is FNV-1a 64 truncated, but over sign-extended
//!   bytes (next point): the workspace's FNV-1a 64 (`crate::wire::fnv1a64`) agrees on
//!   ASCII keys only, hence this 32-bit copy. `fnv1_64` likewise is FNV-1 64 truncated.
//! * Key bytes reach the FNV functions, `one_at_a_time` and one step of `hsieh` through
//!   C's signed `char`: a byte `>= 0x80` is sign-extended (`0xe9` becomes `0xffffffe9`).
//! * `crc16` is CRC-16/XMODEM whose accumulator is never masked to 16 bits: the low 16
//!   bits are the CRC, the high 16 are left-over shifted bits, and both count.
//! * `crc32` is libmemcached's: bits 16..31 of CRC-32, masked to 15 bits; `crc32a` is the
//!   standard CRC-32.
//! * `md5` is the first 4 digest bytes read little-endian.
//! * `murmur` is MurmurHash2 with the seed `0xdeadbeef * len`; `jenkins` is lookup3's
//!   `hashlittle` with initval 13.
//!
//! twemproxy hashes an empty key to 0 and skips hashing in a one-server pool; those rules
//! live in [`super::dist`], not here.

use core::fmt;
use core::str::FromStr;

/// One of twemproxy's `hash:` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashKind {
    OneAtATime,
    Md5,
    Crc16,
    Crc32,
    Crc32a,
    Fnv1_64,
    Fnv1a64,
    Fnv1_32,
    Fnv1a32,
    Hsieh,
    Murmur,
    Jenkins,
}

impl HashKind {
    /// Every kind, in twemproxy's order.
    pub const ALL: [HashKind; 12] = [
        HashKind::OneAtATime,
        HashKind::Md5,
        HashKind::Crc16,
        HashKind::Crc32,
        HashKind::Crc32a,
        HashKind::Fnv1_64,
        HashKind::Fnv1a64,
        HashKind::Fnv1_32,
        HashKind::Fnv1a32,
        HashKind::Hsieh,
        HashKind::Murmur,
        HashKind::Jenkins,
    ];

    /// The config name (`fnv1a_64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            HashKind::OneAtATime => "one_at_a_time",
            HashKind::Md5 => "md5",
            HashKind::Crc16 => "crc16",
            HashKind::Crc32 => "crc32",
            HashKind::Crc32a => "crc32a",
            HashKind::Fnv1_64 => "fnv1_64",
            HashKind::Fnv1a64 => "fnv1a_64",
            HashKind::Fnv1_32 => "fnv1_32",
            HashKind::Fnv1a32 => "fnv1a_32",
            HashKind::Hsieh => "hsieh",
            HashKind::Murmur => "murmur",
            HashKind::Jenkins => "jenkins",
        }
    }

    /// The kind for a config name; exact match, as twemproxy does.
    pub fn from_name(name: &str) -> Option<HashKind> {
        HashKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Hash `key` with this function.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashKind::OneAtATime => one_at_a_time(key),
            HashKind::Md5 => md5(key),
            HashKind::Crc16 => crc16(key),
            HashKind::Crc32 => crc32(key),
            HashKind::Crc32a => crc32a(key),
            HashKind::Fnv1_64 => fnv1_64(key),
            HashKind::Fnv1a64 => fnv1a_64(key),
            HashKind::Fnv1_32 => fnv1_32(key),
            HashKind::Fnv1a32 => fnv1a_32(key),
            HashKind::Hsieh => hsieh(key),
            HashKind::Murmur => murmur(key),
            HashKind::Jenkins => jenkins(key),
        }
    }
}

impl fmt::Display for HashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown `hash:` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownHash(pub String);

impl fmt::Display for UnknownHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown hash {:?} (one of:", self.0)?;
        for k in HashKind::ALL {
            write!(f, " {k}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownHash {}

impl FromStr for HashKind {
    type Err = UnknownHash;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashKind::from_name(s).ok_or_else(|| UnknownHash(s.to_owned()))
    }
}

/// A key byte as C's signed `char` converted to `uint32_t`.
#[inline]
fn sx32(b: u8) -> u32 {
    b as i8 as i32 as u32
}

/// A key byte as C's signed `char` converted to `uint64_t`.
#[inline]
fn sx64(b: u8) -> u64 {
    b as i8 as i64 as u64
}

const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

/// FNV-1 64, low 32 bits (sign-extended bytes).
pub fn fnv1_64(key: &[u8]) -> u32 {
    let mut h = FNV64_OFFSET;
    for &b in key {
        h = h.wrapping_mul(FNV64_PRIME) ^ sx64(b);
    }
    h as u32
}

/// twemproxy's `fnv1a_64`: FNV-1a in 32 bits with the 64-bit constants truncated.
pub fn fnv1a_64(key: &[u8]) -> u32 {
    let mut h = FNV64_OFFSET as u32;
    for &b in key {
        h = (h ^ sx32(b)).wrapping_mul(FNV64_PRIME as u32);
    }
    h
}

/// FNV-1 32 (sign-extended bytes).
pub fn fnv1_32(key: &[u8]) -> u32 {
    let mut h = FNV32_OFFSET;
    for &b in key {
        h = h.wrapping_mul(FNV32_PRIME) ^ sx32(b);
    }
    h
}

/// FNV-1a 32 (sign-extended bytes).
pub fn fnv1a_32(key: &[u8]) -> u32 {
    let mut h = FNV32_OFFSET;
    for &b in key {
        h = (h ^ sx32(b)).wrapping_mul(FNV32_PRIME);
    }
    h
}

/// MSB-first CRC-16 table for the CCITT polynomial 0x1021 (XMODEM).
const CRC16_TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u16) << 8;
        let mut j = 0;
        while j < 8 {
            c = if c & 0x8000 != 0 { (c << 1) ^ 0x1021 } else { c << 1 };
            j += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// LSB-first CRC-32 table for the reflected polynomial 0xedb88320.
const CRC32_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut j = 0;
        while j < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
            j += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-16/XMODEM with twemproxy's unmasked 32-bit accumulator.
pub fn crc16(key: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in key {
        crc = (crc << 8) ^ CRC16_TABLE[((crc >> 8) ^ b as u32) as usize & 0xff] as u32;
    }
    crc
}

fn crc32_raw(key: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in key {
        crc = (crc >> 8) ^ CRC32_TABLE[((crc ^ b as u32) & 0xff) as usize];
    }
    !crc
}

/// libmemcached's CRC-32 variant: `(crc32 >> 16) & 0x7fff`.
pub fn crc32(key: &[u8]) -> u32 {
    (crc32_raw(key) >> 16) & 0x7fff
}

/// Standard CRC-32 (IEEE).
pub fn crc32a(key: &[u8]) -> u32 {
    crc32_raw(key)
}

/// The 16-byte MD5 digest.
pub fn md5_digest(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}

/// Digest bytes `4*i .. 4*i+4` as a little-endian `u32` (`i < 4`).
#[inline]
pub fn digest_word(d: &[u8; 16], i: usize) -> u32 {
    u32::from_le_bytes([d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]])
}

/// The first 4 MD5 digest bytes, little-endian.
pub fn md5(key: &[u8]) -> u32 {
    digest_word(&md5_digest(key), 0)
}

/// Bob Jenkins' one-at-a-time (sign-extended bytes).
pub fn one_at_a_time(key: &[u8]) -> u32 {
    let mut v = 0u32;
    for &b in key {
        v = v.wrapping_add(sx32(b));
        v = v.wrapping_add(v << 10);
        v ^= v >> 6;
    }
    v = v.wrapping_add(v << 3);
    v ^= v >> 11;
    v.wrapping_add(v << 15)
}

/// Paul Hsieh's SuperFastHash; the 3-byte tail's last byte is sign-extended.
pub fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let le16 = |p: &[u8]| u16::from_le_bytes([p[0], p[1]]) as u32;
    let mut h = 0u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        h = h.wrapping_add(le16(c));
        let tmp = (le16(&c[2..]) << 11) ^ h;
        h = (h << 16) ^ tmp;
        h = h.wrapping_add(h >> 11);
    }
    let rest = chunks.remainder();
    match rest.len() {
        3 => {
            h = h.wrapping_add(le16(rest));
            h ^= h << 16;
            h ^= sx32(rest[2]) << 18;
            h = h.wrapping_add(h >> 11);
        }
        2 => {
            h = h.wrapping_add(le16(rest));
            h ^= h << 11;
            h = h.wrapping_add(h >> 17);
        }
        1 => {
            h = h.wrapping_add(rest[0] as u32);
            h ^= h << 10;
            h = h.wrapping_add(h >> 1);
        }
        _ => {}
    }
    h ^= h << 3;
    h = h.wrapping_add(h >> 5);
    h ^= h << 4;
    h = h.wrapping_add(h >> 17);
    h ^= h << 25;
    h.wrapping_add(h >> 6)
}

/// twemproxy's MurmurHash2: seed `0xdeadbeef * len`.
pub fn murmur(key: &[u8]) -> u32 {
    let len = key.len() as u32;
    murmur2(key, 0xdeadbeef_u32.wrapping_mul(len))
}

/// MurmurHash2 (32-bit, little-endian reads).
fn murmur2(key: &[u8], seed: u32) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = seed ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// twemproxy's `jenkins`: lookup3 `hashlittle` with initval 13.
pub fn jenkins(key: &[u8]) -> u32 {
    lookup3(key, 13)
}

/// Bob Jenkins' lookup3 `hashlittle` (byte-at-a-time form; equal to the word-reading
/// forms on a little-endian machine).
fn lookup3(key: &[u8], initval: u32) -> u32 {
    let init = 0xdeadbeef_u32.wrapping_add(key.len() as u32).wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    if key.is_empty() {
        return c;
    }
    let word = |p: &[u8]| {
        let mut w = [0u8; 4];
        w[..p.len()].copy_from_slice(p);
        u32::from_le_bytes(w)
    };
    let mut k = key;
    while k.len() > 12 {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        // mix(a, b, c)
        a = a.wrapping_sub(c) ^ c.rotate_left(4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c) ^ c.rotate_left(16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(4);
        b = b.wrapping_add(a);
        k = &k[12..];
    }
    // The last 1..=12 bytes, zero-padded.
    a = a.wrapping_add(word(&k[..k.len().min(4)]));
    if k.len() > 4 {
        b = b.wrapping_add(word(&k[4..k.len().min(8)]));
    }
    if k.len() > 8 {
        c = c.wrapping_add(word(&k[8..]));
    }
    // final(a, b, c)
    c = (c ^ b).wrapping_sub(b.rotate_left(14));
    a = (a ^ c).wrapping_sub(c.rotate_left(11));
    b = (b ^ a).wrapping_sub(a.rotate_left(25));
    c = (c ^ b).wrapping_sub(b.rotate_left(16));
    a = (a ^ c).wrapping_sub(c.rotate_left(4));
    b = (b ^ a).wrapping_sub(a.rotate_left(14));
    (c ^ b).wrapping_sub(b.rotate_left(24))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Published reference values (FNV: the FNV authors' test suite; CRC: the
    // "123456789" check values of the CRC catalogue; one-at-a-time: Wikipedia's
    // "Jenkins hash function" page; lookup3: the driver5() values in lookup3.c;
    // MD5: RFC 1321's test suite).
    #[test]
    fn textbook_functions_match_published_values() {
        assert_eq!(fnv1_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
        assert_eq!(fnv1_32(b"foobar"), 0x31f0_b262);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
        // FNV-1 64 "a" = 0xaf63bd4c8601b7be, "foobar" = 0x340d8765a4dda9c2.
        assert_eq!(fnv1_64(b"a"), 0x8601_b7be);
        assert_eq!(fnv1_64(b"foobar"), 0xa4dd_a9c2);
        assert_eq!(crc32a(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"123456789"), 0xcbf4 & 0x7fff);
        assert_eq!(crc16(b"123456789") & 0xffff, 0x31c3);
        assert_eq!(one_at_a_time(b"a"), 0xca2e_9442);
        assert_eq!(one_at_a_time(b"The quick brown fox jumps over the lazy dog"), 0x519e_91f5);
        assert_eq!(lookup3(b"", 0), 0xdead_beef);
        assert_eq!(lookup3(b"Four score and seven years ago", 0), 0x1777_0551);
        assert_eq!(lookup3(b"Four score and seven years ago", 1), 0xcd62_8161);
        assert_eq!(md5_digest(b"abc")[..4], [0x90, 0x01, 0x50, 0x98]);
        assert_eq!(md5(b""), 0xd98c_1dd4);
    }

    #[test]
    fn twemproxy_quirks() {
        // fnv1a_64 is 32-bit FNV-1a with truncated constants, not FNV-1a 64.
        assert_eq!(fnv1a_64(b""), 0x8422_2325);
        assert_eq!(fnv1a_64(b"a"), (0x8422_2325u32 ^ 0x61).wrapping_mul(0x1b3));
        assert_eq!(fnv1a_64(b"foobar"), crate::wire::fnv1a64(b"foobar") as u32);
        assert_ne!(fnv1a_64(b"caf\xe9"), crate::wire::fnv1a64(b"caf\xe9") as u32);
        // Bytes >= 0x80 are sign-extended.
        assert_eq!(fnv1a_32(&[0xe9]), (0x811c_9dc5u32 ^ 0xffff_ffe9).wrapping_mul(0x0100_0193));
        // crc16 keeps bits above 16.
        assert!(crc16(b"123456789") > 0xffff);
        assert_eq!(jenkins(b""), 0xdead_beef + 13);
        assert_eq!(hsieh(b""), 0);
    }

    #[test]
    fn lookup3_tail_lengths_are_all_distinct() {
        let data = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut seen = std::collections::HashSet::new();
        for n in 0..=data.len() {
            assert!(seen.insert(jenkins(&data[..n])), "collision at {n}");
        }
    }

    #[test]
    fn names_round_trip() {
        for k in HashKind::ALL {
            assert_eq!(k.name().parse::<HashKind>(), Ok(k));
        }
        let e = "fnv1a64".parse::<HashKind>().unwrap_err();
        assert!(e.to_string().contains("fnv1a_64"), "{e}");
    }
}
