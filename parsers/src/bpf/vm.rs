//! The rbpf VM holding a rewritten program, and the only `unsafe` code in
//! this crate: running rbpf's JIT output, and declaring the VM `Send`/`Sync`.
//! Kept tiny so the soundness argument is local.
#![allow(unsafe_code)]

use super::verify::CTX_SIZE;

type Vm<'a> = rbpf::EbpfVmMbuff<'a>;

self_cell::self_cell!(
    /// The rewritten instructions and the rbpf VM that borrows them.
    struct VmCell {
        owner: Vec<u8>,
        #[covariant]
        dependent: Vm,
    }
);

/// A loaded rbpf VM, optionally JIT-compiled.
pub(super) struct LoadedVm {
    cell: VmCell,
    jitted: bool,
}

// SAFETY: `EbpfVmMbuff` is not auto-Send/Sync only because rbpf's
// `StackVerifier` holds an `Option<Box<dyn Any>>` for user data, which stays
// `None` here (we never install a stack-usage calculator). The other fields
// are borrowed instruction bytes, fn pointers, hash sets/maps of those, and
// the JIT's executable buffer, owned by the VM and not mutated after
// `jit_compile`. Running a program takes `&self` and mutates nothing in the
// VM, so sharing it between threads is sound.
unsafe impl Send for LoadedVm {}
// SAFETY: as for `Send` above.
unsafe impl Sync for LoadedVm {}

impl LoadedVm {
    /// Hand the rewritten program to rbpf (its verifier runs too) and JIT it
    /// if asked and available.
    pub(super) fn new(prog: Vec<u8>, jit: bool) -> Result<Self, String> {
        let mut cell = VmCell::try_new(prog, |p| Vm::new(Some(p))).map_err(|e| e.to_string())?;
        let jitted = jit && cfg!(all(target_arch = "x86_64", unix));
        if jitted {
            cell.with_dependent_mut(|_, vm| vm.jit_compile()).map_err(|e| e.to_string())?;
        }
        Ok(LoadedVm { cell, jitted })
    }

    pub(super) fn jitted(&self) -> bool {
        self.jitted
    }

    pub(super) fn insns(&self) -> usize {
        self.cell.borrow_owner().len() / 8
    }

    /// Run with `ctx` as the context (r1). The packet is `pkt`, whose address
    /// the caller stored in `ctx`; the rewritten program reads it through that
    /// pointer after a bounds check against `skb->len <= pkt.len()`.
    pub(super) fn run(&self, pkt: &[u8], ctx: &mut [u8; CTX_SIZE]) -> Option<u64> {
        let vm = self.cell.borrow_dependent();
        if !self.jitted {
            // The interpreter checks every access against pkt, ctx and its stack.
            return vm.execute_program(pkt, ctx).ok();
        }
        let mut no_mem: [u8; 0] = [];
        // SAFETY: rbpf's JIT code does no checks of its own, so soundness rests
        // on the program, which `verify::verify_and_rewrite` made safe before
        // rbpf saw it: all jumps go forward (it terminates); it calls no
        // helper; it reads the context only within `ctx` (CTX_SIZE bytes,
        // exclusively borrowed for this call) and never writes it; every stack
        // access has a constant offset checked against the 512-byte frame the
        // JIT reserves; packet loads go through the pointer our caller stored
        // at CTX_DATA, after checking offset + size <= skb->len, and skb->len
        // is at most `pkt.len()`, which stays borrowed across this call.
        // Division by zero is handled by the JIT's own code.
        unsafe { vm.execute_program_jit(&mut no_mem, ctx) }.ok()
    }
}
