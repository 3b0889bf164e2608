//! Kernel ABI the `libc` crate does not carry: `bpf(2)` commands and their `bpf_attr`
//! variants, eBPF instruction encoding, XDP attach flags and a few socket options.
//!
//! Values are from the uapi headers (`linux/bpf.h`, `linux/if_link.h`,
//! `asm-generic/socket.h`). Each `bpf_attr` variant is its own `#[repr(C)]` struct; the
//! kernel zero-fills whatever lies past the size we pass, so a variant never has to spell
//! out the fields it leaves at zero.

#![allow(missing_docs)]

// bpf(2) commands (enum bpf_cmd).
pub const BPF_MAP_CREATE: u32 = 0;
pub const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub const BPF_MAP_DELETE_ELEM: u32 = 3;
pub const BPF_PROG_LOAD: u32 = 5;
pub const BPF_LINK_CREATE: u32 = 28;

/// enum bpf_map_type: BPF_MAP_TYPE_XSKMAP.
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// enum bpf_prog_type: BPF_PROG_TYPE_XDP.
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// enum bpf_attach_type: BPF_XDP.
pub const BPF_XDP: u32 = 37;
/// Flag for map updates: create or replace.
pub const BPF_ANY: u64 = 0;

// XDP attach flags (linux/if_link.h).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// XDP action: hand the packet to the kernel stack (also `bpf_redirect_map`'s fallback).
pub const XDP_PASS: i32 = 2;
/// Bytes the kernel keeps in front of packet data in each UMEM chunk (copy mode and most
/// drivers): rx descriptors point `XDP_PACKET_HEADROOM + umem headroom` into the chunk.
pub const XDP_PACKET_HEADROOM: usize = 256;

// Socket options for busy polling (asm-generic/socket.h), not all in every libc version.
pub const SO_BUSY_POLL: i32 = 46;
pub const SO_PREFER_BUSY_POLL: i32 = 69;
pub const SO_BUSY_POLL_BUDGET: i32 = 70;

/// `bpf_attr` for BPF_MAP_CREATE.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
    pub numa_node: u32,
    pub map_name: [u8; 16],
}

/// `bpf_attr` for BPF_MAP_UPDATE_ELEM / BPF_MAP_DELETE_ELEM.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MapElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

/// `bpf_attr` for BPF_PROG_LOAD (up to `expected_attach_type`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; 16],
    pub prog_ifindex: u32,
    pub expected_attach_type: u32,
}

/// `bpf_attr` for BPF_LINK_CREATE (the XDP variant has no extra fields; the trailing
/// zeros stand for the union the kernel expects to be zero).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkCreateAttr {
    pub prog_fd: u32,
    pub target_ifindex: u32,
    pub attach_type: u32,
    pub flags: u32,
    pub _zero: [u64; 4],
}

/// One eBPF instruction (`struct bpf_insn`): opcode, dst/src registers in one byte, offset,
/// immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl BpfInsn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        BpfInsn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
    }
}

// Opcode pieces (linux/bpf_common.h, linux/bpf.h).
pub const BPF_LDX: u8 = 0x01;
pub const BPF_LD: u8 = 0x00;
pub const BPF_JMP: u8 = 0x05;
pub const BPF_ALU64: u8 = 0x07;
pub const BPF_W: u8 = 0x00;
pub const BPF_DW: u8 = 0x18;
pub const BPF_MEM: u8 = 0x60;
pub const BPF_IMM: u8 = 0x00;
pub const BPF_MOV: u8 = 0xb0;
pub const BPF_K: u8 = 0x00;
pub const BPF_CALL: u8 = 0x80;
pub const BPF_EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load meaning "the immediate is a map fd".
pub const BPF_PSEUDO_MAP_FD: u8 = 1;
/// Helper id of `bpf_redirect_map`.
pub const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// Offset of `rx_queue_index` in `struct xdp_md`.
pub const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_uapi_offsets() {
        assert_eq!(std::mem::offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(MapElemAttr, value), 16);
        assert_eq!(std::mem::size_of::<BpfInsn>(), 8);
        assert!(std::mem::size_of::<LinkCreateAttr>() <= 144);
    }

    #[test]
    fn registers_pack_dst_low_src_high() {
        let i = BpfInsn::new(BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, 7);
        assert_eq!(i.code, 0x18);
        assert_eq!(i.regs, 0x11);
    }
}
