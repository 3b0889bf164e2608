//! KCM-compatible BPF parser programs.
//!
//! A program is loaded the way KCM users write it (an ELF object from
//! `clang -target bpf`, or raw instructions), checked and rewritten by
//! [`verify`] so that it has the kernel's semantics (network-byte-order packet
//! loads, `skb->len`, `bpf_skb_load_bytes`) and can only touch memory it is
//! allowed to, then run by rbpf: its interpreter, or its x86_64 JIT.
//!
//! Return value, as in KCM/strparser: the 32-bit `int` the program returns;
//! `< 0` is an error, `0` means "need more", `> 0` is the message length.
//!
//! Known cost: rbpf's interpreter allocates its 512-byte stack on every run
//! (the JIT uses the native stack). Loaded programs are shared (`Arc`) by
//! the per-connection parsers built from them.

pub mod elf;
pub mod verify;
mod vm;

use std::sync::Arc;

use crate::contract::{checked_len, BpfFault, Parse, ParseError, Parser, DEFAULT_MAX};
use verify::{CTX_DATA, CTX_SIZE};

/// Why a program could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BpfLoadError {
    /// The ELF object is malformed or unsupported.
    Elf(&'static str),
    /// The ELF object has no non-empty executable section.
    NoProgram,
    /// Our verifier refused instruction `insn`.
    Verifier { insn: usize, reason: &'static str },
    /// rbpf refused the rewritten program or failed to JIT it.
    Vm(String),
    /// The program file could not be read.
    Io(String),
}

impl core::fmt::Display for BpfLoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Elf(what) => write!(f, "bad BPF ELF object: {what}"),
            Self::NoProgram => f.write_str("no executable section with a program in the ELF object"),
            Self::Verifier { insn, reason } => write!(f, "BPF program rejected at instruction {insn}: {reason}"),
            Self::Vm(e) => write!(f, "rbpf: {e}"),
            Self::Io(e) => write!(f, "cannot read BPF program: {e}"),
        }
    }
}

impl std::error::Error for BpfLoadError {}

/// How to execute a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    Interpreter,
    /// rbpf's x86_64 JIT.
    Jit,
}

impl Exec {
    /// The JIT where rbpf has one (x86_64 Unix), else the interpreter.
    pub fn best() -> Exec {
        if cfg!(all(target_arch = "x86_64", unix)) {
            Exec::Jit
        } else {
            Exec::Interpreter
        }
    }
}

/// A checked, rewritten program ready to run (and JIT-compiled if asked).
pub struct BpfProgram {
    vm: vm::LoadedVm,
    section: String,
}

impl core::fmt::Debug for BpfProgram {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BpfProgram")
            .field("section", &self.section)
            .field("insns", &self.vm.insns())
            .field("jitted", &self.vm.jitted())
            .finish()
    }
}

impl BpfProgram {
    /// Load from an ELF object (detected by its magic) or raw instructions.
    pub fn load(bytes: &[u8], exec: Exec) -> Result<Self, BpfLoadError> {
        let (section, code) = if elf::is_elf(bytes) {
            let p = elf::find_program(bytes)?;
            (p.section.to_owned(), p.code)
        } else {
            (String::from("(raw)"), bytes)
        };
        let rewritten = verify::verify_and_rewrite(code)?;
        let vm = vm::LoadedVm::new(rewritten, exec == Exec::Jit).map_err(BpfLoadError::Vm)?;
        Ok(BpfProgram { vm, section })
    }

    /// Load a program file (ELF object or raw instructions).
    pub fn from_file(path: &std::path::Path, exec: Exec) -> Result<Self, BpfLoadError> {
        let bytes = std::fs::read(path).map_err(|e| BpfLoadError::Io(format!("{}: {e}", path.display())))?;
        Self::load(&bytes, exec)
    }

    /// The ELF section the program came from (`(raw)` for raw instructions).
    pub fn section(&self) -> &str {
        &self.section
    }

    /// Whether runs use the JIT.
    pub fn is_jitted(&self) -> bool {
        self.vm.jitted()
    }

