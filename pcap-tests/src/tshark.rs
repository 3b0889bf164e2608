//! tshark (Wireshark's command line) as an independent judge of our own traffic.
//!
//! tshark runs with `-n` (no name lookups) and with IPv4 and TCP checksum validation on.
//! As root it prints a warning on stderr; stderr is read only when tshark fails.

use std::io;
use std::path::Path;
use std::process::Command;

/// Whether `tshark` can be run.
pub fn available() -> bool {
    Command::new("tshark").arg("-v").output().is_ok_and(|o| o.status.success())
}

/// Runs tshark over `pcap` with checksum validation, `extra` decode-as rules
/// (e.g. `tcp.port==9090,thrift`) and `args`; returns stdout.
pub fn run(pcap: &Path, decode_as: &[&str], args: &[&str]) -> io::Result<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(pcap);
    cmd.args(["-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"]);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    cmd.args(args);
    let out = cmd.output().map_err(|e| io::Error::new(e.kind(), format!("tshark: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "tshark {args:?} on {} failed: {}",
            pcap.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What tshark found wrong with a capture's frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Frames in the file.
    pub frames: usize,
    /// One line per frame with a malformed-packet mark or an expert item of severity
    /// warning or error (bad checksums are errors): `frame N: messages`.
    pub problems: Vec<String>,
}

/// Decodes every frame of `pcap` and collects malformed packets and warnings/errors.
pub fn check_frames(pcap: &Path, decode_as: &[&str]) -> io::Result<Verdict> {
    let frames = run(pcap, decode_as, &["-T", "fields", "-e", "frame.number"])?.lines().count();
    let bad = run(
        pcap,
        decode_as,
        &[
            "-Y",
            "_ws.malformed || _ws.expert.severity >= \"Warning\"",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.number",
            "-e",
            "_ws.expert.message",
            "-e",
            "_ws.malformed",
        ],
    )?;
    let problems =
        bad.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("frame {}", l.replacen('|', ": ", 1))).collect();
    Ok(Verdict { frames, problems })
}

/// Every value of `field` in the frames matching `filter`, in frame order (several per
/// frame when a frame holds several PDUs).
pub fn field_values(pcap: &Path, decode_as: &[&str], filter: &str, field: &str) -> io::Result<Vec<String>> {
    let out =
        run(pcap, decode_as, &["-Y", filter, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;", "-e", field])?;
    Ok(out.lines().flat_map(|l| l.split(';')).filter(|v| !v.is_empty()).map(str::to_string).collect())
}
