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
    Ping,
    /// Answered by the proxy (`redis-cli --pipe` ends its stream with one).
    Echo,
    Quit,
    Auth,
    Select,
    /// Cannot be proxied (no key, several keys that must share a server, blocking, state).
    Unsupported,
}

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
        _ => Kind::Unsupported,
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
    }
}
