//! The latency plot as a self-contained SVG (no plotting dependency): one column per panel
//! (e.g. per message size); the top row is the CDF (fraction of messages answered within a
//! latency), the bottom row the tail (fraction slower than a latency, log scale), both on a
//! log latency axis; one curve per system, the same colour in every panel, one legend.

use std::fmt::Write as _;

/// One system's latency distribution: (cumulative fraction, microseconds) points, sorted
/// by fraction (as [`crate::report::cdf_points`] makes them).
#[derive(Debug, Clone)]
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// CSS colour.
    pub color: String,
    /// Drawn dashed (baselines).
    pub dashed: bool,
    /// (fraction, µs).
    pub points: Vec<(f64, f64)>,
}

/// One column of the plot.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Column title.
    pub title: String,
    /// Its curves (curves without points are left out).
    pub curves: Vec<Curve>,
}

const PLOT_W: f64 = 330.0;
const PLOT_H: f64 = 210.0;
const LEFT: f64 = 62.0;
const GAP_X: f64 = 72.0;
const TOP: f64 = 74.0;
const GAP_Y: f64 = 62.0;
/// Room for the title and a one-column legend.
const MIN_WIDTH: f64 = 560.0;
/// Width of one legend column.
const LEGEND_W: f64 = 470.0;
/// The tail row shows fractions down to 10^-TAIL_DECADES.
const TAIL_DECADES: i32 = 5;

