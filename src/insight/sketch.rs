//! A deterministic streaming median with a stated error bound, for profiles of tables that do
//! not fit in memory.
//!
//! An exact median needs every value at hand. A streamed profile instead makes two passes:
//! the first finds each group's exact minimum and maximum (with the other exact statistics),
//! the second drops every value into one of [`BINS`] equal-width bins over that range, keeping
//! per bin the total weight and the smallest and largest value that fell in it. The weighted
//! median (as [`super::profile::weighted_median`] defines it) then lies in the bin where the
//! running weight reaches half the total:
//!
//! - when the running weight lands exactly on half at the end of a bin, the median is the mean
//!   of that bin's largest value and the next bin's smallest, both known exactly: no error;
//! - otherwise it is one of the values of that bin, so it lies within `[lo_b, hi_b]`, the
//!   bin's smallest and largest value. The estimate interpolates linearly within them by
//!   weight, and its error is at most `hi_b - lo_b`, which is reported with it, and which is at
//!   most the bin width, `(max - min) / BINS` (0 when the bin holds one distinct value).
//!
//! Bins fill in row order, one column per thread, so the sketch is the same bits whatever the
//! thread count, the files or the memory budget. The decisions compare running sums of
//! weights: with unit weights (or any weights whose sums are exact in f64) they are exact;
//! with arbitrary fractional weights, a running sum within rounding of exactly half can pick
//! the neighbouring bin.

/// Bins per sketch: the bound is at most 1/1,024 of the group's range of the column.
pub const BINS: usize = 1024;

/// Bytes one sketch with bins takes.
pub const SKETCH_BYTES: usize = BINS * 24;

/// A median estimate and the bound on its distance from the exact weighted median.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    /// |value − exact median| ≤ bound (0: exact).
    pub bound: f64,
}

/// Fixed-bin histogram of one column in one group over that group's exact range.
#[derive(Debug, Clone)]
pub struct MedianSketch {
    lo: f64,
    hi: f64,
    /// Per bin: total weight, smallest and largest value with positive weight.
    weight: Vec<f64>,
    low: Vec<f64>,
    high: Vec<f64>,
}

impl MedianSketch {
    /// A sketch over the exact range `[min, max]` found by the first pass. A group with a
    /// single value (or none) needs no bins: its median is that value.
    pub fn new(min: f64, max: f64) -> Self {
        let bins = if min < max { BINS } else { 0 };
        MedianSketch {
            lo: min,
            hi: max,
            weight: vec![0.0; bins],
            low: vec![f64::INFINITY; bins],
            high: vec![f64::NEG_INFINITY; bins],
        }
    }

    /// Bytes the sketch holds.
    pub fn bytes(&self) -> usize {
        self.weight.len() * 24
    }

    /// Adds one value with its weight; values without weight cannot move a weighted median
    /// and are left out. Values must lie in the range given to [`MedianSketch::new`].
    #[inline]
    pub fn add(&mut self, x: f64, w: f64) {
        if w.is_nan() || w <= 0.0 || self.weight.is_empty() {
            return;
        }
        let t = (x - self.lo) / (self.hi - self.lo) * BINS as f64;
        let b = (t.max(0.0) as usize).min(BINS - 1);
        self.weight[b] += w;
        if x < self.low[b] {
            self.low[b] = x;
        }
        if x > self.high[b] {
            self.high[b] = x;
        }
    }

    /// The median estimate, or `None` when no value had weight. `any_weight` says whether the
    /// group had positive weight (a group whose range is one value has no bins to say so).
    pub fn median(&self, any_weight: bool) -> Option<Estimate> {
        if self.weight.is_empty() {
            return any_weight.then_some(Estimate {
                value: self.lo,
                bound: 0.0,
            });
        }
        let total: f64 = self.weight.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let half = total / 2.0;
        let mut run = 0.0;
        for b in 0..BINS {
            let w = self.weight[b];
            if w <= 0.0 {
                continue;
            }
            let before = run;
            run += w;
            if run < half {
                continue;
            }
            if run == half {
                let next = (b + 1..BINS).find(|&n| self.weight[n] > 0.0);
                return Some(Estimate {
                    value: next.map_or(self.high[b], |n| (self.high[b] + self.low[n]) / 2.0),
                    bound: 0.0,
                });
            }
            let (lo, hi) = (self.low[b], self.high[b]);
            let f = ((half - before) / w).clamp(0.0, 1.0);
            return Some(Estimate {
                value: lo + f * (hi - lo),
                bound: hi - lo,
            });
        }
        // Rounding left the running sum a hair short of half: the largest value.
        let last = (0..BINS).rev().find(|&b| self.weight[b] > 0.0)?;
        Some(Estimate {
            value: self.high[last],
            bound: 0.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::profile::weighted_median;
    use super::*;

    fn check(values: &[(f64, f64)]) {
        let lo = values.iter().map(|v| v.0).fold(f64::INFINITY, f64::min);
        let hi = values.iter().map(|v| v.0).fold(f64::NEG_INFINITY, f64::max);
        let mut s = MedianSketch::new(lo, hi);
        for &(x, w) in values {
            s.add(x, w);
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let exact = weighted_median(&sorted).unwrap();
        let e = s.median(true).unwrap();
        assert!(
            (e.value - exact).abs() <= e.bound,
            "estimate {} exact {exact} bound {}",
            e.value,
            e.bound
        );
        assert!(e.bound <= (hi - lo) / BINS as f64 * (1.0 + 1e-9));
    }

    #[test]
    fn estimates_stay_within_their_bound() {
        // Skewed values, unit and integer weights, odd and even counts.
        for n in [1usize, 2, 3, 10, 1001, 5000] {
            let v: Vec<(f64, f64)> = (0..n)
                .map(|i| ((((i * 7919) % 997) as f64).powi(3) / 1e4, 1.0))
                .collect();
            check(&v);
            let w: Vec<(f64, f64)> = v
                .iter()
                .enumerate()
                .map(|(i, &(x, _))| (x, 1.0 + (i % 3) as f64))
                .collect();
            check(&w);
        }
    }

    #[test]
    fn a_median_between_bins_is_exact() {
        // Half the weight ends exactly at the end of the low group.
        let v = [(0.0, 1.0), (1.0, 1.0), (100.0, 1.0), (200.0, 1.0)];
        let mut s = MedianSketch::new(0.0, 200.0);
        for &(x, w) in &v {
            s.add(x, w);
        }
        assert_eq!(
            s.median(true),
            Some(Estimate {
                value: 50.5,
                bound: 0.0
            })
        );
        let one = MedianSketch::new(3.0, 3.0);
        assert_eq!(one.median(true).map(|e| e.value), Some(3.0));
        assert_eq!(one.median(false), None);
    }
}
