//! The memcached text protocol as the proxy reads it: a client command's tokens, what kind
//! of command it is and whether it is well-formed enough to forward, the rewrite that
//! strips `noreply` / the meta `q` flag, and the pieces of a backend reply the proxy needs
//! (the `VALUE` blocks of a `get`, the code and flags of a meta reply).
//!
//! Forwarding relies on one rule: every command sent to a backend gets exactly one reply
//! from it (the pool matches replies to requests in order). So commands memcached would
//! answer with nothing (`noreply`, `q`) go without that marker and their reply is dropped
//! by the proxy, and commands memcached would answer twice or not at all (a data block not
//! ended by CRLF, a missing argument, an unknown command) are answered here and never sent.

/// memcached's longest key.
pub const MAX_KEY: usize = 250;

/// What the proxy does with a text command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One key at token `key`: sent to that key's server.
    Keyed { key: usize },
    /// `get`/`gets` (keys from token 1) and `gat`/`gats` (keys from token 2): split per
    /// server, merged in key order.
    Get { first_key: usize },
    /// `flush_all`/`verbosity`: sent to every server, one reply.
    Broadcast,
    /// `version`: one server's answer (the pool runs one memcached version).
    Version,
    /// `quit`: no reply; the connection closes after the replies before it.
    Quit,
    /// `stats`: answered by the proxy for the pool.
    Stats,
    /// `stats <group> …` (`slabs`, `items`, `settings`, `sizes`, `conns`, `reset`, …): sent to
    /// every server, the replies merged with each `STAT` name prefixed by its server's name.
    StatsOf,
    /// `mn`: answered by the proxy, in order.
    MetaNoop,
}

/// Which backend replies a quiet command hides (what memcached 1.6 leaves out for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hide {
    /// Classic `noreply`: every reply.
    All,
    /// `mg … q`: the miss (`EN`).
    Miss,
    /// `ms`/`md`/`ma … q`: the success (`HD`, or `ma`'s value).
    Success,
}

impl Hide {
    /// Whether the backend's `reply` is one the client asked not to see.
    pub fn hides(self, reply: &[u8]) -> bool {
        // The reply's code: its first word (flags such as `O`/`k` may follow).
        let code = reply.split(|&b| b == b' ' || b == b'\r').next().unwrap_or(b"");
        match self {
            Hide::All => true,
            Hide::Miss => code == b"EN",
            Hide::Success => code == b"HD" || code == b"VA",
        }
    }
}

/// A parsed client command.
#[derive(Debug)]
pub struct Command<'a> {
    pub kind: Kind,
    /// The command line's tokens (without CRLF).
    pub tokens: Vec<&'a [u8]>,
    /// The data block, CRLF included (storage commands and `ms`), else empty.
    pub data: &'a [u8],
    /// Set when the client asked not to see (some) replies; the marker is then left out of
    /// [`Command::forwarded`].
    pub quiet: Option<Hide>,
}

/// Reply for an unknown command or a wrong number of arguments (memcached's).
pub const ERROR: &[u8] = b"ERROR\r\n";
const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
const BAD_CHUNK: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";

fn numeric(t: &[u8]) -> bool {
    !t.is_empty() && t.len() <= 20 && t.iter().all(u8::is_ascii_digit)
}

fn signed(t: &[u8]) -> bool {
    numeric(t.strip_prefix(b"-").unwrap_or(t))
}

