//! [`PcapReplayPort`]: a capture file as a receive-only wire.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, PcapError, TsResolution};

use crate::pool::{FramePool, PoolConfig};
use crate::port::{Port, PortCaps, PortError, PortStats};
use crate::region::{HugePolicy, LockPolicy, PinnedBudget};
use crate::Frame;

/// When replayed frames become available.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Pacing {
    /// Every record at once (`max` per burst): the right thing for tests.
    #[default]
    AsFastAsPossible,
    /// Records are released when their capture time, relative to the first record and
    /// divided by `speed`, has passed (2.0 = twice as fast as recorded).
    Recorded {
        /// Speed-up factor; must be positive.
        speed: f64,
    },
}

/// Configuration of a replay port.
#[derive(Debug, Clone)]
pub struct PcapReplayConfig {
    /// The pool records are copied into (and the stack's transmit frames come from).
    /// Records larger than a frame's capacity are counted in `rx_dropped` and skipped.
    pub pool: PoolConfig,
    /// IP MTU reported in `caps()`.
    pub mtu: usize,
    /// When records are released.
    pub pacing: Pacing,
    /// Keep a copy of every transmitted frame for [`PcapReplayPort::take_transmitted`].
    pub keep_transmitted: bool,
    /// Hugepage policy of the pool's region.
    pub huge: HugePolicy,
}

impl Default for PcapReplayConfig {
    fn default() -> Self {
        PcapReplayConfig {
            pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 1024 },
            mtu: 1500,
            pacing: Pacing::AsFastAsPossible,
            keep_transmitted: true,
            huge: HugePolicy::Prefer,
        }
    }
}

/// One pcapng interface: what we need of its description block.
#[derive(Debug, Clone, Copy)]
struct NgIface {
    linktype: DataLink,
    /// `if_tsresol` (default 6: microseconds).
    tsresol: u8,
}

enum Source {
    Pcap { reader: PcapReader<File>, ts: TsResolution },
    Ng { reader: PcapNgReader<File>, ifaces: Vec<NgIface> },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Pcap { ts, .. } => write!(f, "pcap({ts:?})"),
            Source::Ng { ifaces, .. } => write!(f, "pcapng({} interfaces)", ifaces.len()),
        }
    }
}

/// What reading one record gave.
enum Rec {
    /// A packet record copied into the frame, with its capture time.
    Frame(Duration),
    /// A record that is not replayed (a non-packet block, or a packet that does not fit
    /// or was cut short by the capture's snap length).
    Skip { dropped: bool },
    /// End of file.
    Eof,
}

/// A port that receives the frames of a capture file.
///
/// Records are copied into pool frames (the one copy a file-backed port cannot avoid) in
/// file order. At the end of the file `rx_burst` returns 0 forever and
/// [`is_finished`](Self::is_finished) turns true. A damaged file makes `rx_burst` return
/// [`PortError::BadInput`] (after handing out every good frame before the damage), and keep
/// returning it. Transmitted frames are accepted, counted and, if configured, kept.
#[derive(Debug)]
pub struct PcapReplayPort {
    path: PathBuf,
    src: Source,
    pool: FramePool,
    mtu: usize,
    pacing: Pacing,
    clock: Option<(Instant, Duration)>,
    pending: Option<(Duration, Frame)>,
    finished: bool,
    failed: Option<String>,
    keep_tx: bool,
    transmitted: Vec<Vec<u8>>,
    records: u64,
    stats: PortStats,
}

const PCAPNG_MAGIC: u32 = 0x0A0D_0D0A;
const PCAP_MAGICS: [u32; 4] = [0xA1B2_C3D4, 0xD4C3_B2A1, 0xA1B2_3C4D, 0x4D3C_B2A1];

