//! Shared pieces of the ukcm binaries (see DESIGN.md, crate `apps`).
//!
//! Not built yet: the echo server, load generator and demo arrive with the apps issue.
#![forbid(unsafe_code)]
