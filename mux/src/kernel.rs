//! The mux over kernel TCP sockets: the fallback where kernel bypass is impossible, and
//! the fair baseline for benchmarks (same mux, same rings, only the TCP differs).
//!
//! Received bytes are read by `recv(2)` straight into the psock's pinned, mirror-mapped
//! ring — the kernel's copy is the only one, as smoltcp's is on the bypass path.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use ukcm_nic::{kernel_sock, ByteRing, PinnedBudget, RingError, RingView};

use crate::mux::Mux;
use crate::psock_io::{Fill, PsockIo};

/// A kernel TCP connection with a pinned rx ring.
#[derive(Debug)]
pub struct KernelPsock {
    stream: TcpStream,
    ring: ByteRing,
    written: u64,
    label: String,
    closed: bool,
    /// Registered with a [`KernelReadiness`]: visited on news, not every round.
    registered: bool,
}

impl KernelPsock {
    /// Wraps a connected stream (made non-blocking, Nagle off) with an rx ring of
    /// `ring_bytes` (a multiple of 4096) holding at most `max_views` undelivered messages.
    pub fn new(stream: TcpStream, ring_bytes: usize, max_views: usize, budget: &Arc<PinnedBudget>) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let label = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "kernel-tcp".into());
        let ring = ByteRing::new(ring_bytes, max_views, budget).map_err(io::Error::other)?;
        Ok(KernelPsock { stream, ring, written: 0, label, closed: false, registered: false })
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
        loop {
            let space = self.ring.free_space();
            if space.is_empty() {
                fill.ring_full = true;
                return Ok(fill);
            }
            match self.stream.read(space) {
                Ok(0) => {
                    fill.eof = true;
                    return Ok(fill);
                }
                Ok(n) => {
                    self.ring.commit(n);
                    fill.new_bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(fill),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn unparsed(&self) -> &[u8] {
        self.ring.unparsed()
    }

    fn take_view(&mut self, len: usize) -> Result<RingView, RingError> {
        self.ring.take_view(len)
    }

    fn reclaim(&mut self) -> usize {
        self.ring.reclaim()
    }

    fn discard(&mut self, len: usize) -> Result<(), RingError> {
        self.ring.discard(len)
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
        self.ring.contains(p, len)
    }

    fn rx_capacity(&self) -> usize {
        self.ring.capacity()
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
        self.ring.views_outstanding()
    }
}

/// Readiness of kernel psocks through epoll (mio): a mux round then visits only the psocks
/// whose sockets have news, or that have work pending, instead of every attached one (a
/// `read` system call per idle connection per round).
#[derive(Debug)]
pub struct KernelReadiness {
    poll: Poll,
    events: Events,
}

impl KernelReadiness {
    /// An epoll set taking up to `events` events per [`KernelReadiness::poll`].
    pub fn new(events: usize) -> io::Result<Self> {
        Ok(KernelReadiness { poll: Poll::new()?, events: Events::with_capacity(events.max(1)) })
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
        Ok(())
    }

    /// Waits up to `timeout` (zero: do not wait; `None`: until news) and marks the psocks
    /// with news ready in `mux`, for its next round; returns the number of events.
    pub fn poll(&mut self, mux: &mut Mux<KernelPsock>, timeout: Option<Duration>) -> io::Result<usize> {
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            r => r?,
        }
        let mut n = 0;
        for ev in self.events.iter() {
            mux.mark_ready_key(ev.token().0);
            n += 1;
        }
        Ok(n)
    }
}
