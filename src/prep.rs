//! Preparation of features before clustering: scaling, and its inverse for reporting.

use serde::{Deserialize, Serialize};

use crate::data::Dataset;

/// How features are scaled before clustering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleMethod {
    /// Cluster on the values as they are.
    None,
    /// Subtract the weighted mean, divide by the weighted standard deviation.
    Standard,
    /// Map each feature's minimum to 0 and maximum to 1.
    Minmax,
}

/// A fitted per-feature affine map: clustered = (input − offset) / scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    pub method: ScaleMethod,
    pub offset: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Scaler {
    /// Learns the map from `data` (in input units).
    pub fn fit(method: ScaleMethod, data: &Dataset) -> Scaler {
        let dim = data.dim();
        let mut stats = ScaleStats::new(dim);
        for b in data.batches() {
            let x: Vec<f64> = b.values.iter().map(|&v| v as f64).collect();
            stats.merge(&ScaleStats::of_slab(&x, b.weights.as_deref(), dim));
        }
        stats.scaler(method)
    }

    /// The identity map over `dim` features.
    pub fn identity(dim: usize) -> Scaler {
        Scaler {
            method: ScaleMethod::None,
            offset: vec![0.0; dim],
            scale: vec![1.0; dim],
        }
    }

    pub fn is_identity(&self) -> bool {
        self.offset.iter().all(|&o| o == 0.0) && self.scale.iter().all(|&s| s == 1.0)
    }

    /// Input units to clustered space: one value of feature `j`. Every path from a raw value
    /// to a clustered `f32` (fit, streaming, predict) comes through here, in f64, so the same
    /// input value always becomes the same bits.
    #[inline]
    pub fn apply(&self, j: usize, v: f64) -> f32 {
        ((v - self.offset[j]) / self.scale[j]) as f32
    }

    /// A copy of `data` (in input units) in clustered space.
    pub fn transform_dataset(&self, data: &Dataset) -> Dataset {
        let dim = self.offset.len();
        let slabs = data
            .batches()
            .iter()
            .map(|b| crate::data::Batch {
                values: b
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| self.apply(i % dim, v as f64))
                    .collect(),
                weights: b.weights.clone(),
            })
            .collect();
        Dataset::from_slabs(dim, slabs)
    }

    /// One row (in input units, as f32) to clustered space, in place.
    pub fn transform_row(&self, row: &mut [f32]) {
        for (j, v) in row.iter_mut().enumerate() {
            *v = self.apply(j, *v as f64);
        }
    }

    /// Input-unit centroids (or rows) to clustered space, row-major.
    pub fn transform_rows(&self, rows: &[f64]) -> Vec<f32> {
        let dim = self.offset.len();
        rows.iter()
            .enumerate()
            .map(|(i, &v)| self.apply(i % dim, v))
            .collect()
    }

    /// Clustered space back to input units.
    pub fn inverse(&self, centroids: &[f32]) -> Vec<f64> {
        let dim = self.offset.len();
        centroids
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f64 * self.scale[i % dim] + self.offset[i % dim])
            .collect()
    }
}

/// Weighted per-feature moments and ranges, gathered in fixed blocks of a slab and merged in
/// block and slab order (Chan et al.'s update, with weights), so the statistics do not depend
/// on threads, files or memory. Values are f64 as read, before any rounding to f32: an
/// epoch-millisecond timestamp keeps its resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleStats {
    weight: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
}

const STATS_BLOCK: usize = 4096;

impl ScaleStats {
    pub fn new(dim: usize) -> Self {
        ScaleStats {
            weight: 0.0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
            lo: vec![f64::INFINITY; dim],
            hi: vec![f64::NEG_INFINITY; dim],
        }
    }

    /// Statistics gathered elsewhere (exact sums from Spark partitions): total weight, and per
    /// feature the weighted mean, the weighted sum of squared deviations, the least and the
    /// greatest value.
    pub fn from_parts(
        weight: f64,
        mean: Vec<f64>,
        m2: Vec<f64>,
        lo: Vec<f64>,
        hi: Vec<f64>,
    ) -> Self {
        ScaleStats {
            weight,
            mean,
            m2,
            lo,
            hi,
        }
    }

    /// Two passes in f64 over a few rows.
    fn of_rows(x: &[f64], w: Option<&[f32]>, dim: usize) -> Self {
        let mut s = ScaleStats::new(dim);
        let wt = |r: usize| w.map_or(1.0, |w| w[r] as f64);
        for (r, row) in x.chunks_exact(dim).enumerate() {
            let wr = wt(r);
            s.weight += wr;
            for (j, &v) in row.iter().enumerate() {
                s.mean[j] += wr * v;
                s.lo[j] = s.lo[j].min(v);
                s.hi[j] = s.hi[j].max(v);
            }
        }
        if s.weight > 0.0 {
            let total = s.weight;
            s.mean.iter_mut().for_each(|m| *m /= total);
            for (r, row) in x.chunks_exact(dim).enumerate() {
                let wr = wt(r);
                for ((m2, &mu), &v) in s.m2.iter_mut().zip(&s.mean).zip(row) {
                    let d = v - mu;
                    *m2 += wr * d * d;
                }
            }
        } else {
            s.mean.iter_mut().for_each(|m| *m = 0.0);
        }
        s
    }

