//! ukcm against the Linux kernel on one veth pair (root; skips otherwise).
//!
//! ```sh
//! sudo cargo bench -p ukcm-stack --bench vs_kernel
//! ```
//!
//! Topology: one `TestNet` veth pair. The kernel peer always lives in the TestNet namespace
//! (call it A) on the peer veth end, every socket of it bound to that end. The other side
//! is, row by row:
//!
//! - **ukcm**: the engine over AF_XDP on the host veth end (the TestNet layout);
//! - **kernel**: right after each ukcm row its engine (and with it the XDP program) is dropped,
//!   the host veth end is moved into a second namespace B and given the address ukcm had,
//!   and a kernel socket there (bound to that end) takes the engine's place; afterwards the
//!   end moves back (no address) for the next ukcm row. Same pair,
//!   same MTU (1500), same addresses, same CPUs.
//!
//! The host-side thread (ukcm engine or the namespace-B kernel socket's thread) is pinned
//! to the first allowed CPU, the namespace-A kernel thread to the second
//! (`sched_setaffinity`; `UKCM_VS_CPUS=a,b` chooses). The engine busy-polls
//! (`IdleStrategy::Spin`); kernel threads block in `read`/`write` as usual.
//!
//! Rows (`UKCM_VS_SECS`, default 3 s each):
//! - one TCP stream, receiver-side goodput (first to last byte): kernel→ukcm vs
//!   kernel(A)→kernel(B), ukcm→kernel vs kernel(B)→kernel(A). ukcm uses 4 MiB rx/tx rings
//!   and copies payload in and out of an application buffer like `write`/`read` do; the
//!   kernel keeps its default buffers. Both sides send from and receive into 256 KiB
//!   buffers.
//! - 64-byte request/response, one connection, depth 1 (TCP_NODELAY / no Nagle): p50,
//!   p99, round trips/s, measured at the client. ukcm client ↔ kernel server vs kernel(B)
//!   client ↔ the same kernel(A) server; kernel(A) client ↔ ukcm server vs kernel(A) client
//!   ↔ kernel(B) server.
//!
//! The peer veth end has tx checksum offload off (TestNet's default: AF_XDP cannot see
//! the missing checksums of `CHECKSUM_PARTIAL` skbs), which also turns off TSO there, so
//! the peer sends MTU-sized segments. The kernel rows keep that setting; one extra context
//! row re-enables it (`ethtool -K tx on`) for the kernel's best case.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Cidr};
use ukcm_nic::afxdp::{AfXdpConfig, AfXdpPort};
use ukcm_nic::testnet::{bind_to_device, is_root, run, TestNet, TestNetOptions};
use ukcm_nic::{HugePolicy, PinnedBudget, PoolConfig};
use ukcm_stack::{echo_in_place, ConnId, Engine, EngineConfig, IdleStrategy, TcpOptions};

const BUF: usize = 256 << 10;
const MSG: usize = 64;
const STREAM_RING: usize = 4 << 20;
/// Extra time any row may take beyond its measuring time before it is declared failed.
const GRACE: Duration = Duration::from_secs(15);

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------
// CPUs and namespaces

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return vec![0];
    }
    // SAFETY: CPU_ISSET reads the set within its bounds (i < CPU_SETSIZE).
    (0..libc::CPU_SETSIZE as usize).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) }).collect()
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> Res<()> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes within the set (callers pass CPUs below CPU_SETSIZE).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; set is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(format!("sched_setaffinity(cpu {cpu}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a fresh thread that joined namespace `ns` and is pinned to `cpu`.
fn in_ns<R: Send>(ns: &str, cpu: usize, f: impl FnOnce() -> Res<R> + Send) -> Res<R> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| -> Res<R> {
            let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            // SAFETY: setns with a valid namespace fd; it changes only this thread's namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
            }
            pin(cpu)?;
            f()
        })
        .join()
        .map_err(|p| format!("thread in {ns} panicked: {:?}", p.downcast_ref::<String>()))?
    })
}

/// Namespace B: holds the host veth end for the kernel↔kernel rows; deleted on drop
/// (which destroys the veth pair with it).
struct HostNs {
    ns: String,
}

