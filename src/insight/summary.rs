//! Exact weighted statistics of one column within one group of rows: rows, total weight,
//! mean, spread, minimum and maximum, in f64.
//!
//! A profile gathers them in fixed blocks of [`BLOCK`] rows of each slab (two passes over the
//! block in f64: the mean, then squared deviations from it) and merges the blocks in row order
//! with Chan et al.'s pairwise update, weighted. Blocks depend only on the global row index, so
//! the figures are the same bits whether the rows sit in memory or stream past, however many
//! files hold them and however many threads add them up.

/// Rows per block; divides [`crate::data::SLAB_ROWS`], so blocks never straddle slabs.
pub const BLOCK: usize = 4096;

/// Weighted moments and range of one column in one group (a cluster, or the population).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Rows with a value (nulls left out), whatever their weight.
    pub rows: u64,
    /// Sum of the weights of those rows.
    pub weight: f64,
    /// Weighted mean (0 while `weight` is 0).
    pub mean: f64,
    /// Weighted sum of squared deviations from the mean.
    pub m2: f64,
    /// Smallest and largest value (infinite while `rows` is 0).
    pub min: f64,
    pub max: f64,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            rows: 0,
            weight: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Summary {
    /// Adds a later group of rows (Chan et al.'s update with weights). Merging in a fixed
    /// order is what makes the result reproducible.
    pub fn merge(&mut self, o: &Summary) {
        self.rows += o.rows;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.weight <= 0.0 {
            return;
        }
        if self.weight <= 0.0 {
            self.weight = o.weight;
            self.mean = o.mean;
            self.m2 = o.m2;
            return;
        }
        let w = self.weight + o.weight;
        let delta = o.mean - self.mean;
        self.mean += delta * o.weight / w;
        self.m2 += o.m2 + delta * delta * self.weight * o.weight / w;
        self.weight = w;
    }

    /// The weighted mean; `None` without weight.
    pub fn mean(&self) -> Option<f64> {
        (self.weight > 0.0).then_some(self.mean)
    }

    /// The weighted standard deviation (divisor: the total weight); `None` without weight.
    pub fn sd(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| (self.m2 / self.weight).max(0.0).sqrt())
    }

    pub fn min(&self) -> Option<f64> {
        (self.rows > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.rows > 0).then_some(self.max)
    }
}

/// Per-group summaries of one block of one column: `value(r)` (NaN for a null), `group(r)`
/// below `groups`, `weight(r)`, for rows `0..rows` of the block. Two passes over the block.
pub fn block_summaries(
    rows: usize,
    groups: usize,
    value: impl Fn(usize) -> f64,
    group: impl Fn(usize) -> usize,
    weight: impl Fn(usize) -> f64,
) -> Vec<Summary> {
    let mut s = vec![Summary::default(); groups];
    let mut sum = vec![0.0f64; groups];
    for r in 0..rows {
        let x = value(r);
        if x.is_nan() {
            continue;
        }
        let (g, w) = (group(r), weight(r));
        let t = &mut s[g];
        t.rows += 1;
        t.weight += w;
        sum[g] += w * x;
        t.min = t.min.min(x);
        t.max = t.max.max(x);
    }
    for (t, &sm) in s.iter_mut().zip(&sum) {
        if t.weight > 0.0 {
            t.mean = sm / t.weight;
        }
    }
    for r in 0..rows {
        let x = value(r);
        if x.is_nan() {
            continue;
        }
        let t = &mut s[group(r)];
        if t.weight > 0.0 {
            let d = x - t.mean;
            t.m2 += weight(r) * d * d;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(v: &[(f64, f64)]) -> Summary {
        block_summaries(v.len(), 1, |r| v[r].0, |_| 0, |r| v[r].1)[0]
    }

    #[test]
    fn merged_blocks_match_one_block() {
        let v: Vec<(f64, f64)> = (0..1000)
            .map(|i| {
                (
                    ((i * 7919) % 1013) as f64 * 0.37 - 50.0,
                    0.5 + (i % 4) as f64,
                )
            })
            .collect();
        let whole = of(&v);
        let mut merged = Summary::default();
        for c in v.chunks(97) {
            merged.merge(&of(c));
        }
        assert_eq!(merged.rows, whole.rows);
        assert_eq!((merged.min, merged.max), (whole.min, whole.max));
        assert!((merged.mean - whole.mean).abs() < 1e-12);
        assert!((merged.m2 - whole.m2).abs() < 1e-9 * whole.m2);
    }

    #[test]
    fn nulls_and_zero_weights() {
        let s = of(&[(f64::NAN, 1.0), (2.0, 0.0), (4.0, 1.0), (6.0, 1.0)]);
        assert_eq!(s.rows, 3);
        assert_eq!(s.mean(), Some(5.0));
        assert_eq!(s.sd(), Some(1.0));
        assert_eq!((s.min(), s.max()), (Some(2.0), Some(6.0)));
        let none = of(&[(1.0, 0.0)]);
        assert_eq!((none.rows, none.mean(), none.sd()), (1, None, None));
    }
}
