//! [`PcapRecorder`]: writes what any port receives and sends to a pcap file.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::PcapHeader;
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::pool::FramePool;
use crate::port::{Port, PortCaps, PortError, PortStats};
use crate::Frame;

/// The environment variable naming the directory [`PcapRecorder::from_env`] records into.
pub const PCAP_DIR_ENV: &str = "UKCM_PCAP_DIR";

/// Snap length written in the header: larger than any pool frame (64 KiB), so no frame is cut.
const SNAPLEN: u32 = 262_144;

/// Counters of a recorder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Received frames written.
    pub rx_recorded: u64,
    /// Sent frames written.
    pub tx_recorded: u64,
    /// Write errors (recording stops at the first one; the port keeps working).
    pub write_errors: u64,
}

/// The open file. Records are written by hand (a 16-byte header in the file's native byte
/// order, then the bytes): pcap-file's writer cannot be flushed without being consumed.
#[derive(Debug)]
struct Sink {
    path: PathBuf,
    w: BufWriter<File>,
}

impl Sink {
    fn write(&mut self, data: &[u8], at: Duration) -> io::Result<()> {
        let secs = u32::try_from(at.as_secs()).map_err(|_| io::Error::other("timestamp past 2106"))?;
        let len = data.len() as u32;
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&secs.to_ne_bytes());
        hdr[4..8].copy_from_slice(&at.subsec_nanos().to_ne_bytes());
        hdr[8..12].copy_from_slice(&len.to_ne_bytes());
        hdr[12..16].copy_from_slice(&len.to_ne_bytes());
        self.w.write_all(&hdr)?;
        self.w.write_all(data)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Err(e) = self.w.flush() {
            tracing::warn!(path = %self.path.display(), "pcap recorder: flush on drop failed: {e}");
        }
    }
}

/// A port wrapper that records every frame received and sent into a classic pcap file
/// (link type Ethernet, nanosecond timestamps from the system clock at the moment of the
/// call), which Wireshark and tshark open.
///
/// The wrapped port behaves exactly as before: same frames, same errors, same caps. A
/// frame is recorded as sent only if the inner port took it (frames left in the vector are
/// not recorded until a later call sends them). Recording costs one copy of each transmit
/// frame (taken before `tx_burst`, because sent frames are gone afterwards); it is a
/// debugging tool, not a fast path.
///
/// A recorder may also be a pass-through (no file): that is what [`PcapRecorder::from_env`]
/// returns when `UKCM_PCAP_DIR` is not set, so code can wrap every port unconditionally and
/// keep one concrete type. The file is flushed on drop; [`PcapRecorder::finish`] flushes and
/// reports a write error, if there was one.
#[derive(Debug)]
pub struct PcapRecorder<P: Port> {
    inner: P,
    sink: Option<Sink>,
    error: Option<String>,
    scratch: Vec<u8>,
    lens: Vec<usize>,
    stats: RecorderStats,
}

