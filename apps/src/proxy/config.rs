//! twemproxy's YAML config (pools), read as nutcracker 0.5.0 reads it, plus a `ukcm:`
//! section for ukcm's own settings; every error names its line.
//!
//! ```yaml
//! alpha:                        # a pool (any top-level name but `ukcm`)
//!   listen: 127.0.0.1:22121     # host:port, or /unix/path [octal perm]
//!   hash: fnv1a_64              # default fnv1a_64
//!   hash_tag: "{}"              # exactly two bytes
//!   distribution: ketama        # ketama (default) | modula | random
//!   timeout: 400                # ms; default none
//!   redis: true                 # default false (memcached)
//!   servers:                    # host:port:weight [name], or /unix/path:weight [name]
//!    - 127.0.0.1:6379:1 server1
//! ukcm:                         # ukcm's settings; all optional, the command line wins
//!   transport: afxdp:eth0:0     # kernel | afxdp:IF[:Q] | tap:NAME | dpdk:ARGS
//!   address: 10.0.0.2/24        # IP[/PREFIX] for the userspace stack
//!   workers: 2
//!   steering: batch             # batch | least-loaded | sticky | hash
//! ```
//!
//! Why a top-level `ukcm:` section rather than prefixed keys inside pools: the settings are
//! per process (one transport, one address), and pools stay byte-for-byte twemproxy's, so
//! deleting one section gives nutcracker its file back. The cost: a twemproxy pool named
//! `ukcm` must be renamed.
//!
//! As in twemproxy: values are plain scalars (numbers are decimal digits only, booleans
//! exactly `true`/`false`), a key given twice is an error, `listen` and at least one
//! server are required, weights are `>= 1`, `server_connections` is `>= 1`, `redis_auth`
//! needs `redis: true`, and two servers of a pool may not share a name. One twemproxy
//! quirk is *not* copied: nutcracker parses `client_connections` and then ignores it
//! (always unlimited); here the value is kept for the proxy to honour.

use core::fmt;
use std::net::IpAddr;
use std::path::Path;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

use super::dist::{Distribution, Selector};
use super::hash::HashKind;
use crate::cli::{parse_addr, SteerKind, TransportSpec};

/// A config that did not load: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line (0: the file as a whole).
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.msg)
        } else {
            write!(f, "line {}: {}", self.line, self.msg)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError { line, msg: msg.into() })
}

/// Where a pool listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp { host: String, port: u16 },
    Unix { path: String, perm: Option<u32> },
}

/// Where a server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    Tcp { host: String, port: u16 },
    Unix { path: String },
}

/// One `servers:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub addr: ServerAddr,
    pub weight: u32,
    pub name: Option<String>,
    pub line: usize,
}

impl Server {
    /// The string twemproxy hashes for this server's ketama points (and sorts servers
    /// by): the name if given; else `host:port`, or `host` alone when the port is 11211
    /// (libmemcached's rule), or `path:` for a unix socket (twemproxy keeps the colon).
    pub fn ketama_name(&self) -> String {
        match (&self.name, &self.addr) {
            (Some(n), _) => n.clone(),
            (None, ServerAddr::Tcp { host, port: 11211 }) => host.clone(),
            (None, ServerAddr::Tcp { host, port }) => format!("{host}:{port}"),
            (None, ServerAddr::Unix { path }) => format!("{path}:"),
        }
    }
}

/// One pool, twemproxy's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub line: usize,
    pub listen: Listen,
    pub hash: HashKind,
    pub hash_tag: Option<[u8; 2]>,
    pub distribution: Distribution,
    /// Server timeout in ms (`None`: wait forever, twemproxy's default).
    pub timeout_ms: Option<u32>,
    pub backlog: u32,
    pub client_connections: u32,
    pub redis: bool,
    pub redis_auth: Option<String>,
    pub redis_db: u32,
    pub preconnect: bool,
    pub tcpkeepalive: bool,
    pub reuseport: bool,
    pub auto_eject_hosts: bool,
    pub server_connections: u32,
    pub server_retry_timeout_ms: u32,
    pub server_failure_limit: u32,
    pub servers: Vec<Server>,
}

