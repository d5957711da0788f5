//! The passes of a fit split over workers that share nothing but small partial results (the
//! partitions of a Spark DataFrame). Each worker summarises its rows; a driver merges the
//! summaries and makes every decision, as [`super::fit`] does with a backend.
//!
//! Every sum is exact ([`ExactSum`]), so the merged result is the same bits however the rows
//! were split into partitions and in whatever order the partitions arrive.

use std::io::{Read, Write};
use std::path::Path;

use rayon::prelude::*;

use super::ParallelPasses;
use super::parallel::Near;
use crate::backend::cpu::Pass;
use crate::backend::{self, DeviceChoice, Step};
use crate::data::{Batch, Dataset, SLAB_ROWS};
use crate::error::{Error, Result};
use crate::exact::ExactSum;
use crate::prep::{ScaleMethod, ScaleStats, Scaler};

/// Rows per parallel chunk of a partition's accumulation.
const CHUNK_ROWS: usize = 16_384;

/// Rows per run of one feature in the statistics: 32 KiB of rows at 16 features.
const STATS_ROWS: usize = 512;

/// Each row's nearest of the `m` centres `cents` (row-major) and its squared distance. The
/// CPU runs the library's SIMD pass over fixed blocks straight on the rows (no backend to
/// set up per partition and pass); other devices run a backend step.
fn assign(
    rows: &Dataset,
    cents: &[f32],
    m: usize,
    device: DeviceChoice,
) -> Result<(Vec<u32>, Vec<f32>)> {
    if device != DeviceChoice::Cpu {
        let mut be = backend::create(device, rows, None)?;
        be.step(cents, m, false)?;
        let a = be.assignment()?;
        return Ok((a.labels, a.distances));
    }
    let n = rows.rows();
    let pass = Pass::new(cents, m, rows.dim(), true, false);
    let (mut labels, mut dists) = (vec![0u32; n], vec![0f32; n]);
    labels
        .par_chunks_mut(CHUNK_ROWS)
        .zip(dists.par_chunks_mut(CHUNK_ROWS))
        .zip(rows.blocks(CHUNK_ROWS))
        .for_each(|((l, d), blk)| {
            let (x, w) = rows.block_view(&blk);
            pass.block(x, w, l, d);
        });
    Ok((labels, dists))
}

/// Per feature of a block's rows (`dim` values each, at most [`CHUNK_ROWS`] of them), the
/// smallest magnitude whose values a plain `f64` sum over any subset of the rows adds
/// without rounding. With every value below 2^E, a value at or above 2^(E-16) is an f32
/// multiple of 2^(E-39); partial sums of at most 2^14 such values stay below 2^(E+14), so
/// they need at most 53 bits. Zero is exact too.
fn exact_floor(x: &[f32], dim: usize) -> Vec<f32> {
    const _: () = assert!(CHUNK_ROWS <= 1 << 14);
    let mut top = vec![0f32; dim];
    for row in x.chunks_exact(dim) {
        for (t, &v) in top.iter_mut().zip(row) {
            *t = t.max(v.abs());
        }
    }
    top.iter()
        .map(|&t| {
            // 2^E is the power of two above the largest magnitude: its exponent plus one
            // (subnormals count as the smallest exponent, which only lowers the floor).
            // The floor is at least 2^-141, a subnormal f32 at worst, never zero.
            let biased = ((t.to_bits() >> 23) & 0xff).max(1) as i32;
            let floor = biased - 127 + 1 - 16;
            if floor >= -126 {
                f32::from_bits(((floor + 127) as u32) << 23)
            } else {
                f32::from_bits(1 << (floor + 149))
            }
        })
        .collect()
}

