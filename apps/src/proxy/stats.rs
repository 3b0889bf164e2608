//! The proxy's figures for operators, in the forms their tools read: twemproxy's stats JSON
//! (same field names, so dashboards and scripts made for nutcracker keep working), the
//! Prometheus text format, and one `--stats-every` line per pool.
//!
//! twemproxy's `in_queue` figures (requests waiting to be written to a server) have no
//! counterpart here: a request is written into its backend connection's ring when it is
//! forwarded, so they are left out rather than shown as zeros; `out_queue` is the
//! requests written and not yet answered.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use ukcm::{StatsHandle, StatsTable, UpstreamSnapshot};
use ukcm_mux::PsockStats;

use super::config::{Pool, Server, ServerAddr};

/// One pool's figures at one moment.
#[derive(Debug, Clone)]
pub struct PoolFigures {
    /// The pool's name (the config's top-level key).
    pub name: String,
    /// Each server's name in the stats, in config order (twemproxy's rule: the name if
    /// given, else `host:port`).
    pub servers: Vec<String>,
    /// Client connections accepted, closed by the client, failed.
    pub accepted: u64,
    pub client_eof: u64,
    pub client_err: u64,
    /// Client connections attached now.
    pub client_connections: u64,
    /// The client side's mux counters (all engines).
    pub table: StatsTable,
    /// The backends' figures (`None` until the engines published their first snapshot).
    pub upstream: Option<UpstreamSnapshot>,
}

/// A server's name in twemproxy's stats.
pub fn stats_name(s: &Server) -> String {
    match (&s.name, &s.addr) {
        (Some(n), _) => n.clone(),
        (None, ServerAddr::Tcp { host, port }) => format!("{host}:{port}"),
        (None, ServerAddr::Unix { path }) => path.clone(),
    }
}

impl PoolFigures {
    /// Reads `pool`'s running server through its stats handle.
    pub fn read(pool: &Pool, h: &StatsHandle) -> PoolFigures {
        let table = h.snapshot();
        let c = h.counters();
        PoolFigures {
            name: pool.name.clone(),
            servers: pool.servers.iter().map(stats_name).collect(),
            accepted: c.accepted.load(Ordering::Relaxed),
            client_eof: c.closed.load(Ordering::Relaxed),
            client_err: c.failed.load(Ordering::Relaxed),
            client_connections: table.mux.psock_attach.saturating_sub(table.mux.psock_unattach),
            upstream: h.upstream_stats(),
            table,
        }
    }

    fn ejects(&self) -> u64 {
        self.upstream.as_ref().map_or(0, |u| u.pool.ejections)
    }
}

/// The mux totals worth exporting, by name.
fn mux_fields(t: &PsockStats) -> [(&'static str, u64); 10] {
    [
        ("rx_msgs", t.rx_msgs),
        ("rx_bytes", t.rx_bytes),
        ("tx_msgs", t.tx_msgs),
        ("tx_bytes", t.tx_bytes),
        ("rx_aborts", t.rx_aborts),
        ("rx_msg_too_big", t.rx_msg_too_big),
        ("rx_bad_hdr_len", t.rx_bad_hdr_len),
        ("tx_replies_held", t.tx_replies_held),
        ("rx_unanswered_stalls", t.rx_unanswered_stalls),
        ("rx_postponed", t.rx_postponed),
    ]
}

fn micros_since_epoch(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_micros() as u64)
}

