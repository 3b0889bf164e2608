//! Damaged captures, built here from a good fixture, give a report naming the flow, the
//! direction and the message that broke, and why; a capture with reordered and duplicated
//! segments, or whose client sequence numbers wrap past 2^32 (what a receiver must cope
//! with), still gives exactly the manifest.
//!
//! The target is memcached_binary's flow 0 client→server message 1: the `set` of a 3000-byte
//! value, which spans three segments.

use std::path::PathBuf;

use ukcm_pcap_tests::capture;
use ukcm_pcap_tests::flows;
use ukcm_pcap_tests::manifest::{Dir, Manifest};
use ukcm_pcap_tests::pcapedit::{fix_checksums, Records};
use ukcm_pcap_tests::stream_replay::replay_file;

const FIXTURE: &str = "memcached_binary";

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ukcm-pcap-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

struct Target {
    manifest: Manifest,
    records: Records,
    /// Record (from 1) of a segment carrying bytes of flow 0 c2s message 1, not its first.
    record: u64,
    /// Where its payload starts in the frame.
    payload_at: usize,
}

fn target() -> Target {
    let dir = ukcm_pcap_tests::fixtures_dir();
    let manifest = Manifest::load(&dir.join(format!("{FIXTURE}.manifest"))).unwrap();
    let path = dir.join(format!("{FIXTURE}.pcap"));
    let cap = capture::read(&path).unwrap();
    let fl = flows::flows(&cap);
    let spec = &manifest.flows[0];
    let f = fl.iter().find(|f| f.client == spec.client && f.server == spec.server).unwrap();
    let stream = flows::reassemble(&cap, f);
    let (_, start) = spec.msg_at(Dir::C2s, 100).unwrap();
    assert_eq!(spec.msg_at(Dir::C2s, 100).unwrap().0, 1);
    let end = start + spec.c2s[1].len as u64;
    // a piece that starts inside message 1 and ends before its end
    let &(record, _, _) = stream
        .c2s
        .chunks
        .iter()
        .find(|&&(_, off, len)| off > start && off + (len as u64) < end)
        .expect("message 1 spans more than two segments");
    let seg = cap.segments.iter().find(|s| s.record == record).unwrap();
    Target { manifest, records: Records::read(&path).unwrap(), record, payload_at: seg.payload_at }
}

fn replay(records: &Records, name: &str, manifest: &Manifest) -> String {
    let path = tmp(name);
    records.write(&path).unwrap();
    let err = replay_file(&path, manifest).expect_err("a damaged capture must not replay cleanly");
    let _ = std::fs::remove_file(&path);
    err.to_string()
}

