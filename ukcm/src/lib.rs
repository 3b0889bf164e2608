//! ukcm for appliance authors: the one crate to depend on.
//!
//! * [`Server`]: a message server on any transport (`kernel`, `afxdp:IF[:Q]`, `tap:NAME`,
//!   `dpdk:ARGS`, `mem` — the in-memory pair, whose other end [`Server::take_mem_peer`]
//!   hands to an in-process client — or a port you open yourself): a parser delineates
//!   requests, a [`Handler`] answers each through its [`Reply`], replies leave every
//!   connection in request order however many workers answer.
//! * [`upstream::Pool`]: K connections to each of a list of backends from the same engine,
//!   requests routed by key, replies matched back in FIFO order per connection, with
//!   connect timeouts, reconnects, ejection and per-request timeouts.
//! * The message API underneath ([`mux`]): message sockets, zero-copy [`Msg`] views, reply
//!   slots, completions, stats; and the layers below it ([`stack`], [`nic`], [`parsers`]).
//!
//! An echo server in full:
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     let server = ukcm::Server::builder()
//!         .transport("kernel") // or "afxdp:veth0", "tap:ukcm0" with .addr("10.0.0.1/24")
//!         .addr("127.0.0.1")
//!         .listen(7000)
//!         .parser("thrift") // 4-byte big-endian length prefix
//!         .workers(4)
//!         .serve(|req: &[u8], reply: &mut ukcm::Reply<'_>| {
//!             let _ = reply.send(req);
//!         })?;
//!     println!("echo on {}", server.local_addr());
//!     let stats = server.run_until_signal()?;
//!     println!("{stats}");
//!     Ok(())
//! }
//! ```
#![forbid(unsafe_code)]

mod conn_log;
#[cfg(feature = "dpdk")]
pub mod dpdk_port;
pub mod forward;
pub mod logging;
pub mod mem;
pub mod memory;
pub mod pool_stats;
pub mod ports;
pub mod server;
pub mod signals;
pub mod spec;
#[doc(hidden)]
pub mod testing;
pub mod transport;
pub mod upstream;

pub use forward::{Clients, Forward, Relay, Reload, UpdateForward, Upstream};
pub use mem::MemPeer;
pub use pool_stats::{BackendStats, ForwardStats, UpstreamSnapshot};
pub use server::{
    serve_spec, Handler, Model, Reply, ReplyFailed, Server, ServerBuilder, ServerConfig, ServerCounters, StatsHandle,
};
pub use spec::{SteerKind, TransportSpec};
pub use transport::{CostReport, KernelTransport, StackTransport, Transport};
pub use ukcm_mux::{Msg, MsgSocket, PsockId, ReplySlot, StatsTable};
pub use upstream::{Pool, PoolConfig, UpstreamError};

/// The message multiplexor (KCM semantics, ordered replies).
pub use ukcm_mux as mux;
/// Pinned memory, frame pools and ports.
pub use ukcm_nic as nic;
/// Message parsers.
pub use ukcm_parsers as parsers;
/// The userspace TCP/IP stack (smoltcp engines).
pub use ukcm_stack as stack;
