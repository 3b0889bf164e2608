//! An echo server in a page: every length-prefixed message goes back whole, in order.
//!
//! ```text
//! cargo run -p ukcm --example echo -- kernel 127.0.0.1 7000
//! sudo cargo run -p ukcm --example echo -- afxdp:veth0 10.0.0.1/24 7000
//! ```

fn main() -> std::io::Result<()> {
    ukcm::logging::init();
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let server = ukcm::Server::builder()
        .transport(&arg(1, "kernel"))
        .addr(&arg(2, "127.0.0.1"))
        .listen(arg(3, "7000").parse().expect("a port number"))
        .parser("thrift")
        .workers(4)
        .serve(|req: &[u8], reply: &mut ukcm::Reply<'_>| {
            let _ = reply.send(req);
        })?;
    println!("echo on {} ({}); Ctrl-C stops", server.local_addr(), server.describe());
    let stats = server.run_until_signal()?;
    println!("{stats}");
    Ok(())
}
