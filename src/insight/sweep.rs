//! Choosing k: fit every k of a range on the same loaded rows and backend, measure each, and
//! recommend one.

use serde::Serialize;

use super::compare::{Contingency, adjusted_rand, normalized_mutual_info};
use super::metrics::{indices, silhouette_many, subset};
use crate::backend::Backend;
use crate::data::Rows;
use crate::error::Result;
use crate::kmeans::{self, KMeansParams, Progress};

/// The measurements of one k.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    pub k: usize,
    /// Weighted, in clustered space.
    pub inertia: f64,
    pub iterations: usize,
    pub converged: bool,
    pub silhouette: Option<f64>,
    pub calinski_harabasz: Option<f64>,
    pub davies_bouldin: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ari: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nmi: Option<f64>,
    pub cluster_sizes: Vec<u64>,
}

/// A whole sweep and its recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sweep {
    pub points: Vec<SweepPoint>,
    pub recommended_k: usize,
    pub reason: String,
    /// Which k each criterion prefers (absent when it has no value anywhere).
    pub best_by: BestBy,
    pub silhouette_rows: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare_with: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BestBy {
    pub silhouette: Option<usize>,
    pub calinski_harabasz: Option<usize>,
    pub davies_bouldin: Option<usize>,
    /// Where the inertia curve bends most (largest gap below the chord of the curve).
    pub elbow: Option<usize>,
}

/// A segment column to compare every k with: codes per row and the number of segments.
pub struct Segments<'a> {
    pub column: &'a str,
    pub codes: &'a [u32],
    pub count: usize,
}

/// Fits every k in `ks` with the settings of `base` (its `k` is ignored), reusing `backend`.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    data: &dyn Rows,
    backend: &mut dyn Backend,
    base: &KMeansParams,
    ks: &[usize],
    sample: &[usize],
    segments: Option<&Segments>,
    progress: &dyn Progress,
    mut on_k: impl FnMut(&SweepPoint),
) -> Result<Sweep> {
    let mut points = Vec::with_capacity(ks.len());
    let mut labelings: Vec<Vec<u32>> = Vec::with_capacity(ks.len());
    for &k in ks {
        let params = KMeansParams { k, ..base.clone() };
        let r = kmeans::fit(data, backend, &params, progress)?;
        let labels = r.assignment.labels;
        let (ari, nmi) = match segments {
            Some(s) => {
                let t = Contingency::new(&labels, k, s.codes, s.count);
                (Some(adjusted_rand(&t)), Some(normalized_mutual_info(&t)))
            }
            None => (None, None),
        };
        let (calinski_harabasz, davies_bouldin) = indices(data, &labels, k)?;
        let p = SweepPoint {
            k,
            inertia: r.inertia,
            iterations: r.iterations,
            converged: r.converged,
            silhouette: None,
            calinski_harabasz,
            davies_bouldin,
            ari,
            nmi,
            cluster_sizes: r.sizes,
        };
        on_k(&p);
        points.push(p);
        // Only the sampled rows' labels are needed for the silhouettes.
        labelings.push(sample.iter().map(|&i| labels[i]).collect());
    }
    // One pass over the sample's pairs serves every k.
    let local: Vec<usize> = (0..sample.len()).collect();
    let sub = subset(data, sample)?;
    let refs: Vec<(&[u32], usize)> = labelings
        .iter()
        .zip(ks)
        .map(|(l, &k)| (l.as_slice(), k))
        .collect();
    let sil = silhouette_many(&sub, &local, &refs);
    for (p, s) in points.iter_mut().zip(sil) {
        p.silhouette = s;
    }
    let (recommended_k, reason, best_by) = recommend(&points);
    Ok(Sweep {
        points,
        recommended_k,
        reason,
        best_by,
        silhouette_rows: sample.len(),
        compare_with: segments.map(|s| s.column.to_string()),
    })
}

fn best(
    points: &[SweepPoint],
    f: impl Fn(&SweepPoint) -> Option<f64>,
    higher: bool,
) -> Option<usize> {
    let mut out: Option<(usize, f64)> = None;
    for p in points {
        if let Some(v) = f(p).filter(|v| v.is_finite()) {
            let better = match out {
                None => true,
                Some((_, b)) => {
                    if higher {
                        v > b
                    } else {
                        v < b
                    }
                }
            };
            if better {
                out = Some((p.k, v));
            }
        }
    }
    out.map(|o| o.0)
}

