//! Message sockets: the application threads' side of the mux.
//!
//! A [`MsgSocket`] is `Send` and lives on one application thread (clone it for more).
//! It talks to the mux's engine thread only through bounded lock-free queues: received
//! messages in, send requests out, completions in. Sends are built in the socket's own
//! pinned tx ring (in place with [`MsgSocket::send_with`]), and travel to the engine as
//! views, so the engine writes them to a connection without another copy of its own.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use parking_lot::Mutex;
use ukcm_nic::{ByteRing, PinnedBudget, RingView};

use crate::completion::Completion;
use crate::doorbell::Doorbell;
use crate::error::PsockError;
use crate::ids::{PsockId, SockId};
use crate::msg::Msg;
use crate::order::{ReplySlot, SlotReleases};
use crate::stats::SockStats;
use ukcm_nic::wakeup::Bell as EngineBell;

/// Sizes of a socket's queues and tx ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketConfig {
    /// Received messages queued to the socket before steering looks elsewhere.
    pub rx_queue: usize,
    /// Send requests queued to the engine.
    pub tx_queue: usize,
    /// Sends with a cookie not yet completed (bounds the completion queue).
    pub max_in_flight: usize,
    /// Bytes of the socket's pinned tx ring (a multiple of 4096; bounds one message).
    pub tx_ring: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig { rx_queue: 1024, tx_queue: 1024, max_in_flight: 4096, tx_ring: 4 << 20 }
    }
}

/// Why a send did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Larger than the socket's tx ring: can never be sent whole.
    TooBig { len: usize, max: usize },
    /// No room now (tx ring, tx queue or completion budget): try again.
    WouldBlock,
    /// The mux is gone.
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TooBig { len, max } => write!(f, "message of {len} bytes exceeds the {max}-byte tx ring"),
            SendError::WouldBlock => f.write_str("no room to send now"),
            SendError::Closed => f.write_str("mux closed"),
        }
    }
}

impl std::error::Error for SendError {}

/// A reply that was not queued: why, and the slot back, so the reply can be retried
/// (dropping the slot releases its place in the connection's reply order).
#[derive(Debug)]
pub struct ReplyError {
    /// Why.
    pub error: SendError,
    /// The unanswered slot.
    pub slot: ReplySlot,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reply to {} position {}: {}", self.slot.origin(), self.slot.position(), self.error)
    }
}

impl std::error::Error for ReplyError {}

/// Why a receive returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing arrived within the time allowed.
    TimedOut,
    /// The mux is gone and nothing is left queued.
    Closed,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::TimedOut => f.write_str("receive timed out"),
            RecvError::Closed => f.write_str("mux closed"),
        }
    }
}

impl std::error::Error for RecvError {}

/// An event the mux posts for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxEvent {
    /// A psock failed and was taken out of service.
    PsockError(PsockId, PsockError),
    /// A psock's peer closed cleanly between messages.
    PsockClosed(PsockId),
}

/// The bytes of a send request: built in a socket's pinned tx ring, or (replies made on the
/// engine thread that had to wait their turn) owned.
#[derive(Debug)]
pub(crate) enum TxData {
    Ring(RingView),
    Owned(Vec<u8>),
}

impl std::ops::Deref for TxData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            TxData::Ring(v) => v,
            TxData::Owned(v) => v,
        }
    }
}

/// A send request on its way to the engine.
#[derive(Debug)]
pub(crate) struct TxReq {
    pub(crate) data: TxData,
    pub(crate) cookie: Option<u32>,
    pub(crate) dest: Option<PsockId>,
    /// The reply slot position this answers (ordered replies; `dest` is its origin).
    pub(crate) slot: Option<u64>,
    pub(crate) sock: SockId,
}

