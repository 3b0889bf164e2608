//! The KCM-style multiplexor (see DESIGN.md, crate `mux`).
//!
//! Built so far: the transport-independent machinery every psock and message socket uses —
//! [`assembler`] (strparser's delineation state machine, with size limit and assembly
//! timeout), [`release`] (out-of-order release of in-place messages, advancing the ring
//! over the released prefix), [`completion`] (per-message cookies completed on the peer's
//! ACK), [`steer`] (batch round-robin, least-loaded, sticky, key-hash), [`stats`] (KCM's
//! counters and table) and [`error`] (per-psock errors with KCM's errnos).
//!
//! Not built yet (the mux issue): the `Mux`/`MsgSocket` API that joins these to the
//! stack's connections and to kernel TCP sockets.
#![forbid(unsafe_code)]

pub mod assembler;
pub mod completion;
pub mod error;
pub mod ids;
pub mod release;
pub mod stats;
pub mod steer;

pub use assembler::{Assembler, Step};
pub use completion::{Completion, CompletionStatus, CompletionTracker};
pub use error::{PsockError, PsockErrorKind};
pub use ids::{PsockId, SockId};
pub use release::{ReleaseError, ReleaseTracker};
pub use stats::{MuxStats, PsockStats, SockStats, StatsRow, StatsTable};
pub use steer::{KeyFn, SockLoad, SteerPolicy, Steering};
