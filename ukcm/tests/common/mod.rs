//! Helpers shared by the server tests: framing, the test requests, a slow echo handler,
//! pipelining clients that check order, and a scriptable backend.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ukcm::Reply;

/// Overall watchdog of a wait (progress is judged by events; this only stops a hang).
pub const WATCHDOG: Duration = Duration::from_secs(90);

pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let mut body = vec![0u8; u32::from_be_bytes(h) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// Request `i` of connection `c`; every seventh is "quiet" (no reply, like memcached's
/// quiet commands): its first byte is `q`.
pub fn body(c: usize, i: usize) -> Vec<u8> {
    let quiet = i % 7 == 3;
    let mut b = format!("{}c{c}i{i}-", if quiet { 'q' } else { 'r' }).into_bytes();
    b.resize(b.len() + (i * 17) % 50, b'x');
    b
}

/// The test handler: waits a deterministic "work time" (so workers finish out of order),
/// then echoes; quiet requests get no reply.
pub fn slow_echo(req: &[u8], reply: &mut Reply<'_>) {
    let h = req.iter().fold(7u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    std::thread::sleep(Duration::from_micros(h % 250));
    if req[4] != b'q' {
        reply.send(req).unwrap();
    }
}

/// `conns` clients each pipeline `n` requests and check that the replies are exactly the
/// non-quiet requests, in order.
pub fn pipelined_clients(at: SocketAddr, conns: usize, n: usize) {
    pipelined_clients_with(conns, n, move || TcpStream::connect(at).unwrap());
}

/// [`pipelined_clients`] with connections from `connect` (e.g. inside a namespace).
pub fn pipelined_clients_with(conns: usize, n: usize, connect: impl Fn() -> TcpStream + Sync) {
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..conns)
            .map(|c| {
                let connect = &connect;
                sc.spawn(move || {
                    let mut s = connect();
                    s.set_read_timeout(Some(WATCHDOG)).unwrap();
                    let all: Vec<u8> = (0..n).flat_map(|i| frame(&body(c, i))).collect();
                    let mut w = s.try_clone().unwrap();
                    let writer = std::thread::spawn(move || w.write_all(&all).unwrap());
                    for i in (0..n).filter(|i| i % 7 != 3) {
                        let got = read_frame(&mut s).unwrap();
                        assert_eq!(got, body(c, i), "connection {c}: reply out of order or wrong");
                    }
                    writer.join().unwrap();
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
}

/// A backend: answers each framed request with `tag` + the request body, until killed
/// (listener and connections closed). `stall`: reads but never answers.
pub struct Backend {
    pub addr: SocketAddr,
    /// Connections open now (the proxy's side has not closed them).
    pub open: Arc<std::sync::atomic::AtomicUsize>,
    kill: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    pub fn start(l: TcpListener, tag: &'static str, stall: bool) -> Backend {
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let kill = Arc::new(AtomicBool::new(false));
        let k = Arc::clone(&kill);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let o = Arc::clone(&open);
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !k.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((s, _)) => {
                        let k = Arc::clone(&k);
                        let mut r = s.try_clone().unwrap();
                        conns.push(s);
                        let open = Arc::clone(&o);
                        open.fetch_add(1, Ordering::AcqRel);
                        std::thread::spawn(move || {
                            r.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                            // Counts the connection closed however this thread ends.
                            struct Closed(Arc<std::sync::atomic::AtomicUsize>);
                            impl Drop for Closed {
                                fn drop(&mut self) {
                                    self.0.fetch_sub(1, Ordering::AcqRel);
                                }
                            }
                            let _closed = Closed(open);
                            loop {
                                if k.load(Ordering::Acquire) {
                                    return;
                                }
                                match read_frame(&mut r) {
                                    Ok(b) if !stall => {
                                        let mut out = tag.as_bytes().to_vec();
                                        out.extend_from_slice(&b);
                                        if r.write_all(&frame(&out)).is_err() {
                                            return;
                                        }
                                    }
                                    Ok(_) => {}
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => return,
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        });
        Backend { addr, open, kill, thread: Some(thread) }
    }

    pub fn kill(mut self) {
        self.kill.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Sends `n` pipelined requests (`prefix-i`) on `s` and returns (request, reply body) pairs,
/// in order.
pub fn round_trip_on(mut s: TcpStream, prefix: &str, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let reqs: Vec<Vec<u8>> = (0..n).map(|i| format!("{prefix}-{i}").into_bytes()).collect();
    s.write_all(&reqs.iter().flat_map(|r| frame(r)).collect::<Vec<u8>>()).unwrap();
    reqs.into_iter().map(|r| (r, read_frame(&mut s).unwrap())).collect()
}
