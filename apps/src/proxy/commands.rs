//! What the proxy does with each Redis command: forward it by its key, split it over
//! servers, answer it itself, or refuse it (with an error reply, the connection going on:
//! twemproxy closes the connection instead, which breaks client libraries).

/// How a command is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One key, the second argument: sent to that key's server, its reply passed through.
    Single,
    /// `MGET k…`: one array, in key order.
    Mget,
    /// `DEL`/`UNLINK`/`EXISTS`/`TOUCH k…`: the servers' integer replies summed.
    Sum,
    /// `MSET k v …`: `+OK` once every part succeeded.
    Mset,
    /// Several keys that must live on one server (`SINTER`, `RPOPLPUSH`, `EVAL`, …): sent
    /// whole to that server when they do, refused when they do not (twemproxy sends it to
    /// the first key's server and the command silently misses the other keys).
    SameServer(KeySpec),
    Ping,
    /// Answered by the proxy (`redis-cli --pipe` ends its stream with one).
    Echo,
    Quit,
    Auth,
    Select,
    /// Cannot be proxied (no key, several keys that must share a server, blocking, state).
    Unsupported,
}

/// Where a [`Kind::SameServer`] command's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// Every argument from this one on.
    From(usize),
    /// These arguments.
    At(&'static [usize]),
    /// `k v k v …` from argument 1 (`MSETNX`).
    Pairs,
    /// A key count at argument `count`, the keys after it; `dest`: argument 1 is a key too.
    Counted { count: usize, dest: bool },
}

/// The argument indices of a command's keys (`args[0]` is its name); `None` when the key
/// count is not a number or runs past the arguments.
pub fn key_positions(spec: KeySpec, args: &[&[u8]]) -> Option<Vec<usize>> {
    let n = args.len();
    Some(match spec {
        KeySpec::From(first) => (first..n).collect(),
        KeySpec::At(at) => at.iter().copied().filter(|&i| i < n).collect(),
        KeySpec::Pairs => (1..n).step_by(2).collect(),
        KeySpec::Counted { count, dest } => {
            let k: usize = std::str::from_utf8(args.get(count)?).ok()?.parse().ok()?;
            let first = count + 1;
            if first.checked_add(k)? > n {
                return None;
            }
            let mut v: Vec<usize> = if dest { vec![1] } else { Vec::new() };
            v.extend(first..first + k);
            v
        }
    })
}

/// Multi-key commands whose keys must share a server, with where their keys are.
const SAME_SERVER: &[(&str, KeySpec)] = &[
    ("sinter", KeySpec::From(1)),
    ("sunion", KeySpec::From(1)),
    ("sdiff", KeySpec::From(1)),
    ("sinterstore", KeySpec::From(1)),
    ("sunionstore", KeySpec::From(1)),
    ("sdiffstore", KeySpec::From(1)),
    ("pfcount", KeySpec::From(1)),
    ("pfmerge", KeySpec::From(1)),
    ("bitop", KeySpec::From(2)),
    ("smove", KeySpec::At(&[1, 2])),
    ("rpoplpush", KeySpec::At(&[1, 2])),
    ("lmove", KeySpec::At(&[1, 2])),
    ("rename", KeySpec::At(&[1, 2])),
    ("renamenx", KeySpec::At(&[1, 2])),
    ("msetnx", KeySpec::Pairs),
    ("eval", KeySpec::Counted { count: 2, dest: false }),
    ("evalsha", KeySpec::Counted { count: 2, dest: false }),
    ("eval_ro", KeySpec::Counted { count: 2, dest: false }),
    ("evalsha_ro", KeySpec::Counted { count: 2, dest: false }),
    ("fcall", KeySpec::Counted { count: 2, dest: false }),
    ("fcall_ro", KeySpec::Counted { count: 2, dest: false }),
    ("zunionstore", KeySpec::Counted { count: 2, dest: true }),
    ("zinterstore", KeySpec::Counted { count: 2, dest: true }),
    ("zdiffstore", KeySpec::Counted { count: 2, dest: true }),
    ("zunion", KeySpec::Counted { count: 1, dest: false }),
    ("zinter", KeySpec::Counted { count: 1, dest: false }),
    ("zdiff", KeySpec::Counted { count: 1, dest: false }),
    ("sintercard", KeySpec::Counted { count: 1, dest: false }),
];