impl<P: Port> PcapRecorder<P> {
    /// Records `inner`'s traffic to `path` (created or truncated).
    pub fn create(inner: P, path: impl AsRef<Path>) -> Result<Self, PortError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |e: io::Error| PortError::Io {
            op: "create pcap file",
            err: io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        };
        let file = File::create(&path).map_err(io_err)?;
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::native(),
            ..PcapHeader::default()
        };
        let mut w = BufWriter::new(file);
        header.write_to(&mut w).map_err(|e| PortError::Io {
            op: "write pcap header",
            err: io::Error::other(format!("{}: {e}", path.display())),
        })?;
        Ok(PcapRecorder {
            inner,
            sink: Some(Sink { path, w }),
            error: None,
            scratch: Vec::new(),
            lens: Vec::new(),
            stats: RecorderStats::default(),
        })
    }

    /// Records to `$UKCM_PCAP_DIR/<name>.pcap` if that variable is set (the directory is
    /// created if needed; `/` in `name` becomes `_`), else a pass-through. Fails only when
    /// the variable is set and the file cannot be created.
    pub fn from_env(inner: P, name: &str) -> Result<Self, PortError> {
        match std::env::var_os(PCAP_DIR_ENV) {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                std::fs::create_dir_all(&dir).map_err(|e| PortError::Io {
                    op: "create UKCM_PCAP_DIR",
                    err: io::Error::new(e.kind(), format!("{}: {e}", dir.display())),
                })?;
                let file: String = name.chars().map(|c| if c == '/' || c == '\0' { '_' } else { c }).collect();
                let rec = Self::create(inner, dir.join(format!("{file}.pcap")))?;
                if let Some(p) = rec.path() {
                    tracing::info!(path = %p.display(), "recording frames to pcap");
                }
                Ok(rec)
            }
            _ => Ok(Self::passthrough(inner)),
        }
    }

    /// A recorder that records nothing.
    pub fn passthrough(inner: P) -> Self {
        PcapRecorder {
            inner,
            sink: None,
            error: None,
            scratch: Vec::new(),
            lens: Vec::new(),
            stats: RecorderStats::default(),
        }
    }

    /// Whether frames are being written to a file.
    pub fn is_recording(&self) -> bool {
        self.sink.is_some()
    }

    /// The file being written, if any.
    pub fn path(&self) -> Option<&Path> {
        self.sink.as_ref().map(|s| s.path.as_path())
    }

    /// Counters of the recorder (the port's own are in `stats()`).
    pub fn recorder_stats(&self) -> RecorderStats {
        self.stats
    }

    /// The wrapped port.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped port, mutably (traffic sent through it directly is not recorded).
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// Writes buffered records to the file.
    pub fn flush(&mut self) -> Result<(), PortError> {
        if let Some(msg) = &self.error {
            return Err(PortError::Io { op: "write pcap", err: io::Error::other(msg.clone()) });
        }
        if let Some(s) = &mut self.sink {
            s.w.flush().map_err(|e| PortError::Io {
                op: "flush pcap",
                err: io::Error::new(e.kind(), format!("{}: {e}", s.path.display())),
            })?;
        }
        Ok(())
    }

    /// Flushes and closes the file, returning the port, or the first write error.
    pub fn finish(mut self) -> Result<P, PortError> {
        self.flush()?;
        self.sink = None;
        Ok(self.inner)
    }

    /// Returns the port; the file is flushed (errors only logged).
    pub fn into_inner(self) -> P {
        self.inner
    }

    fn record(&mut self, data: &[u8], at: Duration) -> bool {
        let Some(s) = &mut self.sink else { return false };
        match s.write(data, at) {
            Ok(()) => true,
            Err(e) => {
                let msg = format!("{}: {e}", s.path.display());
                tracing::warn!("pcap recorder stopped: {msg}");
                self.stats.write_errors += 1;
                self.error = Some(msg);
                self.sink = None;
                false
            }
        }
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl<P: Port> Port for PcapRecorder<P> {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> Result<usize, PortError> {
        let start = out.len();
        let r = self.inner.rx_burst(out, max);
        if self.sink.is_some() && out.len() > start {
            let at = now();
            for f in &out[start..] {
                if self.record(f.data(), at) {
                    self.stats.rx_recorded += 1;
                }
            }
        }
        r
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> Result<usize, PortError> {
        if self.sink.is_none() {
            return self.inner.tx_burst(frames);
        }
        // Sent frames leave the vector (and may be gone for good), so copy them first.
        self.scratch.clear();
        self.lens.clear();
        for f in frames.iter() {
            self.scratch.extend_from_slice(f.data());
            self.lens.push(f.len());
        }
        let before = frames.len();
        let r = self.inner.tx_burst(frames);
        // Whatever left the front of the vector was taken by the port, even on error.
        let sent = before.saturating_sub(frames.len());
        let at = now();
        let scratch = std::mem::take(&mut self.scratch);
        let mut off = 0;
        let lens = std::mem::take(&mut self.lens);
        for &len in &lens[..sent] {
            if self.record(&scratch[off..off + len], at) {
                self.stats.tx_recorded += 1;
            }
            off += len;
        }
        self.scratch = scratch;
        self.lens = lens;
        r
    }

    fn caps(&self) -> PortCaps {
        self.inner.caps()
    }

    fn stats(&self) -> PortStats {
        self.inner.stats()
    }

    fn tx_pool(&self) -> &FramePool {
        self.inner.tx_pool()
    }

    fn wakeup_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.wakeup_fd()
    }
}
