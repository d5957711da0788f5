//! The passes of a fit split over workers that share nothing but small partial results (the
//! partitions of a Spark DataFrame). Each worker summarises its rows; a driver merges the
//! summaries and makes every decision, as [`super::fit`] does with a backend.
//!
//! Every sum is exact ([`ExactSum`]), so the merged result is the same bits however the rows
//! were split into partitions and in whatever order the partitions arrive.

use rayon::prelude::*;

use crate::backend::{self, DeviceChoice, Step};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::exact::ExactSum;
use crate::prep::{ScaleMethod, ScaleStats, Scaler};

/// Rows per parallel chunk of a partition's accumulation.
const CHUNK_ROWS: usize = 16_384;

/// One Lloyd step over some rows: per-cluster weighted sums, weights and counts, and the
/// weighted inertia.
#[derive(Clone, Debug, PartialEq)]
pub struct Partials {
    pub k: usize,
    pub dim: usize,
    sums: Vec<ExactSum>,
    weights: Vec<ExactSum>,
    counts: Vec<u64>,
    inertia: ExactSum,
}

impl Partials {
    pub fn new(k: usize, dim: usize) -> Self {
        Partials {
            k,
            dim,
            sums: vec![ExactSum::default(); k * dim],
            weights: vec![ExactSum::default(); k],
            counts: vec![0; k],
            inertia: ExactSum::default(),
        }
    }

    /// Assigns `rows` (clustered space) to `centroids` on `device` and sums them per cluster.
    pub fn of(rows: &Dataset, centroids: &[f32], k: usize, device: DeviceChoice) -> Result<Self> {
        let dim = rows.dim();
        if centroids.len() != k * dim {
            return Err(Error::Usage(format!(
                "{} centroid values for k = {k} and {dim} features",
                centroids.len()
            )));
        }
        let mut out = Partials::new(k, dim);
        if rows.rows() == 0 {
            return Ok(out);
        }
        let mut be = backend::create(device, rows, None)?;
        be.step(centroids, k, false)?;
        let a = be.assignment()?;
        drop(be);
        let parts: Vec<Partials> = (0..rows.rows().div_ceil(CHUNK_ROWS))
            .into_par_iter()
            .map(|c| {
                let mut p = Partials::new(k, dim);
                for i in c * CHUNK_ROWS..((c + 1) * CHUNK_ROWS).min(rows.rows()) {
                    let (l, w) = (a.labels[i] as usize, rows.weight(i) as f64);
                    // Products of two f32 are exact in f64.
                    for (s, &x) in p.sums[l * dim..(l + 1) * dim].iter_mut().zip(rows.row(i)) {
                        s.add(w * x as f64);
                    }
                    p.weights[l].add(w);
                    p.counts[l] += 1;
                    p.inertia.add(w * a.distances[i] as f64);
                }
                p
            })
            .collect();
        for p in &parts {
            out.merge(p)?;
        }
        Ok(out)
    }

    pub fn merge(&mut self, o: &Partials) -> Result<()> {
        if (o.k, o.dim) != (self.k, self.dim) {
            return Err(Error::Internal("partials of different shapes".into()));
        }
        for (a, b) in self.sums.iter_mut().zip(&o.sums) {
            a.merge(b);
        }
        for (a, b) in self.weights.iter_mut().zip(&o.weights) {
            a.merge(b);
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.inertia.merge(&o.inertia);
        Ok(())
    }

    /// The merged sums rounded, in the form a backend's step has.
    pub fn step(&self) -> Step {
        Step {
            sums: self.sums.iter().map(ExactSum::value).collect(),
            weights: self.weights.iter().map(ExactSum::value).collect(),
            counts: self.counts.clone(),
            inertia: self.inertia.value(),
            changed: 0,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.k as u64).to_le_bytes());
        out.extend_from_slice(&(self.dim as u64).to_le_bytes());
        for c in &self.counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
        for s in self.sums.iter().chain(&self.weights).chain([&self.inertia]) {
            s.write(&mut out);
        }
        out
    }

