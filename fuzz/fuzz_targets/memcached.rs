//! Delineate arbitrary bytes with the memcached parser, whole and in pieces: no
//! panic, contract respected (checked by the harness), same boundaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ukcm_parsers::testing::fuzz_splits;
use ukcm_parsers::Memcached;

fuzz_target!(|data: &[u8]| {
    fuzz_splits(&mut Memcached::new().max(4096), data);
});