/// twemproxy's stats document: `service`, `source`, `version`, `uptime`, `timestamp`,
/// `total_connections`, `curr_connections`, then one object per pool with its counters and
/// one object per server; ukcm's own figures go under a `ukcm` key in each pool.
pub fn twemproxy_json(pools: &[PoolFigures], source: &str, uptime_secs: u64, now: SystemTime) -> String {
    let mut doc = Map::new();
    doc.insert("service".into(), json!("ukcm-proxy"));
    doc.insert("source".into(), json!(source));
    doc.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    doc.insert("uptime".into(), json!(uptime_secs));
    doc.insert("timestamp".into(), json!(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())));
    doc.insert("total_connections".into(), json!(pools.iter().map(|p| p.accepted).sum::<u64>()));
    doc.insert("curr_connections".into(), json!(pools.iter().map(|p| p.client_connections).sum::<u64>()));
    for p in pools {
        let fwd = p.upstream.as_ref().map(|u| u.forward).unwrap_or_default();
        let mut pool = Map::new();
        pool.insert("client_eof".into(), json!(p.client_eof));
        pool.insert("client_err".into(), json!(p.client_err));
        pool.insert("client_connections".into(), json!(p.client_connections));
        pool.insert("server_ejects".into(), json!(p.ejects()));
        pool.insert("forward_error".into(), json!(fwd.forward_errors));
        pool.insert("fragments".into(), json!(fwd.fragments));
        for (i, name) in p.servers.iter().enumerate() {
            let Some(b) = p.upstream.as_ref().and_then(|u| u.backends.get(i)) else { continue };
            pool.insert(
                name.clone(),
                json!({
                    "server_eof": b.eof,
                    "server_err": b.errors,
                    "server_timedout": b.timeouts,
                    "server_connections": b.connections,
                    "server_ejected_at": micros_since_epoch(b.ejected_since),
                    "requests": b.requests,
                    "request_bytes": b.request_bytes,
                    "responses": b.responses,
                    "response_bytes": b.response_bytes,
                    "out_queue": b.in_flight,
                }),
            );
        }
        let mut ukcm = Map::new();
        ukcm.insert("client_requests".into(), json!(fwd.requests));
        ukcm.insert("local_replies".into(), json!(fwd.local));
        if let Some(u) = &p.upstream {
            ukcm.insert("backend_refused_busy".into(), json!(u.pool.refused_busy));
            ukcm.insert("backend_lost".into(), json!(u.pool.lost));
            ukcm.insert("backend_late_replies".into(), json!(u.pool.late_replies));
            ukcm.insert("backend_unmatched_replies".into(), json!(u.pool.unmatched_replies));
        }
        for (k, v) in mux_fields(&p.table.total) {
            ukcm.insert(format!("client_{k}"), json!(v));
        }
        pool.insert("ukcm".into(), Value::Object(ukcm));
        doc.insert(p.name.clone(), Value::Object(pool));
    }
    Value::Object(doc).to_string()
}

/// A Prometheus label value, escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes one metric family: its HELP and TYPE lines, then one sample per labelled value.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// The same figures in Prometheus' text exposition format (version 0.0.4).
pub fn prometheus(pools: &[PoolFigures], uptime_secs: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ukcm_proxy_uptime_seconds Seconds since the proxy started.\n# TYPE ukcm_proxy_uptime_seconds gauge\nukcm_proxy_uptime_seconds {uptime_secs}"
    );
    let per_pool = |f: &dyn Fn(&PoolFigures) -> u64| -> Vec<(String, u64)> {
        pools.iter().map(|p| (format!("pool=\"{}\"", label(&p.name)), f(p))).collect()
    };
    let fwd = |p: &PoolFigures| p.upstream.as_ref().map(|u| u.forward).unwrap_or_default();
    type PoolFigure<'a> = &'a dyn Fn(&PoolFigures) -> u64;
    let pool_rows: [(&str, &str, &str, PoolFigure<'_>); 8] = [
        ("ukcm_proxy_client_connections", "gauge", "Client connections open.", &|p| p.client_connections),
        ("ukcm_proxy_client_accepted_total", "counter", "Client connections accepted.", &|p| p.accepted),
        ("ukcm_proxy_client_eof_total", "counter", "Client connections closed by the client.", &|p| p.client_eof),
        ("ukcm_proxy_client_err_total", "counter", "Client connections that failed.", &|p| p.client_err),
        ("ukcm_proxy_client_requests_total", "counter", "Client requests.", &|p| fwd(p).requests),
        ("ukcm_proxy_forward_errors_total", "counter", "Requests answered with an error.", &|p| fwd(p).forward_errors),
        ("ukcm_proxy_fragments_total", "counter", "Backend requests split from multi-key ones.", &|p| fwd(p).fragments),
        ("ukcm_proxy_server_ejects_total", "counter", "Times a server was ejected.", &|p| p.ejects()),
    ];
    for (name, kind, help, f) in pool_rows {
        family(&mut out, name, kind, help, &per_pool(f));
    }
    type ServerFigure = fn(&ukcm::BackendStats) -> u64;
    let server_rows: [(&str, &str, &str, ServerFigure); 9] = [
        ("ukcm_proxy_server_requests_total", "counter", "Requests sent to the server.", |b| b.requests),
        ("ukcm_proxy_server_request_bytes_total", "counter", "Bytes of requests sent.", |b| b.request_bytes),
        ("ukcm_proxy_server_responses_total", "counter", "Responses from the server.", |b| b.responses),
        ("ukcm_proxy_server_response_bytes_total", "counter", "Bytes of responses.", |b| b.response_bytes),
        ("ukcm_proxy_server_timeouts_total", "counter", "Requests that timed out.", |b| b.timeouts),
        ("ukcm_proxy_server_eof_total", "counter", "Connections the server closed.", |b| b.eof),
        ("ukcm_proxy_server_err_total", "counter", "Connections that failed.", |b| b.errors),
        ("ukcm_proxy_server_connections", "gauge", "Connections to the server up.", |b| b.connections),
        ("ukcm_proxy_server_in_flight", "gauge", "Requests awaiting the server's reply.", |b| b.in_flight),
    ];
    for (name, kind, help, f) in server_rows {
        let mut samples = Vec::new();
        for p in pools {
            let Some(u) = &p.upstream else { continue };
            for (s, b) in p.servers.iter().zip(&u.backends) {
                samples.push((format!("pool=\"{}\",server=\"{}\"", label(&p.name), label(s)), f(b)));
            }
        }
        family(&mut out, name, kind, help, &samples);
    }
    out
}

