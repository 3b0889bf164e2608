//! Network safety for the stack load generator: it sends raw frames on the interface it is
//! given, so it refuses an interface that carries a default route (the way out of the
//! machine) and a server that is not on its own subnet (it has no gateway).

use std::net::Ipv4Addr;

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

/// Ok when the load generator may send on `ifname` to `server` from `addr/prefix`;
/// otherwise one line saying why not.
pub fn check_load_path(ifname: &str, addr: Ipv4Addr, prefix: u8, server: Ipv4Addr) -> Result<(), String> {
    let routes = std::fs::read_to_string("/proc/net/route")
        .map_err(|e| format!("cannot read /proc/net/route to check {ifname} is not the way out: {e}"))?;
    check_with_routes(&routes, ifname, addr, prefix, server)
}

fn check_with_routes(routes: &str, ifname: &str, addr: Ipv4Addr, prefix: u8, server: Ipv4Addr) -> Result<(), String> {
    if default_route_devices(routes).iter().any(|d| d == ifname) {
        return Err(format!(
            "{ifname} carries this namespace's default route: the load generator sends only on links made for it (a veth or TAP of a test topology)"
        ));
    }
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
    if u32::from(addr) & mask != u32::from(server) & mask || prefix < 8 {
        return Err(format!(
            "--connect {server} is not on the subnet of --addr {addr}/{prefix} (a prefix of 8 to 32): the stack load generator has no gateway and talks to on-link servers only"
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

    #[test]
    fn the_default_route_device_and_off_subnet_servers_are_refused() {
        assert_eq!(default_route_devices(ROUTES), vec!["eth0".to_owned()]);
        let (me, srv) = (Ipv4Addr::new(10, 213, 2, 3), Ipv4Addr::new(10, 213, 2, 1));
        assert!(check_with_routes(ROUTES, "veth1", me, 24, srv).is_ok());
        let e = check_with_routes(ROUTES, "eth0", me, 24, srv).unwrap_err();
        assert!(e.contains("eth0 carries this namespace's default route"), "{e}");
        let e = check_with_routes(ROUTES, "veth1", me, 24, Ipv4Addr::new(8, 8, 8, 8)).unwrap_err();
        assert!(e.contains("is not on the subnet"), "{e}");
        assert!(check_with_routes(ROUTES, "veth1", me, 0, Ipv4Addr::new(8, 8, 8, 8)).is_err(), "/0 is everything");
    }
}
