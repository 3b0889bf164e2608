//! In-process benchmark: two engines over the in-memory pair on ONE thread, a client
//! keeping `depth` framed messages in flight per connection, and a server that echoes
//! each message either through the mux (delineation, steering, a `Msg` per message,
//! `send_to` its origin) or by doing its own framing over raw smoltcp (read into a buffer,
//! find lengths, copy each message out and back) — the same stack, with and without the mux.
//!
//! `cargo bench -p ukcm-mux --bench inproc` (UKCM_BENCH_SECS to change the 2 s per case;
//! UKCM_BENCH_ONLY=mux64|rtc64|rtcip64|raw64 runs one server at 64 B x depth 64, and
//! rtc4k|rtcip4k at 4 KiB x depth 16, e.g. under a profiler; `ip`: replies built in place;
//! UKCM_BENCH_MSGS=N runs it for N messages instead of a time: instructions per message are
//! then `(Ir(N2) - Ir(N1)) / (N2 - N1)` under `valgrind --tool=callgrind`).

use std::time::{Duration, Instant};

use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr};
use ukcm_mux::stack_psock::StackPsock;
use ukcm_mux::{Mux, MuxConfig, SocketConfig};
use ukcm_nic::{mem_pair, FaultConfig, HugePolicy, MemPairConfig, MemPort, PinnedBudget, PoolConfig};
use ukcm_parsers::LengthField;
use ukcm_stack::{ConnId, Engine, EngineConfig, TcpOptions};

const A: Ipv4Address = Ipv4Address::new(10, 8, 1, 1);
const B: Ipv4Address = Ipv4Address::new(10, 8, 1, 2);
const PORT: u16 = 7100;
const CONNS: usize = 4;

#[derive(Clone, Copy, PartialEq)]
enum Server {
    /// Mux with a message socket: `Msg` views, queues, `send_to`.
    Mux,
    /// Mux run-to-completion: handler in place, reply appended to the reply buffer and
    /// written to the connection (one copy into smoltcp's ring).
    MuxRtc,
    /// Mux run-to-completion with the reply built in smoltcp's tx ring (`reply_with`).
    MuxRtcInPlace,
    /// Raw smoltcp, the application doing its own framing and copying.
    Raw,
}

fn engines() -> (Engine<MemPort>, Engine<MemPort>) {
    let pc = MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 16384 },
        link_capacity: 4096,
        a_to_b: FaultConfig::none(),
        b_to_a: FaultConfig::none(),
        huge: HugePolicy::Prefer,
        ..MemPairConfig::default()
    };
    let (pa, pb) = mem_pair(&pc, &PinnedBudget::unlimited()).unwrap();
    // The clients read with `recv` (no in-place ring); the servers' options are below.
    let tcp =
        TcpOptions { rx_buf: 512 * 1024, tx_buf: 512 * 1024, nagle: false, inplace_rx: false, ..TcpOptions::default() };
    let cfg = |ip| EngineConfig {
        ipv4: Some(Ipv4Cidr::new(ip, 24)),
        default_tcp: tcp,
        max_frames_per_poll: 256,
        ..EngineConfig::default()
    };
    (Engine::new(pa, cfg(A)).unwrap(), Engine::new(pb, cfg(B)).unwrap())
}

struct Client {
    conn: ConnId,
    /// Messages sent or queued and not yet echoed back.
    outstanding: usize,
    /// Messages queued to send.
    queued: usize,
    /// Bytes of the current message already sent.
    partial: usize,
    inbuf: Vec<u8>,
}

fn run(server: Server, size: usize, depth: usize, secs: f64, idle: usize) -> f64 {
    run_with(server, size, depth, secs, idle, false)
}

