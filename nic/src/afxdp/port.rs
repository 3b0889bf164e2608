//! [`AfXdpPort`]: the [`Port`] over one AF_XDP socket.
//!
//! Every burst first takes back completed transmissions, then does its job, then tops the
//! fill ring up from the pool, so frames the caller drops find their way back to the
//! kernel on the next burst. Syscalls happen only when the kernel asks (need_wakeup) and
//! are counted in [`PortStats::wakeups`].

use std::sync::Arc;

use super::netdev::NetDev;
use super::ring::{CompRing, FillRing, RxRing, TxRing};
use super::socket::{Kick, XskSocket};
use super::umem::Umem;
use super::xdp_prog::{Attached, XdpQueue};
use super::{chunk, sys, sys_err, AfXdpConfig, BindMode, ChunkSize};
use crate::pool::{FramePool, PoolConfig};
use crate::port::{CopyMode, Port, PortCaps, PortError, PortStats};
use crate::region::{HugePolicy, PinnedBudget};
use crate::Frame;

/// Largest burst handled per call.
const MAX_BURST: usize = 64;
/// How long `open` waits for a queue still held by a just-closed socket.
const BUSY_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
/// Syscalls per `tx_burst` at most: copy mode sends 32 frames per `sendto`.
const MAX_TX_KICKS: usize = 16;

/// The four mapped rings of one socket.
#[derive(Debug)]
struct Rings {
    rx: RxRing,
    tx: TxRing,
    fill: FillRing,
    comp: CompRing,
}

/// An AF_XDP port on one queue of one interface.
///
/// Field order is drop order and matters: the XSKMAP slot is cleared (and the program
/// detached by the last user), then the rings are unmapped, then the socket is closed (the
/// kernel lets go of the UMEM), and only then does the UMEM take back its lent frames.
#[derive(Debug)]
pub struct AfXdpPort {
    xdp: XdpQueue,
    rings: Rings,
    sock: XskSocket,
    umem: Umem,
    pool: FramePool,
    dev: NetDev,
    queue_id: u32,
    zero_copy: bool,
    need_wakeup: bool,
    busy_poll: bool,
    fill_target: usize,
    stats: PortStats,
    tx_copies: u64,
}

impl AfXdpPort {
    /// Opens queue `cfg.queue_id` of `cfg.ifname`: makes the pool (charged to `budget`; its
    /// chunk size as `cfg.chunk` says), attaches the XDP program if this is the interface's
    /// first port, binds the socket (zero-copy, then copy, as `cfg.bind` allows) and fills
    /// the fill ring.
    pub fn open(cfg: &AfXdpConfig, budget: &Arc<PinnedBudget>, huge: HugePolicy) -> Result<Self, PortError> {
        // Check the device before pinning memory for it.
        let dev = NetDev::lookup(&cfg.ifname)?;
        let pool = FramePool::with_region(pool_for(cfg, &dev)?, budget, huge)?;
        Self::open_with_pool(cfg, pool)
    }

