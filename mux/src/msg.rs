//! A received message: a view into its psock's pinned rx ring, never a copy.

use std::fmt;
use std::ops::Deref;

use ukcm_nic::RingView;

use crate::ids::PsockId;
use crate::order::ReplySlot;

/// One whole message. Dropping it (on any thread) releases its ring space, which reopens
/// the connection's receive window, and its reply slot if it still has one.
pub struct Msg {
    view: RingView,
    origin: PsockId,
    slot: Option<ReplySlot>,
}

impl Msg {
    pub(crate) fn new(view: RingView, origin: PsockId, slot: Option<ReplySlot>) -> Self {
        Msg { view, origin, slot }
    }

    /// Takes the message's reply slot (a mux with ordered replies gives every message one):
    /// reply through it with [`crate::MsgSocket::reply`], possibly after the message is gone;
    /// dropping the slot unanswered releases its place in the connection's reply order.
    pub fn take_slot(&mut self) -> Option<ReplySlot> {
        self.slot.take()
    }

    /// Puts a slot back (e.g. one a failed [`crate::MsgSocket::reply`] returned), so the
    /// message carries it again.
    pub fn with_slot(mut self, slot: ReplySlot) -> Self {
        self.slot = Some(slot);
        self
    }

    /// Whether the message still carries its reply slot.
    pub fn has_slot(&self) -> bool {
        self.slot.is_some()
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
        f.debug_struct("Msg")
            .field("origin", &self.origin)
            .field("len", &self.view.len())
            .field("slot", &self.slot.as_ref().map(|s| s.position()))
            .finish()
    }
}
