//! Every committed fixture through stream replay: reassembled flows fed through the mux with
//! the fixture's parser deliver exactly the manifest's messages, both ways.

use ukcm_pcap_tests::{stream_replay::replay_fixture, FIXTURES};

#[test]
fn every_fixture_delivers_its_manifest() {
    for name in FIXTURES {
        match replay_fixture(name) {
            Ok(s) => {
                assert!(s.messages > 0 && s.flows > 0, "{name}: {s:?}");
                eprintln!("{name}: {} flows, {} messages, {} bytes", s.flows, s.messages, s.bytes);
            }
            Err(e) => panic!("{e}"),
        }
    }
}
