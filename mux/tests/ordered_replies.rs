//! Ordered replies over kernel TCP on loopback (no privileges needed): worker threads that
//! answer in any order, run-to-completion handlers that defer, released slots, dead
//! connections and the unanswered-request limit. The peers are plain kernel TCP streams.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{frame, loopback_pair};
use ukcm_mux::kernel::KernelPsock;
use ukcm_mux::{
    CompletionStatus, Msg, MsgSocket, Mux, MuxConfig, MuxEvent, PsockErrorKind, PsockId, ReplySlot, SocketConfig,
    SteerPolicy,
};
use ukcm_nic::PinnedBudget;
use ukcm_parsers::LengthField;

const RING: usize = 64 * 1024;
/// Overall watchdog of a test (a hang fails instead of blocking CI; progress is judged by events).
const WATCHDOG: Duration = Duration::from_secs(120);

fn ordered_cfg(steer: SteerPolicy) -> MuxConfig {
    MuxConfig {
        steer,
        ordered: true,
        socket: SocketConfig { rx_queue: 256, tx_queue: 256, max_in_flight: 256, tx_ring: 256 * 1024 },
        ..MuxConfig::default()
    }
}

fn attach(mux: &mut Mux<KernelPsock>, s: TcpStream, budget: &Arc<PinnedBudget>) -> PsockId {
    mux.attach(KernelPsock::new(s, RING, 256, budget).unwrap(), Box::new(LengthField::thrift()))
}

/// Request `i` of connection `c`: a body whose first byte says whether it wants a reply
/// (every seventh does not, like memcached's quiet commands), then the ids.
fn request(c: u32, i: u32) -> Vec<u8> {
    let quiet = i % 7 == 3;
    let mut body = vec![u8::from(quiet)];
    body.extend_from_slice(&c.to_be_bytes());
    body.extend_from_slice(&i.to_be_bytes());
    body.resize(9 + (i as usize * 13) % 40, 0xa5);
    frame(&body)
}

fn wants_reply(m: &[u8]) -> bool {
    m[4] == 0
}

/// A deterministic "work time" per message, so workers finish out of order.
fn work_time(m: &[u8]) -> Duration {
    let i = u32::from_be_bytes(m[9..13].try_into().unwrap());
    Duration::from_micros(u64::from((i.wrapping_mul(2_654_435_761) >> 24) % 300))
}

/// Worker: answers each message through its slot after its work time (releases quiet ones).
fn worker(mut sock: MsgSocket, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let Ok(mut m) = sock.recv_timeout(Duration::from_millis(5)) else { continue };
        std::thread::sleep(work_time(&m));
        let slot = m.take_slot().expect("ordered mux gives every message a slot");
        if !wants_reply(&m) {
            drop(slot); // no reply: the place is released
            continue;
        }
        reply_until_queued(&mut sock, slot, &m);
    }
}

/// Replies through `slot`, retrying while the socket has no room (the slot comes back).
fn reply_until_queued(sock: &mut MsgSocket, mut slot: ReplySlot, bytes: &[u8]) {
    while let Err(e) = sock.reply(slot, bytes, None) {
        slot = e.slot;
        std::thread::yield_now();
    }
}

/// Polls the mux until `done`, failing after the watchdog.
fn pump(mux: &mut Mux<KernelPsock>, what: &str, mut done: impl FnMut(&mut Mux<KernelPsock>) -> bool) {
    let end = Instant::now() + WATCHDOG;
    loop {
        mux.poll(Instant::now());
        if done(mux) {
            return;
        }
        assert!(Instant::now() < end, "watchdog: {what} (stats:\n{})", mux.stats_table());
        std::thread::yield_now();
    }
}

/// Clients pipeline all their requests at once and read the replies of the ones that want one.
fn run_clients(mux: &mut Mux<KernelPsock>, clients: Vec<TcpStream>, per_conn: u32) {
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut s)| {
            std::thread::spawn(move || {
                let reqs: Vec<Vec<u8>> = (0..per_conn).map(|i| request(c as u32, i)).collect();
                let mut w = s.try_clone().unwrap();
                let all = reqs.concat();
                let writer = std::thread::spawn(move || w.write_all(&all).unwrap());
                let want: Vec<u8> = reqs.iter().filter(|r| wants_reply(r)).flat_map(|r| r.iter().copied()).collect();
                let mut got = vec![0u8; want.len()];
                s.read_exact(&mut got).unwrap();
                writer.join().unwrap();
                assert!(got == want, "connection {c}: replies are not the requests in order");
            })
        })
        .collect();
    pump(mux, "clients reading their replies", |_| handles.iter().all(|h| h.is_finished()));
    for h in handles {
        h.join().unwrap();
    }
}

