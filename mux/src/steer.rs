//! Steering: which message socket gets the messages a psock produced.
//!
//! KCM hands all messages found in one pass over a psock to the same socket (batching for
//! cache affinity) and rotates between passes; we add least-loaded, sticky-per-psock (one
//! connection's messages stay in order on one thread) and key-hash (a function of the
//! message picks the socket, so a shard's keys stay on one thread).
//!
//! A socket takes messages only while it is receiving (not recv-disabled) and its queue
//! has room. When no socket can take a message the answer is `None`: the psock stops
//! parsing and TCP's window closes — backpressure, never a drop. Sticky and key-hash
//! policies wait for *their* socket rather than spill over, since spilling would break
//! the order or sharding they promise.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::ids::{PsockId, SockId};

/// A function of a message's bytes that picks its shard (e.g. a hash of a memcached key).
pub type KeyFn = Arc<dyn Fn(&[u8]) -> u64 + Send + Sync>;

/// The steering policy of a mux.
#[derive(Clone, Default)]
pub enum SteerPolicy {
    /// All messages of one psock poll go to one socket; the socket rotates (KCM's default).
    #[default]
    BatchRoundRobin,
    /// Each batch goes to the receiving socket with the shortest queue.
    LeastLoaded,
    /// Each psock is bound to one socket while that socket is receiving.
    Sticky,
    /// Each message goes to socket `key(msg) % receiving sockets`.
    KeyHash(KeyFn),
}

impl fmt::Debug for SteerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SteerPolicy::BatchRoundRobin => "batch",
            SteerPolicy::LeastLoaded => "least-loaded",
            SteerPolicy::Sticky => "sticky",
            SteerPolicy::KeyHash(_) => "hash",
        })
    }
}

impl SteerPolicy {
    /// Whether the choice depends on each message (then [`Steering::pick_for_msg`] is used).
    pub fn per_message(&self) -> bool {
        matches!(self, SteerPolicy::KeyHash(_))
    }
}

/// What steering needs to know about a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockLoad {
    /// The socket.
    pub id: SockId,
    /// False when recv-disabled.
    pub receiving: bool,
    /// Messages queued to it and not yet taken by the application.
    pub queued: usize,
    /// Its queue's bound.
    pub capacity: usize,
}

impl SockLoad {
    fn can_take(&self) -> bool {
        self.receiving && self.queued < self.capacity
    }
}

/// Steering state of one mux.
#[derive(Debug, Default)]
pub struct Steering {
    policy: SteerPolicy,
    cursor: usize,
    sticky: HashMap<PsockId, SockId>,
}

impl Steering {
    /// Steering with `policy`.
    pub fn new(policy: SteerPolicy) -> Self {
        Steering { policy, cursor: 0, sticky: HashMap::new() }
    }

    /// The policy.
    pub fn policy(&self) -> &SteerPolicy {
        &self.policy
    }

    /// The socket for the next batch of `psock`'s messages (all but the key-hash policy).
    /// `socks` must be in a stable order (by id).
    pub fn pick_batch(&mut self, psock: PsockId, socks: &[SockLoad]) -> Option<SockId> {
        match &self.policy {
            SteerPolicy::BatchRoundRobin => {
                let n = socks.len();
                for k in 0..n {
                    let s = &socks[(self.cursor + k) % n];
                    if s.can_take() {
                        self.cursor = (self.cursor + k + 1) % n;
                        return Some(s.id);
                    }
                }
                None
            }
            SteerPolicy::LeastLoaded => {
                socks.iter().filter(|s| s.can_take()).min_by_key(|s| (s.queued, s.id)).map(|s| s.id)
            }
            SteerPolicy::Sticky => {
                if let Some(&bound) = self.sticky.get(&psock) {
                    match socks.iter().find(|s| s.id == bound) {
                        Some(s) if s.receiving => return s.can_take().then_some(s.id),
                        _ => {
                            self.sticky.remove(&psock); // socket gone or recv-disabled: rebind
                        }
                    }
                }
                // Bind to the receiving socket with the fewest bound psocks (then lowest id).
                let chosen = socks
                    .iter()
                    .filter(|s| s.receiving)
                    .min_by_key(|s| (self.sticky.values().filter(|&&b| b == s.id).count(), s.id))?;
                self.sticky.insert(psock, chosen.id);
                chosen.can_take().then_some(chosen.id)
            }
            SteerPolicy::KeyHash(_) => None,
        }
    }

