//! Results: latency percentiles, the machine description, a small JSON writer and the
//! human tables the binaries print.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// A latency histogram in nanoseconds (1 ns .. 1 h, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    // Cannot fail: the bounds are valid constants.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Percentiles {
    /// From a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Quantiles at which [`cdf_points`] samples a histogram: every percent, then the tail.
const CDF_QUANTILES_TAIL: [f64; 6] = [0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0];

/// The latency distribution as (cumulative fraction, microseconds) points: every percent
/// from 0 to 99, then 99.5, 99.9, 99.95, 99.99, 99.999 and 100 — enough to draw the CDF
/// and its tail (empty for an empty histogram).
pub fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..100)
        .map(|i| f64::from(i) / 100.0)
        .chain(CDF_QUANTILES_TAIL)
        .map(|q| (q, h.value_at_quantile(q) as f64 / 1000.0))
        .collect()
}

/// Reads `"key":[[a,b],[a,b],…]` (as [`JsonObject::pairs`] writes it) out of JSON text.
pub fn parse_pairs(json: &str, key: &str) -> Option<Vec<(f64, f64)>> {
    let pat = format!("\"{key}\":[");
    let at = json.find(&pat)? + pat.len();
    let body = &json[at..at + json[at..].find("]]").map_or(0, |e| e + 1)];
    let mut out = Vec::new();
    for part in body.split('[').map(str::trim).filter(|p| !p.is_empty()) {
        let inner = part.trim_end_matches([']', ',']);
        let (a, b) = inner.split_once(',')?;
        out.push((a.trim().parse().ok()?, b.trim().parse().ok()?));
    }
    Some(out)
}

/// What machine a result came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// First `model name` of `/proc/cpuinfo`.
    pub cpu: String,
}

impl Machine {
    /// Reads it from the running system ("unknown" where not readable).
    pub fn detect() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine { cores, kernel, cpu }
    }
}

/// A minimal JSON object writer (keys are our own identifiers, strings are escaped).
#[derive(Debug, Default)]
pub struct JsonObject {
    buf: String,
}

impl JsonObject {
    /// An empty object.
    pub fn new() -> Self {
        JsonObject::default()
    }

    fn key(&mut self, k: &str) {
        self.buf.push_str(if self.buf.is_empty() { "{" } else { "," });
        push_json_str(&mut self.buf, k);
        self.buf.push(':');
    }

    /// `"k": n` (integers).
    pub fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        let _ = write!(self.buf, "{v}");
        self
    }

    /// `"k": x` (non-finite numbers become null).
    pub fn num(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.buf, "{v:.3}");
        } else {
            self.buf.push_str("null");
        }
        self
    }

    /// `"k": "s"`.
    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_json_str(&mut self.buf, v);
        self
    }

    /// `"k": true|false`.
    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.buf.push_str(if v { "true" } else { "false" });
        self
    }

    /// `"k": {…}`.
    pub fn obj(&mut self, k: &str, v: JsonObject) -> &mut Self {
        self.key(k);
        self.buf.push_str(&v.finish());
        self
    }

    /// `"k": ["s", …]`.
    pub fn strs(&mut self, k: &str, v: &[String]) -> &mut Self {
        self.key(k);
        self.buf.push('[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            push_json_str(&mut self.buf, s);
        }
        self.buf.push(']');
        self
    }

    /// `"k": [[a, b], …]` (non-finite numbers become null).
    pub fn pairs(&mut self, k: &str, v: &[(f64, f64)]) -> &mut Self {
        self.key(k);
        self.buf.push('[');
        for (i, (a, b)) in v.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            let n = |x: f64| if x.is_finite() { format!("{x}") } else { "null".into() };
            let _ = write!(self.buf, "[{},{}]", n(*a), n(*b));
        }
        self.buf.push(']');
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        if self.buf.is_empty() {
            "{}".into()
        } else {
            self.buf + "}"
        }
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Percentiles as a JSON object (microseconds).
pub fn percentiles_json(p: &Percentiles) -> JsonObject {
    let mut o = JsonObject::new();
    o.int("count", p.count)
        .num("mean", p.mean_us)
        .num("p50", p.p50_us)
        .num("p90", p.p90_us)
        .num("p99", p.p99_us)
        .num("p99_9", p.p999_us)
        .num("max", p.max_us);
    o
}

/// The machine as a JSON object.
pub fn machine_json(m: &Machine) -> JsonObject {
    let mut o = JsonObject::new();
    o.int("cores", m.cores as u64).str("kernel", &m.kernel).str("cpu", &m.cpu);
    o
}

/// A human rate: 1234567 → "1.23 M".
pub fn si(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.2} k", x / 1e3)
    } else {
        format!("{x:.0} ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_well_formed_and_escaped() {
        let mut inner = JsonObject::new();
        inner.int("a", 1);
        let mut o = JsonObject::new();
        o.str("s", "q\"\\\n\u{1}")
            .num("x", 1.5)
            .num("nan", f64::NAN)
            .bool("ok", true)
            .obj("in", inner)
            .strs("l", &["x".into()]);
        assert_eq!(o.finish(), r#"{"s":"q\"\\\n\u0001","x":1.500,"nan":null,"ok":true,"in":{"a":1},"l":["x"]}"#);
        assert_eq!(JsonObject::new().finish(), "{}");
    }

    #[test]
    fn cdf_points_round_trip_through_json() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let pts = cdf_points(&h);
        assert_eq!(pts.len(), 106);
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "monotone: {pts:?}");
        assert!((pts[50].1 - 500.0).abs() < 2.0 && (pts[105].1 - 1000.0).abs() < 2.0, "{pts:?}");
        let mut o = JsonObject::new();
        o.int("n", 1).pairs("cdf", &pts).bool("ok", true);
        let text = o.finish();
        assert_eq!(parse_pairs(&text, "cdf").unwrap(), pts);
        assert_eq!(parse_pairs(r#"{"cdf":[]}"#, "cdf").unwrap(), vec![]);
        assert!(parse_pairs(&text, "nope").is_none());
        assert!(cdf_points(&new_histogram()).is_empty());
    }

    #[test]
    fn percentiles_from_a_histogram() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_us - 500.0).abs() < 2.0 && (p.max_us - 1000.0).abs() < 2.0, "{p:?}");
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }
}
