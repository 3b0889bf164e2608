//! Ordered replies: a connection's replies leave in the order its requests arrived, whatever
//! thread answered first (beyond KCM, which does not even reply on the origin connection).
//!
//! Each message a psock delivers gets the next position of that psock (its *reply slot*).
//! The engine keeps, per psock, the position at the head of the line (`next_out`) and the
//! answers that arrived early (`parked`, indexed by position − `next_out`). An answer for the
//! head goes straight to the psock's transmit queue and lets every parked answer behind it
//! follow; a later one waits. A slot dropped without a reply is an answer with nothing to
//! send (`Answer::Released`), so a request the protocol never answers (memcached's quiet
//! commands) or a handler that gave up holds nobody up.
//!
//! Bounded: `parked` never holds more than the psock's unanswered requests, and the mux stops
//! delineating a psock whose unanswered count reaches its limit (backpressure: the ring
//! fills and the TCP window closes), so no queue here grows without bound.
//!
//! The common case costs a comparison: an answer for the head with nothing parked returns
//! at once (`ReplyOrder::answer`'s first branch), as every answer does in run-to-completion
//! or when workers keep pace.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crossbeam_queue::SegQueue;

use crate::ids::PsockId;

/// A request's place in its connection's reply order. Reply through it with
/// [`crate::MsgSocket::reply`] (worker threads) or [`crate::Mux::reply`] (the engine
/// thread); dropping it without a reply releases the place, so later replies go on.
pub struct ReplySlot {
    origin: PsockId,
    seq: u64,
    /// Where a slot dropped unanswered reports itself; `None` once answered.
    releases: Option<Arc<SlotReleases>>,
}

impl ReplySlot {
    pub(crate) fn new(origin: PsockId, seq: u64, releases: Arc<SlotReleases>) -> Self {
        ReplySlot { origin, seq, releases: Some(releases) }
    }

    /// The connection the request came from (and the reply goes to).
    pub fn origin(&self) -> PsockId {
        self.origin
    }

    /// The request's position on its connection (0 for the first message).
    pub fn position(&self) -> u64 {
        self.seq
    }

    /// Consumes the slot for a reply: it will not be released on drop.
    pub(crate) fn answer(mut self) -> (PsockId, u64) {
        self.releases = None;
        (self.origin, self.seq)
    }
}

impl Drop for ReplySlot {
    fn drop(&mut self) {
        if let Some(r) = self.releases.take() {
            r.queue.push((self.origin, self.seq));
            if let Some(b) = &r.bell {
                // Replies parked behind this slot may go now: wake a sleeping engine.
                b.ring();
            }
        }
    }
}

impl fmt::Debug for ReplySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplySlot").field("origin", &self.origin).field("position", &self.seq).finish()
    }
}

/// Slots dropped without a reply, on their way to the engine (any thread pushes). Its length
/// is bounded by the slots alive, which the per-psock unanswered limit bounds.
#[derive(Debug, Default)]
pub(crate) struct SlotReleases {
    pub(crate) queue: SegQueue<(PsockId, u64)>,
    /// The engine's doorbell (see `Mux::wait_idle`), rung after each push.
    pub(crate) bell: Option<Arc<ukcm_nic::wakeup::Bell>>,
}

/// How a slot was answered.
#[derive(Debug)]
pub(crate) enum Answer<R> {
    /// A reply to send.
    Reply(R),
    /// Nothing to send; the place is given up.
    Released,
}

/// Why an answer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderError {
    /// The position was never handed out, or was already answered.
    NotOutstanding,
}

/// What an answer led to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It was the head of the line: the caller sends its reply now, then calls
    /// [`ReplyOrder::pop_ready`] for the parked answers it released.
    Head,
    /// It waits behind an earlier unanswered request.
    Parked,
}

/// The reply order of one psock (engine side).
#[derive(Debug)]
pub(crate) struct ReplyOrder<R> {
    /// Position the next delivered message gets.
    next_seq: u64,
    /// The oldest unanswered position.
    next_out: u64,
    /// Answers that came early: index i is position `next_out + i`; `None` still waits.
    parked: VecDeque<Option<Answer<R>>>,
    /// Replies parked right now (not counting releases).
    held: usize,
}