    /// Run the program over `pkt` (the bytes from the message start). `ctx`
    /// is caller-provided scratch so a run does not allocate. Returns the
    /// program's `int` return value.
    pub fn run(&self, pkt: &[u8], ctx: &mut [u8; CTX_SIZE]) -> Result<i32, ParseError> {
        // skb->len can't exceed what a u32 holds; the program sees at most that.
        let len = u32::try_from(pkt.len()).unwrap_or(u32::MAX);
        let pkt = &pkt[..len as usize];
        ctx.fill(0);
        ctx[0..4].copy_from_slice(&len.to_ne_bytes());
        ctx[CTX_DATA..CTX_DATA + 8].copy_from_slice(&(pkt.as_ptr() as u64).to_ne_bytes());
        // KCM's parser returns an int: the low 32 bits of r0.
        self.vm.run(pkt, ctx).map(|v| v as u32 as i32).ok_or(ParseError::Bpf(BpfFault::Vm))
    }
}

/// A [`Parser`] running a [`BpfProgram`] (KCM's `KCM_ATTACH` `bpf_fd`).
#[derive(Debug, Clone)]
pub struct BpfParser {
    prog: Arc<BpfProgram>,
    ctx: [u8; CTX_SIZE],
    max: usize,
}

impl BpfParser {
    /// Max message [`DEFAULT_MAX`].
    pub fn new(prog: Arc<BpfProgram>) -> Self {
        BpfParser { prog, ctx: [0; CTX_SIZE], max: DEFAULT_MAX }
    }

    /// Largest accepted message.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }
}

