//! Finds the system libdpdk with pkg-config, generates bindings for the parts ukcm uses
//! and compiles the C shim for DPDK's `static inline` functions.
//!
//! Missing pieces fail the build with a message that names the Debian packages to install
//! (`scripts/install-dpdk.sh` installs them).

use std::env;
use std::path::PathBuf;

const INSTALL_HINT: &str = "install the system packages with `sudo scripts/install-dpdk.sh` \
(Debian/Ubuntu: apt-get install libdpdk-dev libclang-dev pkg-config), or build without the `dpdk` feature";

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new().atleast_version("22.11").probe("libdpdk") {
        Ok(lib) => lib,
        Err(e) if env::var_os("CARGO_FEATURE_REQUIRED").is_some() => {
            panic!("\n\nukcm-dpdk-sys: libdpdk >= 22.11 not found by pkg-config: {e}\n=> {INSTALL_HINT}\n\n")
        }
        Err(_) => {
            // Built as a workspace member without ukcm-nic's `dpdk` feature (nothing links
            // it): an empty crate, so `cargo build --workspace` works without libdpdk.
            println!(
                "cargo:warning=libdpdk not found: ukcm-dpdk-sys built empty (ukcm-nic's `dpdk` feature requires it)"
            );
            let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
            std::fs::write(out.join("bindings.rs"), "").expect("writing an empty bindings.rs");
            return;
        }
    };

    // pkg-config's cflags carry `-include rte_config.h` and `-march=...`: the shim and
    // bindgen must see DPDK's headers exactly as DPDK was configured.
    let cflags = pkg_config::get_variable("libdpdk", "cflags").ok();
    let raw_cflags = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .or(cflags)
        .unwrap_or_default();
    let flags: Vec<String> = raw_cflags.split_whitespace().map(str::to_owned).collect();

    let mut cc = cc::Build::new();
    cc.file("csrc/shim.c").include("csrc").opt_level(3).warnings(false);
    for p in &lib.include_paths {
        cc.include(p);
    }
    let mut i = 0;
    while i < flags.len() {
        let f = &flags[i];
        if f == "-include" && i + 1 < flags.len() {
            cc.flag(f).flag(&flags[i + 1]);
            i += 2;
            continue;
        }
        if f.starts_with("-march") || f.starts_with("-m") && !f.starts_with("-I") {
            cc.flag(f);
        }
        i += 1;
    }
    cc.compile("ukcm_dpdk_shim");

    let bindings = std::panic::catch_unwind(|| {
        let mut b = bindgen::Builder::default()
            .header("csrc/shim.h")
            .clang_arg("-Icsrc")
            .allowlist_function("rte_eal_init")
            .allowlist_function("rte_eal_cleanup")
            .allowlist_function("rte_eal_process_type")
            .allowlist_function("rte_strerror")
            .allowlist_function("rte_socket_id")
            .allowlist_function("rte_lcore_count")
            .allowlist_function("rte_version")
            .allowlist_function("rte_eth_dev_count_avail")
            .allowlist_function("rte_eth_dev_get_port_by_name")
            .allowlist_function("rte_eth_dev_get_name_by_port")
            .allowlist_function("rte_eth_find_next_owned_by")
            .allowlist_function("rte_eth_dev_info_get")
            .allowlist_function("rte_eth_dev_configure")
            .allowlist_function("rte_eth_dev_adjust_nb_rx_tx_desc")
            .allowlist_function("rte_eth_rx_queue_setup")
            .allowlist_function("rte_eth_tx_queue_setup")
            .allowlist_function("rte_eth_dev_start")
            .allowlist_function("rte_eth_dev_stop")
            .allowlist_function("rte_eth_dev_close")
            .allowlist_function("rte_eth_dev_socket_id")
            .allowlist_function("rte_eth_dev_get_mtu")
            .allowlist_function("rte_eth_macaddr_get")
            .allowlist_function("rte_eth_link_get_nowait")
            .allowlist_function("rte_eth_stats_get")
            .allowlist_function("rte_eth_stats_reset")
            .allowlist_function("rte_eth_promiscuous_enable")
            .allowlist_function("rte_eth_promiscuous_disable")
            .allowlist_function("rte_eth_promiscuous_get")
            .allowlist_function("rte_pktmbuf_pool_create")
            .allowlist_function("rte_mempool_free")
            .allowlist_function("ukcm_.*")
            .allowlist_type("rte_eth_conf")
            .allowlist_type("rte_eth_dev_info")
            .allowlist_type("rte_eth_stats")
            .allowlist_type("rte_eth_link")
            .allowlist_type("rte_ether_addr")
            .allowlist_type("ukcm_mbuf_view")
            .allowlist_var("RTE_MAX_ETHPORTS")
            .allowlist_var("RTE_ETH_LINK_.*")
            .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE")
            .allowlist_var("RTE_PKTMBUF_HEADROOM")
            .allowlist_var("RTE_ETH_DEV_NO_OWNER")
            .allowlist_var("SOCKET_ID_ANY")
            // The mbuf and mempool layouts are DPDK's business: Rust sees them through the shim.
            .opaque_type("rte_mbuf")
            .opaque_type("rte_mempool")
            .derive_default(true)
            .derive_debug(true)
            .layout_tests(false)
            .generate_comments(false)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
        for p in &lib.include_paths {
            b = b.clang_arg(format!("-I{}", p.display()));
        }
        let mut i = 0;
        while i < flags.len() {
            if flags[i] == "-include" && i + 1 < flags.len() {
                b = b.clang_arg("-include").clang_arg(&flags[i + 1]);
                i += 2;
                continue;
            }
            if flags[i].starts_with("-march") {
                b = b.clang_arg(&flags[i]);
            }
            i += 1;
        }
        b.generate()
    });
    let bindings = match bindings {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => panic!("\n\nukcm-dpdk-sys: bindgen failed on DPDK's headers: {e}\n=> {INSTALL_HINT}\n\n"),
        Err(_) => panic!("\n\nukcm-dpdk-sys: bindgen could not run (libclang missing?)\n=> {INSTALL_HINT}\n\n"),
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings.write_to_file(out.join("bindings.rs")).expect("writing bindings.rs");
}
