//! The little RESP2 the proxy needs on top of the parser's framing: a client command's
//! arguments (array or inline form), a command re-encoded for a backend, and the values of
//! a backend's reply, so multi-key replies can be split and merged.

/// A command's arguments, in place. `None` if the bytes are not one well-formed command;
/// an empty list for an empty inline line (which Redis answers with nothing).
pub fn command_args(req: &[u8]) -> Option<Vec<&[u8]>> {
    if req.first() == Some(&b'*') {
        let (n, mut at) = header(req, b'*')?;
        let mut args = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n.max(0) {
            let (len, start) = header(&req[at..], b'$')?;
            let (start, len) = (at + start, usize::try_from(len).ok()?);
            args.push(req.get(start..start + len)?);
            at = start + len + 2;
        }
        return Some(args);
    }
    // Inline: words split on blanks (quoting is not supported).
    Some(req.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).collect())
}

/// `<kind><number>\r\n` at the start of `buf`: the number and where the line ends.
fn header(buf: &[u8], kind: u8) -> Option<(i64, usize)> {
    if buf.first() != Some(&kind) {
        return None;
    }
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let n = std::str::from_utf8(&buf[1..end]).ok()?.parse().ok()?;
    Some((n, end + 2))
}

/// `args` as a RESP array of bulk strings (what a backend is sent).
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One bulk string.
pub fn bulk(b: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out
}

/// The length of the one RESP value at the start of `buf`, nested arrays included.
pub fn value_len(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")? + 2;
    match buf.first()? {
        b'+' | b'-' | b':' => Some(line_end),
        b'$' => {
            let (n, at) = header(buf, b'$')?;
            if n < 0 {
                return Some(at);
            }
            let end = at + usize::try_from(n).ok()? + 2;
            (end <= buf.len()).then_some(end)
        }
        b'*' => {
            let (n, mut at) = header(buf, b'*')?;
            for _ in 0..n.max(0) {
                at += value_len(&buf[at..])?;
            }
            Some(at)
        }
        _ => None,
    }
}

/// The elements of an array reply, each a whole RESP value in place; `None` if `reply` is
/// not an array.
pub fn array_items(reply: &[u8]) -> Option<Vec<&[u8]>> {
    let (n, mut at) = header(reply, b'*')?;
    let mut items = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n.max(0) {
        let len = value_len(reply.get(at..)?)?;
        items.push(&reply[at..at + len]);
        at += len;
    }
    Some(items)
}

/// The number of an integer reply (`:n`).
pub fn integer(reply: &[u8]) -> Option<i64> {
    header(reply, b':').map(|(n, _)| n)
}

/// An error reply's line without the `-` and the line end, if `reply` is one.
pub fn error_text(reply: &[u8]) -> Option<&[u8]> {
    reply.strip_prefix(b"-").map(|r| r.strip_suffix(b"\r\n").unwrap_or(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_and_inline_commands_give_their_arguments() {
        let req = encode(&[b"SET", b"k", b"v\r\nx"]);
        assert_eq!(command_args(&req).unwrap(), vec![&b"SET"[..], b"k", b"v\r\nx"]);
        assert_eq!(command_args(b"get  key\r\n").unwrap(), vec![&b"get"[..], b"key"]);
        assert!(command_args(b"\r\n").unwrap().is_empty());
        assert!(command_args(b"*2\r\n$3\r\nGET\r\n$9\r\nk\r\n").is_none());
    }

    #[test]
    fn replies_split_into_values() {
        let r = b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:5\r\n";
        assert_eq!(array_items(r).unwrap(), vec![&b"$1\r\na\r\n"[..], b"$-1\r\n", b"*1\r\n:5\r\n"]);
        assert_eq!(integer(b":42\r\n"), Some(42));
        assert_eq!(error_text(b"-ERR no\r\n"), Some(&b"ERR no"[..]));
        assert!(array_items(b"-ERR x\r\n").is_none());
    }
}
