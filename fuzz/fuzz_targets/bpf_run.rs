//! The committed KCM programs (Thrift via LD_ABS, memcached via
//! bpf_skb_load_bytes) on arbitrary packets: interpreter, JIT and the native
//! parsers agree wherever the native parser finds a message.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ukcm_parsers::{BpfParser, BpfProgram, Exec, LengthField, Memcached, Parse, Parser};

fn prog(bytes: &[u8], exec: Exec) -> Arc<BpfProgram> {
    Arc::new(BpfProgram::load(bytes, exec).unwrap())
}

static PROGS: OnceLock<[Arc<BpfProgram>; 4]> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let [ti, tj, mi, mj] = PROGS.get_or_init(|| {
        let t = include_bytes!("../../parsers/bpf/thrift.o");
        let m = include_bytes!("../../parsers/bpf/memcached.o");
        [prog(t, Exec::Interpreter), prog(t, Exec::best()), prog(m, Exec::Interpreter), prog(m, Exec::best())]
    });
    let thrift = [BpfParser::new(ti.clone()).parse(data), BpfParser::new(tj.clone()).parse(data)];
    assert_eq!(thrift[0], thrift[1]);
    if let Ok(Parse::Message(l)) = LengthField::thrift().parse(data) {
        if l < i32::MAX as usize {
            assert_eq!(thrift[0], Ok(Parse::Message(l)));
        }
    }
    let mc = [BpfParser::new(mi.clone()).parse(data), BpfParser::new(mj.clone()).parse(data)];
    assert_eq!(mc[0], mc[1]);
    if let Ok(Parse::Message(l)) = Memcached::new().max(usize::MAX).parse(data) {
        if data.len() >= 24 && l < i32::MAX as usize && l <= ukcm_parsers::DEFAULT_MAX {
            assert_eq!(mc[0], Ok(Parse::Message(l)));
        }
    }
});
