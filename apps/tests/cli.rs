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
fn userspace_transports_are_refused_honestly() {
    for nic in ["afxdp:eth0:1", "tap:tap0", "dpdk:-l0"] {
        let (code, out, err) = run(ECHO, &echo_args(&[("--nic", nic)]));
        assert_eq!(code, Some(2), "{nic}: {err}");
        assert!(out.is_empty());
        assert_eq!(
            err.trim_end(),
            format!("ukcm-echo: --nic {nic}: not available yet: the apps run the mux over kernel TCP only in this build (see the mux issue)")
        );
    }
    refused(
        LOAD,
        &["--nic", "afxdp:eth0", "--connect", "127.0.0.1:1", "--duration", "1"],
        "--nic afxdp:eth0:0: not available yet: the apps run the mux over kernel TCP only in this build (see the mux issue)",
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
