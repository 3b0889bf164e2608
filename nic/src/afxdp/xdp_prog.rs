//! The XDP side: an XSKMAP, a five-instruction program that redirects each rx queue to
//! the socket in its map slot, and its attachment to the interface — all through `bpf(2)`
//! directly (no clang, libbpf or libxdp).
//!
//! The program is attached with `BPF_LINK_CREATE`: the link lives as long as its fd, so the
//! program detaches when we close it and also when the process dies, leaving no stale XDP
//! program on the device.
//!
//! One attachment serves every queue of an interface: ports on queues 0 and 1 of one device
//! share the program and its map (one slot per queue). A process-wide registry counts the
//! users per interface; the last one to leave closes the link.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use super::sys::{self, BpfInsn};
use super::{sys_err, XdpMode};
use crate::port::PortError;

/// Calls `bpf(cmd, attr, size_of(attr))`.
///
/// # Safety
/// `attr` must be the `bpf_attr` variant of `cmd`, and any pointers inside it must be
/// valid for the kernel to read (or write, for buffers) during the call.
unsafe fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: the caller guarantees `attr` matches `cmd`; size is the struct's own.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

fn fd_from(rc: i64) -> OwnedFd {
    // SAFETY: bpf() returned a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    for (d, b) in n.iter_mut().zip(s.bytes().take(15)) {
        *d = b;
    }
    n
}

/// Creates an XSKMAP with `entries` slots (key: queue index, value: XDP socket fd).
pub fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut attr = sys::MapCreateAttr {
        map_type: sys::BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name16("ukcm_xsks"),
        ..Default::default()
    };
    // SAFETY: MapCreateAttr is BPF_MAP_CREATE's attr; it holds no pointers.
    unsafe { bpf(sys::BPF_MAP_CREATE, &mut attr) }.map(fd_from)
}