impl PcapReplayPort {
    /// Opens `path` (pcap or pcapng, told apart by the magic number) with a pool of its own.
    pub fn open(path: impl AsRef<Path>, cfg: &PcapReplayConfig, budget: &Arc<PinnedBudget>) -> Result<Self, PortError> {
        let pool = FramePool::with_region_lock(cfg.pool, budget, cfg.huge, LockPolicy::IfAllowed)?;
        Self::open_with_pool(path, cfg, pool)
    }

    /// Opens `path`, copying records into frames of `pool` (`cfg.pool` and `cfg.huge` are
    /// ignored).
    pub fn open_with_pool(path: impl AsRef<Path>, cfg: &PcapReplayConfig, pool: FramePool) -> Result<Self, PortError> {
        let path = path.as_ref().to_path_buf();
        if let Pacing::Recorded { speed } = cfg.pacing {
            if !(speed > 0.0 && speed.is_finite()) {
                return Err(PortError::Unsupported(format!("pcap pacing speed {speed} must be positive")));
            }
        }
        let bad = |what: String| PortError::BadInput(format!("{}: {what}", path.display()));
        let io_err = |e: io::Error| PortError::Io {
            op: "open pcap file",
            err: io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        };
        let mut magic = [0u8; 4];
        File::open(&path).map_err(io_err)?.read_exact(&mut magic).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => bad("file too short to be a pcap or pcapng file".into()),
            _ => io_err(e),
        })?;
        let file = File::open(&path).map_err(io_err)?;
        let src = if u32::from_be_bytes(magic) == PCAPNG_MAGIC {
            let reader =
                PcapNgReader::new(file).map_err(|e| bad(format!("bad pcapng section header: {}", describe(&e))))?;
            Source::Ng { reader, ifaces: Vec::new() }
        } else if PCAP_MAGICS.contains(&u32::from_be_bytes(magic)) {
            let reader = PcapReader::new(file).map_err(|e| bad(format!("bad pcap file header: {}", describe(&e))))?;
            let hdr = reader.header();
            if hdr.datalink != DataLink::ETHERNET {
                return Err(bad(format!(
                    "link type {:?} is not Ethernet (only LINKTYPE_ETHERNET captures can be replayed)",
                    hdr.datalink
                )));
            }
            Source::Pcap { reader, ts: hdr.ts_resolution }
        } else {
            return Err(bad(format!(
                "not a pcap or pcapng file (magic number {:02x}{:02x}{:02x}{:02x})",
                magic[0], magic[1], magic[2], magic[3]
            )));
        };
        Ok(PcapReplayPort {
            path,
            src,
            pool,
            mtu: cfg.mtu,
            pacing: cfg.pacing,
            clock: None,
            pending: None,
            finished: false,
            failed: None,
            keep_tx: cfg.keep_transmitted,
            transmitted: Vec::new(),
            records: 0,
            stats: PortStats::default(),
        })
    }

    /// Whether every record has been handed out (`rx_burst` returns 0 from now on).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The file being replayed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Packet records read so far (replayed or skipped).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The frames transmitted so far (if `keep_transmitted`), in order; empties the list.
    pub fn take_transmitted(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.transmitted)
    }

    fn bad(&self, what: String) -> String {
        format!("{}: {what}", self.path.display())
    }

    /// Reads the next record into `frame`.
    fn read_record(&mut self, frame: &mut Frame) -> Result<Rec, String> {
        let n = self.records + 1;
        let fill = |frame: &mut Frame, data: &[u8], orig_len: u32| -> Rec {
            if (data.len() as u64) < orig_len as u64 || frame.fill_from(data).is_err() {
                return Rec::Skip { dropped: true };
            }
            Rec::Frame(Duration::ZERO)
        };
        let (rec, ts) = match &mut self.src {
            Source::Pcap { reader, ts } => {
                let Some(r) = reader.next_raw_packet() else { return Ok(Rec::Eof) };
                // The raw record, checked here: pcap-file's own check refuses records whose
                // original length exceeds the snap length, which real captures have.
                let raw = r.map_err(|e| record_error(n, &e))?;
                if raw.incl_len > raw.orig_len {
                    return Err(format!(
                        "record {n}: captured length {} > original length {}",
                        raw.incl_len, raw.orig_len
                    ));
                }
                let nanos = match ts {
                    TsResolution::MicroSecond => raw.ts_frac as u64 * 1000,
                    TsResolution::NanoSecond => raw.ts_frac as u64,
                };
                let at = Duration::from_secs(raw.ts_sec as u64) + Duration::from_nanos(nanos);
                (fill(frame, &raw.data, raw.orig_len), at)
            }
            Source::Ng { reader, ifaces } => {
                let Some(b) = reader.next_block() else { return Ok(Rec::Eof) };
                match b.map_err(|e| record_error(n, &e))? {
                    Block::SectionHeader(_) => {
                        ifaces.clear();
                        return Ok(Rec::Skip { dropped: false });
                    }
                    Block::InterfaceDescription(idb) => {
                        let tsresol = idb
                            .options
                            .iter()
                            .find_map(|o| match o {
                                InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                                _ => None,
                            })
                            .unwrap_or(6);
                        ifaces.push(NgIface { linktype: idb.linktype, tsresol });
                        return Ok(Rec::Skip { dropped: false });
                    }
                    Block::EnhancedPacket(epb) => {
                        let iface = ng_iface(ifaces, epb.interface_id, n)?;
                        // pcap-file reads the raw 64-bit count as nanoseconds; rescale it by
                        // the interface's resolution.
                        let at = ng_time(epb.timestamp.as_nanos() as u64, iface.tsresol);
                        (fill(frame, &epb.data, epb.original_len), at)
                    }
                    Block::SimplePacket(spb) => {
                        ng_iface(ifaces, 0, n)?;
                        let len = (spb.original_len as usize).min(spb.data.len());
                        (fill(frame, &spb.data[..len], len as u32), Duration::ZERO)
                    }
                    Block::Packet(pb) => {
                        let iface = ng_iface(ifaces, pb.interface_id as u32, n)?;
                        (fill(frame, &pb.data, pb.original_len), ng_time(pb.timestamp, iface.tsresol))
                    }
                    _ => return Ok(Rec::Skip { dropped: false }),
                }
            }
        };
        self.records += 1;
        Ok(match rec {
            Rec::Frame(_) => Rec::Frame(ts),
            other => other,
        })
    }

    fn due(&mut self, ts: Duration) -> bool {
        let Pacing::Recorded { speed } = self.pacing else { return true };
        let now = Instant::now();
        let (start, first) = *self.clock.get_or_insert((now, ts));
        let offset = ts.saturating_sub(first).div_f64(speed);
        now >= start + offset
    }
}