impl Parser for BpfParser {
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        if buf.is_empty() {
            return Ok(Parse::NeedMore(1));
        }
        match self.prog.run(buf, &mut self.ctx)? {
            v if v < 0 => Err(ParseError::Bpf(BpfFault::Negative(v as i64))),
            // Need more, and there is no telling how much: one more byte. A
            // buffer already at the limit can never become a message.
            0 if buf.len() >= self.max => Err(ParseError::TooLarge { len: buf.len() as u64 + 1, max: self.max as u64 }),
            0 => Ok(Parse::NeedMore(buf.len() + 1)),
            v => checked_len(v as u64, self.max),
        }
    }

    fn max_message(&self) -> usize {
        self.max
    }

    fn name(&self) -> &'static str {
        "bpf"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenfield::LengthField;
    use crate::memcached::Memcached;
    use crate::testing::{assert_boundaries, concat, split_stream};
    use proptest::prelude::*;

    static THRIFT_O: &[u8] = include_bytes!("../../bpf/thrift.o");
    static THRIFT_BIN: &[u8] = include_bytes!("../../bpf/thrift.bin");
    static MEMCACHED_O: &[u8] = include_bytes!("../../bpf/memcached.o");

    fn parser(bytes: &[u8], exec: Exec) -> BpfParser {
        BpfParser::new(Arc::new(BpfProgram::load(bytes, exec).unwrap()))
    }

    fn both(bytes: &[u8]) -> [BpfParser; 2] {
        [parser(bytes, Exec::Interpreter), parser(bytes, Exec::best())]
    }

    #[test]
    fn thrift_program_reads_network_byte_order() {
        for mut p in both(THRIFT_O) {
            assert_eq!(p.parse(&[0, 0, 0, 0x11]), Ok(Parse::Message(21)));
            assert_eq!(p.parse(&[0, 0, 1, 0]), Ok(Parse::Message(260)));
            // Out-of-bounds load_word: the program returns 0, i.e. need more.
            assert_eq!(p.parse(&[0, 0, 1]), Ok(Parse::NeedMore(4)));
            assert_eq!(p.parse(&[]), Ok(Parse::NeedMore(1)));
            // 0x7ffffffc + 4 overflows the int: negative, an error.
            assert_eq!(p.parse(&[0x7f, 0xff, 0xff, 0xfc]), Err(ParseError::Bpf(BpfFault::Negative(i32::MIN as i64))));
            assert!(matches!(p.parse(&[0x01, 0, 0, 0]), Err(ParseError::TooLarge { .. })));
        }
        assert_eq!(BpfProgram::load(THRIFT_O, Exec::Interpreter).unwrap().section(), "socket_kcm");
        let mut raw = parser(THRIFT_BIN, Exec::best());
        assert_eq!(raw.parse(&[0, 0, 0, 1, 9]), Ok(Parse::Message(5)));
    }

    #[test]
    fn memcached_program_uses_skb_len_and_load_bytes() {
        let req = [
            0x80, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            b'H', b'e', b'l', b'l', b'o',
        ];
        for mut p in both(MEMCACHED_O) {
            assert_eq!(p.parse(&req), Ok(Parse::Message(29)));
            assert_eq!(p.parse(&req[..23]), Ok(Parse::NeedMore(24)));
            let mut bad = req;
            bad[0] = b'G';
            assert_eq!(p.parse(&bad), Err(ParseError::Bpf(BpfFault::Negative(-74))));
            assert_eq!(p.parse(&req), Memcached::new().parse(&req));
        }
    }

    #[test]
    fn ld_ind_and_byte_loads() {
        use verify::Insn;
        // r6 = r1; r7 = 1; r0 = ldb [r7 + 1]; r8 = r0; r0 = ldh [2]; r0 += r8; exit
        let insns = [
            Insn { opc: 0xbf, dst: 6, src: 1, off: 0, imm: 0 },
            Insn { opc: 0xb7, dst: 7, src: 0, off: 0, imm: 1 },
            Insn { opc: 0x50, dst: 0, src: 7, off: 0, imm: 1 },
            Insn { opc: 0xbf, dst: 8, src: 0, off: 0, imm: 0 },
            Insn { opc: 0x28, dst: 0, src: 0, off: 0, imm: 2 },
            Insn { opc: 0x0f, dst: 0, src: 8, off: 0, imm: 0 },
            Insn { opc: 0x95, dst: 0, src: 0, off: 0, imm: 0 },
        ];
        let mut code = Vec::new();
        for i in insns {
            code.push(i.opc);
            code.push(i.dst | i.src << 4);
            code.extend_from_slice(&i.off.to_le_bytes());
            code.extend_from_slice(&i.imm.to_le_bytes());
        }
        for mut p in both(&code) {
            // byte[2] = 0x10, be16 at 2 = 0x1003 => 0x1013
            assert_eq!(p.parse(&[0, 0, 0x10, 0x03]), Ok(Parse::Message(0x1013)));
            assert_eq!(p.parse(&[0, 0, 0x10]), Ok(Parse::NeedMore(4)));
        }
    }

    #[test]
    fn malformed_objects_are_errors() {
        assert!(BpfProgram::load(&THRIFT_O[..100], Exec::Interpreter).is_err());
        assert!(BpfProgram::load(&[], Exec::Interpreter).is_err());
        assert!(BpfProgram::load(&[0x95, 0, 0, 0, 0, 0, 0, 0], Exec::best()).is_err());
    }

    proptest! {
        /// The KCM docs' Thrift program agrees with the native Thrift parser.
        #[test]
        fn thrift_program_matches_native(bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6),
                                         cuts in prop::collection::vec(0usize..300, 0..6),
                                         header in prop::collection::vec(any::<u8>(), 0..8)) {
            let msgs: Vec<Vec<u8>> = bodies.iter().map(|b| {
                let mut v = (b.len() as u32).to_be_bytes().to_vec();
                v.extend_from_slice(b);
                v
            }).collect();
            let (stream, lens) = concat(&msgs);
            for mut p in both(THRIFT_O) {
                assert_boundaries(&mut p, &stream, &lens, &cuts);
                // Any frame size that does not overflow the int: same answer as native.
                let native = LengthField::thrift().parse(&header);
                let bpf = p.parse(&header);
                if header.len() >= 4 {
                    if u32::from_be_bytes([header[0], header[1], header[2], header[3]]) < 0x7fff_fffc {
                        prop_assert_eq!(bpf, native);
                    } else {
                        prop_assert!(bpf.is_err() && native.is_err());
                    }
                } else {
                    prop_assert_eq!(bpf, Ok(Parse::NeedMore(header.len() + 1)));
                }
            }
            prop_assert_eq!(split_stream(&mut LengthField::thrift(), &stream), Ok(lens));
        }
    }
}
