//! The HTML report: one self-contained file (inline CSS and SVG, no scripts, fonts or other
//! resources fetched), readable in any browser and printable.

pub mod charts;
pub mod drift;

use std::fmt::Write;

use crate::insight::pca::Projection;
use crate::insight::profile::Profile;
use crate::insight::sweep::Sweep;

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o += "&amp;",
            '<' => o += "&lt;",
            '>' => o += "&gt;",
            '"' => o += "&quot;",
            '\'' => o += "&#39;",
            c => o.push(c),
        }
    }
    o
}

/// A number for people: thousands separated, few decimals.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let r = v.round() as i64;
        let digits = r.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        if r < 0 { format!("-{out}") } else { out }
    } else if a >= 100.0 || a == 0.0 || (a - a.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else if a >= 0.0001 {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), fmt_num)
}

const CSS: &str = r#"
:root { --ink:#1f2630; --muted:#5b6472; --line:#e3e7ec; --bg:#f5f6f8; --card:#ffffff; --accent:#3b6fb6; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font-family: "Inter", "Segoe UI", "Helvetica Neue", Helvetica, Arial, "Liberation Sans", sans-serif;
  font-size:15px; line-height:1.5; }
main { max-width:1180px; margin:0 auto; padding:32px 28px 56px; }
header { margin-bottom:24px; }
header .kicker { color:var(--accent); font-weight:600; letter-spacing:.08em; text-transform:uppercase; font-size:12px; }
h1 { font-size:30px; margin:4px 0 6px; letter-spacing:-.01em; }
h2 { font-size:20px; margin:0 0 4px; }
p.lead { color:var(--muted); margin:0; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:22px 24px; margin:18px 0; }
section > p.note { color:var(--muted); margin:2px 0 14px; font-size:13.5px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(160px, 1fr)); gap:12px; margin-top:14px; }
.card { background:var(--bg); border-radius:8px; padding:12px 14px; }
.card .v { font-size:22px; font-weight:650; }
.card .l { color:var(--muted); font-size:12.5px; }
.glance { list-style:none; padding:0; margin:14px 0 0; columns:2; column-gap:28px; }
.glance li { margin:0 0 8px; break-inside:avoid; }
.sw { display:inline-block; width:11px; height:11px; border-radius:3px; margin-right:7px; vertical-align:baseline; }
svg.chart { max-width:100%; height:auto; display:block; margin:8px 0 0;
  font-family: "Inter", "Segoe UI", "Helvetica Neue", Helvetica, Arial, "Liberation Sans", sans-serif; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:8px 24px; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-size:13.5px; margin-top:10px; font-variant-numeric:tabular-nums; }
