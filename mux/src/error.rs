//! Per-psock errors, with the errno KCM would post for each.

use std::fmt;

use ukcm_parsers::ParseError;

/// Why a psock stopped (KCM posts these as socket errors on the psock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsockErrorKind {
    /// A message longer than the maximum (the rx ring, or a configured lower limit).
    MsgSize,
    /// A message did not complete within the assembly timeout.
    TimedOut,
    /// The parser lost framing.
    Proto,
    /// The connection was reset or closed in the middle of a message.
    Pipe,
}

impl PsockErrorKind {
    /// The Linux errno KCM uses for this error.
    pub fn errno(self) -> i32 {
        match self {
            PsockErrorKind::MsgSize => 90,   // EMSGSIZE
            PsockErrorKind::TimedOut => 110, // ETIMEDOUT
            PsockErrorKind::Proto => 71,     // EPROTO
            PsockErrorKind::Pipe => 32,      // EPIPE
        }
    }

    /// The errno's symbolic name.
    pub fn name(self) -> &'static str {
        match self {
            PsockErrorKind::MsgSize => "EMSGSIZE",
            PsockErrorKind::TimedOut => "ETIMEDOUT",
            PsockErrorKind::Proto => "EPROTO",
            PsockErrorKind::Pipe => "EPIPE",
        }
    }
}

/// An error posted on one psock: what happened and, where known, the parser's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PsockError {
    /// The KCM error class.
    pub kind: PsockErrorKind,
    /// The parser's diagnosis, when the parser raised it.
    pub parse: Option<ParseError>,
    /// Length the header claimed, when that is what was wrong.
    pub claimed_len: Option<u64>,
}

impl PsockError {
    /// An error without parser detail.
    pub fn new(kind: PsockErrorKind) -> Self {
        PsockError { kind, parse: None, claimed_len: None }
    }
}

impl fmt::Display for PsockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind.name())?;
        if let Some(p) = &self.parse {
            write!(f, ": {p}")?;
        }
        if let Some(l) = self.claimed_len {
            write!(f, " (length {l})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PsockError {}
