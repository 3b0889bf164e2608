//! smoltcp engines over any `ukcm_nic::Port` (see DESIGN.md, crate `stack`).
//!
//! - [`Engine`]: one smoltcp `Interface` over one port; TCP listen (real backlog) /
//!   accept / connect / close / abort with per-connection [`TcpOptions`]; connection
//!   [`Event`]s and per-connection readiness; bounded `poll()` steps; an
//!   [`IdleStrategy`]; a [`Clock`] tests can drive ([`ManualClock`]).
//! - [`rings`]: every socket's rx/tx rings live in pinned memory, are recycled by size,
//!   and are charged to the engine's `PinnedBudget` as they are.
//! - [`autosize`]: rings start small and double under pressure up to the configured
//!   maximum; [`cost`]: what connections pin, idle and active.
//! - [`drops`]: every frame dropped is counted by reason, and each reason explained once in
//!   the log.
//! - [`thread`]: an engine on its own thread behind bounded command/event queues
//!   ([`spawn_engine`], [`EngineHandle`]); the run-to-completion mode is `Engine` itself.
//!
//! Per-packet cost does not grow with the number of connections: see [`engine`].
// One audited call needs `unsafe` (handing a connection's rx ring to the in-place lender,
// `Engine::take_inplace_rx`); everything else is safe code.
#![deny(unsafe_code)]

pub mod autosize;
pub mod classify;
pub mod clock;
pub mod config;
pub mod cost;
pub mod drops;
pub mod echo;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod neighbours;
pub mod rings;
pub mod strays;
pub mod thread;

pub use autosize::START_RING;
pub use classify::FourTuple;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Congestion, EngineConfig, IdleStep, IdleStrategy, TcpOptions};
pub use cost::{ConnCost, STACK_STATE_BYTES};
pub use drops::{DropCounts, DropNotes, DropReason};
pub use echo::echo_in_place;
pub use engine::{consume_rx, ConnId, ConnInfo, Engine, EngineStats, Event, RefuseReason, StackError};
pub use neighbours::NeighbourShare;
pub use rings::{pool_stats, RingPoolStats, SizeClass};
pub use smoltcp;
pub use strays::StrayShare;
pub use thread::{spawn_engine, spawn_engine_with, AppEvent, EngineHandle, ThreadConfig};
