//! Out-of-order release of received messages.
//!
//! A psock's received messages stay in its rx ring until the application drops them;
//! applications drop them in any order (several threads, batches). The ring can only be
//! consumed from the front, so the tracker remembers each delivered message's span and
//! advances over the longest released prefix — which is what reopens the TCP window.
//!
//! Spans are named by their stream offset (a `u64` that never wraps in practice), so a
//! stale or repeated release is detected instead of freeing someone else's bytes.

use std::collections::VecDeque;

/// Why a release was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseError {
    /// No held message starts at this offset.
    Unknown(u64),
    /// The message was already released.
    Twice(u64),
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    len: u32,
    released: bool,
}

/// Spans of one ring, in stream order.
#[derive(Debug, Default)]
pub struct ReleaseTracker {
    /// Stream offset of the ring's front (everything before it was consumed).
    front: u64,
    /// Stream offset just past the last delivered message.
    end: u64,
    spans: VecDeque<Span>,
    held_bytes: u64,
}

impl ReleaseTracker {
    /// A tracker whose ring front is at stream offset 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a delivered message of `len` bytes right after the previous one; returns
    /// its stream offset (the id to release it with).
    pub fn deliver(&mut self, len: u32) -> u64 {
        let start = self.end;
        self.spans.push_back(Span { start, len, released: false });
        self.end += len as u64;
        self.held_bytes += len as u64;
        start
    }

    /// Marks the message at `start` released.
    pub fn release(&mut self, start: u64) -> Result<(), ReleaseError> {
        let i = self.spans.binary_search_by_key(&start, |s| s.start).map_err(|_| ReleaseError::Unknown(start))?;
        let s = &mut self.spans[i];
        if s.released {
            return Err(ReleaseError::Twice(start));
        }
        s.released = true;
        self.held_bytes -= s.len as u64;
        Ok(())
    }

    /// Pops the released prefix; returns how many bytes the ring may now consume.
    pub fn advance(&mut self) -> usize {
        let mut n = 0u64;
        while let Some(s) = self.spans.front() {
            if !s.released {
                break;
            }
            n += s.len as u64;
            self.spans.pop_front();
        }
        self.front += n;
        n as usize
    }

    /// Bytes of messages delivered and not yet released.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Messages delivered and not yet released.
    pub fn held_msgs(&self) -> usize {
        self.spans.iter().filter(|s| !s.released).count()
    }

    /// Stream offset of the ring front.
    pub fn front(&self) -> u64 {
        self.front
    }

    /// Stream offset just past the last delivered message (where parsing resumes).
    pub fn end(&self) -> u64 {
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_release_consumes_each_message() {
        let mut t = ReleaseTracker::new();
        let a = t.deliver(10);
        let b = t.deliver(20);
        assert_eq!((a, b), (0, 10));
        t.release(a).unwrap();
        assert_eq!(t.advance(), 10);
        t.release(b).unwrap();
        assert_eq!(t.advance(), 20);
        assert_eq!(t.front(), 30);
        assert_eq!(t.held_bytes(), 0);
    }

    #[test]
    fn out_of_order_release_waits_for_the_prefix() {
        let mut t = ReleaseTracker::new();
        let ids: Vec<u64> = (1..=4).map(|n| t.deliver(n * 100)).collect();
        t.release(ids[2]).unwrap();
        t.release(ids[1]).unwrap();
        assert_eq!(t.advance(), 0, "first message still held");
        assert_eq!(t.held_msgs(), 2);
        t.release(ids[0]).unwrap();
        assert_eq!(t.advance(), 100 + 200 + 300);
        assert_eq!(t.held_bytes(), 400);
        t.release(ids[3]).unwrap();
        assert_eq!(t.advance(), 400);
    }

    #[test]
    fn stale_and_double_releases_are_refused() {
        let mut t = ReleaseTracker::new();
        let a = t.deliver(8);
        let b = t.deliver(8);
        t.release(b).unwrap();
        assert_eq!(t.release(b), Err(ReleaseError::Twice(b)));
        assert_eq!(t.release(3), Err(ReleaseError::Unknown(3)));
        t.release(a).unwrap();
        t.advance();
        assert_eq!(t.release(a), Err(ReleaseError::Unknown(a)), "consumed spans are gone");
    }

    #[test]
    fn any_release_order_consumes_exactly_everything() {
        // Deterministic shuffles of 50 messages: total consumed == total delivered.
        for seed in 0..20u64 {
            let mut t = ReleaseTracker::new();
            let ids: Vec<(u64, u32)> = (0..50).map(|i| (t.deliver(i + 1), i + 1)).collect();
            let mut order: Vec<usize> = (0..50).collect();
            let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            for i in (1..order.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut consumed = 0;
            for i in order {
                t.release(ids[i].0).unwrap();
                consumed += t.advance();
            }
            assert_eq!(consumed, (1..=50).sum::<usize>());
            assert_eq!(t.front(), t.end());
        }
    }
}
