//! The KCM-style multiplexor (see DESIGN.md, crate `mux`).
//!
//! Built so far: the transport-independent machinery every psock and message socket uses —
//! [`assembler`] (strparser's delineation state machine, with size limit and assembly
//! timeout), [`release`] (out-of-order release of in-place messages, advancing the ring
//! over the released prefix), [`completion`] (per-message cookies completed on the peer's
//! ACK), [`order`] (replies in request order per connection), [`steer`] (batch
//! round-robin, least-loaded, sticky, key-hash), [`stats`] (KCM's
//! counters and table) and [`error`] (per-psock errors with KCM's errnos).
//!
//! On top: [`Mux`] (engine side: psocks, steering, atomic transmit, completions) and
//! [`MsgSocket`] (application side, `Send`, bounded lock-free queues), generic over a
//! [`PsockIo`] transport: [`stack_psock::StackPsock`] (connections of the userspace stack's
//! engine; received messages are views into smoltcp's mirror-mapped rx ring, no copy) and
//! [`kernel::KernelPsock`] (kernel TCP sockets, the fallback and baseline; its rx ring grows
//! and shrinks with the traffic: [`kernel_ring`]).
#![forbid(unsafe_code)]

pub mod assembler;
pub mod completion;
mod doorbell;
pub mod error;
pub mod ids;
pub mod kernel;
pub mod kernel_ring;
pub mod msg;
pub mod mux;
pub mod order;
pub mod psock_io;
pub mod release;
pub mod socket;
pub mod stack_psock;
pub mod stats;
pub mod steer;

pub use assembler::{Assembler, Step};
pub use completion::{Completion, CompletionStatus, CompletionTracker};
pub use error::{PsockError, PsockErrorKind};
pub use ids::{PsockId, SockId};
pub use msg::Msg;
pub use mux::{Mux, MuxConfig, Request};
pub use order::ReplySlot;
pub use psock_io::{Fill, PsockIo};
pub use release::{ReleaseError, ReleaseTracker};
pub use socket::{MsgSocket, MuxEvent, RecvError, RecvWait, ReplyError, SendError, SocketConfig};
pub use stats::{MuxStats, PsockStats, SockStats, StatsRow, StatsTable};
pub use steer::{KeyFn, SockLoad, SteerPolicy, Steering};
