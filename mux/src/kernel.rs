//! The mux over kernel TCP sockets: the fallback where kernel bypass is impossible, and
//! the fair baseline for benchmarks (same mux, same rings, only the TCP differs).
//!
//! Received bytes are read by `recv(2)` straight into the psock's pinned, mirror-mapped
//! ring — the kernel's copy is the only one, as smoltcp's is on the bypass path. The ring
//! starts at one page and grows with the traffic ([`crate::kernel_ring`]).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use ukcm_nic::{kernel_sock, PinnedBudget, RingError, RingView};
use ukcm_stack::autosize::START_RING;

use crate::kernel_ring::{GrowingRing, IdleChecks, KernelRingStats};
use crate::mux::Mux;
use crate::psock_io::{Fill, PsockIo};

/// A kernel TCP connection with a pinned rx ring.
#[derive(Debug)]
pub struct KernelPsock {
    stream: TcpStream,
    ring: GrowingRing,
    written: u64,
    label: String,
    closed: bool,
    /// Registered with a [`KernelReadiness`]: visited on news, not every round.
    registered: bool,
}

impl KernelPsock {
    /// Wraps a connected stream (made non-blocking, Nagle off) with an rx ring that starts
    /// at one page ([`START_RING`]) and grows with the traffic up to `ring_bytes` (a
    /// multiple of 4096: the largest message), lending at most `max_views` undelivered
    /// messages at once (fewer while the ring is small: one per 64 ring bytes).
    pub fn new(stream: TcpStream, ring_bytes: usize, max_views: usize, budget: &Arc<PinnedBudget>) -> io::Result<Self> {
        Self::with_start(stream, START_RING, ring_bytes, max_views, budget)
    }