fn ng_iface(ifaces: &[NgIface], id: u32, n: u64) -> Result<NgIface, String> {
    let iface = *ifaces
        .get(id as usize)
        .ok_or_else(|| format!("record {n}: packet names interface {id}, which was never described"))?;
    if iface.linktype != DataLink::ETHERNET {
        return Err(format!(
            "record {n}: interface {id} has link type {:?}, not Ethernet (only LINKTYPE_ETHERNET captures can be replayed)",
            iface.linktype
        ));
    }
    Ok(iface)
}

/// A pcapng timestamp count in the interface's units (`if_tsresol`) as a duration.
fn ng_time(count: u64, tsresol: u8) -> Duration {
    let exp = (tsresol & 0x7f) as u32;
    if tsresol & 0x80 != 0 {
        // units of 2^-exp seconds
        let secs = count.checked_shr(exp).unwrap_or(0);
        let frac = if exp >= 64 { count } else { count & ((1u64 << exp) - 1) };
        let nanos = ((frac as u128 * 1_000_000_000) >> exp.min(127)) as u64;
        Duration::from_secs(secs) + Duration::from_nanos(nanos)
    } else if exp <= 9 {
        Duration::from_nanos(count.saturating_mul(10u64.pow(9 - exp)))
    } else {
        let div = 10u128.pow(exp.min(38) - 9);
        Duration::from_nanos((count as u128 / div) as u64)
    }
}

