//! Fuzz target `bpf_load`: what it feeds and checks is `ukcm_parsers::fuzzing::bpf_load`, which
//! `cargo test` also runs on this target's seeds and crash inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ukcm_parsers::fuzzing::bpf_load(data));