/// The k where the inertia curve falls furthest below the straight line from its first to its
/// last point, both axes scaled to [0, 1]; needs three points or more.
pub fn elbow(points: &[SweepPoint]) -> Option<usize> {
    if points.len() < 3 {
        return None;
    }
    let (k0, k1) = (points[0].k as f64, points[points.len() - 1].k as f64);
    let hi = points
        .iter()
        .map(|p| p.inertia)
        .fold(f64::NEG_INFINITY, f64::max);
    let lo = points
        .iter()
        .map(|p| p.inertia)
        .fold(f64::INFINITY, f64::min);
    if hi <= lo || hi.is_nan() || lo.is_nan() || k1 <= k0 {
        return None;
    }
    let (y0, y1) = (points[0].inertia, points[points.len() - 1].inertia);
    let mut out: Option<(usize, f64)> = None;
    for p in &points[1..points.len() - 1] {
        let x = (p.k as f64 - k0) / (k1 - k0);
        let chord = (y0 + x * (y1 - y0) - lo) / (hi - lo);
        let gap = chord - (p.inertia - lo) / (hi - lo);
        if gap > 0.0 && out.is_none_or(|(_, g)| gap > g) {
            out = Some((p.k, gap));
        }
    }
    out.map(|o| o.0)
}

/// Each criterion votes for its best k; the k with most votes wins, ties going to the higher
/// silhouette and then the smaller k.
pub fn recommend(points: &[SweepPoint]) -> (usize, String, BestBy) {
    let by = BestBy {
        silhouette: best(points, |p| p.silhouette, true),
        calinski_harabasz: best(points, |p| p.calinski_harabasz, true),
        davies_bouldin: best(points, |p| p.davies_bouldin, false),
        elbow: elbow(points),
    };
    let votes: Vec<(&str, Option<usize>)> = vec![
        ("highest silhouette", by.silhouette),
        ("highest Calinski-Harabasz", by.calinski_harabasz),
        ("lowest Davies-Bouldin", by.davies_bouldin),
        ("elbow of the inertia curve", by.elbow),
    ];
    let cast = votes.iter().filter(|v| v.1.is_some()).count();
    let sil = |k: usize| {
        points
            .iter()
            .find(|p| p.k == k)
            .and_then(|p| p.silhouette)
            .unwrap_or(f64::NEG_INFINITY)
    };
    let Some(first) = points.first() else {
        return (0, "no k was fitted".into(), by);
    };
    let mut chosen = first.k;
    let mut chosen_votes = 0;
    for p in points {
        let n = votes.iter().filter(|v| v.1 == Some(p.k)).count();
        if n > chosen_votes || (n == chosen_votes && n > 0 && sil(p.k) > sil(chosen)) {
            chosen = p.k;
            chosen_votes = n;
        }
    }
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.3}"));
    let mut reason = if chosen_votes == 0 {
        format!("no criterion could be computed; k = {chosen} is the first of the range")
    } else {
        let agreeing: Vec<&str> = votes
            .iter()
            .filter(|v| v.1 == Some(chosen))
            .map(|v| v.0)
            .collect();
        format!(
            "k = {chosen} is preferred by {chosen_votes} of {cast} criteria ({})",
            agreeing.join(", ")
        )
    };
    let others: Vec<String> = votes
        .iter()
        .filter(|v| v.1.is_some() && v.1 != Some(chosen))
        .map(|v| format!("{} at k = {}", v.0, v.1.unwrap_or(0)))
        .collect();
    if !others.is_empty() {
        reason += &format!("; {}", others.join(", "));
    }
    if let Some(p) = points.iter().find(|p| p.k == chosen) {
        reason += &format!(
            ". At k = {chosen}: silhouette {}, Calinski-Harabasz {}, Davies-Bouldin {}.",
            fmt(p.silhouette),
            p.calinski_harabasz
                .map_or("n/a".to_string(), |x| format!("{x:.1}")),
            fmt(p.davies_bouldin)
        );
    }
    (chosen, reason, by)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(k: usize, inertia: f64, s: f64, ch: f64, db: f64) -> SweepPoint {
        SweepPoint {
            k,
            inertia,
            iterations: 1,
            converged: true,
            silhouette: Some(s),
            calinski_harabasz: Some(ch),
            davies_bouldin: Some(db),
            ari: None,
            nmi: None,
            cluster_sizes: vec![],
        }
    }

    #[test]
    fn votes_pick_the_agreed_k() {
        let pts = vec![
            point(2, 100.0, 0.50, 10.0, 0.9),
            point(3, 40.0, 0.60, 30.0, 0.6),
            point(4, 35.0, 0.55, 25.0, 0.7),
            point(5, 32.0, 0.40, 20.0, 0.8),
        ];
        assert_eq!(elbow(&pts), Some(3));
        let (k, reason, _) = recommend(&pts);
        assert_eq!(k, 3);
        assert!(
            reason.starts_with("k = 3 is preferred by 4 of 4 criteria"),
            "{reason}"
        );
    }
}
