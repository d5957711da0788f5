//! Hand-built inline SVG charts. Every chart is a self-contained `<svg>` element with its
//! own axes, labels and legend, sized by a viewBox so that it scales with the page.

use std::fmt::Write;

use super::{escape, fmt_num};
use crate::insight::pca::Projection;

/// Distinct, print-friendly colours for clusters; further clusters take golden-angle hues.
const PALETTE: [&str; 12] = [
    "#3b6fb6", "#e8833a", "#3a9e6f", "#d64550", "#8a63b8", "#c9a227", "#2a9fb0", "#d36fb4",
    "#6b7a8f", "#9b6a4f", "#6aa84f", "#b5475f",
];

/// Colour of cluster `c`.
pub fn cluster_color(c: usize) -> String {
    match PALETTE.get(c) {
        Some(s) => s.to_string(),
        None => format!("hsl({:.0},55%,48%)", (c as f64 * 137.508) % 360.0),
    }
}

pub(crate) const AXIS: &str = "#5b6472";
const GRID: &str = "#e6e9ee";
pub(crate) const INK: &str = "#1f2630";

fn lerp(a: (f64, f64, f64), b: (f64, f64, f64), t: f64) -> String {
    let m = |x: f64, y: f64| (x + (y - x) * t).round().clamp(0.0, 255.0) as u8;
    format!("#{:02x}{:02x}{:02x}", m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
}

/// Diverging colour for a z-score: blue below the population, orange-red above, clamped at ±2.
pub fn z_color(z: f64) -> String {
    let t = (z / 2.0).clamp(-1.0, 1.0);
    let mid = (247.0, 247.0, 245.0);
    if t < 0.0 {
        lerp(mid, (44.0, 109.0, 178.0), -t)
    } else {
        lerp(mid, (200.0, 75.0, 49.0), t)
    }
}

/// Sequential colour for a share in [0, 1] (white to deep teal).
pub fn share_color(s: f64) -> String {
    lerp(
        (250.0, 251.0, 252.0),
        (24.0, 110.0, 125.0),
        s.clamp(0.0, 1.0).sqrt(),
    )
}

/// About `n` round tick values covering [lo, hi].
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return vec![0.0];
    }
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    let mut out = Vec::new();
    let mut v = start;
    while v <= hi + step * 1e-9 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
        if out.len() > 50 {
            break;
        }
    }
    if out.last().is_some_and(|&l| l < hi - step * 1e-9) {
        out.push(v);
    }
    out
}

/// Labels for `ticks`, all with the same number of decimals (enough for the step).
pub fn tick_labels(ticks: &[f64]) -> Vec<String> {
    let step = ticks
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    let big = ticks.iter().map(|t| t.abs()).fold(0.0f64, f64::max);
    if !step.is_finite() || big >= 1000.0 || step <= 0.0 {
        return ticks.iter().map(|&t| fmt_num(t)).collect();
    }
    let mut dec = 0usize;
    while dec < 6 {
        let m = step * 10f64.powi(dec as i32);
        if (m.round() - m).abs() <= 1e-6 {
            break;
        }
        dec += 1;
    }
    ticks.iter().map(|t| format!("{t:.dec$}")).collect()
}

pub(crate) fn text(
    x: f64,
    y: f64,
    anchor: &str,
    size: f64,
    fill: &str,
    extra: &str,
    body: &str,
) -> String {
    format!(
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}" fill="{fill}"{extra}>{}</text>"#,
        escape(body)
    )
}

/// A grid cell of `size` (width, height) filled with `fill`, outlined with `stroke` (2 px,
/// 1.5 px when not white), with `label` centred in `ink`.
pub(crate) fn labelled_cell(
    x: f64,
    y: f64,
    size: (f64, f64),
    fill: &str,
    stroke: &str,
    ink: &str,
    label: &str,
) -> String {
    let (w, h) = size;
    let sw = if stroke == "white" { 2.0 } else { 1.5 };
    format!(
        r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}" stroke="{stroke}" stroke-width="{sw}"/>{}"#,
        text(
            x + w / 2.0,
            y + h / 2.0 + 4.0,
            "middle",
            12.0,
            ink,
            "",
            label
        )
    )
}

