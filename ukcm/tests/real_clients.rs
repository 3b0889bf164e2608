//! Real clients judge: `redis-cli` and a pipelining RESP client against the `forward`
//! example in front of two real `redis-server`s (loopback). The programs come from
//! `scripts/install-deps.sh`; without them the test says SKIP, unless `UKCM_PRIVILEGED=1`
//! (the test command as root installs them), where their absence fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ukcm::testing::{free_port, programs_or_skip, redis_cli, redis_server, wait_for_port, ChildGuard};

const WATCHDOG: Duration = Duration::from_secs(60);

/// An example binary, built by `cargo test` next to this test's binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let p = dir.join(name);
    assert!(p.exists(), "{} not built (cargo test builds the examples)", p.display());
    p
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

#[test]
fn redis_clients_through_the_forward_example_get_every_reply_right_and_in_order() {
    if !programs_or_skip("redis_forward", &["redis-server", "redis-cli"]) {
        return;
    }
    let (p0, p1, pf) = (free_port(), free_port(), free_port());
    let _r0 = redis_server(p0);
    let _r1 = redis_server(p1);
    let _fwd = ChildGuard::new(
        Command::new(example("forward"))
            .args([format!("127.0.0.1:{pf}"), format!("127.0.0.1:{p0}"), format!("127.0.0.1:{p1}")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        None,
    );
    wait_for_port(pf, WATCHDOG);
    let end = Instant::now() + WATCHDOG;
    while redis_cli(pf, &["set", "warm", "up"]) != "OK" {
        assert!(Instant::now() < end, "the forwarder never reached its backends");
        std::thread::sleep(Duration::from_millis(50));
    }
    // redis-cli --pipe: 1,000 SETs in one stream; it counts the replies and errors.
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend(resp(&["SET", &format!("key:{i}"), &format!("value-{i}")]));
    }
    let mut pipe = Command::new("redis-cli")
        .args(["-p", &pf.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    pipe.stdin.take().unwrap().write_all(&input).unwrap();
    let out = pipe.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 1000"), "redis-cli --pipe said: {text}");
    // The keys are spread over both backends, each key on one (asked directly).
    let n0: usize = redis_cli(p0, &["dbsize"]).parse().unwrap();
    let n1: usize = redis_cli(p1, &["dbsize"]).parse().unwrap();
    assert_eq!(n0 + n1, 1001, "every key on exactly one backend");
    assert!(n0 > 300 && n1 > 300, "keys spread: {n0} / {n1}");
    // A pipelining client: 1,000 GETs in one write, replies read in order.
    let mut s = TcpStream::connect(("127.0.0.1", pf)).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    let gets: Vec<u8> = (0..1000).flat_map(|i| resp(&["GET", &format!("key:{i}")])).collect();
    s.write_all(&gets).unwrap();
    let mut r = BufReader::new(s);
    for i in 0..1000 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let want = format!("value-{i}");
        assert_eq!(line.trim_end(), format!("${}", want.len()), "reply {i}");
        let mut v = vec![0u8; want.len() + 2];
        r.read_exact(&mut v).unwrap();
        assert_eq!(&v[..want.len()], want.as_bytes(), "reply {i} out of order");
    }
    // Single commands from redis-cli, and a data type with its own reply shape.
    assert_eq!(redis_cli(pf, &["get", "key:7"]), "value-7");
    assert_eq!(redis_cli(pf, &["hset", "h", "a", "1", "b", "2"]), "2");
    assert_eq!(redis_cli(pf, &["hgetall", "h"]), "a\n1\nb\n2");
    assert_eq!(redis_cli(pf, &["incr", "counter"]), "1");
}

/// A thrift server address for the Python client.
fn thrift_client_script(at: SocketAddr, calls: usize) -> String {
    format!(
        r#"
import sys
from thrift.transport import TSocket, TTransport
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TMessageType
sock = TSocket.TSocket("{ip}", {port})
t = TTransport.TFramedTransport(sock)
t.open()
p = TBinaryProtocol.TBinaryProtocol(t)
N = {calls}
for seq in range(N):
    p.writeMessageBegin("echo", TMessageType.CALL, seq)
    p.writeStructBegin("args")
    p.writeFieldBegin("s", 11, 1)
    p.writeString("call %d" % seq + "x" * (seq % 37))
    p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()
    p.writeMessageEnd()
    t.flush()
for seq in range(N):
    name, mtype, rseq = p.readMessageBegin()
    p.readStructBegin()
    _, ftype, fid = p.readFieldBegin()
    s = p.readString()
    p.readFieldEnd()
    p.readFieldBegin()
    p.readStructEnd()
    p.readMessageEnd()
    if rseq != seq or s != "call %d" % seq + "x" * (seq % 37):
        print("reply %d carries seqid %d (%r)" % (seq, rseq, s))
        sys.exit(1)
print("ok %d" % N)
"#,
        ip = at.ip(),
        port = at.port()
    )
}

#[test]
fn apache_thrift_pipelined_calls_get_every_reply_in_order_from_four_workers() {
    if !programs_or_skip("thrift_python", &["python3"]) {
        return;
    }
    let has_lib = Command::new("python3").args(["-c", "import thrift"]).status().is_ok_and(|s| s.success());
    if !has_lib {
        let required = std::env::var_os("UKCM_PRIVILEGED").is_some_and(|v| v == "1");
        assert!(!required, "Python's thrift library is not installed (scripts/install-deps.sh installs it)");
        eprintln!("SKIP thrift_python: Python's thrift library is not installed");
        return;
    }
    // The echo handler with a little work per call, so four workers finish out of order.
    let server = ukcm::Server::builder()
        .listen(0)
        .parser("thrift")
        .workers(4)
        .serve(|req: &[u8], reply: &mut ukcm::Reply<'_>| {
            std::thread::sleep(Duration::from_micros((req.len() as u64 * 37) % 200));
            let _ = reply.send(req);
        })
        .unwrap();
    let out = Command::new("python3").args(["-c", &thrift_client_script(server.local_addr(), 500)]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "thrift client: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.trim(), "ok 500");
    let t = server.stop().unwrap();
    assert!(t.total.tx_replies_held > 0, "no reply waited: four workers never answered out of order");
}
