//! Throwaway test topologies: a network namespace with a veth pair into it.
//!
//! Used by the privileged integration tests (and the demo and benches): the ukcm side of
//! the veth stays in the caller's namespace without an address (our stack owns it), the
//! peer side lives in a fresh namespace with an address, so the Linux kernel there is the
//! peer. Names are unique per process and call so parallel runs never collide, and
//! everything is removed on drop.
//!
//! Traffic safety: [`TestNet::in_peer`] runs code on a thread that has entered the peer
//! namespace, and [`TestNet::peer_udp_socket`] binds to the peer veth (SO_BINDTODEVICE):
//! a generator can only ever send through the device this topology created.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether this process may create namespaces and attach XDP programs: root *with* its
/// capabilities. A root process stripped of them (`setpriv --bounding-set=-all`, as
/// scripts/test.sh runs the unprivileged suite once) counts as unprivileged.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let uid0 = unsafe { libc::geteuid() == 0 };
    // capability(7) numbers: CAP_NET_ADMIN, CAP_SYS_ADMIN.
    uid0 && has_caps(&[12, 21])
}

/// Whether every capability in `caps` is in the effective set (`CapEff` of
/// `/proc/self/status`); false if that cannot be read.
fn has_caps(caps: &[u32]) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    caps.iter().all(|&c| eff & (1u64 << c) != 0)
}

/// Whether privileged tests must run (set by scripts/test.sh): then a missing privilege is
/// a failure, not a skip.
pub fn privileged_required() -> bool {
    std::env::var_os("UKCM_PRIVILEGED").is_some_and(|v| v == "1")
}

/// For privileged tests: `true` to go on; `false` (after saying why) to skip, unless
/// skipping is forbidden, in which case it panics.
pub fn privileged_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(!privileged_required(), "{test}: UKCM_PRIVILEGED=1 but not running as root");
    eprintln!("SKIP {test}: needs root (run scripts/test.sh as root)");
    false
}

/// Runs a command, turning failure into an error with its stderr.
pub fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.output().map_err(|e| io::Error::new(e.kind(), format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> io::Result<String> {
    run(Command::new("ip").args(args))
}

/// Options of a topology.
#[derive(Debug, Clone)]
pub struct TestNetOptions {
    /// Receive and transmit queues of the veth (for multi-queue AF_XDP tests).
    pub queues: u32,
    /// IP MTU of both veth ends.
    pub mtu: u32,
    /// Turn off checksum offload on the peer, so the kernel computes full checksums
    /// (userspace stacks cannot see `CHECKSUM_PARTIAL` skbs' missing checksums).
    pub peer_tx_checksum_off: bool,
}

impl Default for TestNetOptions {
    fn default() -> Self {
        TestNetOptions { queues: 1, mtu: 1500, peer_tx_checksum_off: true }
    }
}

/// An address family a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (ARP resolves addresses).
    V4,
    /// IPv6 (neighbour discovery resolves addresses).
    V6,
}

/// The addresses of one family on a topology's link: ukcm's, the kernel peer's, the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Which family.
    pub family: Family,
    /// ukcm's address (the stack's own; nothing in the kernel has it).
    pub ukcm: IpAddr,
    /// The kernel peer's address, in the namespace.
    pub peer: IpAddr,
    /// Prefix length of the subnet.
    pub prefix: u8,
}

/// A namespace + veth pair, removed on drop.
#[derive(Debug)]
pub struct TestNet {
    /// The namespace holding the peer.
    pub ns: String,
    /// The veth end in our namespace (ukcm attaches here).
    pub host_if: String,
    /// The veth end inside the namespace.
    pub peer_if: String,
    /// Address for the ukcm stack (on `host_if`'s subnet).
    pub ukcm_ip: Ipv4Addr,
    /// The kernel peer's address.
    pub peer_ip: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// MAC of the peer veth end.
    pub peer_mac: [u8; 6],
    /// MAC of the host veth end (ukcm may use it as its own).
    pub host_mac: [u8; 6],
}