/// One line per pool for `--stats-every`: connections, requests, errors and per-server
/// requests/responses, so an operator sees traffic move without parsing JSON.
pub fn summary_line(p: &PoolFigures) -> String {
    let fwd = p.upstream.as_ref().map(|u| u.forward).unwrap_or_default();
    let mut line = format!(
        "pool {}: clients {} (accepted {}, eof {}, err {}), requests {}, local {}, forward_error {}, fragments {}, ejects {}",
        p.name,
        p.client_connections,
        p.accepted,
        p.client_eof,
        p.client_err,
        fwd.requests,
        fwd.local,
        fwd.forward_errors,
        fwd.fragments,
        p.ejects()
    );
    if let Some(u) = &p.upstream {
        for (s, b) in p.servers.iter().zip(&u.backends) {
            let state = if b.ejected_since.is_some() { " EJECTED" } else { "" };
            let _ = write!(
                line,
                "; {s}: req {} resp {} timedout {} conns {}{state}",
                b.requests, b.responses, b.timeouts, b.connections
            );
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;
    use ukcm::{BackendStats, ForwardStats};

    fn figures() -> PoolFigures {
        let mut b0 = BackendStats::new(SocketAddr::from(([127, 0, 0, 1], 6379)));
        b0.requests = 7;
        b0.response_bytes = 70;
        b0.connections = 1;
        let mut b1 = BackendStats::new(SocketAddr::from(([127, 0, 0, 1], 6380)));
        b1.timeouts = 2;
        b1.ejected_since = Some(UNIX_EPOCH + Duration::from_micros(1_500_000));
        let upstream = UpstreamSnapshot {
            pool: ukcm::upstream::PoolStats { ejections: 1, ..Default::default() },
            backends: vec![b0, b1],
            forward: ForwardStats { requests: 9, local: 1, forward_errors: 2, fragments: 3 },
        };
        PoolFigures {
            name: "alpha".into(),
            servers: vec!["server0".into(), "127.0.0.1:6380".into()],
            accepted: 4,
            client_eof: 1,
            client_err: 0,
            client_connections: 3,
            table: StatsTable::default(),
            upstream: Some(upstream),
        }
    }

    #[test]
    fn json_has_twemproxys_names_and_values() {
        let doc: Value =
            serde_json::from_str(&twemproxy_json(&[figures()], "host", 5, UNIX_EPOCH + Duration::from_secs(9)))
                .unwrap();
        assert_eq!(doc["uptime"], 5);
        assert_eq!(doc["timestamp"], 9);
        assert_eq!(doc["total_connections"], 4);
        assert_eq!(doc["curr_connections"], 3);
        let a = &doc["alpha"];
        assert_eq!((a["client_eof"].as_u64(), a["server_ejects"].as_u64()), (Some(1), Some(1)));
        assert_eq!((a["forward_error"].as_u64(), a["fragments"].as_u64()), (Some(2), Some(3)));
        assert_eq!(a["server0"]["requests"], 7);
        assert_eq!(a["server0"]["response_bytes"], 70);
        assert_eq!(a["server0"]["server_ejected_at"], 0);
        assert_eq!(a["127.0.0.1:6380"]["server_timedout"], 2);
        assert_eq!(a["127.0.0.1:6380"]["server_ejected_at"], 1_500_000);
        assert_eq!(a["ukcm"]["client_requests"], 9);
    }

    #[test]
    fn prometheus_text_is_well_formed() {
        let text = prometheus(&[figures()], 5);
        assert!(text.contains("ukcm_proxy_client_connections{pool=\"alpha\"} 3\n"));
        assert!(text.contains("ukcm_proxy_server_requests_total{pool=\"alpha\",server=\"server0\"} 7\n"));
        assert!(text.contains("ukcm_proxy_server_timeouts_total{pool=\"alpha\",server=\"127.0.0.1:6380\"} 2\n"));
        // Every sample line belongs to a family declared just before it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
                assert!(line.rsplit(' ').next().unwrap().parse::<u64>().is_ok(), "{line}");
            }
        }
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }

    #[test]
    fn summary_line_shows_ejected_servers() {
        let l = summary_line(&figures());
        assert!(l.starts_with("pool alpha: clients 3"), "{l}");
        assert!(l.contains("127.0.0.1:6380: req 0 resp 0 timedout 2 conns 0 EJECTED"), "{l}");
    }
}