/// `ordered`: the mux orders replies (every message carries a reply slot; the message
/// socket server replies through it).
fn run_with(server: Server, size: usize, depth: usize, secs: f64, idle: usize, ordered: bool) -> f64 {
    let (mut a, mut b) = engines();
    let budget = PinnedBudget::unlimited();
    // The mux servers lend messages in place (zero-copy receive); raw smoltcp copies out.
    let server_tcp = TcpOptions {
        rx_buf: 512 * 1024,
        tx_buf: 512 * 1024,
        nagle: false,
        inplace_rx: server != Server::Raw,
        ..TcpOptions::default()
    };
    b.listen_with(PORT, 16, server_tcp).unwrap();
    let (mut mux, mut sock) = Mux::<StackPsock<MemPort>>::new(
        MuxConfig {
            socket: SocketConfig { rx_queue: 4096, tx_queue: 4096, max_in_flight: 1, tx_ring: 8 << 20 },
            ordered,
            max_unanswered: 8192,
            ..MuxConfig::default()
        },
        &budget,
    )
    .unwrap();
    if idle > 0 {
        // Idle connections, attached to the mux with small rings: they must cost nothing.
        // Copying psocks, as when the README's figures were taken (in-place rings would add
        // 20,000 mirror mappings at 10,000 idle connections).
        let small = TcpOptions { rx_buf: 4096, tx_buf: 4096, inplace_rx: false, ..TcpOptions::default() };
        b.listen_with(PORT + 1, 1024, small).unwrap();
        let mut attached = 0;
        let mut opened = 0;
        while attached < idle {
            while opened < idle && opened < attached + 512 {
                a.connect_with(IpEndpoint::new(IpAddress::Ipv4(B), PORT + 1), small).unwrap();
                opened += 1;
            }
            a.poll().unwrap();
            b.poll().unwrap();
            while let Some(conn) = b.accept(PORT + 1) {
                let io = StackPsock::new(&mut b, conn, 16 * 1024, 16, &budget).unwrap();
                mux.attach(io, Box::new(LengthField::thrift()));
                attached += 1;
            }
            mux.poll_engine(&mut b, Instant::now());
        }
    }
    let mut clients: Vec<Client> = (0..CONNS)
        .map(|_| Client {
            conn: a.connect(IpEndpoint::new(IpAddress::Ipv4(B), PORT)).unwrap(),
            outstanding: 0,
            queued: 0,
            partial: 0,
            inbuf: Vec::new(),
        })
        .collect();
    let mut msg = ((size - 4) as u32).to_be_bytes().to_vec();
    msg.resize(size, 0x5a);

    let mut raw_conns: Vec<(ConnId, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut held = None;
    let mut buf = vec![0u8; 256 * 1024];

    let mut done = 0u64;
    // A fixed number of messages instead of a time (no warm-up): for instruction counts
    // that do not depend on how fast the machine ran.
    let target: Option<u64> = std::env::var("UKCM_BENCH_MSGS").ok().and_then(|s| s.parse().ok());
    let t0 = Instant::now();
    let mut start: Option<Instant> = target.map(|_| t0);
    let warmup = Duration::from_millis(300);
    loop {
        a.poll().unwrap();
        b.poll().unwrap();
        while let Some(conn) = b.accept(PORT) {
            match server {
                Server::Mux | Server::MuxRtc | Server::MuxRtcInPlace => {
                    let io = StackPsock::new(&mut b, conn, 4 << 20, 8192, &budget).unwrap();
                    mux.attach(io, Box::new(LengthField::thrift()));
                }
                Server::Raw => raw_conns.push((conn, Vec::new(), Vec::new())),
            }
        }
        match server {
            Server::Mux => {
                mux.poll_engine(&mut b, Instant::now());
                while let Some(mut m) = held.take().or_else(|| sock.try_recv()) {
                    let sent = match m.take_slot() {
                        Some(slot) => sock.reply(slot, &m, None).map_err(|e| Some(e.slot)),
                        None => sock.send_to(m.origin(), &m, None).map_err(|_| None),
                    };
                    if let Err(slot) = sent {
                        // Keep the slot with the message for the retry.
                        if let Some(slot) = slot {
                            m = m.with_slot(slot);
                        }
                        held = Some(m);
                        break;
                    }
                }
            }
            Server::MuxRtc => {
                mux.poll_engine_rtc(&mut b, Instant::now(), |_, m, out| out.extend_from_slice(m));
            }
            Server::MuxRtcInPlace => {
                mux.poll_engine_requests(&mut b, Instant::now(), |r| {
                    let m = r.bytes();
                    r.reply_with(m.len(), |dst| dst.copy_from_slice(m));
                });
            }
            Server::Raw => {
                for (conn, inb, outb) in raw_conns.iter_mut() {
                    loop {
                        let n = b.recv(*conn, &mut buf).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        inb.extend_from_slice(&buf[..n]);
                    }
                    // the application's own framing: find each message, copy it out and back
                    let mut off = 0;
                    while inb.len() - off >= 4 {
                        let len = u32::from_be_bytes(inb[off..off + 4].try_into().unwrap()) as usize + 4;
                        if inb.len() - off < len {
                            break;
                        }
                        let m = inb[off..off + len].to_vec();
                        outb.extend_from_slice(&m);
                        off += len;
                    }
                    inb.drain(..off);
                    if !outb.is_empty() {
                        let n = b.send(*conn, outb).unwrap_or(0);
                        outb.drain(..n);
                    }
                }
            }
        }
        // client: keep `depth` in flight per connection, count whole echoes
        for c in clients.iter_mut() {
            while c.outstanding < depth {
                c.queued += 1;
                c.outstanding += 1;
            }
            while c.queued > 0 {
                let n = a.send(c.conn, &msg[c.partial..]).unwrap_or(0);
                if n == 0 {
                    break;
                }
                c.partial += n;
                if c.partial == size {
                    c.partial = 0;
                    c.queued -= 1;
                }
            }
            loop {
                let n = a.recv(c.conn, &mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                c.inbuf.extend_from_slice(&buf[..n]);
            }
            let whole = c.inbuf.len() / size;
            if whole > 0 {
                c.inbuf.drain(..whole * size);
                c.outstanding -= whole;
                if start.is_some() {
                    done += whole as u64;
                }
            }
        }
        let now = Instant::now();
        if let (Some(n), Some(s)) = (target, start) {
            if done >= n {
                return done as f64 / (now - s).as_secs_f64();
            }
            continue;
        }
        match start {
            None if now - t0 >= warmup => start = Some(now),
            Some(s) if (now - s).as_secs_f64() >= secs => return done as f64 / (now - s).as_secs_f64(),
            _ => {}
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: f64 = std::env::var("UKCM_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    // For profiling one server: UKCM_BENCH_ONLY=mux64 | rtc64 | rtcip64 | raw64 | … (64 B x
    // depth 64; `o`: ordered replies), rtc4k | rtcip4k (4 KiB x depth 16).
    let only = std::env::var("UKCM_BENCH_ONLY").unwrap_or_default();
    for (name, server, ordered, size, depth) in [
        ("mux64", Server::Mux, false, 64, 64),
        ("rtc64", Server::MuxRtc, false, 64, 64),
        ("rtcip64", Server::MuxRtcInPlace, false, 64, 64),
        ("raw64", Server::Raw, false, 64, 64),
        ("mux64o", Server::Mux, true, 64, 64),
        ("rtc64o", Server::MuxRtc, true, 64, 64),
        ("rtcip64o", Server::MuxRtcInPlace, true, 64, 64),
        ("rtc4k", Server::MuxRtc, false, 4096, 16),
        ("rtcip4k", Server::MuxRtcInPlace, false, 4096, 16),
    ] {
        if only == name {
            println!("{name}: {:.0} msgs/s", run_with(server, size, depth, secs, 0, ordered));
            return;
        }
    }
    if only == "ordered" {
        ordered_cost(secs);
        return;
    }
    println!("in-process echo, {CONNS} connections, both engines and the server on one thread, {secs} s per case");
    println!("| size | depth | raw smoltcp + own framing (msgs/s) | mux, message socket (msgs/s) | ratio | mux, run-to-completion (msgs/s) | ratio | rtc, reply built in place (msgs/s) | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &(size, depth) in &[(64usize, 64usize), (4096, 16)] {
        let raw = run(Server::Raw, size, depth, secs, 0);
        let mux = run(Server::Mux, size, depth, secs, 0);
        let rtc = run(Server::MuxRtc, size, depth, secs, 0);
        let ip = run(Server::MuxRtcInPlace, size, depth, secs, 0);
        println!(
            "| {size} | {depth} | {raw:.0} | {mux:.0} | {:.2} | {rtc:.0} | {:.2} | {ip:.0} | {:.2} |",
            mux / raw,
            rtc / raw,
            ip / raw
        );
    }
    println!();
    ordered_cost(secs);
    println!();
    println!("mux scale: 64 B, depth 64 on {CONNS} busy connections, plus idle attached psocks");
    println!("| idle psocks | mux (msgs/s) | vs 0 idle |");
    println!("|---:|---:|---:|");
    let base = run(Server::Mux, 64, 64, secs, 0);
    println!("| 0 | {base:.0} | 1.00 |");
    for idle in [1_000usize, 10_000] {
        let r = run(Server::Mux, 64, 64, secs, idle);
        println!("| {idle} | {r:.0} | {:.2} |", r / base);
    }
}

/// Ordered replies against unordered, 64 B x depth 64, both threading models; replies
/// already arrive in order here (one server thread), the common case whose cost must stay
/// small. Runs alternate (unordered, ordered) three times so machine noise hits both.
fn ordered_cost(secs: f64) {
    println!("ordered replies: 64 B, depth 64, {CONNS} connections, three alternating runs each");
    println!("| server | unordered (msgs/s) | ordered (msgs/s) | ordered / unordered |");
    println!("|---|---:|---:|---:|");
    for (name, server) in [("message socket", Server::Mux), ("run-to-completion", Server::MuxRtc)] {
        let (mut u, mut o) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            u.push(run_with(server, 64, 64, secs, 0, false));
            o.push(run_with(server, 64, 64, secs, 0, true));
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[1]
        };
        let (mu, mo) = (med(&mut u), med(&mut o));
        println!("| {name} | {mu:.0} | {mo:.0} | {:.3} |", mo / mu);
    }
}
