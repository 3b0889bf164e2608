//! `mem` as a transport: the server runs the userspace stack on one end of an in-memory port
//! pair, and the caller drives the other end in the same process ([`MemPeer`], taken once
//! with [`crate::Server::take_mem_peer`]). Nothing outside the process can reach such a
//! server, so it is for tests, demos and programs that bring their own client (`ukcm-demo
//! --nic mem`); no privileges, no NIC.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ukcm_nic::{mem_pair, HugePolicy, MemPairConfig, MemPort, PinnedBudget, PoolConfig};
use ukcm_stack::smoltcp::wire::{IpAddress, IpCidr};
use ukcm_stack::{Engine, EngineConfig};

use crate::transport::{server_tcp_options, StackTransport};

/// The other end of a `mem` server's in-memory pair.
#[derive(Debug)]
pub struct MemPeer {
    /// The port: an engine on it (see [`MemPeer::engine`]) reaches the server.
    pub port: MemPort,
    /// Where the server listens.
    pub server: SocketAddr,
    /// An address for the peer on the server's subnet (the server's, plus one).
    pub addr: IpCidr,
}

impl MemPeer {
    /// An engine on the port at [`MemPeer::addr`], with the server's TCP options (Nagle
    /// off, 512 KiB rings), polled by the caller.
    pub fn engine(self) -> io::Result<Engine<MemPort>> {
        let mut cfg = EngineConfig { default_tcp: server_tcp_options(), ..EngineConfig::default() };
        match self.addr {
            IpCidr::Ipv4(a) => cfg.ipv4 = Some(a),
            IpCidr::Ipv6(a) => cfg.ipv6 = Some(a),
        }
        Engine::new(self.port, cfg).map_err(|e| io::Error::other(format!("mem peer engine: {e}")))
    }
}

/// The pair both ends use: 8192 frames a side, 2048 frames in flight each way, hugepages if
/// there are any (as `ukcm-demo` always used).
fn pair_config() -> MemPairConfig {
    MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 8192 },
        link_capacity: 2048,
        huge: HugePolicy::Prefer,
        ..MemPairConfig::default()
    }
}

/// The neighbour of `ip` on its subnet: one above (one below for the top address of an
/// octet/segment, so a /24 or /64 server never gets a peer off its subnet).
fn next_to(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mut o = v4.octets();
            o[3] = if o[3] >= 254 { o[3] - 1 } else { o[3] + 1 };
            IpAddr::V4(Ipv4Addr::from(o))
        }
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[7] = if s[7] == u16::MAX { s[7] - 1 } else { s[7] + 1 };
            IpAddr::V6(Ipv6Addr::from(s))
        }
    }
}

/// Makes the pair: the server's transport (built on the engine thread by the returned
/// closure) on one end, the [`MemPeer`] on the other.
pub(crate) fn pair(
    cidr: IpCidr,
    gateway: Option<IpAddr>,
    listen: u16,
) -> io::Result<(impl FnOnce() -> io::Result<StackTransport<MemPort>> + Send + 'static, MemPeer)> {
    let (ours, theirs) = mem_pair(&pair_config(), &PinnedBudget::unlimited()).map_err(io::Error::other)?;
    let server_ip = IpAddr::from(cidr.address());
    let peer_ip = IpAddress::from(next_to(server_ip));
    let peer = MemPeer {
        port: theirs,
        server: SocketAddr::new(server_ip, listen),
        addr: IpCidr::new(peer_ip, cidr.prefix_len()),
    };
    let make = move || StackTransport::new(ours, None, cidr, gateway.map(IpAddress::from), listen, 1024);
    Ok((make, peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_address_stays_on_the_subnet() {
        assert_eq!(next_to("10.0.0.1".parse().unwrap()), "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(next_to("10.0.0.254".parse().unwrap()), "10.0.0.253".parse::<IpAddr>().unwrap());
        assert_eq!(next_to("fd00::1".parse().unwrap()), "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(next_to("fd00::ffff".parse().unwrap()), "fd00::fffe".parse::<IpAddr>().unwrap());
    }
}
