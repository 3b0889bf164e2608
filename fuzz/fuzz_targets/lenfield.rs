//! The length-field family: the first 3 bytes configure a generic parser
//! (offset, width, endianness, signedness, header rule, adjustment); the
//! presets run on the rest too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ukcm_parsers::testing::fuzz_splits;
use ukcm_parsers::{Endian, Grpc, LengthField};

fuzz_target!(|data: &[u8]| {
    if let [a, b, c, rest @ ..] = data {
        let width = [1, 2, 3, 4, 8][(*a as usize) % 5];
        let endian = if a & 0x80 != 0 { Endian::Little } else { Endian::Big };
        let adjust = *c as i8 as i64 * if a & 0x40 != 0 { 1 << 20 } else { 1 };
        let mut p = LengthField::new((*b % 8) as usize, width, endian)
            .unwrap()
            .adjust(adjust)
            .includes_header(a & 0x20 != 0)
            .signed(a & 0x10 != 0)
            .max(4096);
        fuzz_splits(&mut p, rest);
    }
    fuzz_splits(&mut LengthField::thrift().max(4096), data);
    fuzz_splits(&mut LengthField::kafka().max(4096), data);
    fuzz_splits(&mut LengthField::dns(), data);
    fuzz_splits(&mut Grpc::new().max(4096), data);
});