    /// The socket for one message under the key-hash policy.
    pub fn pick_for_msg(&mut self, msg: &[u8], socks: &[SockLoad]) -> Option<SockId> {
        let SteerPolicy::KeyHash(key) = &self.policy else { return None };
        let receiving = socks.iter().filter(|s| s.receiving).count();
        if receiving == 0 {
            return None;
        }
        let k = (key(msg) % receiving as u64) as usize;
        let s = socks.iter().filter(|s| s.receiving).nth(k)?;
        s.can_take().then_some(s.id)
    }

    /// Forgets a psock (unattached).
    pub fn psock_gone(&mut self, psock: PsockId) {
        self.sticky.remove(&psock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socks(q: &[(usize, bool)]) -> Vec<SockLoad> {
        q.iter()
            .enumerate()
            .map(|(i, &(queued, receiving))| SockLoad { id: SockId(i as u32), receiving, queued, capacity: 4 })
            .collect()
    }

    #[test]
    fn batch_round_robin_rotates_and_skips_full_or_disabled() {
        let mut s = Steering::new(SteerPolicy::BatchRoundRobin);
        let l = socks(&[(0, true), (0, true), (0, true)]);
        let picks: Vec<u32> = (0..4).map(|_| s.pick_batch(PsockId::new(0, 0), &l).unwrap().0).collect();
        assert_eq!(picks, vec![0, 1, 2, 0]);
        let l = socks(&[(4, true), (0, false), (1, true)]);
        assert_eq!(s.pick_batch(PsockId::new(0, 0), &l), Some(SockId(2)));
        let full = socks(&[(4, true), (0, false)]);
        assert_eq!(s.pick_batch(PsockId::new(0, 0), &full), None, "nobody can take: backpressure");
    }

    #[test]
    fn least_loaded_picks_the_shortest_queue() {
        let mut s = Steering::new(SteerPolicy::LeastLoaded);
        assert_eq!(s.pick_batch(PsockId::new(0, 0), &socks(&[(3, true), (1, true), (0, false)])), Some(SockId(1)));
    }

    #[test]
    fn sticky_keeps_a_psock_on_one_socket_and_rebinds_on_disable() {
        let mut s = Steering::new(SteerPolicy::Sticky);
        let l = socks(&[(0, true), (0, true)]);
        let a = s.pick_batch(PsockId::new(7, 0), &l).unwrap();
        let b = s.pick_batch(PsockId::new(8, 0), &l).unwrap();
        assert_ne!(a, b, "psocks spread over sockets");
        for _ in 0..5 {
            assert_eq!(s.pick_batch(PsockId::new(7, 0), &l), Some(a));
        }
        // its socket is full: wait (order kept), do not spill
        let mut full = l.clone();
        full[a.0 as usize].queued = 4;
        assert_eq!(s.pick_batch(PsockId::new(7, 0), &full), None);
        // its socket is recv-disabled: rebind
        let mut off = l.clone();
        off[a.0 as usize].receiving = false;
        assert_eq!(s.pick_batch(PsockId::new(7, 0), &off), Some(b));
    }

    #[test]
    fn key_hash_sends_a_key_to_the_same_socket() {
        let key: KeyFn = Arc::new(|m: &[u8]| m.first().copied().unwrap_or(0) as u64);
        let mut s = Steering::new(SteerPolicy::KeyHash(key));
        let l = socks(&[(0, true), (0, true), (0, true)]);
        assert_eq!(s.pick_for_msg(&[4], &l), Some(SockId(1)));
        assert_eq!(s.pick_for_msg(&[4, 9], &l), Some(SockId(1)));
        assert_eq!(s.pick_for_msg(&[5], &l), Some(SockId(2)));
        let mut full = l.clone();
        full[1].queued = 4;
        assert_eq!(s.pick_for_msg(&[4], &full), None, "shard full: wait, do not spill");
        assert_eq!(s.pick_batch(PsockId::new(0, 0), &l), None, "hash policy is per message");
    }
}
