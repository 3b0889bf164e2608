//! Which UMEM chunk size an interface MTU needs, and the largest MTU a chunk holds.
//!
//! A received frame lands [`XDP_PACKET_HEADROOM`] bytes into its chunk (copy mode, and the
//! drivers' zero-copy paths), a transmitted one starts after the pool's headroom, so an
//! Ethernet frame of `mtu + 14` bytes must fit in `chunk - max(256, pool headroom)`.
//!
//! Aligned AF_XDP chunks are powers of two from 2048 up to a page (4096) in ordinary memory.
//! Since Linux 6.6 (`xdp_umem_reg`, "xsk: Support UMEM chunk_size > PAGE_SIZE") a UMEM
//! backed by hugetlb pages may use chunks up to 64 KiB (`XDP_UMEM_MAX_CHUNK_SIZE`): that is
//! what a jumbo MTU needs, since one frame must fit one chunk (copy mode copies even a
//! multi-buffer XDP packet into one chunk when it fits, and needs no `XDP_USE_SG` then).

use super::sys::XDP_PACKET_HEADROOM;

/// Ethernet header bytes in front of the IP MTU (no VLAN tag).
pub const ETH_HLEN: usize = 14;
/// The largest chunk in page-backed memory.
pub const PAGE_CHUNK: usize = 4096;
/// The smallest chunk AF_XDP takes.
pub const MIN_CHUNK: usize = 2048;
/// The largest chunk AF_XDP takes (hugepage-backed UMEM only, Linux ≥ 6.6).
pub const MAX_CHUNK: usize = 65536;

/// The largest IP MTU whose frames fit a `chunk`-byte chunk both ways, with the pool
/// keeping `pool_headroom` bytes in front of transmitted frames.
pub fn max_mtu(chunk: usize, pool_headroom: usize) -> usize {
    chunk.saturating_sub(XDP_PACKET_HEADROOM.max(pool_headroom) + ETH_HLEN)
}

/// The largest chunk usable over memory with (`huge`) or without hugepages.
pub fn largest_chunk(huge: bool) -> usize {
    if huge {
        MAX_CHUNK
    } else {
        PAGE_CHUNK
    }
}

/// The smallest chunk, at least `min` (rounded up to a power of two, and to 2048), whose
/// frames hold `mtu`; `None` if even the largest allowed (see [`largest_chunk`]) does not.
pub fn chunk_for_mtu(mtu: usize, pool_headroom: usize, min: usize, huge: bool) -> Option<usize> {
    let mut chunk = min.max(MIN_CHUNK).next_power_of_two();
    while chunk <= largest_chunk(huge) {
        if max_mtu(chunk, pool_headroom) >= mtu {
            return Some(chunk);
        }
        chunk *= 2;
    }
    None
}

/// Whether AF_XDP takes `chunk`-byte aligned chunks over memory with or without hugepages.
pub fn chunk_allowed(chunk: usize, huge: bool) -> bool {
    chunk.is_power_of_two() && (MIN_CHUNK..=largest_chunk(huge)).contains(&chunk)
}

/// What to do about an MTU too large for the chunks we may use: the exact largest MTU,
/// and how to go past it.
pub fn too_large(ifname: &str, mtu: usize, pool_headroom: usize, huge: bool) -> String {
    let chunk = largest_chunk(huge);
    let max = max_mtu(chunk, pool_headroom);
    let memory = if huge {
        "the largest AF_XDP chunk".to_owned()
    } else {
        "the largest AF_XDP chunk without hugepages".to_owned()
    };
    let mut s = format!(
        "MTU {mtu} of {ifname} is too large for AF_XDP here: the largest is {max} ({chunk}-byte UMEM chunks, \
         {memory}, less {} bytes of headroom and the {ETH_HLEN}-byte Ethernet header); \
         lower it with `ip link set dev {ifname} mtu {max}` (and its peer's)",
        XDP_PACKET_HEADROOM.max(pool_headroom)
    );
    if !huge {
        s.push_str(
            ", or give the UMEM 2 MiB hugepages (scripts/hugepages.sh reserve, and a hugepage-preferring \
             pool) for chunks up to 64 KiB on Linux >= 6.6",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_mtus_per_chunk() {
        assert_eq!(max_mtu(2048, 256), 1778);
        assert_eq!(max_mtu(4096, 256), 3826);
        assert_eq!(max_mtu(4096, 512), 3570, "a larger pool headroom is the limit");
        assert_eq!(max_mtu(16384, 256), 16114);
    }

    #[test]
    fn the_smallest_chunk_that_holds_the_mtu_is_chosen() {
        assert_eq!(chunk_for_mtu(1500, 256, 2048, false), Some(2048));
        assert_eq!(chunk_for_mtu(1778, 256, 2048, false), Some(2048));
        assert_eq!(chunk_for_mtu(1779, 256, 2048, false), Some(4096));
        assert_eq!(chunk_for_mtu(3500, 256, 2048, false), Some(4096));
        assert_eq!(chunk_for_mtu(1500, 256, 4096, false), Some(4096), "never below the configured size");
        assert_eq!(chunk_for_mtu(3827, 256, 2048, false), None);
        assert_eq!(chunk_for_mtu(9000, 256, 2048, false), None);
        assert_eq!(chunk_for_mtu(9000, 256, 2048, true), Some(16384));
        assert_eq!(chunk_for_mtu(65535, 256, 2048, true), None);
    }

    #[test]
    fn allowed_chunks() {
        assert!(chunk_allowed(2048, false) && chunk_allowed(4096, false));
        assert!(!chunk_allowed(8192, false) && chunk_allowed(8192, true) && chunk_allowed(65536, true));
        assert!(!chunk_allowed(3000, true) && !chunk_allowed(1024, true) && !chunk_allowed(131072, true));
    }

    #[test]
    fn the_refusal_names_the_largest_mtu_and_what_to_do() {
        let m = too_large("veth0", 9000, 256, false);
        assert!(m.contains("MTU 9000 of veth0"), "{m}");
        assert!(m.contains("the largest is 3826"), "{m}");
        assert!(m.contains("ip link set dev veth0 mtu 3826"), "{m}");
        assert!(m.contains("hugepages"), "{m}");
        let h = too_large("veth0", 65535, 256, true);
        assert!(h.contains("the largest is 65266"), "{h}");
    }
}
