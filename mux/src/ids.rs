//! Tiny typed handles (mio's `Token` style): indices that cannot be mixed up.

/// A message socket inside a mux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockId(pub u32);

/// An attached TCP connection (psock) inside a mux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PsockId(pub u32);
