//! The memcached side of `ukcm-proxy`: a [`Forward`] for a pool without `redis: true`.
//!
//! Clients may speak the text protocol or the binary one on the same port (the `memcache`
//! parser tells them apart per message, by the binary magic `0x80`), as memcached itself
//! lets them. Backends are always spoken to in text, binary requests translated to meta
//! commands ([`super::memcache_binary`] says why); the pool matches their replies in order.
//!
//! * Keyed commands (storage, `delete`, `incr`/`decr`, `touch`, the meta commands) go to
//!   their key's server; a `get`/`gets`/`gat`/`gats` over keys of several servers is split
//!   and merged back in key order ([`super::memcache_merge`]).
//! * `flush_all` and `verbosity` (binary: flush, verbosity) go to every live server, one
//!   reply; so does `stats <group>` (`slabs`, `items`, `settings`, …), each `STAT` name
//!   prefixed with its server's name; `version` is one server's; `stats` (binary: stat) and `mn` are answered by the
//!   proxy; `quit` closes the connection after the replies to the requests before it
//!   (binary `quit` answers first; the requests after it are not handled).
//! * `noreply`, the meta `q` flag and binary quiet requests: the backend is asked the
//!   ordinary way (so it answers exactly once) and the answer the client did not want is
//!   dropped, its place in the connection's reply order released.
//! * A backend failure, timeout or ejected server becomes `SERVER_ERROR backend …` (binary:
//!   status `0x0086`, temporary failure) for exactly the requests it concerns; malformed
//!   commands get `ERROR`/`CLIENT_ERROR` here and never reach a backend.
//!
//! Order: replies leave each client connection in request order (the mux's reply slots).
//! Requests of one client to one server keep their order with `server_connections: 1`
//! (twemproxy's default); with more, the pool spreads them over the connections, so two
//! pipelined requests for one key may overtake each other there.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ukcm::{Clients, Forward, Reply, Upstream, UpstreamError};
use ukcm_mux::ReplySlot;

use super::config::Pool;
use super::memcache_binary::{self as binary, Pending, Plan};
use super::memcache_merge::Gather;
use super::memcache_text::{self as text, Command, Hide, Kind};
use super::placement::Placement;
use super::redis::reason;

/// What travels with a backend request.
#[derive(Debug)]
pub enum Tag {
    /// A text command: its reply goes back as it is.
    Pass(ReplySlot),
    /// A meta command sent without its `q`: the reply goes back unless `Hide` hides it.
    Quiet(ReplySlot, Hide),
    /// A `noreply` command: the reply is dropped.
    Drop,
    /// Part `part` of the split command `id`.
    Part { id: u64, part: usize },
    /// A translated binary request.
    Binary(ReplySlot, Pending),
}

impl Tag {
    fn into_slot(self) -> Option<ReplySlot> {
        match self {
            Tag::Pass(s) | Tag::Quiet(s, _) | Tag::Binary(s, _) => Some(s),
            Tag::Drop | Tag::Part { .. } => None,
        }
    }
}

/// Who waits for a split command's merged reply: the client's slot, and for a binary
/// request what its response needs.
#[derive(Debug)]
pub struct Waiter {
    slot: ReplySlot,
    binary: Option<Pending>,
}

/// What a waiter's client gets for a merged reply (`None`: nothing, a quiet binary success).
fn merged_reply(binary: Option<&Pending>, bytes: Vec<u8>) -> Option<Vec<u8>> {
    match binary {
        None => Some(bytes),
        Some(p) => binary::broadcast_response(p, &bytes),
    }
}

/// Counters behind `stats` (per engine).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: u64,
    local: u64,
    backend_errors: u64,
    /// Backend requests made by splitting (multi-key gets, broadcasts).
    fragments: u64,
}

/// A memcached pool's forwarder (one per engine; a clone starts with no state).
#[derive(Debug)]
pub struct MemcacheForward {
    /// Where keys go.
    at: Placement,
    gathers: HashMap<u64, Gather<Waiter>>,
    next_id: u64,
    started: Instant,
    counts: Counts,
}

impl Clone for MemcacheForward {
    fn clone(&self) -> MemcacheForward {
        MemcacheForward::new(&self.at.pool)
    }
}

fn text_error(e: UpstreamError) -> Vec<u8> {
    format!("SERVER_ERROR backend {}\r\n", reason(e)).into_bytes()
}

