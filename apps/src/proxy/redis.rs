//! The Redis side of `ukcm-proxy`: a [`Forward`] that answers what the proxy can answer
//! itself, sends single-key commands to their key's server (twemproxy's placement), and
//! splits multi-key commands per server (see [`super::merge`]).

use std::collections::{HashMap, HashSet};

use ukcm::{Clients, Forward, ForwardStats, Reply, Upstream, UpstreamError};
use ukcm_mux::{PsockId, ReplySlot};

use super::commands::{key_positions, kind, Kind};
use super::config::Pool;
use super::merge::Merge;
use super::placement::Placement;
use super::resp;

/// What travels with a backend request.
#[derive(Debug)]
pub enum Tag {
    /// A whole client command: its reply goes back as it is.
    One(ReplySlot),
    /// Part `part` of the split command `id`.
    Part { id: u64, part: usize },
}

/// A Redis pool's forwarder (one per engine; a clone starts with no connection state).
#[derive(Debug)]
pub struct RedisForward {
    /// Where keys go.
    at: Placement,
    /// Connections that gave the right password (only with `redis_auth`).
    authed: HashSet<PsockId>,
    merges: HashMap<u64, Merge>,
    next_id: u64,
    /// Requests answered here, and backend requests made by splitting (stats).
    local: u64,
    fragments: u64,
}

/// The short reason in `-ERR backend <reason>`.
pub fn reason(e: UpstreamError) -> &'static str {
    match e {
        UpstreamError::NoSuchBackend => "missing",
        UpstreamError::BackendDown => "down",
        UpstreamError::Busy => "busy (too many requests in flight)",
        UpstreamError::ConnectionLost => "connection lost",
        UpstreamError::Timeout => "timed out",
        UpstreamError::TooBig => "request too big",
        UpstreamError::NoId => "request without an id",
    }
}

fn error_reply(e: UpstreamError) -> Vec<u8> {
    format!("-ERR backend {}\r\n", reason(e)).into_bytes()
}

fn unsupported(name: &[u8]) -> Vec<u8> {
    format!("-ERR unsupported command '{}' through the proxy\r\n", String::from_utf8_lossy(name)).into_bytes()
}

fn wrong_args(name: &[u8]) -> Vec<u8> {
    format!("-ERR wrong number of arguments for '{}' command\r\n", String::from_utf8_lossy(name).to_lowercase())
        .into_bytes()
}

impl Clone for RedisForward {
    fn clone(&self) -> RedisForward {
        RedisForward::new(&self.at.pool)
    }
}

impl RedisForward {
    /// A forwarder for `pool` (a `redis: true` pool; its servers are the upstream backends,
    /// in file order).
    pub fn new(pool: &Pool) -> RedisForward {
        RedisForward {
            at: Placement::new(pool),
            authed: HashSet::new(),
            merges: HashMap::new(),
            next_id: 0,
            local: 0,
            fragments: 0,
        }
    }

    /// Takes a reloaded pool's settings (servers, distribution, hash, auth, db): requests
    /// from now on use them; split commands in flight finish with the parts they have.
    /// Connections that authenticated stay authenticated.
    pub fn reconfigure(&mut self, pool: &Pool) {
        self.at.reconfigure(pool);
    }

    /// A command answered by the proxy itself, if it is one; `None` to forward it.
    fn local(&mut self, k: Kind, args: &[&[u8]], origin: PsockId) -> Option<Vec<u8>> {
        let auth = self.at.pool.redis_auth.as_deref();
        if auth.is_some() && !self.authed.contains(&origin) && !matches!(k, Kind::Auth | Kind::Quit) {
            return Some(b"-NOAUTH Authentication required.\r\n".to_vec());
        }
        Some(match k {
            Kind::Ping if args.len() == 2 => resp::bulk(args[1]),
            Kind::Ping => b"+PONG\r\n".to_vec(),
            Kind::Echo if args.len() == 2 => resp::bulk(args[1]),
            Kind::Echo => wrong_args(args[0]),
            Kind::Quit => b"+OK\r\n".to_vec(),
            Kind::Auth if args.len() != 2 => wrong_args(args[0]),
            Kind::Auth => match auth {
                None => b"-ERR Client sent AUTH, but no password is set\r\n".to_vec(),
                Some(pw) if pw.as_bytes() == args[1] => {
                    self.authed.insert(origin);
                    b"+OK\r\n".to_vec()
                }
                Some(_) => {
                    self.authed.remove(&origin);
                    b"-ERR invalid password\r\n".to_vec()
                }
            },
            Kind::Select if args.len() == 2 && args[1] == self.at.pool.redis_db.to_string().as_bytes() => {
                b"+OK\r\n".to_vec()
            }
            Kind::Select | Kind::Unsupported => unsupported(args[0]),
            Kind::Single if args.len() < 2 => wrong_args(args[0]),
            Kind::Mget | Kind::Sum if args.len() < 2 => wrong_args(args[0]),
            Kind::Mset if args.len() < 3 || args.len() % 2 == 0 => wrong_args(args[0]),
            Kind::SameServer(spec) => match key_positions(spec, args) {
                None => wrong_args(args[0]),
                Some(keys) if keys.is_empty() => {
                    let name = String::from_utf8_lossy(args[0]).to_lowercase();
                    format!("-ERR '{name}' without keys cannot be routed through the proxy\r\n").into_bytes()
                }
                Some(_) => return None,
            },
            Kind::Single | Kind::Mget | Kind::Sum | Kind::Mset => return None,
        })
    }

