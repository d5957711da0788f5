//! k-means|| (scalable k-means++, Bahmani, Moseley, Vattani, Kumar and Vassilvitskii 2012), as
//! Spark MLlib and cuML run it, in one loop ([`kmeans_parallel_with`]) that every engine drives:
//!
//! 1. the first centre is the row with positive weight that has the smallest seeded key;
//! 2. `rounds` times: every row joins the candidates independently with probability
//!    `min(1, l · w · D² / φ)`, where `D²` is its squared distance to the nearest candidate so
//!    far, `φ = Σ w · D²` and `l = oversampling · k`;
//! 3. each candidate is weighted by the total weight of the rows nearest to it, and weighted
//!    greedy k-means++ reduces the candidates to `k` centres; when `k` or fewer carry weight,
//!    they are topped up with the rows of smallest seeded keys.
//!
//! The loop only decides; the passes over the rows are a [`ParallelPasses`]: the engine's
//! ([`kmeans_parallel`]) keeps per-row state across rounds, Spark's runs a job per pass over
//! the partitions. Every draw is keyed by seed, round and the row's values ([`row_key`]),
//! and every sum is exact, so the centres depend on neither the thread count, nor the
//! device, nor where the rows live, nor how they are split.

use rayon::prelude::*;

use super::distributed::{self, Drawn, RoundShare};
use super::init::kmeans_plus_plus;
use crate::backend::cpu::{CpuBackend, Pass};
use crate::data::{Dataset, Rows, slab_blocks};
use crate::error::{Error, Result};
use crate::exact::ExactSum;
use crate::rng::Rng;

/// Rows per block of the distance passes and reductions.
const BLOCK_ROWS: usize = 4096;

/// The passes over the rows that k-means|| makes. [`kmeans_parallel_with`] makes every decision from what
/// they return, so every engine runs the same k-means||.
pub trait ParallelPasses {
    /// The `m` rows with positive weight that have the smallest seeded keys
    /// ([`distributed::smallest_keys`] under `seed`), row-major, in key order: the first
    /// centre and the top-up.
    fn spare(&mut self, m: usize, seed: u64) -> Result<Vec<f32>>;
    /// Lowers every row's D² with the candidates `new` (added after the earlier ones) and
    /// returns the shares of the round keyed by `round_key` that draws `l` rows in
    /// expectation: one for the whole table, or one per part of it.
    fn round(&mut self, new: &[f32], l: f64, round_key: u64) -> Result<Vec<RoundShare>>;
    /// Per candidate of `cands` (all of them, row-major), the total weight of the rows
    /// nearest to it.
    fn weights(&mut self, cands: &[f32]) -> Result<Vec<f64>>;
}

/// `k` centres by k-means|| over the rows behind `passes` (`dim` features), every draw
/// keyed by `seed`.
pub fn kmeans_parallel_with(
    passes: &mut dyn ParallelPasses,
    dim: usize,
    k: usize,
    rounds: usize,
    oversampling: f64,
    seed: u64,
) -> Result<Vec<f32>> {
    let spare = passes.spare(k, seed)?;
    let Some(first) = spare.get(..dim) else {
        return Err(Error::Usage(
            "k-means|| needs a row with positive weight".into(),
        ));
    };
    let mut cands = first.to_vec();
    let mut new = cands.clone();
    let l = oversampling * k as f64;
    for round in 0..rounds {
        let key = round_key(seed, round);
        let (phi, drawn) = distributed::merge_round(&passes.round(&new, l, key)?, l, key);
        if phi <= 0.0 {
            break;
        }
        new = drawn.into_iter().flat_map(|(_, v)| v).collect();
        cands.extend_from_slice(&new);
    }
    let weights = passes.weights(&cands)?;
    distributed::finish_parallel(&cands, &weights, &spare, k, seed)
}

/// The seed of the k-means|| draws of a fit seeded with `seed`: what [`kmeans_parallel`]
/// takes from the first run's generator, so a driver of its own (Spark's) picks the
/// same centres as the command line for the same `--seed`.
pub fn parallel_seed(seed: u64) -> u64 {
    Rng::derive(seed, 0).next_u64()
}

