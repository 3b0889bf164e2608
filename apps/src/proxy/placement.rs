//! Where a forwarder's keys go: a pool's config, its servers' ketama names and the selector,
//! following ejections (with `auto_eject_hosts`) and reloads. Shared by the Redis and
//! memcached forwarders, which differ only in what they do with the server it names.

use std::sync::Arc;

use ukcm::Upstream;

use super::config::Pool;
use super::dist::Selector;

/// A pool's key placement, as one engine's forwarder holds it.
#[derive(Debug)]
pub struct Placement {
    pub pool: Arc<Pool>,
    /// Each server's ketama name, in config order (named in split-reply errors).
    pub names: Arc<Vec<String>>,
    pub selector: Selector,
    /// Which servers the selector counts as live.
    pub live: Vec<bool>,
}

impl Placement {
    /// `pool`'s placement, every server live.
    pub fn new(pool: &Pool) -> Placement {
        Placement {
            names: Arc::new(pool.servers.iter().map(|s| s.ketama_name()).collect()),
            selector: pool.selector(),
            pool: Arc::new(pool.clone()),
            live: vec![true; pool.servers.len()],
        }
    }

    /// Takes a reloaded pool: requests from now on go where it says.
    pub fn reconfigure(&mut self, pool: &Pool) {
        *self = Placement::new(pool);
    }

    /// With `auto_eject_hosts`, the selector follows the pool's ejections (keys of an
    /// ejected server rehash, as under twemproxy; a server still connecting or briefly
    /// reconnecting keeps its keys).
    pub fn sync_live<C>(&mut self, up: &dyn Upstream<C>) {
        if !self.pool.auto_eject_hosts {
            return;
        }
        let mut changed = false;
        for i in 0..self.live.len() {
            let live = !up.is_ejected(i);
            changed |= live != self.live[i];
            self.live[i] = live;
        }
        if changed {
            self.selector.set_live(&self.live);
        }
    }
}
