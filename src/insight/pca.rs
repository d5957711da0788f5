//! A 2-D principal-component projection of a sample of rows, for the report's scatter plot.

use serde::Serialize;

use super::metrics::gather;
use crate::data::Rows;
use crate::error::Result;

/// Sample rows projected on the first two principal components of the sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projection {
    /// `(pc1, pc2)` per sampled row.
    pub points: Vec<[f64; 2]>,
    /// Cluster of each sampled row.
    pub labels: Vec<u32>,
    /// Mean position of each cluster's sampled rows (`None` when none was sampled).
    pub centers: Vec<Option<[f64; 2]>>,
    /// Fraction of the sample's variance along each component.
    pub explained: [f64; 2],
}

/// Eigen-decomposition of a symmetric `n × n` matrix by cyclic Jacobi rotations.
/// Returns eigenvalues (descending) and the matching unit eigenvectors as rows.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut m = a.to_vec();
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum();
        let scale: f64 = (0..n)
            .map(|i| m[i * n + i] * m[i * n + i])
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        if off <= 1e-24 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| m[b * n + b].total_cmp(&m[a * n + a]).then(a.cmp(&b)));
    let values = order.iter().map(|&i| m[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| {
            let mut e: Vec<f64> = (0..n).map(|k| v[k * n + i]).collect();
            // Fix the sign: the largest entry is positive, so the picture is reproducible.
            let big = e
                .iter()
                .copied()
                .fold(0.0f64, |a, x| if x.abs() > a.abs() { x } else { a });
            if big < 0.0 {
                e.iter_mut().for_each(|x| *x = -*x);
            }
            e
        })
        .collect();
    (values, vectors)
}

/// Projects the rows `sample` of `data` (clustered space, in memory or streamed) on their
/// first two components. Only the sample is read, so a table of any size costs the same.
pub fn project(data: &dyn Rows, labels: &[u32], k: usize, sample: &[usize]) -> Result<Projection> {
    let d = data.dim();
    let s = sample.len().max(1);
    let x = gather(data, sample)?;
    let mut mean = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= s as f64);
    let mut cov = vec![0.0f64; d * d];
    for row in x.chunks_exact(d) {
        for i in 0..d {
            let a = row[i] - mean[i];
            for j in i..d {
                cov[i * d + j] += a * (row[j] - mean[j]);
            }
        }
    }
    for i in 0..d {
        for j in i..d {
            cov[i * d + j] /= s as f64;
            cov[j * d + i] = cov[i * d + j];
        }
    }
    let (values, vectors) = symmetric_eigen(&cov, d);
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let axis = |c: usize| -> Vec<f64> { vectors.get(c).cloned().unwrap_or_else(|| vec![0.0; d]) };
    let (a1, a2) = (axis(0), axis(1));
    let points: Vec<[f64; 2]> = x
        .chunks_exact(d)
        .map(|row| {
            let dot = |a: &[f64]| {
                row.iter()
                    .zip(&mean)
                    .zip(a)
                    .map(|((v, m), w)| (v - m) * w)
                    .sum::<f64>()
            };
            [dot(&a1), dot(&a2)]
        })
        .collect();
    let lab: Vec<u32> = sample.iter().map(|&r| labels[r]).collect();
    let mut sums = vec![[0.0f64; 2]; k];
    let mut counts = vec![0usize; k];
    for (p, &l) in points.iter().zip(&lab) {
        sums[l as usize][0] += p[0];
        sums[l as usize][1] += p[1];
        counts[l as usize] += 1;
    }
    let centers = sums
        .iter()
        .zip(&counts)
        .map(|(s, &n)| (n > 0).then(|| [s[0] / n as f64, s[1] / n as f64]))
        .collect();
    let ratio = |c: usize| {
        if total > 0.0 {
            values.get(c).map_or(0.0, |v| v.max(0.0) / total)
        } else {
            0.0
        }
    };
    Ok(Projection {
        points,
        labels: lab,
        centers,
        explained: [ratio(0), ratio(1)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_of_a_known_matrix() {
        // [[2, 1], [1, 2]] has eigenvalues 3 and 1 with vectors (1, 1)/√2 and (1, -1)/√2.
        let (vals, vecs) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12);
        let r = std::f64::consts::FRAC_1_SQRT_2;
        assert!((vecs[0][0] - r).abs() < 1e-12 && (vecs[0][1] - r).abs() < 1e-12);
        assert!((vecs[1][0].abs() - r).abs() < 1e-12);
    }

    #[test]
    fn a_line_is_all_first_component() {
        let data =
            crate::data::Dataset::from_rows(2, vec![0.0, 0.0, 1.0, 2.0, 2.0, 4.0, 3.0, 6.0], None);
        let p = project(&data, &[0, 0, 1, 1], 2, &[0, 1, 2, 3]).unwrap();
        assert!((p.explained[0] - 1.0).abs() < 1e-9);
        assert!(p.points.iter().all(|q| q[1].abs() < 1e-9));
    }
}