/// Horizontal bars, one per cluster: `(label, value, share)`; the share is printed at the end.
pub fn size_bars(items: &[(String, f64, f64)]) -> String {
    let label_w = 260.0;
    let bar_w = 560.0;
    let row_h = 30.0;
    let top = 34.0;
    let h = top + row_h * items.len() as f64 + 44.0;
    let w = label_w + bar_w + 120.0;
    let max = items.iter().map(|i| i.1).fold(0.0f64, f64::max).max(1e-300);
    let ticks = nice_ticks(0.0, max, 5);
    let scale_max = ticks.last().copied().unwrap_or(max).max(max);
    let x = |v: f64| label_w + bar_w * v / scale_max;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" role="img" aria-label="Cluster sizes">"#
    );
    let axis_y = top + row_h * items.len() as f64;
    for (t, lab) in ticks.iter().zip(tick_labels(&ticks)) {
        let _ = write!(
            s,
            r#"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{axis_y:.1}" stroke="{GRID}"/>"#,
            x(*t)
        );
        s += &text(x(*t), axis_y + 18.0, "middle", 12.0, AXIS, "", &lab);
    }
    for (i, (label, v, share)) in items.iter().enumerate() {
        let y = top + row_h * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{label_w}" y="{:.1}" width="{:.1}" height="{:.1}" rx="3" fill="{}"/>"#,
            y + 5.0,
            (x(*v) - label_w).max(0.5),
            row_h - 10.0,
            cluster_color(i)
        );
        s += &text(
            label_w - 10.0,
            y + row_h / 2.0 + 4.0,
            "end",
            13.0,
            INK,
            "",
            label,
        );
        s += &text(
            x(*v) + 8.0,
            y + row_h / 2.0 + 4.0,
            "start",
            12.0,
            AXIS,
            "",
            &format!("{} ({:.1}%)", fmt_num(*v), 100.0 * share),
        );
    }
    let _ = write!(
        s,
        r#"<line x1="{label_w}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="{AXIS}"/>"#,
        label_w + bar_w
    );
    s += &text(
        label_w + bar_w / 2.0,
        h - 6.0,
        "middle",
        12.0,
        AXIS,
        "",
        "rows (weighted when a weight column is given)",
    );
    s += &text(label_w, 18.0, "start", 12.0, AXIS, "", "Cluster size");
    s += "</svg>";
    s
}

/// A clusters × variables grid coloured by z-score, with the value in each cell and a legend.
pub fn heatmap(rows: &[String], cols: &[String], z: &[Vec<Option<f64>>]) -> String {
    let label_w = 120.0;
    let cell_w = (720.0 / cols.len().max(1) as f64).clamp(56.0, 120.0);
    let cell_h = 34.0;
    let head_h = 110.0;
    let w = label_w + cell_w * cols.len() as f64 + 40.0;
    let w = w.max(560.0);
    let h = head_h + cell_h * rows.len() as f64 + 96.0;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" role="img" aria-label="Feature z-scores per cluster">"#
    );
    for (j, c) in cols.iter().enumerate() {
        let cx = label_w + cell_w * (j as f64 + 0.5);
        let _ = write!(
            s,
            r#"<text x="{cx:.1}" y="{:.1}" font-size="12" fill="{INK}" text-anchor="start" transform="rotate(-35 {cx:.1} {:.1})">{}</text>"#,
            head_h - 10.0,
            head_h - 10.0,
            escape(c)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = head_h + cell_h * i as f64;
        let _ = write!(
            s,
            r#"<rect x="4" y="{:.1}" width="12" height="12" rx="2" fill="{}"/>"#,
            y + cell_h / 2.0 - 6.0,
            cluster_color(i)
        );
        s += &text(22.0, y + cell_h / 2.0 + 4.0, "start", 13.0, INK, "", r);
        for (j, v) in z[i].iter().enumerate() {
            let x = label_w + cell_w * j as f64;
            let (fill, label, ink) = match v {
                Some(v) => (
                    z_color(*v),
                    format!("{v:+.2}"),
                    if v.abs() > 1.3 { "#ffffff" } else { INK },
                ),
                None => ("#eeeeee".to_string(), "n/a".to_string(), AXIS),
            };
            s += &labelled_cell(x, y, (cell_w, cell_h), &fill, "white", ink, &label);
        }
    }
    // Legend: a gradient strip from -2 to +2 made of small rects (no defs needed).
    let ly = head_h + cell_h * rows.len() as f64 + 28.0;
    let lx = label_w;
    let lw = 240.0;
    let steps = 48;
    for i in 0..steps {
        let z = -2.0 + 4.0 * (i as f64 + 0.5) / steps as f64;
        let _ = write!(
            s,
            r#"<rect x="{:.2}" y="{ly:.1}" width="{:.2}" height="12" fill="{}"/>"#,
            lx + lw * i as f64 / steps as f64,
            lw / steps as f64 + 0.3,
            z_color(z)
        );
    }
    for (z, t) in [
        (-2.0, "−2 SD (low)"),
        (0.0, "population"),
        (2.0, "+2 SD (high)"),
    ] {
        s += &text(
            lx + lw * (z + 2.0) / 4.0,
            ly + 28.0,
            "middle",
            11.0,
            AXIS,
            "",
            t,
        );
    }
    s += &text(
        lx,
        ly + 48.0,
        "start",
        12.0,
        AXIS,
        "",
        "z = (cluster mean − population mean) / population SD",
    );
    s += "</svg>";
    s
}

