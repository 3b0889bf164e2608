//! Frame ingest: arbitrary frames into a ukcm engine over the in-memory port pair (input
//! layout and invariants in `ukcm_stack::fuzzing`, which `cargo test` also runs on the seeds).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ukcm_stack::fuzzing::frame_ingest(data));
