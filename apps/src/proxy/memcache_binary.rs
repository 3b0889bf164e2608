//! Binary-protocol clients in front of text-protocol backends: each binary request becomes
//! one meta command (memcached ≥ 1.6) and its reply becomes the binary response, with the
//! request's opcode and `opaque`, the item's flags and CAS.
//!
//! Why translate rather than keep binary backend connections: a backend connection speaks
//! one protocol, and the pool matches replies in order per connection; translating keeps one
//! pool and one reply matcher, and meta commands carry everything binary requests do
//! (flags, CAS in and out, add/replace/append/prepend modes, incr with an initial value and
//! expiry, touch). Keys that are not valid text keys (blanks, control bytes) travel in
//! base64 with the meta `b` flag, and are hashed as their raw bytes, like a text client's.
//!
//! Quiet requests (`getq`, `setq`, …) are sent in their ordinary form (so the backend
//! answers exactly once) and the answer the client did not ask for is dropped here.

use super::memcache_text::{base64_encode, encode, meta, MAX_KEY};

/// Header length of every packet.
pub const HEADER: usize = 24;
const RESPONSE_MAGIC: u8 = 0x81;

/// Response statuses used here (the protocol's numbers).
pub mod status {
    pub const OK: u16 = 0x0000;
    pub const NOT_FOUND: u16 = 0x0001;
    pub const EXISTS: u16 = 0x0002;
    pub const TOO_LARGE: u16 = 0x0003;
    pub const INVALID: u16 = 0x0004;
    pub const NOT_STORED: u16 = 0x0005;
    pub const NON_NUMERIC: u16 = 0x0006;
    pub const UNKNOWN_COMMAND: u16 = 0x0081;
    pub const OUT_OF_MEMORY: u16 = 0x0082;
    pub const NOT_SUPPORTED: u16 = 0x0083;
    pub const INTERNAL: u16 = 0x0084;
    pub const TEMPORARY_FAILURE: u16 = 0x0086;
}

/// Opcodes.
mod op {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCR: u8 = 0x05;
    pub const DECR: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCRQ: u8 = 0x15;
    pub const DECRQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// What a forwarded binary request needs to become a response again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The request's opcode (quiet variants included).
    pub op: u8,
    pub opaque: u32,
    /// The key, for responses that carry it (`getk`, `gatk`), else empty.
    pub key: Vec<u8>,
}

/// What to do with one binary request.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Send `text` to the server of `key`; the reply goes through [`response`].
    Keyed { key: Vec<u8>, text: Vec<u8>, pending: Pending },
    /// Send `version` to any server.
    Version(Pending),
    /// Send `text` (`flush_all`, `verbosity`) to every server; one response, from
    /// [`broadcast_response`].
    Broadcast { text: Vec<u8>, pending: Pending },
    /// `stat` (all of them): answered by the proxy with [`stats`].
    Stats(Pending),
    /// Answer now.
    Local(Vec<u8>),
    /// `quit` (with its answer) or `quitq` (none): the connection closes after its replies.
    Quit(Option<Vec<u8>>),
}

