//! Clusters against an existing segmentation: the crosstab, the Adjusted Rand Index and the
//! normalised mutual information (as scikit-learn's `adjusted_rand_score` and
//! `normalized_mutual_info_score` with the arithmetic mean), and where each segment went.
//!
//! Counts are rows, unweighted, like the scores.

use serde::Serialize;

/// A `rows × cols` table of counts, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contingency {
    pub rows: usize,
    pub cols: usize,
    pub counts: Vec<u64>,
}

impl Contingency {
    /// Counts of `(a[i], b[i])` pairs; `a` takes values below `rows`, `b` below `cols`.
    pub fn new(a: &[u32], rows: usize, b: &[u32], cols: usize) -> Contingency {
        let mut counts = vec![0u64; rows * cols];
        for (&x, &y) in a.iter().zip(b) {
            counts[x as usize * cols + y as usize] += 1;
        }
        Contingency { rows, cols, counts }
    }

    pub fn get(&self, r: usize, c: usize) -> u64 {
        self.counts[r * self.cols + c]
    }

    pub fn row_sums(&self) -> Vec<u64> {
        (0..self.rows)
            .map(|r| self.counts[r * self.cols..(r + 1) * self.cols].iter().sum())
            .collect()
    }

    pub fn col_sums(&self) -> Vec<u64> {
        (0..self.cols)
            .map(|c| (0..self.rows).map(|r| self.get(r, c)).sum())
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Adjusted Rand Index of the two partitions behind `t` (symmetric in them).
pub fn adjusted_rand(t: &Contingency) -> f64 {
    let n = t.total() as i128;
    let sum_sq: i128 = t.counts.iter().map(|&v| (v as i128) * (v as i128)).sum();
    let rs: Vec<i128> = t.row_sums().into_iter().map(|v| v as i128).collect();
    let cs: Vec<i128> = t.col_sums().into_iter().map(|v| v as i128).collect();
    // Pair counts as in scikit-learn's pair_confusion_matrix (each pair counted twice).
    let mut by_col = 0i128;
    let mut by_row = 0i128;
    for (r, &rsum) in rs.iter().enumerate() {
        for (c, &csum) in cs.iter().enumerate() {
            let v = t.get(r, c) as i128;
            by_col += v * csum;
            by_row += v * rsum;
        }
    }
    let tp = sum_sq - n;
    let fp = by_col - sum_sq;
    let fneg = by_row - sum_sq;
    let tn = n * n - fp - fneg - sum_sq;
    if fneg == 0 && fp == 0 {
        return 1.0;
    }
    let num = 2.0 * ((tp * tn - fneg * fp) as f64);
    let den = ((tp + fneg) * (fneg + tn) + (tp + fp) * (fp + tn)) as f64;
    num / den
}

fn entropy(sums: &[u64]) -> f64 {
    let total: u64 = sums.iter().sum();
    if total == 0 {
        return 1.0;
    }
    let lt = (total as f64).ln();
    -sums
        .iter()
        .filter(|&&v| v > 0)
        .map(|&v| (v as f64 / total as f64) * ((v as f64).ln() - lt))
        .sum::<f64>()
}

/// Mutual information (natural log) of the two partitions behind `t`.
pub fn mutual_info(t: &Contingency) -> f64 {
    let n = t.total() as f64;
    let rs = t.row_sums();
    let cs = t.col_sums();
    if rs.iter().filter(|&&v| v > 0).count() <= 1 || cs.iter().filter(|&&v| v > 0).count() <= 1 {
        return 0.0;
    }
    let mut mi = 0.0;
    for (r, &rsum) in rs.iter().enumerate() {
        for (c, &csum) in cs.iter().enumerate() {
            let v = t.get(r, c);
            if v == 0 {
                continue;
            }
            let p = v as f64 / n;
            let outer = rsum as f64 * csum as f64;
            mi += p * ((v as f64).ln() - n.ln()) + p * (2.0 * n.ln() - outer.ln());
        }
    }
    mi.max(0.0)
}

/// Normalised mutual information, normalised by the arithmetic mean of the two entropies.
pub fn normalized_mutual_info(t: &Contingency) -> f64 {
    let present_r = t.row_sums().iter().filter(|&&v| v > 0).count();
    let present_c = t.col_sums().iter().filter(|&&v| v > 0).count();
    if (present_r == 1 && present_c == 1) || (present_r == 0 && present_c == 0) {
        return 1.0;
    }
    let mi = mutual_info(t);
    if mi == 0.0 {
        return 0.0;
    }
    let norm = ((entropy(&t.row_sums()) + entropy(&t.col_sums())) / 2.0).max(f64::EPSILON);
    mi / norm
}

/// Where one segment's rows went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentHome {
    pub segment: String,
    pub rows: u64,
    /// The cluster holding most of the segment (lowest index on ties).
    pub cluster: usize,
    /// Fraction of the segment's rows in that cluster.
    pub share_of_segment: f64,
    /// Fraction of that cluster's rows that belong to the segment.
    pub share_of_cluster: f64,
}

/// The comparison of clusters with an existing segment column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub column: String,
    pub ari: f64,
    pub nmi: f64,
    pub segments: Vec<String>,
    /// Rows per cluster (outer) and segment (inner).
    pub crosstab: Vec<Vec<u64>>,
    pub segment_homes: Vec<SegmentHome>,
}

/// Compares cluster `labels` (below `k`) with segment `codes` naming `segments`.
pub fn compare(
    column: &str,
    labels: &[u32],
    k: usize,
    codes: &[u32],
    segments: &[String],
) -> Comparison {
    compare_table(
        column,
        &Contingency::new(labels, k, codes, segments.len()),
        segments,
    )
}

/// The comparison behind a crosstab of clusters (rows) and `segments` (columns), however it
/// was counted: row by row in memory, or tallied as the rows streamed past.
pub fn compare_table(column: &str, t: &Contingency, segments: &[String]) -> Comparison {
    let cluster_sizes = t.row_sums();
    let seg_sizes = t.col_sums();
    let segment_homes = (0..t.cols)
        .map(|s| {
            let mut best = 0;
            for c in 0..t.rows {
                if t.get(c, s) > t.get(best, s) {
                    best = c;
                }
            }
            let v = t.get(best, s) as f64;
            SegmentHome {
                segment: segments[s].clone(),
                rows: seg_sizes[s],
                cluster: best,
                share_of_segment: if seg_sizes[s] > 0 {
                    v / seg_sizes[s] as f64
                } else {
                    0.0
                },
                share_of_cluster: if cluster_sizes[best] > 0 {
                    v / cluster_sizes[best] as f64
                } else {
                    0.0
                },
            }
        })
        .collect();
    Comparison {
        column: column.to_string(),
        ari: adjusted_rand(t),
        nmi: normalized_mutual_info(t),
        segments: segments.to_vec(),
        crosstab: (0..t.rows)
            .map(|r| t.counts[r * t.cols..(r + 1) * t.cols].to_vec())
            .collect(),
        segment_homes,
    }
}
