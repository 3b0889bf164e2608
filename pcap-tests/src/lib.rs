//! Replay of real captures through stack + mux, and checks of our own traffic in pcap
//! (DESIGN.md, crate `pcap-tests`; fixtures recorded by `scripts/capture-fixtures.sh`).
//!
//! - [`manifest`]: the expected messages of a fixture (from Wireshark's dissectors, never
//!   from our parsers), per flow and direction: length and FNV-1a 64 hash.
//! - [`capture`]: a pcap file's records decoded to TCP segments, checksums verified.
//! - [`reassembly`]: a receiver's TCP reassembly of one direction (wraparound,
//!   retransmissions, overlaps, bounded out-of-order buffering, gaps).
//! - [`flows`]: a capture's segments grouped into flows and reassembled both ways.
//! - [`stream_replay`]: each reassembled direction fed through the mux with the fixture's
//!   parser, the delivered messages compared with the manifest.
//! - [`live`]: a port that plays a flow's client into a ukcm engine, rewriting the
//!   acknowledgement numbers to the engine's sequence space (tcpliveplay's way).
//! - [`pcapedit`]: record-level edits of capture files (damaged captures for tests).
//! - [`tshark`]: tshark's verdict on a capture (malformed frames, bad checksums, dissected
//!   fields): the independent check of the traffic ukcm itself sends.
#![forbid(unsafe_code)]

pub mod capture;
pub mod flows;
#[doc(hidden)]
pub mod fuzzing;
pub mod live;
pub mod manifest;
pub mod pcapedit;
pub mod reassembly;
pub mod stream_replay;
pub mod tshark;

/// FNV-1a 64 of `bytes` (the manifest's message hash).
pub use ukcm_parsers::fnv::fnv1a64;

/// The directory of the committed fixtures.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Names of the committed fixtures (`<name>.pcap` + `<name>.manifest`).
pub const FIXTURES: &[&str] = &[
    "memcached_binary",
    "http2_h2c",
    "dns_tcp",
    "thrift_framed",
    "redis_resp",
    "redis_resp3",
    "tls",
    "mqtt",
    "http1",
    "memcache_text",
    "grpc_h2c",
    "kafka",
];

#[cfg(test)]
mod tests {
    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(super::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
