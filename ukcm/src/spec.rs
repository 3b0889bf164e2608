//! The strings an operator writes: transport specs (`kernel`, `mem`, `afxdp:IF[:Q]`,
//! `tap:NAME`, `dpdk:ARGS`), addresses (`IP[/PREFIX]`) and steering policies. Each parses
//! to a value or to one line that says what was expected.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use ukcm_mux::{KeyFn, SteerPolicy};
use ukcm_parsers::fnv::fnv1a64;

/// What carries a server's or client's connections (`--nic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportSpec {
    /// Kernel TCP sockets under the mux (`kernel`).
    Kernel,
    /// Two userspace stacks over the in-memory port pair, in one process (`mem`; the demo).
    Mem,
    /// AF_XDP on an interface's queues (`afxdp:IF` all of them, `afxdp:IF:Q[,Q…]` those):
    /// a server runs one engine per queue.
    Afxdp { ifname: String, queues: QueueSet },
    /// A TAP device (`tap:NAME`).
    Tap { name: String },
    /// DPDK with EAL arguments (`dpdk:ARGS`).
    Dpdk { args: String },
}

/// Which queues of an interface a transport uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSet {
    /// Every receive queue the interface has.
    All,
    /// These queues.
    List(Vec<u32>),
}

impl QueueSet {
    /// The queue numbers: the list, or every receive queue of `ifname` (from sysfs).
    pub fn resolve(&self, ifname: &str) -> Result<Vec<u32>, String> {
        match self {
            QueueSet::List(q) => Ok(q.clone()),
            QueueSet::All => {
                let dir = format!("/sys/class/net/{ifname}/queues");
                let n = std::fs::read_dir(&dir)
                    .map_err(|e| format!("afxdp:{ifname}: cannot list its queues ({dir}: {e})"))?
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count();
                Ok((0..n.max(1) as u32).collect())
            }
        }
    }

    /// The first queue (where a single-engine tool, such as a load generator, runs).
    pub fn first(&self) -> u32 {
        match self {
            QueueSet::List(q) => q.first().copied().unwrap_or(0),
            QueueSet::All => 0,
        }
    }
}

impl FromStr for TransportSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        match (kind, rest) {
            ("kernel", None) => Ok(TransportSpec::Kernel),
            ("kernel", Some(_)) => Err("`kernel` takes no options (write --nic kernel)".into()),
            ("mem", None) => Ok(TransportSpec::Mem),
            ("mem", Some(_)) => Err("`mem` takes no options (write --nic mem)".into()),
            ("afxdp", Some(r)) if !r.is_empty() => {
                let (ifname, queues) = match r.split_once(':') {
                    Some((i, list)) => {
                        let mut qs = Vec::new();
                        for q in list.split(',') {
                            let q = q.trim().parse::<u32>().map_err(|_| {
                                format!("afxdp queue {q:?} is not a number (afxdp:IF[:QUEUE[,QUEUE…]])")
                            })?;
                            if qs.contains(&q) {
                                return Err(format!("afxdp queue {q} is listed twice"));
                            }
                            qs.push(q);
                        }
                        (i, QueueSet::List(qs))
                    }
                    None => (r, QueueSet::All),
                };
                if ifname.is_empty() || ifname.len() > 15 {
                    return Err(format!(
                        "afxdp interface name {ifname:?} must be 1 to 15 characters (afxdp:IF[:QUEUE])"
                    ));
                }
                Ok(TransportSpec::Afxdp { ifname: ifname.into(), queues })
            }
            ("tap", Some(r)) if !r.is_empty() && r.len() <= 15 => Ok(TransportSpec::Tap { name: r.into() }),
            ("tap", _) => Err("tap needs a device name of 1 to 15 characters (tap:NAME)".into()),
            ("dpdk", Some(r)) if !r.is_empty() => Ok(TransportSpec::Dpdk { args: r.into() }),
            ("dpdk", _) => Err("dpdk needs EAL arguments (dpdk:ARGS)".into()),
            ("afxdp", _) => Err("afxdp needs an interface (afxdp:IF[:QUEUE])".into()),
            _ => Err(format!("unknown nic {s:?}; expected kernel, mem, afxdp:IF[:QUEUE], tap:NAME or dpdk:ARGS")),
        }
    }
}

impl fmt::Display for TransportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportSpec::Kernel => f.write_str("kernel"),
            TransportSpec::Mem => f.write_str("mem"),
            TransportSpec::Afxdp { ifname, queues: QueueSet::All } => write!(f, "afxdp:{ifname}"),
            TransportSpec::Afxdp { ifname, queues: QueueSet::List(q) } => {
                let list: Vec<String> = q.iter().map(u32::to_string).collect();
                write!(f, "afxdp:{ifname}:{}", list.join(","))
            }
            TransportSpec::Tap { name } => write!(f, "tap:{name}"),
            TransportSpec::Dpdk { args } => write!(f, "dpdk:{args}"),
        }
    }
}

