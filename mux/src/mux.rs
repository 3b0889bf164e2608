//! The multiplexor: psocks (attached connections) on the engine side, message sockets on
//! the application side, and the steering and transmit logic between them.
//!
//! `Mux::poll` runs on the engine thread (shared-nothing, like the engine that owns the
//! connections). Per call it: picks up socket changes, re-steers messages of sockets that
//! stopped receiving, moves send requests onto psocks (one whole message per psock at a
//! time — the atomicity rule), receives and delineates on every psock, and posts
//! completions for bytes the peers acknowledged.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use parking_lot::Mutex;
use ukcm_nic::PinnedBudget;
use ukcm_parsers::Parser;

use crate::assembler::{Assembler, Step};
use crate::completion::{Completion, CompletionStatus, CompletionTracker};
use crate::doorbell::Doorbell;
use crate::error::{PsockError, PsockErrorKind};
use crate::ids::{PsockId, SockId};
use crate::msg::Msg;
use crate::order::{Answer, Outcome, ReplyOrder, ReplySlot, SlotReleases};
use crate::psock_io::PsockIo;
use crate::socket::{MsgSocket, MuxEvent, MuxShared, SockShared, SocketConfig, TxData, TxReq};
use crate::stats::{MuxStats, PsockStats, StatsRow, StatsTable};
use crate::steer::{SockLoad, SteerPolicy, Steering};
use ukcm_nic::wakeup::Bell as EngineBell;

/// Queued messages of one psock written in one transport call.
const TX_GATHER: usize = 32;

/// Reply bytes gathered per psock before they are written (bounds one round's batch).
const RTC_OUT_MAX: usize = 256 * 1024;

/// A run-to-completion message handler.
type RtcHandler<'h> = dyn FnMut(&mut Request<'_>) + 'h;

/// A message handed to a run-to-completion handler on the engine thread, in place in its
/// psock's ring: read it, append the reply to [`Request::reply_buf`], or (ordered replies)
/// [`Request::defer`] the answer and give it later with [`Mux::reply`].
#[derive(Debug)]
pub struct Request<'a> {
    origin: PsockId,
    bytes: &'a [u8],
    out: &'a mut Vec<u8>,
    /// The transport's free send space, when this reply is next on the wire: replies built
    /// here need no copy above the transport.
    direct: Option<&'a mut [u8]>,
    /// Bytes of `direct` this request's reply has used.
    direct_used: usize,
    /// The message's reply position (ordered replies only).
    seq: Option<u64>,
    releases: &'a Arc<SlotReleases>,
    deferred: bool,
    postponed: bool,
}

impl<'a> Request<'a> {
    /// The psock the message came from.
    pub fn origin(&self) -> PsockId {
        self.origin
    }

    /// The message, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Where the reply goes: bytes appended here are the reply (nothing appended: no reply).
    /// They follow any part of the reply built with [`Request::reply_with`], and are copied
    /// once more on their way out: prefer `reply_with` where the length is known.
    pub fn reply_buf(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Appends `len` reply bytes that `build` writes: it is given exactly `len` bytes and
    /// must fill them all (in place they are not zeroed first). When the reply is next on the wire and fits
    /// in the transport's free send space, it is built there, in place: over the userspace
    /// stack that is smoltcp's tx ring, so nothing copies it before the frame. Otherwise it
    /// goes to the reply buffer ([`Request::reply_buf`]).
    pub fn reply_with(&mut self, len: usize, build: impl FnOnce(&mut [u8])) {
        // In place only while nothing of this reply went to the buffer (bytes keep their order).
        if self.out.is_empty() {
            if let Some(d) = self.direct.as_deref_mut() {
                if let Some(dst) = d.get_mut(self.direct_used..self.direct_used + len) {
                    build(dst);
                    self.direct_used += len;
                    return;
                }
            }
        }
        let at = self.out.len();
        self.out.resize(at + len, 0);
        build(&mut self.out[at..]);
    }

    /// Appends `bytes` to the reply ([`Request::reply_with`] with a copy of them).
    pub fn reply(&mut self, bytes: &[u8]) {
        self.reply_with(bytes.len(), |dst| dst.copy_from_slice(bytes));
    }

    /// Answers later: the returned slot holds the request's place in the connection's reply
    /// order until [`Mux::reply`] answers it or it is dropped. `None` unless the mux orders
    /// replies (`MuxConfig::ordered`), or if already deferred. Bytes appended to the reply
    /// buffer before or after deferring are not sent.
    pub fn defer(&mut self) -> Option<ReplySlot> {
        let seq = self.seq.filter(|_| !self.deferred)?;
        self.deferred = true;
        Some(ReplySlot::new(self.origin, seq, Arc::clone(self.releases)))
    }

    /// Not now: the handler cannot take this request yet (say its upstream's queue is full).
    /// It stays where it is, at the head of its connection's stream, undelivered; nothing
    /// after it on that connection is handled this round, and it is offered again on a
    /// later round (counted in `rx_postponed`). Nothing appended to its reply is sent.
    /// This is backpressure for run-to-completion handlers: the connection's unread bytes
    /// pile up in its ring and then the peer's window closes, as for a slow reader. False
    /// (and nothing changes) once the request was deferred.
    pub fn postpone(&mut self) -> bool {
        if self.deferred {
            return false;
        }
        self.postponed = true;
        true
    }

    /// Takes back this request's deferred slot (e.g. the request could not be sent on):
    /// the reply buffer answers it again. The slot comes back if it is not this request's.
    pub fn undefer(&mut self, slot: ReplySlot) -> Result<(), ReplySlot> {
        if !self.deferred || self.seq != Some(slot.position()) || slot.origin() != self.origin {
            return Err(slot);
        }
        slot.answer();
        self.deferred = false;
        Ok(())
    }
}

/// Configuration of a mux.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// How received messages are spread over sockets.
    pub steer: SteerPolicy,
    /// Queue and ring sizes of each message socket.
    pub socket: SocketConfig,
    /// Largest message accepted on a psock (further capped by its rx ring).
    pub max_message: usize,
    /// Assembly timeout per message (None: wait forever).
    pub assembly_timeout: Option<Duration>,
    /// Send requests waiting for any psock (connected mode) before sockets are pushed back.
    pub pending_tx: usize,
    /// Messages delivered per psock per poll at most (bounds a poll's work).
    pub rx_batch: usize,
    /// Mux events kept for the application.
    pub events: usize,
    /// Replies leave each connection in request order: every delivered message carries a
    /// [`ReplySlot`] (see [`crate::order`]). Off: KCM's semantics, replies leave as sent.
    pub ordered: bool,
    /// With `ordered`, requests of one psock delivered and not yet answered at most; at the
    /// limit the psock stops being delineated (backpressure, `rx_unanswered_stalls`).
    pub max_unanswered: usize,
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            steer: SteerPolicy::BatchRoundRobin,
            socket: SocketConfig::default(),
            max_message: 16 << 20,
            assembly_timeout: None,
            pending_tx: 1024,
            rx_batch: 64,
            events: 1024,
            ordered: false,
            max_unanswered: 1024,
        }
    }
}

