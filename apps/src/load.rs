//! The load generator: C connections over plain kernel TCP sockets (the client side does
//! not need the mux), spread over a few threads, each thread driving its connections
//! with non-blocking sockets and `mio` readiness.
//!
//! * **closed loop** (no `--rate`): each connection keeps `depth` messages outstanding;
//!   a reply releases the next send. Latency = reply time − send time.
//! * **open loop** (`--rate R`): message k of a connection is *intended* to leave at
//!   `start + k / (R / C)` (connections staggered). It is stamped with that intended time,
//!   and latency is measured from it, so a stalled server shows up as latency instead of
//!   as fewer samples (no coordinated omission, like wrk2). `depth` caps the messages
//!   outstanding per connection; a message held back by the cap keeps its intended time.
//!
//! Every echoed message is delineated with the real parser and verified (connection,
//! magic, FNV-1a 64 checksum of every byte); sequence numbers give lost (never came back
//! before the drain deadline), duplicate and out-of-order counts.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use ukcm_parsers::{parser_from_spec, Parse, Parser};

use crate::cli::SizeRange;
use crate::report::{new_histogram, Percentiles};
use crate::wire::{Arrival, EchoWindow, Framing, Generator};

/// Load settings.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server address.
    pub connect: SocketAddr,
    /// Connections.
    pub conns: usize,
    /// Outstanding messages per connection (closed loop), or their cap (open loop).
    pub depth: usize,
    /// Message sizes, header included.
    pub sizes: SizeRange,
    /// How long to send.
    pub duration: Duration,
    /// Open-loop rate over all connections (messages/s); None: closed loop.
    pub rate: Option<f64>,
    /// Framing of the messages (from the parser spec).
    pub framing: Framing,
    /// Threads (each owns a share of the connections).
    pub threads: usize,
    /// How long to wait for the last replies after sending stops.
    pub drain: Duration,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

/// Counters shared with the progress printer.
#[derive(Debug, Default)]
pub struct Live {
    /// Messages sent.
    pub sent: AtomicU64,
    /// Messages received and verified.
    pub received: AtomicU64,
    /// Bytes received in verified messages.
    pub rx_bytes: AtomicU64,
    /// Corrupt messages.
    pub corrupt: AtomicU64,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Sending time (the measured interval).
    pub elapsed: Duration,
    /// Messages sent.
    pub sent: u64,
    /// Messages echoed and verified.
    pub received: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Bytes in verified echoes.
    pub rx_bytes: u64,
    /// Echoes that failed verification (or a stream whose framing was lost).
    pub corrupt: u64,
    /// Sent and never echoed.
    pub lost: u64,
    /// Echoed twice.
    pub duplicate: u64,
    /// Echoed before an earlier message of the same connection.
    pub out_of_order: u64,
    /// Latency histogram (ns).
    pub latency: Histogram<u64>,
    /// Connection-level problems (connect failures, resets), one line each.
    pub errors: Vec<String>,
    /// Open-loop target (messages/s), if any.
    pub rate: Option<f64>,
}

impl LoadReport {
    /// Verified messages per second of sending time.
    pub fn msgs_per_sec(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Verified echo bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.rx_bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentiles.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.latency)
    }

    /// Nothing lost, corrupt or duplicated, and no connection failed.
    pub fn clean(&self) -> bool {
        self.corrupt == 0 && self.lost == 0 && self.duplicate == 0 && self.errors.is_empty()
    }
}

struct Conn {
    id: u32,
    stream: TcpStream,
    gen: Generator,
    parser: Box<dyn Parser>,
    tx: Vec<u8>,
    tx_pos: usize,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Sent sequence numbers and which came back.
    window: EchoWindow,
    outstanding: usize,
    /// Open loop: when the next message is meant to leave (ns since start).
    interval_ns: f64,
    offset_ns: f64,
    dead: bool,
}

