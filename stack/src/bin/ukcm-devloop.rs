//! TAP dev loop: a ukcm engine on a TAP device, so a developer can `ping`, `nc` and `curl`
//! into the userspace stack from the host.
//!
//! ```text
//! sudo scripts/tap.sh up ukcm0 10.216.0.2/24          # kernel side .2, persistent
//! cargo run -p ukcm-stack --bin ukcm-devloop -- --tap ukcm0 --ip 10.216.0.1/24
//! ping 10.216.0.1
//! nc 10.216.0.1 7                                      # TCP echo
//! curl http://10.216.0.1:8080/                         # tiny HTTP responder
//! ```
//!
//! Options: `--tap NAME` (default ukcm0), `--ip A.B.C.D/N` (default 10.216.0.1/24),
//! `--gateway A.B.C.D`, `--echo-port P` (7), `--http-port P` (8080), `--create` (create the
//! TAP instead of attaching to one made by scripts/tap.sh), `--seconds N` (exit after N s),
//! `--mac xx:xx:xx:xx:xx:xx` (default 02:75:6b:63:6d:01).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ukcm_nic::tap::{TapConfig, TapPort};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};
use ukcm_stack::smoltcp::socket::tcp;
use ukcm_stack::smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use ukcm_stack::{echo_in_place, ConnId, Engine, EngineConfig, Event, IdleStrategy, TcpOptions};

#[derive(Debug)]
struct Args {
    tap: String,
    ip: Ipv4Cidr,
    gateway: Option<Ipv4Address>,
    echo_port: u16,
    http_port: u16,
    create: bool,
    seconds: Option<u64>,
    mac: [u8; 6],
}

fn usage() -> ! {
    eprintln!(
        "usage: ukcm-devloop [--tap NAME] [--ip A.B.C.D/N] [--gateway A.B.C.D] [--echo-port P] \
         [--http-port P] [--create] [--seconds N] [--mac xx:xx:xx:xx:xx:xx]"
    );
    std::process::exit(2)
}

fn parse_cidr(s: &str) -> Option<Ipv4Cidr> {
    let (a, p) = s.split_once('/')?;
    let a: Ipv4Addr = a.parse().ok()?;
    let p: u8 = p.parse().ok().filter(|p| *p <= 32)?;
    Some(Ipv4Cidr::new(a, p))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s.split(':').map(|x| u8::from_str_radix(x, 16).ok()).collect::<Option<_>>()?;
    v.try_into().ok()
}