    /// As [`AfXdpPort::open`], over a pool the caller carved (e.g. from the engine's one
    /// pinned region); `cfg.pool` and `cfg.chunk` are ignored. The pool becomes the UMEM: its
    /// memory must be page aligned, its frames must hold an MTU-sized frame, and they should
    /// not be used by another port.
    pub fn open_with_pool(cfg: &AfXdpConfig, pool: FramePool) -> Result<Self, PortError> {
        let dev = NetDev::lookup(&cfg.ifname)?;
        let chunk = pool.frame_size();
        if pool.mem_ptr() as usize % 4096 != 0 {
            return Err(PortError::Unsupported("AF_XDP UMEM must be page aligned".into()));
        }
        if !chunk::chunk_allowed(chunk) {
            return Err(PortError::Unsupported(format!("AF_XDP frame size must be 2048 or 4096, not {chunk}")));
        }
        if !cfg.ring_size.is_power_of_two() || !(64..=1 << 15).contains(&cfg.ring_size) {
            return Err(PortError::Unsupported(format!(
                "ring size {} is not a power of two in 64..=32768",
                cfg.ring_size
            )));
        }
        if cfg.queue_id >= dev.rx_queues {
            return Err(PortError::Unsupported(format!(
                "queue {} out of range: {} has {} rx queues",
                cfg.queue_id, dev.name, dev.rx_queues
            )));
        }
        let fits = chunk::max_mtu(chunk, pool.headroom());
        if dev.mtu > fits {
            let bigger = chunk::chunk_for_mtu(dev.mtu, pool.headroom(), chunk).map_or_else(
                || chunk::too_large(&dev.name, dev.mtu, pool.headroom()),
                |c| format!("use {c}-byte frames (ChunkSize::Auto picks them), or lower the MTU to {fits}"),
            );
            return Err(PortError::Unsupported(format!(
                "MTU {} of {} does not fit a {chunk}-byte frame: the largest MTU for it is {fits} \
                 (XDP keeps {} bytes of headroom, the pool {}); {bigger}",
                dev.mtu,
                dev.name,
                sys::XDP_PACKET_HEADROOM,
                pool.headroom()
            )));
        }
        let umem = Umem::new(pool.clone());
        let mut xdp = XdpQueue::acquire(&dev.name, dev.ifindex, cfg.queue_id, dev.rx_queues, cfg.mode)?;

        let attempts: &[u16] = match cfg.bind {
            BindMode::Auto => &[libc::XDP_ZEROCOPY, libc::XDP_COPY],
            BindMode::ZeroCopy => &[libc::XDP_ZEROCOPY],
            BindMode::Copy => &[libc::XDP_COPY],
        };
        let wake = if cfg.need_wakeup { libc::XDP_USE_NEED_WAKEUP } else { 0 };
        let mut last = None;
        let mut bound = None;
        for (i, &flags) in attempts.iter().enumerate() {
            // A failed bind leaves a socket half set up; each attempt starts from a new one.
            match Self::socket(&dev, cfg, &pool, flags | wake) {
                Ok(s) => {
                    bound = Some(s);
                    break;
                }
                Err(e) => {
                    let retry = i + 1 < attempts.len()
                        && !matches!(&e, PortError::Io { err, .. }
                            if matches!(err.raw_os_error(), Some(libc::EPERM | libc::EACCES | libc::EBUSY)));
                    if !retry {
                        return Err(e);
                    }
                    tracing::info!(ifname = %dev.name, queue = cfg.queue_id, %e, "AF_XDP zero-copy bind refused, trying copy mode");
                    last = Some(e);
                }
            }
        }
        let (sock, rings) = bound.ok_or_else(|| last.unwrap_or(PortError::Unsupported("no bind mode".into())))?;
        let zero_copy = sock.is_zero_copy().map_err(|e| sys_err("getsockopt(XDP_OPTIONS)", e))?;
        if cfg.busy_poll {
            sock.set_busy_poll(20, MAX_BURST as i32).map_err(|e| sys_err("setsockopt(SO_BUSY_POLL)", e))?;
        }
        xdp.insert(sock.fd())?;

        // Keep half the pool for transmit and for frames the caller holds: a fill ring that
        // swallowed every frame would starve the stack of transmit buffers.
        let fill_target = (rings.fill.size() as usize).min(pool.capacity() / 2).max(1);
        let mut port = AfXdpPort {
            xdp,
            rings,
            sock,
            umem,
            pool,
            dev,
            queue_id: cfg.queue_id,
            zero_copy,
            need_wakeup: cfg.need_wakeup,
            busy_poll: cfg.busy_poll,
            fill_target,
            stats: PortStats::default(),
            tx_copies: 0,
        };
        port.refill()?;
        tracing::info!(name = %port.caps().name, "AF_XDP port open");
        Ok(port)
    }