impl Pool {
    /// A key-to-server selector for this pool (all servers live).
    pub fn selector(&self) -> Selector {
        let servers: Vec<(String, u32)> = self.servers.iter().map(|s| (s.ketama_name(), s.weight)).collect();
        Selector::new(self.distribution, self.hash, self.hash_tag, &servers)
    }
}

/// The `ukcm:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UkcmSettings {
    pub transport: Option<TransportSpec>,
    pub address: Option<(IpAddr, Option<u8>)>,
    pub workers: Option<u32>,
    pub steering: Option<SteerKind>,
}

/// A whole config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// In file order.
    pub pools: Vec<Pool>,
    pub ukcm: UkcmSettings,
}

/// The keys a pool may have (twemproxy 0.5.0's list).
pub const POOL_KEYS: [&str; 18] = [
    "listen",
    "hash",
    "hash_tag",
    "distribution",
    "timeout",
    "backlog",
    "client_connections",
    "redis",
    "tcpkeepalive",
    "reuseport",
    "redis_auth",
    "redis_db",
    "preconnect",
    "auto_eject_hosts",
    "server_connections",
    "server_retry_timeout",
    "server_failure_limit",
    "servers",
];

const UKCM_KEYS: [&str; 4] = ["transport", "address", "workers", "steering"];

impl Config {
    /// Read and parse a file; errors carry the path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError { line: 0, msg: format!("{}: {e}", path.display()) })?;
        Config::parse(&text).map_err(|e| ConfigError { line: e.line, msg: format!("{}: {}", path.display(), e.msg) })
    }

    /// Parse config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let root = load_tree(text)?;
        let Node::Map(entries, _) = root else {
            return err(root.line(), "the top level must be a mapping of pool names to pools");
        };
        let mut pools = Vec::new();
        let mut ukcm = None;
        for (name, line, node) in entries {
            if name == "ukcm" {
                ukcm = Some(parse_ukcm(&node)?);
            } else {
                pools.push(parse_pool(name, line, &node)?);
            }
        }
        if pools.is_empty() {
            return err(0, "no pools in the config");
        }
        Ok(Config { pools, ukcm: ukcm.unwrap_or_default() })
    }
}

/// A YAML node with the line it starts on.
#[derive(Debug)]
enum Node {
    Scalar(String, usize),
    Map(Vec<(String, usize, Node)>, usize),
    Seq(Vec<Node>, usize),
}

impl Node {
    fn line(&self) -> usize {
        match self {
            Node::Scalar(_, l) | Node::Map(_, l) | Node::Seq(_, l) => *l,
        }
    }
}

fn load_tree(text: &str) -> Result<Node, ConfigError> {
    let mut p = Parser::new_from_str(text);
    let mut next = || -> Result<(Event, Marker), ConfigError> {
        p.next_token().map_err(|e| ConfigError { line: e.marker().line(), msg: format!("YAML: {}", e.info()) })
    };
    let mut root = None;
    loop {
        let (ev, m) = next()?;
        match ev {
            Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            ev => {
                if root.is_some() {
                    return err(m.line(), "only one YAML document is allowed");
                }
                root = Some(node(ev, m, &mut next, 0)?);
            }
        }
    }
    root.ok_or(ConfigError { line: 0, msg: "the config is empty".into() })
}

fn node(
    ev: Event,
    m: Marker,
    next: &mut impl FnMut() -> Result<(Event, Marker), ConfigError>,
    depth: u32,
) -> Result<Node, ConfigError> {
    if depth > 8 {
        return err(m.line(), "nested too deep");
    }
    match ev {
        Event::Scalar(s, ..) => Ok(Node::Scalar(s, m.line())),
        Event::SequenceStart(..) => {
            let mut items = Vec::new();
            loop {
                let (ev, m2) = next()?;
                if ev == Event::SequenceEnd {
                    return Ok(Node::Seq(items, m.line()));
                }
                items.push(node(ev, m2, next, depth + 1)?);
            }
        }
        Event::MappingStart(..) => {
            let mut entries: Vec<(String, usize, Node)> = Vec::new();
            loop {
                let (ev, mk) = next()?;
                let key = match ev {
                    Event::MappingEnd => return Ok(Node::Map(entries, m.line())),
                    Event::Scalar(s, ..) => s,
                    _ => return err(mk.line(), "mapping keys must be plain names"),
                };
                if entries.iter().any(|(k, ..)| *k == key) {
                    return err(mk.line(), format!("{key:?} is a duplicate"));
                }
                let (ev, mv) = next()?;
                let value = node(ev, mv, next, depth + 1)?;
                entries.push((key, mk.line(), value));
            }
        }
        Event::Alias(_) => err(m.line(), "YAML aliases are not supported"),
        _ => err(m.line(), "unexpected YAML structure"),
    }
}

