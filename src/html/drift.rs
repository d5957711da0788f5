//! The drift report of a refit: who moved between segments, how sizes changed, and which
//! features moved most. Same page, styles and rules as the cluster report: one file, inline
//! SVG, nothing fetched.

use std::fmt::Write;

use super::charts::{AXIS, INK, cluster_color, labelled_cell, share_color, text, z_color};
use super::{card, escape, fmt_num, page, swatch};
use crate::campaign::drift::Drift;

pub struct DriftReport<'a> {
    pub title: &'a str,
    /// The new input files, for the header.
    pub inputs: &'a [String],
    pub drift: &'a Drift,
}

pub fn drift_report(r: &DriftReport) -> String {
    let d = r.drift;
    let mut b = String::new();
    b += &summary(d);
    b += &flows_section(d);
    b += &migration_section(d);
    b += &sizes_section(d);
    b += &shifts_section(d);
    b += "<section><h2>Reading this report</h2><p class=\"note\">Customers are joined across the two \
          runs by the key columns. Moved share: joined customers whose segment id changed. Segment ids are \
          kept by matching each new centroid to the nearest previous one (a minimum-cost assignment), so the \
          same id means the same segment. PSI, the population stability index of a segment's size share p \
          (before) and q (now), is (q − p)·ln(q/p); summed over segments, below 0.1 is commonly read as \
          stable and above 0.25 as a major shift. Centroid shifts are (new − previous centroid) divided by \
          the standard deviation of the feature.</p></section>";
    let lead = format!(
        "{} · {} features · joined on {}",
        r.inputs.join(", "),
        d.features.len(),
        d.key_columns.join(", ")
    );
    page(r.title, "Segment drift", &lead, &b)
}

fn summary(d: &Drift) -> String {
    let mut b = String::from("<section><h2>Summary</h2>");
    let _ = write!(
        b,
        r#"<p class="note">{} customers before, {} now, {} in both runs.</p><div class="cards">"#,
        fmt_num(d.previous_rows as f64),
        fmt_num(d.rows as f64),
        fmt_num(d.joined as f64)
    );
    b += &card(
        &d.moved_share
            .map_or("n/a".into(), |s| format!("{:.1}%", 100.0 * s)),
        "of joined customers changed segment",
    );
    b += &card(&fmt_num(d.joined as f64), "customers in both runs");
    b += &card(&format!("{:.3}", d.psi_total), "PSI of the segment sizes");
    b += &card(&ids_or_none(&d.new_ids), "new segment ids");
    b += &card(&ids_or_none(&d.vanished_ids), "vanished segment ids");
    b += "</div><ul class=\"glance\">";
    for s in &d.segments {
        let _ = write!(
            b,
            "<li>{}<strong>Segment {}</strong> · {} → {} · {}{}</li>",
            swatch(s.id as usize),
            s.id,
            fmt_num(s.previous_size as f64),
            fmt_num(s.size as f64),
            escape(s.status),
            s.largest_shift
                .as_ref()
                .map_or(String::new(), |f| format!(" · moved most in {}", escape(f)))
        );
    }
    b += "</ul></section>\n";
    b
}

fn ids_or_none(ids: &[u32]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        crate::campaign::export::join_ids(ids)
    }
}