    /// A socket with the UMEM registered, rings sized and mapped, bound with `flags`.
    fn socket(dev: &NetDev, cfg: &AfXdpConfig, pool: &FramePool, flags: u16) -> Result<(XskSocket, Rings), PortError> {
        let sock = XskSocket::new().map_err(|e| sys_err("socket(AF_XDP)", e))?;
        // SAFETY: the pool memory is page aligned (carved at 4096) and the pool outlives the
        // socket: the port keeps `umem` (which holds the pool) and drops it after `sock`.
        unsafe { sock.register_umem(pool.mem_ptr(), pool.mem_len(), pool.frame_size() as u32, 0) }
            .map_err(|e| sys_err("setsockopt(XDP_UMEM_REG)", e))?;
        let (rx_n, fc_n) = (cfg.ring_size, cfg.ring_size * 2);
        for (ring, n, op) in [
            (libc::XDP_UMEM_FILL_RING, fc_n, "setsockopt(XDP_UMEM_FILL_RING)"),
            (libc::XDP_UMEM_COMPLETION_RING, fc_n, "setsockopt(XDP_UMEM_COMPLETION_RING)"),
            (libc::XDP_RX_RING, rx_n, "setsockopt(XDP_RX_RING)"),
            (libc::XDP_TX_RING, rx_n, "setsockopt(XDP_TX_RING)"),
        ] {
            sock.set_ring_size(ring, n).map_err(|e| sys_err(op, e))?;
        }
        let off = sock.mmap_offsets().map_err(|e| sys_err("getsockopt(XDP_MMAP_OFFSETS)", e))?;
        let fd = sock.fd();
        let map_err = |e| sys_err("mmap(AF_XDP ring)", e);
        // SAFETY: each ring was sized just above on this socket, the offsets are the
        // kernel's, and the rings are mapped once each, owned by the returned value.
        let rings = unsafe {
            Rings {
                rx: RxRing::map(fd, &off.rx, rx_n).map_err(map_err)?,
                tx: TxRing::map(fd, &off.tx, rx_n).map_err(map_err)?,
                fill: FillRing::map(fd, &off.fr, fc_n).map_err(map_err)?,
                comp: CompRing::map(fd, &off.cr, fc_n).map_err(map_err)?,
            }
        };
        // The kernel releases a closed socket's hold on its queue from a workqueue, so a
        // port reopened right after a drop may briefly find the queue busy: retry a little.
        let deadline = std::time::Instant::now() + BUSY_QUEUE_WAIT;
        let mut res = sock.bind(dev.ifindex, cfg.queue_id, flags);
        while matches!(&res, Err(e) if e.raw_os_error() == Some(libc::EBUSY)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            res = sock.bind(dev.ifindex, cfg.queue_id, flags);
        }
        if let Err(e) = res {
            let op = if flags & libc::XDP_ZEROCOPY != 0 { "bind(AF_XDP, zero-copy)" } else { "bind(AF_XDP, copy)" };
            if e.raw_os_error() == Some(libc::EBUSY) {
                return Err(PortError::Io {
                    op,
                    err: std::io::Error::new(
                        e.kind(),
                        format!("{e}: queue {} of {} already has an AF_XDP socket", cfg.queue_id, dev.name),
                    ),
                });
            }
            return Err(sys_err(op, e));
        }
        Ok((sock, rings))
    }

    /// The queue this port owns.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// The interface.
    pub fn netdev(&self) -> &NetDev {
        &self.dev
    }

    /// Where the XDP program runs.
    pub fn xdp_mode(&self) -> Attached {
        self.xdp.mode()
    }

    /// Whether the socket is bound in zero-copy mode.
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Frames given to `tx_burst` from another pool, copied into this one first.
    pub fn tx_copies(&self) -> u64 {
        self.tx_copies
    }

    /// The kernel's counters for this socket (drops for a full rx ring or empty fill ring…).
    pub fn xdp_statistics(&self) -> Result<libc::xdp_statistics, PortError> {
        self.sock.statistics().map_err(|e| sys_err("getsockopt(XDP_STATISTICS)", e))
    }

    /// Frames lent to the kernel: (for receive, for transmit).
    pub fn lent(&self) -> (usize, usize) {
        (self.umem.fill_out(), self.umem.tx_out())
    }

    /// Returns completed transmit frames to the pool.
    fn reclaim_tx(&mut self) {
        let umem = &mut self.umem;
        while self.rings.comp.consume(MAX_BURST as u32 * 4, |addr| umem.complete_tx(addr)) > 0 {}
    }

    /// Tops the fill ring up to its target from the pool, and wakes the kernel if it asks.
    fn refill(&mut self) -> Result<(), PortError> {
        let want = self.fill_target.saturating_sub(self.umem.fill_out());
        if want > 0 {
            let umem = &mut self.umem;
            self.rings.fill.produce(want as u32, || umem.lend_fill());
        }
        if self.need_wakeup && self.rings.fill.needs_wakeup() {
            self.stats.wakeups += 1;
            self.sock.kick_rx().map_err(|e| sys_err("recvfrom(AF_XDP fill wakeup)", e))?;
        }
        Ok(())
    }

    /// Makes the kernel send what is on the tx ring (in copy mode, `sendto` is the send).
    fn kick_tx(&mut self) -> Result<(), PortError> {
        for _ in 0..MAX_TX_KICKS {
            if self.rings.tx.pending() == 0 || (self.need_wakeup && !self.rings.tx.needs_wakeup()) {
                return Ok(());
            }
            self.stats.wakeups += 1;
            match self.sock.kick_tx() {
                Ok(Kick::Done) => {}
                Ok(Kick::Again) => self.reclaim_tx(), // a full completion ring also says "again"
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                    return Err(PortError::LinkDown(format!("{} is down", self.dev.name)))
                }
                Err(e) => return Err(sys_err("sendto(AF_XDP tx wakeup)", e)),
            }
        }
        Ok(())
    }
}