/// Whether `v` is one of the values that [`exact_floor`]'s `floor` lets a plain sum hold.
#[inline]
fn within(v: f32, floor: f32) -> bool {
    v.abs() >= floor || v == 0.0
}

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
        let (labels, dists) = assign(rows, centroids, k, device)?;
        let parts: Vec<Partials> = rows
            .blocks(CHUNK_ROWS)
            .into_par_iter()
            .map(|blk| {
                let mut p = Partials::new(k, dim);
                let (x, w) = rows.block_view(&blk);
                let labels = &labels[blk.global..blk.global + blk.len];
                let dists = &dists[blk.global..blk.global + blk.len];
                p.add_block(x, w, labels, dists);
                p
            })
            .collect();
        for p in &parts {
            out.merge(p)?;
        }
        Ok(out)
    }

    /// Adds one block's rows, given their clusters and squared distances.
    ///
    /// Rows are taken cluster by cluster (a counting sort), so one cluster's sums stay in
    /// cache. Unweighted features go through an `f64` sum per cluster run that is exact by
    /// construction (see [`exact_floor`]); the few values it cannot hold, and every weighted
    /// product, go to the [`ExactSum`] directly.
    fn add_block(&mut self, x: &[f32], w: Option<&[f32]>, labels: &[u32], dists: &[f32]) {
        let (k, dim) = (self.k, self.dim);
        let mut start = vec![0usize; k + 1];
        for &l in labels {
            start[l as usize + 1] += 1;
        }
        for c in 0..k {
            start[c + 1] += start[c];
        }
        let mut order = vec![0u32; labels.len()];
        let mut next = start.clone();
        for (r, &l) in labels.iter().enumerate() {
            order[next[l as usize]] = r as u32;
            next[l as usize] += 1;
        }
        let floor = exact_floor(x, dim);
        let mut acc = vec![0f64; dim];
        for l in 0..k {
            let run = &order[start[l]..start[l + 1]];
            if run.is_empty() {
                continue;
            }
            let sums = &mut self.sums[l * dim..(l + 1) * dim];
            match w {
                None => {
                    acc.iter_mut().for_each(|a| *a = 0.0);
                    for &r in run {
                        let row = &x[r as usize * dim..(r as usize + 1) * dim];
                        let mut outside = false;
                        for ((a, &v), &f) in acc.iter_mut().zip(row).zip(&floor) {
                            let fits = within(v, f);
                            *a += if fits { v as f64 } else { 0.0 };
                            outside |= !fits;
                        }
                        if outside {
                            for ((s, &v), &f) in sums.iter_mut().zip(row).zip(&floor) {
                                if !within(v, f) {
                                    s.add(v as f64);
                                }
                            }
                        }
                        self.inertia.add(dists[r as usize] as f64);
                    }
                    for (s, &a) in sums.iter_mut().zip(&acc) {
                        s.add(a);
                    }
                    self.weights[l].add(run.len() as f64);
                }
                Some(w) => {
                    for &r in run {
                        let r = r as usize;
                        let wr = w[r] as f64;
                        // Products of two f32 are exact in f64.
                        for (s, &v) in sums.iter_mut().zip(&x[r * dim..(r + 1) * dim]) {
                            s.add(wr * v as f64);
                        }
                        self.weights[l].add(wr);
                        self.inertia.add(wr * dists[r] as f64);
                    }
                }
            }
            self.counts[l] += run.len() as u64;
        }
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
        let parts: Vec<Stats> = rows
            .blocks(CHUNK_ROWS)
            .into_par_iter()
            .map(|blk| {
                let mut s = Stats::new(dim);
                let (x, w) = rows.block_view(&blk);
                s.rows = blk.len as u64;
                let Some(w) = w else {
                    // Every weight is 1: the weighted sums are the plain ones.
                    s.weight.add(blk.len as f64);
                    s.add_unweighted(x);
                    s.wx = s.x.clone();
                    s.wx2 = s.x2.clone();
                    return s;
                };
                for &w in w {
                    s.weight.add(w as f64);
                }
                // A feature at a time over a few rows: that feature's sums stay in cache.
                for lo in (0..blk.len).step_by(STATS_ROWS) {
                    let hi = (lo + STATS_ROWS).min(blk.len);
                    for j in 0..dim {
                        for r in lo..hi {
                            let v = x[r * dim + j];
                            let x = v as f64;
                            let x2 = x * x;
                            s.x[j].add(x);
                            s.x2[j].add(x2);
                            // x² is exact; w·x² is split into its rounded value and the error.
                            let w = w[r] as f64;
                            let wx2 = w * x2;
                            s.wx[j].add(w * x);
                            s.wx2[j].add(wx2);
                            s.wx2[j].add(w.mul_add(x2, -wx2));
                            s.lo[j] = s.lo[j].min(v);
                            s.hi[j] = s.hi[j].max(v);
                        }
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

    /// Σx, Σx² and the ranges of one block of unweighted rows. A value at or above its
    /// feature's [`exact_floor`] 2^(E-16) is m · 2^(E-39) with an integer |m| < 2^39, so over
    /// at most 2^14 rows Σm fits an `i64` and Σm² a `u128`: integer adds instead of an
    /// [`ExactSum`] add per value. The rest (rare) go to the exact sums directly.
    fn add_unweighted(&mut self, x: &[f32]) {
        let dim = self.dim;
        let gate = exact_floor(x, dim);
        let unit: Vec<f64> = gate
            .iter()
            .map(|&f| f as f64 / (1u64 << 23) as f64)
            .collect();
        let inv: Vec<f64> = unit.iter().map(|&u| 1.0 / u).collect();
        let (mut sm, mut sq) = (vec![0i64; dim], vec![0u128; dim]);
        for row in x.chunks_exact(dim) {
            let mut outside = false;
            for j in 0..dim {
                let v = row[j];
                let fits = within(v, gate[j]);
                let m = if fits { (v as f64 * inv[j]) as i64 } else { 0 };
                sm[j] += m;
                sq[j] += (m as i128 * m as i128) as u128;
                self.lo[j] = self.lo[j].min(v);
                self.hi[j] = self.hi[j].max(v);
                outside |= !fits;
            }
            if outside {
                for (j, &v) in row.iter().enumerate() {
                    if !within(v, gate[j]) {
                        self.x[j].add(v as f64);
                        self.x2[j].add(v as f64 * v as f64);
                    }
                }
            }
        }
        for j in 0..dim {
            // |Σm| < 2^53 and each 32-bit piece of Σm² are exact in f64, and so are their
            // products with powers of two.
            self.x[j].add(sm[j] as f64 * unit[j]);
            let u2 = unit[j] * unit[j];
            let pieces = [
                sq[j] as u32 as u64,
                (sq[j] >> 32) as u32 as u64,
                (sq[j] >> 64) as u64,
            ];
            for (piece, at) in
                pieces
                    .into_iter()
                    .zip([1.0, 4_294_967_296.0, 1.844_674_407_370_955_2e19])
            {
                self.x2[j].add(piece as f64 * u2 * at);
            }
        }
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
    let dim = rows.dim();
    let mut all = Vec::new();
    for b in rows.batches() {
        let mut keys = vec![0u64; b.values.len() / dim.max(1)];
        super::parallel::row_keys(&b.values, dim, &mut keys);
        all.extend(smallest_in(
            &keys,
            &b.values,
            b.weights.as_deref(),
            dim,
            m,
            seed,
        ));
    }
    smallest(all, m)
}

/// [`smallest_keys`] of the rows `values` (row-major) with their value keys `keys` and
/// weights.
pub fn smallest_in(
    keys: &[u64],
    values: &[f32],
    weights: Option<&[f32]>,
    dim: usize,
    m: usize,
    seed: u64,
) -> Vec<Keyed> {
    // A round no k-means|| run reaches, so these keys are not its draws.
    let key = super::round_key(seed, 1 << 20);
    let row = |i: usize| &values[i * dim..(i + 1) * dim];
    let order = |a: &(u64, usize), b: &(u64, usize)| {
        a.0.cmp(&b.0)
            .then_with(|| bits(row(a.1)).cmp(&bits(row(b.1))))
    };
    // Only the m smallest are kept, chunk by chunk: a partition holds millions of rows, m is
    // about k.
    let keep = |mut v: Vec<(u64, usize)>| {
        if v.len() > m {
            v.select_nth_unstable_by(m, order);
            v.truncate(m);
        }
        v
    };
    if m == 0 {
        return Vec::new();
    }
    // Each chunk keeps a running cut: once it holds 2m rows it keeps the m smallest, and a
    // row whose key is above the largest of them can never be among the m smallest, so most
    // rows cost one compare.
    let chunks: Vec<Vec<(u64, usize)>> = (0..keys.len().div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .map(|c| {
            let lo = c * CHUNK_ROWS;
            let mut v = Vec::with_capacity(2 * m);
            let mut cut = u64::MAX;
            for i in lo..(lo + CHUNK_ROWS).min(keys.len()) {
                let k = keys[i] ^ key;
                if k > cut || !weights.is_none_or(|w| w[i] > 0.0) {
                    continue;
                }
                v.push((k, i));
                if v.len() == 2 * m {
                    v = keep(v);
                    cut = v.iter().map(|e| e.0).max().unwrap_or(u64::MAX);
                }
            }
            keep(v)
        })
        .collect();
    let mut all = keep(chunks.concat());
    all.sort_by(order);
    all.into_iter().map(|(k, i)| (k, row(i).to_vec())).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The `m` smallest of keyed rows, ties broken by the values' bits.
pub fn smallest(mut all: Vec<Keyed>, m: usize) -> Vec<Keyed> {
    sort_keyed(&mut all);
    all.truncate(m);
    all
}

/// Sorts keyed rows into the one order every split agrees on.
pub fn sort_keyed(all: &mut [Keyed]) {
    all.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| bits(&a.1).cmp(&bits(&b.1))));
}

/// A row that a k-means|| round may draw: its value key ([`super::row_key`]), weight,
/// squared distance to the nearest candidate so far, and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Drawn {
    pub key: u64,
    pub weight: f32,
    pub d2: f32,
    pub row: Vec<f32>,
}

/// One partition's share of a k-means|| round, so that a round is one pass: its part of the
/// potential φ = Σ w·D², and the rows the round could draw. A row is drawn with probability
/// `l · w · D² / φ` for the whole table's φ, unknown until every share is in; the partition's
/// own φₚ ≤ φ gives a larger probability, so the rows it keeps (about `l` of them) are a
/// superset of its real draws, which [`merge_round`] picks out.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundShare {
    phi: ExactSum,
    drawn: Vec<Drawn>,
}

impl RoundShare {
    /// A share from its part of φ and the rows it may draw.
    pub fn new(phi: ExactSum, drawn: Vec<Drawn>) -> Self {
        RoundShare { phi, drawn }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.phi.write(&mut out);
        out.extend_from_slice(&(self.drawn.len() as u64).to_le_bytes());
        for d in &self.drawn {
            out.extend_from_slice(&d.key.to_le_bytes());
            out.extend_from_slice(&d.weight.to_le_bytes());
            out.extend_from_slice(&d.d2.to_le_bytes());
            out.extend(d.row.iter().flat_map(|x| x.to_le_bytes()));
        }
        out
    }

    pub fn from_bytes(mut b: &[u8], dim: usize) -> Result<Self> {
        let phi = ExactSum::read(&mut b)?;
        let n = take_u64(&mut b)? as usize;
        let size = 16 + 4 * dim;
        if n.checked_mul(size) != Some(b.len()) {
            return Err(corrupt());
        }
        let drawn = b
            .chunks_exact(size)
            .map(|c| {
                let f = |at: usize| f32::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]]);
                let mut key = [0u8; 8];
                key.copy_from_slice(&c[..8]);
                Drawn {
                    key: u64::from_le_bytes(key),
                    weight: f(8),
                    d2: f(12),
                    row: (16..size).step_by(4).map(f).collect(),
                }
            })
            .collect();
        Ok(RoundShare { phi, drawn })
    }
}

