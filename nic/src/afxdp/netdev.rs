//! What we need to know about a network interface: index, MTU, MAC, queue count.
//!
//! Read from sysfs and `if_nametoindex`, so no netlink is needed for the common case.

use std::ffi::CString;
use std::fs;

use crate::port::PortError;

/// An interface looked up by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDev {
    /// Its name.
    pub name: String,
    /// Its index (what XDP attach and AF_XDP bind take).
    pub ifindex: u32,
    /// IP MTU.
    pub mtu: usize,
    /// MAC address, if it is an Ethernet-like device.
    pub mac: Option<[u8; 6]>,
    /// Receive queues (each can carry one AF_XDP socket).
    pub rx_queues: u32,
}

impl NetDev {
    /// Looks `name` up; a missing interface is a [`PortError::LinkDown`] naming it.
    pub fn lookup(name: &str) -> Result<Self, PortError> {
        let missing = || PortError::LinkDown(format!("network interface {name:?} does not exist"));
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
            return Err(missing());
        }
        let c = CString::new(name).map_err(|_| missing())?;
        // SAFETY: `c` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if ifindex == 0 {
            return Err(missing());
        }
        let sys = format!("/sys/class/net/{name}");
        let mtu = fs::read_to_string(format!("{sys}/mtu")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1500);
        let mac = fs::read_to_string(format!("{sys}/address")).ok().and_then(|s| parse_mac(s.trim()));
        let rx_queues = fs::read_dir(format!("{sys}/queues"))
            .map(|d| {
                d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count() as u32
            })
            .unwrap_or(1)
            .max(1);
        Ok(NetDev { name: name.to_owned(), ifindex, mtu, mac, rx_queues })
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_missing_names_are_named() {
        let lo = NetDev::lookup("lo").unwrap();
        assert!(lo.ifindex > 0);
        assert!(lo.rx_queues >= 1);
        let err = NetDev::lookup("ukcm-nope0").unwrap_err();
        assert!(err.to_string().contains("\"ukcm-nope0\" does not exist"), "{err}");
        assert!(NetDev::lookup("").is_err());
    }

    #[test]
    fn macs_parse() {
        assert_eq!(parse_mac("0e:1f:aa:00:b2:03"), Some([0x0e, 0x1f, 0xaa, 0, 0xb2, 3]));
        assert_eq!(parse_mac("0e:1f:aa:00:b2"), None);
        assert_eq!(parse_mac("0e:1f:aa:00:b2:03:04"), None);
    }
}
