//! k-means|| (scalable k-means++, Bahmani, Moseley, Vattani, Kumar and Vassilvitskii 2012), as
//! Spark MLlib and cuML run it:
//!
//! 1. one centre drawn with probability proportional to weight;
//! 2. `rounds` times: every row joins the candidates independently with probability
//!    `min(1, l · w · D² / φ)`, where `D²` is its squared distance to the nearest candidate so
//!    far, `φ = Σ w · D²` and `l = oversampling · k`; then one pass lowers every `D²` with the
//!    new candidates;
//! 3. each candidate is weighted by the total weight of the rows nearest to it, and weighted
//!    greedy k-means++ reduces the candidates to `k` centres.
//!
//! Every pass is a scan of the row source, so this works as well on a streamed fit as in
//! memory. The draws use a counter-based generator keyed by seed, round and row index, and the
//! distances come from the CPU kernels whatever backend runs Lloyd, so the centres depend on
//! neither the thread count, nor the device, nor where the rows live.

use rayon::prelude::*;

use super::init::kmeans_plus_plus;
use crate::backend::cpu::{CpuBackend, Pass};
use crate::data::{Dataset, Rows, slab_blocks};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Rows per block of the distance passes and reductions.
const BLOCK_ROWS: usize = 4096;

/// Per-row state kept between rounds.
struct Near {
    /// Squared distance to the nearest candidate.
    d2: Vec<f32>,
    /// Index of that candidate.
    idx: Vec<u32>,
    /// Row weights (empty when unweighted).
    w: Vec<f32>,
}