/// The whole SVG document.
pub fn latency_cdf_svg(title: &str, subtitle: &str, panels: &[Panel]) -> String {
    let cols = panels.len().max(1) as f64;
    let width = (LEFT + cols * PLOT_W + (cols - 1.0) * GAP_X + 24.0).max(MIN_WIDTH);
    // Legend: every distinct label once, in first-seen order.
    let mut legend: Vec<&Curve> = Vec::new();
    for c in panels.iter().flat_map(|p| &p.curves).filter(|c| !c.points.is_empty()) {
        if !legend.iter().any(|l| l.label == c.label) {
            legend.push(c);
        }
    }
    let legend_cols = if width >= 2.0 * LEGEND_W + LEFT { 2usize } else { 1 };
    let legend_rows = legend.len().div_ceil(legend_cols);
    let legend_top = TOP + 2.0 * PLOT_H + GAP_Y + 48.0;
    let height = legend_top + legend_rows as f64 * 20.0 + 16.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(s, r##"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"##, esc(title));
    let _ = writeln!(s, r##"<text x="{LEFT}" y="44" fill="#444">{}</text>"##, esc(subtitle));
    for (i, p) in panels.iter().enumerate() {
        let x0 = LEFT + i as f64 * (PLOT_W + GAP_X);
        let (lo, hi) = x_range(p);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"##,
            x0 + PLOT_W / 2.0,
            TOP - 10.0,
            esc(&p.title)
        );
        for row in 0..2 {
            let y0 = TOP + row as f64 * (PLOT_H + GAP_Y);
            axes(&mut s, x0, y0, lo, hi, row == 1, i == 0);
            let _ = writeln!(
                s,
                r##"<clipPath id="c{i}{row}"><rect x="{x0:.1}" y="{y0:.1}" width="{PLOT_W}" height="{PLOT_H}"/></clipPath>"##
            );
            for c in p.curves.iter().filter(|c| !c.points.is_empty()) {
                let pts: Vec<String> = c
                    .points
                    .iter()
                    .filter(|&&(q, us)| us > 0.0 && (row == 0 || q < 1.0))
                    .map(|&(q, us)| {
                        let x = x0 + x_pos(us, lo, hi);
                        let y = y0 + if row == 0 { (1.0 - q) * PLOT_H } else { tail_pos(1.0 - q) };
                        format!("{x:.1},{y:.1}")
                    })
                    .collect();
                let dash = if c.dashed { r##" stroke-dasharray="6,3""## } else { "" };
                let _ = writeln!(
                    s,
                    r##"<polyline clip-path="url(#c{i}{row})" fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"/>"##,
                    esc(&c.color),
                    pts.join(" ")
                );
            }
        }
    }
    for (k, c) in legend.iter().enumerate() {
        let x = LEFT + (k % legend_cols) as f64 * LEGEND_W;
        let y = legend_top + (k / legend_cols) as f64 * 20.0;
        let dash = if c.dashed { r##" stroke-dasharray="6,3""## } else { "" };
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2.5"{dash}/><text x="{:.1}" y="{y:.1}">{}</text>"##,
            y - 4.0,
            x + 28.0,
            y - 4.0,
            esc(&c.color),
            x + 36.0,
            esc(&c.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Decades of latency (µs) a panel spans: from the smallest sample to the 99.999th
/// percentile (the maximum is left out: one outlier would squash the rest).
fn x_range(p: &Panel) -> (i32, i32) {
    let vals = p.curves.iter().flat_map(|c| &c.points).filter(|(q, us)| *q < 1.0 && *us > 0.0).map(|(_, us)| *us);
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() || hi <= 0.0 {
        return (0, 3);
    }
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (a, b.max(a + 1))
}

fn x_pos(us: f64, lo: i32, hi: i32) -> f64 {
    (us.log10() - f64::from(lo)) / f64::from(hi - lo) * PLOT_W
}

/// Vertical position in the tail row of a fraction `f` (1 at the top, 10^-5 at the bottom).
fn tail_pos(f: f64) -> f64 {
    let f = f.max(10f64.powi(-TAIL_DECADES));
    -f.log10() / f64::from(TAIL_DECADES) * PLOT_H
}

fn us_label(decade: i32) -> String {
    match decade {
        d if d < 3 => format!("{} µs", 10u64.pow(d.max(0) as u32)),
        d if d < 6 => format!("{} ms", 10u64.pow((d - 3) as u32)),
        d => format!("{} s", 10u64.pow((d - 6) as u32)),
    }
}

fn axes(s: &mut String, x0: f64, y0: f64, lo: i32, hi: i32, tail: bool, first: bool) {
    let (x1, y1) = (x0 + PLOT_W, y0 + PLOT_H);
    let grid = "##e4e4e4";
    for d in lo..=hi {
        let x = x0 + x_pos(10f64.powi(d), lo, hi);
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="{grid}"/>"##);
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            y1 + 16.0,
            us_label(d)
        );
        if d < hi {
            for m in 2..10 {
                let x = x0 + x_pos(f64::from(m) * 10f64.powi(d), lo, hi);
                let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#f3f3f3"/>"##);
            }
        }
    }
    let ticks: Vec<(f64, String)> = if tail {
        (0..=TAIL_DECADES).map(|k| (tail_pos(10f64.powi(-k)), format!("{}%", 100.0 / 10f64.powi(k)))).collect()
    } else {
        [0.0, 0.25, 0.5, 0.75, 1.0].iter().map(|&q| ((1.0 - q) * PLOT_H, format!("{:.0}%", q * 100.0))).collect()
    };
    for (dy, label) in ticks {
        let y = y0 + dy;
        let _ = writeln!(s, r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="{grid}"/>"##);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{label}</text>"##,
            x0 - 5.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{x0:.1}" y="{y0:.1}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#888"/>"##
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">latency (log scale)</text>"##,
        x0 + PLOT_W / 2.0,
        y1 + 32.0
    );
    if first {
        let what = if tail { "messages slower than x" } else { "messages within x" };
        let (cx, cy) = (x0 - 48.0, y0 + PLOT_H / 2.0);
        let _ = writeln!(
            s,
            r##"<text x="{cx:.1}" y="{cy:.1}" text-anchor="middle" fill="#333" transform="rotate(-90 {cx:.1} {cy:.1})">{what}</text>"##
        );
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(label: &str, scale: f64) -> Curve {
        let points = (0..100).map(|i| (f64::from(i) / 100.0, scale * (1.0 + f64::from(i)))).collect();
        Curve { label: label.into(), color: "##d62728".into(), dashed: false, points }
    }

    #[test]
    fn one_polyline_per_curve_and_row_labels_escaped_axes_in_decades() {
        let panels = vec![
            Panel { title: "64 B".into(), curves: vec![curve("a<b & c", 10.0), curve("kernel", 20.0)] },
            Panel { title: "1 KiB".into(), curves: vec![curve("a<b & c", 30.0), curve("empty", 1.0)] },
        ];
        let mut empty = panels.clone();
        empty[1].curves[1].points.clear();
        let svg = latency_cdf_svg("t", "sub", &empty);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2 * 3, "3 non-empty curves × 2 rows");
        assert!(svg.contains("a&lt;b &amp; c") && !svg.contains("a<b"));
        assert_eq!(svg.matches(">a&lt;b &amp; c</text>").count(), 1, "one legend entry per label");
        assert!(!svg.contains(">empty</text>"), "a curve without points has no legend entry");
        // 10 µs .. 2 ms: from the 10 µs decade to the 10 ms one.
        assert_eq!(x_range(&panels[0]), (1, 4));
        assert!(svg.contains(">10 µs<") && svg.contains(">1 ms<") && svg.contains(">0.001%<"));
        assert!((x_pos(100.0, 1, 4) - PLOT_W / 3.0).abs() < 1e-9);
        assert!((tail_pos(0.01) - PLOT_H * 2.0 / 5.0).abs() < 1e-9 && tail_pos(0.0) == PLOT_H);
    }
}
