//! Network safety for the stack load generator: it sends raw frames on the interface it is
//! given, so it refuses an interface that carries a default route (the way out of the
//! machine, IPv4 or IPv6) and a server that is not on its own subnet (it has no gateway).

use std::net::IpAddr;

/// Interfaces that carry an IPv4 default route, from `/proc/net/route` text (the current
/// network namespace's table).
pub fn default_route_devices(proc_net_route: &str) -> Vec<String> {
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, dest) = (f.next()?, f.next()?);
            let mask = f.nth(5)?;
            (dest == "00000000" && mask == "00000000").then(|| dev.to_owned())
        })
        .collect()
}

/// Interfaces that carry an IPv6 default route, from `/proc/net/ipv6_route` text (`::/0`,
/// not a reject route: the kernel keeps an unreachable `::/0` on `lo`).
pub fn default_route_devices_v6(proc_net_ipv6_route: &str) -> Vec<String> {
    const RTF_REJECT: u32 = 0x0200;
    proc_net_ipv6_route
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(8)?, 16).ok()?;
            let default = f[0].bytes().all(|b| b == b'0') && f[1] == "00" && flags & RTF_REJECT == 0;
            default.then(|| f.get(9).map(|d| (*d).to_owned())).flatten()
        })
        .collect()
}

/// Ok when the load generator may send on `ifname` to `server` from `addr/prefix`;
/// otherwise one line saying why not.
pub fn check_load_path(ifname: &str, addr: IpAddr, prefix: u8, server: IpAddr) -> Result<(), String> {
    let routes = std::fs::read_to_string("/proc/net/route")
        .map_err(|e| format!("cannot read /proc/net/route to check {ifname} is not the way out: {e}"))?;
    // Absent when IPv6 is off in this kernel: then there is no IPv6 way out either.
    let routes6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    check_with_routes(&routes, &routes6, ifname, addr, prefix, server)
}

fn check_with_routes(
    routes: &str,
    routes6: &str,
    ifname: &str,
    addr: IpAddr,
    prefix: u8,
    server: IpAddr,
) -> Result<(), String> {
    let mut ways_out = default_route_devices(routes);
    ways_out.extend(default_route_devices_v6(routes6));
    if ways_out.iter().any(|d| d == ifname) {
        return Err(format!(
            "{ifname} carries this namespace's default route: the load generator sends only on links made for it (a veth or TAP of a test topology)"
        ));
    }
    let (on_link, range) = match (addr, server) {
        (IpAddr::V4(a), IpAddr::V4(s)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            (u32::from(a) & mask == u32::from(s) & mask && prefix >= 8, "8 to 32")
        }
        (IpAddr::V6(a), IpAddr::V6(s)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            (u128::from(a) & mask == u128::from(s) & mask && prefix >= 16, "16 to 128")
        }
        (IpAddr::V4(_), _) => (false, "8 to 32"),
        (IpAddr::V6(_), _) => (false, "16 to 128"),
    };
    if !on_link {
        return Err(format!(
            "--connect {server} is not on the subnet of --addr {addr}/{prefix} (a prefix of {range}): the stack load generator has no gateway and talks to on-link servers only"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        veth1\t0002D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    const ROUTES6: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth1\n\
        fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     veth1\n\
        00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_route_device_and_off_subnet_servers_are_refused() {
        assert_eq!(default_route_devices(ROUTES), vec!["eth0".to_owned()]);
        let (me, srv) = (ip("10.213.2.3"), ip("10.213.2.1"));
        assert!(check_with_routes(ROUTES, "", "veth1", me, 24, srv).is_ok());
        let e = check_with_routes(ROUTES, "", "eth0", me, 24, srv).unwrap_err();
        assert!(e.contains("eth0 carries this namespace's default route"), "{e}");
        let e = check_with_routes(ROUTES, "", "veth1", me, 24, ip("8.8.8.8")).unwrap_err();
        assert!(e.contains("is not on the subnet"), "{e}");
        assert!(check_with_routes(ROUTES, "", "veth1", me, 0, ip("8.8.8.8")).is_err(), "/0 is everything");
    }

    #[test]
    fn ipv6_default_routes_and_subnets_are_checked_too() {
        assert_eq!(default_route_devices_v6(ROUTES6), vec!["eth1".to_owned()], "not lo's reject route");
        let (me, srv) = (ip("fd00:213:2::3"), ip("fd00:213:2::1"));
        assert!(check_with_routes(ROUTES, ROUTES6, "veth1", me, 64, srv).is_ok());
        let e = check_with_routes(ROUTES, ROUTES6, "eth1", me, 64, srv).unwrap_err();
        assert!(e.contains("eth1 carries this namespace's default route"), "{e}");
        let e = check_with_routes(ROUTES, ROUTES6, "veth1", me, 64, ip("fd00:99::1")).unwrap_err();
        assert!(e.contains("is not on the subnet of --addr fd00:213:2::3/64"), "{e}");
        assert!(check_with_routes(ROUTES, ROUTES6, "veth1", me, 8, srv).is_err(), "too wide a prefix");
        let e = check_with_routes(ROUTES, ROUTES6, "veth1", me, 64, ip("10.213.2.1")).unwrap_err();
        assert!(e.contains("is not on the subnet"), "families differ: {e}");
    }
}
