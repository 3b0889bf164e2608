//! The one place `nic` meets smoltcp: a `phy::Device` over any [`Port`].
//!
//! Receive lends each frame to smoltcp in place (the closure reads the pool memory the NIC
//! wrote) and returns it to its pool afterwards. Transmit hands smoltcp a fresh pool frame
//! to serialise into; the frame joins a pending batch that [`PortDevice::flush`] gives to
//! `tx_burst` once per poll. When the batch is full or the pool is empty, the device
//! offers no tokens, so smoltcp waits instead of losing packets.

pub mod inplace_rx;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::pool::FramePool;
use crate::port::{Port, PortError};
use crate::Frame;

/// Counters of the adapter itself (the port keeps its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames handed to smoltcp.
    pub rx_frames: u64,
    /// Frames smoltcp produced.
    pub tx_frames: u64,
    /// Frames smoltcp produced that could not be kept (larger than a pool frame, or the
    /// pool ran dry between `transmit` and `consume`): counted, never silent.
    pub tx_dropped: u64,
    /// Polls where smoltcp was refused a tx token because the batch or pool was full.
    pub tx_backpressure: u64,
    /// ARP requests and IPv6 neighbour solicitations smoltcp sent: each means a packet found
    /// no neighbour entry. smoltcp does not queue it: TCP retransmits it later, anything else
    /// (an ICMP reply) is lost.
    pub tx_neighbour_misses: u64,
    /// Errors returned by the port (the last one is kept in [`PortDevice::take_error`]).
    pub port_errors: u64,
}

/// A smoltcp device over a port.
#[derive(Debug)]
pub struct PortDevice<P: Port> {
    port: P,
    pool: FramePool,
    rx: std::collections::VecDeque<Frame>,
    rx_scratch: Vec<Frame>,
    tx: Vec<Frame>,
    burst: usize,
    tx_limit: usize,
    mtu: usize,
    checksum: ChecksumCapabilities,
    stats: DeviceStats,
    error: Option<PortError>,
}

impl<P: Port> PortDevice<P> {
    /// Wraps `port`; bursts and the pending-tx limit follow the port's `max_burst`.
    pub fn new(port: P) -> Self {
        let caps = port.caps();
        let burst = caps.max_burst.max(1);
        let mut checksum = ChecksumCapabilities::default();
        if caps.rx_checksum_offload {
            checksum.ipv4 = Checksum::Tx;
            checksum.tcp = Checksum::Tx;
            checksum.udp = Checksum::Tx;
        }
        if caps.tx_checksum_offload {
            checksum.ipv4 = if caps.rx_checksum_offload { Checksum::None } else { Checksum::Rx };
        }
        let pool = port.tx_pool().clone();
        PortDevice {
            port,
            pool,
            rx: std::collections::VecDeque::with_capacity(burst),
            rx_scratch: Vec::with_capacity(burst),
            tx: Vec::with_capacity(burst * 4),
            burst,
            tx_limit: burst * 4,
            mtu: caps.mtu,
            checksum,
            stats: DeviceStats::default(),
            error: None,
        }
    }

    /// The port.
    pub fn port(&self) -> &P {
        &self.port
    }

    /// The port, mutably.
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// Gives the pending transmit batch to the port; frames it cannot take stay pending.
    pub fn flush(&mut self) -> Result<usize, PortError> {
        if self.tx.is_empty() {
            return Ok(0);
        }
        self.port.tx_burst(&mut self.tx).inspect_err(|_| self.stats.port_errors += 1)
    }

    /// Frames waiting to be transmitted.
    pub fn tx_pending(&self) -> usize {
        self.tx.len()
    }

    /// Frames received from the port but not yet given to smoltcp.
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }

    /// Adapter counters.
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// The last port error seen while smoltcp polled (smoltcp's API cannot return it).
    pub fn take_error(&mut self) -> Option<PortError> {
        self.error.take()
    }

    /// Consumes the device, returning the port (pending frames go back to their pools).
    pub fn into_port(self) -> P {
        self.port
    }

    fn refill_rx(&mut self) {
        if !self.rx.is_empty() {
            return;
        }
        match self.port.rx_burst(&mut self.rx_scratch, self.burst) {
            Ok(_) => self.rx.extend(self.rx_scratch.drain(..)),
            Err(e) => {
                self.stats.port_errors += 1;
                self.error = Some(e);
            }
        }
    }

    fn tx_room(&mut self) -> bool {
        if self.tx.len() >= self.tx_limit {
            let _ = self.flush().map_err(|e| self.error = Some(e));
        }
        let ok = self.tx.len() < self.tx_limit && self.pool.available() > 0;
        if !ok {
            self.stats.tx_backpressure += 1;
        }
        ok
    }
}

impl<P: Port> phy::Device for PortDevice<P> {
    type RxToken<'a>
        = FrameRx
    where
        Self: 'a;
    type TxToken<'a>
        = FrameTx<'a>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.refill_rx();
        if self.rx.is_empty() || !self.tx_room() {
            // Without tx room we keep received frames queued: smoltcp may need to answer.
            return None;
        }
        let frame = self.rx.pop_front()?;
        self.stats.rx_frames += 1;
        Some((FrameRx { frame }, FrameTx { pool: &self.pool, tx: &mut self.tx, stats: &mut self.stats }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if !self.tx_room() {
            return None;
        }
        Some(FrameTx { pool: &self.pool, tx: &mut self.tx, stats: &mut self.stats })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps.max_burst_size = Some(self.burst);
        caps.checksum = self.checksum.clone();
        caps
    }
}

/// A received frame lent to smoltcp.
#[derive(Debug)]
pub struct FrameRx {
    frame: Frame,
}

impl phy::RxToken for FrameRx {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame.data())
        // the frame drops here and returns to its pool
    }
}