#[test]
fn truncated_capture_names_the_record_flow_and_message() {
    let t = target();
    let path = tmp("truncated.pcap");
    t.records.write(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // cut the file 40 bytes into the target record's data
    let cut = t.records.file_offset(t.record) as usize + 16 + 40;
    std::fs::write(&path, &bytes[..cut]).unwrap();
    let msg = replay_file(&path, &t.manifest).unwrap_err().to_string();
    eprintln!("{msg}");
    assert!(msg.contains(&format!("capture damaged: record {}: truncated", t.record)), "{msg}");
    assert!(msg.contains("flow 0 c2s (10.219.0.2:"), "{msg}");
    assert!(msg.contains("message 1 (stream bytes 58..3100): not delivered"), "{msg}");
    // the flows after the damage are reported missing, by index
    assert!(msg.contains("flow 4 (") && msg.contains("not in the capture at all"), "{msg}");
}

#[test]
fn bad_checksum_drops_the_segment_and_names_it() {
    let t = target();
    let mut r = t.records.clone();
    r.records[(t.record - 1) as usize].1[t.payload_at + 10] ^= 0x20;
    let msg = replay(&r, "badsum.pcap", &t.manifest);
    eprintln!("{msg}");
    assert!(msg.contains("flow 0 c2s"), "{msg}");
    assert!(msg.contains("message 1 (stream bytes 58..3100): not delivered"), "{msg}");
    assert!(msg.contains(&format!("record(s) {} dropped for a bad checksum", t.record)), "{msg}");
    assert!(msg.contains("missing segment: stream bytes"), "{msg}");
    // every other flow and direction is fine
    assert_eq!(msg.matches("\n  ").count(), 1, "{msg}");
}

#[test]
fn flipped_byte_with_a_fixed_checksum_is_caught_by_the_hash() {
    let t = target();
    let mut r = t.records.clone();
    let frame = &mut r.records[(t.record - 1) as usize].1;
    frame[t.payload_at + 10] ^= 0x20;
    fix_checksums(frame);
    let msg = replay(&r, "flipped.pcap", &t.manifest);
    eprintln!("{msg}");
    let want = t.manifest.flows[0].c2s[1];
    assert!(msg.contains(&format!("flow 0 c2s (10.219.0.2:{}", t.manifest.flows[0].client.port())), "{msg}");
    assert!(msg.contains("message 1 (stream bytes 58..3100): delivered 3042 bytes fnv"), "{msg}");
    assert!(msg.contains(&format!("expected {} bytes fnv {:016x}", want.len, want.fnv)), "{msg}");
    assert_eq!(msg.matches("\n  ").count(), 1, "{msg}");
}

#[test]
fn missing_segment_is_a_gap_inside_the_named_message() {
    let t = target();
    let mut r = t.records.clone();
    r.records.remove((t.record - 1) as usize);
    let msg = replay(&r, "missing.pcap", &t.manifest);
    eprintln!("{msg}");
    assert!(msg.contains("flow 0 c2s"), "{msg}");
    assert!(msg.contains("message 1 (stream bytes 58..3100): not delivered"), "{msg}");
    assert!(msg.contains("missing segment: stream bytes") && msg.contains("never arrived (inside message 1)"), "{msg}");
    assert_eq!(msg.matches("\n  ").count(), 1, "{msg}");
}

#[test]
fn conflicting_retransmission_keeps_the_first_copy_and_is_reported() {
    let t = target();
    let mut r = t.records.clone();
    let i = (t.record - 1) as usize;
    let mut copy = r.records[i].clone();
    copy.1[t.payload_at + 10] ^= 0x20;
    fix_checksums(&mut copy.1);
    r.records.insert(i + 1, copy); // a retransmission with other bytes
    let path = tmp("conflict.pcap");
    r.write(&path).unwrap();
    let cap = capture::read(&path).unwrap();
    let fl = flows::flows(&cap);
    let s = flows::reassemble(&cap, &fl[0]);
    let conflict = s.c2s.issues.iter().map(|i| i.to_string()).find(|i| i.contains("disagrees"));
    assert!(conflict.as_deref().is_some_and(|c| c.contains("first copy kept")), "{:?}", s.c2s.issues);
    // the first copy was the right one: every message still matches
    replay_file(&path, &t.manifest).unwrap();
}

#[test]
fn reordered_and_duplicated_segments_still_give_the_manifest() {
    let t = target();
    let mut r = t.records.clone();
    let i = (t.record - 1) as usize;
    // the target segment after its successor, and two duplicates of it
    r.records.swap(i, i + 1);
    let dup = r.records[i + 1].clone();
    r.records.insert(i + 2, dup.clone());
    r.records.insert(i + 5, dup);
    let path = tmp("reordered.pcap");
    r.write(&path).unwrap();
    let s = replay_file(&path, &t.manifest).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.messages, t.manifest.flows.iter().map(|f| f.c2s.len() + f.s2c.len()).sum::<usize>());
}

/// Shifts the client's sequence space of flow 0 so that it wraps past 2^32 in the middle of
/// the client's stream (its seqs, and the server's acks of them); checksums recomputed.
fn wrapped_capture() -> (Records, Manifest) {
    let t = target();
    let spec = t.manifest.flows[0].clone();
    let path = ukcm_pcap_tests::fixtures_dir().join(format!("{FIXTURE}.pcap"));
    let cap = capture::read(&path).unwrap();
    let syn = cap.segments.iter().find(|s| s.src == spec.client && s.flags.syn).unwrap();
    // client ISN + 1 + 5000 lands on 2^32: the wrap falls inside message 1's bytes
    let delta = (u32::MAX - 5000).wrapping_sub(syn.seq);
    let mut r = t.records.clone();
    for s in &cap.segments {
        let frame = &mut r.records[(s.record - 1) as usize].1;
        let tcp_at = 14 + ((frame[14] & 0x0f) as usize) * 4;
        if s.src == spec.client && s.dst == spec.server {
            frame[tcp_at + 4..tcp_at + 8].copy_from_slice(&s.seq.wrapping_add(delta).to_be_bytes());
        } else if s.src == spec.server && s.dst == spec.client && s.flags.ack {
            frame[tcp_at + 8..tcp_at + 12].copy_from_slice(&s.ack.wrapping_add(delta).to_be_bytes());
        } else {
            continue;
        }
        fix_checksums(frame);
    }
    (r, t.manifest)
}

