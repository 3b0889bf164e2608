//! Every flow of every committed fixture played live into a ukcm engine that takes the
//! server's address: the engine completes the handshake with its own sequence numbers, the
//! mux on it delivers the manifest's client messages, and the engine's replies (the
//! capture's server messages, sent back through the mux) are recorded; the recording,
//! replayed as a stream, gives the manifest both ways.

use ukcm_pcap_tests::manifest::{Dir, Manifest};
use ukcm_pcap_tests::stream_replay::replay_file;
use ukcm_pcap_tests::{capture, flows, live, FIXTURES};

#[test]
fn every_flow_of_every_fixture_plays_live_into_an_engine() {
    let dir = std::env::temp_dir().join(format!("ukcm-pcap-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in FIXTURES {
        let fx = ukcm_pcap_tests::fixtures_dir();
        let manifest = Manifest::load(&fx.join(format!("{name}.manifest"))).unwrap();
        let cap = capture::read(&fx.join(format!("{name}.pcap"))).unwrap();
        let found = flows::flows(&cap);
        for (fi, spec) in manifest.flows.iter().enumerate() {
            let flow = found.iter().find(|f| f.client == spec.client && f.server == spec.server).unwrap();
            let streams = flows::reassemble(&cap, flow);
            let rec = dir.join(format!("{name}-{fi}.pcap"));
            let c2s_parser = manifest.parser_for(Dir::C2s);
            let out = live::replay_flow(&cap, flow, spec, c2s_parser, &streams.dir(Dir::S2c).data, &rec)
                .unwrap_or_else(|e| panic!("{name} flow {fi}: {e}"));
            let want: Vec<(usize, u64)> = spec.c2s.iter().map(|m| (m.len, m.fnv)).collect();
            assert_eq!(out.delivered, want, "{name} flow {fi}: the engine's mux delivered other messages");
            assert_eq!(out.replies, spec.s2c.len(), "{name} flow {fi}");
            // the engine chose its own ISN: the client's acks were rewritten to it
            let server_isn = cap
                .segments
                .iter()
                .find(|s| s.src == spec.server && s.dst == spec.client && s.flags.syn)
                .map(|s| s.seq)
                .unwrap();
            assert_ne!(out.engine_isn, server_isn, "{name} flow {fi}");
            // the recording holds the handshake and both streams, as the manifest says
            let one = manifest.only_flow(fi);
            replay_file(&rec, &one).unwrap_or_else(|e| panic!("{name} flow {fi}: recording: {e}"));
            eprintln!("{name} flow {fi}: {} messages in, {} out, {:?}", out.delivered.len(), out.replies, out.stats);
            let _ = std::fs::remove_file(&rec);
        }
    }
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn a_missing_client_segment_stalls_the_live_replay_at_the_named_message() {
    use ukcm_pcap_tests::pcapedit::Records;
    let fx = ukcm_pcap_tests::fixtures_dir();
    let manifest = Manifest::load(&fx.join("memcached_binary.manifest")).unwrap();
    let path = fx.join("memcached_binary.pcap");
    let cap = capture::read(&path).unwrap();
    let found = flows::flows(&cap);
    let spec = &manifest.flows[0];
    let flow = found.iter().find(|f| f.client == spec.client && f.server == spec.server).unwrap();
    let streams = flows::reassemble(&cap, flow);
    // drop the client segment that starts inside message 1 (stream bytes 58..3100)
    let &(record, _, _) = streams.c2s.chunks.iter().find(|c| c.1 > 58 && c.1 < 3100).unwrap();
    let mut r = Records::read(&path).unwrap();
    r.records.remove((record - 1) as usize);
    let dir = std::env::temp_dir().join(format!("ukcm-pcap-live-gap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let damaged = dir.join("gap.pcap");
    r.write(&damaged).unwrap();
    let cap = capture::read(&damaged).unwrap();
    let found = flows::flows(&cap);
    let flow = found.iter().find(|f| f.client == spec.client).unwrap();
    let err = live::replay_flow(&cap, flow, spec, &manifest.parser, &streams.s2c.data, &dir.join("rec.pcap"))
        .expect_err("a capture with a hole cannot replay live");
    eprintln!("{err}");
    assert!(err.starts_with("message 1 not delivered: live replay stalled with 1 of 4"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
