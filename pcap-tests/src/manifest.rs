//! The manifest of a fixture: which messages each flow carried, each way.
//!
//! Written by `scripts/capture-fixtures.sh` from Wireshark's dissectors (so an error in our
//! parsers cannot hide in it). Text, one item a line, `#` comments:
//!
//! ```text
//! parser memcached
//! flow 0 10.219.0.2:39460 10.219.0.1:11211      # index client server
//! msg 0 c2s 0 58 6c082d017c14db34                # flow direction index length fnv1a64
//! ```
//!
//! Optional lines:
//!
//! - `parser c2s SPEC` / `parser s2c SPEC`: a parser per direction, for protocols whose two
//!   directions have different grammars (memcached text: `memcache-text`,
//!   `memcache-text-reply`), instead of one `parser SPEC` for both.
//! - `inner SPEC` and `imsg FLOW DIR H2-STREAM INDEX LEN HASH`: messages carried inside the
//!   outer ones: for gRPC over HTTP/2, the gRPC messages in each HTTP/2 stream's DATA
//!   payload (padding removed, DATA frames of the stream concatenated in order).
//! - `unframed FLOW DIR INDEX WHY`: from message INDEX of that direction on, the parser
//!   cannot delineate the stream on its own, for the reason given (an HTTP/1.1 response to
//!   HEAD carries a Content-Length but no body: only the request stream tells). The replay
//!   checks every message before it and that the parser indeed does not deliver message
//!   INDEX as the manifest has it.

use std::fmt;
use std::net::SocketAddrV4;
use std::path::Path;

/// A direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to server (the side that sent the SYN).
    C2s,
    /// Server to client.
    S2c,
}

impl Dir {
    /// Both directions, client's first.
    pub const BOTH: [Dir; 2] = [Dir::C2s, Dir::S2c];

    /// The manifest's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::C2s => "c2s",
            Dir::S2c => "s2c",
        }
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One expected message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgSpec {
    /// Length in bytes, header included.
    pub len: usize,
    /// FNV-1a 64 of the message's bytes.
    pub fnv: u64,
}

/// One TCP flow of the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    /// The side that opened the connection.
    pub client: SocketAddrV4,
    /// The side that accepted it.
    pub server: SocketAddrV4,
    /// Messages client to server, in stream order.
    pub c2s: Vec<MsgSpec>,
    /// Messages server to client, in stream order.
    pub s2c: Vec<MsgSpec>,
    /// Where the parser is known to lose the framing: direction, first message index, why.
    pub unframed: Vec<(Dir, usize, String)>,
    /// Inner messages (see `inner`): direction, HTTP/2 stream id, messages in order.
    pub inner: Vec<(Dir, u32, Vec<MsgSpec>)>,
}

impl FlowSpec {
    /// The messages of one direction.
    pub fn msgs(&self, d: Dir) -> &[MsgSpec] {
        match d {
            Dir::C2s => &self.c2s,
            Dir::S2c => &self.s2c,
        }
    }

    /// The first message of direction `d` the parser is known not to delineate, and why.
    pub fn unframed_from(&self, d: Dir) -> Option<(usize, &str)> {
        self.unframed.iter().find(|u| u.0 == d).map(|u| (u.1, u.2.as_str()))
    }

    /// The message that holds stream byte `offset` of direction `d` and where it starts,
    /// or `None` past the last message.
    pub fn msg_at(&self, d: Dir, offset: u64) -> Option<(usize, u64)> {
        let mut start = 0u64;
        for (i, m) in self.msgs(d).iter().enumerate() {
            if offset < start + m.len as u64 {
                return Some((i, start));
            }
            start += m.len as u64;
        }
        None
    }

    /// `client → server` or `server → client`, for reports.
    pub fn describe(&self, d: Dir) -> String {
        match d {
            Dir::C2s => format!("{} → {}", self.client, self.server),
            Dir::S2c => format!("{} → {}", self.server, self.client),
        }
    }
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The `parser_from_spec` spec of the client's messages (and of the server's, unless
    /// `s2c_parser` says otherwise).
    pub parser: String,
    /// The server's messages' parser, where it is not `parser`.
    pub s2c_parser: Option<String>,
    /// The parser of the messages inside the outer ones (`imsg` lines), if any.
    pub inner: Option<String>,
    /// The flows, in the capture's order (Wireshark's `tcp.stream`).
    pub flows: Vec<FlowSpec>,
}