impl HostNs {
    fn new(net: &TestNet) -> Res<Self> {
        let ns = format!("{}-hostside", net.ns);
        let e = |e: std::io::Error| e.to_string();
        run(Command::new("ip").args(["netns", "add", &ns])).map_err(e)?;
        let me = HostNs { ns };
        let ipn = |args: &[&str]| run(Command::new("ip").args(["-n", &me.ns]).args(args)).map_err(e);
        run(Command::new("ip").args(["link", "set", &net.host_if, "netns", &me.ns])).map_err(e)?;
        ipn(&["link", "set", "lo", "up"])?;
        let _ = run(Command::new("ip")
            .args(["netns", "exec", &me.ns, "sysctl", "-qw"])
            .arg(format!("net.ipv6.conf.{}.disable_ipv6=1", net.host_if)));
        ipn(&["addr", "add", &format!("{}/{}", net.ukcm_ip, net.prefix), "dev", &net.host_if])?;
        ipn(&["link", "set", &net.host_if, "up"])?;
        Ok(me)
    }
}

impl HostNs {
    /// Moves the host veth end back into our namespace (without an address: the engine's
    /// again) and deletes namespace B.
    fn home(self, net: &TestNet) -> Res<()> {
        let e = |e: std::io::Error| e.to_string();
        let me = std::process::id().to_string();
        run(Command::new("ip").args(["-n", &self.ns, "link", "set", &net.host_if, "netns", &me])).map_err(e)?;
        let _ = run(Command::new("sysctl").args(["-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", net.host_if)]));
        run(Command::new("ip").args(["link", "set", &net.host_if, "up"])).map_err(e)?;
        Ok(())
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "del", &self.ns]));
    }
}

// ---------------------------------------------------------------------------------------
// Kernel sides (each runs on a thread inside its namespace)

fn ioe(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn kernel_listener(dev: &str, addr: SocketAddr) -> Res<TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(ioe("socket"))?;
    bind_to_device(s.as_raw_fd(), dev).map_err(ioe("SO_BINDTODEVICE"))?;
    s.set_reuse_address(true).map_err(ioe("SO_REUSEADDR"))?;
    s.bind(&addr.into()).map_err(ioe("bind"))?;
    s.listen(16).map_err(ioe("listen"))?;
    Ok(s.into())
}

fn kernel_connect(dev: &str, to: SocketAddr, nodelay: bool) -> Res<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(ioe("socket"))?;
    bind_to_device(s.as_raw_fd(), dev).map_err(ioe("SO_BINDTODEVICE"))?;
    s.set_nodelay(nodelay).map_err(ioe("TCP_NODELAY"))?;
    s.connect_timeout(&to.into(), Duration::from_secs(10)).map_err(ioe("connect"))?;
    Ok(s.into())
}

