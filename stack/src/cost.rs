//! What connections cost: the figure the apps print in their exit table, and what the
//! pinned budget is charged per connection.
//!
//! A connection pins its rx and tx rings; everything else it holds — the smoltcp socket,
//! the engine's slot and lookup entries, and (in the `ukcm` server) the mux's psock — is
//! ordinary heap. So that the budget bounds everything a connection holds, each connection
//! is also charged a fixed figure for that state (`TcpOptions::state_bytes`): the engine's
//! share is [`STACK_STATE_BYTES`], a layer above adds its own. The figures are measured
//! (heaptrack over 10,000 idle connections, see the README) and rounded up; a unit test
//! in `engine` fails if the engine's per-connection structures outgrow its figure.
//!
//! A connection is *idle* when nothing is queued in either ring at the moment of the
//! snapshot, *active* otherwise.

use std::fmt;

/// Heap bytes the engine holds per connection outside the rings (the smoltcp socket in its
/// one-socket set, the slot, the 4-tuple map and timer entries, with the slack of their
/// growable tables), charged to the budget by default (`TcpOptions::state_bytes`).
pub const STACK_STATE_BYTES: usize = 1536;

/// Budget bytes of an engine's connections — rings plus the fixed state figure — idle and
/// active (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnCost {
    /// Connections with nothing queued.
    pub idle_conns: u64,
    /// Budget bytes those hold (rings and state).
    pub idle_bytes: u64,
    /// Connections with bytes queued in a ring.
    pub active_conns: u64,
    /// Budget bytes those hold (rings and state).
    pub active_bytes: u64,
}

impl ConnCost {
    /// Budget bytes per idle connection (0 without any).
    pub fn per_idle(&self) -> u64 {
        self.idle_bytes.checked_div(self.idle_conns).unwrap_or(0)
    }
    /// Budget bytes per active connection (0 without any).
    pub fn per_active(&self) -> u64 {
        self.active_bytes.checked_div(self.active_conns).unwrap_or(0)
    }
    /// Budget bytes of all connections.
    pub fn total(&self) -> u64 {
        self.idle_bytes + self.active_bytes
    }
    /// The sum of two engines' figures.
    pub fn add(&self, o: &ConnCost) -> ConnCost {
        ConnCost {
            idle_conns: self.idle_conns + o.idle_conns,
            idle_bytes: self.idle_bytes + o.idle_bytes,
            active_conns: self.active_conns + o.active_conns,
            active_bytes: self.active_bytes + o.active_bytes,
        }
    }
}

impl fmt::Display for ConnCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "charged per idle connection {} B ({} idle), per active {} B ({} active), total {} B (rings and state)",
            self.per_idle(),
            self.idle_conns,
            self.per_active(),
            self.active_conns,
            self.total()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_and_totals() {
        let c = ConnCost { idle_conns: 3, idle_bytes: 3 * 8192, active_conns: 1, active_bytes: 1 << 20 };
        assert_eq!((c.per_idle(), c.per_active(), c.total()), (8192, 1 << 20, 3 * 8192 + (1 << 20)));
        assert_eq!(ConnCost::default().per_idle(), 0);
        assert_eq!(c.add(&c).idle_conns, 6);
        assert!(c.to_string().contains("per idle connection 8192 B (3 idle)"));
    }
}