/// A transmit slot: smoltcp writes straight into a pool frame.
#[derive(Debug)]
pub struct FrameTx<'a> {
    pool: &'a FramePool,
    tx: &'a mut Vec<Frame>,
    stats: &'a mut DeviceStats,
}

impl phy::TxToken for FrameTx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        match self.pool.alloc() {
            Ok(mut frame) if frame.capacity() >= len => {
                // Cannot fail: capacity checked.
                let _ = frame.set_len(len);
                let r = f(frame.data_mut());
                if is_neighbour_solicitation(frame.data()) {
                    self.stats.tx_neighbour_misses += 1;
                }
                self.tx.push(frame);
                self.stats.tx_frames += 1;
                r
            }
            _ => {
                // smoltcp's API demands we run the closure; the packet is lost and counted.
                // `tx_room` makes this unreachable in a single-threaded engine.
                self.stats.tx_dropped += 1;
                let mut scratch = vec![0u8; len];
                f(&mut scratch)
            }
        }
    }
}

/// An ARP request or an ICMPv6 neighbour solicitation (what smoltcp sends on a neighbour
/// miss): a few byte compares per transmitted frame.
fn is_neighbour_solicitation(f: &[u8]) -> bool {
    match f.get(12..14) {
        Some([0x08, 0x06]) => f.get(20..22) == Some(&[0, 1]), // ARP, operation 1 (request)
        // IPv6, next header ICMPv6 (58), type 135 (no extension headers: as smoltcp sends it)
        Some([0x86, 0xdd]) => f.get(20) == Some(&58) && f.get(54) == Some(&135),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_pair::{mem_pair, MemPairConfig};
    use crate::pool::PoolConfig;
    use crate::region::{HugePolicy, PinnedBudget};
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::socket::icmp;
    use smoltcp::wire::{EthernetAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address};

    fn iface(dev: &mut PortDevice<crate::mem_pair::MemPort>, mac: [u8; 6], ip: Ipv4Address) -> Interface {
        let cfg = Config::new(EthernetAddress(mac).into());
        let mut i = Interface::new(cfg, dev, Instant::from_millis(0));
        i.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap());
        i
    }

    /// Two smoltcp interfaces over the in-memory pair: ARP, then ICMP echo and reply, all
    /// through pool frames, and no frame leaked afterwards.
    #[test]
    fn smoltcp_pings_across_the_pair_without_leaking_frames() {
        let cfg = MemPairConfig {
            pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 256 },
            huge: HugePolicy::Never,
            ..MemPairConfig::default()
        };
        let (a, b) = mem_pair(&cfg, &PinnedBudget::unlimited()).unwrap();
        let (mac_a, mac_b) = (a.mac(), b.mac());
        let (pool_a, pool_b) = (a.tx_pool().clone(), b.tx_pool().clone());
        let mut da = PortDevice::new(a);
        let mut db = PortDevice::new(b);
        let ip_a = Ipv4Address::new(10, 9, 0, 1);
        let ip_b = Ipv4Address::new(10, 9, 0, 2);
        let mut ia = iface(&mut da, mac_a, ip_a);
        let mut ib = iface(&mut db, mac_b, ip_b);

        let mut sa = SocketSet::new(vec![]);
        let mut sb = SocketSet::new(vec![]);
        let icmp_sock = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        );
        let h = sa.add(icmp_sock);
        sa.get_mut::<icmp::Socket<'_>>(h).bind(icmp::Endpoint::Ident(0x1234)).unwrap();

        let mut got_reply = false;
        let mut sent = false;
        for t in 0..200 {
            let now = Instant::from_millis(t * 10);
            {
                let s = sa.get_mut::<icmp::Socket<'_>>(h);
                if !sent && s.can_send() {
                    let repr = Icmpv4Repr::EchoRequest { ident: 0x1234, seq_no: 1, data: b"ukcm-ping" };
                    let buf = s.send(repr.buffer_len(), IpAddress::Ipv4(ip_b)).unwrap();
                    let mut pkt = Icmpv4Packet::new_unchecked(buf);
                    repr.emit(&mut pkt, &ChecksumCapabilities::default());
                    sent = true;
                }
                if s.can_recv() {
                    let (data, from) = s.recv().unwrap();
                    let pkt = Icmpv4Packet::new_checked(data).unwrap();
                    let repr = Icmpv4Repr::parse(&pkt, &ChecksumCapabilities::default()).unwrap();
                    assert_eq!(from, IpAddress::Ipv4(ip_b));
                    assert!(matches!(repr, Icmpv4Repr::EchoReply { seq_no: 1, data: b"ukcm-ping", .. }));
                    got_reply = true;
                    break;
                }
            }
            ia.poll(now, &mut da, &mut sa);
            da.flush().unwrap();
            ib.poll(now, &mut db, &mut sb);
            db.flush().unwrap();
        }
        assert!(got_reply, "echo reply came back through both devices");
        assert!(da.stats().tx_frames >= 2 && db.stats().tx_frames >= 2, "ARP + ICMP each way");
        assert_eq!(da.stats().tx_dropped + db.stats().tx_dropped, 0);
        assert_eq!(da.stats().tx_neighbour_misses, 1, "A asked for B's MAC once");
        assert_eq!(db.stats().tx_neighbour_misses, 0, "B learned A's from the request");
        drop((da, db));
        assert_eq!(pool_a.outstanding() + pool_b.outstanding(), 0, "no frame leaked");
    }
}