struct Psock<T> {
    id: PsockId,
    io: T,
    asm: Assembler<Box<dyn Parser>>,
    stats: PsockStats,
    failed: Option<PsockError>,
    eof: bool,
    /// Message being written and bytes of it written so far.
    cur: Option<(TxReq, usize)>,
    /// Addressed messages waiting for this psock.
    queue: VecDeque<TxReq>,
    completions: CompletionTracker,
    /// A delineated message no socket could take yet (its length): delivered first next poll.
    held: Option<usize>,
    /// The rx ring was full at the last fill: more may wait in the transport.
    ring_full: bool,
    /// Run-to-completion replies the transport has not taken yet (at most one handler
    /// call's worth: the psock handles no more messages until it is written).
    rtc_out: Vec<u8>,
    rtc_done: usize,
    /// Reply order (used when the mux orders replies).
    order: ReplyOrder<TxReq>,
    /// Delineation is paused at the unanswered limit (counted once per pause).
    order_stalled: bool,
    label: String,
}

impl<T: PsockIo> Psock<T> {
    /// Can still send (a peer that closed its side may still read our replies).
    fn usable(&self) -> bool {
        self.failed.is_none()
    }
    /// At the unanswered-request limit (`limit`: ordered replies only): delineation pauses,
    /// counted once per pause.
    fn order_full(&mut self, limit: Option<u64>) -> bool {
        let full = limit.is_some_and(|m| self.order.unanswered() >= m);
        if full && !self.order_stalled {
            self.stats.rx_unanswered_stalls += 1;
        }
        self.order_stalled = full;
        full
    }

    fn tx_idle(&self) -> bool {
        self.cur.is_none() && self.queue.is_empty() && self.rtc_done == self.rtc_out.len()
    }
}

/// The engine side of a mux over connections of type `T`.
pub struct Mux<T> {
    shared: Arc<MuxShared>,
    cfg: MuxConfig,
    /// Boxed: a round takes each visited psock out of its slot and puts it back, which
    /// moved ~740 bytes twice per visit when they were stored inline.
    psocks: Vec<Option<Box<Psock<T>>>>,
    /// Generation of each psock slot, bumped when the slot is reused.
    gens: Vec<u32>,
    free_ids: Vec<u32>,
    socks: Vec<Arc<SockShared>>,
    socks_gen: u64,
    loads: Vec<SockLoad>,
    steering: Steering,
    stats: MuxStats,
    pending: VecDeque<TxReq>,
    tx_cursor: usize,
    /// Psock slots to visit next round (ready or with work pending), each once.
    active: Vec<u32>,
    is_active: Vec<bool>,
    /// Slots of psocks without a readiness key: visited every round.
    always: Vec<u32>,
    /// Psock slot by the transport's ready key.
    by_key: Vec<Option<PsockId>>,
    pub(crate) ready_scratch: Vec<ukcm_stack::ConnId>,
    /// Messages were queued to sockets this round: wake their sleeping receivers.
    delivered: bool,
}

impl<T> std::fmt::Debug for Mux<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux")
            .field("psocks", &self.psocks.iter().flatten().count())
            .field("socks", &self.socks.len())
            .finish()
    }
}

impl<T: PsockIo> Mux<T> {
    /// A mux and its first message socket (KCM: `socket(AF_KCM, …)`; clone it for more).
    pub fn new(cfg: MuxConfig, budget: &Arc<PinnedBudget>) -> Result<(Self, MsgSocket), ukcm_nic::RingError> {
        let bell = Arc::new(
            EngineBell::new().map_err(|e| ukcm_nic::RingError::Sys("eventfd", e.raw_os_error().unwrap_or(0)))?,
        );
        let shared = Arc::new(MuxShared {
            socks: Mutex::new(Vec::new()),
            socks_gen: Default::default(),
            next_sock: Default::default(),
            events: ArrayQueue::new(cfg.events.max(1)),
            events_dropped: Default::default(),
            shut: Default::default(),
            budget: Arc::clone(budget),
            sock_cfg: cfg.socket,
            releases: Arc::new(SlotReleases { queue: Default::default(), bell: Some(Arc::clone(&bell)) }),
            bell,
        });
        let first = shared.new_socket()?;
        let mux = Mux {
            steering: Steering::new(cfg.steer.clone()),
            shared,
            cfg,
            psocks: Vec::new(),
            gens: Vec::new(),
            free_ids: Vec::new(),
            socks: Vec::new(),
            socks_gen: u64::MAX,
            loads: Vec::new(),
            stats: MuxStats::default(),
            pending: VecDeque::new(),
            tx_cursor: 0,
            active: Vec::new(),
            is_active: Vec::new(),
            always: Vec::new(),
            by_key: Vec::new(),
            ready_scratch: Vec::new(),
            delivered: false,
        };
        Ok((mux, first))
    }

    /// Another message socket (same as `MsgSocket::try_clone`).
    pub fn socket(&self) -> Result<MsgSocket, ukcm_nic::RingError> {
        self.shared.new_socket()
    }