/// Commands with one key in second place that twemproxy forwards (RESP2 era, plus the
/// newer single-key ones of the same shape).
const SINGLE: &[&str] = &[
    // keys
    "expire",
    "expireat",
    "pexpire",
    "pexpireat",
    "persist",
    "pttl",
    "ttl",
    "type",
    "dump",
    "restore",
    "sort",
    "sort_ro",
    "object",
    "expiretime",
    "pexpiretime", // strings
    "append",
    "bitcount",
    "bitpos",
    "bitfield",
    "bitfield_ro",
    "decr",
    "decrby",
    "get",
    "getbit",
    "getrange",
    "getset",
    "getdel",
    "getex",
    "incr",
    "incrby",
    "incrbyfloat",
    "psetex",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "strlen",
    "substr", // hashes
    "hdel",
    "hexists",
    "hget",
    "hgetall",
    "hincrby",
    "hincrbyfloat",
    "hkeys",
    "hlen",
    "hmget",
    "hmset",
    "hset",
    "hsetnx",
    "hvals",
    "hscan",
    "hstrlen",
    "hrandfield", // lists
    "lindex",
    "linsert",
    "llen",
    "lpop",
    "lpos",
    "lpush",
    "lpushx",
    "lrange",
    "lrem",
    "lset",
    "ltrim",
    "rpop",
    "rpush",
    "rpushx", // sets
    "sadd",
    "scard",
    "sismember",
    "smismember",
    "smembers",
    "spop",
    "srandmember",
    "srem",
    "sscan",
    // sorted sets
    "zadd",
    "zcard",
    "zcount",
    "zincrby",
    "zlexcount",
    "zmscore",
    "zpopmax",
    "zpopmin",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrank",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore", // hyperloglog, geo
    "pfadd",
    "geoadd",
    "geodist",
    "geohash",
    "geopos",
    "georadius",
    "georadiusbymember",
    "geosearch",
];

/// The kind of the command named `name` (any case).
pub fn kind(name: &[u8]) -> Kind {
    let lower = name.to_ascii_lowercase();
    let Ok(n) = std::str::from_utf8(&lower) else { return Kind::Unsupported };
    match n {
        "mget" => Kind::Mget,
        "del" | "unlink" | "exists" | "touch" => Kind::Sum,
        "mset" => Kind::Mset,
        "ping" => Kind::Ping,
        "echo" => Kind::Echo,
        "quit" => Kind::Quit,
        "auth" => Kind::Auth,
        "select" => Kind::Select,
        _ if SINGLE.contains(&n) => Kind::Single,
        _ => SAME_SERVER.iter().find(|(c, _)| *c == n).map_or(Kind::Unsupported, |&(_, k)| Kind::SameServer(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_classified_in_any_case() {
        assert_eq!(kind(b"GET"), Kind::Single);
        assert_eq!(kind(b"zAdd"), Kind::Single);
        assert_eq!(kind(b"MGET"), Kind::Mget);
        assert_eq!(kind(b"unlink"), Kind::Sum);
        assert_eq!(kind(b"KEYS"), Kind::Unsupported);
        assert_eq!(kind(b"BLPOP"), Kind::Unsupported);
        assert_eq!(kind(b"\xff"), Kind::Unsupported);
        assert_eq!(kind(b"SINTER"), Kind::SameServer(KeySpec::From(1)));
    }

    #[test]
    fn key_positions_follow_each_commands_shape() {
        let pos = |cmd: &str| {
            let args: Vec<&[u8]> = cmd.split(' ').map(str::as_bytes).collect();
            let Kind::SameServer(spec) = kind(args[0]) else { panic!("{cmd}") };
            key_positions(spec, &args)
        };
        assert_eq!(pos("sinter a b c"), Some(vec![1, 2, 3]));
        assert_eq!(pos("bitop and dest a b"), Some(vec![2, 3, 4]));
        assert_eq!(pos("smove a b member"), Some(vec![1, 2]));
        assert_eq!(pos("msetnx a 1 b 2"), Some(vec![1, 3]));
        assert_eq!(pos("eval script 2 a b arg"), Some(vec![3, 4]));
        assert_eq!(pos("eval script 0"), Some(vec![]));
        assert_eq!(pos("eval script 3 a b"), None);
        assert_eq!(pos("eval script x a"), None);
        assert_eq!(pos("zunionstore d 2 a b weights 1 2"), Some(vec![1, 3, 4]));
        assert_eq!(pos("sintercard 2 a b limit 5"), Some(vec![2, 3]));
        assert_eq!(pos("eval script 18446744073709551615 a"), None);
    }
}