/// `k` initial centroids by k-means|| over `data`, in memory or streamed.
pub fn kmeans_parallel(
    data: &dyn Rows,
    k: usize,
    rounds: usize,
    oversampling: f64,
    rng: &mut Rng,
) -> Result<Vec<f32>> {
    kmeans_parallel_with(
        &mut Near::new(data),
        data.dim(),
        k,
        rounds,
        oversampling,
        rng.next_u64(),
    )
}

/// The engine's passes: per-row state kept between rounds, so a round scans the rows once
/// against its new candidates only, and draws need no scan at all.
pub(super) struct Near<'a> {
    data: &'a dyn Rows,
    /// Squared distance to the nearest candidate.
    d2: Vec<f32>,
    /// Index of that candidate.
    idx: Vec<u32>,
    /// Row weights (empty when unweighted).
    w: Vec<f32>,
    /// Row value keys ([`row_key`]), hashed in the first pass (on Spark, in every pass).
    key: Vec<u64>,
    /// Candidates the distances account for.
    seen: usize,
}

impl ParallelPasses for Near<'_> {
    fn spare(&mut self, m: usize, seed: u64) -> Result<Vec<f32>> {
        let dim = self.data.dim();
        let mut all = Vec::new();
        let (key, w) = (&mut self.key, &mut self.w);
        self.data.scan(&mut |start, slab| {
            let keys = Self::take(key, w, dim, start, slab);
            let weights = slab.weights.as_deref();
            all.extend(distributed::smallest_in(
                keys,
                &slab.values,
                weights,
                dim,
                m,
                seed,
            ));
            Ok(())
        })?;
        Ok(distributed::smallest(all, m)
            .into_iter()
            .flat_map(|(_, v)| v)
            .collect())
    }

    fn round(&mut self, new: &[f32], l: f64, round_key: u64) -> Result<Vec<RoundShare>> {
        let phi = self.lower(new)?;
        let total = phi.value();
        let mut drawn = Vec::new();
        if total > 0.0 {
            let picked = self.sample(l / total, round_key);
            let rows = self.data.gather(&picked)?;
            drawn = picked
                .iter()
                .zip(rows)
                .map(|(&i, (row, weight))| Drawn {
                    key: self.key[i],
                    weight,
                    d2: self.d2[i],
                    row,
                })
                .collect();
        }
        Ok(vec![RoundShare::new(phi, drawn)])
    }

    fn weights(&mut self, cands: &[f32]) -> Result<Vec<f64>> {
        let dim = self.data.dim();
        let sums = self.weight_sums(&cands[self.seen * dim..])?;
        Ok(sums.iter().map(ExactSum::value).collect())
    }
}

impl<'a> Near<'a> {
    /// No candidate yet: every row infinitely far. Keys and weights are filled by the first
    /// pass ([`ParallelPasses::spare`] or [`Near::keyed`]).
    fn new(data: &'a dyn Rows) -> Self {
        let n = data.rows();
        Near {
            data,
            d2: vec![f32::INFINITY; n],
            idx: vec![0; n],
            w: if data.is_weighted() {
                vec![0.0; n]
            } else {
                Vec::new()
            },
            key: vec![0; n],
            seen: 0,
        }
    }

    /// The state of rows that no pass has seen yet, their keys and weights taken: a Spark
    /// partition's, whose first centre came from elsewhere.
    pub(super) fn keyed(data: &'a Dataset) -> Result<Self> {
        let dim = data.dim();
        let mut near = Near::new(data);
        let (key, w) = (&mut near.key, &mut near.w);
        data.scan(&mut |start, slab| {
            Self::take(key, w, dim, start, slab);
            Ok(())
        })?;
        Ok(near)
    }

