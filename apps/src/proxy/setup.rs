//! From a loaded config to what the appliance API takes: a pool's listening address, its
//! servers as an upstream [`PoolConfig`], and the client-side [`ServerConfig`]. Whatever
//! this proxy cannot serve yet is refused here, naming the config line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ukcm::upstream::ConnSetup;
use ukcm::{Model, PoolConfig, ServerConfig};

use super::config::{ConfigError, Listen, Pool, ServerAddr};
use super::resp;

fn resolve(host: &str, port: u16, line: usize, what: &str) -> Result<SocketAddr, ConfigError> {
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConfigError { line, msg: format!("{what} {host}:{port}: cannot resolve the host") })
}

/// Checks that `pool` is one this proxy serves (Redis or memcached, TCP).
pub fn check(pool: &Pool) -> Result<(), ConfigError> {
    if let Some(s) = pool.servers.iter().find(|s| matches!(s.addr, ServerAddr::Unix { .. })) {
        let msg = format!("pool {}: unix-socket servers are not supported", pool.name);
        return Err(ConfigError { line: s.line, msg });
    }
    Ok(())
}

/// Where `pool` listens (TCP only).
pub fn listen_addr(pool: &Pool) -> Result<SocketAddr, ConfigError> {
    match &pool.listen {
        Listen::Tcp { host, port } => resolve(host, *port, pool.line, &format!("pool {}: listen", pool.name)),
        Listen::Unix { .. } => Err(ConfigError {
            line: pool.line,
            msg: format!("pool {}: unix-socket listen is not supported", pool.name),
        }),
    }
}

/// Client connection rx ring of a memcached pool: a whole item of memcached's default size
/// limit (1 MiB) with its command line (the ring bounds one message).
pub const MEMCACHE_CLIENT_RING: usize = (1 << 20) + (64 << 10);
/// Backend connection rx ring of a memcached pool: bounds one reply, which for a multi-key
/// get is every value asked of that server (a larger one fails, and its connection with it).
pub const MEMCACHE_BACKEND_RING: usize = 4 << 20;

/// Requests in flight per backend connection at most (past it a request gets a "busy"
/// error reply, counted in the stats): a bound on memory (about 40 bytes an entry), far
/// above what tens of thousands of clients with a request each need.
pub const MAX_PENDING: usize = 1 << 16;

/// The pool's servers as upstream backends, with twemproxy's settings mapped.
pub fn pool_config(pool: &Pool) -> Result<PoolConfig, ConfigError> {
    let mut backends = Vec::with_capacity(pool.servers.len());
    for s in &pool.servers {
        let ServerAddr::Tcp { host, port } = &s.addr else { return Err(check(pool).unwrap_err()) };
        backends.push(resolve(host, *port, s.line, &format!("pool {}: server", pool.name))?);
    }
    Ok(PoolConfig {
        backends,
        conns_per_backend: pool.server_connections.max(1) as usize,
        parser: if pool.redis { "resp" } else { "memcache-text-reply" }.into(),
        request_timeout: pool.timeout_ms.map(|ms| Duration::from_millis(ms.into())),
        failure_limit: pool.server_failure_limit.max(1),
        retry_after: Duration::from_millis(pool.server_retry_timeout_ms.into()),
        setup: if pool.redis { redis_setup(pool) } else { None },
        // Every client may have requests in flight to one backend connection (twemproxy
        // queues without a limit): 10,000 clients with one request each must not be "busy".
        max_pending: MAX_PENDING,
        rx_ring: if pool.redis { PoolConfig::default().rx_ring } else { MEMCACHE_BACKEND_RING },
        ..PoolConfig::default()
    })
}

/// What twemproxy sends on each new backend connection: `AUTH` with `redis_auth` (the same
/// password clients give the proxy), `SELECT` with a `redis_db` other than 0. Each must be
/// answered `+OK`.
fn redis_setup(pool: &Pool) -> Option<ConnSetup> {
    let mut requests = Vec::new();
    if let Some(pw) = &pool.redis_auth {
        requests.push(resp::encode(&[b"AUTH", pw.as_bytes()]));
    }
    if pool.redis_db != 0 {
        requests.push(resp::encode(&[b"SELECT", pool.redis_db.to_string().as_bytes()]));
    }
    (!requests.is_empty()).then_some(ConnSetup { requests, reply_ok: |r| r.starts_with(b"+OK") })
}

/// Client connections, handled on the engine thread: RESP requests (inline commands too)
/// for a Redis pool; memcached text or binary requests, told apart per message, for a
/// memcached pool.
pub fn server_config(pool: &Pool) -> ServerConfig {
    let base = ServerConfig { model: Model::RunToCompletion, ..ServerConfig::default() };
    if pool.redis {
        ServerConfig { parser: "resp:inline=true".into(), ..base }
    } else {
        ServerConfig { parser: "memcache".into(), rx_ring: MEMCACHE_CLIENT_RING, ..base }
    }
}
