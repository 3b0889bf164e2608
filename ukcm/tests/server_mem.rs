//! The server on the userspace stack over the in-memory port pair with seeded faults (loss,
//! reordering, duplication, corruption both ways; no privileges): a client on a second
//! engine pipelines requests on a few connections and gets every reply, byte-exact, in
//! request order, from 2 and 4 workers under every steering policy. And `mem` as a transport
//! spec: the server makes the pair and hands its other end to the test, over IPv4 and IPv6.

mod common;

use std::time::Instant;

use common::{body, frame, slow_echo, WATCHDOG};
use ukcm::nic::{mem_pair, FaultConfig, HugePolicy, MemPairConfig, MemPort, PinnedBudget, PoolConfig};
use ukcm::stack::smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr};
use ukcm::stack::{Engine, EngineConfig, TcpOptions};
use ukcm::{Model, Server, ServerConfig, StackTransport, SteerKind};

const SERVER: Ipv4Address = Ipv4Address::new(10, 9, 0, 1);
const CLIENT: Ipv4Address = Ipv4Address::new(10, 9, 0, 2);
const PORT: u16 = 7500;

fn faults(seed: u64) -> FaultConfig {
    FaultConfig { loss: 0.01, reorder: 0.01, duplicate: 0.005, corrupt: 0.005, seed, ..FaultConfig::none() }
}

/// `conns` connections of `n` pipelined requests from a client engine; checks every reply.
fn run(model: Model, steer: SteerKind, seed: u64) {
    let pc = MemPairConfig {
        pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 8192 },
        a_to_b: faults(seed),
        b_to_a: faults(seed + 1),
        huge: HugePolicy::Prefer,
        ..MemPairConfig::default()
    };
    let (server_port, client_port) = mem_pair(&pc, &PinnedBudget::unlimited()).unwrap();
    let cfg = ServerConfig { parser: "thrift".into(), model, steer, ..ServerConfig::default() };
    let server = Server::start(
        move || StackTransport::new(server_port, None, Ipv4Cidr::new(SERVER, 24), None, PORT, 64),
        cfg,
        slow_echo,
    )
    .unwrap();
    let ccfg = EngineConfig {
        ipv4: Some(Ipv4Cidr::new(CLIENT, 24)),
        default_tcp: TcpOptions { nagle: false, ..TcpOptions::default() },
        ..EngineConfig::default()
    };
    let mut client = Engine::new(client_port, ccfg).unwrap();
    let (conns, n) = (3usize, 150usize);
    let to = IpEndpoint::new(IpAddress::Ipv4(SERVER), PORT);
    pipeline(&mut client, to, conns, n, &format!("{model} {steer}"));
    let t = server.stop().unwrap();
    assert_eq!(t.total.rx_msgs, (conns * n) as u64);
}

/// `conns` connections from `client` to `to`, `n` pipelined requests each; every reply
/// checked byte for byte, in order (quiet requests get none).
fn pipeline(client: &mut Engine<MemPort>, to: IpEndpoint, conns: usize, n: usize, what: &str) {
    let ids: Vec<_> = (0..conns).map(|_| client.connect(to).unwrap()).collect();
    let outgoing: Vec<Vec<u8>> = (0..conns).map(|c| (0..n).flat_map(|i| frame(&body(c, i))).collect()).collect();
    let expected: Vec<Vec<u8>> =
        (0..conns).map(|c| (0..n).filter(|i| i % 7 != 3).flat_map(|i| frame(&body(c, i))).collect()).collect();
    let mut sent = vec![0usize; conns];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); conns];
    let mut buf = vec![0u8; 64 * 1024];
    let end = Instant::now() + WATCHDOG;
    while (0..conns).any(|c| got[c].len() < expected[c].len()) {
        client.poll().unwrap();
        for c in 0..conns {
            if sent[c] < outgoing[c].len() {
                sent[c] += client.send(ids[c], &outgoing[c][sent[c]..]).unwrap_or(0);
            }
            let k = client.recv(ids[c], &mut buf).unwrap_or(0);
            got[c].extend_from_slice(&buf[..k]);
            let len = got[c].len().min(expected[c].len());
            assert!(got[c][..len] == expected[c][..len], "{what}: connection {c} out of order or corrupt");
        }
        assert!(Instant::now() < end, "watchdog: {what}: replies {:?}", got.iter().map(Vec::len).collect::<Vec<_>>());
        std::thread::yield_now();
    }
}

#[test]
fn mem_as_a_transport_spec_hands_the_other_end_of_the_pair_to_the_caller() {
    for (addr, server_at, peer_at) in
        [("10.9.1.1/24", "10.9.1.1:7500", "10.9.1.2/24"), ("fd00:9::1/64", "[fd00:9::1]:7500", "fd00:9::2/64")]
    {
        let mut server = Server::builder()
            .transport("mem")
            .addr(addr)
            .listen(PORT)
            .parser("thrift")
            .workers(2)
            .serve(slow_echo)
            .unwrap();
        let peer = server.take_mem_peer().expect("a mem server keeps the pair's other end for the caller");
        assert!(server.take_mem_peer().is_none(), "taken once");
        assert_eq!(peer.server, server_at.parse().unwrap());
        assert_eq!(server.local_addr(), peer.server);
        assert_eq!(peer.addr.to_string(), peer_at);
        let to = IpEndpoint::from(peer.server);
        let mut client = peer.engine().unwrap();
        pipeline(&mut client, to, 2, 100, addr);
        assert_eq!(server.stop().unwrap().total.rx_msgs, 200);
    }
}

#[test]
fn other_transports_have_no_mem_peer() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut server = Server::kernel(l, ServerConfig::default(), slow_echo).unwrap();
    assert!(server.take_mem_peer().is_none());
    drop(server.stop().unwrap());
}

#[test]
fn replies_in_order_over_a_faulty_link_with_any_workers_and_policy() {
    let mut seed = 11;
    for model in [Model::Workers(2), Model::Workers(4)] {
        for steer in [SteerKind::Batch, SteerKind::LeastLoaded, SteerKind::Sticky, SteerKind::Hash] {
            run(model, steer, seed);
            seed += 2;
        }
    }
}
