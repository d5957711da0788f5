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
    /// Learns the map from `data` (in input units). A constant feature gets scale 1, so it
    /// becomes 0 rather than NaN.
    pub fn fit(method: ScaleMethod, data: &Dataset) -> Scaler {
        let dim = data.dim();
        let (mut offset, mut scale) = (vec![0.0; dim], vec![1.0; dim]);
        match method {
            ScaleMethod::None => {}
            ScaleMethod::Standard => {
                let total = data.total_weight();
                let mut sum = vec![0.0f64; dim];
                for_each_row(data, |row, w| {
                    for (s, &v) in sum.iter_mut().zip(row) {
                        *s += w * v as f64;
                    }
                });
                let mean: Vec<f64> = sum.iter().map(|s| s / total).collect();
                let mut ss = vec![0.0f64; dim];
                for_each_row(data, |row, w| {
                    for ((s, &m), &v) in ss.iter_mut().zip(&mean).zip(row) {
                        let d = v as f64 - m;
                        *s += w * d * d;
                    }
                });
                for j in 0..dim {
                    let sd = (ss[j] / total).sqrt();
                    scale[j] = if sd.is_finite() && sd > f64::EPSILON * mean[j].abs().max(1e-300) {
                        sd
                    } else {
                        1.0
                    };
                }
                offset = mean;
            }
            ScaleMethod::Minmax => {
                let mut lo = vec![f64::INFINITY; dim];
                let mut hi = vec![f64::NEG_INFINITY; dim];
                for_each_row(data, |row, _| {
                    for (j, &v) in row.iter().enumerate() {
                        lo[j] = lo[j].min(v as f64);
                        hi[j] = hi[j].max(v as f64);
                    }
                });
                for j in 0..dim {
                    let range = hi[j] - lo[j];
                    offset[j] = lo[j];
                    scale[j] = if range > 0.0 && range.is_finite() {
                        range
                    } else {
                        1.0
                    };
                }
            }
        }
        Scaler {
            method,
            offset,
            scale,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.offset.iter().all(|&o| o == 0.0) && self.scale.iter().all(|&s| s == 1.0)
    }

    /// Input units to clustered space, in place. Fit and predict both come through here, so
    /// the same input row always becomes the same f32 values.
    pub fn transform(&self, data: &mut Dataset) {
        if self.is_identity() {
            return;
        }
        let dim = self.offset.len();
        for values in data.values_mut() {
            for row in values.chunks_exact_mut(dim) {
                self.transform_row(row);
            }
        }
    }

    pub fn transform_row(&self, row: &mut [f32]) {
        for ((v, &o), &s) in row.iter_mut().zip(&self.offset).zip(&self.scale) {
            *v = ((*v as f64 - o) / s) as f32;
        }
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

fn for_each_row(data: &Dataset, mut f: impl FnMut(&[f32], f64)) {
    let dim = data.dim();
    for b in data.batches() {
        for (r, row) in b.values.chunks_exact(dim).enumerate() {
            f(row, b.weights.as_ref().map_or(1.0, |w| w[r] as f64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_column_does_not_become_nan() {
        let mut d = Dataset::from_rows(2, vec![5.0, 1.0, 5.0, 2.0, 5.0, 3.0], None);
        for m in [ScaleMethod::Standard, ScaleMethod::Minmax] {
            let s = Scaler::fit(m, &d);
            assert_eq!(s.scale[0], 1.0);
            let mut e = d.clone();
            s.transform(&mut e);
            assert!(e.batches()[0].values.iter().all(|v| v.is_finite()));
            assert_eq!(e.row(1)[0], 0.0);
        }
        let s = Scaler::fit(ScaleMethod::Standard, &d);
        s.transform(&mut d);
        let col: Vec<f32> = (0..3).map(|i| d.row(i)[1]).collect();
        let sd = (2.0f64 / 3.0).sqrt();
        assert!((col[0] as f64 + 1.0 / sd).abs() < 1e-6, "{col:?}");
    }

    #[test]
    fn inverse_undoes_transform() {
        let mut d = Dataset::from_rows(1, vec![2.0, 4.0, 9.0], Some(vec![1.0, 2.0, 1.0]));
        let s = Scaler::fit(ScaleMethod::Standard, &d);
        // weighted mean (2 + 8 + 9) / 4
        assert!((s.offset[0] - 4.75).abs() < 1e-12);
        s.transform(&mut d);
        let back = s.inverse(&d.batches()[0].values);
        for (a, b) in back.iter().zip([2.0, 4.0, 9.0]) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