impl TransportSpec {
    /// Ok for the load generator's transports: kernel sockets, or its own userspace stack
    /// on AF_XDP or TAP; `mem` and DPDK are refused in one line.
    pub fn require_load(&self) -> Result<(), String> {
        match self {
            TransportSpec::Kernel | TransportSpec::Afxdp { .. } | TransportSpec::Tap { .. } => Ok(()),
            TransportSpec::Mem => Err(
                "--nic mem: the in-memory pair has no peer outside this process; the stack load over it is ukcm-demo --nic mem"
                    .into(),
            ),
            TransportSpec::Dpdk { .. } => {
                Err(format!("--nic {self}: not available yet: DPDK is not built into this build (see the DPDK issue)"))
            }
        }
    }

    /// Ok for the transports a [`crate::Server`] can run on: kernel, AF_XDP, TAP and `mem`
    /// (its peer is the caller's, [`crate::Server::take_mem_peer`]). DPDK is refused unless
    /// built in.
    pub fn require_server(&self) -> Result<(), String> {
        match self {
            TransportSpec::Kernel | TransportSpec::Mem | TransportSpec::Afxdp { .. } | TransportSpec::Tap { .. } => {
                Ok(())
            }
            TransportSpec::Dpdk { .. } if cfg!(feature = "dpdk") => Ok(()),
            TransportSpec::Dpdk { .. } => Err(format!(
                "--nic {self}: DPDK is not built into this binary (build with --features dpdk, after scripts/install-dpdk.sh)"
            )),
        }
    }

    /// [`TransportSpec::require_server`] for a server program whose clients are other
    /// programs (`ukcm-echo`, `ukcm-proxy`): `mem` is refused too, in one line saying where
    /// it runs instead.
    pub fn require_reachable_server(&self) -> Result<(), String> {
        match self {
            TransportSpec::Mem => Err(
                "--nic mem: the in-memory pair's other end lives inside this process, so no client could connect (`ukcm-demo --nic mem` runs the echo server with a load generator on that end; a program of your own takes it with ukcm::Server::take_mem_peer)"
                    .into(),
            ),
            other => other.require_server(),
        }
    }
}

/// `IP[/PREFIX]`: the prefix is checked against the address family (and ignored by the
/// kernel transport, which binds the address only).
pub fn parse_addr(s: &str) -> Result<(IpAddr, Option<u8>), String> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 or IPv6 address (IP[/PREFIX])"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => None,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => Some(n),
            _ => return Err(format!("prefix {p:?} is not a number from 0 to {max}")),
        },
    };
    Ok((ip, prefix))
}

/// Steering policy names (`--steer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SteerKind {
    /// Batch round-robin (KCM's default).
    #[default]
    Batch,
    /// Shortest queue.
    LeastLoaded,
    /// One socket per connection.
    Sticky,
    /// By a key hash of the message, see [`hash_key_fn`].
    Hash,
}

impl FromStr for SteerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "batch" => Ok(SteerKind::Batch),
            "least-loaded" => Ok(SteerKind::LeastLoaded),
            "sticky" => Ok(SteerKind::Sticky),
            "hash" => Ok(SteerKind::Hash),
            _ => Err(format!("unknown steering {s:?}; expected batch, least-loaded, sticky or hash")),
        }
    }
}

impl fmt::Display for SteerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SteerKind::Batch => "batch",
            SteerKind::LeastLoaded => "least-loaded",
            SteerKind::Sticky => "sticky",
            SteerKind::Hash => "hash",
        })
    }
}

/// Bytes the `--steer hash` key covers.
pub const HASH_KEY_BYTES: usize = 16;

/// The `--steer hash` key: FNV-1a 64 of the 16 bytes after the message header
/// (`header_len` bytes: the length field and what precedes it; fewer if the message is
/// shorter). For the load generator's messages those bytes are the connection number,
/// a magic and the sequence number, so messages spread over all sockets.
pub fn hash_key_fn(header_len: usize) -> KeyFn {
    Arc::new(move |m: &[u8]| {
        let start = header_len.min(m.len());
        let end = (start + HASH_KEY_BYTES).min(m.len());
        fnv1a64(&m[start..end])
    })
}

impl SteerKind {
    /// The mux policy; `header_len` is used by `hash`.
    pub fn policy(self, header_len: usize) -> SteerPolicy {
        match self {
            SteerKind::Batch => SteerPolicy::BatchRoundRobin,
            SteerKind::LeastLoaded => SteerPolicy::LeastLoaded,
            SteerKind::Sticky => SteerPolicy::Sticky,
            SteerKind::Hash => SteerPolicy::KeyHash(hash_key_fn(header_len)),
        }
    }
}