impl<R> Default for ReplyOrder<R> {
    fn default() -> Self {
        ReplyOrder { next_seq: 0, next_out: 0, parked: VecDeque::new(), held: 0 }
    }
}

impl<R> ReplyOrder<R> {
    /// Hands out the next position (a message is being delivered).
    pub(crate) fn assign(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Takes back the position [`ReplyOrder::assign`] just gave (its request was not
    /// delivered after all): false if `seq` is not the last one given.
    pub(crate) fn unassign(&mut self, seq: u64) -> bool {
        let last = self.next_seq.checked_sub(1) == Some(seq) && seq >= self.next_out;
        if last {
            self.next_seq = seq;
        }
        last
    }

    /// Requests delivered and not yet answered or released.
    pub(crate) fn unanswered(&self) -> u64 {
        self.next_seq - self.next_out
    }

    /// Replies waiting for an earlier request's answer.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Records the answer for `seq`. On [`Outcome::Head`] the answer was not stored: the
    /// caller sends it (if a reply) before what [`ReplyOrder::pop_ready`] returns.
    pub(crate) fn answer(&mut self, seq: u64, a: &mut Option<Answer<R>>) -> Result<Outcome, OrderError> {
        if seq == self.next_out && seq < self.next_seq {
            // The head: nothing can be parked at index 0 (it would have been popped).
            self.next_out += 1;
            if !self.parked.is_empty() {
                self.parked.pop_front();
            }
            return Ok(Outcome::Head);
        }
        if seq < self.next_out || seq >= self.next_seq {
            return Err(OrderError::NotOutstanding);
        }
        let i = (seq - self.next_out) as usize;
        if self.parked.len() <= i {
            self.parked.resize_with(i + 1, || None);
        }
        if self.parked[i].is_some() {
            return Err(OrderError::NotOutstanding);
        }
        let taken = a.take().expect("an answer to park");
        if matches!(taken, Answer::Reply(_)) {
            self.held += 1;
        }
        self.parked[i] = Some(taken);
        Ok(Outcome::Parked)
    }

    /// The next parked answer whose turn has come, in order.
    pub(crate) fn pop_ready(&mut self) -> Option<Answer<R>> {
        match self.parked.front() {
            Some(Some(_)) => {
                let a = self.parked.pop_front().flatten().expect("checked");
                self.next_out += 1;
                if matches!(a, Answer::Reply(_)) {
                    self.held -= 1;
                }
                Some(a)
            }
            _ => None,
        }
    }

    /// Takes every parked reply (the psock failed: they are reported failed).
    pub(crate) fn drain_parked(&mut self) -> impl Iterator<Item = R> + '_ {
        self.held = 0;
        self.parked.drain(..).filter_map(|a| match a {
            Some(Answer::Reply(r)) => Some(r),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(o: &mut ReplyOrder<&'static str>, seq: u64, a: Answer<&'static str>) -> Vec<&'static str> {
        let mut slot = Some(a);
        let mut out = Vec::new();
        match o.answer(seq, &mut slot).expect("outstanding") {
            Outcome::Head => {
                if let Some(Answer::Reply(r)) = slot {
                    out.push(r);
                }
                while let Some(a) = o.pop_ready() {
                    if let Answer::Reply(r) = a {
                        out.push(r);
                    }
                }
            }
            Outcome::Parked => assert!(slot.is_none()),
        }
        out
    }

    #[test]
    fn only_the_last_position_given_can_be_taken_back() {
        let mut o: ReplyOrder<&'static str> = ReplyOrder::default();
        let a = o.assign();
        let b = o.assign();
        assert!(!o.unassign(a), "not the last one given");
        assert!(o.unassign(b));
        assert_eq!(o.unanswered(), 1);
        assert_eq!(o.assign(), b, "the position is given again");
        assert_eq!(answer(&mut o, a, Answer::Reply("a")), vec!["a"]);
        assert!(!o.unassign(a), "already answered");
    }

    #[test]
    fn in_order_answers_go_out_at_once() {
        let mut o = ReplyOrder::default();
        for _ in 0..3 {
            o.assign();
        }
        assert_eq!(answer(&mut o, 0, Answer::Reply("a")), ["a"]);
        assert_eq!(answer(&mut o, 1, Answer::Reply("b")), ["b"]);
        assert_eq!(answer(&mut o, 2, Answer::Reply("c")), ["c"]);
        assert_eq!(o.unanswered(), 0);
    }

    #[test]
    fn early_answers_wait_for_the_head() {
        let mut o = ReplyOrder::default();
        for _ in 0..4 {
            o.assign();
        }
        assert!(answer(&mut o, 3, Answer::Reply("d")).is_empty());
        assert!(answer(&mut o, 1, Answer::Reply("b")).is_empty());
        assert_eq!(o.held(), 2);
        assert_eq!(o.unanswered(), 4);
        assert_eq!(answer(&mut o, 0, Answer::Reply("a")), ["a", "b"]);
        assert_eq!(answer(&mut o, 2, Answer::Reply("c")), ["c", "d"]);
        assert_eq!(o.held(), 0);
        assert_eq!(o.unanswered(), 0);
    }

    #[test]
    fn a_released_slot_lets_later_replies_go() {
        let mut o = ReplyOrder::default();
        for _ in 0..3 {
            o.assign();
        }
        assert!(answer(&mut o, 2, Answer::Reply("c")).is_empty());
        assert!(answer(&mut o, 1, Answer::Released).is_empty());
        assert_eq!(o.held(), 1);
        assert_eq!(answer(&mut o, 0, Answer::Released), ["c"]);
        assert_eq!(o.unanswered(), 0);
    }

    #[test]
    fn answers_that_were_never_handed_out_or_came_twice_are_refused() {
        let mut o: ReplyOrder<&str> = ReplyOrder::default();
        o.assign();
        o.assign();
        assert_eq!(o.answer(5, &mut Some(Answer::Released)), Err(OrderError::NotOutstanding));
        assert_eq!(o.answer(1, &mut Some(Answer::Reply("b"))), Ok(Outcome::Parked));
        assert_eq!(o.answer(1, &mut Some(Answer::Reply("b"))), Err(OrderError::NotOutstanding));
        assert_eq!(o.answer(0, &mut Some(Answer::Released)), Ok(Outcome::Head));
        assert!(matches!(o.pop_ready(), Some(Answer::Reply("b"))));
        assert_eq!(o.answer(0, &mut Some(Answer::Released)), Err(OrderError::NotOutstanding));
    }

    #[test]
    fn every_permutation_of_answers_comes_out_in_request_order() {
        // All orders of 5 answers (120), with position 2 released.
        fn perms(v: Vec<u64>) -> Vec<Vec<u64>> {
            if v.len() <= 1 {
                return vec![v];
            }
            let mut all = Vec::new();
            for i in 0..v.len() {
                let mut rest = v.clone();
                let x = rest.remove(i);
                for mut p in perms(rest) {
                    p.insert(0, x);
                    all.push(p);
                }
            }
            all
        }
        const NAMES: [&str; 5] = ["0", "1", "2", "3", "4"];
        for p in perms((0..5).collect()) {
            let mut o = ReplyOrder::default();
            for _ in 0..5 {
                o.assign();
            }
            let mut out = Vec::new();
            for &s in &p {
                let a = if s == 2 { Answer::Released } else { Answer::Reply(NAMES[s as usize]) };
                out.extend(answer(&mut o, s, a));
            }
            assert_eq!(out, ["0", "1", "3", "4"], "answer order {p:?}");
            assert_eq!(o.held(), 0);
        }
    }

    #[test]
    fn a_dropped_slot_reports_itself_once_and_an_answered_one_does_not() {
        let r = Arc::new(SlotReleases::default());
        let id = PsockId::new(3, 1);
        drop(ReplySlot::new(id, 7, Arc::clone(&r)));
        let s = ReplySlot::new(id, 8, Arc::clone(&r));
        assert_eq!(s.answer(), (id, 8));
        assert_eq!(r.queue.pop(), Some((id, 7)));
        assert_eq!(r.queue.pop(), None);
    }
}
