//! The parser fuzz targets' seeds and crash inputs, replayed through the targets' own bodies
//! (`ukcm_parsers::fuzzing`) on stable Rust: a past crash that comes back fails here.

#[path = "../../fuzz/replay.rs"]
mod replay;

use ukcm_parsers::fuzzing;

/// Every file in `fuzz/fuzz_targets/` is a target some crate's `fuzz_seeds` test replays.
#[test]
fn every_fuzz_target_is_replayed() {
    let mut found: Vec<String> = std::fs::read_dir(replay::fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut known: Vec<String> = replay::TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    known.sort();
    assert_eq!(found, known, "fuzz/fuzz_targets/ and fuzz/replay.rs's TARGETS disagree");
    let mut here: Vec<&str> = fuzzing::TARGETS.iter().map(|(t, _)| *t).collect();
    here.sort_unstable();
    let mut listed: Vec<&str> =
        replay::TARGETS.iter().filter(|(_, f)| f.starts_with("ukcm_parsers::")).map(|(t, _)| *t).collect();
    listed.sort_unstable();
    assert_eq!(here, listed, "ukcm_parsers::fuzzing::TARGETS and fuzz/replay.rs disagree");
}

#[test]
fn parser_targets_replay_their_seeds() {
    let generated = replay::generated(200, 300);
    // Every target runs even when an earlier one fails, so one run names them all.
    let failed: Vec<&str> = fuzzing::TARGETS
        .iter()
        .filter(|(target, body)| {
            let run = std::panic::catch_unwind(|| replay::replay(target, *body, &generated));
            run.inspect(|n| eprintln!("{target}: {n} inputs")).is_err()
        })
        .map(|(target, _)| *target)
        .collect();
    assert!(failed.is_empty(), "targets with failures (details above): {failed:?}");
}