/// twemproxy's `nc_atoi`: decimal digits only, fits an `int`.
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&n| n <= i32::MAX as u32)
}

fn parse_pool(name: String, line: usize, node: &Node) -> Result<Pool, ConfigError> {
    let Node::Map(entries, _) = node else {
        return err(line, format!("pool {name:?} must be a mapping of settings"));
    };
    let mut pool = Pool {
        name,
        line,
        listen: Listen::Tcp { host: String::new(), port: 0 },
        hash: HashKind::Fnv1a64,
        hash_tag: None,
        distribution: Distribution::Ketama,
        timeout_ms: None,
        backlog: 512,
        client_connections: 0,
        redis: false,
        redis_auth: None,
        redis_db: 0,
        preconnect: false,
        tcpkeepalive: false,
        reuseport: false,
        auto_eject_hosts: false,
        server_connections: 1,
        server_retry_timeout_ms: 30_000,
        server_failure_limit: 2,
        servers: Vec::new(),
    };
    let mut have_listen = false;
    for (key, kline, value) in entries {
        let bad = |msg: String| ConfigError { line: *kline, msg: format!("pool {:?}: {key}: {msg}", pool.name) };
        if key == "servers" {
            let Node::Seq(items, _) = value else {
                return Err(bad("must be a list of \"host:port:weight [name]\"".into()));
            };
            for item in items {
                let Node::Scalar(s, l) = item else {
                    return Err(bad("each server must be one \"host:port:weight [name]\" string".into()));
                };
                let server =
                    parse_server(s, *l).or_else(|m| err(*l, format!("pool {:?}: servers: {s:?} {m}", pool.name)))?;
                pool.servers.push(server);
            }
            continue;
        }
        let Node::Scalar(v, _) = value else {
            return Err(bad("must be a single value".into()));
        };
        let num = || number(v).ok_or_else(|| format!("{v:?} is not a number"));
        let boolean = || match v.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("{v:?} is not \"true\" or \"false\"")),
        };
        let r: Result<(), String> = (|| {
            match key.as_str() {
                "listen" => {
                    pool.listen = parse_listen(v)?;
                    have_listen = true;
                }
                "hash" => pool.hash = v.parse().map_err(|e: super::hash::UnknownHash| e.to_string())?,
                "hash_tag" => match v.as_bytes() {
                    &[a, b] => pool.hash_tag = Some([a, b]),
                    _ => return Err(format!("{v:?} is not a hash tag of two characters")),
                },
                "distribution" => pool.distribution = v.parse()?,
                "timeout" => pool.timeout_ms = Some(num()?),
                "backlog" => pool.backlog = num()?,
                "client_connections" => pool.client_connections = num()?,
                "redis" => pool.redis = boolean()?,
                "tcpkeepalive" => pool.tcpkeepalive = boolean()?,
                "reuseport" => pool.reuseport = boolean()?,
                "redis_auth" => pool.redis_auth = Some(v.clone()),
                "redis_db" => pool.redis_db = num()?,
                "preconnect" => pool.preconnect = boolean()?,
                "auto_eject_hosts" => pool.auto_eject_hosts = boolean()?,
                "server_connections" => match num()? {
                    0 => return Err("cannot be 0".into()),
                    n => pool.server_connections = n,
                },
                "server_retry_timeout" => pool.server_retry_timeout_ms = num()?,
                "server_failure_limit" => pool.server_failure_limit = num()?,
                _ => {
                    return Err(format!("unknown key (a pool takes: {})", POOL_KEYS.join(", ")));
                }
            }
            Ok(())
        })();
        r.map_err(bad)?;
    }
    let name = &pool.name;
    if !have_listen {
        return err(line, format!("pool {name:?}: listen: is missing"));
    }
    if pool.servers.is_empty() {
        return err(line, format!("pool {name:?}: servers: has no servers"));
    }
    if pool.redis_auth.as_deref().is_some_and(|a| !a.is_empty()) && !pool.redis {
        return err(line, format!("pool {name:?}: redis_auth: is only valid for a redis pool"));
    }
    let mut names: Vec<(String, usize)> = pool.servers.iter().map(|s| (s.ketama_name(), s.line)).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0].0 == w[1].0) {
        let at = w[0].1.max(w[1].1);
        return err(at, format!("pool {name:?}: servers: two servers named {:?}", w[0].0));
    }
    Ok(pool)
}

