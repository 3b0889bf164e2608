//! A config reload (SIGHUP), twemproxy's most asked-for missing feature: the file is read
//! again, checked whole, and each pool's new servers and settings go to its running engines
//! ([`ukcm::Reload`]): no client connection is dropped and requests in flight finish on the
//! backend connections they started on. What a running process cannot change (the pools,
//! their listen addresses, their protocol) is refused with the reason, and the old
//! configuration keeps running.

use std::sync::Arc;
use std::time::Duration;

use ukcm::{Forward, PoolConfig, Reload};

use super::config::{Config, Pool};
use super::memcache::MemcacheForward;
use super::redis::RedisForward;
use super::stats::stats_name;

/// How long the engines may take to apply a reload (they do between two polls).
const APPLY_WITHIN: Duration = Duration::from_secs(5);

/// Applies a reloaded pool to its running forwarders.
pub trait ApplyPool: Send {
    /// Hands `pool` (the forwarder's settings) and `up` (the upstream pool's) to every
    /// engine and waits for them: the number of engines, or why they refused.
    fn apply(&self, pool: &Pool, up: PoolConfig) -> Result<usize, String>;
}

/// A forwarder that takes a reloaded pool's settings (servers, distribution, hash, …):
/// requests from then on use them; requests in flight finish as they started.
pub trait Reconfigure {
    fn reconfigure(&mut self, pool: &Pool);
}

impl Reconfigure for RedisForward {
    fn reconfigure(&mut self, pool: &Pool) {
        RedisForward::reconfigure(self, pool);
    }
}

impl Reconfigure for MemcacheForward {
    fn reconfigure(&mut self, pool: &Pool) {
        MemcacheForward::reconfigure(self, pool);
    }
}

impl<W: Forward + Reconfigure> ApplyPool for Reload<W> {
    fn apply(&self, pool: &Pool, up: PoolConfig) -> Result<usize, String> {
        let p = pool.clone();
        let generation = Reload::apply(self, up, Arc::new(move |f: &mut W| f.reconfigure(&p)));
        self.wait(generation, APPLY_WITHIN)
    }
}

/// Whether `new` can replace `old` in a running process: the same pools (by name), each
/// listening where it did and speaking the same protocol.
pub fn check(old: &Config, new: &Config) -> Result<(), String> {
    let names = |c: &Config| c.pools.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    if names(old) != names(new) {
        return Err(format!(
            "the pools changed ({} -> {}): adding, removing or renaming a pool needs a restart",
            names(old).join(", "),
            names(new).join(", ")
        ));
    }
    for (o, n) in old.pools.iter().zip(&new.pools) {
        if o.listen != n.listen {
            return Err(format!("pool {} (line {}): `listen` changed: that needs a restart", n.name, n.line));
        }
        if o.redis != n.redis {
            return Err(format!("pool {} (line {}): `redis` changed: the protocol needs a restart", n.name, n.line));
        }
    }
    if old.ukcm != new.ukcm {
        return Err("the `ukcm:` section changed: transport and address need a restart".into());
    }
    Ok(())
}

/// What changed in a pool's servers, for the reload's log line: `+a -b ~c` (added,
/// removed, re-weighted, by their names in the stats).
pub fn describe(old: &Pool, new: &Pool) -> String {
    let key = |s: &super::config::Server| (stats_name(s), s.addr.clone());
    let added: Vec<String> =
        new.servers.iter().filter(|s| !old.servers.iter().any(|o| key(o) == key(s))).map(stats_name).collect();
    let removed: Vec<String> =
        old.servers.iter().filter(|s| !new.servers.iter().any(|n| key(n) == key(s))).map(stats_name).collect();
    let reweighted: Vec<String> = new
        .servers
        .iter()
        .filter(|s| old.servers.iter().any(|o| key(o) == key(s) && o.weight != s.weight))
        .map(stats_name)
        .collect();
    let mut parts = Vec::new();
    for (sign, list) in [("+", added), ("-", removed), ("~", reweighted)] {
        parts.extend(list.into_iter().map(|n| format!("{sign}{n}")));
    }
    if parts.is_empty() {
        "servers unchanged".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(servers: &str, listen: u16, redis: bool) -> Config {
        Config::parse(&format!("alpha:\n  listen: 127.0.0.1:{listen}\n  redis: {redis}\n  servers:\n{servers}"))
            .unwrap()
    }

    #[test]
    fn servers_may_change_pools_listen_and_protocol_may_not() {
        let old = conf("   - 127.0.0.1:7001:1 a\n   - 127.0.0.1:7002:1 b\n", 9000, true);
        let new = conf("   - 127.0.0.1:7001:2 a\n   - 127.0.0.1:7003:1 c\n", 9000, true);
        assert_eq!(check(&old, &new), Ok(()));
        assert_eq!(describe(&old.pools[0], &new.pools[0]), "+c -b ~a");
        assert_eq!(describe(&old.pools[0], &old.pools[0]), "servers unchanged");
        assert!(check(&old, &conf("   - 127.0.0.1:7001:1 a\n", 9001, true)).unwrap_err().contains("listen"));
        assert!(check(&old, &conf("   - 127.0.0.1:7001:1 a\n", 9000, false)).unwrap_err().contains("protocol"));
        let two = Config::parse(
            "alpha:\n  listen: 127.0.0.1:9000\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1\nbeta:\n  listen: 127.0.0.1:9002\n  servers:\n   - 127.0.0.1:7001:1\n",
        )
        .unwrap();
        assert!(check(&old, &two).unwrap_err().contains("restart"));
    }
}