/// Puts socket `xsk_fd` in slot `queue` of the map.
pub fn map_set(map: RawFd, queue: u32, xsk_fd: RawFd) -> io::Result<()> {
    let key = queue;
    let value = xsk_fd as u32;
    let mut attr = sys::MapElemAttr {
        map_fd: map as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: sys::BPF_ANY,
        ..Default::default()
    };
    // SAFETY: key and value outlive the call and have the map's key/value sizes.
    unsafe { bpf(sys::BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
}

/// Empties slot `queue` of the map (packets of that queue then go to the kernel stack).
pub fn map_clear(map: RawFd, queue: u32) -> io::Result<()> {
    let key = queue;
    let mut attr = sys::MapElemAttr { map_fd: map as u32, key: &key as *const u32 as u64, ..Default::default() };
    // SAFETY: key outlives the call and has the map's key size.
    unsafe { bpf(sys::BPF_MAP_DELETE_ELEM, &mut attr) }.map(drop)
}

/// `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`
///
/// The low bits of the flags argument are the action when the slot is empty, so queues
/// without a socket keep reaching the kernel stack.
pub fn redirect_program(map: RawFd) -> [BpfInsn; 6] {
    use sys::*;
    [
        // r2 = *(u32 *)(r1 + offsetof(struct xdp_md, rx_queue_index))
        BpfInsn::new(BPF_LDX | BPF_W | BPF_MEM, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        // r1 = &xsks (64-bit immediate over two slots; the kernel swaps the fd for the map)
        BpfInsn::new(BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, map),
        BpfInsn::new(0, 0, 0, 0, 0),
        // r3 = XDP_PASS (fallback action)
        BpfInsn::new(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, XDP_PASS),
        // r0 = bpf_redirect_map(r1, r2, r3)
        BpfInsn::new(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // return r0
        BpfInsn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    ]
}

/// Loads an XDP program; on rejection the error carries the verifier's log.
pub fn load_xdp(insns: &[BpfInsn]) -> io::Result<OwnedFd> {
    const LICENSE: &[u8] = b"Dual MIT/GPL\0";
    let mut attr = sys::ProgLoadAttr {
        prog_type: sys::BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        prog_name: name16("ukcm_xsk_redir"),
        expected_attach_type: sys::BPF_XDP,
        ..Default::default()
    };
    // SAFETY: insns and the license outlive the call; attr is BPF_PROG_LOAD's.
    match unsafe { bpf(sys::BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => Ok(fd_from(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(e),
        Err(e) => {
            // Load again with a log buffer so the error says why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            // SAFETY: as above; the log buffer is writable for log_size bytes during the call.
            let _ = unsafe { bpf(sys::BPF_PROG_LOAD, &mut attr) };
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(e.kind(), format!("{e}; verifier log: {}", text.trim())))
        }
    }
}

/// Attaches `prog` to `ifindex` with XDP `flags` (driver or skb mode); the program stays
/// attached while the returned link fd is open.
pub fn link_xdp(prog: RawFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = sys::LinkCreateAttr {
        prog_fd: prog as u32,
        target_ifindex: ifindex,
        attach_type: sys::BPF_XDP,
        flags,
        ..Default::default()
    };
    // SAFETY: LinkCreateAttr is BPF_LINK_CREATE's attr; it holds no pointers.
    unsafe { bpf(sys::BPF_LINK_CREATE, &mut attr) }.map(fd_from)
}

/// Largest peer MTU veth accepts for a native XDP program without frags support, with 4 KiB
/// pages on x86-64: `SKB_WITH_OVERHEAD(PAGE_SIZE - XDP_PACKET_HEADROOM) - ETH_HLEN`, i.e.
/// 4096 - 256 - 320 (`skb_shared_info`) - 14 (drivers/net/veth.c, `veth_xdp_set`).
pub const VETH_NATIVE_MAX_MTU: usize = 3506;

/// ERANGE from a native attach is a driver's MTU limit ("Peer MTU is too large to set XDP"
/// on veth, where the message goes to netlink's extack, which `bpf(2)` does not return).
fn explain_mtu_refusal(e: io::Error) -> io::Error {
    if e.raw_os_error() != Some(libc::ERANGE) {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!(
            "{e}: the driver refuses XDP at this MTU (veth: the peer's MTU must be at most \
             {VETH_NATIVE_MAX_MTU}, a page less XDP headroom and skb_shared_info)"
        ),
    )
}

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// On the generic skb path (`XDP_FLAGS_SKB_MODE`), for drivers without XDP.
    Generic,
}

impl Attached {
    /// "native" or "generic".
    pub fn as_str(self) -> &'static str {
        match self {
            Attached::Native => "native",
            Attached::Generic => "generic",
        }
    }
}

/// The program, its map and its link on one interface. Fields drop in order: the link
/// first (detach), then the program and the map.
#[derive(Debug)]
struct Attachment {
    _link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    mode: Attached,
    slots: u32,
    /// Queues held by a port of this process (one socket per queue).
    taken: Vec<bool>,
    users: usize,
}

impl Attachment {
    fn create(ifname: &str, ifindex: u32, slots: u32, want: XdpMode) -> Result<Self, PortError> {
        let map = create_xskmap(slots).map_err(|e| sys_err("bpf(BPF_MAP_CREATE XSKMAP)", e))?;
        let prog = load_xdp(&redirect_program(map.as_raw_fd())).map_err(|e| sys_err("bpf(BPF_PROG_LOAD XDP)", e))?;
        let try_mode = |flags| link_xdp(prog.as_raw_fd(), ifindex, flags).map_err(explain_mtu_refusal);
        let busy = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST));
        let already = |e: io::Error| {
            PortError::Unsupported(format!(
                "{ifname} already has an XDP program attached by someone else ({e}); \
                 remove it with `ip link set dev {ifname} xdp off`"
            ))
        };
        let (link, mode) = match want {
            XdpMode::Native => match try_mode(sys::XDP_FLAGS_DRV_MODE) {
                Ok(l) => (l, Attached::Native),
                Err(e) if busy(&e) => return Err(already(e)),
                Err(e) => return Err(sys_err("bpf(BPF_LINK_CREATE XDP driver mode)", e)),
            },
            XdpMode::Generic => match try_mode(sys::XDP_FLAGS_SKB_MODE) {
                Ok(l) => (l, Attached::Generic),
                Err(e) if busy(&e) => return Err(already(e)),
                Err(e) => return Err(sys_err("bpf(BPF_LINK_CREATE XDP generic mode)", e)),
            },
            XdpMode::Auto => match try_mode(sys::XDP_FLAGS_DRV_MODE) {
                Ok(l) => (l, Attached::Native),
                Err(e) if busy(&e) => return Err(already(e)),
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err(sys_err("bpf(BPF_LINK_CREATE XDP)", e)),
                Err(native) => match try_mode(sys::XDP_FLAGS_SKB_MODE) {
                    Ok(l) => {
                        tracing::info!(ifname, %native, "native XDP unavailable, using generic (skb) mode");
                        (l, Attached::Generic)
                    }
                    Err(e) if busy(&e) => return Err(already(e)),
                    Err(e) => {
                        let err = io::Error::new(e.kind(), format!("generic mode: {e}; native mode: {native}"));
                        return Err(sys_err("bpf(BPF_LINK_CREATE XDP)", err));
                    }
                },
            },
        };
        Ok(Attachment { _link: link, _prog: prog, map, mode, slots, taken: vec![false; slots as usize], users: 0 })
    }
}

/// An interface across namespaces: (network namespace inode, ifindex). Ifindexes are only
/// unique within a namespace, and a thread may open ports after `setns`.
type DevKey = (u64, u32);

fn dev_key(ifindex: u32) -> DevKey {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()).unwrap_or(0);
    (ns, ifindex)
}

/// Attachments by interface, with their user counts.
static REGISTRY: Mutex<Option<HashMap<DevKey, Attachment>>> = Mutex::new(None);

fn registry() -> std::sync::MutexGuard<'static, Option<HashMap<DevKey, Attachment>>> {
    // A panic while holding the lock leaves the map consistent (every update is one call).
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// One queue's use of its interface's XDP attachment. Dropping it empties the queue's map
/// slot and, for the last user of the interface, detaches the program.
#[derive(Debug)]
pub struct XdpQueue {
    key: DevKey,
    queue: u32,
    mode: Attached,
    inserted: bool,
}

impl XdpQueue {
    /// Joins (or creates) the attachment on `ifindex`, for `queue` of `slots` queues.
    pub fn acquire(ifname: &str, ifindex: u32, queue: u32, slots: u32, want: XdpMode) -> Result<Self, PortError> {
        let key = dev_key(ifindex);
        let mut reg = registry();
        let map = reg.get_or_insert_with(HashMap::new);
        let a = match map.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Attachment::create(ifname, ifindex, slots, want)?),
        };
        let fits = matches!(
            (want, a.mode),
            (XdpMode::Auto, _) | (XdpMode::Native, Attached::Native) | (XdpMode::Generic, Attached::Generic)
        );
        let why = if !fits {
            Some(format!("{ifname} already runs ukcm's XDP program in {} mode, {want:?} was asked", a.mode.as_str()))
        } else if queue >= a.slots {
            Some(format!("queue {queue} out of range: {ifname} has {} rx queues", a.slots))
        } else if a.taken[queue as usize] {
            Some(format!("queue {queue} of {ifname} already has an AF_XDP socket (another ukcm port)"))
        } else {
            None
        };
        if let Some(why) = why {
            if a.users == 0 {
                map.remove(&key);
            }
            return Err(PortError::Unsupported(why));
        }
        a.users += 1;
        a.taken[queue as usize] = true;
        Ok(XdpQueue { key, queue, mode: a.mode, inserted: false })
    }

    /// Directs this queue's packets to the XDP socket `xsk_fd`.
    pub fn insert(&mut self, xsk_fd: RawFd) -> Result<(), PortError> {
        let reg = registry();
        let a = reg.as_ref().and_then(|m| m.get(&self.key)).expect("held by self");
        map_set(a.map.as_raw_fd(), self.queue, xsk_fd).map_err(|e| sys_err("bpf(BPF_MAP_UPDATE_ELEM XSKMAP)", e))?;
        self.inserted = true;
        Ok(())
    }

    /// Where the program runs.
    pub fn mode(&self) -> Attached {
        self.mode
    }
}