    /// Attaches a connection with its parser (KCM's `SIOCKCMATTACH`).
    pub fn attach(&mut self, io: T, parser: Box<dyn Parser>) -> PsockId {
        let max = self.cfg.max_message.min(io.rx_capacity());
        let label = io.label();
        let idx = match self.free_ids.pop() {
            Some(i) => {
                self.gens[i as usize] = self.gens[i as usize].wrapping_add(1);
                i
            }
            None => {
                self.psocks.push(None);
                self.gens.push(0);
                self.is_active.push(false);
                (self.psocks.len() - 1) as u32
            }
        };
        let id = PsockId::new(idx, self.gens[idx as usize]);
        match io.ready_key() {
            Some(k) => {
                if self.by_key.len() <= k {
                    self.by_key.resize(k + 1, None);
                }
                self.by_key[k] = Some(id);
            }
            None => self.always.push(idx),
        }
        self.psocks[idx as usize] = Some(Box::new(Psock {
            id,
            io,
            asm: Assembler::new(parser, max, self.cfg.assembly_timeout),
            stats: PsockStats::default(),
            failed: None,
            eof: false,
            cur: None,
            queue: VecDeque::new(),
            completions: CompletionTracker::new(),
            held: None,
            ring_full: false,
            rtc_out: Vec::new(),
            rtc_done: 0,
            order: ReplyOrder::default(),
            order_stalled: false,
            label,
        }));
        self.stats.psock_attach += 1;
        self.activate(idx);
        id
    }

    fn activate(&mut self, idx: u32) {
        if !self.is_active[idx as usize] {
            self.is_active[idx as usize] = true;
            self.active.push(idx);
        }
    }

    /// The owner reports that the connection with this ready key (see
    /// [`PsockIo::ready_key`]) has news: its psock is visited next round.
    pub fn mark_ready_key(&mut self, key: usize) {
        if let Some(Some(id)) = self.by_key.get(key) {
            let idx = id.index() as u32;
            self.activate(idx);
        }
    }

    /// The engine thread's idle sleep: `wait` is given a descriptor that polls readable as
    /// soon as an application thread sends through one of this mux's sockets (or drops a
    /// reply slot unanswered, which may free parked replies), and should
    /// sleep on it along with the port (at most as long as it would nap anyway). Not called
    /// when a send or a released slot is already queued. A sleeping engine costs senders one eventfd write;
    /// an awake one, nothing but a fence.
    pub fn wait_idle(&self, wait: impl FnOnce(std::os::fd::RawFd)) {
        let bell = &self.shared.bell;
        bell.arm();
        // News published before the bell was armed rang nobody: look once more.
        let news = self.socks.iter().any(|s| !s.tx.is_empty()) || !self.shared.releases.queue.is_empty();
        if !news {
            wait(bell.fd());
        }
        bell.disarm();
    }

    /// Marks a psock to be visited next round.
    pub fn mark_ready(&mut self, id: PsockId) {
        if self.psock(id).is_some() {
            self.activate(id.index() as u32);
        }
    }

    /// Detaches a psock (KCM's `SIOCKCMUNATTACH`). Its counters fold into the mux. A psock
    /// in the middle of a received message counts an abort and its connection is closed
    /// (the stream cannot be reused mid-message); otherwise the connection is handed back.
    /// Messages already delivered from it stay valid. Sends waiting for it fail.
    pub fn unattach_with(&mut self, ctx: &mut T::Ctx, id: PsockId) -> Option<T> {
        let slot = self.psocks.get_mut(id.index())?;
        if slot.as_ref()?.id != id {
            return None;
        }
        let mut p = slot.take()?;
        self.free_ids.push(id.index() as u32);
        match p.io.ready_key() {
            Some(k) => {
                if self.by_key.get(k) == Some(&Some(id)) {
                    self.by_key[k] = None;
                }
            }
            None => self.always.retain(|&i| i as usize != id.index()),
        }
        self.stats.psock_unattach += 1;
        if p.cur.is_some() {
            self.stats.psock_unattach_rsvd += 1;
        }
        let mid = p.asm.mid_message() || p.held.is_some();
        if mid {
            p.stats.rx_aborts += 1;
        }
        let tx_mid = p.cur.as_ref().is_some_and(|(_, done)| *done > 0);
        self.fail_tx(&mut p, PsockErrorKind::Pipe);
        self.stats.folded.fold(&p.stats);
        self.steering.psock_gone(id);
        if mid || tx_mid {
            p.io.close(ctx);
            return None;
        }
        Some(p.io)
    }

    fn psock(&self, id: PsockId) -> Option<&Psock<T>> {
        self.psocks.get(id.index())?.as_deref().filter(|p| p.id == id)
    }

    /// Whether `msg` is a view into its origin psock's receive ring (zero-copy proof);
    /// false if the psock is gone.
    pub fn msg_in_ring(&self, msg: &Msg) -> bool {
        self.psock(msg.origin()).is_some_and(|p| p.io.rx_contains(msg.as_ptr(), msg.len()))
    }

    /// Whether a psock has nothing left to write: no message queued or half written, and
    /// every byte acknowledged by the peer (then it can be unattached without losing a reply).
    /// `None` if the id is not attached.
    pub fn psock_tx_idle(&self, id: PsockId) -> Option<bool> {
        let p = self.psock(id)?;
        Some(p.tx_idle() && p.completions.unacked_bytes() == 0)
    }

    /// Whether a psock's assembler holds the start of a message and waits for the rest (a
    /// header or part of a body seen). Lets a caller, or a test, know the mux has taken a
    /// partial message before it sends the remainder. `None` if the id is not attached.
    pub fn psock_mid_message(&self, id: PsockId) -> Option<bool> {
        Some(self.psock(id)?.asm.mid_message())
    }

    /// Requests of a psock delivered and not yet answered or released (ordered replies;
    /// always 0 otherwise). `None` if the id is not attached.
    pub fn psock_unanswered(&self, id: PsockId) -> Option<u64> {
        Some(self.psock(id)?.order.unanswered())
    }

    /// Replies of a psock waiting for an earlier request's answer.
    pub fn psock_replies_held(&self, id: PsockId) -> Option<usize> {
        Some(self.psock(id)?.order.held())
    }