    /// Statistics of one slab of rows (row-major f64), in fixed blocks merged in order.
    pub fn of_slab(x: &[f64], w: Option<&[f32]>, dim: usize) -> Self {
        use rayon::prelude::*;
        let rows = x.len() / dim;
        let parts: Vec<ScaleStats> = crate::data::slab_blocks(0, rows, STATS_BLOCK)
            .par_iter()
            .map(|b| {
                Self::of_rows(
                    &x[b.start * dim..(b.start + b.len) * dim],
                    w.map(|w| &w[b.start..b.start + b.len]),
                    dim,
                )
            })
            .collect();
        let mut s = ScaleStats::new(dim);
        for p in &parts {
            s.merge(p);
        }
        s
    }

    pub fn merge(&mut self, o: &ScaleStats) {
        for j in 0..self.lo.len() {
            self.lo[j] = self.lo[j].min(o.lo[j]);
            self.hi[j] = self.hi[j].max(o.hi[j]);
        }
        if o.weight <= 0.0 {
            return;
        }
        if self.weight <= 0.0 {
            self.weight = o.weight;
            self.mean.clone_from(&o.mean);
            self.m2.clone_from(&o.m2);
            return;
        }
        let total = self.weight + o.weight;
        for j in 0..self.mean.len() {
            let delta = o.mean[j] - self.mean[j];
            self.mean[j] += delta * o.weight / total;
            self.m2[j] += o.m2[j] + delta * delta * self.weight * o.weight / total;
        }
        self.weight = total;
    }

    /// The fitted map. A constant feature gets scale 1, so it becomes 0 rather than NaN.
    pub fn scaler(&self, method: ScaleMethod) -> Scaler {
        let dim = self.mean.len();
        let mut s = Scaler::identity(dim);
        s.method = method;
        match method {
            ScaleMethod::None => {}
            ScaleMethod::Standard => {
                for j in 0..dim {
                    let sd = (self.m2[j] / self.weight).sqrt();
                    let m = self.mean[j];
                    s.scale[j] = if sd.is_finite() && sd > f64::EPSILON * m.abs().max(1e-300) {
                        sd
                    } else {
                        1.0
                    };
                    s.offset[j] = m;
                }
            }
            ScaleMethod::Minmax => {
                for j in 0..dim {
                    let range = self.hi[j] - self.lo[j];
                    s.offset[j] = if self.lo[j].is_finite() {
                        self.lo[j]
                    } else {
                        0.0
                    };
                    s.scale[j] = if range > 0.0 && range.is_finite() {
                        range
                    } else {
                        1.0
                    };
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_column_does_not_become_nan() {
        let d = Dataset::from_rows(2, vec![5.0, 1.0, 5.0, 2.0, 5.0, 3.0], None);
        for m in [ScaleMethod::Standard, ScaleMethod::Minmax] {
            let s = Scaler::fit(m, &d);
            assert_eq!(s.scale[0], 1.0);
            let e = s.transform_dataset(&d);
            assert!(e.batches()[0].values.iter().all(|v| v.is_finite()));
            assert_eq!(e.row(1)[0], 0.0);
        }
        let s = Scaler::fit(ScaleMethod::Standard, &d);
        let d = s.transform_dataset(&d);
        let col: Vec<f32> = (0..3).map(|i| d.row(i)[1]).collect();
        let sd = (2.0f64 / 3.0).sqrt();
        assert!((col[0] as f64 + 1.0 / sd).abs() < 1e-6, "{col:?}");
    }

    #[test]
    fn inverse_undoes_transform() {
        let d = Dataset::from_rows(1, vec![2.0, 4.0, 9.0], Some(vec![1.0, 2.0, 1.0]));
        let s = Scaler::fit(ScaleMethod::Standard, &d);
        // weighted mean (2 + 8 + 9) / 4
        assert!((s.offset[0] - 4.75).abs() < 1e-12);
        let d = s.transform_dataset(&d);
        let back = s.inverse(&d.batches()[0].values);
        for (a, b) in back.iter().zip([2.0, 4.0, 9.0]) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn merged_statistics_match_one_pass_over_all_rows() {
        let dim = 2;
        let x: Vec<f64> = (0..20_000)
            .map(|i| 1.7e12 + ((i * 7919) % 100_003) as f64)
            .collect();
        let w: Vec<f32> = (0..10_000).map(|i| (i % 3) as f32 + 0.5).collect();
        let whole = ScaleStats::of_slab(&x, Some(&w), dim);
        let mut parts = ScaleStats::new(dim);
        for (xc, wc) in x.chunks(dim * 3000).zip(w.chunks(3000)) {
            parts.merge(&ScaleStats::of_rows(xc, Some(wc), dim));
        }
        let (a, b) = (
            whole.scaler(ScaleMethod::Standard),
            parts.scaler(ScaleMethod::Standard),
        );
        for j in 0..dim {
            // Sums of values near 1.7e12 in other orders: f64 rounding, about 1e-15 relative.
            assert!(
                (a.offset[j] / b.offset[j] - 1.0).abs() < 1e-13,
                "{a:?} {b:?}"
            );
            assert!((a.scale[j] / b.scale[j] - 1.0).abs() < 1e-9, "{a:?} {b:?}");
        }
    }
}
