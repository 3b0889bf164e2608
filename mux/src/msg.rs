//! A received message: a view into its psock's pinned rx ring, never a copy.

use std::fmt;
use std::ops::Deref;

use ukcm_nic::RingView;

use crate::ids::PsockId;

/// One whole message. Dropping it (on any thread) releases its ring space, which reopens
/// the connection's receive window.
pub struct Msg {
    view: RingView,
    origin: PsockId,
}

impl Msg {
    pub(crate) fn new(view: RingView, origin: PsockId) -> Self {
        Msg { view, origin }
    }

    /// The psock the message came from (reply with `send_to(msg.origin(), …)`).
    pub fn origin(&self) -> PsockId {
        self.origin
    }

    /// The bytes (same as deref).
    pub fn bytes(&self) -> &[u8] {
        &self.view
    }
}

impl Deref for Msg {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.view
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Msg").field("origin", &self.origin).field("len", &self.view.len()).finish()
    }
}
