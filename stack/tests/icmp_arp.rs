//! The engine answers ARP and ICMP echo: a bare smoltcp interface on the other end of the
//! in-memory pair pings it.

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::icmp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use ukcm_nic::{mem_pair, HugePolicy, MemPairConfig, PinnedBudget, PoolConfig, PortDevice};
use ukcm_stack::{Clock, Engine, EngineConfig, ManualClock};

#[test]
fn engine_answers_arp_and_ping() {
    let pc = MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 256 },
        huge: HugePolicy::Never,
        ..MemPairConfig::default()
    };
    let (pa, pb) = mem_pair(&pc, &PinnedBudget::unlimited()).unwrap();
    let clock = ManualClock::new();
    let ukcm_ip = Ipv4Address::new(10, 8, 0, 1);
    let cfg = EngineConfig { ipv4: Some(Ipv4Cidr::new(ukcm_ip, 24)), ..EngineConfig::default() };
    let mut e = Engine::with_clock(pa, cfg, Box::new(clock.clone())).unwrap();

    let mac_b = pb.mac();
    let mut dev = PortDevice::new(pb);
    let mut iface = Interface::new(Config::new(EthernetAddress(mac_b).into()), &mut dev, Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(10, 8, 0, 2), 24)).unwrap());
    let mut set = SocketSet::new(vec![]);
    let h = set.add(icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
    ));
    set.get_mut::<icmp::Socket<'_>>(h).bind(icmp::Endpoint::Ident(7)).unwrap();
    let caps = ChecksumCapabilities::default();
    let mut sent = 0u16;
    let mut replies = 0u16;
    for _ in 0..2000 {
        let s = set.get_mut::<icmp::Socket<'_>>(h);
        if sent < 3 && s.can_send() && sent == replies {
            let repr = Icmpv4Repr::EchoRequest { ident: 7, seq_no: sent, data: b"are you there" };
            let buf = s.send(repr.buffer_len(), IpAddress::Ipv4(ukcm_ip)).unwrap();
            repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
            sent += 1;
        }
        while s.can_recv() {
            let (data, from) = s.recv().unwrap();
            let repr = Icmpv4Repr::parse(&Icmpv4Packet::new_checked(data).unwrap(), &caps).unwrap();
            assert_eq!(from, IpAddress::Ipv4(ukcm_ip));
            assert!(matches!(repr, Icmpv4Repr::EchoReply { ident: 7, data: b"are you there", .. }), "{repr:?}");
            replies += 1;
        }
        if replies == 3 {
            break;
        }
        iface.poll(clock.now(), &mut dev, &mut set);
        dev.flush().unwrap();
        e.poll().unwrap();
        clock.advance(smoltcp::time::Duration::from_millis(1));
    }
    assert_eq!(replies, 3, "three echo replies");
    assert!(e.stats().rx_control >= 4, "ARP + 3 echo requests went through the control path");
}
