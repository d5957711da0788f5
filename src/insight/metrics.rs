//! Internal quality of a clustering, as scikit-learn defines it: the silhouette coefficient,
//! the Calinski–Harabasz index and the Davies–Bouldin index.
//!
//! All three are computed in clustered (scaled) space, unweighted, in f64, over the clusters
//! that have members. Each returns `None` where scikit-learn raises an error: fewer than two
//! clusters with members, or as many clusters as rows.

use rayon::prelude::*;
use serde::Serialize;

use crate::data::{Dataset, Rows, slab_blocks};
use crate::error::Result;

/// Rows per block of the parallel passes; fixed, so reductions do not depend on threads.
const BLOCK: usize = 16 * 1024;

/// The metrics `fit --metrics` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quality {
    /// Mean silhouette over the sample, in [-1, 1]; higher is better.
    pub silhouette: Option<f64>,
    /// Rows the silhouette was computed on.
    pub silhouette_rows: usize,
    /// Between- over within-cluster dispersion; higher is better.
    pub calinski_harabasz: Option<f64>,
    /// Mean worst-case similarity of each cluster to another; lower is better.
    pub davies_bouldin: Option<f64>,
}

/// Every metric for one labelling, with the silhouette on the rows `sample`. The rows may be
/// in memory or streamed: the silhouette needs only the sample, and the two indices take two
/// passes (cluster means, then distances to them).
pub fn quality(data: &dyn Rows, labels: &[u32], k: usize, sample: &[usize]) -> Result<Quality> {
    let sub = subset(data, sample)?;
    let local: Vec<usize> = (0..sample.len()).collect();
    let sampled: Vec<u32> = sample.iter().map(|&r| labels[r]).collect();
    let sil = silhouette_many(&sub, &local, &[(&sampled, k)]);
    let (ch, db) = indices(data, labels, k)?;
    Ok(Quality {
        silhouette: sil.first().copied().flatten(),
        silhouette_rows: sample.len(),
        calinski_harabasz: ch,
        davies_bouldin: db,
    })
}

/// The rows `rows` of `data` as one dense f64 matrix, in the order given.
pub fn gather(data: &dyn Rows, rows: &[usize]) -> Result<Vec<f64>> {
    Ok(data
        .gather(rows)?
        .into_iter()
        .flat_map(|(v, _)| v.into_iter().map(f64::from))
        .collect())
}

/// The rows `rows` of `data` as a dataset of their own (weights dropped).
pub fn subset(data: &dyn Rows, rows: &[usize]) -> Result<Dataset> {
    let v: Vec<f32> = data
        .gather(rows)?
        .into_iter()
        .flat_map(|(v, _)| v)
        .collect();
    Ok(Dataset::from_rows(data.dim(), v, None))
}