/// What a pcap-file error means for the record being read.
fn record_error(n: u64, e: &PcapError) -> String {
    format!("record {n}: {}", describe(e))
}

fn describe(e: &PcapError) -> String {
    match e {
        PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "truncated: the file ends in the middle of a record".to_string()
        }
        PcapError::IncompleteBuffer => "truncated: the file ends in the middle of a record".to_string(),
        PcapError::InvalidField(f) => format!("invalid field: {f}"),
        PcapError::IoError(io) => format!("read error: {io}"),
        other => other.to_string(),
    }
}

impl Port for PcapReplayPort {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> Result<usize, PortError> {
        if let Some(msg) = &self.failed {
            return Err(PortError::BadInput(msg.clone()));
        }
        let mut n = 0;
        while n < max && !self.finished {
            let (ts, frame) = match self.pending.take() {
                Some(p) => p,
                None => {
                    // Allocate first: with no frame free the record stays in the file.
                    let Ok(mut frame) = self.pool.alloc() else { break };
                    match self.read_record(&mut frame) {
                        Ok(Rec::Frame(ts)) => (ts, frame),
                        Ok(Rec::Skip { dropped }) => {
                            self.stats.rx_dropped += u64::from(dropped);
                            continue;
                        }
                        Ok(Rec::Eof) => {
                            self.finished = true;
                            break;
                        }
                        Err(what) => {
                            let msg = self.bad(what);
                            self.failed = Some(msg.clone());
                            if n > 0 {
                                break; // the good frames first; the error on the next call
                            }
                            return Err(PortError::BadInput(msg));
                        }
                    }
                }
            };
            if !self.due(ts) {
                self.pending = Some((ts, frame));
                break;
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += frame.len() as u64;
            out.push(frame);
            n += 1;
        }
        Ok(n)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> Result<usize, PortError> {
        let n = frames.len();
        for f in frames.drain(..) {
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += f.len() as u64;
            if self.keep_tx {
                self.transmitted.push(f.data().to_vec());
            }
        }
        Ok(n)
    }

    fn caps(&self) -> PortCaps {
        PortCaps::in_process(format!("pcap:{}", self.path.display()), self.mtu, None)
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn tx_pool(&self) -> &FramePool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::pcapng::PcapNgWriter;

    fn cfg() -> PcapReplayConfig {
        PcapReplayConfig {
            pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 64 },
            huge: HugePolicy::Never,
            ..PcapReplayConfig::default()
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ukcm-pcap-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn frame_bytes(i: u8, len: usize) -> Vec<u8> {
        (0..len).map(|k| i.wrapping_add(k as u8)).collect()
    }

    fn write_pcap(path: &Path, hdr: PcapHeader, frames: &[Vec<u8>]) {
        let mut w = PcapWriter::with_header(File::create(path).unwrap(), hdr).unwrap();
        for (i, f) in frames.iter().enumerate() {
            w.write_packet(&PcapPacket::new(Duration::from_millis(i as u64 * 10), f.len() as u32, f)).unwrap();
        }
    }

    fn drain(p: &mut PcapReplayPort, max: usize) -> Result<Vec<Vec<u8>>, PortError> {
        let mut got = Vec::new();
        let mut v = Vec::new();
        loop {
            let n = p.rx_burst(&mut v, max)?;
            assert!(n <= max);
            got.extend(v.drain(..).map(|f| f.data().to_vec()));
            if n == 0 {
                return Ok(got);
            }
        }
    }

    #[test]
    fn pcap_records_come_out_in_order_then_zero_forever() {
        let frames: Vec<_> = (0..10u8).map(|i| frame_bytes(i, 60 + i as usize * 100)).collect();
        let path = tmp("order.pcap");
        write_pcap(&path, PcapHeader::default(), &frames);
        let mut p = PcapReplayPort::open(&path, &cfg(), &PinnedBudget::unlimited()).unwrap();
        assert!(!p.is_finished());
        assert_eq!(drain(&mut p, 3).unwrap(), frames);
        assert!(p.is_finished());
        assert_eq!(p.rx_burst(&mut Vec::new(), 8).unwrap(), 0);
        assert_eq!(p.stats().rx_frames, 10);
        assert_eq!(p.records(), 10);
        assert_eq!(p.tx_pool().outstanding(), 0);
    }

    #[test]
    fn pcapng_with_ethernet_interface_replays() {
        let frames: Vec<_> = (0..5u8).map(|i| frame_bytes(i, 64)).collect();
        let path = tmp("ng.pcapng");
        {
            let mut w = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
            w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535)).unwrap();
            for f in &frames {
                let epb = EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::from_micros(5),
                    original_len: f.len() as u32,
                    data: f.as_slice().into(),
                    options: vec![],
                };
                w.write_pcapng_block(epb).unwrap();
            }
        }
        let mut p = PcapReplayPort::open(&path, &cfg(), &PinnedBudget::unlimited()).unwrap();
        assert_eq!(drain(&mut p, 64).unwrap(), frames);
        assert!(p.is_finished());
    }

