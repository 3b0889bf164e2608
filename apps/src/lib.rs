//! Shared pieces of the ukcm binaries (see DESIGN.md, crate `apps`).
//!
//! * [`cli`]: `--nic`, `--addr`, `--steer`, `--size` parsing, parser-spec validation and
//!   the "one clear line on stderr, non-zero exit" error style.
//! * [`wire`]: the load generator's self-checking messages (sequence, send time,
//!   FNV-1a 64 checksum), framed for the server's parser.
//! * [`echo`]: the echo service on `ukcm::Server` (any transport, worker threads or
//!   run-to-completion, replies in request order).
//! * [`load`]: the load generator over kernel sockets (closed and open loop, HdrHistogram
//!   latencies); [`stack_load`]: the same load on its own ukcm engine (closed loop).
//! * [`route`]: the stack load generator's network-safety checks.
//! * [`report`]: percentiles, latency CDF points, machine description, JSON, number
//!   formatting; [`svg`]: the latency CDF plot.
//! * [`bench`](mod@bench): `ukcm-bench`'s systems, rows, tables, goals, JSON and plot.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod cpu;
pub mod echo;
pub mod load;
pub mod proxy;
pub mod report;
pub mod route;
pub mod stack_load;
pub mod svg;
pub mod wire;