/// `k` initial centroids by k-means|| over `data`.
pub fn kmeans_parallel(
    data: &dyn Rows,
    k: usize,
    rounds: usize,
    oversampling: f64,
    rng: &mut Rng,
) -> Result<Vec<f32>> {
    let (n, dim) = (data.rows(), data.dim());
    let key = rng.next_u64();
    let first = first_row(data, rng.uniform())?;
    let mut cands: Vec<f32> = data
        .gather(&[first])?
        .into_iter()
        .flat_map(|(v, _)| v)
        .collect();
    let mut near = Near {
        d2: vec![f32::INFINITY; n],
        idx: vec![0; n],
        w: Vec::new(),
    };
    let mut phi = lower(data, &mut near, &cands, 0)?;
    let l = oversampling * k as f64;
    for round in 0..rounds {
        if phi <= 0.0 {
            break;
        }
        let round_key = round_key(key, round);
        let picked = sample(&near, l / phi, round_key);
        if picked.is_empty() {
            continue;
        }
        let base = cands.len() / dim;
        let new: Vec<f32> = data
            .gather(&picked)?
            .into_iter()
            .flat_map(|(v, _)| v)
            .collect();
        phi = lower(data, &mut near, &new, base)?;
        cands.extend(new);
    }
    let m = cands.len() / dim;
    let mut weight = vec![0f64; m];
    let weighted = !near.w.is_empty();
    for (i, &c) in near.idx.iter().enumerate() {
        weight[c as usize] += if weighted { near.w[i] as f64 } else { 1.0 };
    }
    drop(near);
    match reduce_candidates(&cands, &weight, k, rng)? {
        Some(centres) => Ok(centres),
        None => {
            let live: Vec<usize> = (0..m).filter(|&c| weight[c] > 0.0).collect();
            fill_up(data, k, &cands, &live, key)
        }
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

/// The row at which the running weight first reaches `u` times the total.
fn first_row(data: &dyn Rows, u: f64) -> Result<usize> {
    let n = data.rows();
    if !data.is_weighted() {
        return Ok(((u * n as f64) as usize).min(n - 1));
    }
    let target = u * data.total_weight();
    let dim = data.dim();
    let (mut acc, mut found, mut last_positive) = (0.0f64, None, 0);
    data.scan(&mut |start, b| {
        if found.is_some() {
            return Ok(());
        }
        if let Some(w) = &b.weights {
            for (r, &wr) in w.iter().enumerate().take(b.rows(dim)) {
                if wr > 0.0 {
                    last_positive = start + r;
                    acc += wr as f64;
                    if acc > target {
                        found = Some(start + r);
                        break;
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(found.unwrap_or(last_positive))
}

/// One pass: lowers every row's distance with the candidates `new` (numbered from `base`),
/// keeps the weights on the first pass, and returns the new potential φ, reduced in block order.
fn lower(data: &dyn Rows, near: &mut Near, new: &[f32], base: usize) -> Result<f64> {
    let dim = data.dim();
    let m = new.len() / dim;
    let pass = Pass::new(new, m, dim, true, false);
    let keep_w = base == 0 && data.is_weighted();
    if keep_w {
        near.w = vec![0.0; data.rows()];
    }
    let mut phi = 0.0f64;
    data.scan(&mut |start, slab| {
        let rows = slab.rows(dim);
        let blocks = slab_blocks(start, rows, BLOCK_ROWS);
        let d2 = &mut near.d2[start..start + rows];
        let idx = &mut near.idx[start..start + rows];
        if keep_w && let Some(w) = &slab.weights {
            near.w[start..start + rows].copy_from_slice(w);
        }
        let mut parts: Vec<(&mut [f32], &mut [u32])> = d2
            .chunks_mut(BLOCK_ROWS)
            .zip(idx.chunks_mut(BLOCK_ROWS))
            .collect();
        let sums: Vec<f64> = parts
            .par_iter_mut()
            .zip(&blocks)
            .map(|((d2, idx), blk)| {
                let x = &slab.values[blk.start * dim..(blk.start + blk.len) * dim];
                let mut lab = vec![0u32; blk.len];
                let mut dist = vec![0f32; blk.len];
                pass.block(x, None, &mut lab, &mut dist);
                let mut s = 0.0f64;
                for r in 0..blk.len {
                    if dist[r] < d2[r] {
                        d2[r] = dist[r];
                        idx[r] = (base as u32) + lab[r];
                    }
                    let w = slab
                        .weights
                        .as_ref()
                        .map_or(1.0, |w| w[blk.start + r] as f64);
                    s += w * d2[r] as f64;
                }
                s
            })
            .collect();
        phi += sums.iter().sum::<f64>();
        Ok(())
    })?;
    Ok(phi)
}

/// Rows drawn with probability `min(1, scale · w · D²)`, each by its own counter-based draw.
fn sample(near: &Near, scale: f64, key: u64) -> Vec<usize> {
    let n = near.d2.len();
    let chunks: Vec<Vec<usize>> = (0..n.div_ceil(BLOCK_ROWS))
        .into_par_iter()
        .map(|b| {
            let lo = b * BLOCK_ROWS;
            (lo..(lo + BLOCK_ROWS).min(n))
                .filter(|&i| {
                    let w = near.w.get(i).copied().unwrap_or(1.0);
                    draws(scale, w, near.d2[i], key, i as u64)
                })
                .collect()
        })
        .collect();
    chunks.concat()
}

/// Whether row `id` joins the candidates of the round keyed by `key`: with probability
/// `min(1, scale · w · D²)`, by its own counter-based draw. The streaming engine numbers rows
/// by their index; Spark by their values ([`row_key`]), which any split of the rows agrees on.
pub fn draws(scale: f64, w: f32, d2: f32, key: u64, id: u64) -> bool {
    let p = scale * w as f64 * d2 as f64;
    p > 0.0 && uniform(key, id) < p
}

/// Too few distinct candidates (the data has fewer than `k` distinct rows with weight, or the
/// rounds stopped early): keep them all and add rows spread evenly over the table.
fn fill_up(data: &dyn Rows, k: usize, cands: &[f32], live: &[usize], key: u64) -> Result<Vec<f32>> {
    let dim = data.dim();
    let n = data.rows();
    let mut out: Vec<f32> = live
        .iter()
        .flat_map(|&c| cands[c * dim..(c + 1) * dim].iter().copied())
        .collect();
    let need = k - live.len();
    if need > 0 {
        let offset = (splitmix(key) % n as u64) as usize;
        let idx: Vec<usize> = (0..need).map(|i| (offset + i * n / need) % n).collect();
        out.extend(data.gather(&idx)?.into_iter().flat_map(|(v, _)| v));
    }
    if out.len() != k * dim {
        return Err(Error::Internal(
            "k-means|| produced the wrong number of centres".into(),
        ));
    }
    Ok(out)
}

/// The key of sampling round `round` (0-based) under a run's `key`.
pub fn round_key(key: u64, round: usize) -> u64 {
    splitmix(key ^ (round as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03))
}

/// A key for a row from its values alone, for workers that do not know the row's index in
/// the table (Spark partitions): draws keyed by it do not depend on how rows are split.
pub fn row_key(row: &[f32]) -> u64 {
    row.iter().fold(0x6c61_6b65_6d65_616e, |h, v| {
        splitmix(h ^ v.to_bits() as u64)
    })
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
