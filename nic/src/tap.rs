//! TAP port: Ethernet frames through `/dev/net/tun` (`IFF_TAP | IFF_NO_PI`).
//!
//! The slowest backend (one `read`/`write` system call per frame, and the kernel copies
//! each frame), but the one that works everywhere without XDP support: the dev loop and
//! the fallback. Frames are read straight into pool frames (`read` into
//! [`Frame::room_mut`]) and written straight from them, so the pool and the `Port`
//! contract are the same as for AF_XDP.
//!
//! A port creates the device or attaches to an existing one (a persistent TAP made by
//! `scripts/tap.sh`). With `queues > 1` the device is multi-queue (`IFF_MULTI_QUEUE`) and
//! [`TapPort::open_queues`] returns one port per queue file descriptor, each with a pool of
//! its own, for one engine per queue. A device this process created disappears when its
//! last queue is closed; a persistent one stays.
//!
//! The TAP has no MAC of its own on our side (the kernel's end has one; the stack picks
//! its own), so [`PortCaps::mac`] is `None`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::pool::{FramePool, PoolConfig};
use crate::port::{CopyMode, Port, PortCaps, PortError, PortStats};
use crate::region::{HugePolicy, LockPolicy, PinnedBudget};
use crate::Frame;

const TUN_PATH: &CStr = c"/dev/net/tun";
/// Longest interface name (IFNAMSIZ without the NUL).
pub const MAX_IFNAME: usize = libc::IFNAMSIZ - 1;

/// How to open a TAP device.
#[derive(Debug, Clone)]
pub struct TapConfig {
    /// Interface name (at most 15 bytes); empty lets the kernel pick `tapN`.
    pub name: String,
    /// Queues: 1 for a plain TAP, more for a multi-queue one (see [`TapPort::open_queues`]).
    pub queues: u32,
    /// Each port's frame pool.
    pub pool: PoolConfig,
    /// IP MTU to set on the device; `None` keeps the device's (1500 for a new TAP).
    pub mtu: Option<usize>,
    /// Fail instead of creating the device if it does not exist (attach to a TAP made by
    /// `scripts/tap.sh`).
    pub must_exist: bool,
}

impl Default for TapConfig {
    fn default() -> Self {
        TapConfig {
            name: String::new(),
            queues: 1,
            pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 1024 },
            mtu: None,
            must_exist: false,
        }
    }
}

/// One queue of a TAP device.
#[derive(Debug)]
pub struct TapPort {
    fd: OwnedFd,
    name: String,
    pool: FramePool,
    mtu: usize,
    queues: u32,
    queue_id: u32,
    created: bool,
    stats: PortStats,
}

fn bad_name(name: &str) -> Option<&'static str> {
    if name.len() > MAX_IFNAME {
        Some("longer than 15 bytes (IFNAMSIZ)")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace()) {
        Some("contains '/', ':', NUL or whitespace")
    } else {
        None
    }
}

fn os_err(op: &'static str, name: &str, e: io::Error) -> PortError {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => " (needs root or CAP_NET_ADMIN)",
        Some(libc::EBUSY) => " (the device is busy: attached elsewhere, or its queue flags differ)",
        Some(libc::EINVAL) => " (an existing device of that name that is not a TAP with these flags?)",
        _ => "",
    };
    PortError::Io { op, err: io::Error::new(e.kind(), format!("TAP {name}: {e}{hint}")) }
}

/// An `ifreq` naming `name`.
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers and
    // sockaddrs); all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes().take(MAX_IFNAME)) {
        *dst = src as libc::c_char;
    }
    ifr
}