/// Parses one client command (a whole message as the `memcache-text` parser delineates
/// it). `Err` holds the reply the client gets instead (the command is not forwarded).
pub fn command(req: &[u8]) -> Result<Command<'_>, &'static [u8]> {
    let line_end = req.windows(2).position(|w| w == b"\r\n").ok_or(BAD_FORMAT)?;
    let (line, data) = (&req[..line_end], &req[line_end + 2..]);
    let mut tokens: Vec<&[u8]> = line.split(|&b| b == b' ').filter(|t| !t.is_empty()).collect();
    let name = *tokens.first().ok_or(ERROR)?;
    // `noreply` is a key to the get family (memcached reads it so too).
    let takes_noreply = !matches!(name, b"get" | b"gets" | b"gat" | b"gats") && name.len() > 2;
    let noreply = takes_noreply && tokens.len() > 1 && tokens.last() == Some(&&b"noreply"[..]);
    let n = tokens.len() - usize::from(noreply);
    let (kind, ok) = match name {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" => {
            (Kind::Keyed { key: 1 }, n == 5 && numeric(tokens[2]) && signed(tokens[3]) && numeric(tokens[4]))
        }
        b"cas" => (
            Kind::Keyed { key: 1 },
            n == 6 && numeric(tokens[2]) && signed(tokens[3]) && tokens[4..6].iter().all(|t| numeric(t)),
        ),
        b"delete" => (Kind::Keyed { key: 1 }, n == 2 || (n == 3 && tokens[2] == b"0")),
        b"incr" | b"decr" => (Kind::Keyed { key: 1 }, n == 3 && numeric(tokens[2])),
        b"touch" => (Kind::Keyed { key: 1 }, n == 3 && signed(tokens[2])),
        b"get" | b"gets" => (Kind::Get { first_key: 1 }, n >= 2),
        b"gat" | b"gats" => (Kind::Get { first_key: 2 }, n >= 3 && signed(tokens[1])),
        b"flush_all" => (Kind::Broadcast, n <= 2 && tokens[1..n].iter().all(|t| signed(t))),
        b"verbosity" => (Kind::Broadcast, n == 2 && numeric(tokens[1])),
        b"version" => (Kind::Version, n == 1),
        b"quit" => (Kind::Quit, true),
        b"stats" if n == 1 => (Kind::Stats, true),
        b"stats" => (Kind::StatsOf, true),
        b"mn" => (Kind::MetaNoop, n == 1),
        b"mg" | b"md" | b"ma" | b"me" => (Kind::Keyed { key: 1 }, tokens.len() >= 2),
        b"ms" => (Kind::Keyed { key: 1 }, tokens.len() >= 3 && numeric(tokens[2])),
        _ => return Err(ERROR),
    };
    if !ok {
        return Err(ERROR);
    }
    if !data.is_empty() && !data.ends_with(b"\r\n") {
        return Err(BAD_CHUNK);
    }
    let quiet = match name {
        b"mg" | b"ms" | b"md" | b"ma" => {
            let at = tokens.iter().skip(2).position(|t| *t == b"q").map(|p| p + 2);
            at.map(|at| {
                tokens.remove(at);
                if name == b"mg" {
                    Hide::Miss
                } else {
                    Hide::Success
                }
            })
        }
        _ if noreply => {
            tokens.pop();
            Some(Hide::All)
        }
        _ => None,
    };
    let cmd = Command { kind, tokens, data, quiet };
    match kind {
        Kind::Keyed { .. } | Kind::Get { .. } if cmd.keys().any(|k| k.len() > MAX_KEY) => Err(BAD_FORMAT),
        _ => Ok(cmd),
    }
}

impl<'a> Command<'a> {
    /// The command's keys (as hashed: a meta key given in base64 with the `b` flag is
    /// decoded first, so it lands where the same key sent plainly lands).
    pub fn keys(&self) -> Box<dyn Iterator<Item = std::borrow::Cow<'a, [u8]>> + '_> {
        match self.kind {
            Kind::Keyed { key } => {
                let k = self.tokens[key];
                let meta = self.tokens[0].len() == 2;
                let b64 = meta && self.tokens[2..].iter().any(|t| *t == b"b");
                let k = match b64.then(|| base64_decode(k)).flatten() {
                    Some(raw) => std::borrow::Cow::Owned(raw),
                    None => std::borrow::Cow::Borrowed(k),
                };
                Box::new(std::iter::once(k))
            }
            Kind::Get { first_key } => {
                Box::new(self.tokens[first_key..].iter().map(|k| std::borrow::Cow::Borrowed(*k)))
            }
            _ => Box::new(std::iter::empty()),
        }
    }