impl Manifest {
    /// The parser spec of direction `d`.
    pub fn parser_for(&self, d: Dir) -> &str {
        match (d, &self.s2c_parser) {
            (Dir::S2c, Some(p)) => p,
            _ => &self.parser,
        }
    }

    /// The same manifest with only flow `fi` (as flow 0).
    pub fn only_flow(&self, fi: usize) -> Manifest {
        Manifest { flows: vec![self.flows[fi].clone()], ..self.clone() }
    }

    /// Reads and parses a manifest file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Manifest, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses manifest text.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut parser = None;
        let mut s2c_parser = None;
        let mut inner = None;
        let mut flows: Vec<FlowSpec> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
            let w: Vec<&str> = line.split_whitespace().collect();
            match w[0] {
                "parser" if w.len() == 2 => parser = Some(w[1].to_string()),
                "parser" if w.len() == 3 && w[1] == "c2s" => parser = Some(w[2].to_string()),
                "parser" if w.len() == 3 && w[1] == "s2c" => s2c_parser = Some(w[2].to_string()),
                "inner" if w.len() == 2 => inner = Some(w[1].to_string()),
                "unframed" if w.len() >= 5 => {
                    let f: usize = w[1].parse().map_err(|_| bad("bad flow index"))?;
                    let d = dir_of(w[2]).ok_or_else(|| bad("direction must be c2s or s2c"))?;
                    let idx: usize = w[3].parse().map_err(|_| bad("bad message index"))?;
                    let flow = flows.get_mut(f).ok_or_else(|| bad("unframed of an undeclared flow"))?;
                    if idx >= flow.msgs(d).len() {
                        return Err(bad("unframed names a message the flow does not have"));
                    }
                    flow.unframed.push((d, idx, w[4..].join(" ")));
                }
                "imsg" if w.len() == 7 => {
                    let f: usize = w[1].parse().map_err(|_| bad("bad flow index"))?;
                    let d = dir_of(w[2]).ok_or_else(|| bad("direction must be c2s or s2c"))?;
                    let sid: u32 = w[3].parse().map_err(|_| bad("bad stream id"))?;
                    let idx: usize = w[4].parse().map_err(|_| bad("bad message index"))?;
                    let len = w[5].parse().map_err(|_| bad("bad length"))?;
                    let fnv = u64::from_str_radix(w[6], 16).map_err(|_| bad("bad hash"))?;
                    let flow = flows.get_mut(f).ok_or_else(|| bad("imsg of an undeclared flow"))?;
                    if !flow.inner.iter().any(|i| i.0 == d && i.1 == sid) {
                        flow.inner.push((d, sid, Vec::new()));
                    }
                    let list = &mut flow.inner.iter_mut().find(|i| i.0 == d && i.1 == sid).expect("just added").2;
                    if idx != list.len() {
                        return Err(bad("inner messages must be numbered 0, 1, 2, ... per stream"));
                    }
                    list.push(MsgSpec { len, fnv });
                }
                "flow" if w.len() == 4 => {
                    let idx: usize = w[1].parse().map_err(|_| bad("bad flow index"))?;
                    if idx != flows.len() {
                        return Err(bad("flows must be numbered 0, 1, 2, ... in order"));
                    }
                    let client = w[2].parse().map_err(|_| bad("bad client address"))?;
                    let server = w[3].parse().map_err(|_| bad("bad server address"))?;
                    flows.push(FlowSpec {
                        client,
                        server,
                        c2s: Vec::new(),
                        s2c: Vec::new(),
                        unframed: Vec::new(),
                        inner: Vec::new(),
                    });
                }
                "msg" if w.len() == 6 => {
                    let f: usize = w[1].parse().map_err(|_| bad("bad flow index"))?;
                    let flow = flows.get_mut(f).ok_or_else(|| bad("message of an undeclared flow"))?;
                    let list = match w[2] {
                        "c2s" => &mut flow.c2s,
                        "s2c" => &mut flow.s2c,
                        _ => return Err(bad("direction must be c2s or s2c")),
                    };
                    let idx: usize = w[3].parse().map_err(|_| bad("bad message index"))?;
                    if idx != list.len() {
                        return Err(bad("messages must be numbered 0, 1, 2, ... in order"));
                    }
                    let len = w[4].parse().map_err(|_| bad("bad length"))?;
                    let fnv = u64::from_str_radix(w[5], 16).map_err(|_| bad("bad hash"))?;
                    list.push(MsgSpec { len, fnv });
                }
                _ => return Err(bad("unknown line")),
            }
        }
        let parser = parser.ok_or("no `parser` line")?;
        if flows.iter().any(|f| !f.inner.is_empty()) && inner.is_none() {
            return Err("`imsg` lines without an `inner` parser".into());
        }
        Ok(Manifest { parser, s2c_parser, inner, flows })
    }
}

