//! A Redis forwarder in a page: clients → ukcm → the backend a command's key hashes to →
//! back to the client, in request order; a backend that fails answers `-ERR …`.
//!
//! ```text
//! cargo run -p ukcm --example forward -- 127.0.0.1:7000 127.0.0.1:6379 127.0.0.1:6380
//! redis-cli -p 7000 set k v
//! ```

use ukcm::{PoolConfig, Relay, Server, ServerConfig, UpstreamError};

/// The key of a RESP command (`*N $len CMD $len KEY …`): the second bulk string; the whole
/// command when it has none (PING, inline commands); nothing for an empty inline line.
fn key(req: &[u8]) -> Option<&[u8]> {
    if req.trim_ascii().is_empty() {
        return None;
    }
    let mut parts = req.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(_), Some(_), Some(k)) if req[0] == b'*' => Some(k),
        _ => Some(req),
    }
}

fn error(e: UpstreamError) -> Vec<u8> {
    format!("-ERR upstream: {e}\r\n").into_bytes()
}

fn main() -> std::io::Result<()> {
    ukcm::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen: std::net::SocketAddr = args.first().map_or("127.0.0.1:7000", |s| s).parse().expect("IP:PORT");
    let backends = args.iter().skip(1).map(|a| a.parse().expect("backend IP:PORT")).collect();
    let pool = PoolConfig { backends, conns_per_backend: 2, parser: "resp".into(), ..PoolConfig::default() };
    let cfg = ServerConfig {
        parser: "resp:inline=true".into(),
        model: ukcm::Model::RunToCompletion,
        ..ServerConfig::default()
    };
    let transport = ukcm::KernelTransport::new(std::net::TcpListener::bind(listen)?)?;
    let server = Server::forward(move || Ok(transport), cfg, pool, Relay::new(key, error))?;
    println!("forwarding on {}; Ctrl-C stops", server.local_addr());
    println!("{}", server.run_until_signal()?);
    Ok(())
}