fn binary_error(p: &Pending, e: UpstreamError) -> Vec<u8> {
    binary::error(p.op, p.opaque, binary::status::TEMPORARY_FAILURE, &format!("backend {}", reason(e)))
}

/// The protocol a request's error reply is in.
#[derive(Debug, Clone, Copy)]
enum Form<'a> {
    Text,
    Binary(&'a Pending),
}

impl Form<'_> {
    fn error(self, e: UpstreamError) -> Vec<u8> {
        match self {
            Form::Text => text_error(e),
            Form::Binary(p) => binary_error(p, e),
        }
    }
}

impl MemcacheForward {
    /// A forwarder for `pool` (its servers are the upstream backends, in file order).
    pub fn new(pool: &Pool) -> MemcacheForward {
        MemcacheForward {
            at: Placement::new(pool),
            gathers: HashMap::new(),
            next_id: 0,
            started: Instant::now(),
            counts: Counts::default(),
        }
    }

    /// Takes a reloaded pool's settings (servers, distribution, hash): requests from now on
    /// use them; split gets in flight finish with the parts they have.
    pub fn reconfigure(&mut self, pool: &Pool) {
        self.at.reconfigure(pool);
    }

    /// Sends `bytes` to `server` with the tag `make` builds around the deferred slot; a
    /// request that cannot be sent is answered at once, in its place, with an error in
    /// `form`.
    fn send_one(
        &mut self,
        server: Option<usize>,
        bytes: &[u8],
        (reply, up): (&mut Reply<'_>, &mut dyn Upstream<Tag>),
        form: Form<'_>,
        make: impl FnOnce(ReplySlot) -> Tag,
    ) {
        let Some(slot) = reply.defer() else {
            let _ = reply.send(&form.error(UpstreamError::BackendDown));
            return;
        };
        let err = match server {
            None => Some((UpstreamError::BackendDown, make(slot))),
            Some(server) => up.send(server, bytes, make(slot)).err(),
        };
        if let Some((e, tag)) = err {
            self.counts.backend_errors += 1;
            if let Some(slot) = tag.into_slot() {
                if reply.undefer(slot).is_ok() {
                    let _ = reply.send(&form.error(e));
                }
            }
        }
    }

    /// A server for a request with no key (`version`): the first one up.
    fn any_server(&self, up: &dyn Upstream<Tag>) -> Option<usize> {
        (0..up.backends()).find(|&i| up.is_up(i)).or((up.backends() > 0).then_some(0))
    }

    fn text(&mut self, cmd: Command<'_>, reply: &mut Reply<'_>, up: &mut dyn Upstream<Tag>) {
        match cmd.kind {
            Kind::Quit => {
                // No reply (the request's place is released); the connection closes after
                // the replies to the requests before it.
                self.counts.local += 1;
                reply.close();
            }
            Kind::MetaNoop => {
                self.counts.local += 1;
                let _ = reply.send(b"MN\r\n");
            }
            Kind::Stats => {
                self.counts.local += 1;
                let mut out: Vec<u8> = Vec::new();
                for (k, v) in self.stats(up) {
                    out.extend(format!("STAT {k} {v}\r\n").into_bytes());
                }
                out.extend_from_slice(b"END\r\n");
                let _ = reply.send(&out);
            }
            Kind::Version => {
                let server = self.any_server(up);
                self.send_one(server, &cmd.forwarded(), (reply, up), Form::Text, Tag::Pass);
            }
            Kind::Keyed { .. } => {
                let server = cmd.keys().next().and_then(|k| self.at.selector.server_for(&k));
                let bytes = cmd.forwarded();
                match cmd.quiet {
                    Some(Hide::All) => {
                        // noreply: no slot kept; whatever happens, the client hears nothing.
                        if let Some(s) = server {
                            let _ = up.send(s, &bytes, Tag::Drop);
                        }
                    }
                    Some(h) => self.send_one(server, &bytes, (reply, up), Form::Text, |s| Tag::Quiet(s, h)),
                    None => self.send_one(server, &bytes, (reply, up), Form::Text, Tag::Pass),
                }
            }
            Kind::Get { first_key } => self.get(&cmd, first_key, reply, up),
            Kind::Broadcast => {
                let noreply = cmd.quiet == Some(Hide::All);
                self.broadcast(&cmd.forwarded(), noreply, false, None, reply, up);
            }
            Kind::StatsOf => {
                self.broadcast(&cmd.forwarded(), false, true, None, reply, up);
            }
        }
    }

    /// A get over several keys: one request per server, merged in key order.
    fn get(&mut self, cmd: &Command<'_>, first_key: usize, reply: &mut Reply<'_>, up: &mut dyn Upstream<Tag>) {
        let keys = &cmd.tokens[first_key..];
        let mut by_server: Vec<(usize, Vec<usize>)> = Vec::new();
        for (pos, k) in keys.iter().enumerate() {
            let Some(s) = self.at.selector.server_for(k) else {
                let _ = reply.send(&text_error(UpstreamError::BackendDown));
                return;
            };
            match by_server.iter_mut().find(|(srv, _)| *srv == s) {
                Some((_, positions)) => positions.push(pos),
                None => by_server.push((s, vec![pos])),
            }
        }
        if by_server.len() == 1 {
            self.send_one(Some(by_server[0].0), &cmd.forwarded(), (reply, up), Form::Text, Tag::Pass);
            return;
        }
        let Some(slot) = reply.defer() else {
            let _ = reply.send(&text_error(UpstreamError::BackendDown));
            return;
        };
        let waiter = Waiter { slot, binary: None };
        let mut g = Gather::get(waiter, keys.iter().map(|k| k.to_vec()).collect());
        let id = self.next_id;
        self.next_id += 1;
        let mut complete = false;
        for (server, positions) in by_server {
            let mut tokens: Vec<&[u8]> = cmd.tokens[..first_key].to_vec();
            tokens.extend(positions.iter().map(|&p| keys[p]));
            let part = g.add_part(positions, self.at.names[server].clone());
            self.counts.fragments += 1;
            if let Err((e, _)) = up.send(server, &text::encode(&tokens, &[]), Tag::Part { id, part }) {
                self.counts.backend_errors += 1;
                complete = g.failed(part, reason(e));
            }
        }
        self.gathered(id, g, complete, reply);
    }

    /// `flush_all`/`verbosity` (`bytes`) to every live server, one reply (none for
    /// `noreply`; a binary response for a binary request); with `stats_group`, a `stats
    /// <group>` whose replies are merged per server.
    fn broadcast(
        &mut self,
        bytes: &[u8],
        noreply: bool,
        stats_group: bool,
        binary: Option<Pending>,
        reply: &mut Reply<'_>,
        up: &mut dyn Upstream<Tag>,
    ) {
        let waiter = if noreply {
            None
        } else if let Some(slot) = reply.defer() {
            Some(Waiter { slot, binary })
        } else {
            let form = binary.as_ref().map_or(Form::Text, Form::Binary);
            let _ = reply.send(&form.error(UpstreamError::BackendDown));
            return;
        };
        let mut g = match (stats_group, waiter) {
            (true, Some(w)) => Gather::stats(w),
            (_, waiter) => Gather::all_ok(waiter),
        };
        let id = self.next_id;
        self.next_id += 1;
        let mut complete = false;
        for server in (0..self.at.live.len()).filter(|&i| self.at.live[i]) {
            let part = g.add_part(Vec::new(), self.at.names[server].clone());
            self.counts.fragments += 1;
            if let Err((e, _)) = up.send(server, bytes, Tag::Part { id, part }) {
                self.counts.backend_errors += 1;
                complete = g.failed(part, reason(e));
            }
        }
        if !self.at.live.iter().any(|&l| l) {
            let part = g.add_part(Vec::new(), "(none)".into());
            complete = g.failed(part, "down");
        }
        self.gathered(id, g, complete, reply);
    }

    /// A split command whose parts are sent: kept for their replies, or answered now when
    /// every part already failed.
    fn gathered(&mut self, id: u64, g: Gather<Waiter>, complete: bool, reply: &mut Reply<'_>) {
        if !complete {
            self.gathers.insert(id, g);
            return;
        }
        if let (Some(w), bytes) = g.finish() {
            if reply.undefer(w.slot).is_ok() {
                if let Some(r) = merged_reply(w.binary.as_ref(), bytes) {
                    let _ = reply.send(&r);
                }
            }
        }
    }

    fn binary(&mut self, req: &[u8], reply: &mut Reply<'_>, up: &mut dyn Upstream<Tag>) {
        match binary::plan(req) {
            Plan::Local(bytes) => {
                self.counts.local += 1;
                let _ = reply.send(&bytes);
            }
            Plan::Quit(answer) => {
                self.counts.local += 1;
                if let Some(bytes) = answer {
                    let _ = reply.send(&bytes);
                }
                reply.close();
            }
            Plan::Stats(p) => {
                self.counts.local += 1;
                let _ = reply.send(&binary::stats(&p, &self.stats(up)));
            }
            Plan::Broadcast { text, pending } => self.broadcast(&text, false, false, Some(pending), reply, up),
            Plan::Version(p) => {
                let server = self.any_server(up);
                let form = p.clone();
                self.send_one(server, b"version\r\n", (reply, up), Form::Binary(&form), |s| Tag::Binary(s, p));
            }
            Plan::Keyed { key, text, pending } => {
                let server = self.at.selector.server_for(&key);
                let form = pending.clone();
                self.send_one(server, &text, (reply, up), Form::Binary(&form), |s| Tag::Binary(s, pending));
            }
        }
    }

    /// The pool's `stats`, answered by the proxy (this engine's counters).
    fn stats(&self, up: &dyn Upstream<Tag>) -> Vec<(String, String)> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut s: Vec<(String, String)> = vec![
            ("pid".into(), std::process::id().to_string()),
            ("uptime".into(), self.started.elapsed().as_secs().to_string()),
            ("time".into(), now.to_string()),
            ("version".into(), concat!("ukcm-proxy-", env!("CARGO_PKG_VERSION")).into()),
            ("pool".into(), self.at.pool.name.clone()),
            ("servers".into(), self.at.names.len().to_string()),
        ];
        for (i, name) in self.at.names.iter().enumerate() {
            let state = if up.is_ejected(i) {
                "ejected"
            } else if up.is_up(i) {
                "up"
            } else {
                "connecting"
            };
            s.push((format!("server:{name}"), state.into()));
        }
        s.push(("cmd_total".into(), self.counts.requests.to_string()));
        s.push(("cmd_local".into(), self.counts.local.to_string()));
        s.push(("backend_errors".into(), self.counts.backend_errors.to_string()));
        s
    }
}

