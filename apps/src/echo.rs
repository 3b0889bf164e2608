//! The echo service on [`ukcm::Server`]: every request goes back whole, through its reply
//! slot, so a connection's echoes come back in the order it sent them whatever worker
//! answered first (the server orders replies by default).

use std::io;
use std::net::TcpListener;

use ukcm::{Reply, Server, ServerConfig, Transport};

/// The handler: the reply is the request (copied once: into pinned memory in worker mode,
/// into the connection's reply buffer run to completion).
pub fn echo(req: &[u8], reply: &mut Reply<'_>) {
    // A reply that cannot be sent is counted by the server (`reply_failed`).
    let _ = reply.send(req);
}

/// An echo server on a bound kernel TCP listener.
pub fn start(listener: TcpListener, cfg: ServerConfig) -> io::Result<Server> {
    Server::kernel(listener, cfg, echo)
}

/// An echo server on the transport `make` builds on the engine thread.
pub fn start_with<T, F>(make: F, cfg: ServerConfig) -> io::Result<Server>
where
    T: Transport + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    Server::start(make, cfg, echo)
}
