//! A memcached command split over servers: a multi-key `get`/`gets`/`gat`/`gats` (each
//! server asked for its keys, the `VALUE` blocks put back in the client's key order with
//! one `END`) or a broadcast `flush_all`/`verbosity` (`OK` once every server said `OK`).
//! A part that fails makes the whole reply a `SERVER_ERROR` naming that part's server:
//! a get missing one server's keys would read as cache misses, which it is not.

use super::memcache_text::get_values;

/// What the parts' replies are merged into.
#[derive(Debug)]
enum Shape {
    /// For each client key: the key and its `VALUE` block once found.
    Get { keys: Vec<Vec<u8>>, values: Vec<Option<Vec<u8>>> },
    /// Every server answers `OK`.
    AllOk,
    /// `stats <group>`: each server's reply, in server order (the part's index).
    Stats { replies: Vec<Option<Vec<u8>>> },
}

/// A split command waiting for its parts.
#[derive(Debug)]
pub struct Gather<S> {
    /// The client's reply slot (`None`: `noreply`, nobody is answered).
    slot: Option<S>,
    shape: Shape,
    /// For each part: the positions (in the client's key list) of its keys.
    parts: Vec<Vec<usize>>,
    servers: Vec<String>,
    left: usize,
    error: Option<Vec<u8>>,
}

impl<S> Gather<S> {
    /// A get over `keys`, answering `slot`.
    pub fn get(slot: S, keys: Vec<Vec<u8>>) -> Gather<S> {
        let values = vec![None; keys.len()];
        Gather::new(Some(slot), Shape::Get { keys, values })
    }

    /// A broadcast answered on `slot` (`None` for `noreply`).
    pub fn all_ok(slot: Option<S>) -> Gather<S> {
        Gather::new(slot, Shape::AllOk)
    }

    /// `stats <group>` to every server, answering `slot`.
    pub fn stats(slot: S) -> Gather<S> {
        Gather::new(Some(slot), Shape::Stats { replies: Vec::new() })
    }

    fn new(slot: Option<S>, shape: Shape) -> Gather<S> {
        Gather { slot, shape, parts: Vec::new(), servers: Vec::new(), left: 0, error: None }
    }

    /// Adds a part for the keys at `positions` (none for a broadcast), on `server`; returns
    /// its index.
    pub fn add_part(&mut self, positions: Vec<usize>, server: String) -> usize {
        self.parts.push(positions);
        self.servers.push(server);
        self.left += 1;
        self.parts.len() - 1
    }

    /// Part `part` failed (`reason`: why); returns whether the gather is complete.
    pub fn failed(&mut self, part: usize, reason: &str) -> bool {
        if self.error.is_none() {
            self.error = Some(format!("SERVER_ERROR backend {} {reason}\r\n", self.servers[part]).into_bytes());
        }
        self.done()
    }

    /// Part `part`'s reply; returns whether the gather is complete.
    pub fn reply_for(&mut self, part: usize, reply: &[u8]) -> bool {
        if self.error.is_some() {
            return self.done();
        }
        if reply.starts_with(b"SERVER_ERROR") || reply.starts_with(b"CLIENT_ERROR") || reply == b"ERROR\r\n" {
            self.error = Some(reply.to_vec());
            return self.done();
        }
        match &mut self.shape {
            Shape::Get { keys, values } => {
                let Some(found) = get_values(reply) else { return self.failed(part, "sent an unexpected reply") };
                // Blocks come in the order the keys were asked (misses left out).
                let mut at = 0;
                for v in found {
                    let positions = &self.parts[part];
                    while at < positions.len() && keys[positions[at]] != v.key {
                        at += 1;
                    }
                    if at == positions.len() {
                        return self.failed(part, "sent a value for a key not asked for");
                    }
                    values[positions[at]] = Some(v.block.to_vec());
                    at += 1;
                }
            }
            Shape::AllOk => {
                if reply != b"OK\r\n" {
                    return self.failed(part, "sent an unexpected reply");
                }
            }
            Shape::Stats { replies } => {
                if replies.len() < self.parts.len() {
                    replies.resize(self.parts.len(), None);
                }
                replies[part] = Some(reply.to_vec());
            }
        }
        self.done()
    }

    fn done(&mut self) -> bool {
        self.left -= 1;
        self.left == 0
    }