    #[test]
    fn other_link_types_are_refused_clearly() {
        let path = tmp("raw.pcap");
        write_pcap(&path, PcapHeader { datalink: DataLink::RAW, ..PcapHeader::default() }, &[vec![0x45; 20]]);
        let err = PcapReplayPort::open(&path, &cfg(), &PinnedBudget::unlimited()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PortError::BadInput(_)), "{msg}");
        assert!(msg.contains("raw.pcap") && msg.contains("not Ethernet"), "{msg}");
    }

    #[test]
    fn oversized_and_snap_truncated_records_are_dropped_and_counted() {
        let path = tmp("big.pcap");
        {
            let mut w = PcapWriter::new(File::create(&path).unwrap()).unwrap();
            let big = vec![7u8; 3000];
            w.write_packet(&PcapPacket::new(Duration::ZERO, 60, &[1u8; 60])).unwrap();
            w.write_packet(&PcapPacket::new(Duration::ZERO, 3000, &big)).unwrap();
            w.write_packet(&PcapPacket::new(Duration::ZERO, 1000, &[2u8; 60])).unwrap();
            w.write_packet(&PcapPacket::new(Duration::ZERO, 60, &[3u8; 60])).unwrap();
        }
        let mut p = PcapReplayPort::open(&path, &cfg(), &PinnedBudget::unlimited()).unwrap();
        assert_eq!(drain(&mut p, 8).unwrap(), vec![vec![1u8; 60], vec![3u8; 60]]);
        assert_eq!(p.stats().rx_dropped, 2);
    }