/// The 2-D projection, one dot per sampled row coloured by cluster, centres marked.
pub fn scatter(p: &Projection, names: &[String]) -> String {
    let (w, h) = (860.0, 560.0);
    let (l, r, t, b) = (70.0, 200.0, 24.0, 56.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let xs = p.points.iter().map(|q| q[0]);
    let ys = p.points.iter().map(|q| q[1]);
    let (x0, x1) = (
        xs.clone().fold(f64::INFINITY, f64::min),
        xs.fold(f64::NEG_INFINITY, f64::max),
    );
    let (y0, y1) = (
        ys.clone().fold(f64::INFINITY, f64::min),
        ys.fold(f64::NEG_INFINITY, f64::max),
    );
    let xt = nice_ticks(x0, x1, 6);
    let yt = nice_ticks(y0, y1, 5);
    let (xa, xb) = (
        xt.first().copied().unwrap_or(-1.0),
        xt.last().copied().unwrap_or(1.0),
    );
    let (ya, yb) = (
        yt.first().copied().unwrap_or(-1.0),
        yt.last().copied().unwrap_or(1.0),
    );
    let sx = |v: f64| l + pw * (v - xa) / (xb - xa).max(1e-300);
    let sy = |v: f64| t + ph - ph * (v - ya) / (yb - ya).max(1e-300);
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="PCA projection of a sample, coloured by cluster">"#
    );
    for (v, lab) in xt.iter().zip(tick_labels(&xt)) {
        let _ = write!(
            s,
            r#"<line x1="{0:.1}" y1="{t}" x2="{0:.1}" y2="{1:.1}" stroke="{GRID}"/>"#,
            sx(*v),
            t + ph
        );
        s += &text(sx(*v), t + ph + 18.0, "middle", 12.0, AXIS, "", &lab);
    }
    for (v, lab) in yt.iter().zip(tick_labels(&yt)) {
        let _ = write!(
            s,
            r#"<line x1="{l}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="{GRID}"/>"#,
            sy(*v),
            l + pw
        );
        s += &text(l - 8.0, sy(*v) + 4.0, "end", 12.0, AXIS, "", &lab);
    }
    let _ = write!(
        s,
        r#"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="{AXIS}"/>"#
    );
    s += r#"<g fill-opacity="0.55">"#;
    for (q, &c) in p.points.iter().zip(&p.labels) {
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="2.6" fill="{}"/>"#,
            sx(q[0]),
            sy(q[1]),
            cluster_color(c as usize)
        );
    }
    s += "</g>";
    for (c, ctr) in p.centers.iter().enumerate() {
        if let Some(q) = ctr {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="8" fill="{}" stroke="white" stroke-width="2.5"/>"#,
                sx(q[0]),
                sy(q[1]),
                cluster_color(c)
            );
            s += &text(
                sx(q[0]),
                sy(q[1]) - 12.0,
                "middle",
                12.0,
                INK,
                r#" font-weight="600""#,
                &c.to_string(),
            );
        }
    }
    s += &text(
        l + pw / 2.0,
        h - 12.0,
        "middle",
        13.0,
        INK,
        "",
        &format!("PC1 ({:.0}% of variance)", 100.0 * p.explained[0]),
    );
    let _ = write!(
        s,
        r#"<text x="18" y="{0:.1}" text-anchor="middle" font-size="13" fill="{INK}" transform="rotate(-90 18 {0:.1})">{1}</text>"#,
        t + ph / 2.0,
        escape(&format!("PC2 ({:.0}% of variance)", 100.0 * p.explained[1]))
    );
    let lx = l + pw + 24.0;
    s += &text(
        lx,
        t + 12.0,
        "start",
        12.0,
        AXIS,
        r#" font-weight="600""#,
        "Cluster",
    );
    for (c, name) in names.iter().enumerate() {
        let y = t + 30.0 + 20.0 * c as f64;
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{}"/>"#,
            lx + 5.0,
            y - 4.0,
            cluster_color(c)
        );
        s += &text(lx + 16.0, y, "start", 12.0, INK, "", name);
    }
    s += "</svg>";
    s
}