fn port(s: &str) -> Result<u16, String> {
    number(s)
        .filter(|&p| (1..=65535).contains(&p))
        .map(|p| p as u16)
        .ok_or_else(|| format!("has an invalid port {s:?}"))
}

fn parse_listen(v: &str) -> Result<Listen, String> {
    if v.starts_with('/') {
        return match v.rsplit_once(' ') {
            None => Ok(Listen::Unix { path: v.into(), perm: None }),
            Some((path, perm)) => match u32::from_str_radix(perm, 8) {
                Ok(p) if p <= 0o777 => Ok(Listen::Unix { path: path.into(), perm: Some(p) }),
                _ => Err(format!("has an invalid file permission {perm:?}")),
            },
        };
    }
    let Some((host, p)) = v.rsplit_once(':') else {
        return Err(format!("{v:?} is not \"host:port\" or \"/unix/path [perm]\""));
    };
    if host.is_empty() {
        return Err(format!("{v:?} has no host"));
    }
    Ok(Listen::Tcp { host: host.into(), port: port(p)? })
}

/// `host:port:weight [name]` or `/path:weight [name]`, read from the end as twemproxy
/// does (so IPv6 hosts with colons work).
fn parse_server(v: &str, line: usize) -> Result<Server, String> {
    const FORMAT: &str = "is not \"host:port:weight [name]\" or \"/unix/path:weight [name]\"";
    let (addr_weight, name) = match v.rsplit_once(' ') {
        Some((a, n)) if !n.is_empty() => (a, Some(n.to_owned())),
        Some(_) => return Err(format!("{FORMAT} (empty name)")),
        None => (v, None),
    };
    let Some((addr, weight)) = addr_weight.rsplit_once(':') else {
        return Err(FORMAT.into());
    };
    let weight = match number(weight) {
        Some(0) => return Err("has a zero weight".into()),
        Some(w) => w,
        None => return Err(format!("has an invalid weight {weight:?}")),
    };
    let addr = if addr.starts_with('/') {
        ServerAddr::Unix { path: addr.into() }
    } else {
        let Some((host, p)) = addr.rsplit_once(':') else {
            return Err(FORMAT.into());
        };
        if host.is_empty() {
            return Err(format!("{FORMAT} (empty host)"));
        }
        ServerAddr::Tcp { host: host.into(), port: port(p)? }
    };
    Ok(Server { addr, weight, name, line })
}