fn accept(l: &TcpListener, nodelay: bool) -> Res<TcpStream> {
    l.set_nonblocking(true).map_err(ioe("nonblocking"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(ioe("blocking"))?;
                s.set_nodelay(nodelay).map_err(ioe("TCP_NODELAY"))?;
                s.set_read_timeout(Some(GRACE)).map_err(ioe("timeout"))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    bytes: u64,
    secs: f64,
}

impl Stream {
    fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs / 1e9
    }
}

/// Reads to EOF; goodput from the first to the last byte.
fn kernel_sink(mut s: TcpStream) -> Res<Stream> {
    s.set_read_timeout(Some(GRACE)).map_err(ioe("timeout"))?;
    let mut buf = vec![0u8; BUF];
    let (mut bytes, mut first, mut last) = (0u64, None, Instant::now());
    loop {
        let n = s.read(&mut buf).map_err(ioe("sink read"))?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        bytes += n as u64;
    }
    let first = first.ok_or("sink got no data")?;
    Ok(Stream { bytes, secs: (last - first).as_secs_f64() })
}

/// Writes for `dur`, then FIN, then waits for the peer's FIN.
fn kernel_source(mut s: TcpStream, dur: Duration) -> Res<()> {
    let buf = vec![0x5au8; BUF];
    let end = Instant::now() + dur;
    while Instant::now() < end {
        s.write_all(&buf).map_err(ioe("source write"))?;
    }
    s.shutdown(Shutdown::Write).map_err(ioe("shutdown"))?;
    s.set_read_timeout(Some(GRACE)).map_err(ioe("timeout"))?;
    let mut b = [0u8; 64];
    while s.read(&mut b).map_err(ioe("source wait for FIN"))? > 0 {}
    Ok(())
}

#[derive(Debug)]
struct Rr {
    hist: Histogram<u64>,
    secs: f64,
}

impl Rr {
    fn new() -> Self {
        Rr { hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram"), secs: 0.0 }
    }
    fn rate(&self) -> f64 {
        self.hist.len() as f64 / self.secs
    }
    fn us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Depth-1 request/response client for `dur`; latency at the client.
fn kernel_rr_client(mut s: TcpStream, dur: Duration) -> Res<Rr> {
    s.set_read_timeout(Some(GRACE)).map_err(ioe("timeout"))?;
    let req = [0x42u8; MSG];
    let mut resp = [0u8; MSG];
    let mut rr = Rr::new();
    let start = Instant::now();
    let end = start + dur;
    let mut now = start;
    while now < end {
        let t0 = Instant::now();
        s.write_all(&req).map_err(ioe("rr write"))?;
        s.read_exact(&mut resp).map_err(ioe("rr read"))?;
        now = Instant::now();
        rr.hist.record((now - t0).as_nanos() as u64).map_err(|e| e.to_string())?;
    }
    rr.secs = (now - start).as_secs_f64();
    s.shutdown(Shutdown::Write).map_err(ioe("shutdown"))?;
    let _ = s.read(&mut resp);
    Ok(rr)
}

/// Echoes 64-byte messages until EOF.
fn kernel_rr_server(mut s: TcpStream) -> Res<()> {
    let mut m = [0u8; MSG];
    loop {
        match s.read_exact(&mut m) {
            Ok(()) => s.write_all(&m).map_err(ioe("rr server write"))?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("rr server read: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// ukcm side (runs on the engine thread)

type Eng = Engine<AfXdpPort>;

/// Raw engine connections, read with `with_tcp`: no in-place ring (nothing is lent).
fn stream_opts() -> TcpOptions {
    TcpOptions { rx_buf: STREAM_RING, tx_buf: STREAM_RING, inplace_rx: false, ..TcpOptions::default() }
}

fn rr_opts() -> TcpOptions {
    TcpOptions { nagle: false, inplace_rx: false, ..TcpOptions::default() }
}

fn eng_err(e: ukcm_stack::StackError) -> String {
    format!("engine: {e:?}")
}

/// Accepts one connection on `port` and reads it to EOF, copying into an app buffer.
fn ukcm_sink(e: &mut Eng, port: u16, limit: Duration) -> Res<Stream> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; BUF];
    let (mut bytes, mut first, mut last) = (0u64, None, Instant::now());
    let (mut conn, mut ready, mut polls, mut failed) = (None::<ConnId>, Vec::new(), 0u32, None);
    e.run_until(|e| {
        polls = polls.wrapping_add(1);
        if polls % 4096 == 0 && Instant::now() > deadline {
            failed = Some(format!("sink timed out after {bytes} bytes"));
            return true;
        }
        let fresh = conn.is_none();
        if fresh {
            conn = e.accept(port);
        }
        let Some(c) = conn else { return false };
        e.drain_ready(&mut ready);
        if !fresh && !ready.contains(&c) {
            return false;
        }
        ready.clear();
        let r = e.with_tcp(c, |s| {
            let mut got = false;
            while s.can_recv() {
                match s.recv_slice(&mut buf) {
                    Ok(n) if n > 0 => {
                        bytes += n as u64;
                        got = true;
                    }
                    _ => break,
                }
            }
            if got {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
            }
            if !s.may_recv() && s.recv_queue() == 0 {
                s.close();
                return true;
            }
            false
        });
        match r {
            Ok(done) => done,
            Err(err) => {
                failed = Some(format!("connection vanished: {err:?}"));
                true
            }
        }
    })
    .map_err(eng_err)?;
    if let Some(f) = failed {
        return Err(f);
    }
    let first = first.ok_or("sink got no data")?;
    Ok(Stream { bytes, secs: (last - first).as_secs_f64() })
}

/// Connects and sends for `dur` from an app buffer, then FIN; runs until `peer_done`.
fn ukcm_source(e: &mut Eng, remote: IpEndpoint, dur: Duration, peer_done: &AtomicBool) -> Res<()> {
    let deadline = Instant::now() + dur + GRACE;
    let src = vec![0x5au8; BUF];
    let c = e.connect_with(remote, stream_opts()).map_err(eng_err)?;
    let (mut end, mut closed, mut ready, mut polls, mut failed) = (None::<Instant>, false, Vec::new(), 0u32, None);
    e.run_until(|e| {
        polls = polls.wrapping_add(1);
        if peer_done.load(Ordering::Relaxed) {
            return true;
        }
        if polls % 4096 == 0 && Instant::now() > deadline {
            failed = Some("source timed out".to_string());
            return true;
        }
        e.drain_ready(&mut ready);
        if closed || !ready.contains(&c) {
            ready.clear();
            return false;
        }
        ready.clear();
        let r = e.with_tcp(c, |s| {
            if s.state() != tcp::State::Established {
                return;
            }
            let now = Instant::now();
            let end = *end.get_or_insert(now + dur);
            if now >= end {
                s.close();
                closed = true;
                return;
            }
            while s.can_send() {
                let n = s
                    .send(|b| {
                        for chunk in b.chunks_mut(src.len()) {
                            chunk.copy_from_slice(&src[..chunk.len()]);
                        }
                        (b.len(), b.len())
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
            }
        });
        if let Err(err) = r {
            failed = Some(format!("connection vanished: {err:?}"));
            return true;
        }
        false
    })
    .map_err(eng_err)?;
    failed.map_or(Ok(()), Err)
}

/// Depth-1 64-byte request/response client for `dur`.
fn ukcm_rr_client(e: &mut Eng, remote: IpEndpoint, dur: Duration) -> Res<Rr> {
    let deadline = Instant::now() + dur + GRACE;
    let c = e.connect_with(remote, rr_opts()).map_err(eng_err)?;
    let req = [0x42u8; MSG];
    let mut resp = [0u8; MSG];
    let mut rr = Rr::new();
    let (mut start, mut end, mut t0) = (None::<Instant>, Instant::now(), Instant::now());
    let (mut got, mut waiting, mut finished, mut ready, mut polls, mut failed) =
        (0usize, false, false, Vec::new(), 0u32, None);
    e.run_until(|e| {
        polls = polls.wrapping_add(1);
        if polls % 4096 == 0 && Instant::now() > deadline {
            failed = Some(format!("rr client timed out after {} round trips", rr.hist.len()));
            return true;
        }
        e.drain_ready(&mut ready);
        if !ready.contains(&c) {
            ready.clear();
            return false;
        }
        ready.clear();
        let r = e.with_tcp(c, |s| -> Res<()> {
            if start.is_none() {
                if s.state() != tcp::State::Established {
                    return Ok(());
                }
                let now = Instant::now();
                start = Some(now);
                end = now + dur;
                t0 = now;
                s.send_slice(&req).map_err(|e| format!("send: {e:?}"))?;
                waiting = true;
                return Ok(());
            }
            if !waiting {
                return Ok(());
            }
            got += s.recv_slice(&mut resp[got..]).map_err(|e| format!("recv: {e:?}"))?;
            if got == MSG {
                got = 0;
                let now = Instant::now();
                rr.hist.record((now - t0).as_nanos() as u64).map_err(|e| e.to_string())?;
                if now < end {
                    t0 = Instant::now();
                    s.send_slice(&req).map_err(|e| format!("send: {e:?}"))?;
                } else {
                    rr.secs = (now - start.unwrap_or(now)).as_secs_f64();
                    waiting = false;
                    finished = true;
                    s.close();
                }
            }
            Ok(())
        });
        match r {
            Ok(Ok(())) => finished,
            Ok(Err(err)) => {
                failed = Some(err);
                true
            }
            Err(err) => {
                failed = Some(format!("connection vanished: {err:?}"));
                true
            }
        }
    })
    .map_err(eng_err)?;
    failed.map_or(Ok(rr), Err)
}

/// Accepts one connection on `port` and echoes it until the peer's FIN.
fn ukcm_rr_server(e: &mut Eng, port: u16, limit: Duration) -> Res<()> {
    let deadline = Instant::now() + limit;
    let (mut conn, mut ready, mut polls, mut failed) = (None::<ConnId>, Vec::new(), 0u32, None);
    e.run_until(|e| {
        polls = polls.wrapping_add(1);
        if polls % 4096 == 0 && Instant::now() > deadline {
            failed = Some("rr server timed out".to_string());
            return true;
        }
        let fresh = conn.is_none();
        if fresh {
            conn = e.accept(port);
        }
        let Some(c) = conn else { return false };
        e.drain_ready(&mut ready);
        if !fresh && !ready.contains(&c) {
            return false;
        }
        ready.clear();
        let r = e.with_tcp(c, |s| {
            echo_in_place(s);
            !s.may_recv() && s.recv_queue() == 0
        });
        match r {
            Ok(done) => done,
            Err(err) => {
                failed = Some(format!("connection vanished: {err:?}"));
                true
            }
        }
    })
    .map_err(eng_err)?;
    failed.map_or(Ok(()), Err)
}

// ---------------------------------------------------------------------------------------
// Rows

struct Ctx {
    net: TestNet,
    dur: Duration,
    host_cpu: usize,
    peer_cpu: usize,
}

impl Ctx {
    fn peer_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.net.peer_ip.into(), port)
    }
    fn host_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.net.ukcm_ip.into(), port)
    }
    /// Runs `f` in namespace A on the peer CPU.
    fn peer<R: Send>(&self, f: impl FnOnce(&str) -> Res<R> + Send) -> Res<R> {
        let dev = self.net.peer_if.clone();
        in_ns(&self.net.ns, self.peer_cpu, move || f(&dev))
    }
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, Res<T>>) -> Res<T> {
    h.join().map_err(|p| format!("thread panicked: {:?}", p.downcast_ref::<String>()))?
}

/// After the engine's part of a row: keep polling (FINs, ACKs, retransmits) until the
/// kernel side has finished too.
fn poll_until(e: &mut Eng, done: &AtomicBool) -> Res<()> {
    let deadline = Instant::now() + GRACE;
    let mut polls = 0u32;
    e.run_until(|_| {
        polls = polls.wrapping_add(1);
        done.load(Ordering::Relaxed) || (polls % 4096 == 0 && Instant::now() > deadline)
    })
    .map_err(eng_err)
}

/// Runs the engine's part `eng` on the host CPU and the kernel's part `peer` in namespace
/// A on the peer CPU, at the same time; `ready` (from the peer, once it listens) gates the
/// engine when `wait_ready`.
fn ukcm_row<A: Send, B: Send>(
    x: &Ctx,
    e: &mut Eng,
    wait_ready: bool,
    eng: impl FnOnce(&mut Eng, &AtomicBool) -> Res<A> + Send,
    peer: impl FnOnce(&str, &crossbeam::channel::Sender<()>) -> Res<B> + Send,
) -> (Res<A>, Res<B>) {
    let peer_done = AtomicBool::new(false);
    let (tx, rx) = crossbeam::channel::bounded(1);
    std::thread::scope(|s| {
        let (pd, tx) = (&peer_done, &tx);
        let p = s.spawn(move || {
            let r = x.peer(|dev| peer(dev, tx));
            pd.store(true, Ordering::Relaxed);
            r
        });
        let (pd, rx) = (&peer_done, &rx);
        let en = s.spawn(move || {
            pin(x.host_cpu)?;
            if wait_ready {
                rx.recv_timeout(GRACE).map_err(|_| "kernel listener never came up")?;
            }
            let r = eng(e, pd);
            poll_until(e, pd)?;
            r
        });
        (join(en), join(p))
    })
}

/// kernel(A) → ukcm stream.
fn ukcm_rx(x: &Ctx, e: &mut Eng) -> Res<Stream> {
    const PORT: u16 = 5001;
    e.listen_with(PORT, 4, stream_opts()).map_err(eng_err)?;
    let to = x.host_addr(PORT);
    let (r, p) = ukcm_row(
        x,
        e,
        false,
        |e, _| ukcm_sink(e, PORT, x.dur + GRACE),
        |dev, _| kernel_source(kernel_connect(dev, to, false)?, x.dur),
    );
    p?;
    r
}

/// ukcm → kernel(A) stream.
fn ukcm_tx(x: &Ctx, e: &mut Eng) -> Res<Stream> {
    const PORT: u16 = 5002;
    let addr = x.peer_addr(PORT);
    let remote = IpEndpoint::new(IpAddress::Ipv4(x.net.peer_ip), PORT);
    let (r, p) = ukcm_row(
        x,
        e,
        true,
        |e, pd| ukcm_source(e, remote, x.dur, pd),
        |dev, tx| {
            let l = kernel_listener(dev, addr)?;
            let _ = tx.send(());
            kernel_sink(accept(&l, false)?)
        },
    );
    r?;
    p
}

/// ukcm client ↔ kernel(A) server.
fn ukcm_rr_to_kernel(x: &Ctx, e: &mut Eng) -> Res<Rr> {
    const PORT: u16 = 5003;
    let addr = x.peer_addr(PORT);
    let remote = IpEndpoint::new(IpAddress::Ipv4(x.net.peer_ip), PORT);
    let (r, p) = ukcm_row(
        x,
        e,
        true,
        |e, _| ukcm_rr_client(e, remote, x.dur),
        |dev, tx| {
            let l = kernel_listener(dev, addr)?;
            let _ = tx.send(());
            kernel_rr_server(accept(&l, true)?)
        },
    );
    p?;
    r
}

/// kernel(A) client ↔ ukcm server.
fn kernel_rr_to_ukcm(x: &Ctx, e: &mut Eng) -> Res<Rr> {
    const PORT: u16 = 5004;
    e.listen_with(PORT, 4, rr_opts()).map_err(eng_err)?;
    let to = x.host_addr(PORT);
    let (r, p) = ukcm_row(
        x,
        e,
        false,
        |e, _| ukcm_rr_server(e, PORT, x.dur + GRACE),
        |dev, _| kernel_rr_client(kernel_connect(dev, to, true)?, x.dur),
    );
    r?;
    p
}

/// Kernel rows: the host end lives in namespace B.
struct KernelSide<'a> {
    x: &'a Ctx,
    hns: &'a HostNs,
}

impl KernelSide<'_> {
    fn host<R: Send>(&self, f: impl FnOnce(&str) -> Res<R> + Send) -> Res<R> {
        let dev = self.x.net.host_if.clone();
        in_ns(&self.hns.ns, self.x.host_cpu, move || f(&dev))
    }

    /// Runs `f` on the host side (`true`) or in the peer namespace, with that side's device.
    fn side<R: Send>(&self, on_host: bool, f: impl FnOnce(&str) -> Res<R> + Send) -> Res<R> {
        if on_host {
            self.host(f)
        } else {
            self.x.peer(f)
        }
    }

    /// A kernel server on one side and a kernel client on the other, listening at `addr`;
    /// the client connects once the server listens. Returns (server's, client's) results.
    fn pair<S: Send, C: Send>(
        &self,
        server_on_host: bool,
        addr: SocketAddr,
        nodelay: bool,
        server: impl FnOnce(TcpStream) -> Res<S> + Send,
        client: impl FnOnce(TcpStream) -> Res<C> + Send,
    ) -> Res<(S, C)> {
        let (tx, rx) = crossbeam::channel::bounded(1);
        std::thread::scope(|s| {
            let srv = s.spawn(|| {
                self.side(server_on_host, |dev| {
                    let l = kernel_listener(dev, addr)?;
                    let _ = tx.send(());
                    server(accept(&l, nodelay)?)
                })
            });
            let cli = s.spawn(|| {
                rx.recv_timeout(GRACE).map_err(|_| "listener never came up")?;
                self.side(!server_on_host, |dev| client(kernel_connect(dev, addr, nodelay)?))
            });
            let c = join(cli);
            let s = join(srv);
            Ok((s?, c?))
        })
    }

    /// A → B stream (the kernel counterpart of kernel→ukcm).
    fn a_to_b(&self, port: u16) -> Res<Stream> {
        let dur = self.x.dur;
        Ok(self.pair(true, self.x.host_addr(port), false, kernel_sink, |c| kernel_source(c, dur))?.0)
    }

    /// B → A stream (the kernel counterpart of ukcm→kernel).
    fn b_to_a(&self, port: u16) -> Res<Stream> {
        let dur = self.x.dur;
        Ok(self.pair(false, self.x.peer_addr(port), false, kernel_sink, |c| kernel_source(c, dur))?.0)
    }

    /// B client ↔ A server (counterpart of ukcm client ↔ kernel server).
    fn rr_b_to_a(&self, port: u16) -> Res<Rr> {
        let dur = self.x.dur;
        Ok(self.pair(false, self.x.peer_addr(port), true, kernel_rr_server, |c| kernel_rr_client(c, dur))?.1)
    }

    /// A client ↔ B server (counterpart of kernel client ↔ ukcm server).
    fn rr_a_to_b(&self, port: u16) -> Res<Rr> {
        let dur = self.x.dur;
        Ok(self.pair(true, self.x.host_addr(port), true, kernel_rr_server, |c| kernel_rr_client(c, dur))?.1)
    }
}

// ---------------------------------------------------------------------------------------
// Report

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn cell<T>(r: &Res<T>, f: impl Fn(&T) -> f64, digits: usize) -> (String, Option<f64>) {
    match r {
        Ok(v) => {
            let x = f(v);
            (format!("{x:.digits$}"), Some(x))
        }
        Err(_) => ("not measured".into(), None),
    }
}

fn row<T, U>(
    out: &mut String,
    what: &str,
    u: &Res<T>,
    fu: impl Fn(&T) -> f64,
    k: &Res<U>,
    fk: impl Fn(&U) -> f64,
    d: usize,
) {
    let (us, uv) = cell(u, fu, d);
    let (ks, kv) = cell(k, fk, d);
    out.push_str(&format!("| {what} | {us} | {ks} | {} |\n", fmt_ratio(uv, kv)));
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs a ukcm row with a fresh engine over AF_XDP on the host veth end.
fn with_engine<T>(x: &Ctx, xcfg: &AfXdpConfig, f: impl FnOnce(&Ctx, &mut Eng) -> Res<T>) -> Res<T> {
    let port =
        AfXdpPort::open(xcfg, &PinnedBudget::unlimited(), HugePolicy::Never).map_err(|e| format!("AF_XDP: {e}"))?;
    let mode = format!("{:?}, zero-copy {}", port.xdp_mode(), port.is_zero_copy());
    let cfg = EngineConfig {
        mac: Some(x.net.host_mac),
        ipv4: Some(Ipv4Cidr::new(x.net.ukcm_ip, x.net.prefix)),
        idle: IdleStrategy::Spin,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(port, cfg).map_err(eng_err)?;
    let r = f(x, &mut e);
    let p = e.port_stats();
    println!("  [AF_XDP {mode}; port rx {} tx {} frames, rx_dropped {}]", p.rx_frames, p.tx_frames, p.rx_dropped);
    r
}

/// Runs a kernel row with the host veth end in namespace B, then moves it back.
fn with_kernel<T>(x: &Ctx, f: impl FnOnce(&KernelSide<'_>) -> Res<T>) -> Res<T> {
    let hns = HostNs::new(&x.net)?;
    let r = f(&KernelSide { x, hns: &hns });
    if let Err(e) = hns.home(&x.net) {
        panic!("could not move {} back: {e}", x.net.host_if);
    }
    r
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches lists; nothing to list
    }
    if !is_root() {
        eprintln!("SKIP vs_kernel: needs root (namespaces, veth, AF_XDP); run with sudo");
        return;
    }
    let secs: f64 = std::env::var("UKCM_VS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let dur = Duration::from_secs_f64(secs);
    let cpus = allowed_cpus();
    let (host_cpu, peer_cpu) = match std::env::var("UKCM_VS_CPUS").ok() {
        Some(s) => {
            let v: Vec<usize> = s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            assert!(v.len() == 2, "UKCM_VS_CPUS=a,b");
            (v[0], v[1])
        }
        None if cpus.len() >= 2 => (cpus[0], cpus[1]),
        None => {
            eprintln!("note: only one CPU allowed ({cpus:?}); both sides share it");
            (cpus[0], cpus[0])
        }
    };
    let t_all = Instant::now();
    let load0 = loadavg();
    let net = TestNet::new("vsk", &TestNetOptions::default()).expect("veth topology");
    let x = Ctx { net, dur, host_cpu, peer_cpu };
    let kernel = run(Command::new("uname").arg("-r")).unwrap_or_default();
    println!(
        "vs_kernel: kernel {}, {} s per row, host side (ukcm engine / namespace-B kernel thread) on CPU {host_cpu}, \
         namespace-A kernel thread on CPU {peer_cpu}; veth {} ↔ {} ({}), MTU 1500",
        kernel.trim(),
        secs,
        x.net.host_if,
        x.net.peer_if,
        x.net.ns
    );

    // Each ukcm row runs right before its kernel counterpart (so both see about the same
    // machine), with a fresh engine; then the host end moves into namespace B for the
    // kernel row and back.
    let xcfg = AfXdpConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 256, frames: 8192 },
        ring_size: 2048,
        ..AfXdpConfig::new(&x.net.host_if, 0)
    };
    let gb = |w: &str, r: &Res<Stream>| println!("{w}: {:?}", r.as_ref().map(|s| format!("{:.2} Gbit/s", s.gbps())));
    let lat = |w: &str, r: &Res<Rr>| {
        println!(
            "{w}: {:?}",
            r.as_ref().map(|r| format!("p50 {:.1} µs, p99 {:.1} µs, {:.0}/s", r.us(0.5), r.us(0.99), r.rate()))
        )
    };
    let u_rx = with_engine(&x, &xcfg, ukcm_rx);
    gb("kernel→ukcm stream", &u_rx);
    let k_ab = with_kernel(&x, |k| k.a_to_b(6001));
    gb("kernel(A)→kernel(B) stream", &k_ab);
    let u_tx = with_engine(&x, &xcfg, ukcm_tx);
    gb("ukcm→kernel stream", &u_tx);
    let k_ba = with_kernel(&x, |k| k.b_to_a(6002));
    gb("kernel(B)→kernel(A) stream", &k_ba);
    let u_rr_c = with_engine(&x, &xcfg, ukcm_rr_to_kernel);
    lat("ukcm client ↔ kernel server", &u_rr_c);
    let k_rr_ba = with_kernel(&x, |k| k.rr_b_to_a(6003));
    lat("kernel(B) client ↔ kernel(A) server", &k_rr_ba);
    let u_rr_s = with_engine(&x, &xcfg, kernel_rr_to_ukcm);
    lat("kernel client ↔ ukcm server", &u_rr_s);
    let k_rr_ab = with_kernel(&x, |k| k.rr_a_to_b(6004));
    lat("kernel(A) client ↔ kernel(B) server", &k_rr_ab);
    // context: the peer's checksum offload (and with it TSO) back on
    let k_ab_tso = x
        .net
        .peer_cmd(&["ethtool", "-K", &x.net.peer_if, "tx", "on"])
        .map_err(|e| format!("ethtool: {e}"))
        .and_then(|_| with_kernel(&x, |k| k.a_to_b(6005)));
    gb("kernel(A)→kernel(B) stream, peer tx offload on", &k_ab_tso);
    let load1 = loadavg();

    // ---- table
    let mut t = String::new();
    t.push_str("| measurement | ukcm ↔ kernel | kernel ↔ kernel | ratio ukcm ÷ kernel |\n|---|---:|---:|---:|\n");
    row(&mut t, "stream kernel→ukcm vs kernel(A)→kernel(B), Gbit/s", &u_rx, Stream::gbps, &k_ab, Stream::gbps, 2);
    row(&mut t, "stream ukcm→kernel vs kernel(B)→kernel(A), Gbit/s", &u_tx, Stream::gbps, &k_ba, Stream::gbps, 2);
    row(&mut t, "RR ukcm client ↔ kernel server: p50 µs", &u_rr_c, |r| r.us(0.5), &k_rr_ba, |r| r.us(0.5), 1);
    row(&mut t, "RR ukcm client ↔ kernel server: p99 µs", &u_rr_c, |r| r.us(0.99), &k_rr_ba, |r| r.us(0.99), 1);
    row(&mut t, "RR ukcm client ↔ kernel server: round trips/s", &u_rr_c, Rr::rate, &k_rr_ba, Rr::rate, 0);
    row(&mut t, "RR kernel client ↔ ukcm server: p50 µs", &u_rr_s, |r| r.us(0.5), &k_rr_ab, |r| r.us(0.5), 1);
    row(&mut t, "RR kernel client ↔ ukcm server: p99 µs", &u_rr_s, |r| r.us(0.99), &k_rr_ab, |r| r.us(0.99), 1);
    row(&mut t, "RR kernel client ↔ ukcm server: round trips/s", &u_rr_s, Rr::rate, &k_rr_ab, Rr::rate, 0);
    let (ts, _) = cell(&k_ab_tso, Stream::gbps, 2);
    t.push_str(&format!(
        "| (context) kernel(A)→kernel(B) with the peer's tx checksum offload + TSO on, Gbit/s | – | {ts} | – |\n"
    ));
    println!("\n{t}");
    let errs: Vec<(&str, String)> = [
        ("kernel→ukcm", u_rx.as_ref().err()),
        ("ukcm→kernel", u_tx.as_ref().err()),
        ("RR ukcm client", u_rr_c.as_ref().err()),
        ("RR ukcm server", u_rr_s.as_ref().err()),
        ("kernel A→B", k_ab.as_ref().err()),
        ("kernel B→A", k_ba.as_ref().err()),
        ("kernel RR B→A", k_rr_ba.as_ref().err()),
        ("kernel RR A→B", k_rr_ab.as_ref().err()),
        ("kernel A→B TSO", k_ab_tso.as_ref().err()),
    ]
    .into_iter()
    .filter_map(|(w, e)| e.map(|e| (w, e.clone())))
    .collect();
    for (w, e) in &errs {
        println!("not measured: {w}: {e}");
    }
    let show = |r: &Res<Stream>| {
        r.as_ref().map(|s| format!("{} MB in {:.2} s", s.bytes / 1_000_000, s.secs)).unwrap_or_default()
    };
    println!(
        "bytes: kernel→ukcm {}, ukcm→kernel {}, A→B {}, B→A {}; load average {load0} before, {load1} after; whole run {:.1} s",
        show(&u_rx),
        show(&u_tx),
        show(&k_ab),
        show(&k_ba),
        t_all.elapsed().as_secs_f64()
    );
}
