//! Command-line pieces shared by the binaries: `--nic`, `--addr`, `--steer`, `--size`
//! parsing, parser-spec validation, and the "one clear line, non-zero exit" error style.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use ukcm_mux::{KeyFn, SteerPolicy};

use crate::wire::fnv1a64;

/// Exit code for bad usage (flags, specs), as clap uses.
pub const EXIT_USAGE: i32 = 2;

/// Which NIC / transport a binary runs over (`--nic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicSpec {
    /// Kernel TCP sockets under the mux (`kernel`).
    Kernel,
    /// Two userspace stacks over the in-memory port pair, in one process (`mem`; the demo).
    Mem,
    /// AF_XDP on an interface queue (`afxdp:IF[:Q]`).
    Afxdp { ifname: String, queue: u32 },
    /// A TAP device (`tap:NAME`).
    Tap { name: String },
    /// DPDK with EAL arguments (`dpdk:ARGS`).
    Dpdk { args: String },
}

impl FromStr for NicSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        match (kind, rest) {
            ("kernel", None) => Ok(NicSpec::Kernel),
            ("kernel", Some(_)) => Err("`kernel` takes no options (write --nic kernel)".into()),
            ("mem", None) => Ok(NicSpec::Mem),
            ("mem", Some(_)) => Err("`mem` takes no options (write --nic mem)".into()),
            ("afxdp", Some(r)) if !r.is_empty() => {
                let (ifname, queue) = match r.split_once(':') {
                    Some((i, q)) => {
                        let q = q
                            .parse::<u32>()
                            .map_err(|_| format!("afxdp queue {q:?} is not a number (afxdp:IF[:QUEUE])"))?;
                        (i, q)
                    }
                    None => (r, 0),
                };
                if ifname.is_empty() || ifname.len() > 15 {
                    return Err(format!(
                        "afxdp interface name {ifname:?} must be 1 to 15 characters (afxdp:IF[:QUEUE])"
                    ));
                }
                Ok(NicSpec::Afxdp { ifname: ifname.into(), queue })
            }
            ("tap", Some(r)) if !r.is_empty() && r.len() <= 15 => Ok(NicSpec::Tap { name: r.into() }),
            ("tap", _) => Err("tap needs a device name of 1 to 15 characters (tap:NAME)".into()),
            ("dpdk", Some(r)) if !r.is_empty() => Ok(NicSpec::Dpdk { args: r.into() }),
            ("dpdk", _) => Err("dpdk needs EAL arguments (dpdk:ARGS)".into()),
            ("afxdp", _) => Err("afxdp needs an interface (afxdp:IF[:QUEUE])".into()),
            _ => Err(format!("unknown nic {s:?}; expected kernel, mem, afxdp:IF[:QUEUE], tap:NAME or dpdk:ARGS")),
        }
    }
}

impl fmt::Display for NicSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicSpec::Kernel => f.write_str("kernel"),
            NicSpec::Mem => f.write_str("mem"),
            NicSpec::Afxdp { ifname, queue } => write!(f, "afxdp:{ifname}:{queue}"),
            NicSpec::Tap { name } => write!(f, "tap:{name}"),
            NicSpec::Dpdk { args } => write!(f, "dpdk:{args}"),
        }
    }
}

impl NicSpec {
    /// Ok for the load generator's transports: kernel sockets, or its own userspace stack
    /// on AF_XDP or TAP; `mem` and DPDK are refused in one line.
    pub fn require_load(&self) -> Result<(), String> {
        match self {
            NicSpec::Kernel | NicSpec::Afxdp { .. } | NicSpec::Tap { .. } => Ok(()),
            NicSpec::Mem => Err(
                "--nic mem: the in-memory pair has no peer outside this process; the stack load over it is ukcm-demo --nic mem"
                    .into(),
            ),
            NicSpec::Dpdk { .. } => {
                Err(format!("--nic {self}: not available yet: DPDK is not built into this build (see the DPDK issue)"))
            }
        }
    }

    /// Ok for the transports a server can run on: kernel, AF_XDP and TAP. DPDK is refused
    /// (not built in), and so is `mem` (its peer lives in the same process: ukcm-demo).
    pub fn require_server(&self) -> Result<(), String> {
        match self {
            NicSpec::Kernel | NicSpec::Afxdp { .. } | NicSpec::Tap { .. } => Ok(()),
            NicSpec::Mem => {
                Err("--nic mem: the in-memory pair has no peer outside this process; run ukcm-demo --nic mem".into())
            }
            NicSpec::Dpdk { .. } if cfg!(feature = "dpdk") => Ok(()),
            NicSpec::Dpdk { .. } => Err(format!(
                "--nic {self}: DPDK is not built into this binary (build with --features dpdk, after scripts/install-dpdk.sh)"
            )),
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

/// clap value parser for `--addr`.
pub fn addr_arg(s: &str) -> Result<(IpAddr, Option<u8>), String> {
    parse_addr(s)
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

/// `--size BYTES` or `--size MIN-MAX` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    /// Smallest message, header included.
    pub min: usize,
    /// Largest message, header included.
    pub max: usize,
}

impl FromStr for SizeRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let num =
            |t: &str| t.trim().parse::<usize>().map_err(|_| format!("{t:?} is not a byte count (BYTES or MIN-MAX)"));
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(s)?;
                (n, n)
            }
        };
        if min == 0 {
            return Err("message size must be at least 1 byte".into());
        }
        if min > max {
            return Err(format!("size range {min}-{max}: MIN is larger than MAX"));
        }
        Ok(SizeRange { min, max })
    }
}

