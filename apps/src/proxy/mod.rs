//! Building blocks of `ukcm-proxy`, the Redis/memcached proxy that takes a twemproxy
//! (nutcracker) config. Pure code, no I/O, so each piece is tested on its own and
//! against nutcracker itself (`apps/tests/proxy_placement.rs`).
//!
//! * [`hash`]: twemproxy's key hash functions, quirks included: a key must land on the
//!   server it landed on under nutcracker, or a migrated cache starts cold.
//! * [`dist`]: server selection (`ketama`, `modula`, `random`, `hash_tag`, ejection).
//! * [`config`]: twemproxy's YAML pools plus a `ukcm:` section, errors by line, so a
//!   nutcracker user brings their file unchanged.
//! * [`redis`]: the Redis forwarder ([`commands`] says what each command gets, [`resp`]
//!   reads and writes the RESP it needs, [`merge`] joins split multi-key replies).
//! * [`memcache`]: the memcached forwarder, text and binary clients on one port
//!   ([`memcache_text`] reads text commands, [`memcache_binary`] translates binary
//!   requests to meta commands and back, [`memcache_merge`] joins split gets).
//! * [`reload`]: SIGHUP re-reads the file and hands each pool's new servers to its running
//!   engines, or refuses what a running process cannot change.
//! * [`stats`]: the figures in twemproxy's stats JSON, Prometheus text and a summary line;
//!   [`endpoints`] serves the first two on kernel sockets.
#![forbid(unsafe_code)]

pub mod commands;
pub mod config;
pub mod dist;
pub mod endpoints;
pub mod hash;
pub mod memcache;
pub mod memcache_binary;
pub mod memcache_merge;
pub mod memcache_text;
pub mod merge;
pub mod placement;
pub mod redis;
pub mod reload;
pub mod resp;
pub mod setup;
pub mod stats;
