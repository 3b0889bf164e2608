//! Which server of a pool a key goes to (`distribution:` and `hash_tag:`), with
//! twemproxy 0.5.0's rules so that a pool moved from nutcracker keeps its placement.
//!
//! The rules, and where they differ from what one might guess:
//!
//! * twemproxy **sorts a pool's servers by name** (shorter names first, then bytewise)
//!   when it loads the config, and its server indices are in that order. `modula` walks
//!   servers in that order, so it is the sorted order, not the file's, that decides
//!   `hash % total_weight`. [`Selector`] takes servers in file order and answers with file
//!   indices; the sort stays inside.
//! * The name is the server's `name` if it has one, else `host:port` (`host` alone when
//!   the port is 11211, libmemcached's convention); see `config::Server::ketama_name`.
//! * `ketama`: each live server gets `floor(weight / total_live_weight * 40 * n_live) * 4`
//!   points, computed in `f32` as twemproxy does (160 per server when weights are equal).
//!   Point group `i` (from 0) is the MD5 digest of `"<name>-<i>"`, whose four
//!   little-endian words are four points. A key goes to the first point `>= hash`,
//!   wrapping to the first point.
//! * `modula`: each live server appears `weight` times in a row; `hash % total_live_weight`
//!   picks one.
//! * `random`: a uniformly random live server, weights ignored.
//! * `hash_tag` (two bytes `ab`): if the key has an `a`, and a `b` after it, with at least
//!   one byte between, only the bytes between the first `a` and the next `b` are hashed;
//!   otherwise the whole key is.
//! * An empty key hashes to 0. A one-server pool always answers that server, without
//!   hashing.
//! * Ejection (`auto_eject_hosts`): the distribution is rebuilt over live servers only
//!   (weights, point counts and `modula`'s total all change), so keys of live servers
//!   move too, as under twemproxy. With no live server there is no answer.

use core::fmt;
use core::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::hash::{digest_word, md5_digest, HashKind};

/// twemproxy's `distribution:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distribution {
    Ketama,
    Modula,
    Random,
}

impl Distribution {
    pub const ALL: [Distribution; 3] = [Distribution::Ketama, Distribution::Modula, Distribution::Random];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Distribution::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown distribution {s:?} (one of: ketama modula random)"))
    }
}

/// The part of `key` that is hashed under hash tag `tag` (twemproxy's rule: the bytes
/// between the first `tag[0]` and the next `tag[1]`, if that is not empty).
pub fn hash_tag_part(key: &[u8], tag: [u8; 2]) -> &[u8] {
    if let Some(start) = key.iter().position(|&b| b == tag[0]) {
        let rest = &key[start + 1..];
        if let Some(len) = rest.iter().position(|&b| b == tag[1]) {
            if len > 0 {
                return &rest[..len];
            }
        }
    }
    key
}

/// Ketama points for one live server, exactly as twemproxy computes them (in `f32`).
pub fn ketama_points(weight: u32, total_weight: u32, n_live: u32) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let t = pct * 160.0f32 / 4.0f32 * n_live as f32;
    // C adds a `double` epsilon, then `floorf` takes it back to float.
    let t = (t as f64 + 0.0000000001) as f32;
    (t.floor() * 4.0) as u32
}

/// twemproxy's limit on the `"<name>-<i>"` string (longer ones are truncated).
const KETAMA_MAX_HOSTLEN: usize = 273;

/// One point of a ketama continuum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub value: u32,
    /// The server's index in the caller's list.
    pub server: u32,
}

/// A sorted ketama continuum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Continuum {
    points: Vec<Point>,
}

impl Continuum {
    /// Build over live servers `(index, name, weight)`, given in twemproxy's (name-sorted)
    /// order: equal point values keep that order, as glibc's (merge sort) `qsort` does.
    pub fn build<'a>(live: impl Iterator<Item = (u32, &'a [u8], u32)> + Clone) -> Continuum {
        let (n_live, total) = live.clone().fold((0u32, 0u32), |(n, t), (_, _, w)| (n + 1, t.saturating_add(w)));
        let mut points = Vec::with_capacity(n_live as usize * 160);
        let mut host = Vec::with_capacity(KETAMA_MAX_HOSTLEN);
        for (index, name, weight) in live {
            let groups = ketama_points(weight, total, n_live) / 4;
            for g in 0..groups {
                host.clear();
                host.extend_from_slice(name);
                host.push(b'-');
                host.extend_from_slice(g.to_string().as_bytes());
                host.truncate(KETAMA_MAX_HOSTLEN - 1);
                let d = md5_digest(&host);
                for w in 0..4 {
                    points.push(Point { value: digest_word(&d, w), server: index });
                }
            }
        }
        points.sort_by_key(|p| p.value);
        Continuum { points }
    }

    /// The server owning `hash`: the first point `>= hash`, wrapping around.
    pub fn lookup(&self, hash: u32) -> Option<u32> {
        let i = self.points.partition_point(|p| p.value < hash);
        self.points.get(i).or(self.points.first()).map(|p| p.server)
    }

    pub fn points(&self) -> &[Point] {
        &self.points
    }
}

