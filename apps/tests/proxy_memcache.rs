//! `ukcm-proxy` in front of three real `memcached`s (loopback), judged by raw text and
//! binary connections, libmemcached's command-line tools (text and `--binary`) and
//! pymemcache: every command family, multi-key gets across servers with each key on the
//! server twemproxy's ketama placement names (asked of each memcached directly), noreply and
//! quiet meta/binary batches, garbage from one client, and a killed backend failing only its
//! own keys. Without the programs it says SKIP, unless `UKCM_PRIVILEGED=1`, where their
//! absence fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ukcm::testing::{can_drop_root_or_skip, free_port, programs_or_skip, scratch_dir, wait_for_port, ChildGuard};
use ukcm_apps::proxy::config::Config;
use ukcm_apps::proxy::dist::Selector;
use ukcm_parsers::{MemcacheText, Memcached, Parse, Parser};

mod proxy_common;

use proxy_common::proxy;

const WATCHDOG: Duration = Duration::from_secs(30);

fn memcached(port: u16) -> ChildGuard {
    let child = Command::new("memcached")
        .args(["-u", "nobody", "-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let g = ChildGuard::new(child, None);
    wait_for_port(port, WATCHDOG);
    g
}

/// A ketama pool over `backends`; `extra`: more pool keys (indented lines).
fn config(proxy: u16, backends: &[u16], extra: &str) -> String {
    let mut c = format!(
        "beta:\n  listen: 127.0.0.1:{proxy}\n  hash: md5\n  distribution: ketama\n  timeout: 2000\n{extra}  servers:\n"
    );
    for (i, b) in backends.iter().enumerate() {
        c.push_str(&format!("   - 127.0.0.1:{b}:1 server{i}\n"));
    }
    c
}

/// Three memcached, the proxy in front, ready; the selector twemproxy would use.
struct Setup {
    ports: Vec<u16>,
    backends: Vec<Option<ChildGuard>>,
    pp: u16,
    _proxy: ChildGuard,
    selector: Selector,
}

impl Setup {
    fn new() -> Setup {
        Setup::with("  server_failure_limit: 1000\n")
    }

    fn with(extra: &str) -> Setup {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let backends = ports.iter().map(|&p| Some(memcached(p))).collect();
        let pp = free_port();
        let text = config(pp, &ports, extra);
        let proxy = proxy(&text, pp);
        let selector = Config::parse(&text).unwrap().pools[0].selector();
        let s = Setup { ports, backends, pp, _proxy: proxy, selector };
        let end = Instant::now() + WATCHDOG;
        let mut c = Conn::new(pp);
        while !(0..50).all(|i| !c.text(format!("get ready{i}\r\n").as_bytes()).starts_with("SERVER_ERROR")) {
            assert!(Instant::now() < end, "the proxy's backends never came up");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn home(&self, key: &str) -> usize {
        self.selector.server_for(key.as_bytes()).unwrap()
    }

    /// Keys on the server of index `server`, then keys elsewhere.
    fn keys_on(&self, server: usize, n: usize) -> Vec<String> {
        (0..).map(|i| format!("key:{i}")).filter(|k| self.home(k) == server).take(n).collect()
    }
}

/// One client connection; replies delineated by the protocol's own parsers.
struct Conn(TcpStream, Vec<u8>);

impl Conn {
    fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(WATCHDOG)).unwrap();
        Conn(s, Vec::new())
    }

    fn read_with(&mut self, p: &mut dyn Parser) -> Vec<u8> {
        loop {
            if let Ok(Parse::Message(n)) = p.parse(&self.1) {
                if n <= self.1.len() {
                    p.reset();
                    return self.1.drain(..n).collect();
                }
            }
            let mut buf = [0u8; 4096];
            let n = self.0.read(&mut buf).unwrap();
            assert!(n > 0, "the proxy closed the connection");
            self.1.extend_from_slice(&buf[..n]);
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    /// The next text reply.
    fn reply(&mut self) -> String {
        String::from_utf8_lossy(&self.read_with(&mut MemcacheText::replies())).into_owned()
    }

    fn text(&mut self, bytes: &[u8]) -> String {
        self.send(bytes);
        self.reply()
    }

    /// The next binary response.
    fn packet(&mut self) -> Vec<u8> {
        self.read_with(&mut Memcached::new())
    }
}

fn set(key: &str, value: &str) -> Vec<u8> {
    format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).into_bytes()
}

/// A binary request.
fn bin(op: u8, opaque: u32, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = extras.len() + key.len() + value.len();
    let mut v = vec![0x80, op];
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
    v.extend_from_slice(&(body as u32).to_be_bytes());
    v.extend_from_slice(&opaque.to_be_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(extras);
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

/// (opcode, status, opaque, key, value) of a binary response.
fn fields(p: &[u8]) -> (u8, u16, u32, Vec<u8>, Vec<u8>) {
    let key_len = u16::from_be_bytes([p[2], p[3]]) as usize;
    let extras = p[4] as usize;
    let status = u16::from_be_bytes([p[6], p[7]]);
    let opaque = u32::from_be_bytes([p[12], p[13], p[14], p[15]]);
    let key = p[24 + extras..24 + extras + key_len].to_vec();
    (p[1], status, opaque, key, p[24 + extras + key_len..].to_vec())
}

#[test]
fn text_commands_through_the_proxy_land_where_twemproxy_puts_them() {
    if !programs_or_skip("proxy_memcache", &["memcached"]) || !can_drop_root_or_skip("proxy_memcache") {
        return;
    }
    let s = Setup::new();
    let mut c = Conn::new(s.pp);
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for k in &keys {
        assert_eq!(c.text(&set(k, &format!("v-{k}"))), "STORED\r\n");
    }
    // Each key is on the server the ketama placement names, and only there.
    let mut direct: Vec<Conn> = s.ports.iter().map(|&p| Conn::new(p)).collect();
    let mut used = [false; 3];
    for k in &keys {
        let home = s.home(k);
        used[home] = true;
        for (i, d) in direct.iter_mut().enumerate() {
            let r = d.text(format!("get {k}\r\n").as_bytes());
            assert_eq!(r.starts_with("VALUE"), i == home, "{k} on server {i}: {r}");
        }
    }
    assert_eq!(used, [true; 3], "the keys should span all three servers");

    // One get over every server, misses and a repeated key included: key order, one END.
    let asked = ["k3", "nope1", "k17", "k3", "k0", "nope2", "k39", "k22"];
    let mut expected = String::new();
    for k in asked.iter().filter(|k| !k.starts_with("nope")) {
        expected.push_str(&format!("VALUE {k} 0 {}\r\nv-{k}\r\n", k.len() + 2));
    }
    expected.push_str("END\r\n");
    assert_eq!(c.text(format!("get {}\r\n", asked.join(" ")).as_bytes()), expected);
    let gets = c.text(b"gets k1 k2 k5 k8\r\n");
    let got: Vec<&str> =
        gets.lines().filter(|l| l.starts_with("VALUE")).map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(got, ["k1", "k2", "k5", "k8"]);
    assert!(gets.lines().filter(|l| l.starts_with("VALUE")).all(|l| l.split(' ').count() == 5), "{gets}");
    assert!(c.text(b"gat 100 k4 k9 k30\r\n").matches("VALUE").count() == 3);
    assert!(c.text(b"gats 100 k4\r\n").starts_with("VALUE k4 0 4 "));

    // Storage, arithmetic, touch, delete.
    assert_eq!(c.text(b"add k1 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    assert_eq!(c.text(b"add fresh 0 0 1\r\nx\r\n"), "STORED\r\n");
    assert_eq!(c.text(b"replace nothere 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    assert_eq!(c.text(b"replace fresh 5 0 1\r\ny\r\n"), "STORED\r\n");
    assert_eq!(c.text(b"append fresh 0 0 2\r\n>>\r\n"), "STORED\r\n");
    assert_eq!(c.text(b"prepend fresh 0 0 2\r\n<<\r\n"), "STORED\r\n");
    assert_eq!(c.text(b"get fresh\r\n"), "VALUE fresh 5 5\r\n<<y>>\r\nEND\r\n");
    let cas: String = c.text(b"gets fresh\r\n").split(['\r', ' ']).nth(4).unwrap().to_owned();
    assert_eq!(c.text(format!("cas fresh 0 0 1 {cas}\r\nz\r\n").as_bytes()), "STORED\r\n");
    assert_eq!(c.text(format!("cas fresh 0 0 1 {cas}\r\nw\r\n").as_bytes()), "EXISTS\r\n");
    assert_eq!(c.text(b"set n 0 0 2\r\n10\r\n"), "STORED\r\n");
    assert_eq!(c.text(b"incr n 5\r\n"), "15\r\n");
    assert_eq!(c.text(b"decr n 20\r\n"), "0\r\n");
    assert_eq!(c.text(b"incr missing 1\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.text(b"touch k1 100\r\n"), "TOUCHED\r\n");
    assert_eq!(c.text(b"delete fresh\r\n"), "DELETED\r\n");
    assert_eq!(c.text(b"delete fresh\r\n"), "NOT_FOUND\r\n");
    assert!(c.text(b"version\r\n").starts_with("VERSION 1."));
    // An item near memcached's 1 MiB limit, through both directions of the proxy.
    let big: String = (0..1_000_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    assert_eq!(c.text(&set("big", &big)), "STORED\r\n");
    assert_eq!(c.text(b"get big k1\r\n"), format!("VALUE big 0 1000000\r\n{big}\r\nVALUE k1 0 4\r\nv-k1\r\nEND\r\n"));

    // noreply: the backend's answers never reach the client; the next reply is the get's.
    c.send(b"set nr 0 0 1 noreply\r\nx\r\nincr nr 1 noreply\r\nincr absent 1 noreply\r\ndelete absent noreply\r\n");
    assert_eq!(c.text(b"get nr\r\n"), "VALUE nr 0 1\r\nx\r\nEND\r\n");
    assert_eq!(c.text(b"mn\r\n"), "MN\r\n");
    // To a get, noreply is a key like any other.
    assert_eq!(c.text(b"set noreply 0 0 1\r\ny\r\n"), "STORED\r\n");
    assert_eq!(c.text(b"get nr noreply\r\n"), "VALUE nr 0 1\r\nx\r\nVALUE noreply 0 1\r\ny\r\nEND\r\n");

    // Meta commands, flags passed through; a quiet batch ended by mn shows only hits.
    assert_eq!(c.text(b"ms mk 2 T0 F7\r\nhi\r\n"), "HD\r\n");
    assert_eq!(c.text(b"mg mk v f\r\n"), "VA 2 f7\r\nhi\r\n");
    c.send(b"mg gone1 v q\r\nmg mk v k q\r\nmg gone2 v O9 k q\r\nms mk2 1 q\r\nx\r\nmd gone3 q\r\nmn\r\n");
    assert_eq!(c.reply(), "VA 2 kmk\r\nhi\r\n");
    assert_eq!(c.reply(), "NF\r\n", "md's miss is not hidden by q");
    assert_eq!(c.reply(), "MN\r\n");
    assert_eq!(direct[s.home("mk2")].text(b"get mk2\r\n"), "VALUE mk2 0 1\r\nx\r\nEND\r\n");
    assert_eq!(c.text(b"ma n D3 v\r\n"), "VA 1\r\n3\r\n");
    assert_eq!(c.text(b"md mk\r\n"), "HD\r\n");
    assert_eq!(c.text(b"mg mk v\r\n"), "EN\r\n");

    // Errors in the protocol's form; the connection goes on.
    assert_eq!(c.text(b"bogus thing\r\n"), "ERROR\r\n");
    assert_eq!(c.text(b"incr n\r\n"), "ERROR\r\n");
    assert_eq!(c.text(b"set k 0 0 1\r\nabc\r\n"), "CLIENT_ERROR bad data chunk\r\n");
    assert_eq!(c.reply(), "ERROR\r\n"); // the rest of the bad chunk, as memcached says too
    assert_eq!(c.text(format!("get {}\r\n", "x".repeat(300)).as_bytes()), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(c.text(b"get k1\r\n"), "VALUE k1 0 4\r\nv-k1\r\nEND\r\n");

    // stats answered by the proxy; verbosity and flush_all on every server.
    let stats = c.text(b"stats\r\n");
    assert!(stats.contains("STAT servers 3\r\n") && stats.contains("STAT server:server2 up\r\n"), "{stats}");
    // stats groups go to every server, merged with the servers' names; each server's
    // figures are its own (compared with the server asked directly).
    let settings = c.text(b"stats settings\r\n");
    for (i, d) in direct.iter_mut().enumerate() {
        let own = d.text(b"stats settings\r\n");
        let port = own.lines().find(|l| l.starts_with("STAT tcpport ")).expect("memcached reports its port");
        let merged = port.replacen("STAT ", &format!("STAT server{i}:"), 1);
        assert!(settings.contains(&format!("{merged}\r\n")), "{merged} not in {settings}");
    }
    assert!(settings.ends_with("END\r\n") && settings.matches("END\r\n").count() == 1, "{settings}");
    assert_eq!(c.text(b"stats reset\r\n"), "RESET\r\n");
    assert_eq!(c.text(b"verbosity 1\r\n"), "OK\r\n");
    assert_eq!(c.text(b"flush_all\r\n"), "OK\r\n");
    for d in &mut direct {
        assert_eq!(d.text(b"get k0 k1 k2 k3 k4 k5 k6 k7 k8 k9\r\n"), "END\r\n");
    }
    c.send(b"flush_all noreply\r\n");
    assert_eq!(c.text(b"mn\r\n"), "MN\r\n");

    // quit: the replies before it, then the connection closes; what follows is not handled.
    c.send(b"set last 0 0 1\r\nx\r\nget last\r\nquit\r\nget last\r\n");
    assert_eq!(c.reply(), "STORED\r\n");
    assert_eq!(c.reply(), "VALUE last 0 1\r\nx\r\nEND\r\n");
    assert_closed(&mut c);
}

#[test]
fn garbage_from_one_client_leaves_the_others_served() {
    if !programs_or_skip("proxy_memcache", &["memcached"]) || !can_drop_root_or_skip("proxy_memcache") {
        return;
    }
    let s = Setup::new();
    let mut good = Conn::new(s.pp);
    assert_eq!(good.text(&set("g", "1")), "STORED\r\n");
    let mut bad = Conn::new(s.pp);
    // A line that never ends: the proxy closes that connection (memcached's limit is 2048).
    bad.send(&vec![b'x'; 5000]);
    assert_closed(&mut bad);
    // A binary packet with a key longer than its body.
    let mut worse = Conn::new(s.pp);
    let mut p = bin(0x00, 1, &[], b"key", &[]);
    p[11] = 1;
    worse.send(&p);
    assert_closed(&mut worse);
    assert_eq!(good.text(b"get g\r\n"), "VALUE g 0 1\r\n1\r\nEND\r\n");
}

#[test]
fn binary_clients_share_the_port_and_quiet_gets_batch_with_noop() {
    if !programs_or_skip("proxy_memcache", &["memcached"]) || !can_drop_root_or_skip("proxy_memcache") {
        return;
    }
    let s = Setup::new();
    let mut c = Conn::new(s.pp);
    let extras = [0, 0, 0, 9, 0, 0, 0, 0]; // flags 9, no expiry
    for (i, k) in ["b1", "b2", "b3", "b4"].iter().enumerate() {
        c.send(&bin(0x01, 100 + i as u32, &extras, k.as_bytes(), format!("val-{k}").as_bytes()));
        let (op, status, opaque, _, _) = fields(&c.packet());
        assert_eq!((op, status, opaque), (0x01, 0, 100 + i as u32));
    }
    // Written in binary, read in text, where ketama puts them.
    assert_eq!(c.text(b"get b3\r\n"), "VALUE b3 9 6\r\nval-b3\r\nEND\r\n");
    let mut direct = Conn::new(s.ports[s.home("b2")]);
    assert_eq!(direct.text(b"get b2\r\n"), "VALUE b2 9 6\r\nval-b2\r\nEND\r\n");
    // getkq batch: only hits answer, in order, then the noop.
    let mut batch = Vec::new();
    for (i, k) in ["b1", "miss1", "b2", "miss2", "b4"].iter().enumerate() {
        batch.extend(bin(0x0d, i as u32, &[], k.as_bytes(), &[]));
    }
    batch.extend(bin(0x0a, 77, &[], &[], &[]));
    c.send(&batch);
    for (opaque, key) in [(0, "b1"), (2, "b2"), (4, "b4")] {
        let (op, status, o, k, v) = fields(&c.packet());
        assert_eq!((op, status, o, k), (0x0d, 0, opaque, key.as_bytes().to_vec()));
        assert_eq!(v, format!("val-{key}").into_bytes());
    }
    let (op, status, opaque, _, _) = fields(&c.packet());
    assert_eq!((op, status, opaque), (0x0a, 0, 77));

    // The other commands, opaque kept, errors as statuses.
    let ask = |c: &mut Conn, p: Vec<u8>| {
        c.send(&p);
        let r = c.packet();
        let f = fields(&r);
        assert_eq!(f.2, u32::from_be_bytes([p[12], p[13], p[14], p[15]]), "opaque");
        (f.1, f.3, f.4, r)
    };
    let (st, _, v, r) = ask(&mut c, bin(0x00, 5, &[], b"b1", &[]));
    assert_eq!((st, v.as_slice(), &r[24..28]), (0, &b"val-b1"[..], &9u32.to_be_bytes()[..]));
    let cas = u64::from_be_bytes(r[16..24].try_into().unwrap());
    assert_ne!(cas, 0);
    assert_eq!(ask(&mut c, bin(0x0c, 6, &[], b"nope", &[])).0, 0x0001);
    assert_eq!(ask(&mut c, bin(0x02, 7, &extras, b"b1", b"x")).0, 0x0002, "add over an existing key");
    assert_eq!(ask(&mut c, bin(0x03, 8, &extras, b"nope", b"x")).0, 0x0001, "replace of a missing key");
    assert_eq!(ask(&mut c, bin(0x0e, 9, &[], b"b1", b"+")).0, 0);
    let mut with_cas = bin(0x01, 10, &extras, b"b1", b"new");
    with_cas[16..24].copy_from_slice(&cas.to_be_bytes());
    assert_eq!(ask(&mut c, with_cas).0, 0x0002, "the append changed the cas");
    let mut counter = [0u8; 20];
    counter[7] = 2; // delta 2
    counter[15] = 40; // initial 40
    let (st, _, v, _) = ask(&mut c, bin(0x05, 11, &counter, b"cnt", &[]));
    assert_eq!((st, v), (0, 40u64.to_be_bytes().to_vec()));
    let (st, _, v, _) = ask(&mut c, bin(0x05, 12, &counter, b"cnt", &[]));
    assert_eq!((st, v), (0, 42u64.to_be_bytes().to_vec()));
    let (st, _, v, _) = ask(&mut c, bin(0x06, 13, &counter, b"cnt", &[]));
    assert_eq!((st, v), (0, 40u64.to_be_bytes().to_vec()));
    assert_eq!(ask(&mut c, bin(0x05, 14, &counter, b"b1", &[])).0, 0x0006, "incr of a non-number");
    assert_eq!(ask(&mut c, bin(0x1c, 15, &[0, 0, 0, 100], b"b2", &[])).0, 0);
    let (st, _, v, _) = ask(&mut c, bin(0x1d, 16, &[0, 0, 0, 100], b"b2", &[]));
    assert_eq!((st, v), (0, b"val-b2".to_vec()));
    assert_eq!(ask(&mut c, bin(0x04, 17, &[], b"b2", &[])).0, 0);
    assert_eq!(ask(&mut c, bin(0x04, 18, &[], b"b2", &[])).0, 0x0001);
    let (st, _, v, _) = ask(&mut c, bin(0x0b, 19, &[], &[], &[]));
    assert!(st == 0 && v.starts_with(b"1."), "version {v:?}");
    assert_eq!(ask(&mut c, bin(0x20, 20, &[], &[], &[])).0, 0x0081, "an opcode not proxied");
    // stat: one packet per statistic, then an empty one.
    c.send(&bin(0x10, 30, &[], &[], &[]));
    let mut stats = Vec::new();
    loop {
        let (op, st, opaque, k, v) = fields(&c.packet());
        assert_eq!((op, st, opaque), (0x10, 0, 30));
        if k.is_empty() {
            break;
        }
        stats.push((String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()));
    }
    assert!(stats.contains(&("servers".into(), "3".into())), "{stats:?}");
    // flush and verbosity go to every server; a quiet flush answers nothing, noop does.
    assert_eq!(ask(&mut c, bin(0x1b, 31, &[0, 0, 0, 1], &[], &[])).0, 0);
    let mut q = bin(0x18, 32, &[], &[], &[]);
    q.extend(bin(0x0a, 33, &[], &[], &[]));
    c.send(&q);
    let f = fields(&c.packet());
    assert_eq!((f.0, f.1, f.2), (0x0a, 0, 33));
    assert_eq!(ask(&mut c, bin(0x00, 34, &[], b"b1", &[])).0, 0x0001, "flushed");
    assert_eq!(ask(&mut c, bin(0x08, 35, &[], &[], &[])).0, 0);
    // A key no text command could carry travels in base64, hashed as its bytes.
    let odd = b"a key\twith blanks";
    assert_eq!(ask(&mut c, bin(0x01, 21, &extras, odd, b"odd")).0, 0);
    let (st, k, v, _) = ask(&mut c, bin(0x0c, 22, &[], odd, &[]));
    assert_eq!((st, k.as_slice(), v.as_slice()), (0, &odd[..], &b"odd"[..]));
    let home = s.selector.server_for(odd).unwrap();
    let b64 = "YSBrZXkJd2l0aCBibGFua3M=";
    assert_eq!(Conn::new(s.ports[home]).text(format!("mg {b64} b v\r\n").as_bytes()), "VA 3\r\nodd\r\n");
    // Quiet updates answer only on failure; quit answers, quitq does not.
    let mut q = bin(0x11, 23, &extras, b"qq", b"1");
    q.extend(bin(0x12, 24, &extras, b"qq", b"2")); // addq over it: fails, answered
    q.extend(bin(0x14, 25, &[], b"qq", &[]));
    q.extend(bin(0x0a, 26, &[], &[], &[]));
    c.send(&q);
    let f = fields(&c.packet());
    assert_eq!((f.0, f.1, f.2), (0x12, 0x0002, 24));
    let f = fields(&c.packet());
    assert_eq!((f.0, f.1, f.2), (0x0a, 0, 26));
    // quit: answered, then the connection closes; the request after it is not handled.
    let mut q = bin(0x07, 27, &[], &[], &[]);
    q.extend(bin(0x0a, 28, &[], &[], &[]));
    c.send(&q);
    let f = fields(&c.packet());
    assert_eq!((f.0, f.1, f.2), (0x07, 0, 27));
    assert_closed(&mut c);
}

/// The proxy closed `c` (after whatever it was sent before).
fn assert_closed(c: &mut Conn) {
    let mut buf = [0u8; 64];
    match c.0.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected the proxy to close, got {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected the proxy to close: {e}"),
    }
    assert!(c.1.is_empty(), "bytes after the last reply: {:?}", c.1);
}

#[test]
fn libmemcached_tools_and_pymemcache_through_the_proxy() {
    if !programs_or_skip(
        "proxy_memcache",
        &["memcached", "memccp", "memccat", "memcrm", "memcstat", "memcflush", "python3"],
    ) || !can_drop_root_or_skip("proxy_memcache")
    {
        return;
    }
    let has_pymemcache = Command::new("python3").args(["-c", "import pymemcache"]).status().is_ok_and(|s| s.success());
    if !has_pymemcache {
        let required = std::env::var_os("UKCM_PRIVILEGED").is_some_and(|v| v == "1");
        assert!(!required, "pymemcache not installed (scripts/install-deps.sh installs it)");
        eprintln!("SKIP: proxy_memcache: pymemcache not installed (run scripts/install-deps.sh)");
        return;
    }
    let s = Setup::new();
    let servers = format!("--servers=127.0.0.1:{}", s.pp);
    let dir = scratch_dir(&format!("mc-tools-{}", s.pp));
    let tool = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).current_dir(&dir).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for (i, proto) in [&[][..], &["--binary"][..]].iter().enumerate() {
        let names: Vec<String> = (0..6).map(|n| format!("file{i}-{n}.txt")).collect();
        for n in &names {
            std::fs::write(dir.join(n), format!("contents of {n}\n")).unwrap();
        }
        let mut cp = vec!["memccp", &servers];
        cp.extend(proto.iter().copied());
        cp.extend(names.iter().map(String::as_str));
        assert!(tool(&cp).0, "memccp {proto:?}");
        let mut cat = vec!["memccat", &servers];
        cat.extend(proto.iter().copied());
        cat.extend(names.iter().map(String::as_str));
        let (ok, out) = tool(&cat);
        // memccat ends each value with a newline of its own.
        let want: String = names.iter().map(|n| format!("contents of {n}\n\n")).collect();
        assert!(ok && out == want, "memccat {proto:?}: {out:?}");
        for n in &names {
            let mut d = Conn::new(s.ports[s.home(n)]);
            assert!(d.text(format!("get {n}\r\n").as_bytes()).starts_with("VALUE"), "{n} not on its server");
        }
        let mut rm = vec!["memcrm", &servers];
        rm.extend(proto.iter().copied());
        rm.push(&names[0]);
        assert!(tool(&rm).0, "memcrm {proto:?}");
        let mut cat = vec!["memccat", &servers];
        cat.extend(proto.iter().copied());
        cat.push(&names[0]);
        assert!(!tool(&cat).0, "memccat of a removed key {proto:?} should fail");
    }
    for proto in [&[][..], &["--binary"][..]] {
        let mut stat = vec!["memcstat", &servers];
        stat.extend(proto.iter().copied());
        let (ok, out) = tool(&stat);
        assert!(ok && out.contains("servers: 3") && out.contains(&format!("({})", s.pp)), "memcstat {proto:?}: {out}");
        let key = format!("flushed{}", proto.len());
        assert_eq!(Conn::new(s.pp).text(&set(&key, "x")), "STORED\r\n");
        let mut flush = vec!["memcflush", &servers];
        flush.extend(proto.iter().copied());
        assert!(tool(&flush).0, "memcflush {proto:?}");
        assert_eq!(Conn::new(s.ports[s.home(&key)]).text(format!("get {key}\r\n").as_bytes()), "END\r\n");
    }

    let script = format!(
        r#"
from pymemcache.client.base import Client
c = Client(("127.0.0.1", {port}), default_noreply=True)
assert c.set("py1", b"one")
c.set_many({{"py%d" % i: b"v%d" % i for i in range(2, 30)}})
got = c.get_many(["py%d" % i for i in range(1, 30)] + ["absent"])
assert got["py1"] == b"one" and len(got) == 29 and got["py7"] == b"v7", got
assert c.add("py1", b"x", noreply=False) is False
c.set("n", b"5", noreply=False)
assert c.incr("n", 3) == 8
assert c.decr("n", 10) == 0
v, cas = c.gets("py2")
assert c.cas("py2", b"changed", cas, noreply=False) is True
assert c.cas("py2", b"again", cas, noreply=False) is False
assert c.get("py2") == b"changed"
assert c.touch("py3", 100, noreply=False) is True
assert c.delete("py3", noreply=False) is True
assert c.get("py3") is None
assert c.version().startswith(b"1.")
assert int(c.stats()[b"servers"]) == 3
print("ok")
"#,
        port = s.pp
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{}", String::from_utf8_lossy(&out.stderr));
    let mut d = Conn::new(s.ports[s.home("py17")]);
    assert_eq!(d.text(b"get py17\r\n"), "VALUE py17 0 3\r\nv17\r\nEND\r\n");
}

#[test]
fn a_killed_backend_fails_only_its_own_keys() {
    if !programs_or_skip("proxy_memcache", &["memcached"]) || !can_drop_root_or_skip("proxy_memcache") {
        return;
    }
    let mut s = Setup::new();
    let mut c = Conn::new(s.pp);
    let dead = s.keys_on(1, 5);
    let alive: Vec<String> = [s.keys_on(0, 5), s.keys_on(2, 5)].concat();
    for k in dead.iter().chain(&alive) {
        assert_eq!(c.text(&set(k, "v")), "STORED\r\n");
    }
    // Kill server 1.
    s.backends[1] = None;
    // Pipelined over both kinds of key: replies in order, errors exactly for the dead one's.
    let order: Vec<&String> = dead.iter().zip(&alive).flat_map(|(d, a)| [d, a]).collect();
    let pipeline: String = order.iter().map(|k| format!("get {k}\r\n")).collect();
    c.send(pipeline.as_bytes());
    for k in &order {
        let r = c.reply();
        if dead.contains(k) {
            assert!(r.starts_with("SERVER_ERROR backend "), "{k}: {r}");
        } else {
            assert_eq!(r, format!("VALUE {k} 0 1\r\nv\r\nEND\r\n"));
        }
    }
    // A get spanning the dead server fails as a whole; one without it is answered.
    let r = c.text(format!("get {} {}\r\n", alive[0], dead[0]).as_bytes());
    assert!(r.starts_with("SERVER_ERROR backend server1 "), "{r}");
    let r = c.text(format!("get {} {}\r\n", alive[0], alive[6]).as_bytes());
    assert_eq!(r.matches("VALUE").count(), 2, "{r}");
    // Binary clients get a status for the dead server's keys.
    c.send(&bin(0x00, 9, &[], dead[1].as_bytes(), &[]));
    let (_, status, opaque, _, _) = fields(&c.packet());
    assert_eq!((status, opaque), (0x0086, 9));
    c.send(&bin(0x00, 10, &[], alive[1].as_bytes(), &[]));
    let (_, status, opaque, _, v) = fields(&c.packet());
    assert_eq!((status, opaque, v), (0, 10, b"v".to_vec()));
    // Broadcasts name the failing server.
    assert!(c.text(b"flush_all\r\n").starts_with("SERVER_ERROR backend server1 "));
}

#[test]
fn an_ejected_backend_s_keys_move_to_the_others_as_under_twemproxy() {
    if !programs_or_skip("proxy_memcache", &["memcached"]) || !can_drop_root_or_skip("proxy_memcache") {
        return;
    }
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 600000\n";
    let mut s = Setup::with(extra);
    let mut c = Conn::new(s.pp);
    let moved = s.keys_on(1, 5);
    // Kill server 1: once the pool ejects it, its keys rehash over servers 0 and 2.
    s.backends[1] = None;
    let end = Instant::now() + WATCHDOG;
    while c.text(&set(&moved[0], "again")) != "STORED\r\n" {
        assert!(Instant::now() < end, "server 1 was never ejected");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rest = s.selector.clone();
    rest.set_live(&[true, false, true]);
    for k in &moved {
        assert_eq!(c.text(&set(k, "again")), "STORED\r\n");
        let home = rest.server_for(k.as_bytes()).unwrap();
        assert_ne!(home, 1);
        assert_eq!(
            Conn::new(s.ports[home]).text(format!("get {k}\r\n").as_bytes()),
            format!("VALUE {k} 0 5\r\nagain\r\nEND\r\n")
        );
    }
    assert!(c.text(b"stats\r\n").contains("STAT server:server1 ejected\r\n"));
    assert_eq!(c.text(b"flush_all\r\n"), "OK\r\n", "an ejected server is out of the broadcast");
}