fn dir_of(w: &str) -> Option<Dir> {
    match w {
        "c2s" => Some(Dir::C2s),
        "s2c" => Some(Dir::S2c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_locates_messages() {
        let m = Manifest::parse(
            "# c\nparser dns\nflow 0 10.0.0.2:4000 10.0.0.1:53\nmsg 0 c2s 0 30 00000000000000ff\n\
             msg 0 c2s 1 10 0000000000000001\nmsg 0 s2c 0 50 00000000000000aa\n",
        )
        .unwrap();
        assert_eq!(m.parser, "dns");
        let f = &m.flows[0];
        assert_eq!(f.c2s, vec![MsgSpec { len: 30, fnv: 0xff }, MsgSpec { len: 10, fnv: 1 }]);
        assert_eq!(f.msg_at(Dir::C2s, 0), Some((0, 0)));
        assert_eq!(f.msg_at(Dir::C2s, 29), Some((0, 0)));
        assert_eq!(f.msg_at(Dir::C2s, 30), Some((1, 30)));
        assert_eq!(f.msg_at(Dir::C2s, 40), None);
        assert_eq!(f.describe(Dir::S2c), "10.0.0.1:53 → 10.0.0.2:4000");
    }

    #[test]
    fn per_direction_parsers_inner_messages_and_unframed() {
        let m = Manifest::parse(
            "parser c2s memcache-text\nparser s2c memcache-text-reply\ninner grpc\n\
             flow 0 10.0.0.2:4000 10.0.0.1:80\nmsg 0 c2s 0 30 ff\nmsg 0 s2c 0 5 1\nmsg 0 s2c 1 7 2\n\
             unframed 0 s2c 1 a response to HEAD\nimsg 0 c2s 3 0 5 aa\nimsg 0 c2s 3 1 6 bb\nimsg 0 s2c 3 0 5 cc\n",
        )
        .unwrap();
        assert_eq!(m.parser_for(Dir::C2s), "memcache-text");
        assert_eq!(m.parser_for(Dir::S2c), "memcache-text-reply");
        assert_eq!(m.inner.as_deref(), Some("grpc"));
        let f = &m.flows[0];
        assert_eq!(f.unframed_from(Dir::S2c), Some((1, "a response to HEAD")));
        assert_eq!(f.unframed_from(Dir::C2s), None);
        assert_eq!(f.inner[0], (Dir::C2s, 3, vec![MsgSpec { len: 5, fnv: 0xaa }, MsgSpec { len: 6, fnv: 0xbb }]));
        assert_eq!(f.inner[1], (Dir::S2c, 3, vec![MsgSpec { len: 5, fnv: 0xcc }]));
        let e = Manifest::parse("parser x\nflow 0 1.2.3.4:1 1.2.3.4:2\nmsg 0 c2s 0 1 2\nunframed 0 c2s 1 no\n")
            .unwrap_err();
        assert!(e.contains("line 4: unframed names a message the flow does not have"), "{e}");
        let e = Manifest::parse("parser x\nflow 0 1.2.3.4:1 1.2.3.4:2\nimsg 0 c2s 1 0 1 2\n").unwrap_err();
        assert!(e.contains("without an `inner` parser"), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        let e = Manifest::parse("parser x\nmsg 0 c2s 0 1 2\n").unwrap_err();
        assert!(e.starts_with("line 2: message of an undeclared flow"), "{e}");
        let e = Manifest::parse("parser x\nflow 0 a b\n").unwrap_err();
        assert!(e.contains("line 2: bad client address"), "{e}");
        assert!(Manifest::parse("flow 0 1.2.3.4:1 1.2.3.4:2\n").unwrap_err().contains("parser"));
    }

    #[test]
    fn committed_manifests_parse() {
        for name in crate::FIXTURES {
            let m = Manifest::load(&crate::fixtures_dir().join(format!("{name}.manifest"))).unwrap();
            assert!(!m.flows.is_empty(), "{name}");
            assert!(m.flows.iter().all(|f| !f.c2s.is_empty()), "{name}");
        }
    }
}