    /// Answers a request on the engine thread (a slot from [`Request::defer`], or one a
    /// worker handed back): the reply leaves once every earlier request of its connection
    /// is answered. A slot whose psock is gone fails (`EPIPE`), and so does an empty reply
    /// (drop the slot instead to give up its place).
    pub fn reply(&mut self, slot: ReplySlot, bytes: &[u8]) -> Result<(), PsockErrorKind> {
        if bytes.is_empty() {
            return Err(PsockErrorKind::MsgSize);
        }
        let (dest, seq) = slot.answer();
        let req = TxReq {
            data: TxData::Owned(bytes.to_vec()),
            cookie: None,
            dest: Some(dest),
            slot: Some(seq),
            sock: SockId(u32::MAX),
        };
        match self.psocks.get_mut(dest.index()).and_then(|p| p.as_mut()) {
            Some(p) if p.id == dest && p.usable() => {
                // The reply was copied out of the caller's buffer: counted like every copy.
                p.stats.tx_copied_bytes += bytes.len() as u64;
                if let Some(stale) = answer_slot(p, seq, Answer::Reply(req)) {
                    self.complete_failed(stale, PsockErrorKind::Pipe);
                }
                self.activate(dest.index() as u32);
                Ok(())
            }
            _ => Err(PsockErrorKind::Pipe),
        }
    }

    /// The unanswered-request limit, when replies are ordered.
    fn order_limit(&self) -> Option<u64> {
        self.cfg.ordered.then_some(self.cfg.max_unanswered as u64)
    }

    /// Takes in the slots dropped unanswered since the last round.
    fn take_releases(&mut self) -> bool {
        let mut work = false;
        while let Some((id, seq)) = self.shared.releases.queue.pop() {
            work = true;
            if let Some(p) = self.psocks.get_mut(id.index()).and_then(|p| p.as_mut()).filter(|p| p.id == id) {
                // A release carries no reply: nothing to fail.
                let _ = answer_slot(p, seq, Answer::Released);
                self.activate(id.index() as u32);
            }
        }
        work
    }

    /// The next mux event (psock errors and closes), for the thread that owns the mux.
    /// Sockets have their own copies ([`MsgSocket::next_event`]): they cannot take the
    /// engine's (a `PsockClosed` read by a worker would leave the psock attached forever).
    pub fn next_event(&self) -> Option<MuxEvent> {
        self.shared.events.pop()
    }

    /// Psocks currently attached.
    pub fn psock_ids(&self) -> Vec<PsockId> {
        self.psocks.iter().flatten().map(|p| p.id).collect()
    }

    /// The error a psock stopped with, if any.
    pub fn psock_error(&self, id: PsockId) -> Option<PsockError> {
        self.psock(id)?.failed
    }

    /// Mux-level counters.
    pub fn stats(&self) -> MuxStats {
        self.stats
    }

    /// Counters of one psock.
    pub fn psock_stats(&self, id: PsockId) -> Option<PsockStats> {
        Some(self.psock(id)?.stats)
    }

    /// A printable snapshot (like `/proc/net/kcm_stats`).
    pub fn stats_table(&self) -> StatsTable {
        self.stats_table_rows(usize::MAX)
    }

    /// [`Mux::stats_table`] with rows for at most `rows` psocks; the totals still count every
    /// one. For periodic snapshots: with thousands of connections, a row and a formatted
    /// label for each, five times a second, cost the engine thread time and every
    /// connection a few hundred bytes more.
    pub fn stats_table_rows(&self, rows: usize) -> StatsTable {
        let mut total = self.stats.folded;
        let mut psocks = Vec::new();
        let mut psocks_not_shown = 0;
        for p in self.psocks.iter().flatten() {
            total.fold(&p.stats);
            if psocks.len() < rows {
                psocks.push(StatsRow { label: format!("psock {} {}", p.id.index(), p.label), stats: p.stats });
            } else {
                psocks_not_shown += 1;
            }
        }
        let socks = self.shared.socks.lock().iter().map(|s| (format!("sock {}", s.id.0), s.snapshot())).collect();
        StatsTable { mux: self.stats, total, psocks, psocks_not_shown, socks }
    }

    /// Mux events the application has not read yet were dropped this many times (bounded queue).
    pub fn events_dropped(&self) -> u64 {
        self.shared.events_dropped.load(Ordering::Relaxed)
    }

    /// Marks the mux closed: sockets' blocking calls return `Closed` once drained.
    pub fn shutdown(&mut self) {
        self.shared.shut.store(true, Ordering::Release);
        self.wake_receivers(true);
    }

    /// One round of work; returns whether anything happened. Psocks whose transport has a
    /// ready key are visited only after [`Mux::mark_ready_key`] (or while they have work
    /// pending); over an engine, [`Mux::poll_engine`] does the marking.
    pub fn poll_with(&mut self, ctx: &mut T::Ctx, now: Instant) -> bool {
        self.poll_inner(ctx, now, None)
    }

