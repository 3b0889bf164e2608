//! What connections cost in pinned memory: the figure the apps print in their exit table.
//!
//! A connection pins its rx and tx rings (everything else it holds — the smoltcp socket,
//! the engine's and the mux's bookkeeping — is ordinary heap). A connection is *idle* when
//! nothing is queued in either ring at the moment of the snapshot, *active* otherwise.

use std::fmt;

/// Pinned ring bytes of an engine's connections, idle and active (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnCost {
    /// Connections with nothing queued.
    pub idle_conns: u64,
    /// Ring bytes those hold.
    pub idle_bytes: u64,
    /// Connections with bytes queued in a ring.
    pub active_conns: u64,
    /// Ring bytes those hold.
    pub active_bytes: u64,
}

impl ConnCost {
    /// Pinned bytes per idle connection (0 without any).
    pub fn per_idle(&self) -> u64 {
        self.idle_bytes.checked_div(self.idle_conns).unwrap_or(0)
    }
    /// Pinned bytes per active connection (0 without any).
    pub fn per_active(&self) -> u64 {
        self.active_bytes.checked_div(self.active_conns).unwrap_or(0)
    }
    /// Pinned ring bytes of all connections.
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
            "pinned per idle connection {} B ({} idle), per active {} B ({} active), total {} B",
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