    /// [`KernelPsock::new`] with a ring that starts at `start_bytes` (a multiple of 4096; 0
    /// or `ring_bytes` for a fixed ring of `ring_bytes`).
    pub fn with_start(
        stream: TcpStream,
        start_bytes: usize,
        ring_bytes: usize,
        max_views: usize,
        budget: &Arc<PinnedBudget>,
    ) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let label = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "kernel-tcp".into());
        let ring = GrowingRing::new(start_bytes, ring_bytes, max_views, budget).map_err(io::Error::other)?;
        Ok(KernelPsock { stream, ring, written: 0, label, closed: false, registered: false })
    }

    /// Counts this psock's ring growths, shrinks and ring bytes into `stats` (shared by
    /// many psocks, e.g. all of a server's) instead of its own counters.
    pub fn count_into(mut self, stats: &Arc<KernelRingStats>) -> Self {
        self.ring.count_into(stats);
        self
    }

    /// The counters of this psock's ring (shared with others after
    /// [`KernelPsock::count_into`]); keep the handle to read them once the psock is attached.
    pub fn ring_stats(&self) -> Arc<KernelRingStats> {
        Arc::clone(self.ring.stats())
    }

    /// The rx ring's size now (it grows up to [`PsockIo::rx_capacity`]).
    pub fn ring_capacity(&self) -> usize {
        self.ring.ring().capacity()
    }

    /// The underlying stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl PsockIo for KernelPsock {
    type Ctx = ();

    fn fill(&mut self, _: &mut ()) -> io::Result<Fill> {
        let mut fill = Fill::default();
        if self.closed {
            fill.eof = true;
            return Ok(fill);
        }
        // A growth's move of the unparsed bytes is a copy beyond the kernel's one: counted.
        fill.copied_bytes += self.ring.before_fill();
        loop {
            if self.ring.free_space().is_empty() {
                // Full: pressure only if more is waiting (a message exactly the ring's size
                // just fits, and is lent from here without a move).
                match self.stream.peek(&mut [0u8; 1]) {
                    Ok(0) => {
                        fill.eof = true;
                        return Ok(fill);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.ring.after_fill();
                        return Ok(fill);
                    }
                    Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
                    _ => {}
                }
                match self.ring.full() {
                    Some(copied) => fill.copied_bytes += copied,
                    None => {
                        fill.ring_full = true;
                        return Ok(fill);
                    }
                }
            }
            let space = self.ring.free_space();
            match self.stream.read(space) {
                Ok(0) => {
                    fill.eof = true;
                    return Ok(fill);
                }
                Ok(n) => {
                    self.ring.commit(n);
                    fill.new_bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.ring.after_fill();
                    return Ok(fill);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn unparsed(&self) -> &[u8] {
        self.ring.ring().unparsed()
    }

    fn take_view(&mut self, len: usize) -> Result<RingView, RingError> {
        self.ring.ring_mut().take_view(len)
    }

    fn reclaim(&mut self) -> usize {
        self.ring.ring_mut().reclaim()
    }

    fn discard(&mut self, len: usize) -> Result<(), RingError> {
        self.ring.ring_mut().discard(len)
    }

    fn write(&mut self, _: &mut (), bytes: &[u8]) -> io::Result<usize> {
        match self.stream.write(bytes) {
            Ok(n) => {
                self.written += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn write_vectored(&mut self, _: &mut (), bufs: &[&[u8]]) -> io::Result<usize> {
        // One writev for several queued messages (one system call, not one per message).
        let mut slices = [io::IoSlice::new(&[]); 32];
        let n = bufs.len().min(slices.len());
        for (s, b) in slices.iter_mut().zip(bufs) {
            *s = io::IoSlice::new(b);
        }
        match self.stream.write_vectored(&slices[..n]) {
            Ok(n) => {
                self.written += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn acked_total(&mut self, _: &mut ()) -> io::Result<u64> {
        let unacked = kernel_sock::unacked_bytes(self.stream.as_fd())? as u64;
        Ok(self.written.saturating_sub(unacked))
    }

    fn rx_contains(&self, p: *const u8, len: usize) -> bool {
        self.ring.ring().contains(p, len)
    }

    fn rx_capacity(&self) -> usize {
        self.ring.max()
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn close(&mut self, _: &mut ()) {
        self.closed = true;
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn ready_key(&self) -> Option<usize> {
        // The fd: small, dense and unique among open sockets. A stale event for a reused fd
        // only costs one extra visit.
        self.registered.then(|| self.stream.as_raw_fd() as usize)
    }

    fn views_outstanding(&self) -> usize {
        self.ring.ring().views_outstanding()
    }
}

/// Readiness of kernel psocks through epoll (mio): a mux round then visits only the psocks
/// whose sockets have news, or that have work pending, instead of every attached one (a
/// `read` system call per idle connection per round). It also visits a grown ring's psock
/// when its idle check is due, so the ring can shrink while no news comes.
#[derive(Debug)]
pub struct KernelReadiness {
    poll: Poll,
    events: Events,
    checks: Arc<IdleChecks>,
    /// [`KernelReadiness::poll`]'s keys, kept for the allocation.
    keys: Vec<usize>,
}

impl KernelReadiness {
    /// An epoll set taking up to `events` events per [`KernelReadiness::poll`].
    pub fn new(events: usize) -> io::Result<Self> {
        Ok(KernelReadiness {
            poll: Poll::new()?,
            events: Events::with_capacity(events.max(1)),
            checks: Arc::new(IdleChecks::default()),
            keys: Vec::new(),
        })
    }

    /// Registers a psock's socket (edge-triggered, readable and writable). Call it before
    /// attaching the psock; its socket leaves the set when the psock is dropped.
    pub fn register(&self, psock: &mut KernelPsock) -> io::Result<()> {
        let fd = psock.stream.as_raw_fd();
        self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(fd as usize),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        psock.registered = true;
        psock.ring.wake_with(&self.checks, fd as usize);
        Ok(())
    }

    /// Registers another descriptor (a listener, a doorbell) readable under `key`, which
    /// must not be a psock's (psocks' keys are their fds: use one no fd can be, such as
    /// `usize::MAX - n`). Its events wake [`KernelReadiness::wait`] and come back as `key`.
    pub fn register_fd(&self, fd: RawFd, key: usize) -> io::Result<()> {
        self.poll.registry().register(&mut SourceFd(&fd), Token(key), Interest::READABLE)
    }

    /// Waits up to `timeout` (zero: do not wait; `None`: until news), but no later than the
    /// next idle check of a grown ring, and marks the psocks with news or a due check ready
    /// in `mux`, for its next round; returns the number of events.
    pub fn poll(&mut self, mux: &mut Mux<KernelPsock>, timeout: Option<Duration>) -> io::Result<usize> {
        let mut keys = std::mem::take(&mut self.keys);
        let n = self.wait(timeout, &mut keys);
        for k in keys.drain(..) {
            mux.mark_ready_key(k);
        }
        self.keys = keys;
        n
    }

    /// [`KernelReadiness::poll`] for several muxes (a server's and its upstream pool's):
    /// appends the keys with news or a due check to `keys`, for the caller to mark in each
    /// mux (`Mux::mark_ready_key` ignores keys it does not know); returns the number of
    /// events.
    pub fn wait(&mut self, timeout: Option<Duration>, keys: &mut Vec<usize>) -> io::Result<usize> {
        let until_check = self.checks.next().map(|at| at.saturating_duration_since(Instant::now()));
        let timeout = match (timeout, until_check) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        };
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            r => r?,
        }
        let mut n = 0;
        for ev in self.events.iter() {
            keys.push(ev.token().0);
            n += 1;
        }
        if until_check.is_some() {
            self.checks.take_due(Instant::now(), |key| keys.push(key));
        }
        Ok(n)
    }
}