impl TestNet {
    /// Creates `ukcm-<tag>-<pid>-<n>` with a veth pair; subnet `10.213.<n>.0/24` (a range only
    /// ukcm's tests use), ukcm at .1, the kernel peer at .2.
    pub fn new(tag: &str, opts: &TestNetOptions) -> io::Result<Self> {
        let (_, ns, base, ukcm_ip, peer_ip) = Self::names(tag);
        let host_if = format!("{base}a");
        let peer_if = format!("{base}b");
        let q = opts.queues.max(1).to_string();
        ip(&["netns", "add", &ns])?;
        let mut net =
            TestNet { ns, host_if, peer_if, ukcm_ip, peer_ip, prefix: 24, peer_mac: [0; 6], host_mac: [0; 6] };
        // From here on, drop cleans up whatever was made.
        let mtu = opts.mtu.to_string();
        ip(&[
            "link",
            "add",
            &net.host_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &net.peer_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &net.ns,
        ])?;
        let _ = run(Command::new("sysctl").args(["-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", net.host_if)]));
        ip(&["link", "set", &net.host_if, "mtu", &mtu, "up"])?;
        net.peer_ip_cmd(&["link", "set", "lo", "up"])?;
        net.peer_ip_cmd(&["link", "set", &net.peer_if.clone(), "mtu", &mtu, "up"])?;
        let addr = format!("{}/{}", net.peer_ip, net.prefix);
        net.peer_ip_cmd(&["addr", "add", &addr, "dev", &net.peer_if.clone()])?;
        if opts.peer_tx_checksum_off {
            net.peer_cmd(&["ethtool", "-K", &net.peer_if.clone(), "tx", "off"])?;
        }
        net.host_mac = read_mac(&ip(&["-o", "link", "show", &net.host_if])?)?;
        net.peer_mac = read_mac(&net.peer_ip_cmd(&["-o", "link", "show", &net.peer_if.clone()])?)?;
        Ok(net)
    }

    /// A TAP topology: the TAP is opened by `open` (which gets the device name and the
    /// address ukcm is to use, and returns whatever owns the TAP's file descriptor), then its kernel side is moved into a fresh
    /// namespace `ukcm-<tag>-<pid>-<n>` and addressed there (`10.213.<n>.2/24`; ukcm takes .1).
    /// `host_if` and `peer_if` both name the TAP; `host_mac` is a locally administered MAC
    /// for the stack (a TAP's own MAC belongs to its kernel side). Removed on drop (deleting
    /// the namespace deletes the TAP; the port's fd then sees the device gone).
    pub fn with_tap<P>(tag: &str, open: impl FnOnce(&str, Ipv4Addr) -> io::Result<P>) -> io::Result<(P, TestNet)> {
        let (n, ns, base, ukcm_ip, peer_ip) = Self::names(tag);
        let tap = format!("{base}t");
        let port = open(&tap, ukcm_ip)?;
        ip(&["netns", "add", &ns])?;
        let mut net = TestNet {
            ns,
            host_if: tap.clone(),
            peer_if: tap.clone(),
            ukcm_ip,
            peer_ip,
            prefix: 24,
            peer_mac: [0; 6],
            host_mac: [0x02, 0x75, 0x6b, 0x63, 0x6d, n as u8],
        };
        // From here on, drop removes the namespace (and with it the TAP's kernel side).
        ip(&["link", "set", &tap, "netns", &net.ns])?;
        net.peer_ip_cmd(&["link", "set", "lo", "up"])?;
        let _ = net.peer_cmd(&["sysctl", "-qw", &format!("net.ipv6.conf.{tap}.disable_ipv6=1")]);
        net.peer_ip_cmd(&["addr", "add", &format!("{peer_ip}/24"), "dev", &tap])?;
        net.peer_ip_cmd(&["link", "set", &tap, "up"])?;
        // Full checksums from the kernel (a TAP without IFF_VNET_HDR has no tx offload; make sure).
        let _ = net.peer_cmd(&["ethtool", "-K", &tap, "tx", "off"]);
        net.peer_mac = read_mac(&net.peer_ip_cmd(&["-o", "link", "show", &tap])?)?;
        Ok((port, net))
    }

    /// Unique names for one topology: (n, namespace, interface base name, ukcm IP, peer IP).
    fn names(tag: &str) -> (u32, String, String, Ipv4Addr, Ipv4Addr) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ns = format!("ukcm-{tag}-{pid}-{n}");
        // IFNAMSIZ is 16 with the NUL: "uk" + up to 7 digits of pid + n + side.
        let base = format!("uk{}x{}", pid % 10_000_000, n % 100);
        let subnet = (pid.wrapping_mul(31).wrapping_add(n * 7)) % 250 + 1;
        (n, ns, base, Ipv4Addr::new(10, 213, subnet as u8, 1), Ipv4Addr::new(10, 213, subnet as u8, 2))
    }

    /// A kernel TCP client in the peer namespace, bound to the peer interface
    /// (SO_BINDTODEVICE), connected to `to` within `timeout`.
    pub fn peer_tcp_connect(&self, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let dev = self.peer_if.clone();
        self.in_peer(move || -> io::Result<TcpStream> {
            let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
            bind_to_device(s.as_raw_fd(), &dev)?;
            s.connect_timeout(&to.into(), timeout)?;
            Ok(TcpStream::from(s))
        })?
    }

    /// A kernel TCP listener on the peer's address and `port`, in the peer namespace, bound
    /// to the peer interface (SO_BINDTODEVICE).
    pub fn peer_tcp_listener(&self, port: u16) -> io::Result<TcpListener> {
        self.peer_tcp_listener_at(SocketAddr::new(self.peer_ip.into(), port))
    }

    /// IPv6 on the link: the peer gets `fd00:213:N::2/64` (no duplicate address detection,
    /// so it is usable at once); returns (ukcm's address `fd00:213:N::1`, the peer's). The
    /// host end keeps IPv6 off: that side belongs to ukcm. Calling it again changes nothing.
    pub fn enable_ipv6(&self) -> io::Result<(Ipv6Addr, Ipv6Addr)> {
        let n = u16::from(self.ukcm_ip.octets()[2]);
        let ukcm = Ipv6Addr::new(0xfd00, 0x213, n, 0, 0, 0, 0, 1);
        let peer = Ipv6Addr::new(0xfd00, 0x213, n, 0, 0, 0, 0, 2);
        self.peer_cmd(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=0", self.peer_if)])?;
        self.peer_ip_cmd(&["-6", "addr", "replace", &format!("{peer}/64"), "dev", &self.peer_if, "nodad"])?;
        Ok((ukcm, peer))
    }

    /// The link's addresses in `family` (for IPv6, [`TestNet::enable_ipv6`] first), so one
    /// test body runs over either family.
    pub fn link(&self, family: Family) -> io::Result<Link> {
        Ok(match family {
            Family::V4 => Link { family, ukcm: self.ukcm_ip.into(), peer: self.peer_ip.into(), prefix: self.prefix },
            Family::V6 => {
                let (ukcm, peer) = self.enable_ipv6()?;
                Link { family, ukcm: ukcm.into(), peer: peer.into(), prefix: 64 }
            }
        })
    }

    /// [`TestNet::peer_tcp_listener`] on any of the peer's addresses (IPv6 too).
    pub fn peer_tcp_listener_at(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let dev = self.peer_if.clone();
        self.in_peer(move || -> io::Result<TcpListener> {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            bind_to_device(s.as_raw_fd(), &dev)?;
            s.set_reuse_address(true)?;
            s.bind(&addr.into())?;
            s.listen(1024)?;
            Ok(TcpListener::from(s))
        })?
    }

    /// A permanent neighbour entry in the peer for ukcm's address and `host_mac`: the kernel
    /// sends to ukcm without asking ARP, so no ARP responder is needed.
    pub fn static_neighbour(&self) -> io::Result<()> {
        self.static_neighbour_at(self.ukcm_ip.into())
    }

    /// [`TestNet::static_neighbour`] for any of ukcm's addresses (IPv6: the kernel sends no
    /// neighbour solicitation for it).
    pub fn static_neighbour_at(&self, ip: IpAddr) -> io::Result<()> {
        let (mac, ip) = (self.host_mac_string(), ip.to_string());
        self.peer_ip_cmd(&["neigh", "replace", &ip, "lladdr", &mac, "dev", &self.peer_if, "nud", "permanent"])?;
        Ok(())
    }

    /// The peer kernel's neighbour entry for `ip` (`ip neigh show`: address, `lladdr`, state),
    /// empty if it has none: says whether ukcm answered its ARP or neighbour solicitation.
    pub fn peer_neighbour(&self, ip: IpAddr) -> io::Result<String> {
        Ok(self.peer_ip_cmd(&["neigh", "show", &ip.to_string(), "dev", &self.peer_if])?.trim().to_owned())
    }

    /// `host_mac` as `ip` prints it (`0e:1f:aa:00:b2:03`).
    pub fn host_mac_string(&self) -> String {
        self.host_mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
    }

    /// Runs `ip -n NS ARGS`.
    pub fn peer_ip_cmd(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs a program inside the namespace (`ip netns exec NS PROG ARGS`).
    pub fn peer_cmd(&self, args: &[&str]) -> io::Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        run(&mut c)
    }

    /// A `Command` that runs inside the namespace (for long-running peers).
    pub fn peer_command(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, prog]);
        c
    }

    /// Runs `f` on a thread that has joined the peer namespace (setns affects only that thread).
    pub fn in_peer<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> io::Result<R> {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            s.spawn(|| -> io::Result<R> {
                let file = std::fs::File::open(&path)?;
                // SAFETY: setns with a valid namespace fd; it changes only this thread's namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("peer thread panicked"))?
        })
    }

    /// A UDP socket for the peer side: created inside the namespace, bound to the peer veth
    /// (SO_BINDTODEVICE), so it can only send through this topology.
    pub fn peer_udp_socket(&self) -> io::Result<std::net::UdpSocket> {
        let dev = self.peer_if.clone();
        let ip = self.peer_ip;
        self.in_peer(move || -> io::Result<std::net::UdpSocket> {
            // SAFETY: plain socket(2) call; the fd is owned below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh socket we own.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            bind_to_device(owned.as_raw_fd(), &dev)?;
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sa is a valid sockaddr_in and the length matches it.
            let rc = unsafe {
                libc::bind(
                    owned.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(std::net::UdpSocket::from(owned))
        })?
    }
}

/// SO_BINDTODEVICE: the socket only ever sends and receives through `dev`.
pub fn bind_to_device(fd: i32, dev: &str) -> io::Result<()> {
    // SAFETY: the option value is a byte string of the given length.
    let rc = unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, dev.as_ptr().cast(), dev.len() as libc::socklen_t)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_mac(link_line: &str) -> io::Result<[u8; 6]> {
    let s = link_line
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .ok_or_else(|| io::Error::other(format!("no MAC in {link_line:?}")))?;
    let mut mac = [0u8; 6];
    for (i, part) in s.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).map_err(|e| io::Error::other(format!("bad MAC {s}: {e}")))?;
    }
    Ok(mac)
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes the peer end, which deletes the pair.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_parsed_from_ip_link_output() {
        let line = "5: ukx0a@if4: <BROADCAST> mtu 1500 qdisc noop state DOWN \\    link/ether 0e:1f:aa:00:b2:03 brd ff:ff:ff:ff:ff:ff";
        assert_eq!(read_mac(line).unwrap(), [0x0e, 0x1f, 0xaa, 0x00, 0xb2, 0x03]);
        assert!(read_mac("no mac here").is_err());
    }

    #[test]
    fn namespace_and_veth_exist_and_vanish_on_drop() {
        if !privileged_or_skip("namespace_and_veth_exist_and_vanish_on_drop") {
            return;
        }
        let net = TestNet::new("tn", &TestNetOptions::default()).unwrap();
        let (ns, host) = (net.ns.clone(), net.host_if.clone());
        assert!(ip(&["link", "show", &host]).is_ok());
        let sock = net.peer_udp_socket().unwrap();
        assert_eq!(sock.local_addr().unwrap().ip(), net.peer_ip);
        drop(net);
        assert!(ip(&["link", "show", &host]).is_err(), "veth removed");
        assert!(!ip(&["netns", "list"]).unwrap().contains(&ns), "namespace removed");
    }
}