impl fmt::Display for SizeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// clap value parser for counts that must be at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a positive whole number")),
    }
}

/// clap value parser for a positive number of seconds (fractions allowed).
pub fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// clap value parser for a parser spec: it must build.
pub fn parser_spec(s: &str) -> Result<String, String> {
    ukcm_parsers::parser_from_spec(s).map(|_| s.to_owned()).map_err(|e| format!("bad parser spec {s:?}: {e}"))
}

/// Parses the command line; on a usage error prints one line `PROG: error` on stderr
/// and exits with [`EXIT_USAGE`] (help and version print as usual).
pub fn parse_or_exit<C: clap::Parser>(prog: &str) -> C {
    match C::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // clap's first paragraph, folded onto one line.
            let text = e.render().to_string();
            let para: Vec<&str> = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = para.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            fail(prog, if line.is_empty() { "bad command line" } else { line })
        }
    }
}

/// Prints `PROG: msg` on stderr and exits with [`EXIT_USAGE`].
pub fn fail(prog: &str, msg: &str) -> ! {
    eprintln!("{prog}: {msg}");
    std::process::exit(EXIT_USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_specs_parse_and_servers_refuse_dpdk_and_mem() {
        assert_eq!("kernel".parse::<NicSpec>(), Ok(NicSpec::Kernel));
        assert_eq!("afxdp:eth0:3".parse::<NicSpec>(), Ok(NicSpec::Afxdp { ifname: "eth0".into(), queue: 3 }));
        assert_eq!("afxdp:eth0".parse::<NicSpec>(), Ok(NicSpec::Afxdp { ifname: "eth0".into(), queue: 0 }));
        assert_eq!("tap:tap0".parse::<NicSpec>(), Ok(NicSpec::Tap { name: "tap0".into() }));
        assert!("dpdk:-l 0".parse::<NicSpec>().is_ok());
        assert_eq!("mem".parse::<NicSpec>(), Ok(NicSpec::Mem));
        for bad in ["", "afxdp", "afxdp:", "afxdp:eth0:x", "tap:", "pcap:x", "kernel:1", "mem:1"] {
            assert!(bad.parse::<NicSpec>().is_err(), "{bad}");
        }
        for ok in ["kernel", "afxdp:eth0:1", "tap:t0"] {
            assert!(ok.parse::<NicSpec>().unwrap().require_load().is_ok(), "{ok}");
        }
        assert!(NicSpec::Mem.require_load().unwrap_err().contains("ukcm-demo --nic mem"));
        assert!("dpdk:-l0".parse::<NicSpec>().unwrap().require_load().unwrap_err().contains("not available yet"));
        for ok in ["kernel", "afxdp:eth0", "tap:t0"] {
            assert!(ok.parse::<NicSpec>().unwrap().require_server().is_ok(), "{ok}");
        }
        let dpdk = "dpdk:-l0".parse::<NicSpec>().unwrap().require_server();
        if cfg!(feature = "dpdk") {
            assert!(dpdk.is_ok(), "{dpdk:?}");
        } else {
            let e = dpdk.unwrap_err();
            assert!(e.contains("DPDK is not built into this binary (build with --features dpdk"), "{e}");
        }
        assert!(NicSpec::Mem.require_server().unwrap_err().contains("run ukcm-demo --nic mem"));
    }

    #[test]
    fn addresses_sizes_and_steering() {
        assert_eq!(parse_addr("127.0.0.1/8").unwrap().1, Some(8));
        assert!(parse_addr("::1/128").is_ok());
        assert!(parse_addr("127.0.0.1/33").is_err());
        assert!(parse_addr("10.0.0.300").is_err());
        assert_eq!("64-1024".parse::<SizeRange>(), Ok(SizeRange { min: 64, max: 1024 }));
        assert_eq!("100".parse::<SizeRange>(), Ok(SizeRange { min: 100, max: 100 }));
        assert!("1024-64".parse::<SizeRange>().unwrap_err().contains("MIN is larger than MAX"));
        assert!("0".parse::<SizeRange>().is_err());
        assert_eq!("least-loaded".parse::<SteerKind>(), Ok(SteerKind::LeastLoaded));
        assert!("random".parse::<SteerKind>().is_err());
        let k = hash_key_fn(4);
        let a = k(&[0, 0, 0, 9, 1, 2, 3]);
        assert_eq!(a, k(&[9, 9, 9, 9, 1, 2, 3]), "header bytes do not count");
        assert_ne!(a, k(&[0, 0, 0, 9, 1, 2, 4]));
    }
}