    pub fn from_bytes(mut b: &[u8]) -> Result<Self> {
        let (k, dim) = (take_u64(&mut b)? as usize, take_u64(&mut b)? as usize);
        if k.checked_mul(dim + 2).is_none_or(|n| n > b.len()) {
            return Err(corrupt());
        }
        let mut p = Partials::new(k, dim);
        for c in p.counts.iter_mut() {
            *c = take_u64(&mut b)?;
        }
        for s in p.sums.iter_mut().chain(p.weights.iter_mut()) {
            *s = ExactSum::read(&mut b)?;
        }
        p.inertia = ExactSum::read(&mut b)?;
        Ok(p)
    }
}

/// Per-feature statistics of some rows in input units: what `tol` and the scalers need.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub dim: usize,
    rows: u64,
    weight: ExactSum,
    /// Σ w·x, Σ w·x², Σ x, Σ x² per feature.
    wx: Vec<ExactSum>,
    wx2: Vec<ExactSum>,
    x: Vec<ExactSum>,
    x2: Vec<ExactSum>,
    lo: Vec<f32>,
    hi: Vec<f32>,
}

impl Stats {
    pub fn new(dim: usize) -> Self {
        let z = vec![ExactSum::default(); dim];
        Stats {
            dim,
            rows: 0,
            weight: ExactSum::default(),
            wx: z.clone(),
            wx2: z.clone(),
            x: z.clone(),
            x2: z,
            lo: vec![f32::INFINITY; dim],
            hi: vec![f32::NEG_INFINITY; dim],
        }
    }

    /// Statistics of `rows` (input units).
    pub fn of(rows: &Dataset) -> Self {
        let dim = rows.dim();
        let parts: Vec<Stats> = (0..rows.rows().div_ceil(CHUNK_ROWS))
            .into_par_iter()
            .map(|c| {
                let mut s = Stats::new(dim);
                for i in c * CHUNK_ROWS..((c + 1) * CHUNK_ROWS).min(rows.rows()) {
                    let w = rows.weight(i) as f64;
                    s.rows += 1;
                    s.weight.add(w);
                    for (j, &v) in rows.row(i).iter().enumerate() {
                        let x = v as f64;
                        // x² is exact; w·x² is split into its rounded value and the error.
                        let (x2, wx2) = (x * x, w * (x * x));
                        s.wx[j].add(w * x);
                        s.wx2[j].add(wx2);
                        s.wx2[j].add(w.mul_add(x2, -wx2));
                        s.x[j].add(x);
                        s.x2[j].add(x2);
                        s.lo[j] = s.lo[j].min(v);
                        s.hi[j] = s.hi[j].max(v);
                    }
                }
                s
            })
            .collect();
        let mut out = Stats::new(dim);
        for p in &parts {
            out.merge(p);
        }
        out
    }

    pub fn merge(&mut self, o: &Stats) {
        self.rows += o.rows;
        self.weight.merge(&o.weight);
        for j in 0..self.dim {
            self.wx[j].merge(&o.wx[j]);
            self.wx2[j].merge(&o.wx2[j]);
            self.x[j].merge(&o.x[j]);
            self.x2[j].merge(&o.x2[j]);
            self.lo[j] = self.lo[j].min(o.lo[j]);
            self.hi[j] = self.hi[j].max(o.hi[j]);
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The scaler `method` learns from these rows, as [`Scaler::fit`] would.
    pub fn scaler(&self, method: ScaleMethod) -> Scaler {
        let w = self.weight.value();
        let mean: Vec<f64> = self.wx.iter().map(|s| s.value() / w).collect();
        let m2 = self
            .wx2
            .iter()
            .zip(&mean)
            .map(|(s, m)| (s.value() - w * m * m).max(0.0))
            .collect();
        let lo = self.lo.iter().map(|&v| v as f64).collect();
        let hi = self.hi.iter().map(|&v| v as f64).collect();
        ScaleStats::from_parts(w, mean, m2, lo, hi).scaler(method)
    }

    /// Mean over features of the unweighted population variance of the clustered values under
    /// `scaler`: the unit of `tol`, as [`crate::data::Moments::mean_variance`].
    pub fn mean_variance(&self, scaler: &Scaler) -> f64 {
        let n = self.rows as f64;
        if n == 0.0 {
            return 0.0;
        }
        let total: f64 = (0..self.dim)
            .map(|j| {
                let (m, q) = (self.x[j].value() / n, self.x2[j].value() / n);
                (q - m * m).max(0.0) / (scaler.scale[j] * scaler.scale[j])
            })
            .sum();
        total / self.dim as f64
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.dim as u64).to_le_bytes());
        out.extend_from_slice(&self.rows.to_le_bytes());
        for v in self.lo.iter().chain(&self.hi) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let sums = [&self.wx, &self.wx2, &self.x, &self.x2];
        self.weight.write(&mut out);
        for s in sums.into_iter().flatten() {
            s.write(&mut out);
        }
        out
    }

