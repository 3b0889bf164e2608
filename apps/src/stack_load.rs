//! The load generator over the ukcm stack: C connections of a `ukcm_stack::Engine`
//! (`Engine::connect` / `send` / `recv`), driven on the calling thread, closed loop with
//! `depth` messages outstanding per connection. Same messages, same verification and the
//! same HdrHistogram as [`crate::load`] (which uses kernel sockets); the result is a
//! [`LoadReport`].

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ukcm_nic::Port;
use ukcm_parsers::{parser_from_spec, Parse, Parser};
use ukcm_stack::smoltcp::socket::tcp::State;
use ukcm_stack::smoltcp::wire::{IpCidr, IpEndpoint};
use ukcm_stack::{ConnId, Engine, EngineConfig};

use crate::cli::SizeRange;
use crate::load::LoadReport;
use crate::report::new_histogram;
use crate::wire::{Arrival, EchoWindow, Framing, Generator};
use ukcm::transport::server_tcp_options;

/// Settings of a stack load run (closed loop).
#[derive(Debug, Clone)]
pub struct StackLoadConfig {
    /// The server.
    pub server: IpEndpoint,
    /// Connections.
    pub conns: usize,
    /// Outstanding messages per connection.
    pub depth: usize,
    /// Message sizes, header included.
    pub sizes: SizeRange,
    /// How long to send.
    pub duration: Duration,
    /// Framing of the messages.
    pub framing: Framing,
    /// How long to wait for the last replies after sending stops.
    pub drain: Duration,
    /// A progress line per second on stderr.
    pub progress: bool,
}

/// The load generator's own engine on `port`: address `addr`, IPv4 or IPv6 (no gateway:
/// it talks to on-link servers), `mac` or the port's own, the echo server's TCP options
/// (Nagle off, 512 KiB rings).
pub fn client_engine<P: Port>(port: P, mac: Option<[u8; 6]>, addr: IpCidr) -> io::Result<Engine<P>> {
    let mut cfg = EngineConfig { mac, default_tcp: server_tcp_options(), ..EngineConfig::default() };
    match addr {
        IpCidr::Ipv4(a) => cfg.ipv4 = Some(a),
        IpCidr::Ipv6(a) => cfg.ipv6 = Some(a),
    }
    Engine::new(port, cfg).map_err(|e| io::Error::other(format!("client engine: {e}")))
}

struct Conn {
    id: u32,
    conn: ConnId,
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
    dead: bool,
}

/// Runs the load on `engine` (polled here, on this thread); `stop` ends sending early.
pub fn run<P: Port>(engine: &mut Engine<P>, cfg: &StackLoadConfig, stop: &AtomicBool) -> io::Result<LoadReport> {
    cfg.framing.check_sizes(cfg.sizes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut conns = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        let conn =
            engine.connect(cfg.server).map_err(|e| io::Error::other(format!("connect to {}: {e}", cfg.server)))?;
        conns.push(Conn {
            id: i as u32,
            conn,
            gen: Generator::new(cfg.framing.clone(), i as u32, cfg.sizes),
            parser: parser_from_spec(cfg.framing.spec()).map_err(|e| io::Error::other(e.to_string()))?,
            tx: Vec::with_capacity(cfg.depth * cfg.sizes.max),
            tx_pos: 0,
            rx: vec![0; (4 * cfg.sizes.max).max(64 * 1024)],
            rx_start: 0,
            rx_end: 0,
            window: EchoWindow::default(),
            outstanding: 0,
            dead: false,
        });
    }
    // Handshakes first, so the clock starts with everything connected.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        engine.poll().map_err(|e| io::Error::other(format!("engine: {e}")))?;
        let up = conns.iter().filter(|c| engine.info(c.conn).is_ok_and(|i| i.state == State::Established)).count();
        if up == conns.len() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {}: {up} of {} connections established after 5 s", cfg.server, conns.len()),
            ));
        }
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
        rate: None,
    };
    let start = Instant::now();
    let end = start + cfg.duration;
    let mut send_end = end;
    let mut next_tick = start + Duration::from_secs(1);
    let mut last = (0u64, 0u64);
    loop {
        let now = Instant::now();
        let sending = now < end && !stop.load(Ordering::Relaxed);
        if !sending && send_end == end && now < end {
            send_end = now;
        }
        let drain_until = send_end.max(now.min(end)) + cfg.drain;
        if !sending && (now >= drain_until || conns.iter().all(|c| c.outstanding == 0 || c.dead)) {
            break;
        }
        if cfg.progress && now >= next_tick && sending {
            let outstanding = rep.sent - rep.received;
            eprintln!(
                "[{:>3}s] {:>10} msg/s {:>9.1} MB/s  outstanding {outstanding}  corrupt {}",
                next_tick.duration_since(start).as_secs(),
                rep.received - last.0,
                (rep.rx_bytes - last.1) as f64 / 1e6,
                rep.corrupt
            );
            last = (rep.received, rep.rx_bytes);
            next_tick += Duration::from_secs(1);
        }
        let now_ns = now.duration_since(start).as_nanos() as u64;
        for c in conns.iter_mut().filter(|c| !c.dead) {
            if sending {
                let before = c.tx.len();
                while c.outstanding < cfg.depth {
                    let len = c.gen.next_len();
                    let seq = c.window.send();
                    c.gen.push(&mut c.tx, len, seq, now_ns);
                    c.outstanding += 1;
                    rep.sent += 1;
                }
                rep.tx_bytes += (c.tx.len() - before) as u64;
            }
            while c.tx_pos < c.tx.len() {
                match engine.send(c.conn, &c.tx[c.tx_pos..]) {
                    Ok(0) => break,
                    Ok(n) => c.tx_pos += n,
                    Err(e) => {
                        rep.errors.push(format!("connection {}: send: {e}", c.id));
                        c.dead = true;
                        break;
                    }
                }
            }
            if c.tx_pos == c.tx.len() {
                c.tx.clear();
                c.tx_pos = 0;
            }
        }
        engine.poll().map_err(|e| io::Error::other(format!("engine: {e}")))?;
        let at_ns = Instant::now().duration_since(start).as_nanos() as u64;
        for c in conns.iter_mut().filter(|c| !c.dead) {
            if let Err(e) = read_and_check(engine, c, at_ns, &mut rep) {
                rep.errors.push(format!("connection {}: {e}", c.id));
                c.dead = true;
            }
        }
    }
    for c in &conns {
        rep.lost += c.outstanding as u64;
        let _ = engine.close(c.conn);
    }
    rep.elapsed = send_end.duration_since(start).max(Duration::from_millis(1));
    // Let the FINs go out (bounded).
    let fin = Instant::now() + Duration::from_millis(200);
    while Instant::now() < fin && engine.connection_count() > 0 {
        let _ = engine.poll();
    }
    Ok(rep)
}

fn read_and_check<P: Port>(engine: &mut Engine<P>, c: &mut Conn, now_ns: u64, r: &mut LoadReport) -> io::Result<()> {
    loop {
        if c.rx_end == c.rx.len() {
            c.rx.copy_within(c.rx_start..c.rx_end, 0);
            c.rx_end -= c.rx_start;
            c.rx_start = 0;
        }
        let n = match engine.recv(c.conn, &mut c.rx[c.rx_end..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => {
                return if c.outstanding > 0 {
                    Err(io::Error::other(format!("server closed with {} messages outstanding ({e})", c.outstanding)))
                } else {
                    Ok(())
                }
            }
        };
        c.rx_end += n;
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
    }
}
