//! What an upstream pool publishes for operators: its counters and one row per backend
//! (twemproxy's per-server figures), merged over the engines of a server, since each engine
//! has a pool of its own to the same backends.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::upstream::PoolStats;

/// One backend's figures (summed over its connections; over engines when merged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    /// The backend's address.
    pub addr: SocketAddr,
    /// Requests written to it, and their bytes.
    pub requests: u64,
    pub request_bytes: u64,
    /// Replies read from it (late ones included), and their bytes.
    pub responses: u64,
    pub response_bytes: u64,
    /// Requests that outlived the request timeout.
    pub timeouts: u64,
    /// Connections it closed (end of file) / that failed (refused, reset, connect timeout).
    pub eof: u64,
    pub errors: u64,
    /// Connections up now.
    pub connections: u64,
    /// Requests written and not yet answered now.
    pub in_flight: u64,
    /// Times it was ejected, and since when it is ejected now (`None`: it is not).
    pub ejections: u64,
    pub ejected_since: Option<SystemTime>,
}

impl BackendStats {
    /// A backend with nothing counted yet.
    pub fn new(addr: SocketAddr) -> Self {
        BackendStats {
            addr,
            requests: 0,
            request_bytes: 0,
            responses: 0,
            response_bytes: 0,
            timeouts: 0,
            eof: 0,
            errors: 0,
            connections: 0,
            in_flight: 0,
            ejections: 0,
            ejected_since: None,
        }
    }

    /// Adds `o` (the same backend seen from another engine): counters and gauges sum; the
    /// backend counts as ejected since the earliest engine ejected it.
    pub fn add(&mut self, o: &BackendStats) {
        self.requests += o.requests;
        self.request_bytes += o.request_bytes;
        self.responses += o.responses;
        self.response_bytes += o.response_bytes;
        self.timeouts += o.timeouts;
        self.eof += o.eof;
        self.errors += o.errors;
        self.connections += o.connections;
        self.in_flight += o.in_flight;
        self.ejections += o.ejections;
        self.ejected_since = match (self.ejected_since, o.ejected_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// What a forwarder itself counts (the pool cannot see it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Client requests seen.
    pub requests: u64,
    /// Client requests answered by the proxy itself (PING, AUTH, unsupported commands, …).
    pub local: u64,
    /// Requests that got an error reply instead of a backend's (twemproxy's `forward_error`).
    pub forward_errors: u64,
    /// Backend requests made by splitting multi-key client requests (twemproxy's `fragments`).
    pub fragments: u64,
}

impl ForwardStats {
    /// Adds another engine's counts.
    pub fn add(&mut self, o: &ForwardStats) {
        self.requests += o.requests;
        self.local += o.local;
        self.forward_errors += o.forward_errors;
        self.fragments += o.fragments;
    }
}

/// An upstream pool's snapshot: pool counters, backends in configuration order, and the
/// forwarder's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSnapshot {
    pub pool: PoolStats,
    pub backends: Vec<BackendStats>,
    pub forward: ForwardStats,
}

impl UpstreamSnapshot {
    /// Merges the snapshots of a server's engines (each has its own pool to the same
    /// backends, in the same order); `None` if there are none.
    pub fn merge(parts: &[UpstreamSnapshot]) -> Option<UpstreamSnapshot> {
        let (first, rest) = parts.split_first()?;
        let mut m = first.clone();
        for p in rest {
            m.pool.add(&p.pool);
            m.forward.add(&p.forward);
            for (b, o) in m.backends.iter_mut().zip(&p.backends) {
                b.add(o);
            }
        }
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn backend(port: u16, requests: u64, ejected: Option<u64>) -> BackendStats {
        let mut b = BackendStats::new(SocketAddr::from(([127, 0, 0, 1], port)));
        b.requests = requests;
        b.connections = 1;
        b.ejected_since = ejected.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        b
    }

    #[test]
    fn merge_sums_per_backend_and_keeps_the_earliest_ejection() {
        let a = UpstreamSnapshot {
            pool: PoolStats { requests: 3, ..PoolStats::default() },
            backends: vec![backend(1, 1, None), backend(2, 2, Some(20))],
            forward: ForwardStats { requests: 4, fragments: 1, ..ForwardStats::default() },
        };
        let b = UpstreamSnapshot {
            pool: PoolStats { requests: 5, ..PoolStats::default() },
            backends: vec![backend(1, 5, Some(30)), backend(2, 0, Some(10))],
            forward: ForwardStats { requests: 6, local: 2, ..ForwardStats::default() },
        };
        let m = UpstreamSnapshot::merge(&[a, b]).unwrap();
        assert_eq!(m.pool.requests, 8);
        assert_eq!((m.forward.requests, m.forward.local, m.forward.fragments), (10, 2, 1));
        assert_eq!((m.backends[0].requests, m.backends[0].connections), (6, 2));
        assert_eq!(m.backends[0].ejected_since, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(30)));
        assert_eq!(m.backends[1].ejected_since, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10)));
        assert!(UpstreamSnapshot::merge(&[]).is_none());
    }
}
