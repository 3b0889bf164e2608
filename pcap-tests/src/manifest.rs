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
}

impl FlowSpec {
    /// The messages of one direction.
    pub fn msgs(&self, d: Dir) -> &[MsgSpec] {
        match d {
            Dir::C2s => &self.c2s,
            Dir::S2c => &self.s2c,
        }
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
    /// The `parser_from_spec` name of the protocol.
    pub parser: String,
    /// The flows, in the capture's order (Wireshark's `tcp.stream`).
    pub flows: Vec<FlowSpec>,
}

impl Manifest {
    /// Reads and parses a manifest file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Manifest, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses manifest text.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut parser = None;
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
                "flow" if w.len() == 4 => {
                    let idx: usize = w[1].parse().map_err(|_| bad("bad flow index"))?;
                    if idx != flows.len() {
                        return Err(bad("flows must be numbered 0, 1, 2, ... in order"));
                    }
                    let client = w[2].parse().map_err(|_| bad("bad client address"))?;
                    let server = w[3].parse().map_err(|_| bad("bad server address"))?;
                    flows.push(FlowSpec { client, server, c2s: Vec::new(), s2c: Vec::new() });
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
        Ok(Manifest { parser, flows })
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