/// The pool geometry for `cfg` on `dev`: with [`ChunkSize::Auto`], the smallest chunk (at
/// least `cfg.pool.frame_size`) that holds the MTU.
fn pool_for(cfg: &AfXdpConfig, dev: &NetDev) -> Result<PoolConfig, PortError> {
    let frame_size = match cfg.chunk {
        ChunkSize::Fixed => cfg.pool.frame_size,
        ChunkSize::Auto => chunk::chunk_for_mtu(dev.mtu, cfg.pool.headroom, cfg.pool.frame_size)
            .ok_or_else(|| PortError::Unsupported(chunk::too_large(&dev.name, dev.mtu, cfg.pool.headroom)))?,
    };
    Ok(PoolConfig { frame_size, ..cfg.pool })
}

impl Port for AfXdpPort {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> Result<usize, PortError> {
        self.reclaim_tx();
        let max = max.min(MAX_BURST) as u32;
        let start = out.len();
        let umem = &mut self.umem;
        let mut bytes = 0u64;
        let mut largest = 0u64;
        let mut bad = 0u64;
        self.rings.rx.consume(max, |desc| match umem.take_rx(desc) {
            Some(f) => {
                bytes += f.len() as u64;
                largest = largest.max(f.len() as u64);
                out.push(f);
            }
            None => bad += 1,
        });
        let n = out.len() - start;
        self.stats.rx_frames += n as u64;
        self.stats.rx_bytes += bytes;
        self.stats.rx_max_frame = self.stats.rx_max_frame.max(largest);
        self.stats.rx_dropped += bad;
        self.stats.rx_invalid += bad;
        self.refill()?;
        if n == 0 {
            if self.busy_poll {
                // Busy polling: our recvfrom runs the device's receive path.
                self.stats.wakeups += 1;
                self.sock.kick_rx().map_err(|e| sys_err("recvfrom(AF_XDP busy poll)", e))?;
            }
            // Transmissions left on the ring by an earlier "again" get another push.
            self.kick_tx()?;
        }
        Ok(n)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> Result<usize, PortError> {
        self.reclaim_tx();
        let want = frames.len().min(self.rings.tx.free(frames.len().min(u32::MAX as usize) as u32) as usize);
        // Every frame in the prefix must live in our UMEM; foreign ones are copied in,
        // stopping where the pool runs dry (the rest stay with the caller).
        let mut n = 0;
        while n < want {
            if !frames[n].is_from(&self.pool) {
                let Ok(mut copy) = self.pool.alloc() else { break };
                if let Err(e) = copy.fill_from(frames[n].data()) {
                    if n == 0 {
                        return Err(e.into());
                    }
                    break;
                }
                frames[n] = copy;
                self.tx_copies += 1;
            }
            n += 1;
        }
        let mut bytes = 0u64;
        let mut largest = 0u64;
        let umem = &mut self.umem;
        let mut it = frames.drain(..n);
        let sent = self.rings.tx.produce(n as u32, || {
            it.next().map(|f| {
                bytes += f.len() as u64;
                largest = largest.max(f.len() as u64);
                umem.lend_tx(f)
            })
        }) as usize;
        // Room was checked above, so every drained frame got a slot.
        debug_assert_eq!(sent, n);
        debug_assert!(it.next().is_none());
        drop(it);
        self.stats.tx_frames += sent as u64;
        self.stats.tx_bytes += bytes;
        self.stats.tx_max_frame = self.stats.tx_max_frame.max(largest);
        if !frames.is_empty() {
            self.stats.tx_full += 1;
        }
        self.kick_tx()?;
        self.refill()?;
        Ok(sent)
    }

    fn caps(&self) -> PortCaps {
        let copy = if self.zero_copy { "zero-copy" } else { "copy" };
        PortCaps {
            name: format!("afxdp:{}:{} ({}, {copy})", self.dev.name, self.queue_id, self.xdp.mode().as_str()),
            mtu: self.dev.mtu,
            max_burst: MAX_BURST,
            queues: self.dev.rx_queues,
            queue_id: self.queue_id,
            copy_mode: if self.zero_copy { CopyMode::ZeroCopy } else { CopyMode::Copy },
            rx_checksum_offload: false,
            tx_checksum_offload: false,
            mac: self.dev.mac,
        }
    }

    fn stats(&self) -> PortStats {
        let mut s = self.stats;
        if let Ok(k) = self.sock.statistics() {
            // Frames the kernel had to drop for us: no fill buffer or too long (rx_dropped),
            // no room on the rx ring (rx_ring_full).
            s.rx_dropped += k.rx_dropped + k.rx_ring_full;
            s.rx_no_buffer += k.rx_dropped;
            s.rx_ring_full += k.rx_ring_full;
        }
        s
    }

    fn tx_pool(&self) -> &FramePool {
        &self.pool
    }

    /// The XSK socket: it polls readable when the rx ring holds descriptors (and a poll
    /// gives the kernel the rx wakeup a need-wakeup fill ring asks for).
    fn wakeup_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.sock.fd())
    }
}