    /// The command as a backend gets it: tokens joined by one blank (without the quiet
    /// marker), CRLF, the data block.
    pub fn forwarded(&self) -> Vec<u8> {
        encode(&self.tokens, self.data)
    }
}

/// `tokens` as a command line, then `data` (CRLF included) if any.
pub fn encode(tokens: &[&[u8]], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tokens.iter().map(|t| t.len() + 1).sum::<usize>() + 2 + data.len());
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(t);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out
}

/// One `VALUE` block of a get reply: the key and the whole block (line, data, CRLF).
#[derive(Debug, PartialEq, Eq)]
pub struct Value<'a> {
    pub key: &'a [u8],
    pub block: &'a [u8],
}

/// The `VALUE` blocks of a get reply up to its `END`; `None` if `reply` is not one (an
/// error line, say).
pub fn get_values(reply: &[u8]) -> Option<Vec<Value<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let rest = reply.get(at..)?;
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = &rest[..line_end];
        if line == b"END" {
            return (at + line_end + 2 == reply.len()).then_some(out);
        }
        let mut t = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        if t.next() != Some(b"VALUE") {
            return None;
        }
        let key = t.next()?;
        let len: usize = std::str::from_utf8(t.nth(1)?).ok()?.parse().ok()?;
        let end = line_end + 2 + len + 2;
        out.push(Value { key, block: rest.get(..end)? });
        at += end;
    }
}

/// A meta reply: its two-letter code, its flag tokens, and its data (without CRLF; `VA`
/// only).
#[derive(Debug, PartialEq, Eq)]
pub struct Meta<'a> {
    pub code: &'a [u8],
    pub flags: Vec<&'a [u8]>,
    pub data: &'a [u8],
}

impl Meta<'_> {
    /// The value of the flag `f` (`c123` → `123` for `c`).
    pub fn flag(&self, f: u8) -> Option<&[u8]> {
        self.flags.iter().find(|t| t.first() == Some(&f)).map(|t| &t[1..])
    }

    /// The flag `f` as a number.
    pub fn number(&self, f: u8) -> Option<u64> {
        std::str::from_utf8(self.flag(f)?).ok()?.parse().ok()
    }
}

/// Reads a meta reply (`VA <len> <flags>*` with its data, or a code with flags).
pub fn meta(reply: &[u8]) -> Option<Meta<'_>> {
    let line_end = reply.windows(2).position(|w| w == b"\r\n")?;
    let mut t = reply[..line_end].split(|&b| b == b' ').filter(|w| !w.is_empty());
    let code = t.next()?;
    let mut data: &[u8] = &[];
    if code == b"VA" {
        let len: usize = std::str::from_utf8(t.next()?).ok()?.parse().ok()?;
        data = reply.get(line_end + 2..line_end + 2 + len)?;
    }
    Some(Meta { code, flags: t.collect(), data })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (the meta protocol's `b` keys).
pub fn base64_encode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len().div_ceil(3) * 4);
    for c in raw.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding; `None` if `s` is not that.