/// Picks a pool's server for a key. Built once per pool (and again on ejection or
/// reload); lookups take `&self`.
#[derive(Debug)]
pub struct Selector {
    dist: Distribution,
    hash: HashKind,
    hash_tag: Option<[u8; 2]>,
    /// (name, weight), in the caller's order.
    servers: Vec<(Vec<u8>, u32)>,
    /// Caller indices in twemproxy's order (by name length, then bytes).
    order: Vec<u32>,
    live: Vec<bool>,
    n_live: usize,
    continuum: Continuum,
    /// `modula`: live servers repeated by weight; `random`: one slot per live server.
    slots: Vec<u32>,
    rng: AtomicU64,
}

impl Clone for Selector {
    fn clone(&self) -> Selector {
        Selector {
            dist: self.dist,
            hash: self.hash,
            hash_tag: self.hash_tag,
            servers: self.servers.clone(),
            order: self.order.clone(),
            live: self.live.clone(),
            n_live: self.n_live,
            continuum: self.continuum.clone(),
            slots: self.slots.clone(),
            rng: AtomicU64::new(self.rng.load(Ordering::Relaxed)),
        }
    }
}

impl Selector {
    /// A selector over `servers` = `(name, weight)` in file order, all live. Weights are
    /// `>= 1` (the config refuses 0).
    pub fn new<N: AsRef<[u8]>>(
        dist: Distribution,
        hash: HashKind,
        hash_tag: Option<[u8; 2]>,
        servers: &[(N, u32)],
    ) -> Selector {
        let servers: Vec<(Vec<u8>, u32)> = servers.iter().map(|(n, w)| (n.as_ref().to_vec(), (*w).max(1))).collect();
        let mut order: Vec<u32> = (0..servers.len() as u32).collect();
        order.sort_by(|&a, &b| {
            let (na, nb) = (&servers[a as usize].0, &servers[b as usize].0);
            na.len().cmp(&nb.len()).then_with(|| na.cmp(nb))
        });
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            | 1;
        let mut s = Selector {
            dist,
            hash,
            hash_tag,
            live: vec![true; servers.len()],
            n_live: 0,
            servers,
            order,
            continuum: Continuum::default(),
            slots: Vec::new(),
            rng: AtomicU64::new(seed),
        };
        s.rebuild();
        s
    }

    /// Mark which servers are live (by caller index) and rebuild the distribution over
    /// them, as twemproxy does when it ejects a server or its retry time comes.
    pub fn set_live(&mut self, live: &[bool]) {
        for (i, l) in self.live.iter_mut().enumerate() {
            *l = live.get(i).copied().unwrap_or(true);
        }
        self.rebuild();
    }

    fn rebuild(&mut self) {
        let live_in_order = self
            .order
            .iter()
            .copied()
            .filter(|&i| self.live[i as usize])
            .map(|i| (i, self.servers[i as usize].0.as_slice(), self.servers[i as usize].1));
        self.n_live = live_in_order.clone().count();
        self.slots.clear();
        self.continuum = Continuum::default();
        match self.dist {
            Distribution::Ketama => self.continuum = Continuum::build(live_in_order),
            Distribution::Modula => {
                for (i, _, w) in live_in_order {
                    self.slots.extend(std::iter::repeat_n(i, w as usize));
                }
            }
            Distribution::Random => self.slots.extend(live_in_order.map(|(i, _, _)| i)),
        }
    }

    pub fn distribution(&self) -> Distribution {
        self.dist
    }

    pub fn hash_kind(&self) -> HashKind {
        self.hash
    }

    /// Live servers after the last rebuild.
    pub fn live_servers(&self) -> usize {
        self.n_live
    }

    /// The continuum (`ketama` only; empty otherwise).
    pub fn continuum(&self) -> &Continuum {
        &self.continuum
    }