    /// Keeps the keys and weights of the slab of rows from `start`; returns its keys.
    fn take<'k>(
        key: &'k mut [u64],
        w: &mut [f32],
        dim: usize,
        start: usize,
        slab: &crate::data::Batch,
    ) -> &'k [u64] {
        let rows = slab.rows(dim);
        let keys = &mut key[start..start + rows];
        row_keys(&slab.values, dim, keys);
        if let Some(sw) = &slab.weights {
            w[start..start + rows].copy_from_slice(sw);
        }
        keys
    }

    /// Per candidate seen, the weight of the rows nearest to it, after lowering with `new`:
    /// exact, so partitions' shares add up to the table's.
    pub(super) fn weight_sums(&mut self, new: &[f32]) -> Result<Vec<ExactSum>> {
        self.lower(new)?;
        if self.w.is_empty() {
            let mut counts = vec![0u64; self.seen];
            self.idx.iter().for_each(|&c| counts[c as usize] += 1);
            return Ok(counts
                .into_iter()
                .map(|c| {
                    let mut s = ExactSum::default();
                    s.add(c as f64);
                    s
                })
                .collect());
        }
        let mut sums = vec![ExactSum::default(); self.seen];
        for (&c, &w) in self.idx.iter().zip(&self.w) {
            sums[c as usize].add(w as f64);
        }
        Ok(sums)
    }

    /// One number for the rows' keys in order: whether a state is that of these rows.
    fn keys_digest(&self) -> u64 {
        self.key.iter().fold(0, |h, &k| splitmix(h ^ k))
    }

    /// The per-row state as bytes (distances and nearest candidates, after the row count, the
    /// candidates seen and the keys' digest), for a partition's next pass.
    pub(super) fn state_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + 8 * self.d2.len());
        out.extend_from_slice(&(self.d2.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.seen as u64).to_le_bytes());
        out.extend_from_slice(&self.keys_digest().to_le_bytes());
        out.extend_from_slice(bytemuck::cast_slice(&self.d2));
        out.extend_from_slice(bytemuck::cast_slice(&self.idx));
        out
    }

    /// Takes the distances and nearest candidates of the state [`Near::state_bytes`] wrote,
    /// if it is that of these rows (the same keys in the same order) after `seen`
    /// candidates; says whether it did. `self` must be fresh from [`Near::keyed`].
    pub(super) fn take_state(&mut self, b: &[u8], seen: usize) -> bool {
        let n = self.d2.len();
        let head = |i: usize| -> Option<u64> {
            let w: [u8; 8] = b.get(8 * i..8 * i + 8)?.try_into().ok()?;
            Some(u64::from_le_bytes(w))
        };
        if head(0) != Some(n as u64)
            || head(1) != Some(seen as u64)
            || head(2) != Some(self.keys_digest())
            || b.len() != 24 + 8 * n
        {
            return false;
        }
        let body = &b[24..];
        let mut idx = vec![0u32; n];
        bytemuck::cast_slice_mut(&mut idx).copy_from_slice(&body[4 * n..]);
        if idx.iter().any(|&c| c as usize >= seen) {
            return false;
        }
        self.idx = idx;
        bytemuck::cast_slice_mut(&mut self.d2).copy_from_slice(&body[..4 * n]);
        self.seen = seen;
        true
    }

    /// One pass: lowers every row's distance with the candidates `new`, numbered after those
    /// seen, and returns the new potential φ.
    pub(super) fn lower(&mut self, new: &[f32]) -> Result<ExactSum> {
        let dim = self.data.dim();
        let m = new.len() / dim;
        let base = self.seen as u32;
        self.seen += m;
        let mut phi = ExactSum::default();
        if m == 0 {
            for (i, &d) in self.d2.iter().enumerate() {
                phi.add(self.w.get(i).map_or(1.0, |&w| w as f64) * d as f64);
            }
            return Ok(phi);
        }
        let pass = Pass::new(new, m, dim, true, false);
        let (near_d2, near_idx) = (&mut self.d2, &mut self.idx);
        self.data.scan(&mut |start, slab| {
            let rows = slab.rows(dim);
            let blocks = slab_blocks(start, rows, BLOCK_ROWS);
            let d2 = &mut near_d2[start..start + rows];
            let idx = &mut near_idx[start..start + rows];
            let mut parts: Vec<(&mut [f32], &mut [u32])> = d2
                .chunks_mut(BLOCK_ROWS)
                .zip(idx.chunks_mut(BLOCK_ROWS))
                .collect();
            let sums: Vec<ExactSum> = parts
                .par_iter_mut()
                .zip(&blocks)
                .map(|((d2, idx), blk)| {
                    let x = &slab.values[blk.start * dim..(blk.start + blk.len) * dim];
                    let mut lab = vec![0u32; blk.len];
                    let mut dist = vec![0f32; blk.len];
                    pass.block(x, None, &mut lab, &mut dist);
                    let mut s = ExactSum::default();
                    for r in 0..blk.len {
                        if dist[r] < d2[r] {
                            d2[r] = dist[r];
                            idx[r] = base + lab[r];
                        }
                        let w = slab
                            .weights
                            .as_ref()
                            .map_or(1.0, |w| w[blk.start + r] as f64);
                        s.add(w * d2[r] as f64);
                    }
                    s
                })
                .collect();
            sums.iter().for_each(|s| phi.merge(s));
            Ok(())
        })?;
        Ok(phi)
    }

    /// Rows drawn with probability `min(1, scale · w · D²)`, each by its own draw.
    fn sample(&self, scale: f64, round_key: u64) -> Vec<usize> {
        let n = self.d2.len();
        let chunks: Vec<Vec<usize>> = (0..n.div_ceil(BLOCK_ROWS))
            .into_par_iter()
            .map(|b| {
                let lo = b * BLOCK_ROWS;
                (lo..(lo + BLOCK_ROWS).min(n))
                    .filter(|&i| {
                        let w = self.w.get(i).copied().unwrap_or(1.0);
                        draws(scale, w, self.d2[i], round_key, self.key[i])
                    })
                    .collect()
            })
            .collect();
        chunks.concat()
    }
}

