//! The operator's endpoints, on kernel sockets whatever transport the pools use: the
//! twemproxy stats port (connect, read one JSON document, the proxy closes) and an HTTP port
//! serving Prometheus text at `/metrics`. Each runs on a thread of its own, one connection at
//! a time with short timeouts, so a slow or hostile scraper delays the next scrape, never
//! the proxy.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Renders the current figures (called once per connection).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// How long a scraper may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest HTTP request head read (a scrape is one short GET).
const MAX_HEAD: usize = 8192;

/// What an endpoint answers on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// twemproxy's stats port: the document, then close.
    StatsJson,
    /// HTTP/1.x: `GET /metrics` (Prometheus text); anything else 404 or 405.
    Metrics,
}

/// A running endpoint; dropping it stops the thread.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Listens on `addr` and serves `kind` from `render`.
    pub fn start(addr: SocketAddr, kind: Kind, render: Render) -> io::Result<Endpoint> {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let name = match kind {
            Kind::StatsJson => "ukcm-stats",
            Kind::Metrics => "ukcm-metrics",
        };
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            while !s.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((c, _)) => {
                        // A failed scrape is the scraper's problem; the next one starts clean.
                        let _ = serve(c, kind, &render);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })?;
        Ok(Endpoint { addr, stop, thread: Some(thread) })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut c: TcpStream, kind: Kind, render: &Render) -> io::Result<()> {
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    match kind {
        Kind::StatsJson => c.write_all(render().as_bytes()),
        Kind::Metrics => {
            let head = read_head(&mut c)?;
            let answer = http_answer(&head, render);
            c.write_all(&answer)
        }
    }
}

/// Reads up to the end of the request head (bounded).
fn read_head(c: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too long"));
        }
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// The HTTP response for a request head.
fn http_answer(head: &[u8], render: &Render) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, body, ctype) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => ("200 OK", render(), "text/plain; version=0.0.4; charset=utf-8"),
        (b"GET" | b"HEAD", _) => ("404 Not Found", "not found: the metrics are at /metrics\n".into(), "text/plain"),
        _ => ("405 Method Not Allowed", "only GET /metrics\n".into(), "text/plain"),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != b"HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(addr: SocketAddr, req: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(req).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn stats_port_sends_the_document_and_closes() {
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n2 = Arc::clone(&n);
        let render: Render = Arc::new(move || format!("{{\"n\":{}}}", n2.fetch_add(1, Ordering::Relaxed)));
        let e = Endpoint::start("127.0.0.1:0".parse().unwrap(), Kind::StatsJson, render).unwrap();
        assert_eq!(fetch(e.local_addr(), b""), "{\"n\":0}");
        assert_eq!(fetch(e.local_addr(), b""), "{\"n\":1}");
    }

    #[test]
    fn metrics_port_answers_get_metrics_only() {
        let render: Render = Arc::new(|| "m 1\n".to_string());
        let e = Endpoint::start("127.0.0.1:0".parse().unwrap(), Kind::Metrics, render).unwrap();
        let ok = fetch(e.local_addr(), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 4\r\n") && ok.ends_with("\r\n\r\nm 1\n"), "{ok}");
        let head = fetch(e.local_addr(), b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"), "{head}");
        assert!(fetch(e.local_addr(), b"GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(fetch(e.local_addr(), b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // A scraper that sends nothing holds the endpoint for the timeout at most.
        let idle = TcpStream::connect(e.local_addr()).unwrap();
        let later = fetch(e.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(later.starts_with("HTTP/1.1 200"), "{later}");
        drop(idle);
    }
}
