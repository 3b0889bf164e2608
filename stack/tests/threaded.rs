//! Engines driven from other threads (bounded queues) and run-to-completion on the
//! caller's thread, over the in-memory pair with the real clock.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ukcm_nic::{mem_pair, HugePolicy, MemPairConfig, PinnedBudget, PoolConfig};
use ukcm_stack::{spawn_engine, AppEvent, Engine, Event};

fn ports() -> (ukcm_nic::MemPort, ukcm_nic::MemPort) {
    let pc = MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 4096 },
        huge: HugePolicy::Never,
        ..MemPairConfig::default()
    };
    mem_pair(&pc, &PinnedBudget::unlimited()).unwrap()
}

const N: usize = 1 << 20;

/// Client side through an EngineHandle: connect, send N bytes, read the echo, close.
fn client(h: &ukcm_stack::EngineHandle) {
    let c = h.connect(ep4(B4, 7), None).unwrap();
    eprintln!("client: connect issued {c}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut connected = false;
    while !connected {
        match h.events().recv_timeout(Duration::from_secs(10)).unwrap() {
            AppEvent::Conn(Event::Connected(x)) if x == c => connected = true,
            e => panic!("unexpected {e:?}"),
        }
    }
    let data: Vec<u8> = (0..N as u64).map(|i| pattern(3, i)).collect();
    for chunk in data.chunks(10_000) {
        h.send(c, chunk.to_vec()).unwrap();
    }
    eprintln!("client: connected, data queued");
    let mut got = Vec::with_capacity(N);
    while got.len() < N {
        assert!(Instant::now() < deadline, "echo incomplete: {} of {N}", got.len());
        match h.events().recv_timeout(Duration::from_secs(10)).unwrap() {
            AppEvent::Data { conn, data } if conn == c => {
                got.extend_from_slice(&data);
                if std::env::var_os("UKCM_TEST_TRACE").is_some() {
                    eprintln!("client: {} bytes back", got.len());
                }
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(got == data, "echo differs");
    h.close(c).unwrap();
    // the server closes when it sees our FIN; wait for its FIN, then give our engine a
    // moment to acknowledge it
    match h.events().recv_timeout(Duration::from_secs(10)).unwrap() {
        AppEvent::Eof(x) if x == c => {}
        e => panic!("unexpected {e:?}"),
    }
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn spawned_engines_echo_a_mebibyte_through_bounded_queues() {
    let (pa, pb) = ports();
    let a = spawn_engine(cfg(A4, A6, PinnedBudget::unlimited()), move || Ok(pa)).unwrap();
    let b = spawn_engine(cfg(B4, B6, PinnedBudget::unlimited()), move || Ok(pb)).unwrap();
    b.listen(7, 16, None).unwrap();
    // echo server: an application thread reading b's queue and writing back
    let bh = b.clone();
    let server = std::thread::spawn(move || loop {
        match bh.events().recv_timeout(Duration::from_secs(30)) {
            Ok(AppEvent::Data { conn, data }) => bh.send(conn, data).unwrap(),
            Ok(AppEvent::Eof(conn)) => {
                bh.close(conn).unwrap();
            }
            Ok(AppEvent::Conn(Event::Closed(_))) => return,
            Ok(_) => {}
            Err(e) => panic!("server: {e}"),
        }
    });
    client(&a);
    server.join().unwrap();
    let st = b.stats().unwrap();
    assert_eq!(st.accepted, 1);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn run_to_completion_server_handles_data_inline() {
    let (pa, pb) = ports();
    let a = spawn_engine(cfg(A4, A6, PinnedBudget::unlimited()), move || Ok(pa)).unwrap();
    let mut b = Engine::new(pb, cfg(B4, B6, PinnedBudget::unlimited())).unwrap();
    b.listen(7, 16).unwrap();
    let cl = std::thread::spawn(move || {
        client(&a);
        a.shutdown().unwrap();
    });
    // the server: this thread polls and echoes straight from the rx ring into the tx ring
    let mut ready = Vec::new();
    let mut closed = false;
    b.run_until(|e| {
        while e.accept(7).is_some() {}
        for ev in e.events() {
            if matches!(ev, Event::Closed(_)) {
                closed = true;
            }
        }
        e.drain_ready(&mut ready);
        for c in ready.drain(..) {
            // inline, on the engine thread: rx ring -> tx ring as room allows
            let _ = e.with_tcp(c, ukcm_stack::echo_in_place);
        }
        // data left in the ring for lack of tx room: look again next poll
        closed
    })
    .unwrap();
    cl.join().unwrap();
}