    /// Run-to-completion round: every complete message is handed to `handler` on this
    /// thread, in place in its psock's ring (no `Msg`, no queue), with the psock it came from
    /// and a buffer to append the reply to; the reply is written to that psock whole, before
    /// anything else it sends. Message sockets still work alongside (their sends are
    /// transmitted; received messages all go to the handler).
    pub fn poll_rtc(
        &mut self,
        ctx: &mut T::Ctx,
        now: Instant,
        mut handler: impl FnMut(PsockId, &[u8], &mut Vec<u8>),
    ) -> bool {
        self.poll_inner(ctx, now, Some(&mut |r: &mut Request<'_>| handler(r.origin, r.bytes, &mut *r.out)))
    }

    /// [`Mux::poll_rtc`] with the whole [`Request`]: the handler may also defer its answer
    /// (ordered replies) and give it later with [`Mux::reply`].
    pub fn poll_requests(&mut self, ctx: &mut T::Ctx, now: Instant, mut handler: impl FnMut(&mut Request<'_>)) -> bool {
        self.poll_inner(ctx, now, Some(&mut handler))
    }

    fn poll_inner(&mut self, ctx: &mut T::Ctx, now: Instant, mut handler: Option<&mut RtcHandler<'_>>) -> bool {
        let mut work = false;
        self.sync_sockets();
        work |= self.resteer_disabled();
        work |= self.collect_tx();
        if self.cfg.ordered {
            work |= self.take_releases();
        }
        // Socket loads once per round; deliveries below keep them current.
        self.refresh_loads();
        // Visit the psocks with news or pending work, and those without a readiness source.
        let mut visit = std::mem::take(&mut self.active);
        for &i in &visit {
            self.is_active[i as usize] = false;
        }
        for &i in &self.always {
            if !self.is_active[i as usize] {
                visit.push(i);
            }
        }
        for &i in &visit {
            let i = i as usize;
            let Some(mut p) = self.psocks[i].take() else { continue };
            work |= self.tx_psock(ctx, &mut p);
            work |= match handler.as_deref_mut() {
                Some(h) => self.rx_psock_rtc(ctx, &mut p, now, h),
                None => self.rx_psock(ctx, &mut p, now),
            };
            work |= self.complete_psock(ctx, &mut p);
            // A psock paused at the unanswered limit waits for an answer, which activates it,
            // rather than being polled every round.
            let pending = p.failed.is_none()
                && ((!p.order_stalled && (p.held.is_some() || p.ring_full))
                    || !p.tx_idle()
                    || p.completions.unacked_bytes() > 0
                    || p.io.views_outstanding() > 0
                    || p.asm.deadline().is_some());
            let keyed = p.io.ready_key().is_some();
            self.psocks[i] = Some(p);
            if pending && keyed {
                self.activate(i as u32);
            }
        }
        visit.clear();
        if self.active.is_empty() {
            self.active = visit; // keep the allocation
        }
        if std::mem::take(&mut self.delivered) {
            self.wake_receivers(false);
        }
        work
    }

    /// Unparks receivers sleeping in `recv` that have messages queued (or all, on shutdown).
    /// One fence per round that delivered anything; a system call only for a sleeping thread.
    fn wake_receivers(&self, all: bool) {
        Doorbell::fence();
        for s in &self.socks {
            if s.bell.sleeping() && (all || !s.rx.is_empty()) {
                s.bell.ring();
            }
        }
    }

    fn sync_sockets(&mut self) {
        let gen = self.shared.socks_gen.load(Ordering::Acquire);
        if gen == self.socks_gen {
            return;
        }
        self.socks_gen = gen;
        let mut list = self.shared.socks.lock();
        // Closed sockets leave once their queued messages have moved elsewhere.
        let closed: Vec<Arc<SockShared>> = list.iter().filter(|s| s.closed.load(Ordering::Acquire)).cloned().collect();
        list.retain(|s| !s.closed.load(Ordering::Acquire) || !s.rx.is_empty());
        self.socks = list.clone();
        drop(list);
        self.socks.sort_by_key(|s| s.id);
        for s in closed {
            // Whatever a closed socket still had to send is still sent.
            while let Some(r) = s.tx.pop() {
                self.pending.push_back(r);
            }
        }
    }

    fn refresh_loads(&mut self) {
        self.loads.clear();
        for s in &self.socks {
            self.loads.push(SockLoad {
                id: s.id,
                receiving: s.receiving.load(Ordering::Acquire) && !s.closed.load(Ordering::Acquire),
                queued: s.rx.len(),
                capacity: s.rx.capacity(),
            });
        }
    }

    /// Position of a socket in `socks` (and in `loads`).
    fn sock_index(&self, id: SockId) -> Option<usize> {
        self.socks.binary_search_by_key(&id, |s| s.id).ok()
    }

    fn sock(&self, id: SockId) -> Option<&Arc<SockShared>> {
        self.socks.binary_search_by_key(&id, |s| s.id).ok().map(|i| &self.socks[i])
    }

    /// recv-disable (and close): move queued messages to sockets that are receiving.
    fn resteer_disabled(&mut self) -> bool {
        let mut moved = false;
        let mut any_closed_left = false;
        for i in 0..self.socks.len() {
            let s = Arc::clone(&self.socks[i]);
            let off = !s.receiving.load(Ordering::Acquire) || s.closed.load(Ordering::Acquire);
            if !off || s.rx.is_empty() {
                continue;
            }
            self.refresh_loads();
            while let Some(m) = s.rx.pop() {
                let target = match self.steering.policy() {
                    SteerPolicy::KeyHash(_) => self.steering.pick_for_msg(&m, &self.loads),
                    _ => self.steering.pick_batch(m.origin(), &self.loads),
                };
                match target.and_then(|t| self.sock(t).cloned()) {
                    Some(t) => {
                        if let Err(m) = t.rx.push(m) {
                            let _ = s.rx.push(m); // room was just checked; keep it if not
                            break;
                        }
                        moved = true;
                        self.delivered = true;
                        self.refresh_loads();
                    }
                    None => {
                        // Nobody can take it now; it stays queued here (a closed socket is
                        // kept until it is empty) and moves on a later poll.
                        let _ = s.rx.push(m);
                        break;
                    }
                }
            }
            any_closed_left |= s.closed.load(Ordering::Acquire) && !s.rx.is_empty();
        }
        if moved && !any_closed_left {
            // Let sync_sockets drop closed sockets that are now empty.
            self.socks_gen = u64::MAX;
        }
        moved
    }

    /// Takes send requests from the sockets: addressed ones to their psock, the rest to the
    /// shared pending queue (bounded: when full, requests stay in the sockets' queues).
    fn collect_tx(&mut self) -> bool {
        let mut work = false;
        for si in 0..self.socks.len() {
            while self.pending.len() < self.cfg.pending_tx {
                let Some(r) = self.socks[si].tx.pop() else { break };
                work = true;
                match r.dest {
                    Some(d) => match self.psocks.get_mut(d.index()).and_then(|p| p.as_mut()) {
                        Some(p) if p.id == d && p.usable() => {
                            let stale = match r.slot {
                                None => {
                                    p.queue.push_back(r);
                                    None
                                }
                                Some(seq) => answer_slot(p, seq, Answer::Reply(r)),
                            };
                            if let Some(r) = stale {
                                self.complete_failed(r, PsockErrorKind::Pipe);
                            }
                            self.activate(d.index() as u32);
                        }
                        _ => self.complete_failed(r, PsockErrorKind::Pipe),
                    },
                    None => self.pending.push_back(r),
                }
            }
        }
        // Connected mode: give pending messages to idle psocks, round-robin.
        let n = self.psocks.len();
        while !self.pending.is_empty() && n > 0 {
            let mut placed = false;
            for k in 0..n {
                let i = (self.tx_cursor + k) % n;
                if let Some(p) = self.psocks[i].as_mut() {
                    if p.usable() && !p.eof && p.tx_idle() {
                        let r = self.pending.pop_front().expect("non-empty");
                        p.queue.push_back(r);
                        if !self.is_active[i] {
                            self.is_active[i] = true;
                            self.active.push(i as u32);
                        }
                        self.tx_cursor = (i + 1) % n;
                        placed = true;
                        work = true;
                        break;
                    }
                }
            }
            if !placed {
                break;
            }
        }
        work
    }

    fn complete_failed(&mut self, r: TxReq, why: PsockErrorKind) {
        if let Some(s) = self.sock(r.sock) {
            s.stats.tx_failed.fetch_add(1, Ordering::Relaxed);
            if let Some(cookie) = r.cookie {
                // Cannot overflow: in_flight (bounded by capacity) counts this cookie.
                let _ = s.completions.push(Completion { cookie, status: CompletionStatus::Failed(why) });
            }
        }
    }

    /// Writes the current message of a psock, then the next; one message at a time.
    fn tx_psock(&mut self, ctx: &mut T::Ctx, p: &mut Psock<T>) -> bool {
        let mut work = false;
        if p.cur.is_none() && p.rtc_done < p.rtc_out.len() {
            work |= self.flush_rtc(ctx, p);
            if p.rtc_done < p.rtc_out.len() {
                return work;
            }
        }
        while p.usable() {
            if p.cur.is_none() {
                match p.queue.pop_front() {
                    Some(r) => p.cur = Some((r, 0)),
                    None => break,
                }
            }
            // The rest of the current message and whole queued ones after it, in one write.
            let (req, done) = p.cur.as_ref().expect("set above");
            let mut bufs: [&[u8]; TX_GATHER] = [&[]; TX_GATHER];
            bufs[0] = &req.data[*done..];
            let mut nb = 1;
            for r in p.queue.iter().take(TX_GATHER - 1) {
                bufs[nb] = &r.data;
                nb += 1;
            }
            let mut n = match p.io.write_vectored(ctx, &bufs[..nb]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => {
                    self.fail_psock(ctx, p, PsockError::new(PsockErrorKind::Pipe));
                    work = true;
                    break;
                }
            };
            work = true;
            if p.io.write_copies() {
                p.stats.tx_copied_bytes += n as u64;
            }
            // Account the bytes message by message: each whole one is sent and tracked.
            while let Some((req, done)) = p.cur.as_mut() {
                let k = n.min(req.data.len() - *done);
                *done += k;
                n -= k;
                if *done < req.data.len() {
                    break;
                }
                let (req, _) = p.cur.take().expect("set");
                p.stats.tx_msgs += 1;
                p.stats.tx_bytes += req.data.len() as u64;
                p.completions.written(req.data.len(), req.cookie, req.sock);
                if n == 0 {
                    break;
                }
                p.cur = p.queue.pop_front().map(|r| (r, 0));
            }
            if p.cur.is_some() {
                break; // the transport took only part: it is full
            }
        }
        work
    }

    /// Receives, delineates and steers; stops at `rx_batch` messages or when no socket
    /// can take more (backpressure: the bytes stay in the ring, the window closes).
    fn rx_psock(&mut self, ctx: &mut T::Ctx, p: &mut Psock<T>, now: Instant) -> bool {
        let mut work = false;
        let Some(fill) = self.fill_psock(ctx, p, &mut work) else { return work };
        // The socket (index into `socks`, and `loads`, which follows it) this poll's batch goes to.
        let mut target: Option<usize> = None;
        let per_msg = self.steering.policy().per_message();
        let mut delivered = 0;
        while delivered < self.cfg.rx_batch {
            let len = match p.held.take() {
                Some(len) => len,
                None => match p.asm.step(p.io.unparsed(), now, &mut p.stats) {
                    Step::Message(len) => len,
                    Step::Wait => break,
                    Step::Failed(e) => {
                        self.fail_psock(ctx, p, e);
                        return true;
                    }
                },
            };
            if p.order_full(self.order_limit()) {
                // Too many requests unanswered: stop here until replies catch up.
                p.held = Some(len);
                break;
            }
            let pick = if per_msg {
                self.steering.pick_for_msg(&p.io.unparsed()[..len], &self.loads).and_then(|id| self.sock_index(id))
            } else {
                match target {
                    Some(t) if self.loads[t].receiving && self.loads[t].queued < self.loads[t].capacity => Some(t),
                    _ => self.steering.pick_batch(p.id, &self.loads).and_then(|id| self.sock_index(id)),
                }
            };
            // Nobody can take it, or too many of this psock's messages are still held by
            // the application: keep it for the next poll (backpressure, never a drop).
            let Some(t) = pick else {
                p.held = Some(len);
                break;
            };
            let Ok(view) = p.io.take_view(len) else {
                p.held = Some(len);
                break;
            };
            target = Some(t);
            let slot =
                self.cfg.ordered.then(|| ReplySlot::new(p.id, p.order.assign(), Arc::clone(&self.shared.releases)));
            if self.socks[t].rx.push(Msg::new(view, p.id, slot)).is_err() {
                // Unreachable: the engine is the only producer and room was checked.
                self.stats.rx_ready_drops += 1;
            }
            self.loads[t].queued += 1;
            delivered += 1;
            work = true;
        }
        self.delivered |= delivered > 0;
        if fill.eof {
            work |= self.peer_closed(ctx, p);
        }
        work
    }

    /// The peer closed its side: a clean close between messages is an event; a close in
    /// the middle of one is EPIPE. Whole messages still waiting for a socket are delivered
    /// first (EOF is seen again next round). Returns whether anything happened.
    fn peer_closed(&mut self, ctx: &mut T::Ctx, p: &mut Psock<T>) -> bool {
        if p.eof {
            return false;
        }
        if p.held.is_none() && p.io.unparsed().is_empty() {
            p.eof = true;
            self.shared.post(MuxEvent::PsockClosed(p.id));
            return true;
        }
        if p.asm.mid_message() {
            if let Some(e) = p.asm.end_of_stream(&mut p.stats) {
                self.fail_psock(ctx, p, e);
                return true;
            }
        }
        false
    }

    /// Reclaims released ring space and moves arrived bytes into the rx ring; `None` when
    /// the psock is out of service (failed, finished, or broken by this fill).
    fn fill_psock(&mut self, ctx: &mut T::Ctx, p: &mut Psock<T>, work: &mut bool) -> Option<crate::psock_io::Fill> {
        *work |= p.io.reclaim() > 0;
        if p.failed.is_some() || p.eof {
            return None;
        }
        match p.io.fill(ctx) {
            Ok(f) => {
                *work |= f.new_bytes > 0;
                p.ring_full = f.ring_full;
                p.stats.rx_copied_bytes += f.copied_bytes as u64;
                Some(f)
            }
            Err(_) => {
                let e = p.asm.end_of_stream(&mut p.stats).unwrap_or(PsockError::new(PsockErrorKind::Pipe));
                self.fail_psock(ctx, p, e);
                *work = true;
                None
            }
        }
    }

    /// Writes pending run-to-completion replies; returns whether bytes moved.
    fn flush_rtc(&mut self, ctx: &mut T::Ctx, p: &mut Psock<T>) -> bool {
        let mut work = false;
        while p.usable() && p.rtc_done < p.rtc_out.len() {
            match p.io.write(ctx, &p.rtc_out[p.rtc_done..]) {
                Ok(0) => break,
                Ok(n) => {
                    p.rtc_done += n;
                    if p.io.write_copies() {
                        p.stats.tx_copied_bytes += n as u64;
                    }
                    work = true;
                }
                Err(_) => {
                    self.fail_psock(ctx, p, PsockError::new(PsockErrorKind::Pipe));
                    return true;
                }
            }
        }
        if p.rtc_done == p.rtc_out.len() {
            p.completions.written(p.rtc_done, None, SockId(u32::MAX));
            p.rtc_out.clear();
            p.rtc_done = 0;
        }
        work
    }

    /// Run-to-completion receive: each message goes to the handler in place; the psock
    /// stops at a reply the transport cannot take yet (backpressure).
    ///
    /// Replies are built where they will be sent from: while a reply is next on the wire
    /// (nothing queued or held ahead of it) and fits, the handler writes it straight into
    /// the transport's own send buffer ([`PsockIo::tx_space`]), committed once per round —
    /// no copy above the transport. Otherwise it goes to `rtc_out`, written (and counted in
    /// `tx_copied_bytes` where the transport copies it) after the in-place ones.
    fn rx_psock_rtc(&mut self, ctx: &mut T::Ctx, p: &mut Psock<T>, now: Instant, handler: &mut RtcHandler<'_>) -> bool {
        let mut work = false;
        let Some(fill) = self.fill_psock(ctx, p, &mut work) else { return work };
        let mut handled = 0;
        // Replies of one round are gathered and written together (one write per psock per
        // round, not per message); a queued socket message mid-write, or replies the
        // transport has only partly taken, must finish before more replies are made.
        let ordered = self.cfg.ordered;
        let limit = self.order_limit();
        let can_run = |p: &Psock<T>| p.cur.is_none() && p.rtc_done == 0 && p.rtc_out.len() < RTC_OUT_MAX;
        // The transport's send space for this round, asked for at the first reply that is
        // next on the wire (none: every reply goes to `rtc_out`).
        let mut space: Option<&mut [u8]> = None;
        let mut asked = false;
        let mut in_place = 0;
        let mut failed = None;
        while handled < self.cfg.rx_batch && can_run(p) {
            if p.order_full(limit) {
                break;
            }
            let len = match p.held.take() {
                Some(len) => len,
                None => match p.asm.step(p.io.unparsed(), now, &mut p.stats) {
                    Step::Message(len) => len,
                    Step::Wait => break,
                    Step::Failed(e) => {
                        failed = Some(e);
                        break;
                    }
                },
            };
            let before = p.rtc_out.len();
            // In place only while this reply is next on the wire: nothing in `rtc_out` or
            // queued ahead of it and, ordered, no earlier request unanswered.
            let next_on_wire = before == 0 && p.queue.is_empty() && (!ordered || p.order.unanswered() == 0);
            if next_on_wire && !asked {
                asked = true;
                space = p.io.tx_space(ctx);
            }
            let direct = match space.as_deref_mut() {
                Some(s) if next_on_wire && in_place < s.len() => Some(&mut s[in_place..]),
                _ => None,
            };
            // The fast path: in order and nothing queued ahead, the reply stays in `rtc_out`.
            let seq = ordered.then(|| p.order.assign());
            let mut req = Request {
                origin: p.id,
                bytes: &p.io.unparsed()[..len],
                out: &mut p.rtc_out,
                direct,
                direct_used: 0,
                seq,
                releases: &self.shared.releases,
                deferred: false,
                postponed: false,
            };
            handler(&mut req);
            if req.postponed {
                // Not delivered after all: back in the stream, its reply position given back.
                p.rtc_out.truncate(before);
                if let Some(seq) = seq {
                    p.order.unassign(seq);
                }
                p.held = Some(len);
                p.stats.rx_postponed += 1;
                // Not work: the retry waits for whatever frees the handler's downstream.
                break;
            }
            let deferred = req.deferred;
            // Bytes a deferring handler wrote in place are not committed.
            let built_in_place = if deferred { 0 } else { req.direct_used };
            in_place += built_in_place;
            // Cannot fail: `len` bytes are unparsed (the assembler just saw them).
            let _ = p.io.discard(len);
            if let Some(seq) = seq {
                if deferred {
                    p.rtc_out.truncate(before);
                } else if p.order.unanswered() == 1 && p.queue.is_empty() {
                    // Only this request is outstanding: its reply is next on the wire.
                    let mut none = None;
                    let _ = p.order.answer(seq, &mut none);
                    if p.rtc_out.len() == before && built_in_place == 0 {
                        p.stats.tx_slots_released += 1;
                    }
                } else {
                    // Behind a deferred answer: the reply waits its turn (one copy, counted).
                    let a = if p.rtc_out.len() > before {
                        let bytes = p.rtc_out.split_off(before);
                        p.stats.tx_copied_bytes += bytes.len() as u64;
                        Answer::Reply(TxReq {
                            data: TxData::Owned(bytes),
                            cookie: None,
                            dest: Some(p.id),
                            slot: Some(seq),
                            sock: SockId(u32::MAX),
                        })
                    } else {
                        Answer::Released
                    };
                    if let Some(r) = answer_slot(p, seq, a) {
                        self.complete_failed(r, PsockErrorKind::Pipe);
                    }
                }
            }
            let replied = p.rtc_out.len() - before + built_in_place;
            if replied > 0 {
                p.stats.tx_msgs += 1;
                p.stats.tx_bytes += replied as u64;
            }
            handled += 1;
            work = true;
        }
        // What was built in place goes out first: `rtc_out` holds only later replies.
        if in_place > 0 {
            match p.io.tx_commit(ctx, in_place) {
                Ok(()) => p.completions.written(in_place, None, SockId(u32::MAX)),
                Err(_) => failed = failed.or(Some(PsockError::new(PsockErrorKind::Pipe))),
            }
        }
        if let Some(e) = failed {
            self.fail_psock(ctx, p, e);
            return true;
        }
        if !p.rtc_out.is_empty() {
            self.flush_rtc(ctx, p);
        }
        if fill.eof {
            work |= self.peer_closed(ctx, p);
        }
        work
    }

    /// Reports the cookies the peer's acknowledgements completed. Without cookies pending the
    /// transport is asked only once the psock has nothing queued and bytes are still
    /// unacknowledged, so `psock_tx_idle` turns true for cookie-less traffic too.
    fn complete_psock(&mut self, ctx: &mut T::Ctx, p: &mut Psock<T>) -> bool {
        if p.completions.pending() == 0 && (p.completions.unacked_bytes() == 0 || !p.tx_idle()) {
            return false;
        }
        let acked = match p.io.acked_total(ctx) {
            Ok(a) => a,
            Err(_) => return false,
        };
        let socks = &self.socks;
        let n = p.completions.acked(acked, |sid, c| {
            if let Ok(i) = socks.binary_search_by_key(&sid, |s| s.id) {
                let s = &socks[i];
                s.stats.tx_completions.fetch_add(1, Ordering::Relaxed);
                let _ = s.completions.push(c);
            }
        });
        n > 0
    }

    fn fail_psock(&mut self, ctx: &mut T::Ctx, p: &mut Psock<T>, e: PsockError) {
        if p.failed.is_some() {
            return;
        }
        p.failed = Some(e);
        self.shared.post(MuxEvent::PsockError(p.id, e));
        self.fail_tx(p, e.kind);
        p.io.close(ctx);
    }

    /// Fails what a psock had to send: connected-mode messages are retried from their start
    /// on another psock; addressed ones and unacknowledged completions are reported failed.
    fn fail_tx(&mut self, p: &mut Psock<T>, why: PsockErrorKind) {
        if let Some((r, done)) = p.cur.take() {
            if done > 0 {
                p.stats.tx_aborts += 1;
            }
            if r.dest.is_none() {
                self.stats.tx_retries += 1;
                self.pending.push_front(r);
            } else {
                self.complete_failed(r, why);
            }
        }
        while let Some(r) = p.queue.pop_front() {
            if r.dest.is_none() {
                self.pending.push_front(r);
            } else {
                self.complete_failed(r, why);
            }
        }
        let parked: Vec<TxReq> = p.order.drain_parked().collect();
        for r in parked {
            self.complete_failed(r, why);
        }
        let socks = &self.socks;
        p.completions.fail_all(why, |sid, c| {
            if let Ok(i) = socks.binary_search_by_key(&sid, |s| s.id) {
                socks[i].stats.tx_failed.fetch_add(1, Ordering::Relaxed);
                let _ = socks[i].completions.push(c);
            }
        });
    }
}

impl<T: PsockIo<Ctx = ()>> Mux<T> {
    /// One round of work for transports that need no context (kernel sockets).
    pub fn poll(&mut self, now: Instant) -> bool {
        self.poll_with(&mut (), now)
    }

    /// [`Mux::unattach_with`] for transports that need no context.
    pub fn unattach(&mut self, id: PsockId) -> Option<T> {
        self.unattach_with(&mut (), id)
    }
}

impl<T> Drop for Mux<T> {
    fn drop(&mut self) {
        self.shared.shut.store(true, Ordering::Release);
        Doorbell::fence();
        for s in self.shared.socks.lock().iter() {
            s.bell.ring();
        }
    }
}

/// Records the answer for position `seq` of psock `p` and queues, in order, every reply whose
/// turn has come. Returns a reply that answered a position not outstanding (a stale slot),
/// for the caller to report failed.
fn answer_slot<T>(p: &mut Psock<T>, seq: u64, a: Answer<TxReq>) -> Option<TxReq> {
    let is_reply = matches!(a, Answer::Reply(_));
    let mut a = Some(a);
    match p.order.answer(seq, &mut a) {
        Ok(Outcome::Head) => {
            match a {
                Some(Answer::Reply(r)) => p.queue.push_back(r),
                _ => p.stats.tx_slots_released += 1,
            }
            while let Some(next) = p.order.pop_ready() {
                match next {
                    Answer::Reply(r) => p.queue.push_back(r),
                    Answer::Released => p.stats.tx_slots_released += 1,
                }
            }
        }
        Ok(Outcome::Parked) => {
            if is_reply {
                p.stats.tx_replies_held += 1;
            }
        }
        Err(_) => {
            // A position never handed out or answered twice: a reply from a stale slot.
            if let Some(Answer::Reply(r)) = a {
                return Some(r);
            }
        }
    }
    None
}

#[cfg(test)]
mod state_size_tests {
    use super::*;

    /// The figure charged per engine connection covers the psock over it and its slot
    /// tables (twice, for the doubling), and the stats row each snapshot makes for it.
    #[test]
    fn the_state_charge_covers_a_psock() {
        use std::mem::size_of;
        type P = crate::stack_psock::StackPsock<ukcm_nic::MemPort>;
        let slot = size_of::<Option<Box<Psock<P>>>>()
            + size_of::<Psock<P>>()
            + size_of::<u32>()
            + size_of::<bool>()
            + size_of::<Option<PsockId>>();
        let row = size_of::<crate::StatsRow>();
        let need = 2 * slot + 2 * row;
        assert!(
            crate::stack_psock::PSOCK_STATE_BYTES >= need,
            "PSOCK_STATE_BYTES {} < {need} (slot {slot}, stats row {row}): measure again and raise it",
            crate::stack_psock::PSOCK_STATE_BYTES
        );
    }
}
