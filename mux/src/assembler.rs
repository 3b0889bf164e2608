//! Message delineation on one psock: strparser's state machine.
//!
//! The assembler never sees or keeps bytes of its own: it is handed the stream bytes
//! from the start of the next message (a view into the psock's rx ring) and decides
//! whether a whole message is there. It remembers only numbers — the length once the
//! header is known, how many bytes to wait for, when the message started (for the
//! assembly timeout) — so waiting for a 256 KiB body costs one comparison per poll,
//! not a parser call.

use std::time::{Duration, Instant};

use ukcm_parsers::{Parse, ParseError, Parser};

use crate::error::{PsockError, PsockErrorKind};
use crate::stats::PsockStats;

/// What the assembler found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first `len` bytes are a whole message.
    Message(usize),
    /// Not enough bytes yet; call again when more arrive (or to check the timeout).
    Wait,
    /// Framing is lost or a limit was hit: the psock must stop.
    Failed(PsockError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages.
    Idle,
    /// The parser needs at least `need` bytes.
    Header { need: usize, since: Instant },
    /// The header said `len`; waiting for the body.
    Body { len: usize, since: Instant },
    /// Stopped for good.
    Failed(PsockError),
}

/// Delineates messages for one psock.
#[derive(Debug)]
pub struct Assembler<P> {
    parser: P,
    max: usize,
    timeout: Option<Duration>,
    state: State,
}

impl<P: Parser> Assembler<P> {
    /// `max` is the largest acceptable message (at most the rx ring size, since a message
    /// must fit in the ring to be viewed in place); `timeout` bounds the time from a
    /// message's first byte to its last.
    pub fn new(mut parser: P, max: usize, timeout: Option<Duration>) -> Self {
        parser.new_stream();
        let max = max.min(parser.max_message());
        Assembler { parser, max, timeout, state: State::Idle }
    }

    /// The size limit in force.
    pub fn max_message(&self) -> usize {
        self.max
    }

    /// Whether a message has started but is not complete (unattach then counts an abort).
    pub fn mid_message(&self) -> bool {
        matches!(self.state, State::Header { .. } | State::Body { .. })
    }

    /// When the current partial message times out, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        let t = self.timeout?;
        match self.state {
            State::Header { since, .. } | State::Body { since, .. } => Some(since + t),
            _ => None,
        }
    }

    /// Looks at `avail` (stream bytes from the next message's start) at time `now`.
    pub fn step(&mut self, avail: &[u8], now: Instant, stats: &mut PsockStats) -> Step {
        let since = match self.state {
            State::Failed(e) => return Step::Failed(e),
            State::Idle if avail.is_empty() => return Step::Wait,
            State::Idle => now,
            State::Body { len, since } => {
                if avail.len() >= len {
                    return self.complete(len, stats);
                }
                return self.wait_or_timeout(since, now, stats);
            }
            State::Header { need, since } => {
                if avail.len() < need {
                    return self.wait_or_timeout(since, now, stats);
                }
                since
            }
        };
        match self.parser.parse(avail) {
            Ok(Parse::NeedMore(need)) => {
                stats.rx_need_more_hdr += 1;
                if need > self.max {
                    return self.fail(PsockErrorKind::MsgSize, None, Some(need as u64), stats);
                }
                // A parser must ask for more than it has; guard against one that does not.
                let need = need.max(avail.len() + 1);
                self.state = State::Header { need, since };
                self.wait_or_timeout(since, now, stats)
            }
            Ok(Parse::Message(0)) => self.fail(PsockErrorKind::Proto, None, Some(0), stats),
            Ok(Parse::Message(len)) if len > self.max => {
                self.fail(PsockErrorKind::MsgSize, None, Some(len as u64), stats)
            }
            Ok(Parse::Message(len)) => {
                if avail.len() >= len {
                    self.complete(len, stats)
                } else {
                    self.state = State::Body { len, since };
                    self.wait_or_timeout(since, now, stats)
                }
            }
            Err(e) => {
                let (kind, claimed) = classify(&e);
                self.fail(kind, Some(e), claimed, stats)
            }
        }
    }

    /// The stream ended (FIN or reset): an error if a message was in progress.
    pub fn end_of_stream(&mut self, stats: &mut PsockStats) -> Option<PsockError> {
        if self.mid_message() {
            if let Step::Failed(e) = self.fail(PsockErrorKind::Pipe, None, None, stats) {
                return Some(e);
            }
        }
        None
    }

    fn complete(&mut self, len: usize, stats: &mut PsockStats) -> Step {
        self.parser.reset();
        self.state = State::Idle;
        stats.rx_msgs += 1;
        stats.rx_bytes += len as u64;
        Step::Message(len)
    }

    fn wait_or_timeout(&mut self, since: Instant, now: Instant, stats: &mut PsockStats) -> Step {
        match self.timeout {
            Some(t) if now.saturating_duration_since(since) >= t => {
                self.fail(PsockErrorKind::TimedOut, None, None, stats)
            }
            _ => Step::Wait,
        }
    }

    fn fail(
        &mut self,
        kind: PsockErrorKind,
        parse: Option<ParseError>,
        claimed: Option<u64>,
        stats: &mut PsockStats,
    ) -> Step {
        stats.rx_aborts += 1;
        match kind {
            PsockErrorKind::MsgSize => stats.rx_msg_too_big += 1,
            PsockErrorKind::TimedOut => stats.rx_msg_timeouts += 1,
            PsockErrorKind::Proto if claimed.is_some() => stats.rx_bad_hdr_len += 1,
            _ => {}
        }
        let e = PsockError { kind, parse, claimed_len: claimed };
        self.state = State::Failed(e);
        Step::Failed(e)
    }
}

