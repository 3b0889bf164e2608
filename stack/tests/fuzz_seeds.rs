//! The `frame_ingest` fuzz target's seeds and crash inputs, replayed through its body
//! (`ukcm_stack::fuzzing::frame_ingest`) on stable Rust: a past crash that comes back, or a
//! leaked frame, fails here.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn frame_ingest_replays_its_seeds() {
    // Each input builds an engine: a few dozen generated ones keep this short.
    let n = replay::replay("frame_ingest", ukcm_stack::fuzzing::frame_ingest, &replay::generated(40, 600));
    eprintln!("frame_ingest: {n} inputs");
}
