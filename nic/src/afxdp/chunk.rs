//! Which UMEM chunk size an interface MTU needs, and the largest MTU a chunk holds.
//!
//! A received frame lands [`XDP_PACKET_HEADROOM`] bytes into its chunk (copy mode, and the
//! drivers' zero-copy paths), a transmitted one starts after the pool's headroom, so an
//! Ethernet frame of `mtu + 14` bytes must fit in `chunk - max(256, pool headroom)`.
//!
//! Aligned AF_XDP chunks are 2048 or 4096 bytes: `xdp_umem_reg` (net/xdp/xdp_umem.c)
//! returns EINVAL for `chunk_size > PAGE_SIZE`, hugepage memory or not (measured on Linux
//! 6.18; the "xsk: Support UMEM chunk_size > PAGE_SIZE" series reached bpf-next in 2023 but
//! the check is in the released kernels). So one frame per chunk ends at MTU 3826; past it
//! only multi-buffer AF_XDP (`XDP_USE_SG`, a frame over several chunks) would do, which
//! this port does not implement.

use super::sys::XDP_PACKET_HEADROOM;

/// Ethernet header bytes in front of the IP MTU (no VLAN tag).
pub const ETH_HLEN: usize = 14;
/// The smallest chunk AF_XDP takes.
pub const MIN_CHUNK: usize = 2048;
/// The largest chunk AF_XDP takes: a page.
pub const MAX_CHUNK: usize = 4096;

/// The largest IP MTU whose frames fit a `chunk`-byte chunk both ways, with the pool
/// keeping `pool_headroom` bytes in front of transmitted frames.
pub fn max_mtu(chunk: usize, pool_headroom: usize) -> usize {
    chunk.saturating_sub(XDP_PACKET_HEADROOM.max(pool_headroom) + ETH_HLEN)
}

/// The smallest chunk, at least `min` (rounded up to a power of two, and to 2048), whose
/// frames hold `mtu`; `None` if not even [`MAX_CHUNK`] does.
pub fn chunk_for_mtu(mtu: usize, pool_headroom: usize, min: usize) -> Option<usize> {
    let mut chunk = min.max(MIN_CHUNK).next_power_of_two();
    while chunk <= MAX_CHUNK {
        if max_mtu(chunk, pool_headroom) >= mtu {
            return Some(chunk);
        }
        chunk *= 2;
    }
    None
}

/// Whether AF_XDP takes `chunk`-byte aligned chunks.
pub fn chunk_allowed(chunk: usize) -> bool {
    chunk == MIN_CHUNK || chunk == MAX_CHUNK
}

/// What to do about an MTU too large for any chunk: the exact largest MTU, and why.
pub fn too_large(ifname: &str, mtu: usize, pool_headroom: usize) -> String {
    let max = max_mtu(MAX_CHUNK, pool_headroom);
    format!(
        "MTU {mtu} of {ifname} is too large for AF_XDP here: the largest is {max} ({MAX_CHUNK}-byte UMEM chunks, \
         the largest the kernel takes, less {} bytes of headroom and the {ETH_HLEN}-byte Ethernet header; \
         a larger frame would span several chunks, which needs multi-buffer AF_XDP, not implemented); \
         lower it with `ip link set dev {ifname} mtu {max}` (and its peer's)",
        XDP_PACKET_HEADROOM.max(pool_headroom)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_mtus_per_chunk() {
        assert_eq!(max_mtu(2048, 256), 1778);
        assert_eq!(max_mtu(4096, 256), 3826);
        assert_eq!(max_mtu(4096, 512), 3570, "a larger pool headroom is the limit");
        assert_eq!(max_mtu(4096, 128), 3826, "XDP's own headroom is the floor");
    }

    #[test]
    fn the_smallest_chunk_that_holds_the_mtu_is_chosen() {
        assert_eq!(chunk_for_mtu(1500, 256, 2048), Some(2048));
        assert_eq!(chunk_for_mtu(1778, 256, 2048), Some(2048));
        assert_eq!(chunk_for_mtu(1779, 256, 2048), Some(4096));
        assert_eq!(chunk_for_mtu(3500, 256, 2048), Some(4096));
        assert_eq!(chunk_for_mtu(1500, 256, 4096), Some(4096), "never below the configured size");
        assert_eq!(chunk_for_mtu(3827, 256, 2048), None);
        assert_eq!(chunk_for_mtu(9000, 256, 2048), None);
    }

    #[test]
    fn allowed_chunks() {
        assert!(chunk_allowed(2048) && chunk_allowed(4096));
        assert!(!chunk_allowed(1024) && !chunk_allowed(3000) && !chunk_allowed(8192));
    }

    #[test]
    fn the_refusal_names_the_largest_mtu_and_what_to_do() {
        let m = too_large("veth0", 9000, 256);
        assert!(m.contains("MTU 9000 of veth0"), "{m}");
        assert!(m.contains("the largest is 3826"), "{m}");
        assert!(m.contains("ip link set dev veth0 mtu 3826"), "{m}");
        assert!(m.contains("multi-buffer"), "{m}");
    }
}