impl Conn {
    fn intended_ns(&self, seq: u64) -> u64 {
        (self.offset_ns + seq as f64 * self.interval_ns) as u64
    }
}

struct ThreadResult {
    sent: u64,
    received: u64,
    tx_bytes: u64,
    rx_bytes: u64,
    corrupt: u64,
    lost: u64,
    duplicate: u64,
    out_of_order: u64,
    latency: Histogram<u64>,
    errors: Vec<String>,
    /// When this thread stopped sending.
    send_end: Instant,
}

/// Runs the load; `stop` ends the sending phase early (e.g. on SIGINT).
pub fn run(cfg: &LoadConfig, stop: &Arc<AtomicBool>, live: &Arc<Live>) -> io::Result<LoadReport> {
    cfg.framing.check_sizes(cfg.sizes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let threads = cfg.threads.clamp(1, cfg.conns.max(1));
    // Connect everything first (blocking connects), so the clock starts with all connected.
    let mut per_thread: Vec<Vec<(u32, std::net::TcpStream)>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..cfg.conns {
        let s = std::net::TcpStream::connect_timeout(&cfg.connect, Duration::from_secs(5))
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {}: {e}", cfg.connect)))?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        per_thread[i % threads].push((i as u32, s));
    }
    let start = Instant::now();
    let end = start + cfg.duration;
    let per_conn_rate = cfg.rate.map(|r| r / cfg.conns as f64);
    let mut handles = Vec::new();
    for (t, streams) in per_thread.into_iter().enumerate() {
        let (cfg, stop, live) = (cfg.clone(), Arc::clone(stop), Arc::clone(live));
        handles.push(
            std::thread::Builder::new()
                .name(format!("ukcm-load-{t}"))
                .spawn(move || drive(&cfg, streams, start, end, per_conn_rate, &stop, &live))?,
        );
    }
    if cfg.progress {
        progress_loop(start, end, stop, live, &handles);
    }
    let mut rep = LoadReport {
        elapsed: Duration::ZERO,
        sent: 0,
        received: 0,
        tx_bytes: 0,
        rx_bytes: 0,
        corrupt: 0,
        lost: 0,
        duplicate: 0,
        out_of_order: 0,
        latency: new_histogram(),
        errors: Vec::new(),
        rate: cfg.rate,
    };
    let mut send_end = start;
    for h in handles {
        let r = h.join().map_err(|_| io::Error::other("a load thread panicked"))??;
        rep.sent += r.sent;
        rep.received += r.received;
        rep.tx_bytes += r.tx_bytes;
        rep.rx_bytes += r.rx_bytes;
        rep.corrupt += r.corrupt;
        rep.lost += r.lost;
        rep.duplicate += r.duplicate;
        rep.out_of_order += r.out_of_order;
        let _ = rep.latency.add(&r.latency);
        rep.errors.extend(r.errors);
        send_end = send_end.max(r.send_end);
    }
    rep.elapsed = send_end.duration_since(start).max(Duration::from_millis(1));
    Ok(rep)
}

fn progress_loop(
    start: Instant,
    end: Instant,
    stop: &AtomicBool,
    live: &Live,
    handles: &[std::thread::JoinHandle<io::Result<ThreadResult>>],
) {
    let mut last = (0u64, 0u64);
    let mut tick = 1u64;
    loop {
        let at = start + Duration::from_secs(tick);
        while Instant::now() < at {
            if handles.iter().all(|h| h.is_finished()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if at > end + Duration::from_millis(500) || stop.load(Ordering::Relaxed) && at > end {
            return;
        }
        let (rx, bytes) = (live.received.load(Ordering::Relaxed), live.rx_bytes.load(Ordering::Relaxed));
        let outstanding = live.sent.load(Ordering::Relaxed).saturating_sub(rx);
        eprintln!(
            "[{tick:>3}s] {:>10} msg/s {:>9.1} MB/s  outstanding {outstanding}  corrupt {}",
            rx.saturating_sub(last.0),
            bytes.saturating_sub(last.1) as f64 / 1e6,
            live.corrupt.load(Ordering::Relaxed)
        );
        last = (rx, bytes);
        tick += 1;
    }
}

fn drive(
    cfg: &LoadConfig,
    streams: Vec<(u32, std::net::TcpStream)>,
    start: Instant,
    end: Instant,
    per_conn_rate: Option<f64>,
    stop: &AtomicBool,
    live: &Live,
) -> io::Result<ThreadResult> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(streams.len());
    let n_all = cfg.conns.max(1) as f64;
    for (k, (id, s)) in streams.into_iter().enumerate() {
        let mut stream = TcpStream::from_std(s);
        poll.registry().register(&mut stream, Token(k), Interest::READABLE | Interest::WRITABLE)?;
        let interval_ns = per_conn_rate.map_or(0.0, |r| 1e9 / r);
        conns.push(Conn {
            id,
            stream,
            gen: Generator::new(cfg.framing.clone(), id, cfg.sizes),
            parser: parser_from_spec(cfg.framing.spec()).map_err(|e| io::Error::other(e.to_string()))?,
            tx: Vec::with_capacity(cfg.depth * cfg.sizes.max),
            tx_pos: 0,
            rx: vec![0; (4 * cfg.sizes.max).max(64 * 1024)],
            rx_start: 0,
            rx_end: 0,
            window: EchoWindow::default(),
            outstanding: 0,
            interval_ns,
            offset_ns: interval_ns * id as f64 / n_all,
            dead: false,
        });
    }
    let mut r = ThreadResult {
        sent: 0,
        received: 0,
        tx_bytes: 0,
        rx_bytes: 0,
        corrupt: 0,
        lost: 0,
        duplicate: 0,
        out_of_order: 0,
        latency: new_histogram(),
        errors: Vec::new(),
        send_end: end,
    };
    let mut events = Events::with_capacity(1024);
    let open = per_conn_rate.is_some();
    let drain_until = end + cfg.drain;
    // What this thread has added to `live` so far: sent, received, rx_bytes, corrupt.
    let mut shown = (0u64, 0u64, 0u64, 0u64);
    loop {
        let now = Instant::now();
        let sending = now < end && !stop.load(Ordering::Relaxed);
        if !sending && r.send_end == end && now < end {
            r.send_end = now; // stopped early (SIGINT)
        }
        if !sending && (now >= drain_until || conns.iter().all(|c| c.outstanding == 0 || c.dead)) {
            break;
        }
        let now_ns = now.duration_since(start).as_nanos() as u64;
        let mut next_due: Option<u64> = None;
        for c in conns.iter_mut().filter(|c| !c.dead) {
            if sending {
                let before = c.tx.len();
                while c.outstanding < cfg.depth {
                    let t = if open {
                        let due = c.intended_ns(c.window.next());
                        if due > now_ns {
                            next_due = Some(next_due.map_or(due, |d: u64| d.min(due)));
                            break;
                        }
                        due
                    } else {
                        now_ns
                    };
                    let len = c.gen.next_len();
                    let seq = c.window.send();
                    c.gen.push(&mut c.tx, len, seq, t);
                    c.outstanding += 1;
                    r.sent += 1;
                }
                let added = (c.tx.len() - before) as u64;
                r.tx_bytes += added;
            }
            if let Err(e) = flush(c) {
                r.errors.push(format!("connection {}: write: {e}", c.id));
                c.dead = true;
            }
        }
        // Several threads share `live`: add this thread's increments (a store would let the
        // totals go backwards).
        live.sent.fetch_add(r.sent - shown.0, Ordering::Relaxed);
        // Wait for replies (or the next intended send, or the end).
        let wait_until = if sending {
            let mut t = end;
            if let Some(d) = next_due {
                t = t.min(start + Duration::from_nanos(d));
            }
            t
        } else {
            drain_until
        };
        let timeout = wait_until.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        // mio's timeout has millisecond resolution: poll without blocking when the next
        // send is due within 1 ms.
        let timeout = if open && timeout < Duration::from_millis(1) { Duration::ZERO } else { timeout };
        poll.poll(&mut events, Some(timeout))?;
        let recv_now = Instant::now();
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if c.dead || !ev.is_readable() {
                continue;
            }
            let at_ns = recv_now.duration_since(start).as_nanos() as u64;
            if let Err(e) = read_and_check(c, at_ns, &mut r) {
                r.errors.push(format!("connection {}: {e}", c.id));
                c.dead = true;
            }
        }
        live.received.fetch_add(r.received - shown.1, Ordering::Relaxed);
        live.rx_bytes.fetch_add(r.rx_bytes - shown.2, Ordering::Relaxed);
        live.corrupt.fetch_add(r.corrupt - shown.3, Ordering::Relaxed);
        shown = (r.sent, r.received, r.rx_bytes, r.corrupt);
    }
    for c in &conns {
        r.lost += c.outstanding as u64;
    }
    Ok(r)
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while c.tx_pos < c.tx.len() {
        match c.stream.write(&c.tx[c.tx_pos..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer closed")),
            Ok(n) => c.tx_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if c.tx_pos == c.tx.len() {
        c.tx.clear();
        c.tx_pos = 0;
    } else if c.tx_pos > c.tx.len() / 2 {
        c.tx.drain(..c.tx_pos);
        c.tx_pos = 0;
    }
    Ok(())
}

fn read_and_check(c: &mut Conn, now_ns: u64, r: &mut ThreadResult) -> io::Result<()> {
    loop {
        if c.rx_end == c.rx.len() {
            // Compact; the buffer holds at least 4 of the largest messages.
            c.rx.copy_within(c.rx_start..c.rx_end, 0);
            c.rx_end -= c.rx_start;
            c.rx_start = 0;
        }
        let n = match c.stream.read(&mut c.rx[c.rx_end..]) {
            Ok(0) => {
                return if c.outstanding > 0 {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("server closed with {} messages outstanding", c.outstanding),
                    ))
                } else {
                    Ok(())
                };
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        c.rx_end += n;
        // A read that did not fill the buffer drained the socket: with edge-triggered epoll
        // any later arrival raises a new event, so the usual extra read that would only say
        // WouldBlock (one more syscall per wakeup) is skipped.
        let drained = c.rx_end < c.rx.len();
        loop {
            let avail = &c.rx[c.rx_start..c.rx_end];
            let len = match c.parser.parse(avail) {
                Ok(Parse::Message(len)) if len <= avail.len() => len,
                Ok(Parse::Message(len)) if len > c.rx.len() => {
                    r.corrupt += 1;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("echo framing lost: a {len}-byte message"),
                    ));
                }
                Ok(_) => break,
                Err(e) => {
                    r.corrupt += 1;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("echo framing lost: {e}")));
                }
            };
            c.parser.reset();
            let m = &c.rx[c.rx_start..c.rx_start + len];
            c.rx_start += len;
            match c.gen.verify(m) {
                Ok(e) => {
                    match c.window.echoed(e.seq) {
                        Arrival::NeverSent => {
                            r.corrupt += 1; // a checksum collision would be needed
                            continue;
                        }
                        Arrival::Duplicate => {
                            r.duplicate += 1;
                            continue;
                        }
                        Arrival::OutOfOrder => r.out_of_order += 1,
                        Arrival::InOrder => {}
                    }
                    c.outstanding -= 1;
                    r.received += 1;
                    r.rx_bytes += len as u64;
                    let _ = r.latency.record(now_ns.saturating_sub(e.t_ns).max(1));
                }
                Err(_) => r.corrupt += 1,
            }
        }
        if c.rx_start == c.rx_end {
            c.rx_start = 0;
            c.rx_end = 0;
        }
        if drained {
            return Ok(());
        }
    }
}