/// A partition's k-means|| state, rebuilt for a pass: from the file at `state` when it
/// accounts for every batch but the newest, or else by lowering those batches in order, as
/// the passes before did, which gives the same bits. Returns it with the newest batch.
fn near_for<'a, 'b>(
    rows: &'a Dataset,
    state: &Path,
    batches: &'b [Vec<f32>],
) -> Result<(Near<'a>, &'b [f32])> {
    let Some((new, before)) = batches.split_last() else {
        return Err(Error::Internal(
            "a k-means|| pass with no candidates".into(),
        ));
    };
    let dim = rows.dim().max(1);
    let seen = before.iter().map(|b| b.len() / dim).sum();
    // The rows' keys, hashed again every pass: a state whose keys differ was left by other
    // rows (a partition that Spark computed differently when it ran the pass again).
    let mut near = Near::keyed(rows)?;
    // The state only saves work: one that cannot be read is rebuilt.
    let kept = std::fs::read(state).is_ok_and(|b| near.take_state(&b, seen));
    if !kept {
        for b in before {
            near.lower(b)?;
        }
    }
    Ok((near, new))
}

/// One partition's share of a k-means|| round keyed by `round_key` that draws `l` rows in
/// expectation. `batches` are the candidates of every round so far, the newest last; only
/// the newest are measured, as the rows' nearest candidates so far are kept in the file at
/// `state` between passes (as the engine keeps them in memory), so a partition runs the
/// engine's k-means|| exactly.
pub fn round_share(
    rows: &Dataset,
    state: &Path,
    batches: &[Vec<f32>],
    l: f64,
    round_key: u64,
) -> Result<RoundShare> {
    let (mut near, new) = near_for(rows, state, batches)?;
    let share = near.round(new, l, round_key)?.pop();
    // A state that cannot be written (a full disk) only costs the next pass a replay: the
    // old file, if any, accounts for fewer candidates and is not taken.
    let _ = write_atomically(state, |f| f.write_all(&near.state_bytes()));
    Ok(share.unwrap_or_else(|| RoundShare::new(ExactSum::default(), Vec::new())))
}

