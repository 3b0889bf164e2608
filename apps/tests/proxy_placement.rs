//! Key placement against the real twemproxy: three `redis-server`s behind `nutcracker`,
//! keys written through nutcracker, each backend asked which keys it holds, and
//! `ukcm_apps::proxy` must name the same backend for every key. One pool per case: every
//! hash function under ketama, modula (with names whose sorted order differs from the
//! file's), weights, server names, hash tags, and the port-11211 naming rule.
//!
//! Needs `nutcracker` and `redis-server` (scripts/install-deps.sh); without them it prints
//! SKIP, or fails under UKCM_PRIVILEGED=1 (CI). `UKCM_PROXY_VECTORS=1` prints a few
//! observed (key, server) pairs per case, the source of the unit-test vectors.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ukcm_apps::proxy::config::Config;
use ukcm_apps::proxy::dist::Selector;

/// Kills and reaps the child on drop.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temp dir removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ukcm-placement-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have(prog: &str) -> bool {
    Command::new(prog).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

fn connect_within(addr: &str, limit: Duration) -> TcpStream {
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(e) if start.elapsed() > limit => panic!("connect {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One RESP reply, flattened to text (enough for +OK, :n, $bulk, -ERR).
fn read_reply(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read reply");
    assert!(line.ends_with("\r\n"), "short reply {line:?}");
    let line = line.trim_end().to_owned();
    if let Some(n) = line.strip_prefix('$') {
        let n: i64 = n.parse().unwrap();
        if n < 0 {
            return "(nil)".into();
        }
        let mut buf = vec![0; n as usize + 2];
        std::io::Read::read_exact(r, &mut buf).unwrap();
        return String::from_utf8_lossy(&buf[..n as usize]).into_owned();
    }
    line
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Pipelines `cmds` on `s` and returns the replies.
fn pipeline(s: &TcpStream, cmds: &[Vec<u8>]) -> Vec<String> {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let replies = std::thread::scope(|sc| {
        let reader = sc.spawn(move || (0..cmds.len()).map(|_| read_reply(&mut r)).collect());
        for c in cmds {
            w.write_all(c).unwrap();
        }
        reader.join().unwrap()
    });
    replies
}

struct Redis {
    ip: &'static str,
    port: u16,
    _child: Reap,
    _dir: TempDir,
}

impl Redis {
    fn start(ip: &'static str, port: u16) -> Redis {
        let dir = TempDir::new(&format!("redis-{ip}-{port}"));
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", ip, "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let child = Reap(child);
        let s = connect_within(&format!("{ip}:{port}"), Duration::from_secs(10));
        assert_eq!(pipeline(&s, &[command(&[b"PING"])]), ["+PONG"]);
        Redis { ip, port, _child: child, _dir: dir }
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    fn conn(&self) -> TcpStream {
        connect_within(&self.addr(), Duration::from_secs(5))
    }
}

/// A pool setup: hash, distribution, hash tag, and per server (weight, name).
struct Case {
    label: String,
    hash: &'static str,
    dist: &'static str,
    hash_tag: Option<&'static str>,
    servers: Vec<(u32, Option<&'static str>)>,
}

fn keys() -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for i in 0..240 {
        keys.push(format!("key:{i}").into_bytes());
    }
    for i in 0..40 {
        // lengths 1..=40, to cover every tail case of the block hashes
        keys.push((0..=i).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect());
    }
    for i in 0..30 {
        // bytes >= 0x80: twemproxy's hashes see them as signed chars
        keys.push(vec![b'k', 0x80 + i as u8, b'y', 0xe9, b'0' + (i % 10) as u8, 0xff]);
        keys.push(vec![0xc3, 0xa9, i as u8 + 0x90]);
    }
    for i in 0..30 {
        keys.push(format!("user:{{{}}}:name", i % 7).into_bytes());
        keys.push(format!("x{{}}y{i}").into_bytes());
        keys.push(format!("{{tag{i}").into_bytes());
    }
    keys
}

fn yaml_config(case: &Case, listen: u16, backends: &[&Redis]) -> String {
    let mut y = format!(
        "alpha:\n  listen: 127.0.0.1:{listen}\n  hash: {}\n  distribution: {}\n  redis: true\n",
        case.hash, case.dist
    );
    if let Some(t) = case.hash_tag {
        y += &format!("  hash_tag: \"{t}\"\n");
    }
    y += "  servers:\n";
    for (b, (w, name)) in backends.iter().zip(&case.servers) {
        y += &format!("   - {}:{w}", b.addr());
        if let Some(n) = name {
            y += &format!(" {n}");
        }
        y += "\n";
    }
    y
}

/// Runs one case; returns the mismatches (empty when placement agrees).
fn run_case(case: &Case, backends: &[&Redis], keys: &[Vec<u8>], work: &Path) -> Vec<String> {
    let listen = free_port("127.0.0.1");
    let stats = free_port("127.0.0.1");
    let yaml = yaml_config(case, listen, backends);
    let conf = work.join(format!("{}.yml", case.label));
    std::fs::write(&conf, &yaml).unwrap();
    let log = work.join(format!("{}.log", case.label));
    let _nc = Reap(
        Command::new("nutcracker")
            .arg("-c")
            .arg(&conf)
            .args(["-s", &stats.to_string(), "-a", "127.0.0.1"])
            .arg("-p")
            .arg(work.join(format!("{}.pid", case.label)))
            .arg("-o")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nutcracker"),
    );
    for b in backends {
        assert_eq!(pipeline(&b.conn(), &[command(&[b"FLUSHALL"])]), ["+OK"]);
    }
    let proxy = connect_within(&format!("127.0.0.1:{listen}"), Duration::from_secs(10));
    let sets: Vec<Vec<u8>> = keys.iter().map(|k| command(&[b"SET", k, b"v"])).collect();
    let replies = pipeline(&proxy, &sets);
    for (k, r) in keys.iter().zip(&replies) {
        assert_eq!(r, "+OK", "{}: SET {:?} through nutcracker", case.label, k);
    }

    // Where each key really is.
    let exists: Vec<Vec<u8>> = keys.iter().map(|k| command(&[b"EXISTS", k])).collect();
    let held: Vec<Vec<String>> = backends.iter().map(|b| pipeline(&b.conn(), &exists)).collect();

    // Where ukcm says it goes: the same YAML through our config parser.
    let cfg = Config::parse(&yaml).unwrap_or_else(|e| panic!("{}: {e}\n{yaml}", case.label));
    let pool = &cfg.pools[0];
    let sel: Selector = pool.selector();

    let mut bad = Vec::new();
    let mut observed = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let on: Vec<usize> = (0..backends.len()).filter(|&b| held[b][i] == ":1").collect();
        let want = sel.server_for(k);
        if on.len() != 1 || Some(on[0]) != want {
            bad.push(format!("{}: key {:?}: nutcracker put it on {on:?}, ukcm says {want:?}", case.label, k));
        } else if i % 37 == 5 {
            observed.push(format!("(b\"{}\", {})", k.escape_ascii(), on[0]));
        }
    }
    if std::env::var_os("UKCM_PROXY_VECTORS").is_some() {
        println!("{}: {}", case.label, observed.join(", "));
    }
    bad
}

#[test]
fn key_placement_matches_nutcracker() {
    let privileged = std::env::var("UKCM_PRIVILEGED").as_deref() == Ok("1");
    if !have("nutcracker") || !have("redis-server") {
        let msg = "nutcracker and redis-server are needed (scripts/install-deps.sh)";
        assert!(!privileged, "{msg}");
        println!("SKIP: {msg}");
        return;
    }
    let work = TempDir::new("work");
    let redis: Vec<Redis> = (0..3).map(|_| Redis::start("127.0.0.1", free_port("127.0.0.1"))).collect();
    let three: Vec<&Redis> = redis.iter().collect();
    let keys = keys();

    let plain = |label: String, hash, dist| Case { label, hash, dist, hash_tag: None, servers: vec![(1, None); 3] };
    let mut cases = Vec::new();
    for hash in [
        "one_at_a_time",
        "md5",
        "crc16",
        "crc32",
        "crc32a",
        "fnv1_64",
        "fnv1a_64",
        "fnv1_32",
        "fnv1a_32",
        "hsieh",
        "murmur",
        "jenkins",
    ] {
        // Named, so the placement does not depend on the ports and the observed vectors
        // can be unit tests (proxy::dist); unnamed servers are covered by the cases below.
        cases.push(Case {
            servers: vec![(1, Some("server-a")), (1, Some("server-b")), (1, Some("server-c"))],
            ..plain(format!("ketama-{hash}"), hash, "ketama")
        });
    }
    for hash in ["fnv1a_64", "crc16", "murmur"] {
        cases.push(plain(format!("modula-{hash}"), hash, "modula"));
    }
    cases.push(Case {
        label: "ketama-weighted".into(),
        hash: "fnv1a_64",
        dist: "ketama",
        hash_tag: None,
        servers: vec![(1, None), (2, None), (5, None)],
    });
    cases.push(Case {
        label: "modula-weighted-names".into(),
        hash: "md5",
        dist: "modula",
        hash_tag: None,
        // file order c, aa, b; twemproxy's order b, c, aa
        servers: vec![(1, Some("c")), (3, Some("aa")), (2, Some("b"))],
    });
    cases.push(Case {
        label: "ketama-names".into(),
        hash: "murmur",
        dist: "ketama",
        hash_tag: None,
        servers: vec![(1, Some("redis-one")), (1, Some("redis-two")), (1, Some("redis-three"))],
    });
    cases.push(Case {
        label: "ketama-hashtag".into(),
        hash: "fnv1a_64",
        dist: "ketama",
        hash_tag: Some("{}"),
        servers: vec![(1, None); 3],
    });
    cases.push(Case {
        label: "modula-hashtag-weighted".into(),
        hash: "hsieh",
        dist: "modula",
        hash_tag: Some("{}"),
        servers: vec![(2, None), (1, None), (1, None)],
    });

    let mut bad = Vec::new();
    for case in &cases {
        bad.extend(run_case(case, &three, &keys, &work.0));
    }

    // Port 11211: twemproxy hashes "host" without ":port". 127.0.0.2 is loopback too.
    if TcpListener::bind(("127.0.0.2", 11211)).is_ok() {
        let r11211 = Redis::start("127.0.0.2", 11211);
        let mixed = [&redis[0], &redis[1], &r11211];
        let case = plain("ketama-port-11211".into(), "md5", "ketama");
        bad.extend(run_case(&case, &mixed, &keys, &work.0));
    } else {
        println!("note: 127.0.0.2:11211 busy, port-11211 naming case not run");
    }

    let n = bad.len();
    for b in bad.iter().take(40) {
        eprintln!("{b}");
    }
    assert_eq!(n, 0, "{n} keys placed differently from nutcracker");
    println!("placement agrees with nutcracker on {} keys x {} cases", keys.len(), cases.len() + 1);
}
