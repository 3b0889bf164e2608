//! The mux's message assembly: an arbitrary byte stream, cut into arbitrary arrival pieces,
//! fed through a real `Mux` (one psock per stream, the stream transport of pcap-tests) with
//! one of the parsers. Oracle: the same parser walking the whole stream at once. The mux
//! must deliver exactly the oracle's complete messages, in order, each a view into the
//! psock's ring, and then end the psock (clean close, or an error once the stream stops
//! mid-message or the parser rejects it) — never hang, never deliver a wrong boundary.
//!
//! Input: `[parser, cuts, pieces..., stream...]`: byte 0 picks the parser, byte 1 says how
//! many following bytes are piece sizes (each 1..=256), the rest is the stream.
//!
//! This is the body of the fuzz target `mux_assembly` (`fuzz/fuzz_targets/`). It lives here,
//! not in `ukcm-mux`, because it drives the mux through this crate's stream transport; here,
//! `cargo test --workspace` replays the target's committed seeds and crash inputs through
//! exactly the code libFuzzer runs (`tests/fuzz_seeds.rs`).

use ukcm_parsers::{parser_from_spec, Parse};

use crate::fnv1a64;
use crate::reassembly::Stream;
use crate::stream_replay::run_mux;

/// The parsers byte 0 of the input chooses from.
pub const SPECS: [&str; 11] = [
    "thrift",
    "dns",
    "kafka",
    "grpc",
    "memcached",
    "http2",
    "tls",
    "mqtt",
    "resp",
    "http1",
    "lenfield:offset=1,width=2,endian=little",
];

/// The messages a fresh parser finds walking `data` from its start: (length, hash).
fn oracle(spec: &str, data: &[u8]) -> Vec<(usize, u64)> {
    let mut p = parser_from_spec(spec).expect("a known spec");
    let (mut at, mut out) = (0, Vec::new());
    while at < data.len() {
        match p.parse(&data[at..]) {
            Ok(Parse::Message(len)) if len > 0 && at + len <= data.len() && len <= p.max_message() => {
                out.push((len, fnv1a64(&data[at..at + len])));
                at += len;
                p.reset();
            }
            _ => break,
        }
    }
    out
}

/// The fuzz target `mux_assembly` (input layout in the module docs). Panics on a finding:
/// the mux delivered other messages than the parser's own walk, a message that is not a
/// view into the ring, or did not end the psock.
pub fn mux_assembly(input: &[u8]) {
    let [which, cuts, rest @ ..] = input else { return };
    let spec = SPECS[*which as usize % SPECS.len()];
    let ncuts = (*cuts as usize % 16).min(rest.len());
    let (cut_bytes, data) = rest.split_at(ncuts);
    let mut chunks = Vec::new();
    let mut at = 0u64;
    for c in cut_bytes {
        let len = (*c as usize + 1).min(data.len() - at as usize);
        if len == 0 {
            break;
        }
        chunks.push((0, at, len));
        at += len as u64;
    }
    if (at as usize) < data.len() {
        chunks.push((0, at, data.len() - at as usize));
    }
    let stream = Stream { data: data.to_vec(), issues: Vec::new(), fin_at: Some(data.len() as u64), chunks };
    let out = run_mux(spec, &[("fuzz".to_string(), &stream)]).expect("mux runs");
    let got = &out[0];
    let want = oracle(spec, data);
    assert_eq!(got.msgs, want, "{spec}: the mux's messages differ from the parser's own walk");
    assert!(got.in_place, "{spec}: a message was not a view into the ring");
    assert!(got.ended, "{spec}: the psock never ended after end of stream");
}