fn policies() -> Vec<SteerPolicy> {
    vec![
        SteerPolicy::BatchRoundRobin,
        SteerPolicy::LeastLoaded,
        SteerPolicy::Sticky,
        SteerPolicy::KeyHash(Arc::new(|m: &[u8]| u64::from(m.get(12).copied().unwrap_or(0)))),
    ]
}

#[test]
fn workers_answering_in_any_order_reply_in_request_order_under_every_policy() {
    for policy in policies() {
        for workers in [2, 4] {
            let budget = PinnedBudget::unlimited();
            let (mut mux, first) = Mux::<KernelPsock>::new(ordered_cfg(policy.clone()), &budget).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let mut socks = vec![first];
            for _ in 1..workers {
                let s = socks[0].try_clone().unwrap();
                socks.push(s);
            }
            let ws: Vec<_> = socks
                .into_iter()
                .map(|s| {
                    let stop = Arc::clone(&stop);
                    std::thread::spawn(move || worker(s, stop))
                })
                .collect();
            let mut clients = Vec::new();
            for _ in 0..3 {
                let (s, c) = loopback_pair();
                attach(&mut mux, s, &budget);
                clients.push(c);
            }
            run_clients(&mut mux, clients, 400);
            let t = mux.stats_table();
            stop.store(true, Ordering::Release);
            for w in ws {
                w.join().unwrap();
            }
            let quiet = (0..400).filter(|i| i % 7 == 3).count() as u64 * 3;
            assert_eq!(t.total.rx_msgs, 1200, "{policy:?} x{workers}");
            assert_eq!(t.total.tx_msgs, 1200 - quiet, "{policy:?} x{workers}");
            assert_eq!(t.total.tx_slots_released, quiet, "{policy:?} x{workers}: quiet requests release");
            for id in mux.psock_ids() {
                assert_eq!(mux.psock_unanswered(id), Some(0));
                assert_eq!(mux.psock_replies_held(id), Some(0));
            }
            if workers == 4 && !matches!(policy, SteerPolicy::Sticky) {
                assert!(
                    t.total.tx_replies_held > 0,
                    "{policy:?} x{workers}: no reply ever waited, the test proves nothing"
                );
            }
        }
    }
}

#[test]
fn run_to_completion_handlers_may_defer_and_answer_later_in_any_order() {
    let budget = PinnedBudget::unlimited();
    let (mut mux, _sock) = Mux::<KernelPsock>::new(ordered_cfg(SteerPolicy::default()), &budget).unwrap();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (s, c) = loopback_pair();
        attach(&mut mux, s, &budget);
        clients.push(c);
    }
    let per_conn = 300u32;
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut s)| {
            std::thread::spawn(move || {
                let reqs: Vec<Vec<u8>> = (0..per_conn).map(|i| request(c as u32, i)).collect();
                s.write_all(&reqs.concat()).unwrap();
                let want: Vec<u8> = reqs.iter().filter(|r| wants_reply(r)).flat_map(|r| r.iter().copied()).collect();
                let mut got = vec![0u8; want.len()];
                s.read_exact(&mut got).unwrap();
                assert!(got == want, "connection {c}: replies out of order");
            })
        })
        .collect();
    // Every third request is deferred; deferred ones are answered a few rounds later, newest
    // first, so they come back out of order and must wait for each other.
    let mut deferred: Vec<(ReplySlot, Vec<u8>)> = Vec::new();
    let end = Instant::now() + WATCHDOG;
    let mut rounds = 0u64;
    while !handles.iter().all(|h| h.is_finished()) {
        mux.poll_requests(&mut (), Instant::now(), |r| {
            let m = r.bytes();
            let i = u32::from_be_bytes(m[9..13].try_into().unwrap());
            if !wants_reply(m) {
                return; // nothing appended: no reply, the place is released
            }
            if i % 3 == 0 {
                let bytes = m.to_vec();
                deferred.push((r.defer().expect("ordered"), bytes));
            } else {
                r.reply_buf().extend_from_slice(m);
            }
        });
        rounds += 1;
        if rounds % 4 == 0 {
            while let Some((slot, bytes)) = deferred.pop() {
                mux.reply(slot, &bytes).unwrap();
            }
        }
        assert!(Instant::now() < end, "watchdog (stats:\n{})", mux.stats_table());
        std::thread::yield_now();
    }
    for h in handles {
        h.join().unwrap();
    }
    let t = mux.stats_table();
    assert!(t.total.tx_replies_held > 0, "inline replies waited behind deferred ones");
}

