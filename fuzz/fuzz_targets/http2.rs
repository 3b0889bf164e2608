//! Delineate arbitrary bytes with the http2 parser, whole and in pieces: no
//! panic, contract respected (checked by the harness), same boundaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ukcm_parsers::testing::fuzz_splits;
use ukcm_parsers::Http2;

fuzz_target!(|data: &[u8]| {
    fuzz_splits(&mut Http2::new(), data);
});
