//! Mux over kernel TCP sockets on loopback with many idle attached connections: does an idle
//! connection cost a busy one anything? One busy connection does 64-byte request/response
//! (a run-to-completion echo) while N idle ones are attached, with the psocks either
//! visited every round (no readiness source: one `read` system call per psock per round)
//! or registered with `KernelReadiness` (epoll: only psocks with news are visited).
//!
//! `cargo bench -p ukcm-mux --bench kernel_idle` (UKCM_BENCH_SECS to change the 2 s per case).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ukcm_mux::kernel::{KernelPsock, KernelReadiness};
use ukcm_mux::{Mux, MuxConfig};
use ukcm_nic::PinnedBudget;
use ukcm_parsers::LengthField;

const SIZE: usize = 64;

fn run(idle: usize, readiness: bool, secs: f64) -> f64 {
    let budget = PinnedBudget::unlimited();
    let (mut mux, _sock) = Mux::<KernelPsock>::new(MuxConfig::default(), &budget).unwrap();
    let mut ready = KernelReadiness::new(256).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut keep = Vec::new();
    let mut client = None;
    for i in 0..=idle {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let mut io = KernelPsock::new(s, 16 * 1024, 16, &budget).unwrap();
        if readiness {
            ready.register(&mut io).unwrap();
        }
        mux.attach(io, Box::new(LengthField::thrift()));
        if i == 0 {
            c.set_nodelay(true).unwrap();
            c.set_nonblocking(true).unwrap();
            client = Some(c);
        } else {
            keep.push(c);
        }
    }
    let mut client = client.unwrap();
    let mut msg = ((SIZE - 4) as u32).to_be_bytes().to_vec();
    msg.resize(SIZE, 0x5a);
    let mut buf = [0u8; SIZE];
    let (mut done, mut start) = (0u64, None::<Instant>);
    let t0 = Instant::now();
    loop {
        client.write_all(&msg).unwrap();
        let mut got = 0;
        while got < SIZE {
            if readiness {
                ready.poll(&mut mux, Some(Duration::ZERO)).unwrap();
            }
            mux.poll_rtc(&mut (), Instant::now(), |_, m: &[u8], out: &mut Vec<u8>| out.extend_from_slice(m));
            match client.read(&mut buf[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let now = Instant::now();
        match start {
            None if now - t0 >= Duration::from_millis(300) => start = Some(now),
            Some(s) => {
                done += 1;
                if (now - s).as_secs_f64() >= secs {
                    return done as f64 / (now - s).as_secs_f64();
                }
            }
            None => {}
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: f64 = std::env::var("UKCM_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    println!("kernel psocks on loopback: one busy connection (64 B request/response, rtc echo), N idle attached");
    println!("| idle psocks | every psock every round (round trips/s) | epoll readiness (round trips/s) | ratio |");
    println!("|---:|---:|---:|---:|");
    for idle in [0usize, 100, 1000] {
        let all = run(idle, false, secs);
        let ready = run(idle, true, secs);
        println!("| {idle} | {all:.0} | {ready:.0} | {:.2} |", ready / all);
    }
}
