//! Delineate arbitrary bytes with the resp parser, whole and in pieces: no
//! panic, contract respected (checked by the harness), same boundaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ukcm_parsers::testing::fuzz_splits;
use ukcm_parsers::Resp;

fuzz_target!(|data: &[u8]| {
    fuzz_splits(&mut Resp::new().max(4096).max_depth(8), data);
});
