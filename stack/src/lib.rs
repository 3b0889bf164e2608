//! smoltcp engines over any `ukcm_nic::Port` (see DESIGN.md, crate `stack`).
//!
//! Not built yet: the engine, TCP API and pinned socket rings arrive with the stack issue.
#![forbid(unsafe_code)]
