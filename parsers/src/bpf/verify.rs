//! Load-time checking and rewriting of a KCM parser program.
//!
//! rbpf checks opcodes, but its JIT does not bounds-check memory, its LD_ABS
//! reads host byte order from a different base, and it has no instruction
//! budget. So before rbpf sees a program we:
//!
//! 1. **verify** it with a small abstract interpreter in the spirit of the
//!    kernel's (pre-5.3) verifier: jumps only go forward (no loops, so a run
//!    executes each instruction at most once: the budget is the program
//!    length, enforced here), every register is written before it is read,
//!    memory is accessed only through the context pointer (read-only, within
//!    `struct __sk_buff`) or the frame pointer plus a constant (within the
//!    512-byte stack), the only helper is `bpf_skb_load_bytes` (26) with a
//!    constant length into the stack, and maps are refused;
//! 2. **rewrite** every packet access into plain eBPF that rbpf runs safely:
//!    LD_ABS/LD_IND become a bounds check against `skb->len`, a load through
//!    a hidden packet pointer kept in the context past `__sk_buff`, and a
//!    `be16`/`be32` conversion (network byte order, as in the kernel); out of
//!    bounds they end the program returning 0, which is the kernel's
//!    behaviour and means "need more" to KCM. `bpf_skb_load_bytes` becomes an
//!    inline bounds check and an unrolled copy (or zeroing and -EFAULT).
//!
//! After rewriting, the program contains no helper calls and no loops, and
//! every memory access is proven in bounds: that is what makes running it
//! under the JIT sound.

use super::BpfLoadError;

/// Instructions a source program may have (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;
/// Bytes of `struct __sk_buff` a program may read.
pub const CTX_VISIBLE: usize = 192;
/// Offset in the context of the hidden packet pointer (u64).
pub const CTX_DATA: usize = 192;
/// Size of the context buffer handed to the VM.
pub const CTX_SIZE: usize = 200;
const STACK: i64 = 512;
const HELPER_SKB_LOAD_BYTES: i32 = 26;
const EFAULT: i32 = 14;

/// One decoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub opc: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    const fn new(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn { opc, dst, src, off, imm }
    }

    fn decode(b: &[u8]) -> Insn {
        Insn {
            opc: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.opc);
        out.push(self.dst | (self.src << 4));
        out.extend_from_slice(&self.off.to_le_bytes());
        out.extend_from_slice(&self.imm.to_le_bytes());
    }
}

/// Abstract value of a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val {
    Uninit,
    /// A number, with its value when known (constant-tracked for helper lengths).
    Scalar(Option<i64>),
    /// The context pointer, unmodified.
    Ctx,
    /// Frame pointer plus a known offset.
    Stack(i64),
    /// Derived from a pointer by other arithmetic: not dereferenceable.
    Ptr,
}

impl Val {
    fn join(self, other: Val) -> Val {
        match (self, other) {
            (a, b) if a == b => a,
            (Val::Uninit, _) | (_, Val::Uninit) => Val::Uninit,
            (Val::Scalar(_), Val::Scalar(_)) => Val::Scalar(None),
            _ => Val::Ptr,
        }
    }
    fn is_pointer(self) -> bool {
        matches!(self, Val::Ctx | Val::Stack(_) | Val::Ptr)
    }
}

type Regs = [Val; 11];

/// What the rewriter does with one source instruction.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Copy,
    /// Second slot of a 16-byte LD_DW: copied along with the first.
    Tail,
    /// LD_ABS (`ind = None`) or LD_IND of `size` bytes.
    LoadPacket {
        size: u8,
        ind: Option<u8>,
        imm: i32,
    },
    /// `bpf_skb_load_bytes` with a constant length.
    LoadBytes {
        len: u16,
    },
}

fn reject(insn: usize, reason: &'static str) -> BpfLoadError {
    BpfLoadError::Verifier { insn, reason }
}

