//! `tokio-echo`: the benchmark's async baseline — a tokio server with tokio-util's
//! `LengthDelimitedCodec` (4-byte big-endian length, header excluded: the thrift framing
//! `ukcm-load` uses by default). Every frame is echoed whole; replies are flushed when the
//! connection has no more frames ready (`StreamExt::forward`).
//!
//! ```text
//! tokio-echo --listen 127.0.0.1:7003 [--threads N]
//! ```
//!
//! Prints `tokio-echo: listening on ADDR` first; SIGINT/SIGTERM end it (exit 0).

// Doc comments here are clap's --help text (`[:QUEUE]` is a syntax, not a link).
#![allow(rustdoc::broken_intra_doc_links)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use ukcm::signals;
use ukcm_apps::cli;

const PROG: &str = "tokio-echo";

/// tokio + LengthDelimitedCodec echo server.
#[derive(Debug, Parser)]
#[command(name = "tokio-echo", version)]
struct Args {
    /// Address to listen on
    #[arg(long, value_name = "IP:PORT")]
    listen: SocketAddr,
    /// Runtime worker threads (default: the CPUs this process may run on)
    #[arg(long, value_parser = cli::positive)]
    threads: Option<usize>,
}

fn main() {
    let a: Args = cli::parse_or_exit(PROG);
    let stop = signals::stop_flag().unwrap_or_else(|e| cli::fail(PROG, &format!("signals: {e}")));
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| cli::fail(PROG, &format!("tokio runtime: {e}")));
    rt.block_on(async move {
        let listener = TcpListener::bind(a.listen).await.unwrap_or_else(|e| {
            eprintln!("{PROG}: cannot listen on {}: {e}", a.listen);
            std::process::exit(1)
        });
        println!("{PROG}: listening on {} ({threads} runtime threads)", a.listen);
        loop {
            tokio::select! {
                acc = listener.accept() => {
                    let Ok((s, _)) = acc else { continue };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let codec = LengthDelimitedCodec::builder().max_frame_length(16 << 20).new_codec();
                        let (sink, stream) = Framed::new(s, codec).split();
                        let _ = stream.map(|r| r.map(|b| b.freeze())).forward(sink).await;
                    });
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        }
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    println!("{PROG}: stopped");
}
