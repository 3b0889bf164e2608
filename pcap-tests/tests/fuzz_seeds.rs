//! The `mux_assembly` fuzz target's seeds and crash inputs, replayed through its body
//! (`ukcm_pcap_tests::fuzzing::mux_assembly`) on stable Rust: a past mismatch between the
//! mux and the parser's own walk that comes back fails here.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn mux_assembly_replays_its_seeds() {
    // Each input builds a mux and a pinned ring: a few dozen generated ones keep this short.
    let n = replay::replay("mux_assembly", ukcm_pcap_tests::fuzzing::mux_assembly, &replay::generated(40, 600));
    eprintln!("mux_assembly: {n} inputs");
}