/// A response packet.
pub fn packet(op: u8, status: u16, opaque: u32, cas: u64, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = extras.len() + key.len() + value.len();
    let mut out = Vec::with_capacity(HEADER + body);
    out.extend_from_slice(&[RESPONSE_MAGIC, op]);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(&[extras.len() as u8, 0]);
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// An error response with its message as the value (as memcached sends them).
pub fn error(op: u8, opaque: u32, status: u16, msg: &str) -> Vec<u8> {
    packet(op, status, opaque, 0, &[], &[], msg.as_bytes())
}

fn is_quiet(op: u8) -> bool {
    matches!(
        op,
        op::GETQ
            | op::GETKQ
            | op::GATQ
            | op::GATKQ
            | op::SETQ
            | op::ADDQ
            | op::REPLACEQ
            | op::DELETEQ
            | op::INCRQ
            | op::DECRQ
            | op::APPENDQ
            | op::PREPENDQ
    )
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    (u64::from(u32_at(b, at)) << 32) | u64::from(u32_at(b, at + 4))
}

/// A key as a meta command carries it: as is, or base64 with the `b` flag.
fn meta_key(key: &[u8]) -> (Vec<u8>, bool) {
    if key.len() <= MAX_KEY && key.iter().all(|&b| b.is_ascii_graphic()) {
        (key.to_vec(), false)
    } else {
        (base64_encode(key), true)
    }
}

/// Plans one binary request (a whole packet, as the `memcached` parser delineates it).
pub fn plan(req: &[u8]) -> Plan {
    let (o, opaque) = (req[1], u32_at(req, 12));
    let key_len = usize::from(u16::from_be_bytes([req[2], req[3]]));
    let extras_len = usize::from(req[4]);
    let cas = u64_at(req, 16);
    let extras = &req[HEADER..HEADER + extras_len];
    let key = &req[HEADER + extras_len..HEADER + extras_len + key_len];
    let value = &req[HEADER + extras_len + key_len..];
    let invalid = || Plan::Local(error(o, opaque, status::INVALID, "Invalid arguments"));
    let keep_key = matches!(o, op::GETK | op::GETKQ | op::GATK | op::GATKQ);
    let pending = Pending { op: o, opaque, key: if keep_key { key.to_vec() } else { Vec::new() } };
    let (mkey, b64) = meta_key(key);
    let mut t: Vec<Vec<u8>> = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    let keyed = matches!(
        o,
        op::GET..=op::DECR | op::GETQ | op::GETK..=op::PREPEND | op::SETQ..=op::DECRQ | op::APPENDQ..=op::PREPENDQ
    ) || matches!(o, op::TOUCH..=op::GATQ | op::GATK | op::GATKQ);
    if keyed && (key.is_empty() || key.len() > MAX_KEY) {
        return invalid();
    }
    let cas_flag = |t: &mut Vec<Vec<u8>>| {
        if cas != 0 {
            t.push(format!("C{cas}").into_bytes());
        }
    };
    match o {
        op::NOOP => return Plan::Local(packet(o, status::OK, opaque, 0, &[], &[], &[])),
        op::QUIT => return Plan::Quit(Some(packet(o, status::OK, opaque, 0, &[], &[], &[]))),
        op::QUITQ => return Plan::Quit(None),
        op::VERSION => return Plan::Version(pending),
        op::STAT if key.is_empty() => return Plan::Stats(pending),
        op::STAT => return Plan::Local(error(o, opaque, status::NOT_SUPPORTED, "Not supported")),
        op::FLUSH | op::FLUSHQ if extras_len == 0 || extras_len == 4 => {
            let text = match extras_len {
                4 => format!("flush_all {}\r\n", u32_at(extras, 0)),
                _ => "flush_all\r\n".to_owned(),
            };
            return Plan::Broadcast { text: text.into_bytes(), pending };
        }
        op::VERBOSITY if extras_len == 4 => {
            let text = format!("verbosity {}\r\n", u32_at(extras, 0)).into_bytes();
            return Plan::Broadcast { text, pending };
        }
        op::FLUSH | op::FLUSHQ | op::VERBOSITY => return invalid(),
        op::GET | op::GETQ | op::GETK | op::GETKQ => {
            if extras_len != 0 || !value.is_empty() {
                return invalid();
            }
            t.extend([b"mg".to_vec(), mkey, b"v".to_vec(), b"f".to_vec(), b"c".to_vec()]);
        }
        op::GAT | op::GATQ | op::GATK | op::GATKQ | op::TOUCH => {
            if extras_len != 4 || !value.is_empty() {
                return invalid();
            }
            t.extend([b"mg".to_vec(), mkey, format!("T{}", u32_at(extras, 0)).into_bytes()]);
            if o != op::TOUCH {
                t.push(b"v".to_vec());
            }
            t.extend([b"f".to_vec(), b"c".to_vec()]);
        }
        op::SET | op::SETQ | op::ADD | op::ADDQ | op::REPLACE | op::REPLACEQ => {
            if extras_len != 8 {
                return invalid();
            }
            let mode = match o {
                op::SET | op::SETQ => "MS",
                op::ADD | op::ADDQ => "ME",
                _ => "MR",
            };
            t.extend([b"ms".to_vec(), mkey, value.len().to_string().into_bytes()]);
            t.push(format!("F{}", u32_at(extras, 0)).into_bytes());
            t.push(format!("T{}", u32_at(extras, 4)).into_bytes());
            t.push(mode.into());
            cas_flag(&mut t);
            t.push(b"c".to_vec());
            data = [value, b"\r\n"].concat();
        }
        op::APPEND | op::APPENDQ | op::PREPEND | op::PREPENDQ => {
            if extras_len != 0 {
                return invalid();
            }
            let mode = if matches!(o, op::APPEND | op::APPENDQ) { "MA" } else { "MP" };
            t.extend([b"ms".to_vec(), mkey, value.len().to_string().into_bytes(), mode.into()]);
            cas_flag(&mut t);
            t.push(b"c".to_vec());
            data = [value, b"\r\n"].concat();
        }
        op::DELETE | op::DELETEQ => {
            if extras_len != 0 || !value.is_empty() {
                return invalid();
            }
            t.extend([b"md".to_vec(), mkey]);
            cas_flag(&mut t);
        }
        op::INCR | op::INCRQ | op::DECR | op::DECRQ => {
            if extras_len != 20 || !value.is_empty() {
                return invalid();
            }
            let (delta, initial, exp) = (u64_at(extras, 0), u64_at(extras, 8), u32_at(extras, 16));
            let mode = if matches!(o, op::INCR | op::INCRQ) { "MI" } else { "MD" };
            t.extend([b"ma".to_vec(), mkey, mode.into(), format!("D{delta}").into_bytes()]);
            // 0xffffffff: do not create a missing counter.
            if exp != u32::MAX {
                t.push(format!("N{exp}").into_bytes());
                t.push(format!("J{initial}").into_bytes());
            }
            cas_flag(&mut t);
            t.extend([b"v".to_vec(), b"c".to_vec()]);
        }
        _ => return Plan::Local(error(o, opaque, status::UNKNOWN_COMMAND, "Unknown command")),
    }
    if b64 {
        t.push(b"b".to_vec());
    }
    let tokens: Vec<&[u8]> = t.iter().map(Vec::as_slice).collect();
    Plan::Keyed { key: key.to_vec(), text: encode(&tokens, &data), pending }
}

/// The response to a broadcast from its merged text reply (`OK`, or the error of a
/// server); `None` for a quiet flush that succeeded.
pub fn broadcast_response(p: &Pending, merged: &[u8]) -> Option<Vec<u8>> {
    if merged == b"OK\r\n" {
        return (p.op != op::FLUSHQ).then(|| packet(p.op, status::OK, p.opaque, 0, &[], &[], &[]));
    }
    let msg = String::from_utf8_lossy(merged.strip_suffix(b"\r\n").unwrap_or(merged)).into_owned();
    Some(error(p.op, p.opaque, status::TEMPORARY_FAILURE, &msg))
}

/// A `stat` response: one packet per statistic (name as key, value as value), then the
/// empty one that ends it.
pub fn stats(p: &Pending, stats: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in stats {
        out.extend(packet(p.op, status::OK, p.opaque, 0, &[], k.as_bytes(), v.as_bytes()));
    }
    out.extend(packet(p.op, status::OK, p.opaque, 0, &[], &[], &[]));
    out
}

/// The binary response to `p`'s request from the backend's text `reply`; `None` when a
/// quiet request's answer is one the client did not ask for.
pub fn response(p: &Pending, reply: &[u8]) -> Option<Vec<u8>> {
    let quiet = is_quiet(p.op);
    let ok = |cas: u64, extras: &[u8], value: &[u8]| packet(p.op, status::OK, p.opaque, cas, extras, &p.key, value);
    let fail = |st: u16, msg: &str| Some(error(p.op, p.opaque, st, msg));
    if p.op == op::VERSION {
        return match reply.strip_prefix(b"VERSION ").and_then(|r| r.strip_suffix(b"\r\n")) {
            Some(v) => Some(ok(0, &[], v)),
            None => fail(status::INTERNAL, "unexpected reply to version"),
        };
    }
    let Some(m) = meta(reply) else { return fail(status::INTERNAL, "unexpected backend reply") };
    let cas = m.number(b'c').unwrap_or(0);
    match m.code {
        b"VA" | b"HD" => {
            if quiet && !matches!(p.op, op::GETQ | op::GETKQ | op::GATQ | op::GATKQ) {
                return None; // a quiet update succeeded
            }
            Some(match p.op {
                op::INCR | op::INCRQ | op::DECR | op::DECRQ => {
                    let n: u64 = std::str::from_utf8(m.data).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                    ok(cas, &[], &n.to_be_bytes())
                }
                op::GET | op::GETQ | op::GETK | op::GETKQ | op::GAT | op::GATQ | op::GATK | op::GATKQ | op::TOUCH => {
                    let flags = m.number(b'f').unwrap_or(0) as u32;
                    ok(cas, &flags.to_be_bytes(), m.data)
                }
                _ => ok(cas, &[], &[]),
            })
        }
        b"EN" | b"NF" => {
            if matches!(p.op, op::GETQ | op::GETKQ | op::GATQ | op::GATKQ) {
                return None; // a quiet get missed
            }
            if matches!(p.op, op::GETK | op::GATK) {
                return Some(packet(p.op, status::NOT_FOUND, p.opaque, 0, &[], &p.key, &[]));
            }
            fail(status::NOT_FOUND, "Not found")
        }
        b"EX" => fail(status::EXISTS, "Data exists for key."),
        b"NS" => match p.op {
            op::ADD | op::ADDQ => fail(status::EXISTS, "Data exists for key."),
            op::REPLACE | op::REPLACEQ => fail(status::NOT_FOUND, "Not found"),
            _ => fail(status::NOT_STORED, "Not stored."),
        },
        _ if reply.starts_with(b"CLIENT_ERROR cannot increment") => {
            fail(status::NON_NUMERIC, "Non-numeric server-side value for incr or decr")
        }
        _ if reply.starts_with(b"SERVER_ERROR object too large") => fail(status::TOO_LARGE, "Too large."),
        _ if reply.starts_with(b"SERVER_ERROR out of memory") => fail(status::OUT_OF_MEMORY, "Out of memory"),
        _ if reply.starts_with(b"CLIENT_ERROR") => fail(status::INVALID, "Invalid arguments"),
        _ => fail(status::INTERNAL, "unexpected backend reply"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(o: u8, opaque: u32, cas: u64, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut p = packet(o, 0, opaque, cas, extras, key, value);
        p[0] = 0x80;
        p
    }

    fn keyed(plan: Plan) -> (Vec<u8>, String, Pending) {
        match plan {
            Plan::Keyed { key, text, pending } => (key, String::from_utf8(text).unwrap(), pending),
            other => panic!("not forwarded: {other:?}"),
        }
    }

    #[test]
    fn requests_become_meta_commands() {
        let (key, text, p) = keyed(plan(&request(op::GETK, 7, 0, &[], b"foo", &[])));
        assert_eq!((key, text.as_str(), p.key), (b"foo".to_vec(), "mg foo v f c\r\n", b"foo".to_vec()));
        let extras = [0, 0, 0, 5, 0, 0, 0, 60];
        let (_, text, _) = keyed(plan(&request(op::ADDQ, 1, 0, &extras, b"k", b"hi")));
        assert_eq!(text, "ms k 2 F5 T60 ME c\r\nhi\r\n");
        let (_, text, _) = keyed(plan(&request(op::SET, 1, 42, &extras, b"k", b"")));
        assert_eq!(text, "ms k 0 F5 T60 MS C42 c\r\n\r\n");
        let mut e = [0u8; 20];
        e[7] = 3;
        e[15] = 10;
        let (_, text, _) = keyed(plan(&request(op::DECR, 1, 0, &e, b"n", &[])));
        assert_eq!(text, "ma n MD D3 N0 J10 v c\r\n");
        e[16..].copy_from_slice(&[0xff; 4]);
        assert_eq!(keyed(plan(&request(op::INCR, 1, 0, &e, b"n", &[]))).1, "ma n MI D3 v c\r\n");
        let (key, text, _) = keyed(plan(&request(op::DELETE, 1, 0, &[], b"a b", &[])));
        assert_eq!((key, text.as_str()), (b"a b".to_vec(), "md YSBi b\r\n"));
        assert!(matches!(plan(&request(op::QUITQ, 1, 0, &[], &[], &[])), Plan::Quit(None)));
        assert!(matches!(plan(&request(op::SET, 1, 0, &[], b"k", b"v")), Plan::Local(_)));
        let unknown = plan(&request(0x20, 9, 0, &[], &[], &[]));
        assert_eq!(unknown, Plan::Local(error(0x20, 9, status::UNKNOWN_COMMAND, "Unknown command")));
        let flush = plan(&request(op::FLUSHQ, 4, 0, &[0, 0, 0, 9], &[], &[]));
        let pending = Pending { op: op::FLUSHQ, opaque: 4, key: Vec::new() };
        assert_eq!(flush, Plan::Broadcast { text: b"flush_all 9\r\n".to_vec(), pending: pending.clone() });
        assert_eq!(broadcast_response(&pending, b"OK\r\n"), None);
        let failed = broadcast_response(&pending, b"SERVER_ERROR backend s1 down\r\n").unwrap();
        assert_eq!(failed, error(op::FLUSHQ, 4, status::TEMPORARY_FAILURE, "SERVER_ERROR backend s1 down"));
        assert!(matches!(plan(&request(op::STAT, 1, 0, &[], &[], &[])), Plan::Stats(_)));
    }

    #[test]
    fn replies_become_responses_with_opaque_flags_and_cas() {
        let p = Pending { op: op::GETK, opaque: 0xabcd, key: b"foo".to_vec() };
        let r = response(&p, b"VA 3 f7 c99\r\nbar\r\n").unwrap();
        assert_eq!(r, packet(op::GETK, 0, 0xabcd, 99, &7u32.to_be_bytes(), b"foo", b"bar"));
        let q = Pending { op: op::GETQ, opaque: 1, key: Vec::new() };
        assert_eq!(response(&q, b"EN\r\n"), None);
        assert!(response(&q, b"VA 1 f0 c1\r\nx\r\n").is_some());
        let setq = Pending { op: op::SETQ, opaque: 1, key: Vec::new() };
        assert_eq!(response(&setq, b"HD c5\r\n"), None);
        assert_eq!(response(&setq, b"NS\r\n").unwrap()[6..8], status::NOT_STORED.to_be_bytes());
        let add = Pending { op: op::ADD, opaque: 1, key: Vec::new() };
        assert_eq!(response(&add, b"NS\r\n").unwrap()[6..8], status::EXISTS.to_be_bytes());
        let incr = Pending { op: op::INCR, opaque: 3, key: Vec::new() };
        assert_eq!(
            response(&incr, b"VA 2 c4\r\n12\r\n").unwrap(),
            packet(op::INCR, 0, 3, 4, &[], &[], &12u64.to_be_bytes())
        );
        let v = Pending { op: op::VERSION, opaque: 0, key: Vec::new() };
        assert_eq!(response(&v, b"VERSION 1.6.18\r\n").unwrap(), packet(op::VERSION, 0, 0, 0, &[], &[], b"1.6.18"));
    }
}