/// Maps a parser error to KCM's error classes.
fn classify(e: &ParseError) -> (PsockErrorKind, Option<u64>) {
    match *e {
        ParseError::TooLarge { len, .. } => (PsockErrorKind::MsgSize, Some(len)),
        ParseError::HeaderTooLarge { max } => (PsockErrorKind::MsgSize, Some(max)),
        ParseError::ShorterThanHeader { len, .. } => (PsockErrorKind::Proto, Some(len.max(0) as u64)),
        ParseError::Negative(v) => (PsockErrorKind::Proto, Some(v as u64)),
        ParseError::Overflow => (PsockErrorKind::Proto, Some(u64::MAX)),
        _ => (PsockErrorKind::Proto, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ukcm_parsers::LengthField;

    fn thrift() -> LengthField {
        LengthField::thrift()
    }

    fn msg(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn whole_and_split_messages_are_delineated() {
        let mut a = Assembler::new(thrift(), 1 << 20, None);
        let mut st = PsockStats::default();
        let t = Instant::now();
        let mut stream = msg(b"hello");
        stream.extend(msg(b"world!"));
        assert_eq!(a.step(&stream, t, &mut st), Step::Message(9));
        assert_eq!(a.step(&stream[9..12], t, &mut st), Step::Wait);
        assert_eq!(a.step(&stream[9..], t, &mut st), Step::Message(10));
        assert_eq!(a.step(&[], t, &mut st), Step::Wait);
        assert_eq!(st.rx_msgs, 2);
        assert_eq!(st.rx_bytes, 19);
        assert_eq!(st.rx_need_more_hdr, 1, "3 header bytes: need more once");
    }

    #[test]
    fn body_wait_does_not_call_the_parser_again() {
        // After the header, growing the buffer but keeping it short stays Wait, and the
        // length learned first is what completes (the header is not re-read).
        let mut a = Assembler::new(thrift(), 1 << 20, None);
        let mut st = PsockStats::default();
        let t = Instant::now();
        let m = msg(&[7u8; 100]);
        assert_eq!(a.step(&m[..10], t, &mut st), Step::Wait);
        assert!(a.mid_message());
        assert_eq!(a.step(&m[..50], t, &mut st), Step::Wait);
        assert_eq!(a.step(&m, t, &mut st), Step::Message(104));
        assert!(!a.mid_message());
    }

    #[test]
    fn over_the_limit_is_emsgsize() {
        let mut a = Assembler::new(thrift(), 64, None);
        let mut st = PsockStats::default();
        let m = msg(&[0u8; 61]);
        let Step::Failed(e) = a.step(&m, Instant::now(), &mut st) else { panic!("must fail") };
        assert_eq!(e.kind, PsockErrorKind::MsgSize);
        assert_eq!(e.claimed_len, Some(65));
        assert_eq!((st.rx_msg_too_big, st.rx_aborts), (1, 1));
        // and stays failed
        assert!(matches!(a.step(&msg(b"x"), Instant::now(), &mut st), Step::Failed(_)));
    }

    #[test]
    fn hostile_length_is_an_error_not_an_allocation() {
        let mut a = Assembler::new(thrift(), 1 << 20, None);
        let mut st = PsockStats::default();
        let Step::Failed(e) = a.step(&[0xff, 0xff, 0xff, 0xff], Instant::now(), &mut st) else { panic!() };
        assert_eq!(e.kind, PsockErrorKind::MsgSize);
    }

    #[test]
    fn slow_message_times_out() {
        let mut a = Assembler::new(thrift(), 1 << 20, Some(Duration::from_millis(100)));
        let mut st = PsockStats::default();
        let t0 = Instant::now();
        let m = msg(&[1u8; 20]);
        assert_eq!(a.step(&m[..6], t0, &mut st), Step::Wait);
        assert_eq!(a.deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(a.step(&m[..7], t0 + Duration::from_millis(99), &mut st), Step::Wait);
        let Step::Failed(e) = a.step(&m[..7], t0 + Duration::from_millis(100), &mut st) else { panic!() };
        assert_eq!(e.kind, PsockErrorKind::TimedOut);
        assert_eq!(st.rx_msg_timeouts, 1);
    }

    #[test]
    fn timer_runs_from_the_first_byte_not_the_header() {
        let mut a = Assembler::new(thrift(), 1 << 20, Some(Duration::from_millis(100)));
        let mut st = PsockStats::default();
        let t0 = Instant::now();
        let m = msg(&[1u8; 20]);
        assert_eq!(a.step(&m[..2], t0, &mut st), Step::Wait);
        assert_eq!(a.step(&m[..6], t0 + Duration::from_millis(60), &mut st), Step::Wait);
        assert!(matches!(a.step(&m[..6], t0 + Duration::from_millis(100), &mut st), Step::Failed(_)));
    }

    #[test]
    fn parser_error_is_eproto_and_end_of_stream_mid_message_is_epipe() {
        let mut a = Assembler::new(ukcm_parsers::Memcached::default(), 1 << 20, None);
        let mut st = PsockStats::default();
        let Step::Failed(e) = a.step(&[0x42; 24], Instant::now(), &mut st) else { panic!() };
        assert_eq!(e.kind, PsockErrorKind::Proto);
        assert!(e.parse.is_some());

        let mut b = Assembler::new(thrift(), 1 << 20, None);
        assert_eq!(b.end_of_stream(&mut st), None, "clean end between messages");
        assert_eq!(b.step(&msg(b"abc")[..5], Instant::now(), &mut st), Step::Wait);
        assert_eq!(b.end_of_stream(&mut st).map(|e| e.kind), Some(PsockErrorKind::Pipe));
    }
}
