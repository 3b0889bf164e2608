//! Building blocks of `ukcm-proxy`, the Redis/memcached proxy that takes a twemproxy
//! (nutcracker) config. Pure code, no I/O, so each piece is tested on its own and
//! against nutcracker itself (`apps/tests/proxy_placement.rs`).
//!
//! * [`hash`]: twemproxy's key hash functions, quirks included: a key must land on the
//!   server it landed on under nutcracker, or a migrated cache starts cold.
//! * [`dist`]: server selection (`ketama`, `modula`, `random`, `hash_tag`, ejection).
#![forbid(unsafe_code)]

pub mod dist;
pub mod hash;
