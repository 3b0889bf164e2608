//! The mux's message assembly: a byte stream cut into arbitrary arrival pieces through a real
//! `Mux` (input layout and oracle in `ukcm_pcap_tests::fuzzing`, which `cargo test` also runs
//! on the seeds).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ukcm_pcap_tests::fuzzing::mux_assembly(data));