    /// The client's slot and reply, once every part is in.
    pub fn finish(self) -> (Option<S>, Vec<u8>) {
        let bytes = match (&self.error, &self.shape) {
            (Some(e), _) => e.clone(),
            (None, Shape::Get { values, .. }) => {
                let mut out: Vec<u8> = values.iter().flatten().flatten().copied().collect();
                out.extend_from_slice(b"END\r\n");
                out
            }
            (None, Shape::AllOk) => b"OK\r\n".to_vec(),
            (None, Shape::Stats { replies }) => merge_stats(&self.servers, replies),
        };
        (self.slot, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<Vec<u8>> {
        k.iter().map(|k| k.as_bytes().to_vec()).collect()
    }

    #[test]
    fn values_come_back_in_key_order_with_one_end() {
        let mut g = Gather::get((), keys(&["a", "b", "c", "a"]));
        let p0 = g.add_part(vec![0, 2, 3], "s0".into());
        let p1 = g.add_part(vec![1], "s1".into());
        assert!(!g.reply_for(p1, b"VALUE b 0 1\r\nB\r\nEND\r\n"));
        assert!(g.reply_for(p0, b"VALUE a 0 1\r\nA\r\nVALUE a 0 1\r\nA\r\nEND\r\n"));
        let (slot, bytes) = g.finish();
        assert_eq!(slot, Some(()));
        assert_eq!(bytes, b"VALUE a 0 1\r\nA\r\nVALUE b 0 1\r\nB\r\nVALUE a 0 1\r\nA\r\nEND\r\n");
    }

    #[test]
    fn one_failed_part_fails_the_whole_reply() {
        let mut g = Gather::get((), keys(&["a", "b"]));
        let p0 = g.add_part(vec![0], "s0".into());
        let p1 = g.add_part(vec![1], "s1".into());
        assert!(!g.failed(p1, "down"));
        assert!(g.reply_for(p0, b"END\r\n"));
        assert_eq!(g.finish().1, b"SERVER_ERROR backend s1 down\r\n");
        let mut g = Gather::get((), keys(&["a"]));
        let p0 = g.add_part(vec![0], "s0".into());
        assert!(g.reply_for(p0, b"VALUE zz 0 1\r\nA\r\nEND\r\n"));
        assert!(g.finish().1.starts_with(b"SERVER_ERROR backend s0 sent a value"));
        let mut g: Gather<()> = Gather::all_ok(None);
        let (p0, p1) = (g.add_part(vec![], "s0".into()), g.add_part(vec![], "s1".into()));
        assert!(!g.reply_for(p0, b"OK\r\n"));
        assert!(g.reply_for(p1, b"OK\r\n"));
        assert_eq!(g.finish(), (None, b"OK\r\n".to_vec()));
    }
}

/// The servers' replies to one `stats <group>` as one: every `STAT name value` line becomes
/// `STAT server:name value` (memcached's own groups already nest names with `:`, e.g.
/// `items:1:number`), other lines (`ITEM`, `PREFIX`, …) are kept, one `END` closes it. A
/// one-line reply every server gave alike (`RESET`, `OK`) is given once.
fn merge_stats(servers: &[String], replies: &[Option<Vec<u8>>]) -> Vec<u8> {
    let all: Vec<&[u8]> = replies.iter().flatten().map(Vec::as_slice).collect();
    if let Some(first) = all.first() {
        let one_line = first.ends_with(b"\r\n") && !first[..first.len() - 2].contains(&b'\n');
        if one_line && *first != b"END\r\n" && all.iter().all(|r| r == first) {
            return first.to_vec();
        }
    }
    let mut out = Vec::new();
    for (server, reply) in servers.iter().zip(replies) {
        let Some(reply) = reply else { continue };
        for line in reply.split_inclusive(|&b| b == b'\n') {
            if line == b"END\r\n" || line == b"END\n" {
                continue;
            }
            match line.strip_prefix(b"STAT ") {
                Some(rest) => {
                    out.extend_from_slice(b"STAT ");
                    out.extend_from_slice(server.as_bytes());
                    out.push(b':');
                    out.extend_from_slice(rest);
                }
                None => out.extend_from_slice(line),
            }
        }
    }
    out.extend_from_slice(b"END\r\n");
    out
}

#[cfg(test)]
mod stats_tests {
    use super::*;

    #[test]
    fn stat_groups_are_merged_with_server_names_and_one_line_replies_given_once() {
        let servers = vec!["a".to_string(), "b".to_string()];
        let mut g: Gather<()> = Gather::stats(());
        assert_eq!(g.add_part(Vec::new(), servers[0].clone()), 0);
        assert_eq!(g.add_part(Vec::new(), servers[1].clone()), 1);
        assert!(!g.reply_for(1, b"STAT items:1:number 2\r\nEND\r\n"));
        assert!(g.reply_for(0, b"STAT items:1:number 5\r\nSTAT items:1:age 9\r\nEND\r\n"));
        let (_, bytes) = g.finish();
        assert_eq!(
            bytes,
            b"STAT a:items:1:number 5\r\nSTAT a:items:1:age 9\r\nSTAT b:items:1:number 2\r\nEND\r\n".to_vec()
        );
        assert_eq!(merge_stats(&servers, &[Some(b"RESET\r\n".to_vec()), Some(b"RESET\r\n".to_vec())]), b"RESET\r\n");
        assert_eq!(merge_stats(&servers, &[Some(b"END\r\n".to_vec()), Some(b"END\r\n".to_vec())]), b"END\r\n");
        let mut failed: Gather<()> = Gather::stats(());
        failed.add_part(Vec::new(), "a".into());
        assert!(failed.failed(0, "timed out"));
        assert!(failed.finish().1.starts_with(b"SERVER_ERROR backend a"));
    }
}