fn ifr_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A socket for interface ioctls (flags, MTU) in the caller's namespace.
fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs an interface ioctl that reads or writes `ifr`.
fn if_ioctl(sock: &OwnedFd, req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request used here (SIOC[GS]IFFLAGS, SIOC[GS]IFMTU) takes a pointer to
    // an ifreq, which lives for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), req as _, ifr as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the MTU (if asked), brings the interface up, and returns its MTU.
fn configure(name: &str, mtu: Option<usize>) -> Result<usize, PortError> {
    let sock = ctl_socket().map_err(|e| os_err("socket for interface ioctls", name, e))?;
    if let Some(m) = mtu {
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_mtu = m as libc::c_int;
        if_ioctl(&sock, libc::SIOCSIFMTU, &mut ifr).map_err(|e| os_err("SIOCSIFMTU", name, e))?;
    }
    let mut ifr = ifreq(name);
    if_ioctl(&sock, libc::SIOCGIFFLAGS, &mut ifr).map_err(|e| os_err("SIOCGIFFLAGS", name, e))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short == 0 {
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        if_ioctl(&sock, libc::SIOCSIFFLAGS, &mut ifr).map_err(|e| os_err("SIOCSIFFLAGS (set up)", name, e))?;
    }
    let mut ifr = ifreq(name);
    if_ioctl(&sock, libc::SIOCGIFMTU, &mut ifr).map_err(|e| os_err("SIOCGIFMTU", name, e))?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu } as usize)
}

/// Opens one queue fd of `name` (creating the device if it does not exist); returns the
/// fd and the device name the kernel used.
fn open_queue(name: &str, multi_queue: bool) -> Result<(OwnedFd, String), PortError> {
    // SAFETY: the path is a NUL-terminated C string; the fd is owned right below.
    let fd = unsafe { libc::open(TUN_PATH.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            return Err(PortError::Unsupported(
                "/dev/net/tun not found: load the tun module (modprobe tun), or give the container the device".into(),
            ));
        }
        return Err(os_err("open /dev/net/tun", name, e));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = ifreq(name);
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq, valid for the call; the kernel writes
    // the chosen name back into it.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut ifr as *mut libc::ifreq) } < 0 {
        return Err(os_err("TUNSETIFF", if name.is_empty() { "(new)" } else { name }, io::Error::last_os_error()));
    }
    Ok((fd, ifr_name(&ifr)))
}

impl TapPort {
    /// Opens (creating if needed) a single-queue TAP, brings it up, and gives it a pool.
    pub fn open(cfg: &TapConfig, budget: &Arc<PinnedBudget>, huge: HugePolicy) -> Result<TapPort, PortError> {
        if cfg.queues > 1 {
            return Err(PortError::Unsupported(format!(
                "TapConfig.queues = {}: use TapPort::open_queues for a multi-queue TAP",
                cfg.queues
            )));
        }
        Ok(Self::open_queues(cfg, budget, huge)?.pop().expect("one queue"))
    }

    /// Opens `cfg.queues` queues of a TAP (multi-queue when more than one), one port per
    /// queue fd, each with its own pool from `budget`.
    pub fn open_queues(
        cfg: &TapConfig,
        budget: &Arc<PinnedBudget>,
        huge: HugePolicy,
    ) -> Result<Vec<TapPort>, PortError> {
        if let Some(why) = bad_name(&cfg.name) {
            return Err(PortError::Unsupported(format!("bad TAP interface name {:?}: {why}", cfg.name)));
        }
        if cfg.queues == 0 {
            return Err(PortError::Unsupported("TapConfig.queues must be at least 1".into()));
        }
        let existed = !cfg.name.is_empty() && std::path::Path::new("/sys/class/net").join(&cfg.name).exists();
        if cfg.must_exist && !existed {
            return Err(PortError::LinkDown(format!(
                "TAP {} does not exist (create it with scripts/tap.sh up {})",
                cfg.name, cfg.name
            )));
        }
        let multi = cfg.queues > 1;
        let mut name = cfg.name.clone();
        let mut fds = Vec::with_capacity(cfg.queues as usize);
        for _ in 0..cfg.queues {
            let (fd, got) = open_queue(&name, multi)?;
            name = got; // later queues attach to the device the first one made
            fds.push(fd);
        }
        let mtu = configure(&name, cfg.mtu)?;
        let queues = cfg.queues;
        let mut ports = Vec::with_capacity(fds.len());
        for (q, fd) in fds.into_iter().enumerate() {
            ports.push(TapPort {
                fd,
                name: name.clone(),
                pool: FramePool::with_region_lock(cfg.pool, budget, huge, LockPolicy::IfAllowed)?,
                mtu,
                queues,
                queue_id: q as u32,
                created: !existed,
                stats: PortStats::default(),
            });
        }
        tracing::debug!(name, queues, mtu, created = !existed, "TAP opened");
        Ok(ports)
    }

