//! The AF_XDP socket itself: creation, UMEM registration, ring sizing, bind, wakeups and
//! kernel statistics. Thin wrappers over `setsockopt`/`getsockopt`/`bind`/`sendto`, each
//! turning errno into an `io::Error`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An AF_XDP socket (closing it unbinds it and releases its UMEM registration).
#[derive(Debug)]
pub struct XskSocket {
    fd: OwnedFd,
}

/// Result of a wakeup syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// The kernel took the hint.
    Done,
    /// The kernel is busy or hit its batch limit: call again later.
    Again,
}

impl XskSocket {
    /// A fresh, unbound AF_XDP socket.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor nobody else owns.
        Ok(XskSocket { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// The descriptor (for the XSKMAP and `poll`).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn setsockopt<T>(&self, level: i32, opt: i32, val: &T) -> io::Result<()> {
        // SAFETY: `val` is a live T and the length is its size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd(),
                level,
                opt,
                (val as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn getsockopt<T: Copy>(&self, opt: i32, mut val: T) -> io::Result<T> {
        let mut len = std::mem::size_of::<T>() as libc::socklen_t;
        // SAFETY: `val` is writable for `len` bytes; the kernel writes at most that many.
        let rc = unsafe { libc::getsockopt(self.fd(), libc::SOL_XDP, opt, (&mut val as *mut T).cast(), &mut len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(val)
    }

    /// Registers `len` bytes at `addr` as this socket's UMEM, cut into `chunk_size` chunks.
    ///
    /// # Safety
    /// The memory must be page aligned and stay mapped (and not be handed to anyone else
    /// for chunks lent to the kernel) until this socket is closed: the kernel pins it and
    /// writes received packets into it.
    pub unsafe fn register_umem(&self, addr: *mut u8, len: usize, chunk_size: u32, headroom: u32) -> io::Result<()> {
        let reg = libc::xdp_umem_reg {
            addr: addr as u64,
            len: len as u64,
            chunk_size,
            headroom,
            flags: 0,
            tx_metadata_len: 0,
        };
        self.setsockopt(libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)
    }

    /// Sizes one ring (`XDP_RX_RING`, `XDP_TX_RING`, `XDP_UMEM_FILL_RING`, `XDP_UMEM_COMPLETION_RING`).
    pub fn set_ring_size(&self, ring: i32, entries: u32) -> io::Result<()> {
        self.setsockopt(libc::SOL_XDP, ring, &entries)
    }

    /// Where each ring's indices, flags and descriptors lie in its mapping.
    pub fn mmap_offsets(&self) -> io::Result<libc::xdp_mmap_offsets> {
        let zero = libc::xdp_ring_offset { producer: 0, consumer: 0, desc: 0, flags: 0 };
        self.getsockopt(libc::XDP_MMAP_OFFSETS, libc::xdp_mmap_offsets { rx: zero, tx: zero, fr: zero, cr: zero })
    }

    /// Binds to queue `queue` of interface `ifindex` with `XDP_*` bind flags.
    pub fn bind(&self, ifindex: u32, queue: u32, flags: u16) -> io::Result<()> {
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp and the length matches.
        let rc = unsafe {
            libc::bind(
                self.fd(),
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of_val(&sa) as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the bound socket runs in zero-copy mode (`XDP_OPTIONS`).
    pub fn is_zero_copy(&self) -> io::Result<bool> {
        let o = self.getsockopt(libc::XDP_OPTIONS, libc::xdp_options { flags: 0 })?;
        Ok(o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// The kernel's drop and error counters for this socket.
    pub fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        self.getsockopt(
            libc::XDP_STATISTICS,
            libc::xdp_statistics {
                rx_dropped: 0,
                rx_invalid_descs: 0,
                tx_invalid_descs: 0,
                rx_ring_full: 0,
                rx_fill_ring_empty_descs: 0,
                tx_ring_empty_descs: 0,
            },
        )
    }

    /// Asks for busy polling of the device queue from our syscalls (`SO_PREFER_BUSY_POLL`,
    /// `SO_BUSY_POLL` µs, `SO_BUSY_POLL_BUDGET` packets).
    pub fn set_busy_poll(&self, usecs: i32, budget: i32) -> io::Result<()> {
        use super::sys::{SO_BUSY_POLL, SO_BUSY_POLL_BUDGET, SO_PREFER_BUSY_POLL};
        self.setsockopt(libc::SOL_SOCKET, SO_PREFER_BUSY_POLL, &1i32)?;
        self.setsockopt(libc::SOL_SOCKET, SO_BUSY_POLL, &usecs)?;
        self.setsockopt(libc::SOL_SOCKET, SO_BUSY_POLL_BUDGET, &budget)
    }

    /// Tells the kernel the tx ring has work (`sendto` with no data). In copy mode this
    /// call is what actually transmits, a batch at a time.
    pub fn kick_tx(&self) -> io::Result<Kick> {
        // SAFETY: a zero-length send with null buffer and address is the documented wakeup.
        let rc = unsafe { libc::sendto(self.fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        Self::kick_result(rc)
    }

    /// Tells the kernel the fill ring has buffers again (`recvfrom` with no buffer); with
    /// busy polling this also runs the device's receive path.
    pub fn kick_rx(&self) -> io::Result<Kick> {
        // SAFETY: a zero-length receive with null buffer and address is the documented wakeup.
        let rc = unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        Self::kick_result(rc as isize)
    }

    fn kick_result(rc: isize) -> io::Result<Kick> {
        if rc >= 0 {
            return Ok(Kick::Done);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => Ok(Kick::Again),
            _ => Err(e),
        }
    }
}
