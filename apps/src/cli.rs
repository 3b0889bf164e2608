//! Command-line pieces shared by the binaries: `--nic`, `--addr`, `--steer`, `--size`
//! parsing, parser-spec validation, and the "one clear line, non-zero exit" error style.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

pub use ukcm::spec::{hash_key_fn, parse_addr, SteerKind, TransportSpec, HASH_KEY_BYTES};

/// Exit code for bad usage (flags, specs), as clap uses.
pub const EXIT_USAGE: i32 = 2;

/// clap value parser for `--addr`.
pub fn addr_arg(s: &str) -> Result<(IpAddr, Option<u8>), String> {
    parse_addr(s)
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
        assert_eq!("kernel".parse::<TransportSpec>(), Ok(TransportSpec::Kernel));
        assert_eq!(
            "afxdp:eth0:3".parse::<TransportSpec>(),
            Ok(TransportSpec::Afxdp { ifname: "eth0".into(), queues: ukcm::spec::QueueSet::List(vec![3]) })
        );
        assert_eq!(
            "afxdp:eth0".parse::<TransportSpec>(),
            Ok(TransportSpec::Afxdp { ifname: "eth0".into(), queues: ukcm::spec::QueueSet::All })
        );
        assert_eq!("tap:tap0".parse::<TransportSpec>(), Ok(TransportSpec::Tap { name: "tap0".into() }));
        assert!("dpdk:-l 0".parse::<TransportSpec>().is_ok());
        assert_eq!("mem".parse::<TransportSpec>(), Ok(TransportSpec::Mem));
        for bad in ["", "afxdp", "afxdp:", "afxdp:eth0:x", "tap:", "pcap:x", "kernel:1", "mem:1"] {
            assert!(bad.parse::<TransportSpec>().is_err(), "{bad}");
        }
        for ok in ["kernel", "afxdp:eth0:1", "tap:t0"] {
            assert!(ok.parse::<TransportSpec>().unwrap().require_load().is_ok(), "{ok}");
        }
        assert!(TransportSpec::Mem.require_load().unwrap_err().contains("ukcm-demo --nic mem"));
        assert!("dpdk:-l0".parse::<TransportSpec>().unwrap().require_load().unwrap_err().contains("not available yet"));
        for ok in ["kernel", "afxdp:eth0", "tap:t0"] {
            assert!(ok.parse::<TransportSpec>().unwrap().require_server().is_ok(), "{ok}");
        }
        let dpdk = "dpdk:-l0".parse::<TransportSpec>().unwrap().require_server();
        if cfg!(feature = "dpdk") {
            assert!(dpdk.is_ok(), "{dpdk:?}");
        } else {
            let e = dpdk.unwrap_err();
            assert!(e.contains("DPDK is not built into this binary (build with --features dpdk"), "{e}");
        }
        assert!(TransportSpec::Mem.require_server().is_ok(), "the server makes the pair (Server::take_mem_peer)");
        let e = TransportSpec::Mem.require_reachable_server().unwrap_err();
        assert!(e.contains("ukcm-demo --nic mem") && e.contains("take_mem_peer"), "{e}");
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