    /// The interface name (the kernel's choice when the config left it empty).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this open created the device (it vanishes with its last queue unless
    /// someone made it persistent).
    pub fn created(&self) -> bool {
        self.created
    }

    fn link_err(&self, op: &'static str, e: io::Error) -> PortError {
        match e.raw_os_error() {
            Some(libc::EBADFD) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
                PortError::LinkDown(format!("TAP {}: {op}: {e} (device gone)", self.name))
            }
            Some(libc::EIO) => PortError::LinkDown(format!("TAP {}: {op}: {e} (interface down?)", self.name)),
            _ => PortError::Io { op, err: io::Error::new(e.kind(), format!("TAP {}: {e}", self.name)) },
        }
    }
}

impl AsRawFd for TapPort {
    /// The queue fd, for `poll`/`epoll` when an engine wants to sleep instead of spin.
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Port for TapPort {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> Result<usize, PortError> {
        let mut n = 0;
        while n < max {
            // No free frame: stop; the kernel keeps queueing (and counts its own drops).
            let Ok(mut frame) = self.pool.alloc() else { break };
            let room = frame.room_mut();
            // SAFETY: `room` is writable memory of `room.len()` bytes owned by `frame`.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    // frames already read are the caller's; the error recurs on the next call
                    _ if n > 0 => break,
                    _ => return Err(self.link_err("read TAP", e)),
                }
            }
            // Without IFF_NO_PI truncation flags, the kernel reports the full length of a
            // frame that did not fit and copies only the start: count it, drop it.
            let len = r as usize;
            if frame.set_len(len).is_err() {
                self.stats.rx_dropped += 1;
                self.stats.rx_invalid += 1;
                continue;
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += len as u64;
            out.push(frame);
            n += 1;
        }
        Ok(n)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> Result<usize, PortError> {
        let mut sent = 0;
        let mut err = None;
        'frames: for f in frames.iter() {
            loop {
                let data = f.data();
                self.stats.wakeups += 1;
                // SAFETY: `data` is readable memory of `data.len()` bytes owned by the frame.
                let r = unsafe { libc::write(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if r >= 0 {
                    break; // a TAP write takes the whole frame or fails
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => break 'frames,
                    _ => {
                        err = Some(self.link_err("write TAP", e));
                        break 'frames;
                    }
                }
            }
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += f.len() as u64;
            sent += 1;
        }
        if sent < frames.len() && err.is_none() {
            self.stats.tx_full += 1;
        }
        frames.drain(..sent);
        match err {
            Some(e) => Err(e),
            None => Ok(sent),
        }
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            name: format!("tap:{}:{}", self.name, self.queue_id),
            mtu: self.mtu,
            max_burst: 64,
            queues: self.queues,
            queue_id: self.queue_id,
            copy_mode: CopyMode::Copy,
            rx_checksum_offload: false,
            tx_checksum_offload: false,
            mac: None,
        }
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn tx_pool(&self) -> &FramePool {
        &self.pool
    }

    fn wakeup_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::{privileged_or_skip, run};
    use std::process::Command;

    fn small() -> TapConfig {
        TapConfig { pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 64 }, ..TapConfig::default() }
    }

    fn tap_name(tag: &str) -> String {
        format!("ukt{tag}{}", std::process::id() % 1_000_000)
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for name in ["a-name-that-is-too-long", "a/b", "a b", "eth0:1", ".."] {
            let cfg = TapConfig { name: name.into(), ..small() };
            let err = TapPort::open(&cfg, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap_err();
            assert!(matches!(&err, PortError::Unsupported(m) if m.contains("bad TAP interface name")), "{name}: {err}");
        }
        let cfg = TapConfig { queues: 2, ..small() };
        assert!(matches!(
            TapPort::open(&cfg, &PinnedBudget::unlimited(), HugePolicy::Never),
            Err(PortError::Unsupported(_))
        ));
    }

    #[test]
    fn ifreq_round_trips_names() {
        assert_eq!(ifr_name(&ifreq("tap0")), "tap0");
        assert_eq!(ifr_name(&ifreq("exactly15bytes_")), "exactly15bytes_");
    }

    #[test]
    fn created_tap_is_up_has_caps_and_vanishes_on_drop() {
        if !privileged_or_skip("created_tap_is_up_has_caps_and_vanishes_on_drop") {
            return;
        }
        let cfg = TapConfig { name: tap_name("c"), mtu: Some(1400), ..small() };
        let mut port = TapPort::open(&cfg, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap();
        assert!(port.created());
        let caps = port.caps();
        assert_eq!((caps.mtu, caps.copy_mode, caps.mac, caps.queues), (1400, CopyMode::Copy, None, 1));
        let link = run(Command::new("ip").args(["-o", "link", "show", &cfg.name])).unwrap();
        assert!(link.contains(",UP") || link.contains("<UP"), "{link}");
        port.rx_burst(&mut Vec::new(), 8).unwrap();
        // A local-experimental ethertype frame to nobody: the kernel takes it and drops it.
        let mut f = port.tx_pool().alloc().unwrap();
        let mut bytes = vec![0xff; 6];
        bytes.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x88, 0xb5]);
        bytes.resize(60, 0);
        f.fill_from(&bytes).unwrap();
        let mut v = vec![f];
        assert_eq!(port.tx_burst(&mut v).unwrap(), 1);
        assert!(v.is_empty());
        assert_eq!((port.stats().tx_frames, port.stats().tx_bytes), (1, 60));
        drop(port);
        assert!(run(Command::new("ip").args(["link", "show", &cfg.name])).is_err(), "non-persistent TAP removed");
    }

    #[test]
    fn attaches_to_a_persistent_tap_and_must_exist_is_clear() {
        if !privileged_or_skip("attaches_to_a_persistent_tap_and_must_exist_is_clear") {
            return;
        }
        let name = tap_name("p");
        let cfg = TapConfig { name: name.clone(), must_exist: true, ..small() };
        let err = TapPort::open(&cfg, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap_err();
        assert!(matches!(&err, PortError::LinkDown(m) if m.contains("does not exist")), "{err}");
        run(Command::new("ip").args(["tuntap", "add", "dev", &name, "mode", "tap"])).unwrap();
        struct Del(String);
        impl Drop for Del {
            fn drop(&mut self) {
                let _ = run(Command::new("ip").args(["tuntap", "del", "dev", &self.0, "mode", "tap"]));
            }
        }
        let _del = Del(name.clone());
        let port = TapPort::open(&cfg, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap();
        assert!(!port.created());
        drop(port);
        assert!(run(Command::new("ip").args(["link", "show", &name])).is_ok(), "persistent TAP stays");
    }

    #[test]
    fn multi_queue_tap_gives_one_port_per_queue() {
        if !privileged_or_skip("multi_queue_tap_gives_one_port_per_queue") {
            return;
        }
        let cfg = TapConfig { name: tap_name("m"), queues: 3, ..small() };
        let ports = TapPort::open_queues(&cfg, &PinnedBudget::unlimited(), HugePolicy::Never).unwrap();
        assert_eq!(ports.len(), 3);
        for (i, p) in ports.iter().enumerate() {
            assert_eq!((p.caps().queue_id, p.caps().queues, p.name()), (i as u32, 3, cfg.name.as_str()));
            assert!(!p.tx_pool().same_pool(ports[(i + 1) % 3].tx_pool()), "a pool per queue");
        }
        let fds: std::collections::HashSet<_> = ports.iter().map(|p| p.as_raw_fd()).collect();
        assert_eq!(fds.len(), 3);
    }
}