#[test]
fn a_slot_of_a_connection_that_went_away_fails_cleanly() {
    let budget = PinnedBudget::unlimited();
    let (mut mux, mut sock) = Mux::<KernelPsock>::new(ordered_cfg(SteerPolicy::default()), &budget).unwrap();
    let (s, mut c) = loopback_pair();
    let id = attach(&mut mux, s, &budget);
    c.write_all(&[request(0, 0), request(0, 1)].concat()).unwrap();
    let mut got: Vec<Msg> = Vec::new();
    pump(&mut mux, "two requests", |_| {
        sock.recv_batch(&mut got, 2);
        got.len() == 2
    });
    // The client resets the connection (linger 0); the engine unattaches the psock.
    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
    drop(c);
    let mut gone = false;
    pump(&mut mux, "the reset to be seen", |m| {
        while let Some(ev) = m.next_event() {
            let (MuxEvent::PsockError(p, _) | MuxEvent::PsockClosed(p)) = ev;
            {
                assert_eq!(p, id);
                gone = true;
            }
        }
        gone
    });
    mux.unattach(id);
    // Worker path: the reply is accepted by the socket and fails at the engine (EPIPE).
    let s0 = got[0].take_slot().unwrap();
    sock.reply(s0, &got[0], Some(7)).unwrap();
    let mut done = Vec::new();
    pump(&mut mux, "the failed completion", |_| {
        sock.completions(&mut done);
        !done.is_empty()
    });
    assert_eq!(done[0].cookie, 7);
    assert_eq!(done[0].status, CompletionStatus::Failed(PsockErrorKind::Pipe));
    // Engine path: refused at once.
    let s1 = got[1].take_slot().unwrap();
    assert_eq!(mux.reply(s1, b"late"), Err(PsockErrorKind::Pipe));
    assert_eq!(sock.stats().tx_failed, 1);
}

#[test]
fn the_unanswered_limit_holds_the_sender_back_and_nothing_is_lost() {
    let budget = PinnedBudget::unlimited();
    let cfg = MuxConfig { max_unanswered: 8, ..ordered_cfg(SteerPolicy::default()) };
    let (mut mux, mut sock) = Mux::<KernelPsock>::new(cfg, &budget).unwrap();
    let (s, mut c) = loopback_pair();
    let id = attach(&mut mux, s, &budget);
    // Replies for every request (no quiet ones here): 4-byte bodies with the index.
    let n = 3000u32;
    let reqs: Vec<Vec<u8>> = (0..n).map(|i| frame(&i.to_be_bytes())).collect();
    let all = reqs.concat();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&all).unwrap());
    // Nobody answers: the mux delivers exactly the limit and stops (the rest waits in the ring
    // and the kernel's buffers: the sender is held back).
    let mut held: Vec<Msg> = Vec::new();
    pump(&mut mux, "the limit to be reached", |m| {
        sock.recv_batch(&mut held, 64);
        m.psock_stats(id).unwrap().rx_unanswered_stalls > 0
    });
    for _ in 0..50 {
        mux.poll(Instant::now());
        sock.recv_batch(&mut held, 64);
    }
    assert_eq!(held.len(), 8, "exactly the limit is delivered");
    assert_eq!(mux.psock_unanswered(id), Some(8));
    // Answer newest first: all wait for the oldest, then go together.
    let mut slots: Vec<(ReplySlot, Vec<u8>)> = held.iter_mut().map(|m| (m.take_slot().unwrap(), m.to_vec())).collect();
    drop(held);
    while let Some((slot, bytes)) = slots.pop() {
        sock.reply(slot, &bytes, None).unwrap();
    }
    // From here, answer as they come; the client reads everything in order.
    let reader = std::thread::spawn(move || {
        let want: Vec<u8> = reqs.concat();
        let mut got = vec![0u8; want.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == want, "replies out of order or corrupt");
    });
    let mut batch = Vec::new();
    pump(&mut mux, "all replies read", |_| {
        sock.recv_batch(&mut batch, 64);
        for mut m in batch.drain(..) {
            let slot = m.take_slot().unwrap();
            reply_until_queued(&mut sock, slot, &m);
        }
        reader.is_finished()
    });
    reader.join().unwrap();
    writer.join().unwrap();
    let st = mux.psock_stats(id).unwrap();
    assert_eq!(st.rx_msgs, u64::from(n));
    assert_eq!(st.tx_msgs, u64::from(n));
    assert!(st.tx_replies_held >= 7, "the first seven replies waited for the oldest");
}
