//! Bad command lines: one clear line on stderr, nothing on stdout, a non-zero exit.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin).args(args).output().expect("run the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a usage failure whose single stderr line contains `want`.
fn refused(bin: &str, args: &[&str], want: &str) {
    let (code, out, err) = run(bin, args);
    assert!(code.is_some_and(|c| c != 0), "{args:?}: exit {code:?}, stderr {err:?}");
    assert!(out.is_empty(), "{args:?}: stdout {out:?}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got {err:?}");
    assert!(lines[0].contains(want), "{args:?}: {:?} does not contain {want:?}", lines[0]);
}

const ECHO: &str = env!("CARGO_BIN_EXE_ukcm-echo");
const LOAD: &str = env!("CARGO_BIN_EXE_ukcm-load");
const DEMO: &str = env!("CARGO_BIN_EXE_ukcm-demo");

fn echo_args<'a>(over: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut base = vec![("--nic", "kernel"), ("--addr", "127.0.0.1"), ("--listen", "0"), ("--parser", "thrift")];
    for (k, v) in over {
        match base.iter_mut().find(|(bk, _)| bk == k) {
            Some(e) => e.1 = v,
            None => base.push((k, v)),
        }
    }
    base.into_iter().flat_map(|(k, v)| [k, v]).filter(|s| !s.is_empty()).collect()
}

#[test]
fn echo_refuses_bad_flags() {
    refused(ECHO, &[&echo_args(&[])[..], &["--frobnicate"]].concat(), "unexpected argument '--frobnicate'");
    refused(ECHO, &echo_args(&[("--addr", "10.0.0.300")]), "is not an IPv4 or IPv6 address");
    refused(ECHO, &echo_args(&[("--addr", "127.0.0.1/40")]), "prefix \"40\"");
    refused(ECHO, &echo_args(&[("--parser", "thirft")]), "unknown parser \"thirft\"");
    refused(ECHO, &echo_args(&[("--parser", "lenfield:offset=0,width=5,endian=big")]), "bad parser spec");
    refused(ECHO, &[&echo_args(&[])[..], &["--workers", "2", "--rtc"]].concat(), "cannot be used with");
    refused(ECHO, &echo_args(&[("--workers", "0")]), "must be at least 1");
    refused(ECHO, &echo_args(&[("--steer", "random")]), "unknown steering \"random\"");
    refused(ECHO, &echo_args(&[("--nic", "pcap:x")]), "unknown nic");
    refused(ECHO, &["--nic", "kernel", "--addr", "127.0.0.1", "--parser", "thrift"], "--listen");
}

#[test]
fn dpdk_and_mem_are_refused() {
    if !cfg!(feature = "dpdk") {
        let (code, out, err) = run(ECHO, &echo_args(&[("--nic", "dpdk:-l0")]));
        assert_eq!(code, Some(2), "{err}");
        assert!(out.is_empty());
        assert_eq!(
            err.trim_end(),
            "ukcm-echo: --nic dpdk:-l0: DPDK is not built into this binary (build with --features dpdk, after scripts/install-dpdk.sh)"
        );
    }
    refused(
        ECHO,
        &echo_args(&[("--nic", "mem")]),
        "--nic mem: the in-memory pair's other end lives inside this process",
    );
    refused(LOAD, &["--nic", "mem", "--connect", "127.0.0.1:1"], "--nic mem: the in-memory pair has no peer");
    refused(LOAD, &["--nic", "dpdk:-l0", "--connect", "127.0.0.1:1"], "DPDK is not built into this build");
}

/// The load on its own ukcm engine: flags that do not fit it, and the network-safety
/// refusals (the default route's interface, a server off its subnet), all before any port
/// is opened.
#[test]
fn load_on_the_stack_refuses_bad_flags_and_unsafe_paths() {
    let base = ["--nic", "afxdp:lo", "--connect", "10.213.0.1:7000", "--duration", "1"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { [&base[..], extra].concat() };
    refused(LOAD, &base, "--nic afxdp:lo: needs --addr IP/PREFIX");
    refused(
        LOAD,
        &with(&["--addr", "10.213.0.3/24", "--rate", "1000"]),
        "--rate (open loop) runs over kernel sockets only",
    );
    refused(LOAD, &with(&["--addr", "10.213.0.3/24", "--threads", "2"]), "runs on one engine thread");
    refused(LOAD, &with(&["--addr", "fd00::3/64"]), "is not on the subnet of --addr fd00::3/64");
    refused(LOAD, &with(&["--addr", "10.99.0.3/24"]), "is not on the subnet of --addr 10.99.0.3/24");
    refused(
        LOAD,
        &["--nic", "kernel", "--connect", "127.0.0.1:1", "--addr", "10.0.0.3/24"],
        "--addr is the load's own address on --nic afxdp/tap",
    );
    // The interface of this namespace's default route, if there is one, is refused.
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    if let Some(dev) = ukcm_apps::route::default_route_devices(&routes).first() {
        let nic = format!("afxdp:{dev}");
        refused(
            LOAD,
            &["--nic", &nic, "--addr", "10.213.0.3/24", "--connect", "10.213.0.1:7000"],
            "carries this namespace's default route",
        );
    }
}

#[test]
fn userspace_transports_need_a_fixed_port() {
    refused(ECHO, &echo_args(&[("--nic", "tap:t0"), ("--addr", "10.0.0.1/24")]), "needs a fixed listening port");
}

/// AF_XDP and TAP are no longer refused: a missing interface is one clear line, exit 1.
#[test]
fn a_nonexistent_interface_is_one_clear_error() {
    let args = echo_args(&[("--nic", "afxdp:ukcmnosuch0:0"), ("--addr", "10.213.0.1/24"), ("--listen", "7000")]);
    let (code, out, err) = run(ECHO, &args);
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("ukcm-echo: --nic afxdp:ukcmnosuch0:0: cannot open: ")
            && err.contains("\"ukcmnosuch0\" does not exist"),
        "{err}"
    );
}

#[test]
fn load_refuses_bad_flags() {
    let base = ["--nic", "kernel", "--connect", "127.0.0.1:9", "--duration", "1"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { [&base[..], extra].concat() };
    refused(LOAD, &with(&["--size", "1024-64"]), "MIN is larger than MAX");
    refused(LOAD, &with(&["--depth", "0"]), "must be at least 1");
    refused(LOAD, &with(&["--conns", "x"]), "not a positive whole number");
    refused(LOAD, &with(&["--size", "16"]), "need at least 36 bytes");
    refused(LOAD, &with(&["--parser", "http1"]), "cannot generate messages for parser \"http1\"");
    refused(LOAD, &with(&["--parser", "dns", "--size", "100-70000"]), "length field");
    refused(LOAD, &with(&["--rate=-5"]), "not a positive number");
    refused(LOAD, &["--nic", "kernel", "--connect", "localhost", "--duration", "1"], "--connect");
    refused(LOAD, &with(&["--bogus"]), "unexpected argument '--bogus'");
    refused(DEMO, &["--size", "9-3"], "MIN is larger than MAX");
    refused(DEMO, &["--depth", "0"], "must be at least 1");
}

#[test]
fn load_reports_an_unreachable_server_in_one_line() {
    // Port 1 on loopback: nothing listens there (connection refused).
    let (code, out, err) = run(LOAD, &["--nic", "kernel", "--connect", "127.0.0.1:1", "--duration", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty());
    assert!(err.trim_end().starts_with("ukcm-load: connect to 127.0.0.1:1:") && err.lines().count() == 1, "{err}");
}
