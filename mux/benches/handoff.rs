//! Worker hand-off latency at depth 1: how long one 64-byte request takes from the client's
//! send to its echo arriving back, when the echo is made
//!
//! * `rtc`: by a run-to-completion handler on the engine thread (no hand-off), or
//! * `worker_spin`: by a worker thread busy-polling in `MsgSocket::recv` (`RecvWait::Spin`), or
//! * `worker_block`: by a worker thread blocked in `MsgSocket::recv` (`RecvWait::Block`).
//!
//! Both engines (client A and server B, over the in-memory pair), the server's mux and the
//! client run on the bench thread, which busy-polls like `ukcm-echo --busy-poll` (spin,
//! then yield when idle); the worker is a second thread. The difference between a worker
//! row and `rtc` is the hand-off: a message crossing the socket's queue to the worker and
//! its reply crossing back to the engine. Each case runs with the next request sent at
//! once (gap 0) and 50 µs after the previous echo (about a network round trip: long
//! enough for an idle worker to go to sleep, as it does in a server); only the round trip
//! itself is timed.
//!
//! `cargo bench -p ukcm-mux --bench handoff` (both threads free to use both cores), and
//! `taskset -c 1 cargo bench -p ukcm-mux --bench handoff` (one core, like the system
//! bench, where the server's engine and its worker are pinned to the same cpu).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr};
use ukcm_mux::stack_psock::StackPsock;
use ukcm_mux::{Msg, MsgSocket, Mux, MuxConfig, RecvError, RecvWait, SendError, SocketConfig};
use ukcm_nic::{mem_pair, FaultConfig, HugePolicy, MemPairConfig, MemPort, PinnedBudget, PoolConfig};
use ukcm_parsers::LengthField;
use ukcm_stack::{ConnId, Engine, EngineConfig, TcpOptions};

const A: Ipv4Address = Ipv4Address::new(10, 8, 4, 1);
const B: Ipv4Address = Ipv4Address::new(10, 8, 4, 2);
const PORT: u16 = 7400;
const SIZE: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Rtc,
    WorkerSpin,
    WorkerBlock,
}

struct Rig {
    a: Engine<MemPort>,
    b: Engine<MemPort>,
    mux: Mux<StackPsock<MemPort>>,
    conn: ConnId,
    mode: Mode,
    msg: Vec<u8>,
    buf: Vec<u8>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

fn reply(sock: &mut MsgSocket, m: &Msg) {
    loop {
        match sock.send_to(m.origin(), m, None) {
            Ok(()) => return,
            Err(SendError::WouldBlock) => std::hint::spin_loop(),
            Err(e) => panic!("reply: {e}"),
        }
    }
}

fn worker(mut sock: MsgSocket, mode: Mode, stop: &AtomicBool) {
    sock.set_recv_wait(if mode == Mode::WorkerSpin { RecvWait::Spin } else { RecvWait::Block });
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => reply(&mut sock, &m),
            Err(RecvError::TimedOut) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

impl Rig {
    fn new(mode: Mode) -> Rig {
        let pc = MemPairConfig {
            pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 4096 },
            link_capacity: 1024,
            a_to_b: FaultConfig::none(),
            b_to_a: FaultConfig::none(),
            huge: HugePolicy::Never,
            ..MemPairConfig::default()
        };
        let (pa, pb) = mem_pair(&pc, &PinnedBudget::unlimited()).unwrap();
        let tcp = TcpOptions { nagle: false, ack_delay: None, inplace_rx: true, ..TcpOptions::default() };
        let cfg = |ip| EngineConfig { ipv4: Some(Ipv4Cidr::new(ip, 24)), default_tcp: tcp, ..EngineConfig::default() };
        let (mut a, mut b) = (Engine::new(pa, cfg(A)).unwrap(), Engine::new(pb, cfg(B)).unwrap());
        let budget = PinnedBudget::unlimited();
        let mcfg = MuxConfig {
            socket: SocketConfig { rx_queue: 64, tx_queue: 64, max_in_flight: 1, tx_ring: 64 * 1024 },
            ..MuxConfig::default()
        };
        let (mut mux, sock) = Mux::<StackPsock<MemPort>>::new(mcfg, &budget).unwrap();
        b.listen(PORT, 4).unwrap();
        let conn = a.connect(IpEndpoint::new(IpAddress::Ipv4(B), PORT)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while mux.psock_ids().is_empty() {
            assert!(Instant::now() < deadline, "no connection");
            a.poll().unwrap();
            b.poll().unwrap();
            if let Some(c) = b.accept(PORT) {
                let io = StackPsock::new(&mut b, c, 64 * 1024, 64, &budget).unwrap();
                mux.attach(io, Box::new(LengthField::thrift()));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let worker = match mode {
            Mode::Rtc => None,
            _ => {
                let stop = Arc::clone(&stop);
                Some(std::thread::spawn(move || worker(sock, mode, &stop)))
            }
        };
        let mut msg = ((SIZE - 4) as u32).to_be_bytes().to_vec();
        msg.resize(SIZE, 0x5a);
        Rig { a, b, mux, conn, mode, msg, buf: vec![0u8; 4096], stop, worker }
    }

    /// Polls for `gap` (the time a request spends on a real network and in the client
    /// between echoes), so an idle worker goes to sleep as it would in a server.
    fn idle_for(&mut self, gap: Duration) {
        let start = Instant::now();
        while start.elapsed() < gap {
            self.a.poll().unwrap();
            self.b.poll().unwrap();
            let now = Instant::now();
            match self.mode {
                Mode::Rtc => self.mux.poll_engine_rtc(&mut self.b, now, |_, m, out| out.extend_from_slice(m)),
                _ => self.mux.poll_engine(&mut self.b, now),
            };
            std::thread::yield_now();
        }
    }

    /// One request and its echo.
    fn round_trip(&mut self) {
        assert_eq!(self.a.send(self.conn, &self.msg).unwrap(), SIZE);
        let mut got = 0;
        let mut idle = 0u32;
        while got < SIZE {
            let mut work = self.a.poll().unwrap() | self.b.poll().unwrap();
            let now = Instant::now();
            work |= match self.mode {
                Mode::Rtc => self.mux.poll_engine_rtc(&mut self.b, now, |_, m, out| out.extend_from_slice(m)),
                _ => self.mux.poll_engine(&mut self.b, now),
            };
            let n = self.a.recv(self.conn, &mut self.buf).unwrap();
            got += n;
            // The engine's idle loop of `ukcm-echo --busy-poll`: spin, then yield.
            if work || n > 0 {
                idle = 0;
            } else {
                idle += 1;
                if idle < 32 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        assert_eq!(got, SIZE);
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.mux.shutdown();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn handoff(c: &mut Criterion) {
    for gap_us in [0u64, 50] {
        let gap = Duration::from_micros(gap_us);
        let mut g = c.benchmark_group(format!("handoff_depth1_64B_gap{gap_us}us"));
        for mode in [Mode::Rtc, Mode::WorkerSpin, Mode::WorkerBlock] {
            let name = match mode {
                Mode::Rtc => "rtc",
                Mode::WorkerSpin => "worker_spin",
                Mode::WorkerBlock => "worker_block",
            };
            let mut rig = Rig::new(mode);
            for _ in 0..1000 {
                rig.round_trip();
            }
            g.bench_function(name, |bch| {
                bch.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        rig.idle_for(gap);
                        let start = Instant::now();
                        rig.round_trip();
                        spent += start.elapsed();
                    }
                    spent
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = handoff
}
criterion_main!(benches);