/// The last step of k-means||: candidates (row-major), each weighted by the rows nearest to
/// it, reduced to `k` centres by weighted greedy k-means++, always on the CPU so the centres
/// do not depend on the device. `None` when `k` or fewer candidates carry weight.
pub fn reduce_candidates(
    cands: &[f32],
    weight: &[f64],
    k: usize,
    rng: &mut Rng,
) -> Result<Option<Vec<f32>>> {
    let dim = cands.len() / weight.len().max(1);
    let live: Vec<usize> = (0..weight.len()).filter(|&c| weight[c] > 0.0).collect();
    if live.len() <= k {
        return Ok(None);
    }
    let pool = Dataset::from_rows(
        dim,
        live.iter()
            .flat_map(|&c| cands[c * dim..(c + 1) * dim].iter().copied())
            .collect(),
        Some(live.iter().map(|&c| weight[c] as f32).collect()),
    );
    let mut cpu = CpuBackend::new(&pool);
    kmeans_plus_plus(&pool, &mut cpu, k, rng).map(Some)
}

/// Whether row `id` joins the candidates of the round keyed by `key`: with probability
/// `min(1, scale · w · D²)`, by its own counter-based draw. Rows are numbered by their values
/// ([`row_key`]), which any split of the rows agrees on.
pub fn draws(scale: f64, w: f32, d2: f32, key: u64, id: u64) -> bool {
    let p = scale * w as f64 * d2 as f64;
    p > 0.0 && uniform(key, id) < p
}

/// The key of sampling round `round` (0-based) under a run's `key`.
pub fn round_key(key: u64, round: usize) -> u64 {
    splitmix(key ^ (round as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03))
}