#[test]
fn a_client_stream_that_wraps_past_2_pow_32_replays_as_a_stream_and_live() {
    let (r, manifest) = wrapped_capture();
    let path = tmp("wrapped.pcap");
    r.write(&path).unwrap();
    let cap = capture::read(&path).unwrap();
    let spec = &manifest.flows[0];
    let syn = cap.segments.iter().find(|s| s.src == spec.client && s.flags.syn).unwrap();
    assert!(syn.seq > u32::MAX - 6000, "the capture's client ISN is near the wrap");
    let s = replay_file(&path, &manifest).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.messages, manifest.flows.iter().map(|f| f.c2s.len() + f.s2c.len()).sum::<usize>());
    let fl = flows::flows(&cap);
    let flow = fl.iter().find(|f| f.client == spec.client).unwrap();
    let streams = flows::reassemble(&cap, flow);
    let out = ukcm_pcap_tests::live::replay_flow(
        &cap,
        flow,
        spec,
        &manifest.parser,
        &streams.s2c.data,
        &tmp("wrapped-live.pcap"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let want: Vec<(usize, u64)> = spec.c2s.iter().map(|m| (m.len, m.fnv)).collect();
    assert_eq!(out.delivered, want);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(tmp("wrapped-live.pcap"));
}

/// A message to damage: its size, flow, direction, index and stream offset, and the record
/// and frame offset of the byte in its middle.
struct Damaged {
    len: usize,
    fi: usize,
    d: Dir,
    k: usize,
    start: u64,
    record: u64,
    at: usize,
}

/// In every fixture, the largest message that spans at least three segments (the first
/// such in manifest order), damaged three ways in the segment that carries its middle byte:
/// each report names that flow, direction and message, and only it.
#[test]
fn every_fixture_names_the_damaged_message() {
    for name in ukcm_pcap_tests::FIXTURES {
        let dir = ukcm_pcap_tests::fixtures_dir();
        let manifest = Manifest::load(&dir.join(format!("{name}.manifest"))).unwrap();
        let path = dir.join(format!("{name}.pcap"));
        let cap = capture::read(&path).unwrap();
        let found = flows::flows(&cap);
        let mut best: Option<Damaged> = None;
        for (fi, spec) in manifest.flows.iter().enumerate() {
            let f = found.iter().find(|f| f.client == spec.client && f.server == spec.server).unwrap();
            let fs = flows::reassemble(&cap, f);
            for d in Dir::BOTH {
                let limit = spec.unframed_from(d).map_or(spec.msgs(d).len(), |u| u.0);
                let mut start = 0u64;
                for (k, m) in spec.msgs(d)[..limit].iter().enumerate() {
                    let end = start + m.len as u64;
                    let mid = start + m.len as u64 / 2;
                    let pieces = fs.dir(d).chunks.iter().filter(|c| c.1 < end && c.1 + c.2 as u64 > start).count();
                    let at = fs.dir(d).chunks.iter().find(|c| c.1 <= mid && mid < c.1 + c.2 as u64);
                    if let (true, Some(&(record, off, _))) = (pieces >= 3, at) {
                        if best.as_ref().is_none_or(|b| m.len > b.len) {
                            let seg = cap.segments.iter().find(|s| s.record == record).unwrap();
                            let within = (mid - off) as usize;
                            best = Some(Damaged { len: m.len, fi, d, k, start, record, at: seg.payload_at + within });
                        }
                    }
                    start = end;
                }
            }
        }
        let Damaged { len, fi, d, k, start, record, at } =
            best.unwrap_or_else(|| panic!("{name}: no message spans three segments"));
        let spec = &manifest.flows[fi];
        let named =
            format!("flow {fi} {d} ({}): message {k} (stream bytes {start}..{})", spec.describe(d), start + len as u64);
        let records = Records::read(&path).unwrap();
        let i = (record - 1) as usize;

        // a flipped byte with its checksum fixed: delivered, but not the manifest's bytes
        let mut r = records.clone();
        r.records[i].1[at] ^= 0x20;
        fix_checksums(&mut r.records[i].1);
        let msg = replay(&r, &format!("{name}-flip.pcap"), &manifest);
        assert!(msg.contains(&format!("{named}: delivered {len} bytes fnv")), "{name}: {msg}");
        assert_eq!(msg.matches("\n  ").count(), 1, "{name}: {msg}");

        // the same byte flipped, checksum left: the receiver drops the segment
        let mut r = records.clone();
        r.records[i].1[at] ^= 0x20;
        let msg = replay(&r, &format!("{name}-badsum.pcap"), &manifest);
        assert!(msg.contains(&format!("{named}: not delivered")), "{name}: {msg}");
        assert!(msg.contains(&format!("record(s) {record} dropped for a bad checksum")), "{name}: {msg}");
        assert_eq!(msg.matches("\n  ").count(), 1, "{name}: {msg}");

        // the segment missing from the capture: a gap inside the message
        let mut r = records.clone();
        r.records.remove(i);
        let msg = replay(&r, &format!("{name}-missing.pcap"), &manifest);
        assert!(msg.contains(&format!("{named}: not delivered")), "{name}: {msg}");
        assert!(msg.contains(&format!("never arrived (inside message {k})")), "{name}: {msg}");
        assert_eq!(msg.matches("\n  ").count(), 1, "{name}: {msg}");
        eprintln!("{name}: damage in flow {fi} {d} message {k} ({len} bytes, record {record}) named");
    }
}
