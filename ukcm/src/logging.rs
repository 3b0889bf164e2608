//! Log output for binaries built on ukcm: `tracing` events to stderr, filtered by
//! `RUST_LOG` (e.g. `RUST_LOG=info` shows where pinned memory came from — hugepages or
//! 4 KiB pages — and `RUST_LOG=ukcm_mux=debug` one crate's detail). Without `RUST_LOG`,
//! warnings and errors only, so a binary's normal output stays its own.

/// Installs the subscriber once (later calls, or a subscriber already set, change nothing).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
