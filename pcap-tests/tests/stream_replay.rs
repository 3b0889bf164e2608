//! Every committed fixture through stream replay: reassembled flows fed through the mux with
//! the fixture's parser deliver exactly the manifest's messages, both ways.

use ukcm_pcap_tests::manifest::Manifest;
use ukcm_pcap_tests::{stream_replay::replay_fixture, FIXTURES};

#[test]
fn every_fixture_delivers_its_manifest() {
    for name in FIXTURES {
        let m = Manifest::load(&ukcm_pcap_tests::fixtures_dir().join(format!("{name}.manifest"))).unwrap();
        match replay_fixture(name) {
            Ok(s) => {
                assert!(s.messages > 0 && s.flows > 0, "{name}: {s:?}");
                // every `unframed` line showed, every inner message was delivered
                assert_eq!(s.unframed, m.flows.iter().map(|f| f.unframed.len()).sum::<usize>(), "{name}: {s:?}");
                let inner: usize = m.flows.iter().flat_map(|f| f.inner.iter().map(|i| i.2.len())).sum();
                assert_eq!(s.inner_messages, inner, "{name}: {s:?}");
                eprintln!(
                    "{name}: {} flows, {} messages, {} bytes, {} inner messages, {} known unframed",
                    s.flows, s.messages, s.bytes, s.inner_messages, s.unframed
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The generic parsers on real traffic: the `lenfield` spec that describes DNS's and
/// Thrift's framing, the kernel-docs Thrift program under the BPF JIT and interpreter, and
/// the memcached-binary program replay the fixtures their framing describes to their
/// manifests.
#[test]
fn generic_parsers_replay_the_fixtures_their_framing_describes() {
    use ukcm_pcap_tests::stream_replay::replay_file;
    let bpf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../parsers/bpf");
    let cases = [
        ("dns_tcp", "lenfield:offset=0,width=2,endian=big".to_string()),
        ("thrift_framed", "lenfield:offset=0,width=4,endian=big".to_string()),
        ("thrift_framed", format!("bpf:{}", bpf.join("thrift.o").display())),
        ("thrift_framed", format!("bpf-interp:{}", bpf.join("thrift.bin").display())),
        ("memcached_binary", format!("bpf:{}", bpf.join("memcached.o").display())),
    ];
    for (name, spec) in cases {
        let dir = ukcm_pcap_tests::fixtures_dir();
        let m = Manifest::load(&dir.join(format!("{name}.manifest"))).unwrap();
        let m = Manifest { parser: spec.clone(), ..m };
        let s = replay_file(&dir.join(format!("{name}.pcap")), &m).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let want: usize = m.flows.iter().map(|f| f.c2s.len() + f.s2c.len()).sum();
        assert_eq!(s.messages, want, "{name} with {spec}");
        eprintln!("{name} with {spec}: {} messages", s.messages);
    }
}

/// The `unframed` check can fail: moved onto a message the parser does delineate (the
/// response before the HEAD one), the replay says the line no longer holds; dropped, the
/// replay says the HEAD response was not delivered as the manifest has it.
#[test]
fn an_unframed_line_must_match_what_the_parser_does() {
    use ukcm_pcap_tests::manifest::Dir;
    use ukcm_pcap_tests::stream_replay::replay_file;
    let dir = ukcm_pcap_tests::fixtures_dir();
    let path = dir.join("http1.pcap");
    let m = Manifest::load(&dir.join("http1.manifest")).unwrap();
    let (fi, k) = m
        .flows
        .iter()
        .enumerate()
        .find_map(|(fi, f)| f.unframed_from(Dir::S2c).filter(|u| u.1.contains("HEAD")).map(|u| (fi, u.0)))
        .expect("the HEAD response is unframed");
    let mut moved = m.clone();
    moved.flows[fi].unframed.retain(|u| !u.2.contains("HEAD"));
    moved.flows[fi].unframed.push((Dir::S2c, k - 1, "moved".into()));
    let e = replay_file(&path, &moved).unwrap_err().to_string();
    assert!(e.contains(&format!("message {}: delivered as the manifest has it", k - 1)), "{e}");
    let mut dropped = m.clone();
    dropped.flows[fi].unframed.retain(|u| !u.2.contains("HEAD"));
    let e = replay_file(&path, &dropped).unwrap_err().to_string();
    assert!(e.contains(&format!("flow {fi} s2c")) && e.contains(&format!("message {k} (stream bytes")), "{e}");
    eprintln!("{e}");
}