pub fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, c) in s.chunks(4).enumerate() {
        let last = ci == s.len() / 4 - 1;
        let pad = c.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &b in &c[..4 - pad] {
            n = (n << 6) | B64.iter().position(|&x| x == b)? as u32;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_classified_and_checked() {
        let c = command(b"set k 1 0 2 noreply\r\nhi\r\n").unwrap();
        assert_eq!(c.kind, Kind::Keyed { key: 1 });
        assert_eq!(c.quiet, Some(Hide::All));
        assert_eq!(c.forwarded(), b"set k 1 0 2\r\nhi\r\n");
        let c = command(b"gat 10 a b\r\n").unwrap();
        assert_eq!(c.kind, Kind::Get { first_key: 2 });
        assert_eq!(c.keys().collect::<Vec<_>>(), vec![&b"a"[..], b"b"]);
        let c = command(b"mg k v q f\r\n").unwrap();
        assert_eq!((c.quiet, c.forwarded()), (Some(Hide::Miss), b"mg k v f\r\n".to_vec()));
        let c = command(b"ms k 2 q T5\r\nhi\r\n").unwrap();
        assert_eq!((c.quiet, c.forwarded()), (Some(Hide::Success), b"ms k 2 T5\r\nhi\r\n".to_vec()));
        // A base64 meta key hashes as the key it stands for.
        let c = command(b"mg Zm9vYg== b v\r\n").unwrap();
        assert_eq!(c.keys().next().unwrap().as_ref(), b"foob");
        assert_eq!(command(b"flush_all 0 noreply\r\n").unwrap().kind, Kind::Broadcast);
        let c = command(b"get a noreply\r\n").unwrap();
        assert_eq!((c.quiet, c.keys().count()), (None, 2), "a key named noreply");
        assert!(Hide::Miss.hides(b"EN\r\n") && Hide::Miss.hides(b"EN O12 kfoo\r\n"));
        assert!(!Hide::Miss.hides(b"ENx\r\n") && !Hide::Miss.hides(b"VA 1\r\nx\r\n"));
        assert!(Hide::Success.hides(b"HD O5\r\n") && !Hide::Success.hides(b"NF O5\r\n"));
        assert_eq!(command(b"mn\r\n").unwrap().kind, Kind::MetaNoop);
    }

    #[test]
    fn commands_memcached_would_not_answer_once_are_answered_here() {
        assert_eq!(command(b"bogus\r\n").unwrap_err(), ERROR);
        assert_eq!(command(b"get\r\n").unwrap_err(), ERROR);
        assert_eq!(command(b"incr k\r\n").unwrap_err(), ERROR);
        assert_eq!(command(b"set k 0 0 x\r\n").unwrap_err(), ERROR);
        assert_eq!(command(b"set k 0 0 1\r\nab\r").unwrap_err(), BAD_CHUNK);
        let long = format!("get {}\r\n", "k".repeat(251));
        assert_eq!(command(long.as_bytes()).unwrap_err(), BAD_FORMAT);
        assert_eq!(command(b"stats slabs\r\n").unwrap().kind, Kind::StatsOf);
        assert_eq!(command(b"stats\r\n").unwrap().kind, Kind::Stats);
    }

    #[test]
    fn get_replies_split_into_values() {
        let r = b"VALUE a 0 1\r\nx\r\nVALUE b 5 3 9\r\nEND\r\nEND\r\n";
        let v = get_values(r).unwrap();
        assert_eq!(v.iter().map(|v| v.key).collect::<Vec<_>>(), vec![&b"a"[..], b"b"]);
        assert_eq!(v[1].block, b"VALUE b 5 3 9\r\nEND\r\n");
        assert_eq!(get_values(b"END\r\n").unwrap(), vec![]);
        assert!(get_values(b"SERVER_ERROR x\r\n").is_none());
    }

    #[test]
    fn meta_replies_and_base64() {
        let m = meta(b"VA 2 f5 c77\r\nhi\r\n").unwrap();
        assert_eq!((m.code, m.data, m.number(b'f'), m.number(b'c')), (&b"VA"[..], &b"hi"[..], Some(5), Some(77)));
        assert_eq!(meta(b"HD c9\r\n").unwrap().number(b'c'), Some(9));
        for raw in [&b""[..], b"a", b"ab", b"abc", b"a b\r\n\x00\xff"] {
            assert_eq!(base64_decode(&base64_encode(raw)).as_deref(), Some(raw));
        }
        assert_eq!(base64_encode(b"foob"), b"Zm9vYg==");
        assert!(base64_decode(b"Zm9v=g==").is_none());
    }
}