/// Counters read by the engine's stats table. The first four are written only by the
/// socket's owner thread (a `MsgSocket` is not `Sync`), so they are bumped with a plain
/// load and store ([`bump`]) rather than a locked read-modify-write.
#[derive(Debug, Default)]
pub(crate) struct AtomicSockStats {
    rx_msgs: AtomicU64,
    rx_bytes: AtomicU64,
    tx_msgs: AtomicU64,
    tx_bytes: AtomicU64,
    pub(crate) tx_completions: AtomicU64,
    pub(crate) tx_failed: AtomicU64,
}

/// Adds `n` to a counter only one thread writes (no locked instruction).
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// The part of a socket both sides see.
#[derive(Debug)]
pub(crate) struct SockShared {
    pub(crate) id: SockId,
    pub(crate) rx: ArrayQueue<Msg>,
    pub(crate) tx: ArrayQueue<TxReq>,
    pub(crate) completions: ArrayQueue<Completion>,
    pub(crate) receiving: AtomicBool,
    pub(crate) closed: AtomicBool,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) stats: AtomicSockStats,
    /// Where a thread blocked in `recv` sleeps until the engine queues it a message.
    pub(crate) bell: Doorbell,
    /// This socket's copy of the mux's events (each socket and the engine get their own,
    /// so no reader takes an event another one needs).
    pub(crate) events: ArrayQueue<MuxEvent>,
}

impl SockShared {
    pub(crate) fn snapshot(&self) -> SockStats {
        let s = &self.stats;
        SockStats {
            rx_msgs: s.rx_msgs.load(Ordering::Relaxed),
            rx_bytes: s.rx_bytes.load(Ordering::Relaxed),
            tx_msgs: s.tx_msgs.load(Ordering::Relaxed),
            tx_bytes: s.tx_bytes.load(Ordering::Relaxed),
            tx_completions: s.tx_completions.load(Ordering::Relaxed),
            tx_failed: s.tx_failed.load(Ordering::Relaxed),
        }
    }
}

/// What the mux and all its sockets share.
#[derive(Debug)]
pub(crate) struct MuxShared {
    pub(crate) socks: Mutex<Vec<Arc<SockShared>>>,
    pub(crate) socks_gen: AtomicU64,
    pub(crate) next_sock: AtomicU64,
    pub(crate) events: ArrayQueue<MuxEvent>,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) shut: AtomicBool,
    pub(crate) budget: Arc<PinnedBudget>,
    pub(crate) sock_cfg: SocketConfig,
    /// Reply slots dropped unanswered, for the engine.
    pub(crate) releases: Arc<SlotReleases>,
    /// Wakes the engine thread when a send is queued while it sleeps.
    pub(crate) bell: Arc<EngineBell>,
}