/// Bands from each previous segment (left) to each new one (right), as wide as the customers
/// who took that path.
fn flows_section(d: &Drift) -> String {
    let m = &d.migration;
    let total: u64 = m.counts.iter().flatten().sum();
    if total == 0 {
        return "<section><h2>Flows between segments</h2><p class=\"note\">No customer is in both runs.</p></section>\n".into();
    }
    let (w, h) = (900.0, 460.0);
    let (top, bottom, bar_w) = (40.0, 24.0, 18.0);
    let (xl, xr) = (170.0, w - 170.0 - bar_w);
    let gap = 10.0;
    let avail = |n: usize| h - top - bottom - gap * n.saturating_sub(1) as f64;
    let scale = avail(m.previous_ids.len()).min(avail(m.new_ids.len())) / total as f64;
    let row_tot: Vec<u64> = m.counts.iter().map(|r| r.iter().sum()).collect();
    let col_tot: Vec<u64> = (0..m.new_ids.len())
        .map(|j| m.counts.iter().map(|r| r[j]).sum())
        .collect();
    let stack = |tot: &[u64]| -> Vec<f64> {
        let mut y = top;
        tot.iter()
            .map(|&t| {
                let y0 = y;
                y += t as f64 * scale + gap;
                y0
            })
            .collect()
    };
    let (ly, ry) = (stack(&row_tot), stack(&col_tot));
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" role="img" aria-label="Flows between segments">"#
    );
    s += &text(xl, 20.0, "start", 12.0, AXIS, "", "previous run");
    s += &text(xr + bar_w, 20.0, "end", 12.0, AXIS, "", "this run");
    let mut out_off = ly.clone();
    let mut in_off = ry.clone();
    for (i, row) in m.counts.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let t = c as f64 * scale;
            let (y0, y1) = (out_off[i], in_off[j]);
            out_off[i] += t;
            in_off[j] += t;
            let (x0, x1) = (xl + bar_w, xr);
            let cx = (x0 + x1) / 2.0;
            let _ = write!(
                s,
                r#"<path d="M{x0:.1},{y0:.1} C{cx:.1},{y0:.1} {cx:.1},{y1:.1} {x1:.1},{y1:.1} L{x1:.1},{:.1} C{cx:.1},{:.1} {cx:.1},{:.1} {x0:.1},{:.1} Z" fill="{}" fill-opacity="0.38"><title>{} → {}: {}</title></path>"#,
                y1 + t,
                y1 + t,
                y0 + t,
                y0 + t,
                cluster_color(m.previous_ids[i] as usize),
                m.previous_ids[i],
                m.new_ids[j],
                fmt_num(c as f64)
            );
        }
    }
    let bars = |s: &mut String, ids: &[u32], ys: &[f64], tot: &[u64], x: f64, left: bool| {
        for ((id, y), t) in ids.iter().zip(ys).zip(tot) {
            let hgt = (*t as f64 * scale).max(1.0);
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar_w}" height="{hgt:.1}" rx="2" fill="{}"/>"#,
                cluster_color(*id as usize)
            );
            let label = format!("segment {id} ({})", fmt_num(*t as f64));
            let (lx, anchor) = if left {
                (x - 8.0, "end")
            } else {
                (x + bar_w + 8.0, "start")
            };
            *s += &text(lx, y + hgt / 2.0 + 4.0, anchor, 13.0, INK, "", &label);
        }
    };
    bars(&mut s, &m.previous_ids, &ly, &row_tot, xl, true);
    bars(&mut s, &m.new_ids, &ry, &col_tot, xr, false);
    s += "</svg>";
    format!(
        "<section><h2>Flows between segments</h2><p class=\"note\">Customers present in both runs, from \
         their previous segment (left) to their segment now (right); each band is as wide as the customers \
         who took that path.</p>{s}</section>\n"
    )
}

/// A colour swatch and "segment <id>" at the left of a grid row starting at `y`.
fn row_label(id: u32, y: f64, row_h: f64) -> String {
    format!(
        r#"<rect x="8" y="{:.1}" width="12" height="12" rx="2" fill="{}"/>{}"#,
        y + row_h / 2.0 - 6.0,
        cluster_color(id as usize),
        text(
            26.0,
            y + row_h / 2.0 + 4.0,
            "start",
            13.0,
            INK,
            "",
            &format!("segment {id}")
        )
    )
}

/// The previous-id × new-id count matrix, shaded by the share of the previous segment.
fn migration_section(d: &Drift) -> String {
    let m = &d.migration;
    let (label_w, cell_w, cell_h, head_h) = (130.0, 86.0, 34.0, 56.0);
    let w = (label_w + cell_w * m.new_ids.len() as f64 + 24.0).max(480.0);
    let h = head_h + cell_h * m.previous_ids.len() as f64 + 40.0;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" role="img" aria-label="Migration between segments">"#
    );
    s += &text(
        label_w,
        16.0,
        "start",
        12.0,
        AXIS,
        "",
        "segment now →   (rows: previous segment)",
    );
    for (j, id) in m.new_ids.iter().enumerate() {
        let x = label_w + cell_w * (j as f64 + 0.5);
        s += &text(x, head_h - 10.0, "middle", 13.0, INK, "", &id.to_string());
    }
    for (i, row) in m.counts.iter().enumerate() {
        let y = head_h + cell_h * i as f64;
        let tot: u64 = row.iter().sum();
        s += &row_label(m.previous_ids[i], y, cell_h);
        for (j, &c) in row.iter().enumerate() {
            let share = c as f64 / tot.max(1) as f64;
            let x = label_w + cell_w * j as f64;
            let diag = m.previous_ids[i] == m.new_ids[j];
            s += &labelled_cell(
                x,
                y,
                (cell_w, cell_h),
                &share_color(share),
                if diag { INK } else { "white" },
                if share > 0.45 { "#ffffff" } else { INK },
                &fmt_num(c as f64),
            );
        }
    }
    s += &text(
        label_w,
        h - 12.0,
        "start",
        12.0,
        AXIS,
        "",
        "shade: share of the previous segment; outlined: stayed",
    );
    s += "</svg>";
    format!(
        "<section><h2>Migration matrix</h2><p class=\"note\">Customers in both runs, by previous segment \
         (rows) and segment now (columns). The outlined diagonal holds those who stayed.</p>{s}</section>\n"
    )
}