/// One partition's weight of the rows nearest to each candidate of `batches` (all rounds'
/// candidates, the newest last), exact so that partitions add up to the table: k-means||'s
/// last pass, which removes the state file.
pub fn weight_share(rows: &Dataset, state: &Path, batches: &[Vec<f32>]) -> Result<Vec<u8>> {
    let (mut near, new) = near_for(rows, state, batches)?;
    let sums = near.weight_sums(new)?;
    let _ = std::fs::remove_file(state);
    let mut out = (sums.len() as u64).to_le_bytes().to_vec();
    sums.iter().for_each(|s| s.write(&mut out));
    Ok(out)
}

/// Adds up partitions' [`weight_share`]s, in any order, to each candidate's weight.
pub fn merge_weight_shares(parts: &[Vec<u8>]) -> Result<Vec<f64>> {
    let mut all: Vec<ExactSum> = Vec::new();
    for p in parts {
        let mut b: &[u8] = p;
        let m = take_u64(&mut b)? as usize;
        // Every partition weighs the same candidates.
        if m > b.len() || (!all.is_empty() && m != all.len()) {
            return Err(corrupt());
        }
        all.resize(m, ExactSum::default());
        for s in all.iter_mut().take(m) {
            s.merge(&ExactSum::read(&mut b)?);
        }
    }
    Ok(all.iter().map(ExactSum::value).collect())
}