impl MuxShared {
    /// Posts an event to the engine's queue and to every socket's own queue. Bounded: a
    /// reader that never reads loses the newest news, counted in `events_dropped`.
    pub(crate) fn post(&self, ev: MuxEvent) {
        if self.events.push(ev).is_err() {
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
        for s in self.socks.lock().iter() {
            if s.events.push(ev).is_err() {
                self.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn new_socket(self: &Arc<Self>) -> Result<MsgSocket, ukcm_nic::RingError> {
        let cfg = self.sock_cfg;
        let id = SockId(self.next_sock.fetch_add(1, Ordering::Relaxed) as u32);
        let shared = Arc::new(SockShared {
            id,
            rx: ArrayQueue::new(cfg.rx_queue.max(1)),
            tx: ArrayQueue::new(cfg.tx_queue.max(1)),
            completions: ArrayQueue::new(cfg.max_in_flight.max(1)),
            receiving: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            stats: AtomicSockStats::default(),
            bell: Doorbell::default(),
            events: ArrayQueue::new(SOCKET_EVENTS),
        });
        let tx_ring = ByteRing::new(cfg.tx_ring, cfg.tx_queue.max(1) + 1, &self.budget)?;
        self.socks.lock().push(Arc::clone(&shared));
        self.socks_gen.fetch_add(1, Ordering::Release);
        Ok(MsgSocket { shared, mux: Arc::clone(self), tx_ring, wait: RecvWait::default(), _not_sync: PhantomData })
    }
}

/// Events kept per socket for its reader.
const SOCKET_EVENTS: usize = 256;

/// How a receiving thread waits for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecvWait {
    /// Spin briefly, then park until the engine queues a message (the engine unparks
    /// the thread; it pays a wake-up only when the thread really sleeps).
    #[default]
    Block,
    /// Never sleep: spin, yielding now and then (lowest latency when the thread has a
    /// core of its own; on a shared core the engine loses that time).
    Spin,
}

/// Spins before a blocking receive parks (each a queue check): a fraction of a microsecond, which
/// catches a message that is already on its way without a wake-up.
const SPINS_BEFORE_PARK: u32 = 16;
/// Longest single park (a guard; wake-ups come from the engine).
const MAX_PARK: Duration = Duration::from_millis(10);

/// A KCM message socket: receive whole messages, send whole messages.
///
/// `Send` but not `Sync`: a socket belongs to one thread at a time (clone it for another
/// thread), which lets its counters and queues take the single-owner fast paths.
#[derive(Debug)]
pub struct MsgSocket {
    shared: Arc<SockShared>,
    mux: Arc<MuxShared>,
    tx_ring: ByteRing,
    wait: RecvWait,
    _not_sync: PhantomData<Cell<()>>,
}

impl MsgSocket {
    /// This socket's id.
    pub fn id(&self) -> SockId {
        self.shared.id
    }

    /// Another socket on the same mux (KCM's `SIOCKCMCLONE`), for another thread.
    pub fn try_clone(&self) -> Result<MsgSocket, ukcm_nic::RingError> {
        self.mux.new_socket()
    }

    /// Takes a message if one is queued.
    pub fn try_recv(&self) -> Option<Msg> {
        let m = self.shared.rx.pop()?;
        self.count_rx(&m);
        Some(m)
    }

    /// Messages queued to this socket and not yet taken.
    pub fn queued(&self) -> usize {
        self.shared.rx.len()
    }

    /// How [`MsgSocket::recv`] and [`MsgSocket::recv_timeout`] wait (default: block).
    pub fn set_recv_wait(&mut self, wait: RecvWait) {
        self.wait = wait;
    }

    /// Waits for a message, as set by [`MsgSocket::set_recv_wait`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Msg, RecvError> {
        let deadline = Instant::now() + timeout;
        let mut spins = 0u32;
        loop {
            if let Some(m) = self.try_recv() {
                return Ok(m);
            }
            if self.mux.shut.load(Ordering::Acquire) {
                return self.try_recv().ok_or(RecvError::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvError::TimedOut);
            }
            spins = spins.wrapping_add(1);
            match self.wait {
                RecvWait::Spin if spins % 64 == 0 => std::thread::yield_now(),
                RecvWait::Spin => std::hint::spin_loop(),
                RecvWait::Block if spins < SPINS_BEFORE_PARK => std::hint::spin_loop(),
                RecvWait::Block => {
                    let (rx, shut) = (&self.shared.rx, &self.mux.shut);
                    self.shared
                        .bell
                        .wait((deadline - now).min(MAX_PARK), || !rx.is_empty() || shut.load(Ordering::Acquire));
                }
            }
        }
    }

    /// Waits as long as it takes (or until the mux closes).
    pub fn recv(&self) -> Result<Msg, RecvError> {
        self.recv_timeout(Duration::from_secs(u64::MAX / 4))
    }

    /// Appends up to `max` queued messages to `out`; returns how many.
    pub fn recv_batch(&self, out: &mut Vec<Msg>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.try_recv() {
                Some(m) => {
                    out.push(m);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// Stops (false) or resumes (true) receiving. Messages already queued here are moved
    /// to other receiving sockets by the engine.
    pub fn set_recv_enabled(&self, on: bool) {
        self.shared.receiving.store(on, Ordering::Release);
    }

    /// Sends one message on any psock with room (connected mode, KCM's load balancing).
    pub fn send(&mut self, msg: &[u8], cookie: Option<u32>) -> Result<(), SendError> {
        self.enqueue(msg.len(), cookie, None, None, |b| b.copy_from_slice(msg))
    }

    /// Sends one message on a named psock (addressed mode: the reply path of a server).
    pub fn send_to(&mut self, dest: PsockId, msg: &[u8], cookie: Option<u32>) -> Result<(), SendError> {
        self.enqueue(msg.len(), cookie, Some(dest), None, |b| b.copy_from_slice(msg))
    }

    /// Whether `msgs` more messages of `bytes` bytes in all can be sent now without
    /// `WouldBlock`: a sender that must not fail half-way (one request split into several
    /// messages) asks first, and holds its input while the answer is no.
    pub fn has_room(&mut self, msgs: usize, bytes: usize) -> bool {
        let free_slots = self.shared.tx.capacity() - self.shared.tx.len();
        if free_slots < msgs {
            return false;
        }
        let fits = |ring: &mut ByteRing| ring.free_space().len() >= bytes && ring.views_free() >= msgs;
        if !fits(&mut self.tx_ring) {
            // Sent messages hold their views until reclaimed: count them back first.
            self.tx_ring.reclaim();
        }
        fits(&mut self.tx_ring)
    }

    /// Builds a `len`-byte message in place in pinned memory and sends it.
    pub fn send_with(
        &mut self,
        len: usize,
        cookie: Option<u32>,
        dest: Option<PsockId>,
        build: impl FnOnce(&mut [u8]),
    ) -> Result<(), SendError> {
        self.enqueue(len, cookie, dest, None, build)
    }

    /// Answers a request through its reply slot ([`Msg::take_slot`]): sent to the request's
    /// connection once every earlier request of that connection has been answered or
    /// released. On error nothing was queued and the slot comes back.
    pub fn reply(&mut self, slot: ReplySlot, msg: &[u8], cookie: Option<u32>) -> Result<(), ReplyError> {
        self.reply_with(slot, msg.len(), cookie, |b| b.copy_from_slice(msg))
    }

    /// [`MsgSocket::reply`] with the reply built in place in pinned memory.
    pub fn reply_with(
        &mut self,
        slot: ReplySlot,
        len: usize,
        cookie: Option<u32>,
        build: impl FnOnce(&mut [u8]),
    ) -> Result<(), ReplyError> {
        match self.enqueue(len, cookie, Some(slot.origin()), Some(slot.position()), build) {
            Ok(()) => {
                slot.answer();
                Ok(())
            }
            Err(error) => Err(ReplyError { error, slot }),
        }
    }

    /// Queues many messages at once (sendmmsg / MSG_BATCH); returns how many were queued —
    /// a prefix; the rest met a full ring or queue.
    pub fn send_batch(
        &mut self,
        msgs: &[&[u8]],
        cookies: Option<&[u32]>,
        dest: Option<PsockId>,
    ) -> Result<usize, SendError> {
        let mut queued = msgs.len();
        for (i, m) in msgs.iter().enumerate() {
            let cookie = cookies.and_then(|c| c.get(i).copied());
            match self.queue(m.len(), cookie, dest, None, |b| b.copy_from_slice(m)) {
                Ok(()) => {}
                Err(e) if i == 0 && !matches!(e, SendError::WouldBlock) => return Err(e),
                Err(_) => {
                    queued = i;
                    break;
                }
            }
        }
        if queued > 0 {
            // One doorbell check for the whole batch.
            self.mux.bell.ring();
        }
        Ok(queued)
    }

    /// Like [`MsgSocket::send`], but waits (spin, yield, park) while there is no room.
    pub fn send_blocking(
        &mut self,
        msg: &[u8],
        cookie: Option<u32>,
        dest: Option<PsockId>,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let deadline = Instant::now() + timeout;
        let mut idle = 0;
        loop {
            match self.enqueue(msg.len(), cookie, dest, None, |b| b.copy_from_slice(msg)) {
                Err(SendError::WouldBlock) if Instant::now() < deadline => idle_step(&mut idle),
                r => return r,
            }
        }
    }

    /// Queues one message and wakes the engine if it sleeps.
    fn enqueue(
        &mut self,
        len: usize,
        cookie: Option<u32>,
        dest: Option<PsockId>,
        slot: Option<u64>,
        build: impl FnOnce(&mut [u8]),
    ) -> Result<(), SendError> {
        self.queue(len, cookie, dest, slot, build)?;
        self.mux.bell.ring();
        Ok(())
    }

    /// Queues one message for the engine (without ringing its doorbell).
    fn queue(
        &mut self,
        len: usize,
        cookie: Option<u32>,
        dest: Option<PsockId>,
        slot: Option<u64>,
        build: impl FnOnce(&mut [u8]),
    ) -> Result<(), SendError> {
        if self.mux.shut.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let max = self.tx_ring.capacity();
        if len > max || len == 0 {
            return Err(SendError::TooBig { len, max });
        }
        if self.shared.tx.is_full() {
            return Err(SendError::WouldBlock);
        }
        if cookie.is_some() && self.shared.in_flight.load(Ordering::Acquire) >= self.shared.completions.capacity() {
            return Err(SendError::WouldBlock);
        }
        // Releases of sent messages are taken in only when room runs short (batched: most
        // sends skip the release queue).
        if !self.tx_ring.can_take_view() || self.tx_ring.free_space().len() < len {
            self.tx_ring.reclaim();
            if !self.tx_ring.can_take_view() || self.tx_ring.free_space().len() < len {
                return Err(SendError::WouldBlock);
            }
        }
        let space = self.tx_ring.free_space();
        build(&mut space[..len]);
        self.tx_ring.commit(len);
        // Cannot fail: the bytes were just committed and a view slot was checked above.
        let data = self.tx_ring.take_view(len).expect("view slot checked");
        if cookie.is_some() {
            self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        let req = TxReq { data: TxData::Ring(data), cookie, dest, slot, sock: self.shared.id };
        // Cannot fail: only this socket pushes, and is_full was false above.
        if self.shared.tx.push(req).is_err() {
            return Err(SendError::WouldBlock);
        }
        let s = &self.shared.stats;
        bump(&s.tx_msgs, 1);
        bump(&s.tx_bytes, len as u64);
        Ok(())
    }

    /// Appends completions (cookies acknowledged by the peer, or failed) to `out`.
    pub fn completions(&self, out: &mut Vec<Completion>) -> usize {
        let mut n = 0;
        while let Some(c) = self.shared.completions.pop() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            out.push(c);
            n += 1;
        }
        n
    }

    /// The next mux event (psock errors and closes) this socket has not read. Every socket
    /// sees every event, and so does the engine ([`crate::Mux::next_event`]): reading here
    /// takes nothing from anyone else.
    pub fn next_event(&self) -> Option<MuxEvent> {
        self.shared.events.pop()
    }

    /// This socket's counters.
    pub fn stats(&self) -> SockStats {
        self.shared.snapshot()
    }

    fn count_rx(&self, m: &Msg) {
        let s = &self.shared.stats;
        bump(&s.rx_msgs, 1);
        bump(&s.rx_bytes, m.len() as u64);
    }
}

impl Drop for MsgSocket {
    fn drop(&mut self) {
        self.shared.receiving.store(false, Ordering::Release);
        self.shared.closed.store(true, Ordering::Release);
        self.mux.socks_gen.fetch_add(1, Ordering::Release);
    }
}

/// One step of the spin → yield → park idle strategy.
pub(crate) fn idle_step(n: &mut u32) {
    *n += 1;
    if *n < 64 {
        std::hint::spin_loop();
    } else if *n < 128 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}