impl Drop for XdpQueue {
    fn drop(&mut self) {
        let mut reg = registry();
        let Some(map) = reg.as_mut() else { return };
        let Some(a) = map.get_mut(&self.key) else { return };
        if self.inserted {
            let _ = map_clear(a.map.as_raw_fd(), self.queue);
        }
        a.taken[self.queue as usize] = false;
        a.users -= 1;
        if a.users == 0 {
            // Closing the link detaches the program (under the lock, so a concurrent
            // acquire never races a half-detached program).
            map.remove(&self.key);
        }
    }
}

/// Whether the interface (in the calling thread's namespace) has ukcm's attachment in
/// this process.
pub fn attached_here(ifindex: u32) -> Option<Attached> {
    registry().as_ref().and_then(|m| m.get(&dev_key(ifindex))).map(|a| a.mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_is_the_expected_six_slots() {
        let p = redirect_program(42);
        assert_eq!(p[0], BpfInsn { code: 0x61, regs: 0x12, off: 16, imm: 0 });
        assert_eq!(p[1], BpfInsn { code: 0x18, regs: 0x11, off: 0, imm: 42 });
        assert_eq!(p[3], BpfInsn { code: 0xb7, regs: 0x03, off: 0, imm: 2 });
        assert_eq!(p[4], BpfInsn { code: 0x85, regs: 0, off: 0, imm: 51 });
        assert_eq!(p[5].code, 0x95);
    }

    #[test]
    fn verifier_accepts_the_program() {
        if !crate::testnet::privileged_or_skip("verifier_accepts_the_program") {
            return;
        }
        let map = create_xskmap(4).unwrap();
        load_xdp(&redirect_program(map.as_raw_fd())).unwrap();
    }

    #[test]
    fn a_broken_program_error_carries_the_verifier_log() {
        if !crate::testnet::privileged_or_skip("a_broken_program_error_carries_the_verifier_log") {
            return;
        }
        // r0 is never set before exit: the verifier must refuse it.
        let bad = [BpfInsn::new(sys::BPF_JMP | sys::BPF_EXIT, 0, 0, 0, 0)];
        let err = load_xdp(&bad).unwrap_err();
        assert!(err.to_string().contains("verifier log"), "{err}");
        assert!(err.to_string().contains("R0"), "{err}");
    }
}
