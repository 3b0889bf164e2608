//! Segments that reached the wrong engine: the return traffic of another engine's outgoing
//! connections, handed over to it.
//!
//! With one engine per NIC queue, the NIC (or the veth) picks the queue of each arriving
//! frame by a hash of the flow that the sender chooses, not us: the SYN-ACK of a connection
//! engine A opened may land on engine B's queue. B has no such connection, and smoltcp there
//! would answer with a reset, killing A's connect. So the engines of a group split the
//! ephemeral ports (engine `i` of `n` uses the ports `p` with `p % n == i`), and an engine
//! that receives a segment for an ephemeral port it does not own copies it to the owner's
//! queue here; the owner takes it in before its next ingress. The copy costs one memcpy per
//! misdelivered frame and nothing on flows that arrive where they belong.
//!
//! Bounded: [`CAPACITY`] frames per engine; a frame that finds the queue full is dropped and
//! counted (`rx_stray_dropped`): TCP retransmits it, as after any loss.

use crossbeam::queue::ArrayQueue;

/// Frames waiting per engine at most.
pub const CAPACITY: usize = 1024;

/// The hand-over queues of a group of engines (one per queue of an address).
#[derive(Debug)]
pub struct StrayShare {
    queues: Vec<ArrayQueue<Vec<u8>>>,
}

impl StrayShare {
    /// Queues for `engines` engines.
    pub fn new(engines: usize) -> Self {
        StrayShare { queues: (0..engines.max(1)).map(|_| ArrayQueue::new(CAPACITY)).collect() }
    }

    /// Engines in the group.
    pub fn engines(&self) -> usize {
        self.queues.len()
    }

    /// The engine that owns ephemeral port `port`.
    pub fn owner(&self, port: u16) -> usize {
        usize::from(port) % self.queues.len()
    }

    /// Hands `frame` to engine `to`; `false` if its queue is full (the frame is dropped).
    pub fn hand(&self, to: usize, frame: &[u8]) -> bool {
        self.queues[to].push(frame.to_vec()).is_ok()
    }

    /// The next frame handed to engine `me`.
    pub fn take(&self, me: usize) -> Option<Vec<u8>> {
        self.queues[me].pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_split_evenly_and_frames_reach_their_owner_boundedly() {
        let s = StrayShare::new(3);
        assert_eq!((s.owner(49152), s.owner(49153), s.owner(49154)), (0, 1, 2));
        assert!(s.hand(1, b"frame"));
        assert_eq!(s.take(0), None);
        assert_eq!(s.take(1).as_deref(), Some(&b"frame"[..]));
        for _ in 0..CAPACITY {
            assert!(s.hand(2, b"x"));
        }
        assert!(!s.hand(2, b"x"), "bounded");
        assert_eq!(StrayShare::new(0).engines(), 1);
    }
}