/// A line chart of `ys` against integer `xs`, with `mark` highlighted.
pub fn line_chart(
    title: &str,
    y_label: &str,
    xs: &[usize],
    ys: &[Option<f64>],
    mark: Option<usize>,
    color: &str,
) -> String {
    let (w, h) = (540.0, 320.0);
    let (l, r, t, b) = (78.0, 18.0, 34.0, 50.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let vals: Vec<f64> = ys
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let yt = if vals.is_empty() {
        vec![0.0, 1.0]
    } else {
        nice_ticks(lo, hi, 5)
    };
    let (ya, yb) = (
        yt.first().copied().unwrap_or(0.0),
        yt.last().copied().unwrap_or(1.0),
    );
    let (xa, xb) = (
        xs.first().copied().unwrap_or(0) as f64,
        xs.last().copied().unwrap_or(1) as f64,
    );
    let sx = |v: f64| {
        if xb > xa {
            l + pw * (v - xa) / (xb - xa)
        } else {
            l + pw / 2.0
        }
    };
    let sy = |v: f64| t + ph - ph * (v - ya) / (yb - ya).max(1e-300);
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"#,
        escape(title)
    );
    s += &text(l, 20.0, "start", 14.0, INK, r#" font-weight="600""#, title);
    for (v, lab) in yt.iter().zip(tick_labels(&yt)) {
        let _ = write!(
            s,
            r#"<line x1="{l}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="{GRID}"/>"#,
            sy(*v),
            l + pw
        );
        s += &text(l - 8.0, sy(*v) + 4.0, "end", 11.0, AXIS, "", &lab);
    }
    let every = xs.len().div_ceil(12).max(1);
    for (i, &x) in xs.iter().enumerate() {
        if i % every == 0 || i + 1 == xs.len() {
            s += &text(
                sx(x as f64),
                t + ph + 18.0,
                "middle",
                11.0,
                AXIS,
                "",
                &x.to_string(),
            );
        }
    }
    let _ = write!(
        s,
        r#"<line x1="{l}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="{AXIS}"/>"#,
        t + ph,
        l + pw
    );
    let _ = write!(
        s,
        r#"<line x1="{l}" y1="{t}" x2="{l}" y2="{:.1}" stroke="{AXIS}"/>"#,
        t + ph
    );
    if let Some(m) = mark {
        let _ = write!(
            s,
            r#"<line x1="{0:.1}" y1="{t}" x2="{0:.1}" y2="{1:.1}" stroke="{INK}" stroke-dasharray="4 4" stroke-opacity="0.6"/>"#,
            sx(m as f64),
            t + ph
        );
        s += &text(
            sx(m as f64) + 4.0,
            t + 12.0,
            "start",
            11.0,
            INK,
            "",
            &format!("recommended k = {m}"),
        );
    }
    let pts: Vec<String> = xs
        .iter()
        .zip(ys)
        .filter_map(|(&x, y)| {
            y.filter(|v| v.is_finite())
                .map(|y| format!("{:.1},{:.1}", sx(x as f64), sy(y)))
        })
        .collect();
    let _ = write!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
        pts.join(" ")
    );
    for (&x, y) in xs.iter().zip(ys) {
        if let Some(y) = y.filter(|v| v.is_finite()) {
            let big = Some(x) == mark;
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="{}" fill="{}" stroke="{color}" stroke-width="2"/>"#,
                sx(x as f64),
                sy(y),
                if big { 6.0 } else { 3.5 },
                if big { color } else { "#ffffff" }
            );
        }
    }
    s += &text(
        l + pw / 2.0,
        h - 10.0,
        "middle",
        12.0,
        INK,
        "",
        "number of clusters k",
    );
    let _ = write!(
        s,
        r#"<text x="16" y="{0:.1}" text-anchor="middle" font-size="12" fill="{INK}" transform="rotate(-90 16 {0:.1})">{1}</text>"#,
        t + ph / 2.0,
        escape(y_label)
    );
    s += "</svg>";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_the_range_with_round_steps() {
        let t = nice_ticks(0.0, 97.0, 5);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().unwrap() >= 97.0);
        assert_eq!(t[1] - t[0], 20.0);
        assert!(nice_ticks(3.0, 3.0, 5).len() >= 2);
    }

    #[test]
    fn colours_diverge_around_white() {
        assert_eq!(z_color(0.0), "#f7f7f5");
        assert_eq!(z_color(5.0), z_color(2.0));
        assert_ne!(z_color(-1.0), z_color(1.0));
    }
}