/// A round's result from every partition's share, in any order: the table's φ and the rows
/// drawn, in the one order all splits agree on.
pub fn merge_round(shares: &[RoundShare], l: f64, round_key: u64) -> (f64, Vec<Keyed>) {
    let mut phi = ExactSum::default();
    shares.iter().for_each(|s| phi.merge(&s.phi));
    let phi = phi.value();
    if phi <= 0.0 {
        return (phi, Vec::new());
    }
    let scale = l / phi;
    let mut all: Vec<Keyed> = shares
        .iter()
        .flat_map(|s| &s.drawn)
        .filter(|d| super::parallel::draws(scale, d.weight, d.d2, round_key, d.key))
        .map(|d| (d.key, d.row.clone()))
        .collect();
    sort_keyed(&mut all);
    (phi, all)
}

/// The last step of a distributed k-means||: the candidates (row-major), each weighted by the
/// rows nearest to it (`weights`), reduced to `k` centres by [`super::reduce_candidates`].
/// When `k` or fewer carry weight, they are kept and topped up with `spare` rows (the ones
/// with the smallest seeded keys, [`smallest_keys`]) that are not among them yet.
pub fn finish_parallel(
    cands: &[f32],
    weights: &[f64],
    spare: &[f32],
    k: usize,
    seed: u64,
) -> Result<Vec<f32>> {
    let mut rng = crate::rng::Rng::derive(seed, 0);
    if let Some(c) = super::reduce_candidates(cands, weights, k, &mut rng)? {
        return Ok(c);
    }
    let dim = cands.len() / weights.len().max(1);
    let mut out: Vec<&[f32]> = cands
        .chunks_exact(dim)
        .zip(weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(c, _)| c)
        .collect();
    for row in spare.chunks_exact(dim) {
        if out.len() == k {
            break;
        }
        if !out.iter().any(|c| bits(c) == bits(row)) {
            out.push(row);
        }
    }
    if out.len() < k {
        return Err(Error::Usage(format!(
            "the table has fewer than k = {k} distinct rows"
        )));
    }
    Ok(out.concat())
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

/// The head of a row cache file: its format, then dim, rows and whether rows are weighted.
const CACHE_MAGIC: &[u8; 8] = b"lkmrows1";

/// Writes a partition's rows where the next passes of the same fit on this host find them,
/// so that they do not come through Spark again. The file is the slabs' memory as it is
/// (native byte order: only this host reads it), written under a temporary name and renamed,
/// so a reader never sees half a file.
pub fn save_rows(rows: &Dataset, path: &Path) -> Result<()> {
    write_atomically(path, |f| {
        f.write_all(CACHE_MAGIC)?;
        f.write_all(&(rows.dim() as u64).to_ne_bytes())?;
        f.write_all(&(rows.rows() as u64).to_ne_bytes())?;
        f.write_all(&[rows.is_weighted() as u8])?;
        for b in rows.batches() {
            f.write_all(bytemuck::cast_slice(&b.values))?;
            if let Some(w) = &b.weights {
                f.write_all(bytemuck::cast_slice(w))?;
            }
        }
        Ok(())
    })
}

/// Writes the file at `path` whole or not at all: into a temporary file beside it, renamed
/// over it, so another task never reads half of it.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let run = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut f)?;
        f.flush()?;
        drop(f);
        std::fs::rename(&tmp, path)
    };
    run().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::output(path, e)
    })
}