    pub fn from_bytes(mut b: &[u8]) -> Result<Self> {
        let dim = take_u64(&mut b)? as usize;
        if dim.checked_mul(8).is_none_or(|n| n > b.len()) {
            return Err(corrupt());
        }
        let mut s = Stats::new(dim);
        s.rows = take_u64(&mut b)?;
        for v in s.lo.iter_mut().chain(s.hi.iter_mut()) {
            let (head, rest) = b.split_at_checked(4).ok_or_else(corrupt)?;
            *v = f32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            b = rest;
        }
        s.weight = ExactSum::read(&mut b)?;
        for v in [&mut s.wx, &mut s.wx2, &mut s.x, &mut s.x2]
            .into_iter()
            .flatten()
        {
            *v = ExactSum::read(&mut b)?;
        }
        Ok(s)
    }
}

/// Rows tagged with a key that depends only on their values and the seed, so the same rows
/// are picked however the table is split: a row and its key.
pub type Keyed = (u64, Vec<f32>);

/// The `m` rows with positive weight that have the smallest seeded keys: a uniform sample
/// without replacement that any split of the rows agrees on (merge with [`smallest`]).
pub fn smallest_keys(rows: &Dataset, m: usize, seed: u64) -> Vec<Keyed> {
    // A round no k-means|| run reaches, so these keys are not its draws.
    let key = super::round_key(seed, 1 << 20);
    let all: Vec<Keyed> = (0..rows.rows())
        .filter(|&i| rows.weight(i) > 0.0)
        .map(|i| {
            let r = rows.row(i);
            (super::row_key(r) ^ key, r.to_vec())
        })
        .collect();
    smallest(all, m)
}

/// The `m` smallest of keyed rows, ties broken by the values' bits.
pub fn smallest(mut all: Vec<Keyed>, m: usize) -> Vec<Keyed> {
    sort_keyed(&mut all);
    all.truncate(m);
    all
}

/// Sorts keyed rows into the one order every split agrees on.
pub fn sort_keyed(all: &mut [Keyed]) {
    all.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            bits(&a.1).cmp(&bits(&b.1))
        })
    });
}

/// One partition's draw of a k-means|| round: each row joins with probability
/// `min(1, scale · w · D²)`, `D²` its squared distance to the nearest of `cands`, by a draw
/// keyed by `key` and the row's values ([`super::row_key`]).
pub fn sample(
    rows: &Dataset,
    cands: &[f32],
    scale: f64,
    key: u64,
    device: DeviceChoice,
) -> Result<Vec<Keyed>> {
    let m = cands.len() / rows.dim().max(1);
    if rows.rows() == 0 || m == 0 {
        return Ok(Vec::new());
    }
    let mut be = backend::create(device, rows, None)?;
    be.step(cands, m, false)?;
    let a = be.assignment()?;
    drop(be);
    Ok((0..rows.rows())
        .filter_map(|i| {
            let p = scale * rows.weight(i) as f64 * a.distances[i] as f64;
            let r = rows.row(i);
            let k = super::row_key(r);
            (p > 0.0 && super::uniform(key, k) < p).then(|| (k, r.to_vec()))
        })
        .collect())
}

