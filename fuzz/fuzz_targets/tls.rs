//! Delineate arbitrary bytes with the tls parser, whole and in pieces: no
//! panic, contract respected (checked by the harness), same boundaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ukcm_parsers::testing::fuzz_splits;
use ukcm_parsers::Tls;

fuzz_target!(|data: &[u8]| {
    fuzz_splits(&mut Tls::new(), data);
});