impl Forward for MemcacheForward {
    type Tag = Tag;

    fn counts(&self) -> ukcm::ForwardStats {
        ukcm::ForwardStats { local: self.counts.local, fragments: self.counts.fragments, ..Default::default() }
    }

    fn request(&mut self, req: &[u8], reply: &mut Reply<'_>, up: &mut dyn Upstream<Tag>) {
        self.counts.requests += 1;
        self.at.sync_live(up);
        if req.first() == Some(&ukcm_parsers::memcache_any::REQUEST_MAGIC) {
            return self.binary(req, reply, up);
        }
        match text::command(req) {
            Ok(cmd) => self.text(cmd, reply, up),
            Err(answer) => {
                self.counts.local += 1;
                let _ = reply.send(answer);
            }
        }
    }

    fn response(&mut self, tag: Tag, resp: Result<&[u8], UpstreamError>, clients: &mut dyn Clients) {
        if resp.is_err() {
            self.counts.backend_errors += 1;
        }
        match (tag, resp) {
            (Tag::Drop, _) => {}
            (Tag::Pass(slot), Ok(bytes)) => {
                let _ = clients.reply(slot, bytes);
            }
            // The reply the client asked not to see: dropping the slot releases its place.
            (Tag::Quiet(_, hide), Ok(bytes)) if hide.hides(bytes) => {}
            (Tag::Quiet(slot, _), Ok(bytes)) => {
                let _ = clients.reply(slot, bytes);
            }
            (Tag::Binary(slot, p), Ok(bytes)) => {
                if let Some(r) = binary::response(&p, bytes) {
                    let _ = clients.reply(slot, &r);
                }
            }
            (Tag::Binary(slot, p), Err(e)) => {
                let _ = clients.reply(slot, &binary_error(&p, e));
            }
            (Tag::Pass(slot) | Tag::Quiet(slot, _), Err(e)) => {
                let _ = clients.reply(slot, &text_error(e));
            }
            (Tag::Part { id, part }, resp) => {
                let Some(g) = self.gathers.get_mut(&id) else { return };
                let complete = match resp {
                    Ok(bytes) => g.reply_for(part, bytes),
                    Err(e) => g.failed(part, reason(e)),
                };
                if complete {
                    if let Some((Some(w), bytes)) = self.gathers.remove(&id).map(Gather::finish) {
                        if let Some(r) = merged_reply(w.binary.as_ref(), bytes) {
                            let _ = clients.reply(w.slot, &r);
                        }
                    }
                }
            }
        }
    }
}
