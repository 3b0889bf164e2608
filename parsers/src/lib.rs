//! strparser-style message parsers (see DESIGN.md, crate `parsers`).
#![forbid(unsafe_code)]
