//! strparser-style message parsers (see DESIGN.md, crate `parsers`).
//!
//! A [`Parser`] finds where the next message of a byte stream ends, from its
//! header, without copying or allocating. The mux runs one per connection.
//! [`parser_from_spec`] builds one from a CLI string.
// `deny`, not `forbid`: calling rbpf's JIT needs one `unsafe` block, isolated
// (and argued) in `bpf::jit`, which alone allows it.
#![deny(unsafe_code)]

pub mod bpf;
pub mod contract;
pub mod fnv;
#[doc(hidden)]
pub mod fuzzing;
pub mod http1;
pub mod http2;
pub mod lenfield;
pub mod memcache_any;
pub mod memcache_text;
pub mod memcached;
pub mod mqtt;
pub mod resp;
pub mod spec;
pub mod testing;
pub mod tls;

pub use bpf::{BpfLoadError, BpfParser, BpfProgram, Exec};
pub use contract::{BpfFault, Parse, ParseError, Parser, DEFAULT_MAX};
pub use http1::Http1;
pub use http2::Http2;
pub use lenfield::{Endian, Grpc, LengthField, LengthLayout};
pub use memcache_any::MemcacheAny;
pub use memcache_text::MemcacheText;
pub use memcached::Memcached;
pub use mqtt::Mqtt;
pub use resp::Resp;
pub use spec::{parser_from_spec, SpecError};
pub use tls::Tls;
