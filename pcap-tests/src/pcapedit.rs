//! Small edits of capture files, for building damaged captures from good ones in tests.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, TcpPacket};

/// A capture's records, editable.
#[derive(Debug, Clone)]
pub struct Records {
    /// The file header (byte order, timestamp resolution, link type).
    pub header: PcapHeader,
    /// Each record: timestamp and bytes.
    pub records: Vec<(Duration, Vec<u8>)>,
}

impl Records {
    /// Reads every record of a (good) capture.
    pub fn read(path: &Path) -> io::Result<Records> {
        let mut r = PcapReader::new(File::open(path)?).map_err(io::Error::other)?;
        let header = r.header();
        let mut records = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p.map_err(io::Error::other)?;
            records.push((p.timestamp, p.data.into_owned()));
        }
        Ok(Records { header, records })
    }

    /// Writes the records as a capture file.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut w = PcapWriter::with_header(File::create(path)?, self.header).map_err(io::Error::other)?;
        for (ts, data) in &self.records {
            w.write_packet(&PcapPacket::new(*ts, data.len() as u32, data)).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// The file offset where record `n` (counted from 1) starts.
    pub fn file_offset(&self, n: u64) -> u64 {
        24 + self.records[..(n - 1) as usize].iter().map(|(_, d)| 16 + d.len() as u64).sum::<u64>()
    }
}

/// Recomputes the IPv4 header and TCP checksums of an Ethernet frame in place.
pub fn fix_checksums(frame: &mut [u8]) {
    let at = EthernetFrame::<&[u8]>::header_len();
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[at..]);
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    tcp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
}
