//! The server on the userspace stack over the in-memory port pair with seeded faults (loss,
//! reordering, duplication, corruption both ways; no privileges): a client on a second
//! engine pipelines requests on a few connections and gets every reply, byte-exact, in
//! request order, from 2 and 4 workers under every steering policy.

mod common;

use std::time::Instant;

use common::{body, frame, slow_echo, WATCHDOG};
use ukcm::nic::{mem_pair, FaultConfig, HugePolicy, MemPairConfig, PinnedBudget, PoolConfig};
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
            assert!(got[c][..len] == expected[c][..len], "{model} {steer}: connection {c} out of order or corrupt");
        }
        assert!(
            Instant::now() < end,
            "watchdog: {model} {steer}: replies {:?}",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        std::thread::yield_now();
    }
    let t = server.stop().unwrap();
    assert_eq!(t.total.rx_msgs, (conns * n) as u64);
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