/// Mean silhouette coefficient of several labellings of the same rows at once, each given as
/// `(labels of every row, k)`; only the rows in `sample` take part, exactly (O(s² d)).
///
/// Distances are computed once per pair and shared by every labelling, which is what makes a
/// sweep over k affordable. Each row's sums run over the other rows in order, and the mean
/// runs over the rows in order, so the result does not depend on the thread count.
pub fn silhouette_many(
    data: &Dataset,
    sample: &[usize],
    labelings: &[(&[u32], usize)],
) -> Vec<Option<f64>> {
    let d = data.dim();
    let s = sample.len();
    let x: Vec<f64> = sample
        .iter()
        .flat_map(|&r| data.row(r).iter().map(|&v| v as f64))
        .collect();
    // Per labelling: labels of the sample rows, cluster sizes in the sample.
    let labs: Vec<Vec<u32>> = labelings
        .iter()
        .map(|(l, _)| sample.iter().map(|&r| l[r]).collect())
        .collect();
    let sizes: Vec<Vec<usize>> = labelings
        .iter()
        .zip(&labs)
        .map(|((_, k), l)| {
            let mut c = vec![0usize; *k];
            for &v in l {
                c[v as usize] += 1;
            }
            c
        })
        .collect();
    let valid: Vec<bool> = sizes
        .iter()
        .map(|c| {
            let present = c.iter().filter(|&&n| n > 0).count();
            present >= 2 && present < s
        })
        .collect();
    let offsets: Vec<usize> = labelings
        .iter()
        .scan(0, |acc, (_, k)| {
            let o = *acc;
            *acc += k;
            Some(o)
        })
        .collect();
    let total_k: usize = labelings.iter().map(|(_, k)| k).sum();
    let per_row: Vec<Vec<f64>> = (0..s)
        .into_par_iter()
        .map(|i| {
            let xi = &x[i * d..(i + 1) * d];
            let mut dist = vec![0.0f64; s];
            for (j, dj) in dist.iter_mut().enumerate() {
                let xj = &x[j * d..(j + 1) * d];
                let mut acc = 0.0;
                for t in 0..d {
                    let v = xi[t] - xj[t];
                    acc += v * v;
                }
                *dj = acc.sqrt();
            }
            let mut sums = vec![0.0f64; total_k];
            for (t, l) in labs.iter().enumerate() {
                let o = offsets[t];
                for (j, &dj) in dist.iter().enumerate() {
                    sums[o + l[j] as usize] += dj;
                }
            }
            labs.iter()
                .enumerate()
                .map(|(t, l)| {
                    let own = l[i] as usize;
                    let n_own = sizes[t][own];
                    if n_own <= 1 {
                        return 0.0;
                    }
                    let o = offsets[t];
                    let a = sums[o + own] / (n_own - 1) as f64;
                    let b = (0..labelings[t].1)
                        .filter(|&c| c != own && sizes[t][c] > 0)
                        .map(|c| sums[o + c] / sizes[t][c] as f64)
                        .fold(f64::INFINITY, f64::min);
                    let m = a.max(b);
                    if m > 0.0 && m.is_finite() {
                        (b - a) / m
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    (0..labelings.len())
        .map(|t| valid[t].then(|| per_row.iter().map(|r| r[t]).sum::<f64>() / s as f64))
        .collect()
}

/// Maps every fixed block of [`BLOCK`] rows (given the global index of its first row and its
/// values) and folds the results in row order, one slab at a time: one pass over the rows,
/// reduced the same way whatever the thread count and wherever the rows live.
fn fold_blocks<T: Send>(
    data: &dyn Rows,
    map: impl Fn(usize, &[f32]) -> T + Sync,
    mut fold: impl FnMut(T),
) -> Result<()> {
    let d = data.dim();
    data.scan(&mut |start, slab| {
        let parts: Vec<T> = slab_blocks(start, slab.rows(d), BLOCK)
            .par_iter()
            .map(|b| map(b.global, &slab.values[b.start * d..(b.start + b.len) * d]))
            .collect();
        parts.into_iter().for_each(&mut fold);
        Ok(())
    })
}

/// Per-cluster member counts and means (`None` for an empty cluster).
type Means = (Vec<u64>, Vec<Option<Vec<f64>>>);

/// Per-cluster member counts and means, from f64 sums.
fn cluster_means(data: &dyn Rows, labels: &[u32], k: usize) -> Result<Means> {
    let d = data.dim();
    let mut n = vec![0u64; k];
    let mut s = vec![0.0f64; k * d];
    fold_blocks(
        data,
        |global, x| {
            let mut n = vec![0u64; k];
            let mut s = vec![0.0f64; k * d];
            for (r, row) in x.chunks_exact(d).enumerate() {
                let c = labels[global + r] as usize;
                n[c] += 1;
                for (a, &v) in s[c * d..(c + 1) * d].iter_mut().zip(row) {
                    *a += v as f64;
                }
            }
            (n, s)
        },
        |(pn, ps)| {
            n.iter_mut().zip(pn).for_each(|(a, b)| *a += b);
            s.iter_mut().zip(ps).for_each(|(a, b)| *a += b);
        },
    )?;
    let means = (0..k)
        .map(|c| {
            (n[c] > 0).then(|| {
                s[c * d..(c + 1) * d]
                    .iter()
                    .map(|v| v / n[c] as f64)
                    .collect()
            })
        })
        .collect();
    Ok((n, means))
}

fn sq_dist(row: &[f32], c: &[f64]) -> f64 {
    row.iter()
        .zip(c)
        .map(|(&v, &m)| {
            let t = v as f64 - m;
            t * t
        })
        .sum()
}

/// What both indices need: cluster sizes and means, then in one more pass the total squared
/// distance of the rows to their cluster mean and, per cluster, the sum of the distances.
struct Spread {
    sizes: Vec<u64>,
    means: Vec<Option<Vec<f64>>>,
    within: f64,
    dist_sums: Vec<f64>,
}

fn spread(data: &dyn Rows, labels: &[u32], k: usize) -> Result<Spread> {
    let d = data.dim();
    let (sizes, means) = cluster_means(data, labels, k)?;
    let mut within = 0.0f64;
    let mut dist_sums = vec![0.0f64; k];
    fold_blocks(
        data,
        |global, x| {
            let mut sq = 0.0f64;
            let mut acc = vec![0.0f64; k];
            for (r, row) in x.chunks_exact(d).enumerate() {
                let c = labels[global + r] as usize;
                if let Some(m) = &means[c] {
                    let q = sq_dist(row, m);
                    sq += q;
                    acc[c] += q.sqrt();
                }
            }
            (sq, acc)
        },
        |(sq, acc)| {
            within += sq;
            dist_sums.iter_mut().zip(acc).for_each(|(a, b)| *a += b);
        },
    )?;
    Ok(Spread {
        sizes,
        means,
        within,
        dist_sums,
    })
}

/// Calinski–Harabasz and Davies–Bouldin indices of one labelling, in two passes.
pub fn indices(data: &dyn Rows, labels: &[u32], k: usize) -> Result<(Option<f64>, Option<f64>)> {
    let s = spread(data, labels, k)?;
    let n = data.rows();
    Ok((calinski_harabasz_of(&s, n), davies_bouldin_of(&s, n)))
}

/// Calinski–Harabasz index (variance ratio criterion).
pub fn calinski_harabasz(data: &dyn Rows, labels: &[u32], k: usize) -> Result<Option<f64>> {
    Ok(indices(data, labels, k)?.0)
}

/// Davies–Bouldin index.
pub fn davies_bouldin(data: &dyn Rows, labels: &[u32], k: usize) -> Result<Option<f64>> {
    Ok(indices(data, labels, k)?.1)
}

fn calinski_harabasz_of(s: &Spread, n: usize) -> Option<f64> {
    let (sizes, means) = (&s.sizes, &s.means);
    let present = sizes.iter().filter(|&&s| s > 0).count();
    if present < 2 || present >= n {
        return None;
    }
    let d = means.iter().flatten().next().map_or(0, Vec::len);
    let mut mean = vec![0.0f64; d];
    for (c, m) in means.iter().enumerate() {
        if let Some(m) = m {
            for (a, &v) in mean.iter_mut().zip(m) {
                *a += v * sizes[c] as f64;
            }
        }
    }
    mean.iter_mut().for_each(|a| *a /= n as f64);
    let extra: f64 = means
        .iter()
        .enumerate()
        .filter_map(|(c, m)| {
            m.as_ref().map(|m| {
                let q: f64 = m.iter().zip(&mean).map(|(a, b)| (a - b) * (a - b)).sum();
                sizes[c] as f64 * q
            })
        })
        .sum();
    if s.within == 0.0 {
        return Some(1.0);
    }
    Some(extra * (n - present) as f64 / (s.within * (present - 1) as f64))
}

fn davies_bouldin_of(s: &Spread, n: usize) -> Option<f64> {
    let k = s.sizes.len();
    let present: Vec<usize> = (0..k).filter(|&c| s.sizes[c] > 0).collect();
    if present.len() < 2 || present.len() >= n {
        return None;
    }
    let intra: Vec<f64> = present
        .iter()
        .map(|&c| s.dist_sums[c] / s.sizes[c] as f64)
        .collect();
    let cent: Vec<&Vec<f64>> = present
        .iter()
        .filter_map(|&c| s.means[c].as_ref())
        .collect();
    let m = present.len();
    let mut cd = vec![0.0f64; m * m];
    for i in 0..m {
        for j in 0..m {
            cd[i * m + j] = cent[i]
                .iter()
                .zip(cent[j])
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
        }
    }
    // scikit-learn's "allclose to zero": |x| <= 1e-8.
    if intra.iter().all(|v| v.abs() <= 1e-8) || cd.iter().all(|v| v.abs() <= 1e-8) {
        return Some(0.0);
    }
    let mut total = 0.0;
    for i in 0..m {
        let mut worst = f64::NEG_INFINITY;
        for j in 0..m {
            let dij = if cd[i * m + j] == 0.0 {
                f64::INFINITY
            } else {
                cd[i * m + j]
            };
            worst = worst.max((intra[i] + intra[j]) / dij);
        }
        total += worst;
    }
    Some(total / m as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tight_pairs_score_well() {
        let data = Dataset::from_rows(1, vec![0.0, 1.0, 10.0, 11.0], None);
        let labels = [0, 0, 1, 1];
        let q = quality(&data, &labels, 2, &[0, 1, 2, 3]).unwrap();
        // a = 1, b = mean(10, 11) = 10.5 for row 0, etc.
        let s0 = (10.5 - 1.0) / 10.5;
        let s1 = (9.5 - 1.0) / 9.5;
        let want = (s0 + s1) / 2.0;
        assert!((q.silhouette.unwrap() - want).abs() < 1e-12);
        // extra = 4 * 25 = 100, intra = 4 * 0.25 = 1, (n-k)/(k-1) = 2
        assert!((q.calinski_harabasz.unwrap() - 200.0).abs() < 1e-9);
        // intra dists 0.5 each, centroid distance 10
        assert!((q.davies_bouldin.unwrap() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn one_cluster_has_no_score() {
        let data = Dataset::from_rows(1, vec![0.0, 1.0, 2.0], None);
        let q = quality(&data, &[0, 0, 0], 2, &[0, 1, 2]).unwrap();
        assert_eq!(q.silhouette, None);
        assert_eq!(q.calinski_harabasz, None);
        assert_eq!(q.davies_bouldin, None);
    }
}