/// A key for a row from its values alone, for workers that do not know the row's index in
/// the table (Spark partitions): draws keyed by it do not depend on how rows are split.
/// Eight 32-bit lanes of one multiply a value (one vector instruction for eight values),
/// then a full mix: the engine hashes every row once, and this keeps that pass bound by
/// memory, not by the multiplier.
#[inline(always)]
pub fn row_key(row: &[f32]) -> u64 {
    const M: u32 = 0x9e37_79b1;
    let mut lanes: [u32; 8] = [
        0x6c61_6b65,
        0x6d65_616e,
        0x7320_726f,
        0x7720_6b65,
        0x7973_2020,
        0x6f6e_6520,
        0x6c6f_6f70,
        0x2121_2121,
    ];
    let step = |h: &mut u32, v: &f32| {
        let x = (*h ^ v.to_bits()).wrapping_mul(M);
        *h = x ^ (x >> 15);
    };
    let mut eights = row.chunks_exact(8);
    for e in &mut eights {
        lanes.iter_mut().zip(e).for_each(|(h, v)| step(h, v));
    }
    lanes
        .iter_mut()
        .zip(eights.remainder())
        .for_each(|(h, v)| step(h, v));
    lanes.chunks_exact(2).fold(row.len() as u64, |acc, p| {
        splitmix(acc ^ ((p[0] as u64) << 32 | p[1] as u64))
    })
}

