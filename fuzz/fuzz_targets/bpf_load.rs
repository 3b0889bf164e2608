//! The BPF loader and verifier on arbitrary bytes (ELF or raw). Programs that
//! load are run on a few packets by the interpreter and the JIT, which must
//! agree: a verifier hole shows up as a crash or a disagreement.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ukcm_parsers::{BpfParser, BpfProgram, Exec, Parser};

fuzz_target!(|data: &[u8]| {
    let Ok(interp) = BpfProgram::load(data, Exec::Interpreter) else {
        return;
    };
    let jit = BpfProgram::load(data, Exec::best()).expect("loads under the interpreter, so under the JIT");
    let mut a = BpfParser::new(Arc::new(interp));
    let mut b = BpfParser::new(Arc::new(jit));
    for pkt in [&[][..], &[0], &[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], &[0xff; 64], data] {
        assert_eq!(a.parse(pkt), b.parse(pkt));
    }
});