    /// The hash twemproxy computes for `key` (hash tag applied, 0 for an empty key).
    pub fn key_hash(&self, key: &[u8]) -> u32 {
        let key = match self.hash_tag {
            Some(tag) => hash_tag_part(key, tag),
            None => key,
        };
        if key.is_empty() {
            0
        } else {
            self.hash.hash(key)
        }
    }

    /// The server (caller index) for `key`, or `None` when no server is live.
    pub fn server_for(&self, key: &[u8]) -> Option<usize> {
        if self.n_live == 0 {
            return None;
        }
        if self.servers.len() == 1 {
            return Some(0);
        }
        let index = match self.dist {
            Distribution::Ketama => self.continuum.lookup(self.key_hash(key))?,
            Distribution::Modula => self.slots[(self.key_hash(key) % self.slots.len() as u32) as usize],
            Distribution::Random => self.slots[(self.next_random() % self.slots.len() as u64) as usize],
        };
        Some(index as usize)
    }

    /// xorshift64; `random` needs no more than a spread.
    fn next_random(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tag_rules() {
        let t = *b"{}";
        assert_eq!(hash_tag_part(b"user:{42}:name", t), b"42");
        assert_eq!(hash_tag_part(b"{a}{b}", t), b"a");
        // empty tag: whole key
        assert_eq!(hash_tag_part(b"x{}y", t), b"x{}y");
        // only the first open counts, even if a later one would give a non-empty tag
        assert_eq!(hash_tag_part(b"{}{z}", t), b"{}{z}");
        assert_eq!(hash_tag_part(b"no tag", t), b"no tag");
        assert_eq!(hash_tag_part(b"open{only", t), b"open{only");
        assert_eq!(hash_tag_part(b"}x{y}", t), b"y");
        // same byte both sides
        assert_eq!(hash_tag_part(b"a$bc$d", *b"$$"), b"bc");
    }

    #[test]
    fn ketama_points_follow_weights() {
        assert_eq!(ketama_points(1, 3, 3), 160);
        assert_eq!(ketama_points(1, 1, 1), 160);
        // weights 1,2,3: shares of 6 * 40 * 3 = 20, 40, 60 groups of 4
        assert_eq!(ketama_points(1, 6, 3), 80);
        assert_eq!(ketama_points(2, 6, 3), 160);
        assert_eq!(ketama_points(3, 6, 3), 240);
        // floor: 1/3 of 2 servers' 80 groups = 26.67 -> 26
        assert_eq!(ketama_points(1, 3, 2), 104);
    }

    #[test]
    fn continuum_has_sorted_points_and_wraps() {
        let s = Selector::new(Distribution::Ketama, HashKind::Md5, None, &[("a:1", 1), ("b:1", 1), ("c:1", 1)]);
        let pts = s.continuum().points();
        assert_eq!(pts.len(), 480);
        assert!(pts.windows(2).all(|w| w[0].value <= w[1].value));
        let last = pts.last().unwrap();
        assert_eq!(s.continuum().lookup(last.value), Some(last.server));
        assert_eq!(s.continuum().lookup(last.value.wrapping_add(1)), Some(pts[0].server));
        assert_eq!(s.continuum().lookup(0), Some(pts[0].server));
        // the first group of "a:1" is md5("a:1-0")
        let d = md5_digest(b"a:1-0");
        for w in 0..4 {
            let v = digest_word(&d, w);
            assert!(pts.iter().any(|p| p.value == v && p.server == 0));
        }
    }

    #[test]
    fn modula_uses_name_order_and_weights() {
        // File order c, a, bb; twemproxy's order a, c, bb (by length, then bytes).
        let s = Selector::new(Distribution::Modula, HashKind::Crc32a, None, &[("c", 1), ("a", 2), ("bb", 1)]);
        assert_eq!(s.slots, vec![1, 1, 0, 2]);
        for key in [&b"k1"[..], b"k2", b"hello", b"x"] {
            let want = s.slots[(HashKind::Crc32a.hash(key) % 4) as usize] as usize;
            assert_eq!(s.server_for(key), Some(want));
        }
    }

    #[test]
    fn ejection_rebuilds_over_live_servers() {
        let servers = [("s1", 1), ("s2", 1), ("s3", 1)];
        let mut s = Selector::new(Distribution::Ketama, HashKind::Fnv1a64, None, &servers);
        let keys: Vec<Vec<u8>> = (0..500).map(|i| format!("key:{i}").into_bytes()).collect();
        let before: Vec<usize> = keys.iter().map(|k| s.server_for(k).unwrap()).collect();
        s.set_live(&[true, false, true]);
        assert_eq!(s.live_servers(), 2);
        assert_eq!(s.continuum().points().len(), 320);
        for (k, &b) in keys.iter().zip(&before) {
            let now = s.server_for(k).unwrap();
            assert_ne!(now, 1);
            if b != 1 {
                assert_eq!(now, b, "ketama keeps keys of live servers in place");
            }
        }
        s.set_live(&[false, false, false]);
        assert_eq!(s.server_for(b"x"), None);
        s.set_live(&[true, true, true]);
        let again: Vec<usize> = keys.iter().map(|k| s.server_for(k).unwrap()).collect();
        assert_eq!(again, before);
    }

    #[test]
    fn one_server_and_empty_key() {
        let s = Selector::new(Distribution::Modula, HashKind::Md5, None, &[("only", 3)]);
        assert_eq!(s.server_for(b"anything"), Some(0));
        let s = Selector::new(Distribution::Modula, HashKind::Md5, None, &[("a", 1), ("b", 1)]);
        assert_eq!(s.key_hash(b""), 0);
        assert_eq!(s.server_for(b""), Some(0));
        let s = Selector::new(Distribution::Modula, HashKind::Md5, Some(*b"{}"), &[("a", 1)]);
        assert_eq!(s.key_hash(b"x{y}z"), HashKind::Md5.hash(b"y"));
    }

    #[test]
    fn random_spreads_over_live_servers_only() {
        let mut s = Selector::new(Distribution::Random, HashKind::Md5, None, &[("a", 1), ("b", 5), ("c", 1)]);
        s.set_live(&[true, true, false]);
        let mut seen = [0u32; 3];
        for _ in 0..1000 {
            seen[s.server_for(b"k").unwrap()] += 1;
        }
        assert_eq!(seen[2], 0);
        assert!(seen[0] > 300 && seen[1] > 300, "{seen:?}");
    }

    /// Keys and, per case, the server nutcracker 0.5.0 put each on (observed by
    /// `apps/tests/proxy_placement.rs` with `UKCM_PROXY_VECTORS=1`; digit `i` of a row is
    /// the server index of key `i`). Ketama rows: servers `server-a`, `server-b`,
    /// `server-c`, weight 1; the modula row: `c:1`, `aa:3`, `b:2` (md5).
    const OBSERVED_KEYS: [&[u8]; 12] = [
        b"key:5",
        b"key:42",
        b"key:79",
        b"key:116",
        b"key:153",
        b"key:190",
        b"key:227",
        b"mnopqrstuvwxyzabcdefghijk",
        b"\xc3\xa9\x9a",
        b"k\x9dy\xe99\xff",
        b"{tag11",
        b"user:{3}:name",
    ];
    const OBSERVED: [(&str, &str); 13] = [
        ("ketama-one_at_a_time", "212212112002"),
        ("ketama-md5", "101112000222"),
        ("ketama-crc16", "000211222011"),
        ("ketama-crc32", "222222222222"),
        ("ketama-crc32a", "111102011121"),
        ("ketama-fnv1_64", "111222220022"),
        ("ketama-fnv1a_64", "222000002001"),
        ("ketama-fnv1_32", "120122120012"),
        ("ketama-fnv1a_32", "222222022012"),
        ("ketama-hsieh", "220222102010"),
        ("ketama-murmur", "121211211012"),
        ("ketama-jenkins", "010011211012"),
        ("modula-weighted-names", "110111111012"),
    ];

    #[test]
    fn placement_matches_vectors_observed_from_nutcracker() {
        for (label, want) in OBSERVED {
            let sel = match label.strip_prefix("ketama-") {
                Some(hash) => Selector::new(
                    Distribution::Ketama,
                    hash.parse().unwrap(),
                    None,
                    &[("server-a", 1), ("server-b", 1), ("server-c", 1)],
                ),
                None => Selector::new(Distribution::Modula, HashKind::Md5, None, &[("c", 1), ("aa", 3), ("b", 2)]),
            };
            for (key, w) in OBSERVED_KEYS.iter().zip(want.bytes()) {
                let got = sel.server_for(key).unwrap();
                assert_eq!(got, (w - b'0') as usize, "{label}: key {:?}", key.escape_ascii().to_string());
            }
        }
    }
}
