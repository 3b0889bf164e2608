//! Fuzz target `tls`: what it feeds and checks is `ukcm_parsers::fuzzing::tls`, which
//! `cargo test` also runs on this target's seeds and crash inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ukcm_parsers::fuzzing::tls(data));
