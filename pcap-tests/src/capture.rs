//! A classic pcap file (Ethernet) read into TCP/IPv4 segments, checksums verified.

use std::fmt;
use std::fs::File;
use std::net::SocketAddrV4;
use std::path::Path;

use pcap_file::pcap::PcapReader;
use pcap_file::{DataLink, PcapError};
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, TcpPacket};

/// One TCP segment of the capture.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its pcap record, counted from 1 (what Wireshark calls the frame number).
    pub record: u64,
    /// Sender.
    pub src: SocketAddrV4,
    /// Receiver.
    pub dst: SocketAddrV4,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (meaningful when `flags.ack`).
    pub ack: u32,
    /// Control flags.
    pub flags: Flags,
    /// Both the IPv4 header checksum and the TCP checksum are right.
    pub checksum_ok: bool,
    /// The whole Ethernet frame.
    pub frame: Vec<u8>,
    /// Where the TCP payload starts in `frame`.
    pub payload_at: usize,
    /// TCP payload length.
    pub payload_len: usize,
}

impl Segment {
    /// The TCP payload.
    pub fn payload(&self) -> &[u8] {
        &self.frame[self.payload_at..self.payload_at + self.payload_len]
    }
}

/// TCP control flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

/// Why a capture could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureError {
    /// The file could not be opened or its header is not a pcap header.
    File(String),
    /// A record is damaged (e.g. the file ends inside it).
    Record {
        /// The damaged record, counted from 1.
        record: u64,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::File(w) => f.write_str(w),
            CaptureError::Record { record, what } => write!(f, "record {record}: {what}"),
        }
    }
}

impl std::error::Error for CaptureError {}

/// A capture's TCP segments, in file order.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// TCP over IPv4 segments.
    pub segments: Vec<Segment>,
    /// Records that are not TCP over IPv4 (ARP, IPv6, fragments, ...), skipped.
    pub skipped: u64,
}

/// Reads every record of `path`; the first damaged record is an error.
pub fn read(path: &Path) -> Result<Capture, CaptureError> {
    match read_partial(path) {
        (c, None) => Ok(c),
        (_, Some(e)) => Err(e),
    }
}

/// Reads the records of `path` up to the first damaged one: the segments before the
/// damage, and the damage (a receiver replaying what it got can still say what broke).
pub fn read_partial(path: &Path) -> (Capture, Option<CaptureError>) {
    let mut cap = Capture::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return (cap, Some(CaptureError::File(format!("{}: {e}", path.display())))),
    };
    let mut reader = match PcapReader::new(file) {
        Ok(r) => r,
        Err(e) => return (cap, Some(CaptureError::File(format!("{}: not a pcap file: {e}", path.display())))),
    };
    if reader.header().datalink != DataLink::ETHERNET {
        return (cap, Some(CaptureError::File(format!("{}: link type is not Ethernet", path.display()))));
    }
    let mut record = 0u64;
    while let Some(p) = reader.next_raw_packet() {
        record += 1;
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                let what = match e {
                    PcapError::IncompleteBuffer => "truncated: the file ends inside this record".into(),
                    PcapError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                        "truncated: the file ends inside this record".into()
                    }
                    other => other.to_string(),
                };
                return (cap, Some(CaptureError::Record { record, what }));
            }
        };
        if p.incl_len < p.orig_len {
            let what = format!("cut by the snap length ({} of {} bytes captured)", p.incl_len, p.orig_len);
            return (cap, Some(CaptureError::Record { record, what }));
        }
        match decode(record, &p.data) {
            Some(s) => cap.segments.push(s),
            None => cap.skipped += 1,
        }
    }
    (cap, None)
}

/// Decodes one Ethernet frame; `None` if it is not an unfragmented TCP/IPv4 segment.
pub fn decode(record: u64, frame: &[u8]) -> Option<Segment> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let ip_ok = ip.verify_checksum();
    let ip_at = EthernetFrame::<&[u8]>::header_len();
    let tcp_at = ip_at + ip.header_len() as usize;
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let tcp_ok = tcp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
    let payload_at = tcp_at + tcp.header_len() as usize;
    Some(Segment {
        record,
        src: SocketAddrV4::new(src, tcp.src_port()),
        dst: SocketAddrV4::new(dst, tcp.dst_port()),
        seq: tcp.seq_number().0 as u32,
        ack: tcp.ack_number().0 as u32,
        flags: Flags { syn: tcp.syn(), ack: tcp.ack(), fin: tcp.fin(), rst: tcp.rst() },
        checksum_ok: ip_ok && tcp_ok,
        payload_len: tcp.payload().len(),
        payload_at,
        frame: frame[..ip_at + ip.total_len() as usize].to_vec(),
    })
}
