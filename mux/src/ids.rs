//! Tiny typed handles (mio's `Token` style): indices that cannot be mixed up.

/// A message socket inside a mux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockId(pub u32);

/// An attached TCP connection (psock) inside a mux: a slot index plus a generation, so an
/// id kept after its psock was unattached never names the connection that reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PsockId {
    idx: u32,
    gen: u32,
}

impl PsockId {
    /// The id of slot `idx` in generation `gen`.
    pub const fn new(idx: u32, gen: u32) -> Self {
        PsockId { idx, gen }
    }

    /// The slot index (dense, reused after unattach).
    pub fn index(&self) -> usize {
        self.idx as usize
    }

    /// The generation of the slot.
    pub fn generation(&self) -> u32 {
        self.gen
    }
}

impl std::fmt::Display for PsockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "psock#{}.{}", self.idx, self.gen)
    }
}