fn parse_ukcm(node: &Node) -> Result<UkcmSettings, ConfigError> {
    let Node::Map(entries, _) = node else {
        return err(node.line(), "ukcm: must be a mapping of settings");
    };
    let mut s = UkcmSettings::default();
    for (key, kline, value) in entries {
        let Node::Scalar(v, _) = value else {
            return err(*kline, format!("ukcm: {key}: must be a single value"));
        };
        let r: Result<(), String> = match key.as_str() {
            "transport" => v.parse::<TransportSpec>().map(|t| s.transport = Some(t)),
            "address" => parse_addr(v).map(|a| s.address = Some(a)),
            "workers" => match number(v) {
                Some(n) if n >= 1 => {
                    s.workers = Some(n);
                    Ok(())
                }
                _ => Err(format!("{v:?} is not a number >= 1")),
            },
            "steering" => v.parse::<SteerKind>().map(|k| s.steering = Some(k)),
            _ => Err(format!("unknown key (ukcm: takes {})", UKCM_KEYS.join(", "))),
        };
        r.or_else(|m| err(*kline, format!("ukcm: {key}: {m}")))?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
alpha:
  listen: 127.0.0.1:22121
  hash: murmur
  hash_tag: \"{}\"
  distribution: modula
  timeout: 400
  backlog: 1024
  preconnect: true
  redis: true
  redis_auth: secret
  redis_db: 3
  server_connections: 4
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 3
  client_connections: 100
  servers:
   - 127.0.0.1:6379:1 first
   - 10.0.0.2:6380:2
   - cache.example.net:11211:1
   - /var/run/redis.sock:5 local
   - ::1:6381:1
beta:
  listen: /tmp/beta.sock 0660
  servers:
   - 127.0.0.1:11211:1
ukcm:
  transport: afxdp:eth0:1
  address: 10.0.0.9/24
  workers: 2
  steering: least-loaded
";

    #[test]
    fn full_config_parses_with_defaults_filled() {
        let c = Config::parse(FULL).unwrap();
        assert_eq!(c.pools.len(), 2);
        let a = &c.pools[0];
        assert_eq!((a.name.as_str(), a.line), ("alpha", 1));
        assert_eq!(a.listen, Listen::Tcp { host: "127.0.0.1".into(), port: 22121 });
        assert_eq!(a.hash, HashKind::Murmur);
        assert_eq!(a.hash_tag, Some(*b"{}"));
        assert_eq!(a.distribution, Distribution::Modula);
        assert_eq!(a.timeout_ms, Some(400));
        assert_eq!((a.backlog, a.redis_db, a.server_connections), (1024, 3, 4));
        assert!(a.preconnect && a.redis && a.auto_eject_hosts);
        assert_eq!(a.redis_auth.as_deref(), Some("secret"));
        assert_eq!((a.server_retry_timeout_ms, a.server_failure_limit), (2000, 3));
        assert_eq!(a.client_connections, 100);
        let names: Vec<String> = a.servers.iter().map(Server::ketama_name).collect();
        assert_eq!(names, ["first", "10.0.0.2:6380", "cache.example.net", "local", "::1:6381"]);
        assert_eq!(a.servers[1].weight, 2);
        assert_eq!(a.servers[1].line, 19);
        assert_eq!(a.servers[3].addr, ServerAddr::Unix { path: "/var/run/redis.sock".into() });
        assert_eq!(a.servers[4].addr, ServerAddr::Tcp { host: "::1".into(), port: 6381 });

        let b = &c.pools[1];
        assert_eq!(b.listen, Listen::Unix { path: "/tmp/beta.sock".into(), perm: Some(0o660) });
        assert_eq!(b.hash, HashKind::Fnv1a64);
        assert_eq!(b.distribution, Distribution::Ketama);
        assert_eq!(b.timeout_ms, None);
        assert_eq!((b.backlog, b.server_connections), (512, 1));
        assert_eq!((b.server_retry_timeout_ms, b.server_failure_limit), (30_000, 2));
        assert!(!b.redis && !b.preconnect && !b.auto_eject_hosts);
        assert_eq!(b.servers[0].ketama_name(), "127.0.0.1");

        assert_eq!(
            c.ukcm.transport,
            Some(TransportSpec::Afxdp { ifname: "eth0".into(), queues: ukcm::spec::QueueSet::List(vec![1]) })
        );
        assert_eq!(c.ukcm.address, Some(("10.0.0.9".parse().unwrap(), Some(24))));
        assert_eq!(c.ukcm.workers, Some(2));
        assert_eq!(c.ukcm.steering, Some(SteerKind::LeastLoaded));
    }

    #[test]
    fn unix_server_name_keeps_the_colon() {
        let c = Config::parse("p:\n  listen: 0.0.0.0:1\n  servers:\n   - /tmp/s:1\n").unwrap();
        assert_eq!(c.pools[0].servers[0].ketama_name(), "/tmp/s:");
    }

    fn error(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_line_pool_and_key() {
        let base = "alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:2:1\n";
        let cases = [
            ("  hashh: md5\n", "line 5: pool \"alpha\": hashh: unknown key"),
            ("  hash: md6\n", "line 5: pool \"alpha\": hash: unknown hash \"md6\""),
            ("  distribution: rr\n", "line 5: pool \"alpha\": distribution: unknown distribution"),
            ("  timeout: -1\n", "line 5: pool \"alpha\": timeout: \"-1\" is not a number"),
            ("  redis: yes\n", "line 5: pool \"alpha\": redis: \"yes\" is not \"true\" or \"false\""),
            ("  hash_tag: \"{\"\n", "line 5: pool \"alpha\": hash_tag: \"{\" is not a hash tag"),
            ("  server_connections: 0\n", "line 5: pool \"alpha\": server_connections: cannot be 0"),
            ("  listen: 127.0.0.1:3\n", "line 5: \"listen\" is a duplicate"),
            ("  servers: x\n", "line 5: \"servers\" is a duplicate"),
            ("  timeout: [1]\n", "line 5: pool \"alpha\": timeout: must be a single value"),
        ];
        for (extra, want) in cases {
            let e = error(&format!("{base}{extra}"));
            assert!(e.starts_with(want), "{extra:?}: {e}");
        }
        let e = error("alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:2:0\n");
        assert!(e.starts_with("line 4: pool \"alpha\": servers: \"127.0.0.1:2:0\" has a zero weight"), "{e}");
        let e = error("alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:0:1\n");
        assert!(e.contains("invalid port"), "{e}");
        let e = error("alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:1\n");
        assert!(e.contains("invalid port") || e.contains("is not"), "{e}");
        let e = error("alpha:\n  listen: 127.0.0.1\n  servers:\n   - 127.0.0.1:2:1\n");
        assert!(e.starts_with("line 2: pool \"alpha\": listen:"), "{e}");
        let e = error("alpha:\n  servers:\n   - 127.0.0.1:2:1\n");
        assert_eq!(e, "line 1: pool \"alpha\": listen: is missing");
        let e = error("alpha:\n  listen: 127.0.0.1:1\n");
        assert_eq!(e, "line 1: pool \"alpha\": servers: has no servers");
        let e = error("alpha:\n  listen: 127.0.0.1:1\n  redis_auth: x\n  servers:\n   - a:1:1\n");
        assert!(e.contains("redis_auth: is only valid for a redis pool"), "{e}");
        let e = error("alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - a:1:1 s\n   - b:1:1 s\n");
        assert_eq!(e, "line 5: pool \"alpha\": servers: two servers named \"s\"");
        let e = error("alpha:\n  listen: [\n");
        assert!(e.starts_with("line ") && e.contains("YAML"), "{e}");
        let e = error("ukcm:\n  workers: 2\n");
        assert_eq!(e, "no pools in the config");
        let e = error(&format!("{base}ukcm:\n  transport: eth0\n"));
        assert!(e.starts_with("line 6: ukcm: transport: unknown nic"), "{e}");
        let e = error(&format!("{base}ukcm:\n  threads: 2\n"));
        assert!(e.starts_with("line 6: ukcm: threads: unknown key"), "{e}");
        assert_eq!(error(""), "the config is empty");
        assert!(error("- a\n").contains("top level"));
    }

    #[test]
    fn selector_uses_ketama_names() {
        let c = Config::parse(
            "p:\n  listen: 127.0.0.1:1\n  hash: md5\n  servers:\n   - 10.0.0.1:11211:1\n   - 10.0.0.2:6379:1 two\n",
        )
        .unwrap();
        let sel = c.pools[0].selector();
        let want =
            crate::proxy::dist::Continuum::build([(0u32, &b"10.0.0.1"[..], 1u32), (1, &b"two"[..], 1)].into_iter());
        // same point set (order of ties aside)
        let mut a: Vec<u32> = sel.continuum().points().iter().map(|p| p.value).collect();
        let mut b: Vec<u32> = want.points().iter().map(|p| p.value).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }
}