/// Reads what [`save_rows`] wrote; `None` when there is no such file (another host, or a
/// worker that has not seen the partition), so the caller falls back to Spark's rows.
pub fn load_rows(path: &Path) -> Result<Option<Dataset>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::input(path, e)),
    };
    let bad = |e: std::io::Error| Error::input(path, format!("unreadable row cache ({e})"));
    let mut head = [0u8; 25];
    f.read_exact(&mut head).map_err(bad)?;
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&head[at..at + 8]);
        u64::from_ne_bytes(w) as usize
    };
    let (dim, n, weighted) = (word(8), word(16), head[24] == 1);
    if &head[..8] != CACHE_MAGIC || dim == 0 {
        return Err(Error::input(path, "not a row cache"));
    }
    let mut slabs = Vec::with_capacity(n.div_ceil(SLAB_ROWS));
    for lo in (0..n).step_by(SLAB_ROWS) {
        let rows = (n - lo).min(SLAB_ROWS);
        let mut values = vec![0f32; rows * dim];
        f.read_exact(bytemuck::cast_slice_mut(&mut values))
            .map_err(bad)?;
        let weights = if weighted {
            let mut w = vec![0f32; rows];
            f.read_exact(bytemuck::cast_slice_mut(&mut w))
                .map_err(bad)?;
            Some(w)
        } else {
            None
        };
        slabs.push(Batch { values, weights });
    }
    Ok(Some(Dataset::from_slabs(dim, slabs)))
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

    /// Unweighted rows take the f64 run sums; values spread over 60 binary orders of
    /// magnitude, with zeros, push some of them down to the exact sums directly. Both must
    /// add up to the plain exact sum of every value.
    #[test]
    fn unweighted_run_sums_are_the_exact_sums() {
        let (n, dim, k) = (40_000, 6, 5);
        let mut rng = crate::rng::Rng::derive(9, 1);
        let v: Vec<f32> = (0..n * dim)
            .map(|i| match i % 7 {
                0 => 0.0,
                1 => ((rng.uniform() - 0.5) * (rng.uniform() * 60.0 - 30.0).exp2()) as f32,
                _ => (rng.uniform() * 20.0 - 10.0) as f32,
            })
            .collect();
        let d = Dataset::from_rows(dim, v, None);
        let c: Vec<f32> = (0..k).flat_map(|i| d.row(i * 7).to_vec()).collect();
        let got = Partials::of(&d, &c, k, DeviceChoice::Cpu).unwrap();
        let (labels, dists) = assign(&d, &c, k, DeviceChoice::Cpu).unwrap();
        let mut want = Partials::new(k, dim);
        for i in 0..n {
            let l = labels[i] as usize;
            for (s, &x) in want.sums[l * dim..(l + 1) * dim].iter_mut().zip(d.row(i)) {
                s.add(x as f64);
            }
            want.weights[l].add(1.0);
            want.counts[l] += 1;
            want.inertia.add(dists[i] as f64);
        }
        assert_eq!(got, want);
        let mut halves = Partials::of(&split(&d, &[n / 3])[1], &c, k, DeviceChoice::Cpu).unwrap();
        halves
            .merge(&Partials::of(&split(&d, &[n / 3])[0], &c, k, DeviceChoice::Cpu).unwrap())
            .unwrap();
        assert_eq!(halves.step(), want.step());
    }

    /// Unweighted statistics take integer sums; the same rows with every weight 1 take the
    /// exact sums value by value. Values over 60 binary orders of magnitude, zeros and
    /// subnormals put some through each path.
    #[test]
    fn unweighted_statistics_are_the_exact_ones() {
        let (n, dim) = (40_000, 5);
        let mut rng = crate::rng::Rng::derive(11, 1);
        let v: Vec<f32> = (0..n * dim)
            .map(|i| match (i % 5, i % 11) {
                (4, _) => 1e-41 * (i % 3) as f32,
                (_, 0) => 0.0,
                (_, 1) => ((rng.uniform() - 0.5) * (rng.uniform() * 60.0 - 30.0).exp2()) as f32,
                _ => (rng.uniform() * 2e6 - 1e6) as f32,
            })
            .collect();
        let plain = Dataset::from_rows(dim, v.clone(), None);
        let ones = Dataset::from_rows(dim, v, Some(vec![1.0; n]));
        assert_eq!(Stats::of(&plain), Stats::of(&ones));
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

    #[test]
    fn the_smallest_keys_are_those_of_a_full_sort() {
        // More rows than one chunk, some with zero weight, and repeated rows (equal keys).
        let (n, dim) = (40_000, 3);
        let mut rng = crate::rng::Rng::derive(9, 1);
        let mut v: Vec<f32> = (0..n * dim)
            .map(|_| (rng.uniform() * 4.0).floor() as f32)
            .collect();
        v[..dim].fill(1.0);
        let w: Vec<f32> = (0..n).map(|i| if i % 7 == 0 { 0.0 } else { 1.0 }).collect();
        let mut keys = vec![0u64; n];
        super::super::parallel::row_keys(&v, dim, &mut keys);
        let key = super::super::round_key(5, 1 << 20);
        for m in [0, 1, 5, 64, 200] {
            let got = smallest_in(&keys, &v, Some(&w), dim, m, 5);
            let mut all: Vec<Keyed> = (0..n)
                .filter(|&i| w[i] > 0.0)
                .map(|i| (keys[i] ^ key, v[i * dim..(i + 1) * dim].to_vec()))
                .collect();
            sort_keyed(&mut all);
            all.truncate(m);
            assert_eq!(got, all, "m = {m}");
        }
    }

    /// A state file left by other rows of the same count (a partition Spark computed
    /// differently when it ran a pass again) is not taken: the share is what the rows give
    /// with no state at all.
    #[test]
    fn a_state_left_by_other_rows_is_not_taken() {
        let (a, b) = (rows(5_000, 3, 21), rows(5_000, 3, 22));
        let dir = tempfile::tempdir().unwrap();
        let (state, clean) = (dir.path().join("a.near"), dir.path().join("b.near"));
        let first: Vec<f32> = a.row(0).to_vec();
        let second: Vec<f32> = (1..9).flat_map(|i| a.row(i * 500).to_vec()).collect();
        let key = super::super::round_key(3, 0);
        round_share(&a, &state, std::slice::from_ref(&first), 20.0, key).unwrap();
        let batches = [first, second];
        let key = super::super::round_key(3, 1);
        let got = round_share(&b, &state, &batches, 20.0, key).unwrap();
        let want = round_share(&b, &clean, &batches, 20.0, key).unwrap();
        assert_eq!(got, want);
        assert!(!want.drawn.is_empty());
    }

    #[test]
    fn rows_saved_for_later_passes_load_back_the_same() {
        let d = rows(70_000, 3, 6);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-0.rows");
        assert!(load_rows(&path).unwrap().is_none());
        save_rows(&d, &path).unwrap();
        let back = load_rows(&path).unwrap().unwrap();
        assert_eq!((back.rows(), back.dim()), (d.rows(), d.dim()));
        for i in [0, 65_535, 65_536, 69_999] {
            assert_eq!(back.row(i), d.row(i));
            assert_eq!(back.weight(i), d.weight(i));
        }
        std::fs::write(&path, b"not rows").unwrap();
        assert!(load_rows(&path).is_err());
    }

    #[test]
    fn too_few_weighted_candidates_are_topped_up_with_distinct_spare_rows() {
        let cands = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0];
        let spare = [1.0, 1.0, 5.0, 5.0, 6.0, 6.0];
        let c = finish_parallel(&cands, &[3.0, 0.0, 2.0], &spare, 4, 1).unwrap();
        assert_eq!(c, vec![0.0, 0.0, 2.0, 2.0, 1.0, 1.0, 5.0, 5.0]);
        assert!(finish_parallel(&cands, &[3.0, 0.0, 2.0], &spare[..2], 4, 1).is_err());
    }
}