    /// Sends the whole command to the server of its key `args[key]`.
    fn single(&mut self, req: &[u8], args: &[&[u8]], reply: &mut Reply<'_>, up: &mut dyn Upstream<Tag>, key: usize) {
        let Some(server) = self.at.selector.server_for(args[key]) else {
            let _ = reply.send(&error_reply(UpstreamError::BackendDown));
            return;
        };
        let Some(slot) = reply.defer() else {
            let _ = reply.send(&error_reply(UpstreamError::BackendDown));
            return;
        };
        // Inline commands are re-encoded: backends get one form.
        let encoded;
        let bytes = if req.first() == Some(&b'*') {
            req
        } else {
            encoded = resp::encode(args);
            &encoded
        };
        if let Err((e, Tag::One(slot))) = up.send(server, bytes, Tag::One(slot)) {
            if reply.undefer(slot).is_ok() {
                let _ = reply.send(&error_reply(e));
            }
        }
    }

    /// Splits a multi-key command per server and sends the parts.
    fn split(&mut self, k: Kind, args: &[&[u8]], reply: &mut Reply<'_>, up: &mut dyn Upstream<Tag>) {
        let step = if k == Kind::Mset { 2 } else { 1 };
        let keys: Vec<&[&[u8]]> = args[1..].chunks(step).collect();
        let mut by_server: Vec<(usize, Vec<usize>)> = Vec::new();
        for (pos, kv) in keys.iter().enumerate() {
            let Some(s) = self.at.selector.server_for(kv[0]) else {
                let _ = reply.send(&error_reply(UpstreamError::BackendDown));
                return;
            };
            match by_server.iter_mut().find(|(srv, _)| *srv == s) {
                Some((_, positions)) => positions.push(pos),
                None => by_server.push((s, vec![pos])),
            }
        }
        let Some(slot) = reply.defer() else {
            let _ = reply.send(&error_reply(UpstreamError::BackendDown));
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        self.fragments += by_server.len() as u64;
        let mut merge = Merge::new(slot, k, keys.len());
        let mut complete = false;
        for (server, positions) in by_server {
            let mut part_args: Vec<&[u8]> = vec![args[0]];
            positions.iter().for_each(|&p| part_args.extend_from_slice(keys[p]));
            let part = merge.add_part(positions, self.at.names[server].clone());
            if let Err((e, _)) = up.send(server, &resp::encode(&part_args), Tag::Part { id, part }) {
                complete = merge.failed(part, reason(e));
            }
        }
        if complete {
            // Every part failed at once: answered now, in its place.
            let (slot, bytes) = merge.finish();
            if reply.undefer(slot).is_ok() {
                let _ = reply.send(&bytes);
            }
        } else {
            self.merges.insert(id, merge);
        }
    }
}

impl Forward for RedisForward {
    type Tag = Tag;

    fn request(&mut self, req: &[u8], reply: &mut Reply<'_>, up: &mut dyn Upstream<Tag>) {
        let Some(args) = resp::command_args(req) else {
            let _ = reply.send(b"-ERR Protocol error: malformed command\r\n");
            return;
        };
        let Some(name) = args.first() else { return }; // an empty inline line: no reply
        let k = kind(name);
        if let Some(answer) = self.local(k, &args, reply.origin()) {
            self.local += 1;
            let _ = reply.send(&answer);
            return;
        }
        self.at.sync_live(up);
        match k {
            Kind::Single => self.single(req, &args, reply, up, 1),
            Kind::SameServer(spec) => {
                let keys = key_positions(spec, &args).unwrap_or_default();
                let servers: Vec<Option<usize>> = keys.iter().map(|&i| self.at.selector.server_for(args[i])).collect();
                if servers.iter().all(|s| *s == servers[0]) {
                    self.single(req, &args, reply, up, keys[0]);
                } else {
                    let name = String::from_utf8_lossy(args[0]).to_lowercase();
                    let msg =
                        format!("-ERR the keys of '{name}' are on different servers (give them one hash tag)\r\n");
                    self.local += 1;
                    let _ = reply.send(msg.as_bytes());
                }
            }
            _ => self.split(k, &args, reply, up),
        }
    }

    fn counts(&self) -> ForwardStats {
        ForwardStats { local: self.local, fragments: self.fragments, ..ForwardStats::default() }
    }

    fn response(&mut self, tag: Tag, resp: Result<&[u8], UpstreamError>, clients: &mut dyn Clients) {
        match tag {
            Tag::One(slot) => {
                let _ = match resp {
                    Ok(bytes) => clients.reply(slot, bytes),
                    Err(e) => clients.reply(slot, &error_reply(e)),
                };
            }
            Tag::Part { id, part } => {
                let Some(m) = self.merges.get_mut(&id) else { return };
                let complete = match resp {
                    Ok(bytes) => m.reply_for(part, bytes),
                    Err(e) => m.failed(part, reason(e)),
                };
                if complete {
                    if let Some(m) = self.merges.remove(&id) {
                        let (slot, bytes) = m.finish();
                        let _ = clients.reply(slot, &bytes);
                    }
                }
            }
        }
    }
}