/// Keyed rows as bytes: the count, then each key and its values (little-endian).
pub fn keyed_to_bytes(rows: &[Keyed]) -> Vec<u8> {
    let mut out = (rows.len() as u64).to_le_bytes().to_vec();
    for (k, v) in rows {
        out.extend_from_slice(&k.to_le_bytes());
        out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    out
}

pub fn keyed_from_bytes(mut b: &[u8], dim: usize) -> Result<Vec<Keyed>> {
    let n = take_u64(&mut b)? as usize;
    if n.checked_mul(8 + 4 * dim) != Some(b.len()) {
        return Err(corrupt());
    }
    Ok(b.chunks_exact(8 + 4 * dim)
        .map(|c| {
            let mut k = [0u8; 8];
            k.copy_from_slice(&c[..8]);
            let v = c[8..]
                .chunks_exact(4)
                .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                .collect();
            (u64::from_le_bytes(k), v)
        })
        .collect())
}

fn corrupt() -> Error {
    Error::Input("corrupt partial result from a worker".into())
}

fn take_u64(b: &mut &[u8]) -> Result<u64> {
    let (head, rest) = b.split_at_checked(8).ok_or_else(corrupt)?;
    *b = rest;
    let mut a = [0u8; 8];
    a.copy_from_slice(head);
    Ok(u64::from_le_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, dim: usize, seed: u64) -> Dataset {
        let mut rng = crate::rng::Rng::derive(seed, 1);
        let v = (0..n * dim)
            .map(|_| (rng.uniform() * 20.0 - 10.0) as f32)
            .collect();
        let w = (0..n).map(|i| (i % 3) as f32 + 0.5).collect();
        Dataset::from_rows(dim, v, Some(w))
    }

    fn split(d: &Dataset, at: &[usize]) -> Vec<Dataset> {
        let mut out = Vec::new();
        let mut lo = 0;
        for &hi in at.iter().chain([&d.rows()]) {
            let v = (lo..hi).flat_map(|i| d.row(i).to_vec()).collect();
            let w = (lo..hi).map(|i| d.weight(i)).collect();
            out.push(Dataset::from_rows(d.dim(), v, Some(w)));
            lo = hi;
        }
        out
    }

    #[test]
    fn partials_do_not_depend_on_the_split() {
        let d = rows(50_000, 5, 3);
        let c: Vec<f32> = (0..4).flat_map(|i| d.row(i * 1000).to_vec()).collect();
        let whole = Partials::of(&d, &c, 4, DeviceChoice::Cpu).unwrap();
        for cuts in [vec![1, 2, 30_000], vec![17_001], vec![49_999]] {
            let mut merged = Partials::new(4, 5);
            // Merged in reverse order: the order does not matter either.
            for p in split(&d, &cuts).iter().rev() {
                merged
                    .merge(&Partials::of(p, &c, 4, DeviceChoice::Cpu).unwrap())
                    .unwrap();
            }
            assert_eq!(merged, whole);
            let back = Partials::from_bytes(&merged.to_bytes()).unwrap();
            assert_eq!(back.step(), whole.step());
        }
        let s = whole.step();
        assert_eq!(s.counts.iter().sum::<u64>(), 50_000);
    }

    #[test]
    fn stats_do_not_depend_on_the_split_and_match_the_scaler() {
        let d = rows(20_000, 3, 4);
        let whole = Stats::of(&d);
        let mut merged = Stats::new(3);
        for p in split(&d, &[5, 12_345]) {
            merged.merge(&Stats::from_bytes(&Stats::of(&p).to_bytes()).unwrap());
        }
        assert_eq!(merged, whole);
        for m in [ScaleMethod::Standard, ScaleMethod::Minmax] {
            let (a, b) = (whole.scaler(m), Scaler::fit(m, &d));
            for j in 0..3 {
                assert!((a.offset[j] - b.offset[j]).abs() < 1e-9 * (1.0 + b.offset[j].abs()));
                assert!((a.scale[j] - b.scale[j]).abs() < 1e-9 * b.scale[j]);
            }
        }
        let id = Scaler::identity(3);
        let mv = crate::data::Rows::moments(&d).mean_variance();
        assert!((whole.mean_variance(&id) - mv).abs() < 1e-9 * mv);
    }
}
