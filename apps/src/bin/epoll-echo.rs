//! `epoll-echo`: the benchmark's kernel baseline — a plain single-threaded epoll (mio)
//! echo server of length-prefixed messages (4-byte big-endian length, header excluded: the
//! thrift framing `ukcm-load` uses by default). Non-blocking sockets, `TCP_NODELAY`, one
//! read buffer and one write buffer per connection; only whole messages are echoed.
//!
//! ```text
//! epoll-echo --listen 127.0.0.1:7002
//! ```
//!
//! Prints `epoll-echo: listening on ADDR` first; SIGINT/SIGTERM end it (exit 0).

// Doc comments here are clap's --help text (`[:QUEUE]` is a syntax, not a link).
#![allow(rustdoc::broken_intra_doc_links)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use ukcm::signals;
use ukcm_apps::cli;

const PROG: &str = "epoll-echo";
const LISTENER: Token = Token(usize::MAX);
/// Largest message accepted (a bigger length field closes the connection).
const MAX_MSG: usize = 16 << 20;
/// Read buffer a connection starts with (bytes); it doubles when a message needs more.
const RX_START: usize = 4096;

/// Plain epoll echo server of length-prefixed (4-byte BE) messages.
#[derive(Debug, Parser)]
#[command(name = "epoll-echo", version)]
struct Args {
    /// Address to listen on
    #[arg(long, value_name = "IP:PORT")]
    listen: SocketAddr,
}

struct Conn {
    s: TcpStream,
    rx: Vec<u8>,
    rx_len: usize,
    tx: Vec<u8>,
    tx_pos: usize,
}

fn main() {
    let a: Args = cli::parse_or_exit(PROG);
    let stop = signals::stop_flag().unwrap_or_else(|e| cli::fail(PROG, &format!("signals: {e}")));
    let mut listener = TcpListener::bind(a.listen).unwrap_or_else(|e| {
        eprintln!("{PROG}: cannot listen on {}: {e}", a.listen);
        std::process::exit(1)
    });
    let mut poll = Poll::new().expect("epoll_create");
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE).expect("register");
    println!("{PROG}: listening on {}", listener.local_addr().expect("local addr"));
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next = 0usize;
    let mut events = Events::with_capacity(256);
    let (mut msgs, mut bytes) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("{PROG}: epoll_wait: {e}");
            std::process::exit(1);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut s, _)) = listener.accept() {
                    let _ = s.set_nodelay(true);
                    let t = Token(next);
                    next += 1;
                    if poll.registry().register(&mut s, t, Interest::READABLE | Interest::WRITABLE).is_ok() {
                        // A small read buffer that grows with the messages (below), as the kernel's
                        // own buffers do: an idle connection costs 4 KiB here, not 256 KiB
                        // (at 10,000 connections those made 91 KB of RSS per connection).
                        conns.insert(t.0, Conn { s, rx: vec![0; RX_START], rx_len: 0, tx: Vec::new(), tx_pos: 0 });
                    }
                }
                continue;
            }
            let k = ev.token().0;
            let Some(c) = conns.get_mut(&k) else { continue };
            let alive = service(c, &mut msgs, &mut bytes).unwrap_or(false);
            if !alive {
                if let Some(mut c) = conns.remove(&k) {
                    let _ = poll.registry().deregister(&mut c.s);
                }
            }
        }
    }
    println!("{PROG}: echoed {msgs} messages, {bytes} bytes");
}

/// Reads what is there, echoes every whole message, writes what fits. Ok(false): closed.
fn service(c: &mut Conn, msgs: &mut u64, bytes: &mut u64) -> io::Result<bool> {
    let mut open = true;
    loop {
        if c.rx_len == c.rx.len() {
            // A message larger than the buffer: grow to hold it (bounded by MAX_MSG).
            let need = if c.rx_len >= 4 {
                4 + u32::from_be_bytes(c.rx[..4].try_into().expect("4 bytes")) as usize
            } else {
                c.rx.len()
            };
            if need > MAX_MSG + 4 {
                return Ok(false);
            }
            c.rx.resize(need.max(c.rx.len() * 2), 0);
        }
        match c.s.read(&mut c.rx[c.rx_len..]) {
            Ok(0) => {
                open = false;
                break;
            }
            Ok(n) => c.rx_len += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(false),
        }
        // Echo every whole message in the buffer.
        let mut off = 0;
        while c.rx_len - off >= 4 {
            let len = 4 + u32::from_be_bytes(c.rx[off..off + 4].try_into().expect("4 bytes")) as usize;
            if len > MAX_MSG + 4 {
                return Ok(false);
            }
            if c.rx_len - off < len {
                break;
            }
            c.tx.extend_from_slice(&c.rx[off..off + len]);
            off += len;
            *msgs += 1;
            *bytes += len as u64;
        }
        c.rx.copy_within(off..c.rx_len, 0);
        c.rx_len -= off;
        flush(c)?;
    }
    flush(c)?;
    Ok(open || c.tx_pos < c.tx.len())
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while c.tx_pos < c.tx.len() {
        match c.s.write(&c.tx[c.tx_pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.tx_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if c.tx_pos == c.tx.len() {
        c.tx.clear();
        c.tx_pos = 0;
    }
    Ok(())
}