    #[test]
    fn truncated_file_gives_good_frames_then_a_named_error() {
        let frames: Vec<_> = (0..4u8).map(|i| frame_bytes(i, 200)).collect();
        let path = tmp("cut.pcap");
        write_pcap(&path, PcapHeader::default(), &frames);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 50]).unwrap();
        let mut p = PcapReplayPort::open(&path, &cfg(), &PinnedBudget::unlimited()).unwrap();
        let mut v = Vec::new();
        assert_eq!(p.rx_burst(&mut v, 64).unwrap(), 3);
        for _ in 0..2 {
            let err = p.rx_burst(&mut v, 64).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, PortError::BadInput(_)), "{msg}");
            assert!(msg.contains("cut.pcap") && msg.contains("record 4") && msg.contains("truncated"), "{msg}");
        }
    }

    #[test]
    fn garbage_and_short_files_are_refused_at_open() {
        let path = tmp("garbage.pcap");
        File::create(&path).unwrap().write_all(b"this is not a capture, just some text\n").unwrap();
        let msg = PcapReplayPort::open(&path, &cfg(), &PinnedBudget::unlimited()).unwrap_err().to_string();
        assert!(msg.contains("garbage.pcap") && msg.contains("not a pcap or pcapng file"), "{msg}");
        std::fs::write(&path, [0xd4, 0xc3]).unwrap();
        let msg = PcapReplayPort::open(&path, &cfg(), &PinnedBudget::unlimited()).unwrap_err().to_string();
        assert!(msg.contains("too short"), "{msg}");
        std::fs::write(&path, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]).unwrap();
        let msg = PcapReplayPort::open(&path, &cfg(), &PinnedBudget::unlimited()).unwrap_err().to_string();
        assert!(msg.contains("bad pcap file header") && msg.contains("truncated"), "{msg}");
        let err = PcapReplayPort::open(tmp("missing.pcap"), &cfg(), &PinnedBudget::unlimited()).unwrap_err();
        assert!(err.to_string().contains("missing.pcap"), "{err}");
    }

    #[test]
    fn pool_exhaustion_holds_records_back_without_loss() {
        let frames: Vec<_> = (0..20u8).map(|i| frame_bytes(i, 100)).collect();
        let path = tmp("pool.pcap");
        write_pcap(&path, PcapHeader::default(), &frames);
        let mut c = cfg();
        c.pool.frames = 4;
        let mut p = PcapReplayPort::open(&path, &c, &PinnedBudget::unlimited()).unwrap();
        let mut got = Vec::new();
        let mut v = Vec::new();
        while !p.is_finished() {
            assert!(p.rx_burst(&mut v, 64).unwrap() <= 4);
            got.extend(v.drain(..).map(|f| f.data().to_vec()));
        }
        assert_eq!(got, frames);
        assert_eq!(p.stats().rx_dropped, 0);
    }

    #[test]
    fn recorded_pacing_releases_frames_on_time() {
        let frames: Vec<_> = (0..3u8).map(|i| frame_bytes(i, 60)).collect();
        let path = tmp("paced.pcap");
        write_pcap(&path, PcapHeader::default(), &frames); // 0, 10, 20 ms
        let c = PcapReplayConfig { pacing: Pacing::Recorded { speed: 0.5 }, ..cfg() }; // 0, 20, 40 ms
        let mut p = PcapReplayPort::open(&path, &c, &PinnedBudget::unlimited()).unwrap();
        let start = Instant::now();
        let mut v = Vec::new();
        assert_eq!(p.rx_burst(&mut v, 8).unwrap(), 1);
        while v.len() < 3 {
            p.rx_burst(&mut v, 8).unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert_eq!(v.iter().map(|f| f.data().to_vec()).collect::<Vec<_>>(), frames);
    }

    #[test]
    fn transmitted_frames_are_counted_and_kept() {
        let path = tmp("tx.pcap");
        write_pcap(&path, PcapHeader::default(), &[]);
        let mut p = PcapReplayPort::open(&path, &cfg(), &PinnedBudget::unlimited()).unwrap();
        let mut v = Vec::new();
        p.tx_pool().alloc_bulk(&mut v, 2).unwrap();
        v[0].fill_from(b"one").unwrap();
        v[1].fill_from(b"two").unwrap();
        assert_eq!(p.tx_burst(&mut v).unwrap(), 2);
        assert!(v.is_empty());
        assert_eq!(p.take_transmitted(), vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(p.take_transmitted().is_empty());
        assert_eq!(p.stats().tx_frames, 2);
        assert_eq!(p.tx_pool().outstanding(), 0);
    }

    #[test]
    fn pcapng_time_units() {
        assert_eq!(ng_time(1_500_000, 6), Duration::from_millis(1500));
        assert_eq!(ng_time(1_500, 9), Duration::from_micros(1) + Duration::from_nanos(500));
        assert_eq!(ng_time(3 << 10 | 512, 0x80 | 10), Duration::from_millis(3500));
    }
}