/// Previous and new size share of every segment, side by side, with its PSI.
fn sizes_section(d: &Drift) -> String {
    let (label_w, bar_w, row_h, top) = (140.0, 520.0, 46.0, 30.0);
    let w = label_w + bar_w + 220.0;
    let h = top + row_h * d.segments.len() as f64 + 30.0;
    let max = d
        .segments
        .iter()
        .map(|s| s.share.max(s.previous_share))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" role="img" aria-label="Segment sizes before and now">"#
    );
    s += &text(
        label_w,
        18.0,
        "start",
        12.0,
        AXIS,
        "",
        "share of customers: previous (grey), now (colour)",
    );
    for (i, seg) in d.segments.iter().enumerate() {
        let y = top + row_h * i as f64;
        s += &text(
            label_w - 10.0,
            y + row_h / 2.0 + 4.0,
            "end",
            13.0,
            INK,
            "",
            &format!("segment {} ({})", seg.id, seg.status),
        );
        for (k, (share, fill)) in [
            (seg.previous_share, "#b8bec7".to_string()),
            (seg.share, cluster_color(seg.id as usize)),
        ]
        .into_iter()
        .enumerate()
        {
            let _ = write!(
                s,
                r#"<rect x="{label_w}" y="{:.1}" width="{:.1}" height="15" rx="2" fill="{fill}"/>"#,
                y + 6.0 + 17.0 * k as f64,
                (bar_w * share / max).max(0.5)
            );
        }
        s += &text(
            label_w + bar_w + 10.0,
            y + row_h / 2.0 + 4.0,
            "start",
            12.0,
            AXIS,
            "",
            &format!(
                "{:.1}% → {:.1}% · PSI {:.3}",
                100.0 * seg.previous_share,
                100.0 * seg.share,
                seg.psi
            ),
        );
    }
    s += "</svg>";
    format!(
        "<section><h2>Size changes</h2><p class=\"note\">Each segment's share of the customers in the \
         previous and in this run, and its population stability index.</p>{s}</section>\n"
    )
}

/// Segments × features, coloured by the centroid shift in standard deviations, and the
/// largest shifts listed.
fn shifts_section(d: &Drift) -> String {
    let kept: Vec<_> = d
        .segments
        .iter()
        .filter(|s| s.centroid_shift.is_some())
        .collect();
    if kept.is_empty() {
        return String::new();
    }
    let (label_w, head_h, cell_h) = (130.0, 100.0, 34.0);
    let cell_w = (720.0 / d.features.len().max(1) as f64).clamp(60.0, 120.0);
    let w = (label_w + cell_w * d.features.len() as f64 + 30.0).max(520.0);
    let h = head_h + cell_h * kept.len() as f64 + 40.0;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" role="img" aria-label="Centroid shifts">"#
    );
    for (j, f) in d.features.iter().enumerate() {
        let cx = label_w + cell_w * (j as f64 + 0.5);
        let _ = write!(
            s,
            r#"<text x="{cx:.1}" y="{0:.1}" font-size="12" fill="{INK}" text-anchor="start" transform="rotate(-35 {cx:.1} {0:.1})">{1}</text>"#,
            head_h - 10.0,
            escape(f)
        );
    }
    let mut rows = String::new();
    for (i, seg) in kept.iter().enumerate() {
        let y = head_h + cell_h * i as f64;
        s += &row_label(seg.id, y, cell_h);
        let shift = seg.centroid_shift.as_ref().map(|m| {
            d.features
                .iter()
                .map(|f| m.get(f).copied().unwrap_or(0.0))
                .collect::<Vec<f64>>()
        });
        let shift = shift.unwrap_or_default();
        for (j, v) in shift.iter().enumerate() {
            let x = label_w + cell_w * j as f64;
            s += &labelled_cell(
                x,
                y,
                (cell_w, cell_h),
                &z_color(*v),
                "white",
                if v.abs() > 1.3 { "#ffffff" } else { INK },
                &format!("{v:+.2}"),
            );
        }
        let mut top: Vec<(usize, f64)> = shift.iter().copied().enumerate().collect();
        top.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        let _ = write!(
            rows,
            "<tr><td class=\"t\">{}{}</td><td class=\"t\">",
            swatch(seg.id as usize),
            seg.id
        );
        for (j, v) in top.iter().take(3) {
            let dir = if *v >= 0.0 { "high" } else { "low" };
            let _ = write!(
                rows,
                "<span class=\"tag {dir}\">{} {v:+.2}</span>",
                escape(&d.features[*j])
            );
        }
        rows += "</td></tr>";
    }
    s += &text(
        label_w,
        h - 12.0,
        "start",
        12.0,
        AXIS,
        "",
        "red: the centroid moved up, blue: down; colour saturates at ±2",
    );
    s += "</svg>";
    format!(
        "<section><h2>Features that moved most</h2><p class=\"note\">How far each segment's centroid moved \
         in each feature, in units of the {}.</p>{s}<table><tr><th class=\"t\">Segment</th>\
         <th class=\"t\">Largest shifts</th></tr>{rows}</table></section>\n",
        escape(&d.shift_unit)
    )
}