fn size_of_ldst(opc: u8) -> i64 {
    match opc & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

/// Check `code` (raw instruction bytes) and return the rewritten program's bytes.
pub fn verify_and_rewrite(code: &[u8]) -> Result<Vec<u8>, BpfLoadError> {
    if code.is_empty() || code.len() % 8 != 0 {
        return Err(reject(0, "program size is not a non-zero multiple of 8 bytes"));
    }
    let insns: Vec<Insn> = code.chunks_exact(8).map(Insn::decode).collect();
    let n = insns.len();
    if n > MAX_INSNS {
        return Err(reject(MAX_INSNS, "program longer than 4096 instructions"));
    }
    let plans = verify(&insns)?;
    rewrite(&insns, &plans)
}

fn verify(insns: &[Insn]) -> Result<Vec<Plan>, BpfLoadError> {
    let n = insns.len();
    let mut plans = vec![Plan::Copy; n];
    let mut states: Vec<Option<Regs>> = vec![None; n];
    let mut init = [Val::Uninit; 11];
    init[1] = Val::Ctx;
    init[10] = Val::Stack(0);
    states[0] = Some(init);

    // Mark LD_DW second slots first so no jump may land in one.
    let mut pc = 0;
    while pc < n {
        if insns[pc].opc == 0x18 {
            if pc + 1 >= n {
                return Err(reject(pc, "incomplete 16-byte load"));
            }
            plans[pc + 1] = Plan::Tail;
            pc += 2;
        } else {
            pc += 1;
        }
    }

    let tails: Vec<bool> = plans.iter().map(|p| matches!(p, Plan::Tail)).collect();
    let flow = |states: &mut Vec<Option<Regs>>, pc: usize, to: usize, regs: &Regs| -> Result<(), BpfLoadError> {
        if to >= n {
            return Err(reject(pc, "control flow leaves the program"));
        }
        if tails[to] {
            return Err(reject(pc, "jump into the middle of a 16-byte load"));
        }
        states[to] = Some(match states[to] {
            None => *regs,
            Some(old) => {
                let mut j = old;
                for (a, b) in j.iter_mut().zip(regs) {
                    *a = a.join(*b);
                }
                j
            }
        });
        Ok(())
    };

    for pc in 0..n {
        let insn = insns[pc];
        if tails[pc] {
            continue;
        }
        let Some(mut r) = states[pc] else {
            return Err(reject(pc, "unreachable instruction"));
        };
        let (dst, src) = (insn.dst as usize, insn.src as usize);
        if dst > 10 || src > 10 {
            return Err(reject(pc, "invalid register"));
        }
        let read = |r: &Regs, i: usize| -> Result<Val, BpfLoadError> {
            match r[i] {
                Val::Uninit => Err(reject(pc, "read of an uninitialised register")),
                v => Ok(v),
            }
        };
        let stack_range = |base: Val, off: i16, size: i64| -> Result<(), BpfLoadError> {
            match base {
                Val::Stack(o) => {
                    let a = o + off as i64;
                    if a >= -STACK && a + size <= 0 {
                        Ok(())
                    } else {
                        Err(reject(pc, "stack access out of bounds"))
                    }
                }
                _ => Err(reject(pc, "store through a register that is not the stack pointer")),
            }
        };
        let mut next = Some(pc + 1);
        match insn.opc & 0x07 {
            // ALU (32-bit) and ALU64.
            class @ (0x04 | 0x07) => {
                let is64 = class == 0x07;
                let op = insn.opc & 0xf0;
                let by_reg = insn.opc & 0x08 != 0;
                if insn.off != 0 || dst == 10 || op > 0xd0 {
                    return Err(reject(pc, "unsupported ALU instruction"));
                }
                if !by_reg && insn.src != 0 {
                    return Err(reject(pc, "unsupported ALU instruction"));
                }
                let srcv = if by_reg && op != 0xd0 { Some(read(&r, src)?) } else { None };
                r[dst] = match op {
                    0xb0 => match srcv {
                        None => Val::Scalar(Some(if is64 { insn.imm as i64 } else { insn.imm as u32 as i64 })),
                        Some(v) if is64 => v,
                        Some(Val::Scalar(k)) => Val::Scalar(k.map(|k| k as u32 as i64)),
                        Some(_) => Val::Ptr,
                    },
                    0xd0 => {
                        if is64 || !matches!(insn.imm, 16 | 32 | 64) {
                            return Err(reject(pc, "bad byte-swap instruction"));
                        }
                        match read(&r, dst)? {
                            Val::Scalar(_) => Val::Scalar(None),
                            _ => Val::Ptr,
                        }
                    }
                    0x80 if by_reg => return Err(reject(pc, "bad NEG instruction")),
                    _ => {
                        if matches!(op, 0x30 | 0x90) && !by_reg && insn.imm == 0 {
                            return Err(reject(pc, "division by constant zero"));
                        }
                        let d = read(&r, dst)?;
                        match (d, srcv) {
                            (Val::Stack(o), None) if is64 && op == 0x00 => Val::Stack(o + insn.imm as i64),
                            (Val::Stack(o), None) if is64 && op == 0x10 => Val::Stack(o - insn.imm as i64),
                            (d, s) if d.is_pointer() || s.is_some_and(Val::is_pointer) => Val::Ptr,
                            _ => Val::Scalar(None),
                        }
                    }
                };
            }
            // LDX: register = *(size *)(base + off).
            0x01 => {
                if !matches!(insn.opc, 0x61 | 0x69 | 0x71 | 0x79) || dst == 10 || insn.imm != 0 {
                    return Err(reject(pc, "unsupported load instruction"));
                }
                let size = size_of_ldst(insn.opc);
                match read(&r, src)? {
                    Val::Ctx => {
                        let off = insn.off as i64;
                        if off < 0 || off + size > CTX_VISIBLE as i64 || off % size != 0 {
                            return Err(reject(pc, "context access out of bounds or misaligned"));
                        }
                    }
                    base @ Val::Stack(_) => stack_range(base, insn.off, size)?,
                    _ => return Err(reject(pc, "load through a register that is not a pointer")),
                }
                r[dst] = Val::Scalar(None);
            }
            // ST (immediate) and STX (register) into the stack only.
            0x02 | 0x03 => {
                let ok = matches!(insn.opc, 0x62 | 0x6a | 0x72 | 0x7a | 0x63 | 0x6b | 0x73 | 0x7b);
                if !ok || (insn.opc & 0x07 == 0x02 && insn.src != 0) {
                    return Err(reject(pc, "unsupported store instruction"));
                }
                if insn.opc & 0x07 == 0x03 {
                    read(&r, src)?;
                }
                stack_range(read(&r, dst)?, insn.off, size_of_ldst(insn.opc))?;
            }
            // LD: 16-byte immediate, LD_ABS, LD_IND.
            0x00 => match insn.opc {
                0x18 => {
                    let hi = insns[pc + 1];
                    if insn.src != 0 {
                        return Err(reject(pc, "maps and map values are not supported"));
                    }
                    if hi.opc != 0 || hi.dst != 0 || hi.src != 0 || hi.off != 0 || dst == 10 {
                        return Err(reject(pc, "malformed 16-byte load"));
                    }
                    let v = (insn.imm as u32 as u64) | ((hi.imm as u32 as u64) << 32);
                    r[dst] = Val::Scalar(Some(v as i64));
                    next = Some(pc + 2);
                }
                0x20 | 0x28 | 0x30 | 0x40 | 0x48 | 0x50 => {
                    if r[6] != Val::Ctx {
                        return Err(reject(pc, "LD_ABS/LD_IND need the context in r6"));
                    }
                    let ind = insn.opc >= 0x40;
                    if ind {
                        if !matches!(read(&r, src)?, Val::Scalar(_)) {
                            return Err(reject(pc, "LD_IND offset register is not a scalar"));
                        }
                    } else if insn.src != 0 {
                        return Err(reject(pc, "malformed LD_ABS"));
                    }
                    if insn.dst != 0 || insn.off != 0 {
                        return Err(reject(pc, "malformed packet load"));
                    }
                    let size = match insn.opc & 0x18 {
                        0x00 => 4,
                        0x08 => 2,
                        _ => 1,
                    };
                    plans[pc] = Plan::LoadPacket { size, ind: ind.then_some(insn.src), imm: insn.imm };
                    clobber_call(&mut r);
                }
                _ => return Err(reject(pc, "unsupported LD instruction")),
            },
            // JMP and JMP32.
            class @ (0x05 | 0x06) => {
                let op = insn.opc & 0xf0;
                let jmp64 = class == 0x05;
                match op {
                    0x00 if jmp64 && insn.opc == 0x05 => {
                        next = None;
                        flow(&mut states, pc, jump_target(pc, insn.off)?, &r)?;
                    }
                    0x80 if jmp64 && insn.opc == 0x85 => {
                        if insn.src != 0 {
                            return Err(reject(pc, "BPF-to-BPF calls are not supported"));
                        }
                        if insn.imm != HELPER_SKB_LOAD_BYTES {
                            return Err(reject(pc, "unsupported helper (only bpf_skb_load_bytes, 26)"));
                        }
                        let len = check_load_bytes(&r, pc)?;
                        plans[pc] = Plan::LoadBytes { len };
                        clobber_call(&mut r);
                    }
                    0x90 if jmp64 && insn.opc == 0x95 => {
                        if !matches!(r[0], Val::Scalar(_)) {
                            return Err(reject(pc, "r0 is not a number at exit"));
                        }
                        next = None;
                    }
                    0x10..=0x70 | 0xa0..=0xd0 => {
                        if insn.opc & 0x08 == 0 && insn.src != 0 {
                            return Err(reject(pc, "malformed conditional jump"));
                        }
                        read(&r, dst)?;
                        if insn.opc & 0x08 != 0 {
                            read(&r, src)?;
                        }
                        flow(&mut states, pc, jump_target(pc, insn.off)?, &r)?;
                    }
                    _ => return Err(reject(pc, "unsupported jump instruction")),
                }
            }
            _ => unreachable!("three-bit class"),
        }
        if let Some(to) = next {
            flow(&mut states, pc, to, &r)?;
        }
    }
    Ok(plans)
}

/// Forward-only jumps: a back edge could loop, and there is no budget at run time.
fn jump_target(pc: usize, off: i16) -> Result<usize, BpfLoadError> {
    if off < 0 {
        return Err(reject(pc, "backward jump (loops are not supported)"));
    }
    Ok(pc + 1 + off as usize)
}

fn clobber_call(r: &mut Regs) {
    r[0] = Val::Scalar(None);
    for v in &mut r[1..=5] {
        *v = Val::Uninit;
    }
}

/// `bpf_skb_load_bytes(ctx, offset, stack buffer, constant len)`.
fn check_load_bytes(r: &Regs, pc: usize) -> Result<u16, BpfLoadError> {
    if r[1] != Val::Ctx {
        return Err(reject(pc, "bpf_skb_load_bytes: r1 is not the context"));
    }
    if !matches!(r[2], Val::Scalar(_)) {
        return Err(reject(pc, "bpf_skb_load_bytes: r2 is not a number"));
    }
    let Val::Scalar(Some(len)) = r[4] else {
        return Err(reject(pc, "bpf_skb_load_bytes: r4 must be a known constant"));
    };
    let Val::Stack(o) = r[3] else {
        return Err(reject(pc, "bpf_skb_load_bytes: r3 is not a stack buffer"));
    };
    if len <= 0 || len > STACK || o < -STACK || o + len > 0 {
        return Err(reject(pc, "bpf_skb_load_bytes: buffer out of stack bounds"));
    }
    Ok(len as u16)
}

/// Split `len` bytes into 8/4/2/1-byte pieces: (offset, LDX/STX size bits).
fn pieces(len: u16) -> impl Iterator<Item = (i16, u8, i64)> {
    let mut at = 0i64;
    core::iter::from_fn(move || {
        let left = len as i64 - at;
        let (bits, w) = match left {
            8.. => (0x18, 8),
            4..=7 => (0x00, 4),
            2..=3 => (0x08, 2),
            1 => (0x10, 1),
            _ => return None,
        };
        let p = (at as i16, bits, w);
        at += w;
        Some(p)
    })
}

fn expansion_len(plan: Plan) -> usize {
    match plan {
        Plan::Copy => 1,
        Plan::Tail => 1,
        Plan::LoadPacket { size, ind, .. } => (if ind.is_some() { 2 } else { 1 }) + 7 + usize::from(size > 1),
        Plan::LoadBytes { len } => {
            let k = pieces(len).count();
            7 + 2 * k + 2 + k + 1
        }
    }
}

fn rewrite(insns: &[Insn], plans: &[Plan]) -> Result<Vec<u8>, BpfLoadError> {
    let mut start = Vec::with_capacity(insns.len() + 1);
    let mut total = 0usize;
    for p in plans {
        start.push(total);
        total += expansion_len(*p);
    }
    // Shared trailer: an out-of-bounds LD_ABS ends the program returning 0.
    let oob = total;
    let jump_off = |from: usize, to: usize| -> Result<i16, BpfLoadError> {
        i16::try_from(to as i64 - from as i64 - 1).map_err(|_| reject(insns.len(), "program too large after rewriting"))
    };
    let mut out: Vec<Insn> = Vec::with_capacity(total + 2);
    for (pc, (&insn, &plan)) in insns.iter().zip(plans).enumerate() {
        debug_assert_eq!(out.len(), start[pc]);
        match plan {
            Plan::Copy if (insn.opc & 0x07 == 0x05 || insn.opc & 0x07 == 0x06) && !matches!(insn.opc, 0x85 | 0x95) => {
                let target = pc + 1 + insn.off as usize;
                let off = jump_off(out.len(), start[target])?;
                out.push(Insn { off, ..insn });
            }
            Plan::Copy | Plan::Tail => out.push(insn),
            Plan::LoadPacket { size, ind, imm } => {
                match ind {
                    Some(reg) => {
                        out.push(Insn::new(0xbc, 2, reg, 0, 0)); // w2 = wR
                        out.push(Insn::new(0x04, 2, 0, 0, imm)); // w2 += imm (u32 offset)
                    }
                    None => out.push(Insn::new(0xb4, 2, 0, 0, imm)), // w2 = imm
                }
                out.push(Insn::new(0x61, 3, 6, 0, 0)); // r3 = skb->len
                out.push(Insn::new(0xbf, 4, 2, 0, 0)); // r4 = r2
                out.push(Insn::new(0x07, 4, 0, 0, size as i32)); // r4 += size
                let off = jump_off(out.len(), oob)?;
                out.push(Insn::new(0x2d, 4, 3, off, 0)); // if r4 > r3 goto oob
                out.push(Insn::new(0x79, 1, 6, CTX_DATA as i16, 0)); // r1 = packet
                out.push(Insn::new(0x0f, 1, 2, 0, 0)); // r1 += r2
                let ldx = match size {
                    1 => 0x71,
                    2 => 0x69,
                    _ => 0x61,
                };
                out.push(Insn::new(ldx, 0, 1, 0, 0)); // r0 = *(size *)r1
                if size > 1 {
                    out.push(Insn::new(0xdc, 0, 0, 0, 8 * size as i32)); // r0 = be(r0)
                }
            }
            Plan::LoadBytes { len } => {
                let k = pieces(len).count();
                out.push(Insn::new(0xbc, 2, 2, 0, 0)); // w2 = w2 (u32 offset)
                out.push(Insn::new(0x61, 5, 1, 0, 0)); // r5 = skb->len
                out.push(Insn::new(0xbf, 0, 2, 0, 0)); // r0 = r2
                out.push(Insn::new(0x07, 0, 0, 0, len as i32)); // r0 += len
                                                                // if r0 > r5 goto fail (skip the copy block: 2 + 2k + 2 insns)
                out.push(Insn::new(0x2d, 0, 5, (2 + 2 * k + 2) as i16, 0));
                out.push(Insn::new(0x79, 1, 1, CTX_DATA as i16, 0)); // r1 = packet
                out.push(Insn::new(0x0f, 1, 2, 0, 0)); // r1 += r2
                for (at, bits, _) in pieces(len) {
                    out.push(Insn::new(0x61 | bits, 5, 1, at, 0)); // r5 = *(r1 + at)
                    out.push(Insn::new(0x63 | bits, 3, 5, at, 0)); // *(r3 + at) = r5
                }
                out.push(Insn::new(0xb7, 0, 0, 0, 0)); // r0 = 0
                out.push(Insn::new(0x05, 0, 0, (k + 1) as i16, 0)); // goto end
                                                                    // fail: zero the buffer, return -EFAULT (as the kernel does).
                for (at, bits, _) in pieces(len) {
                    out.push(Insn::new(0x62 | bits, 3, 0, at, 0));
                }
                out.push(Insn::new(0xb7, 0, 0, 0, -EFAULT));
            }
        }
    }
    debug_assert_eq!(out.len(), oob);
    out.push(Insn::new(0xb7, 0, 0, 0, 0)); // oob: r0 = 0
    out.push(Insn::new(0x95, 0, 0, 0, 0)); // exit
    let mut bytes = Vec::with_capacity(out.len() * 8);
    for i in &out {
        i.encode(&mut bytes);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(insns: &[Insn]) -> Vec<u8> {
        let mut v = Vec::new();
        for i in insns {
            i.encode(&mut v);
        }
        v
    }
    const EXIT: Insn = Insn::new(0x95, 0, 0, 0, 0);
    const R0_0: Insn = Insn::new(0xb7, 0, 0, 0, 0);

    fn reason(code: &[u8]) -> &'static str {
        match verify_and_rewrite(code) {
            Err(BpfLoadError::Verifier { reason, .. }) => reason,
            other => panic!("expected a verifier error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_minimal_and_thrift() {
        assert!(verify_and_rewrite(&prog(&[R0_0, EXIT])).is_ok());
        assert!(verify_and_rewrite(include_bytes!("../../bpf/thrift.bin")).is_ok());
    }

    #[test]
    fn rejects_unsafe_programs() {
        assert_eq!(reason(&prog(&[EXIT])), "r0 is not a number at exit");
        assert_eq!(
            reason(&prog(&[R0_0, Insn::new(0x05, 0, 0, -2, 0), EXIT])),
            "backward jump (loops are not supported)"
        );
        assert_eq!(reason(&prog(&[R0_0])), "control flow leaves the program");
        // r0 = *(u64 *)(r10 + 0): past the top of the stack.
        assert_eq!(reason(&prog(&[Insn::new(0x79, 0, 10, 0, 0), EXIT])), "stack access out of bounds");
        // r0 = *(u32 *)(r1 + 192): the hidden packet pointer is not visible.
        assert_eq!(reason(&prog(&[Insn::new(0x61, 0, 1, 192, 0), EXIT])), "context access out of bounds or misaligned");
        // r2 = 5; r0 = *(u8 *)(r2): arbitrary address.
        assert_eq!(
            reason(&prog(&[Insn::new(0xb7, 2, 0, 0, 5), Insn::new(0x71, 0, 2, 0, 0), EXIT])),
            "load through a register that is not a pointer"
        );
        // Store to the context.
        assert_eq!(
            reason(&prog(&[Insn::new(0x62, 1, 0, 0, 0), R0_0, EXIT])),
            "store through a register that is not the stack pointer"
        );
        // LD_ABS without the context in r6.
        assert_eq!(reason(&prog(&[Insn::new(0x20, 0, 0, 0, 0), EXIT])), "LD_ABS/LD_IND need the context in r6");
        // Helper other than 26; map load.
        assert_eq!(
            reason(&prog(&[Insn::new(0x85, 0, 0, 0, 1), EXIT])),
            "unsupported helper (only bpf_skb_load_bytes, 26)"
        );
        assert_eq!(
            reason(&prog(&[Insn::new(0x18, 1, 1, 0, 3), Insn::new(0, 0, 0, 0, 0), R0_0, EXIT])),
            "maps and map values are not supported"
        );
        // Read of an uninitialised register.
        assert_eq!(reason(&prog(&[Insn::new(0xbf, 0, 3, 0, 0), EXIT])), "read of an uninitialised register");
        // Helper 26 with a length that overruns the stack buffer.
        let call = [
            Insn::new(0xbf, 3, 10, 0, 0),
            Insn::new(0x07, 3, 0, 0, -4),
            Insn::new(0xb7, 2, 0, 0, 0),
            Insn::new(0xb7, 4, 0, 0, 8),
            Insn::new(0x85, 0, 0, 0, 26),
            EXIT,
        ];
        assert_eq!(reason(&prog(&call)), "bpf_skb_load_bytes: buffer out of stack bounds");
        // Unreachable code and jumps into LD_DW halves.
        assert_eq!(reason(&prog(&[R0_0, EXIT, EXIT])), "unreachable instruction");
        assert_eq!(
            reason(&prog(&[Insn::new(0x05, 0, 0, 1, 0), Insn::new(0x18, 0, 0, 0, 1), Insn::new(0, 0, 0, 0, 0), EXIT])),
            "jump into the middle of a 16-byte load"
        );
        assert!(verify_and_rewrite(&[0u8; 7]).is_err());
    }

    #[test]
    fn joins_lose_constants() {
        // r4 is 4 or 8 depending on a branch: not a known constant for helper 26.
        let p = [
            Insn::new(0x61, 2, 1, 0, 0),  // r2 = skb->len
            Insn::new(0xb7, 4, 0, 0, 4),  // r4 = 4
            Insn::new(0x15, 2, 0, 1, 0),  // if r2 == 0 skip
            Insn::new(0xb7, 4, 0, 0, 8),  // r4 = 8
            Insn::new(0xbf, 3, 10, 0, 0), // r3 = r10
            Insn::new(0x07, 3, 0, 0, -8), // r3 -= 8
            Insn::new(0xb7, 2, 0, 0, 0),  // r2 = 0
            Insn::new(0x85, 0, 0, 0, 26),
            EXIT,
        ];
        assert_eq!(reason(&prog(&p)), "bpf_skb_load_bytes: r4 must be a known constant");
    }
}