fn parse_args() -> Args {
    let mut a = Args {
        tap: "ukcm0".into(),
        ip: Ipv4Cidr::new(Ipv4Addr::new(10, 216, 0, 1), 24),
        gateway: None,
        echo_port: 7,
        http_port: 8080,
        create: false,
        seconds: None,
        mac: [0x02, 0x75, 0x6b, 0x63, 0x6d, 0x01],
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--tap" => a.tap = val(),
            "--ip" => a.ip = parse_cidr(&val()).unwrap_or_else(|| usage()),
            "--gateway" => a.gateway = Some(val().parse().unwrap_or_else(|_| usage())),
            "--echo-port" => a.echo_port = val().parse().unwrap_or_else(|_| usage()),
            "--http-port" => a.http_port = val().parse().unwrap_or_else(|_| usage()),
            "--seconds" => a.seconds = Some(val().parse().unwrap_or_else(|_| usage())),
            "--mac" => a.mac = parse_mac(&val()).unwrap_or_else(|| usage()),
            "--create" => a.create = true,
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    a
}

/// Per-connection state of the HTTP responder: the request bytes seen so far.
#[derive(Default)]
struct Http {
    head: Vec<u8>,
    answered: bool,
}

fn main() -> ExitCode {
    let args = parse_args();
    let tcfg = TapConfig {
        name: args.tap.clone(),
        pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 4096 },
        must_exist: !args.create,
        ..TapConfig::default()
    };
    let port = match TapPort::open(&tcfg, &PinnedBudget::unlimited(), HugePolicy::Prefer) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "ukcm-devloop: cannot open TAP {}: {e}\n  make it first: sudo scripts/tap.sh up {} 10.216.0.2/24 \
                 (or pass --create)",
                args.tap, args.tap
            );
            return ExitCode::FAILURE;
        }
    };
    let cfg = EngineConfig {
        mac: Some(args.mac),
        ipv4: Some(args.ip),
        gateway_v4: args.gateway,
        default_tcp: TcpOptions { nagle: false, ..TcpOptions::default() },
        idle: IdleStrategy::Backoff { spins: 2000, yields: 200, park: Duration::from_micros(500) },
        ..EngineConfig::default()
    };
    let mut e = match Engine::new(port, cfg) {
        Ok(e) => e,
        Err(err) => {
            eprintln!("ukcm-devloop: {err}");
            return ExitCode::FAILURE;
        }
    };
    for p in [args.echo_port, args.http_port] {
        if let Err(err) = e.listen(p, 128) {
            eprintln!("ukcm-devloop: listen {p}: {err}");
            return ExitCode::FAILURE;
        }
    }
    let ip = args.ip.address();
    println!("ukcm-devloop: stack at {} on TAP {} (mac {:02x?})", args.ip, args.tap, args.mac);
    println!("  ping {ip}");
    println!("  nc {ip} {}            # TCP echo", args.echo_port);
    println!("  curl http://{ip}:{}/  # HTTP", args.http_port);
    let end = args.seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut http: HashMap<ConnId, Http> = HashMap::new();
    let mut ready = Vec::new();
    let mut last_report = Instant::now();
    let (echo_port, http_port) = (args.echo_port, args.http_port);
    let r = e.run_until(|e| {
        while e.accept(echo_port).is_some() {}
        while let Some(c) = e.accept(http_port) {
            http.insert(c, Http::default());
        }
        let evs: Vec<Event> = e.events().collect();
        for ev in evs {
            match ev {
                Event::Accepted { conn, port } => {
                    let peer = e.info(conn).ok().and_then(|i| i.remote);
                    println!("accepted {conn} on :{port} from {peer:?}");
                }
                Event::Closed(c) | Event::Reset(c) | Event::TimedOut(c) => {
                    http.remove(&c);
                    println!("{ev:?}");
                }
                other => println!("{other:?}"),
            }
        }
        e.drain_ready(&mut ready);
        for c in ready.drain(..) {
            match http.get_mut(&c) {
                Some(h) => serve_http(e, c, h),
                None => echo(e, c),
            }
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            println!("stats: {:?}", e.stats());
        }
        end.is_some_and(|t| Instant::now() >= t)
    });
    println!("final stats: {:?}\nport: {:?}", e.stats(), e.port_stats());
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ukcm-devloop: {err}");
            ExitCode::FAILURE
        }
    }
}

/// TCP echo, straight from the rx ring into the tx ring as room allows.
fn echo(e: &mut Engine<TapPort>, c: ConnId) {
    let _ = e.with_tcp(c, echo_in_place);
}

fn serve_http(e: &mut Engine<TapPort>, c: ConnId, h: &mut Http) {
    let peer = e.info(c).ok().and_then(|i| i.remote);
    let _ = e.with_tcp(c, |s| {
        while s.can_recv() {
            let _ = s.recv(|b| {
                h.head.extend_from_slice(b);
                (b.len(), ())
            });
        }
        if !h.answered && (h.head.windows(4).any(|w| w == b"\r\n\r\n") || h.head.len() > 16 * 1024) {
            let line = h.head.split(|b| *b == b'\r').next().unwrap_or_default();
            let body = format!(
                "hello from ukcm (userspace TCP/IP on smoltcp)\nyou asked: {}\nyou are: {}\n",
                String::from_utf8_lossy(line),
                peer.map(|p| p.to_string()).unwrap_or_default()
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nServer: ukcm-devloop\r\n\r\n{body}",
                body.len()
            );
            // the response is far below the tx ring size, so it goes in whole
            let _ = s.send_slice(resp.as_bytes());
            s.close();
            h.answered = true;
        }
        if !h.answered && s.state() == tcp::State::CloseWait {
            s.close();
        }
    });
}
