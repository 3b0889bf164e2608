//! pcap: replay a capture as a [`Port`](crate::Port), and record any port's traffic.
//!
//! - [`PcapReplayPort`] yields the frames of a pcap or pcapng file (Ethernet link type
//!   only), in file order, copied into pool frames; what a stack transmits in answer is
//!   counted and optionally kept for inspection. This is how captures of real sessions are
//!   fed through stack + mux without a network.
//! - [`PcapRecorder`] wraps any port and writes every frame received and sent to a classic
//!   pcap file (Ethernet, nanosecond timestamps) that Wireshark/tshark open, without changing
//!   what the wrapped port does. [`PcapRecorder::from_env`] records only when
//!   `UKCM_PCAP_DIR` is set, so every binary and test can carry the hook for free.
//!
//! Bad files are errors, never panics: [`PortError::BadInput`](crate::PortError::BadInput)
//! names the file and what is wrong with it (garbage header, truncated record, a link type
//! other than Ethernet).

mod recorder;
mod replay;

pub use recorder::{PcapRecorder, RecorderStats, PCAP_DIR_ENV};
pub use replay::{Pacing, PcapReplayConfig, PcapReplayPort};
