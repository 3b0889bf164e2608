//! Replay of real captures through stack + mux (see DESIGN.md, crate `pcap-tests`).
//!
//! Not built yet: arrives with the pcap-tests issue.
#![forbid(unsafe_code)]
