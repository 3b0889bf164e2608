//! The KCM-style multiplexor (see DESIGN.md, crate `mux`).
//!
//! Not built yet: psocks, message sockets and steering arrive with the mux issue.
#![forbid(unsafe_code)]