th, td { padding:7px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { color:var(--muted); font-weight:600; font-size:12.5px; background:#fafbfc; }
td.t, th.t { text-align:left; white-space:normal; }
tr.pop td { font-weight:600; background:#fafbfc; }
tr.best td { background:#eef4fb; font-weight:600; }
td small { color:var(--muted); }
.tag { display:inline-block; padding:1px 7px; border-radius:10px; font-size:12px; margin:1px 3px 1px 0; }
.tag.high { background:#fbe7e1; color:#8f2f1a; }
.tag.low { background:#e2ecf7; color:#1d4f86; }
.reason { background:#eef4fb; border-left:4px solid var(--accent); padding:10px 14px; border-radius:6px; margin-top:14px; }
footer { color:var(--muted); font-size:12.5px; margin-top:26px; }
@media print { body { background:#fff; } section { break-inside:avoid; border-color:#ccc; } }
"#;

fn page(title: &str, kicker: &str, lead: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"lakemeans {ver}\">\n<title>{t}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n\
         <header><div class=\"kicker\">{kicker}</div><h1>{t}</h1><p class=\"lead\">{lead}</p></header>\n\
         {body}\n<footer>Made with lakemeans {ver}. Self-contained: no scripts, fonts or images are loaded from anywhere.</footer>\n\
         </main>\n</body>\n</html>\n",
        ver = env!("CARGO_PKG_VERSION"),
        t = escape(title),
        kicker = escape(kicker),
        lead = escape(lead),
    )
}

fn card(value: &str, label: &str) -> String {
    format!(
        r#"<div class="card"><div class="v">{}</div><div class="l">{}</div></div>"#,
        escape(value),
        escape(label)
    )
}

fn swatch(c: usize) -> String {
    format!(
        r#"<span class="sw" style="background:{}"></span>"#,
        charts::cluster_color(c)
    )
}

/// The input files as a report's header names them: the file names alone.
pub fn file_names(files: &[std::path::PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| {
            f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

/// What a cluster report shows beyond the profile itself.
pub struct ClusterReport<'a> {
    pub title: &'a str,
    /// The input files, for the header.
    pub inputs: &'a [String],
    pub profile: &'a Profile,
    pub projection: Option<&'a Projection>,
    /// Extra facts for the summary, such as the device or the scaling.
    pub facts: Vec<(String, String)>,
}

/// The report of one clustering: summary, sizes, z-score heatmap, projection, profile table,
/// described columns, and the comparison with existing segments when there is one.
pub fn cluster_report(r: &ClusterReport) -> String {
    let p = r.profile;
    let mut b = String::new();
    // Summary.
    b += "<section><h2>Summary</h2>";
    let _ = write!(
        b,
        r#"<p class="note">{} rows{} clustered into {} groups on {} features: {}.</p>"#,
        fmt_num(p.rows as f64),
        if p.weighted {
            format!(" (total weight {})", fmt_num(p.total_weight))
        } else {
            String::new()
        },
        p.k,
        p.features.len(),
        escape(&p.features.join(", "))
    );
    b += r#"<div class="cards">"#;
    b += &card(&fmt_num(p.rows as f64), "rows");
    b += &card(&p.k.to_string(), "clusters");
    b += &card(&p.features.len().to_string(), "features");
    if let Some(m) = &p.metrics {
        b += &card(
            &m.silhouette.map_or("n/a".into(), |v| format!("{v:.3}")),
            &format!("silhouette (on {} rows)", fmt_num(m.silhouette_rows as f64)),
        );
        b += &card(&opt(m.calinski_harabasz), "Calinski-Harabasz");
        b += &card(
            &m.davies_bouldin.map_or("n/a".into(), |v| format!("{v:.3}")),
            "Davies-Bouldin",
        );
    }
    if let Some(c) = &p.compare {
        b += &card(&format!("{:.3}", c.ari), &format!("ARI vs {}", c.column));
        b += &card(&format!("{:.3}", c.nmi), &format!("NMI vs {}", c.column));
    }
    for (k, v) in &r.facts {
        b += &card(v, k);
    }
    if !p.medians.exact {
        b += &card("approximate", "medians (streamed)");
    }
    b += "</div><ul class=\"glance\">";
    for c in &p.clusters {
        let _ = write!(
            b,
            "<li>{}<strong>Cluster {}</strong> · {:.1}% · {}</li>",
            swatch(c.cluster),
            c.cluster,
            100.0 * c.share,
            escape(&c.description)
        );
    }
    b += "</ul></section>\n";

    // Sizes.
    b += "<section><h2>Cluster sizes</h2><p class=\"note\">How much of the population each cluster holds.</p>";
    let items: Vec<(String, f64, f64)> = p
        .clusters
        .iter()
        .map(|c| {
            let mut d = c.description.clone();
            if d.chars().count() > 30 {
                d = d.chars().take(29).collect::<String>() + "…";
            }
            (
                format!("{}: {d}", c.cluster),
                if p.weighted { c.weight } else { c.size as f64 },
                c.share,
            )
        })
        .collect();
    b += &charts::size_bars(&items);
    b += "</section>\n";

    // Heatmap.
    b += "<section><h2>What sets each cluster apart</h2><p class=\"note\">Each cell is the cluster's mean \
          of a feature, in standard deviations from the population mean. Red is above the population, blue below.</p>";
    let rows: Vec<String> = p
        .clusters
        .iter()
        .map(|c| format!("Cluster {}", c.cluster))
        .collect();
    let z: Vec<Vec<Option<f64>>> = p
        .clusters
        .iter()
        .map(|c| c.features.iter().map(|f| f.z).collect())
        .collect();
    b += &charts::heatmap(&rows, &p.features, &z);
    b += "</section>\n";

    // Projection.
    if let Some(proj) = r.projection {
        let _ = write!(
            b,
            "<section><h2>Map of the clusters</h2><p class=\"note\">A sample of {} rows projected on the two \
             principal components of the clustered (scaled) features; large dots mark each cluster's centre.</p>",
            fmt_num(proj.points.len() as f64)
        );
        let names: Vec<String> = p
            .clusters
            .iter()
            .map(|c| format!("{} ({:.0}%)", c.cluster, 100.0 * c.share))
            .collect();
        b += &charts::scatter(proj, &names);
        b += "</section>\n";
    }

    // Profile table.
    b += "<section><h2>Cluster profiles</h2><p class=\"note\">Weighted mean of each feature in input units, \
          with the median below it; the tags name the features that distinguish the cluster most.";
    if !p.medians.exact {
        let _ = write!(
            b,
            " Medians are approximate: the table exceeded the memory budget, so they come from \
             {}-bin histograms over each cluster's range, each within its <code>median_error</code> \
             (in the profile table and JSON) of the exact median, at most 1/{} of that range. \
             Every other figure is exact.",
            p.medians.bins.unwrap_or(0),
            p.medians.bins.unwrap_or(0)
        );
    }
    b += "</p><div class=\"scroll\"><table><tr>\
          <th class=\"t\">Cluster</th><th>Size</th><th>Share</th><th class=\"t\">Distinguishing features</th>";
    for f in &p.features {
        let _ = write!(b, "<th>{}</th>", escape(f));
    }
    b += "</tr>";
    for c in &p.clusters {
        let _ = write!(
            b,
            "<tr><td class=\"t\">{}{}</td><td>{}</td><td>{:.1}%</td><td class=\"t\">",
            swatch(c.cluster),
            c.cluster,
            fmt_num(c.size as f64),
            100.0 * c.share
        );
        for d in &c.distinguishing {
            let _ = write!(
                b,
                "<span class=\"tag {}\">{} {} ({:+.1})</span>",
                d.direction,
                d.direction,
                escape(&d.feature),
                d.z
            );
        }
        b += "</td>";
        for f in &c.features {
            let _ = write!(
                b,
                "<td>{}<br><small>{}</small></td>",
                opt(f.mean),
                opt(f.median)
            );
        }
        b += "</tr>";
    }
    let _ = write!(
        b,
        "<tr class=\"pop\"><td class=\"t\">All</td><td>{}</td><td>100%</td><td class=\"t\"></td>",
        fmt_num(p.rows as f64)
    );
    for f in &p.population {
        let _ = write!(
            b,
            "<td>{}<br><small>{}</small></td>",
            opt(f.mean),
            opt(f.median)
        );
    }
    b += "</tr></table></div></section>\n";

    // Described numeric columns.
    if !p.described_population.is_empty() {
        b += "<section><h2>Other numeric columns</h2><p class=\"note\">Columns described but not clustered on: \
              weighted mean (median below) and z-score against the population.</p><div class=\"scroll\"><table><tr><th class=\"t\">Cluster</th>";
        for d in &p.described_population {
            let _ = write!(b, "<th>{}</th>", escape(&d.name));
        }
        b += "</tr>";
        for c in &p.clusters {
            let _ = write!(
                b,
                "<tr><td class=\"t\">{}{}</td>",
                swatch(c.cluster),
                c.cluster
            );
            for d in &c.described {
                let _ = write!(
                    b,
                    "<td>{}<br><small>{} · z {}</small></td>",
                    opt(d.mean),
                    opt(d.median),
                    d.z.map_or("n/a".into(), |z| format!("{z:+.2}"))
                );
            }
            b += "</tr>";
        }
        b += "<tr class=\"pop\"><td class=\"t\">All</td>";
        for d in &p.described_population {
            let _ = write!(
                b,
                "<td>{}<br><small>{}</small></td>",
                opt(d.mean),
                opt(d.median)
            );
        }
        b += "</tr></table></div></section>\n";
    }

    // Categorical columns.
    let ncat = p.clusters.first().map_or(0, |c| c.categories.len());
    for i in 0..ncat {
        let col = &p.clusters[0].categories[i];
        let _ = write!(
            b,
            "<section><h2>{} by cluster</h2><p class=\"note\">Share of each cluster (weighted) in each category; \
             darker cells hold more. The last row is the whole population.</p><div class=\"scroll\"><table><tr><th class=\"t\">Cluster</th>",
            escape(&col.column)
        );
        for s in &col.shares {
            let _ = write!(b, "<th>{}</th>", escape(&s.category));
        }
        b += "</tr>";
        for c in &p.clusters {
            let _ = write!(
                b,
                "<tr><td class=\"t\">{}{}</td>",
                swatch(c.cluster),
                c.cluster
            );
            for s in &c.categories[i].shares {
                let _ = write!(
                    b,
                    "<td style=\"background:{}\">{:.1}%</td>",
                    charts::share_color(s.share),
                    100.0 * s.share
                );
            }
            b += "</tr>";
        }
        b += "<tr class=\"pop\"><td class=\"t\">All</td>";
        for s in &col.shares {
            let _ = write!(b, "<td>{:.1}%</td>", 100.0 * s.population_share);
        }
        b += "</tr></table></div></section>\n";
    }

    // Comparison with existing segments.
    if let Some(cmp) = &p.compare {
        let _ = write!(
            b,
            "<section><h2>Clusters against {col}</h2><p class=\"note\">Rows in each cluster (row) and {col} segment \
             (column), shaded by the share of the segment that the cluster holds. Adjusted Rand Index {ari:.3} and \
             normalised mutual information {nmi:.3} (1 = the same grouping, 0 = unrelated).</p><div class=\"scroll\"><table><tr><th class=\"t\">Cluster</th>",
            col = escape(&cmp.column),
            ari = cmp.ari,
            nmi = cmp.nmi
        );
        let shown = cmp.segments.len().min(30);
        for s in &cmp.segments[..shown] {
            let _ = write!(b, "<th>{}</th>", escape(s));
        }
        b += "<th>Total</th></tr>";
        let seg_tot: Vec<u64> = (0..cmp.segments.len())
            .map(|s| cmp.crosstab.iter().map(|r| r[s]).sum())
            .collect();
        for (c, row) in cmp.crosstab.iter().enumerate() {
            let _ = write!(b, "<tr><td class=\"t\">{}{}</td>", swatch(c), c);
            for (s, &v) in row[..shown].iter().enumerate() {
                let share = if seg_tot[s] > 0 {
                    v as f64 / seg_tot[s] as f64
                } else {
                    0.0
                };
                let _ = write!(
                    b,
                    "<td style=\"background:{}\">{}</td>",
                    charts::share_color(share),
                    fmt_num(v as f64)
                );
            }
            let _ = write!(
                b,
                "<td>{}</td></tr>",
                fmt_num(row.iter().sum::<u64>() as f64)
            );
        }
        b += "<tr class=\"pop\"><td class=\"t\">Total</td>";
        for &t in &seg_tot[..shown] {
            let _ = write!(b, "<td>{}</td>", fmt_num(t as f64));
        }
        let _ = write!(
            b,
            "<td>{}</td></tr></table></div>",
            fmt_num(seg_tot.iter().sum::<u64>() as f64)
        );
        if shown < cmp.segments.len() {
            let _ = write!(
                b,
                "<p class=\"note\">The first {shown} of {} segments are shown; the JSON and Parquet outputs hold all.</p>",
                cmp.segments.len()
            );
        }
        b += "<table><tr><th class=\"t\">Segment</th><th>Rows</th><th class=\"t\">Mostly in</th><th>Share of segment</th><th>Share of that cluster</th></tr>";
        for h in &cmp.segment_homes {
            let _ = write!(
                b,
                "<tr><td class=\"t\">{}</td><td>{}</td><td class=\"t\">{}cluster {}</td><td>{:.1}%</td><td>{:.1}%</td></tr>",
                escape(&h.segment),
                fmt_num(h.rows as f64),
                swatch(h.cluster),
                h.cluster,
                100.0 * h.share_of_segment,
                100.0 * h.share_of_cluster
            );
        }
        b += "</table></section>\n";
    }
    b += "<section><h2>Reading this report</h2><p class=\"note\">z: how many population standard deviations \
          the cluster mean lies above (+) or below (−) the population mean. Lift: cluster mean divided by population mean. \
          Silhouette (−1 to 1, higher is better), Calinski-Harabasz (higher is better) and Davies-Bouldin (lower is better) \
          are measured in the clustered (scaled) feature space.</p></section>";
    let lead = format!(
        "{} · {} clusters · {}",
        r.inputs.join(", "),
        p.k,
        p.features.join(", ")
    );
    page(r.title, "Cluster report", &lead, &b)
}

/// The report of a sweep over k: recommendation, metric curves and the metrics table.
pub fn sweep_report(
    title: &str,
    inputs: &[String],
    rows: usize,
    features: &[String],
    s: &Sweep,
) -> String {
    let mut b = String::new();
    let ks: Vec<usize> = s.points.iter().map(|p| p.k).collect();
    b += "<section><h2>Recommendation</h2>";
    let _ = write!(
        b,
        r#"<p class="note">{} rows, {} features ({}), k from {} to {}.</p><div class="cards">"#,
        fmt_num(rows as f64),
        features.len(),
        escape(&features.join(", ")),
        ks.first().copied().unwrap_or(0),
        ks.last().copied().unwrap_or(0)
    );
    b += &card(&s.recommended_k.to_string(), "recommended k");
    for (label, v) in [
        ("best silhouette", s.best_by.silhouette),
        ("best Calinski-Harabasz", s.best_by.calinski_harabasz),
        ("best Davies-Bouldin", s.best_by.davies_bouldin),
        ("elbow", s.best_by.elbow),
    ] {
        b += &card(&v.map_or("n/a".into(), |k| format!("k = {k}")), label);
    }
    let _ = write!(
        b,
        "</div><div class=\"reason\">{}</div></section>",
        escape(&s.reason)
    );
    b += "<section><h2>How the metrics change with k</h2><p class=\"note\">The dashed line marks the recommended k. \
          Inertia always falls as k grows; look for the bend (the elbow). Silhouette and Calinski-Harabasz are better higher, \
          Davies-Bouldin lower.</p><div class=\"grid2\">";
    let get = |f: &dyn Fn(&crate::insight::sweep::SweepPoint) -> Option<f64>| -> Vec<Option<f64>> {
        s.points.iter().map(f).collect()
    };
    let mark = Some(s.recommended_k);
    b += &charts::line_chart(
        "Elbow: inertia",
        "inertia (clustered space)",
        &ks,
        &get(&|p| Some(p.inertia)),
        mark,
        "#3b6fb6",
    );
    b += &charts::line_chart(
        &format!(
            "Silhouette (sample of {})",
            fmt_num(s.silhouette_rows as f64)
        ),
        "mean silhouette",
        &ks,
        &get(&|p| p.silhouette),
        mark,
        "#3a9e6f",
    );
    b += &charts::line_chart(
        "Calinski-Harabasz",
        "variance ratio",
        &ks,
        &get(&|p| p.calinski_harabasz),
        mark,
        "#e8833a",
    );
    b += &charts::line_chart(
        "Davies-Bouldin",
        "index (lower is better)",
        &ks,
        &get(&|p| p.davies_bouldin),
        mark,
        "#8a63b8",
    );
    b += "</div></section>\n";
    let cmp = s.compare_with.is_some();
    b += "<section><h2>Every k</h2><div class=\"scroll\"><table><tr><th>k</th><th>Inertia</th><th>Silhouette</th>\
          <th>Calinski-Harabasz</th><th>Davies-Bouldin</th>";
    if let Some(c) = &s.compare_with {
        let _ = write!(b, "<th>ARI vs {0}</th><th>NMI vs {0}</th>", escape(c));
    }
    b += "<th>Iterations</th><th class=\"t\">Smallest / largest cluster</th></tr>";
    let f3 = |v: Option<f64>| v.map_or("n/a".into(), |x| format!("{x:.3}"));
    for p in &s.points {
        let _ = write!(
            b,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            if p.k == s.recommended_k {
                " class=\"best\""
            } else {
                ""
            },
            p.k,
            fmt_num(p.inertia),
            f3(p.silhouette),
            opt(p.calinski_harabasz),
            f3(p.davies_bouldin)
        );
        if cmp {
            let _ = write!(b, "<td>{}</td><td>{}</td>", f3(p.ari), f3(p.nmi));
        }
        let total: u64 = p.cluster_sizes.iter().sum();
        let lo = p.cluster_sizes.iter().min().copied().unwrap_or(0);
        let hi = p.cluster_sizes.iter().max().copied().unwrap_or(0);
        let pc = |v: u64| 100.0 * v as f64 / total.max(1) as f64;
        let _ = write!(
            b,
            "<td>{}</td><td class=\"t\">{:.1}% / {:.1}%</td></tr>",
            p.iterations,
            pc(lo),
            pc(hi)
        );
    }
    b += "</table></div></section>\n";
    let lead = format!(
        "{} · k-means for k = {}..{}",
        inputs.join(", "),
        ks.first().copied().unwrap_or(0),
        ks.last().copied().unwrap_or(0)
    );
    page(title, "Choosing k", &lead, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_num(1234567.8), "1,234,568");
        assert_eq!(fmt_num(-1500.0), "-1,500");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.5), "0.50");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a & 'b'>"), "&lt;a &amp; &#39;b&#39;&gt;");
    }
}
