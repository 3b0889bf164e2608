//! One multi-key command split over servers: the parts' replies gathered until the last is
//! in, then one reply for the client (MGET's values back in key order, integers summed,
//! MSET's `+OK`). A part that fails makes the whole reply an error naming that part's
//! server, since a partial answer would look like a complete one.

use ukcm_mux::ReplySlot;

use super::commands::Kind;
use super::resp;

/// A split command waiting for its parts.
#[derive(Debug)]
pub struct Merge {
    /// The client's reply slot (answered when the last part is in).
    slot: ReplySlot,
    kind: Kind,
    /// For each part: the positions (in the client's key list) of its keys.
    parts: Vec<Vec<usize>>,
    /// For each part: its server's name, for error replies.
    servers: Vec<String>,
    /// MGET: each key's value, a whole RESP value.
    values: Vec<Vec<u8>>,
    sum: i64,
    left: usize,
    error: Option<Vec<u8>>,
}

impl Merge {
    /// A merge of `kind` over `keys` keys, answering `slot`.
    pub fn new(slot: ReplySlot, kind: Kind, keys: usize) -> Merge {
        let values = if kind == Kind::Mget { vec![Vec::new(); keys] } else { Vec::new() };
        Merge { slot, kind, parts: Vec::new(), servers: Vec::new(), values, sum: 0, left: 0, error: None }
    }

    /// Adds a part for the keys at `positions`, on `server`; returns its index.
    pub fn add_part(&mut self, positions: Vec<usize>, server: String) -> usize {
        self.parts.push(positions);
        self.servers.push(server);
        self.left += 1;
        self.parts.len() - 1
    }

    /// Part `part` failed before or instead of a reply (`reason`: why, from the pool).
    pub fn failed(&mut self, part: usize, reason: &str) -> bool {
        if self.error.is_none() {
            let server = self.servers.get(part).map_or("?", String::as_str);
            self.error = Some(format!("-ERR backend {reason} (server {server})\r\n").into_bytes());
        }
        self.done()
    }

    /// Part `part`'s reply; whether every part is now in.
    pub fn reply_for(&mut self, part: usize, reply: &[u8]) -> bool {
        if self.error.is_some() {
            return self.done();
        }
        if resp::error_text(reply).is_some() {
            self.error = Some(reply.to_vec());
            return self.done();
        }
        match self.kind {
            Kind::Mget => match resp::array_items(reply) {
                Some(items) if items.len() == self.parts[part].len() => {
                    for (&pos, item) in self.parts[part].iter().zip(items) {
                        self.values[pos] = item.to_vec();
                    }
                }
                _ => return self.failed(part, "sent an unexpected reply to MGET"),
            },
            Kind::Sum => match resp::integer(reply) {
                Some(n) => self.sum += n,
                None => return self.failed(part, "sent a non-integer reply"),
            },
            _ => {
                if !reply.starts_with(b"+") {
                    return self.failed(part, "sent an unexpected reply to MSET");
                }
            }
        }
        self.done()
    }

    fn done(&mut self) -> bool {
        self.left -= 1;
        self.left == 0
    }

    /// The client's slot and reply, once every part is in.
    pub fn finish(self) -> (ReplySlot, Vec<u8>) {
        let bytes = self.reply();
        (self.slot, bytes)
    }

    fn reply(&self) -> Vec<u8> {
        if let Some(e) = &self.error {
            return e.clone();
        }
        match self.kind {
            Kind::Mget => {
                let mut out = format!("*{}\r\n", self.values.len()).into_bytes();
                self.values.iter().for_each(|v| out.extend_from_slice(v));
                out
            }
            Kind::Sum => format!(":{}\r\n", self.sum).into_bytes(),
            _ => b"+OK\r\n".to_vec(),
        }
    }
}
