//! Delineate arbitrary bytes with the http1 parser, whole and in pieces: no
//! panic, contract respected (checked by the harness), same boundaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ukcm_parsers::testing::fuzz_splits;
use ukcm_parsers::Http1;

fuzz_target!(|data: &[u8]| {
    fuzz_splits(&mut Http1::new().max(4096).max_head(1024), data);
});
