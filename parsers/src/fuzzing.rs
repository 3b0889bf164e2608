//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`), one function per target.
//!
//! Here rather than in the fuzz crate so that `cargo test --workspace` replays the
//! committed seeds and crash inputs through exactly the code libFuzzer runs
//! (`tests/fuzz_seeds.rs`): an API change that breaks a target fails to compile in the
//! workspace, and a past crash that comes back fails a test. Each function panics on a
//! finding (a parser contract violation, a disagreement); any other input returns.

use std::sync::{Arc, OnceLock};

use crate::testing::fuzz_splits;
use crate::{
    BpfParser, BpfProgram, Endian, Exec, Grpc, Http1, Http2, LengthField, MemcacheAny, Memcached, Mqtt, Parse, Parser,
    Resp, Tls,
};

/// The length-field family: the first 3 bytes configure a generic parser (offset, width,
/// endianness, signedness, header rule, adjustment); the presets run on the rest too.
pub fn lenfield(data: &[u8]) {
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
}

/// The memcached binary parser, and the text-or-binary request parser (`memcache`), whole
/// and in pieces: no panic, contract respected (checked by the harness), same boundaries.
pub fn memcached(data: &[u8]) {
    fuzz_splits(&mut Memcached::new().max(4096), data);
    fuzz_splits(&mut MemcacheAny::new().max(4096).max_line(256), data);
}

/// The HTTP/2 frame parser, whole and in pieces.
pub fn http2(data: &[u8]) {
    fuzz_splits(&mut Http2::new(), data);
}

/// The TLS record parser, whole and in pieces.
pub fn tls(data: &[u8]) {
    fuzz_splits(&mut Tls::new(), data);
}

/// The MQTT parser, whole and in pieces.
pub fn mqtt(data: &[u8]) {
    fuzz_splits(&mut Mqtt::new().max(4096), data);
}

/// The RESP (Redis) parser, whole and in pieces.
pub fn resp(data: &[u8]) {
    fuzz_splits(&mut Resp::new().max(4096).max_depth(8), data);
}

/// The HTTP/1 parser, whole and in pieces.
pub fn http1(data: &[u8]) {
    fuzz_splits(&mut Http1::new().max(4096).max_head(1024), data);
}

/// CLI specs: any string gives a parser or an error, never a panic.
pub fn spec(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        // Files would be read from disk: keep the BPF loader to its own targets.
        if !s.trim_start().starts_with("bpf") {
            let _ = crate::parser_from_spec(s);
        }
    }
}

/// The BPF loader and verifier on arbitrary bytes (ELF or raw). Programs that load are run
/// on a few packets by the interpreter and the JIT, which must agree: a verifier hole shows
/// up as a crash or a disagreement.
pub fn bpf_load(data: &[u8]) {
    let Ok(interp) = BpfProgram::load(data, Exec::Interpreter) else {
        return;
    };
    let jit = BpfProgram::load(data, Exec::best()).expect("loads under the interpreter, so under the JIT");
    let mut a = BpfParser::new(Arc::new(interp));
    let mut b = BpfParser::new(Arc::new(jit));
    for pkt in [&[][..], &[0], &[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], &[0xff; 64], data] {
        assert_eq!(a.parse(pkt), b.parse(pkt));
    }
}

/// The committed KCM programs, Thrift (LD_ABS) and memcached (`bpf_skb_load_bytes`).
pub const THRIFT_O: &[u8] = include_bytes!("../bpf/thrift.o");
/// See [`THRIFT_O`].
pub const MEMCACHED_O: &[u8] = include_bytes!("../bpf/memcached.o");

/// The committed KCM programs on arbitrary packets: interpreter, JIT and the native parsers
/// agree wherever the native parser finds a message.
pub fn bpf_run(data: &[u8]) {
    static PROGS: OnceLock<[Arc<BpfProgram>; 4]> = OnceLock::new();
    let prog = |bytes: &[u8], exec| Arc::new(BpfProgram::load(bytes, exec).unwrap());
    let [ti, tj, mi, mj] = PROGS.get_or_init(|| {
        let (t, m) = (THRIFT_O, MEMCACHED_O);
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
        if data.len() >= 24 && l < i32::MAX as usize && l <= crate::DEFAULT_MAX {
            assert_eq!(mc[0], Ok(Parse::Message(l)));
        }
    }
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target of this module by its fuzz target's name (`fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: &[(&str, Target)] = &[
    ("lenfield", lenfield),
    ("memcached", memcached),
    ("http2", http2),
    ("tls", tls),
    ("mqtt", mqtt),
    ("resp", resp),
    ("http1", http1),
    ("spec", spec),
    ("bpf_load", bpf_load),
    ("bpf_run", bpf_run),
];
