//! Shared pieces of the ukcm binaries (see DESIGN.md, crate `apps`).
//!
//! * [`cli`]: `--nic`, `--addr`, `--steer`, `--size` parsing, parser-spec validation and
//!   the "one clear line on stderr, non-zero exit" error style.
//! * [`wire`]: the load generator's self-checking messages (sequence, send time,
//!   FNV-1a 64 checksum), framed for the server's parser.
//! * [`echo`]: the echo server over `Mux<KernelPsock>` (worker threads or
//!   run-to-completion).
//! * [`load`]: the load generator (closed and open loop, HdrHistogram latencies).
//! * [`report`]: percentiles, machine description, JSON, number formatting.
//! * [`signals`]: SIGINT/SIGTERM to a flag.
//!
//! Transport: the apps run the mux over kernel TCP only in this build; the userspace-stack
//! transports (`--nic afxdp:…`, `tap:…`, `dpdk:…`) are parsed and refused with one line.
#![forbid(unsafe_code)]

pub mod cli;
pub mod echo;
pub mod load;
pub mod report;
pub mod signals;
pub mod stack_load;
pub mod transport;
pub mod wire;