/// [`row_key`] of every row of `values` (row-major) into `out`, in parallel. On AVX2 the
/// eight-lane multiply is one instruction; the baseline has no 32-bit lane multiply and
/// emulates it. The keys are the same integers either way.
pub fn row_keys(values: &[f32], dim: usize, out: &mut [u64]) {
    #[inline(always)]
    fn block(x: &[f32], dim: usize, out: &mut [u64]) {
        for (k, row) in out.iter_mut().zip(x.chunks_exact(dim)) {
            *k = row_key(row);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn block_avx2(x: &[f32], dim: usize, out: &mut [u64]) {
        block(x, dim, out)
    }
    let dim = dim.max(1);
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    out.par_chunks_mut(BLOCK_ROWS)
        .zip(values.par_chunks(BLOCK_ROWS * dim))
        .for_each(|(k, x)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 (checked above).
                return unsafe { block_avx2(x, dim, k) };
            }
            block(x, dim, k)
        });
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) for draw `i` under `key`.
pub fn uniform(key: u64, i: u64) -> f64 {
    (splitmix(key ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 11) as f64
        * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The passes as a Spark driver runs them: each partition keeps its rows' state in a
    /// file between passes, or loses it before every pass (`forget`), which makes it replay
    /// the earlier rounds' candidates.
    struct Split {
        parts: Vec<Dataset>,
        dir: tempfile::TempDir,
        batches: Vec<Vec<f32>>,
        forget: bool,
    }

    impl Split {
        fn state(&self, i: usize) -> std::path::PathBuf {
            let path = self.dir.path().join(format!("part-{i}.near"));
            if self.forget {
                let _ = std::fs::remove_file(&path);
            }
            path
        }
    }

    impl ParallelPasses for Split {
        fn spare(&mut self, m: usize, seed: u64) -> Result<Vec<f32>> {
            let all = self
                .parts
                .iter()
                .flat_map(|p| distributed::smallest_keys(p, m, seed))
                .collect();
            Ok(distributed::smallest(all, m)
                .into_iter()
                .flat_map(|(_, v)| v)
                .collect())
        }

        fn round(&mut self, new: &[f32], l: f64, key: u64) -> Result<Vec<RoundShare>> {
            self.batches.push(new.to_vec());
            // Partitions in reverse: the order they arrive in does not matter.
            (0..self.parts.len())
                .rev()
                .map(|i| {
                    let (p, state) = (&self.parts[i], self.state(i));
                    let s = distributed::round_share(p, &state, &self.batches, l, key)?;
                    RoundShare::from_bytes(&s.to_bytes(), p.dim())
                })
                .collect()
        }

        fn weights(&mut self, cands: &[f32]) -> Result<Vec<f64>> {
            let seen: usize = self.batches.iter().map(Vec::len).sum();
            self.batches.push(cands[seen..].to_vec());
            let shares: Result<Vec<Vec<u8>>> = (0..self.parts.len())
                .map(|i| distributed::weight_share(&self.parts[i], &self.state(i), &self.batches))
                .collect();
            distributed::merge_weight_shares(&shares?)
        }
    }

    fn table(n: usize, dim: usize, weighted: bool) -> Dataset {
        let mut rng = Rng::derive(7, 1);
        let v = (0..n * dim)
            .map(|i| ((i / dim) % 9) as f32 * 10.0 + rng.uniform() as f32)
            .collect();
        let w = weighted.then(|| (0..n).map(|i| (i % 4) as f32 * 0.5).collect());
        Dataset::from_rows(dim, v, w)
    }

    fn split(d: &Dataset, cuts: &[usize]) -> Vec<Dataset> {
        let mut lo = 0;
        cuts.iter()
            .chain([&d.rows()])
            .map(|&hi| {
                let v = (lo..hi).flat_map(|i| d.row(i).to_vec()).collect();
                let w = d
                    .is_weighted()
                    .then(|| (lo..hi).map(|i| d.weight(i)).collect());
                lo = hi;
                Dataset::from_rows(d.dim(), v, w)
            })
            .collect()
    }

    /// After lowering in batches, every row's distance and candidate are those of a
    /// brute-force f64 search over all candidates.
    #[test]
    fn lowering_in_batches_finds_every_rows_nearest_candidate() {
        let (n, dim) = (30_000, 5);
        let mut rng = Rng::derive(3, 1);
        let centres: Vec<f32> = (0..20 * dim)
            .map(|_| (rng.uniform() * 200.0 - 100.0) as f32)
            .collect();
        let v: Vec<f32> = (0..n * dim)
            .map(|i| {
                centres[((i / dim) * 7 % 20) * dim + i % dim] + (rng.uniform() * 4.0 - 2.0) as f32
            })
            .collect();
        let d = Dataset::from_rows(dim, v, None);
        let mut near = Near::new(&d);
        let mut cands = Vec::new();
        for (lo, hi) in [(0, 1), (1, 9), (9, 40), (40, 41), (41, 120)] {
            let batch: Vec<f32> = (lo..hi).flat_map(|i| d.row(i * 211 % n).to_vec()).collect();
            near.lower(&batch).unwrap();
            cands.extend(batch);
            for i in (0..n).step_by(7) {
                let dist = |c: usize| -> f64 {
                    d.row(i)
                        .iter()
                        .zip(&cands[c * dim..(c + 1) * dim])
                        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                        .sum()
                };
                let best = (0..hi).map(dist).fold(f64::INFINITY, f64::min);
                let (got, at) = (near.d2[i] as f64, near.idx[i] as usize);
                // The kernels pick by ‖c‖² − 2·x·c in f32, which can swap candidates whose
                // distances differ by less than its rounding, about u · (‖x‖² + ‖c‖²).
                let norm: f64 = d.row(i).iter().map(|&a| (a as f64).powi(2)).sum();
                let tol = 1e-5 * (2.0 * norm + best);
                assert!((got - best).abs() <= tol, "row {i}: {got} vs {best}");
                assert!((dist(at) - best).abs() <= tol, "row {i}: candidate {at}");
            }
        }
    }

    #[test]
    fn the_engine_and_a_split_table_pick_the_same_centres() {
        for weighted in [false, true] {
            let d = table(20_000, 3, weighted);
            for (k, seed) in [(9, 1), (20, 2), (4, 3)] {
                let whole = kmeans_parallel_with(&mut Near::new(&d), 3, k, 2, 2.0, seed).unwrap();
                assert_eq!(whole.len(), k * 3);
                for (cuts, forget) in [(vec![7], false), (vec![5_000, 5_001, 13_000], true)] {
                    let mut parts = Split {
                        parts: split(&d, &cuts),
                        dir: tempfile::tempdir().unwrap(),
                        batches: Vec::new(),
                        forget,
                    };
                    let got = kmeans_parallel_with(&mut parts, 3, k, 2, 2.0, seed).unwrap();
                    assert_eq!(got, whole, "k {k}, seed {seed}, weighted {weighted}");
                    // The last pass removed every state file.
                    let left = std::fs::read_dir(parts.dir.path()).unwrap().count();
                    assert_eq!(left, 0);
                }
            }
        }
    }
}
