//! Replays fuzz targets' committed inputs as ordinary tests, on stable Rust.
//!
//! Included (`#[path]`) by the `fuzz_seeds` integration tests of the crates that hold the
//! target bodies (`parsers`, `stack`, `pcap-tests`), so `cargo test --workspace` runs every
//! target's seeds (`fuzz/seeds/<target>/`), crash inputs (`fuzz/artifacts/<target>/`, if
//! any) and a few inputs derived from them through the same function libFuzzer calls.

#![allow(dead_code)] // each including test uses part of it

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Every fuzz target (`fuzz/fuzz_targets/<name>.rs`) and the function that is its body.
pub const TARGETS: &[(&str, &str)] = &[
    ("lenfield", "ukcm_parsers::fuzzing::lenfield"),
    ("memcached", "ukcm_parsers::fuzzing::memcached"),
    ("http2", "ukcm_parsers::fuzzing::http2"),
    ("tls", "ukcm_parsers::fuzzing::tls"),
    ("mqtt", "ukcm_parsers::fuzzing::mqtt"),
    ("resp", "ukcm_parsers::fuzzing::resp"),
    ("http1", "ukcm_parsers::fuzzing::http1"),
    ("spec", "ukcm_parsers::fuzzing::spec"),
    ("bpf_load", "ukcm_parsers::fuzzing::bpf_load"),
    ("bpf_run", "ukcm_parsers::fuzzing::bpf_run"),
    ("frame_ingest", "ukcm_stack::fuzzing::frame_ingest"),
    ("mux_assembly", "ukcm_pcap_tests::fuzzing::mux_assembly"),
];

/// The fuzz crate's directory (every workspace crate is a top-level folder next to it).
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files directly in `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

/// Checks that `fuzz/fuzz_targets/<target>.rs` calls `body` on its input (so what the tests
/// replay is what libFuzzer runs), then runs `body` on every seed and crash input of the
/// target and on variants of the seeds (truncations, flipped bytes) plus `generated`.
/// Panics naming every input that failed. Returns how many inputs ran.
pub fn replay(target: &str, body: fn(&[u8]), generated: &[Vec<u8>]) -> usize {
    let (_, path) = TARGETS.iter().find(|(t, _)| *t == target).expect("a known target");
    let src_file = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
    let src = std::fs::read_to_string(&src_file).unwrap_or_else(|e| panic!("{}: {e}", src_file.display()));
    assert!(src.contains(&format!("{path}(data)")), "{} does not call {path}", src_file.display());

    let seeds = files(&fuzz_dir().join("seeds").join(target));
    assert!(!seeds.is_empty(), "no seeds in fuzz/seeds/{target}/: replay would test nothing");
    let crashes = files(&fuzz_dir().join("artifacts").join(target));
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for p in seeds.iter().chain(&crashes) {
        inputs.push((p.display().to_string(), std::fs::read(p).unwrap()));
    }
    for (name, seed) in inputs.clone().iter().take(seeds.len()) {
        for (how, v) in variants(seed) {
            inputs.push((format!("{name} ({how})"), v));
        }
    }
    for (i, g) in generated.iter().enumerate() {
        inputs.push((format!("generated #{i}"), g.clone()));
    }
    let failed: Vec<&str> = inputs
        .iter()
        .filter(|(_, data)| catch_unwind(AssertUnwindSafe(|| body(data))).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(failed.is_empty(), "{target}: {} of {} inputs failed: {failed:#?}", failed.len(), inputs.len());
    inputs.len()
}

/// A few cheap mutations of a seed: cut short at a few points, one byte flipped at a few.
fn variants(seed: &[u8]) -> Vec<(String, Vec<u8>)> {
    let n = seed.len();
    let mut out = Vec::new();
    for cut in [1, n / 3, n / 2, n.saturating_sub(1)] {
        if cut > 0 && cut < n {
            out.push((format!("first {cut} bytes"), seed[..cut].to_vec()));
        }
    }
    for at in [0, 1, 2, 3, 4, n / 2, n.saturating_sub(1)] {
        if at < n {
            let mut v = seed.to_vec();
            v[at] ^= 0xff;
            out.push((format!("byte {at} flipped"), v));
        }
    }
    out
}

/// `count` pseudo-random inputs (fixed seed, so runs are repeatable) of up to `max_len`
/// bytes, plus the empty input.
pub fn generated(count: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = vec![Vec::new()];
    for _ in 0..count {
        let len = next() as usize % (max_len + 1);
        out.push((0..len).map(|_| next() as u8).collect());
    }
    out
}
