//! Initial centroids. Everything here walks the rows in fixed blocks and reduces in block
//! order, so the chosen rows do not depend on the thread count.

use rayon::prelude::*;

use crate::backend::cpu::{Packed, dots};
use crate::data::{Block, Dataset, Rows};
use crate::error::{Error, Result};
use crate::rng::Rng;

const BLOCK_ROWS: usize = 4096;

/// Greedy k-means++: each new centroid is the best of `2 + ln k` candidates drawn with
/// probability proportional to weight × squared distance to the nearest chosen centroid,
/// "best" meaning the lowest resulting potential.
pub fn kmeans_plus_plus(data: &Dataset, k: usize, rng: &mut Rng) -> Vec<f32> {
    let dim = data.dim();
    let blocks = data.blocks(BLOCK_ROWS);
    let trials = 2 + (k as f64).ln() as usize;
    let norms: Vec<f32> = data
        .batches()
        .iter()
        .flat_map(|b| {
            b.values
                .chunks_exact(dim)
                .map(|r| r.iter().map(|v| v * v).sum::<f32>())
        })
        .collect();

    let mut centroids = Vec::with_capacity(k * dim);
    let first = {
        let bm = block_masses(data, &blocks, None);
        pick(
            data,
            &blocks,
            &bm,
            rng.uniform() * data.total_weight(),
            None,
        )
    };
    centroids.extend_from_slice(data.row(first));

    let mut closest = vec![0.0f32; data.rows()];
    potentials(data, &blocks, &norms, data.row(first), &mut closest, true);
    let mut pot: f64 = block_masses(data, &blocks, Some(&closest)).iter().sum();

    for _ in 1..k {
        let bm = block_masses(data, &blocks, Some(&closest));
        let cand: Vec<usize> = (0..trials)
            .map(|_| {
                let target = rng.uniform() * pot;
                pick(data, &blocks, &bm, target, Some(&closest))
            })
            .collect();
        let cand_rows: Vec<f32> = cand
            .iter()
            .flat_map(|&i| data.row(i).iter().copied())
            .collect();
        let cand_pots =
            candidate_potentials(data, &blocks, &norms, &cand_rows, cand.len(), &closest);
        let mut best = 0;
        for (t, &p) in cand_pots.iter().enumerate() {
            if p < cand_pots[best] {
                best = t;
            }
        }
        let row = data.row(cand[best]);
        potentials(data, &blocks, &norms, row, &mut closest, false);
        pot = cand_pots[best];
        centroids.extend_from_slice(row);
    }
    centroids
}

/// Mass of a row: its weight, times its distance to the chosen centroids when given.
fn mass(w: Option<&[f32]>, closest: Option<&[f32]>, b: &Block, r: usize) -> f64 {
    w.map_or(1.0, |w| w[r] as f64) * closest.map_or(1.0, |c| c[b.global + r] as f64)
}

/// Total mass per block, summed in row order.
fn block_masses(data: &Dataset, blocks: &[Block], closest: Option<&[f32]>) -> Vec<f64> {
    blocks
        .par_iter()
        .map(|b| {
            let (_, w) = data.block_view(b);
            (0..b.len).map(|r| mass(w, closest, b, r)).sum::<f64>()
        })
        .collect()
}

/// The first row whose running sum of mass reaches `target` (numpy's `searchsorted`, left),
/// clipped to the last row with positive mass.
fn pick(
    data: &Dataset,
    blocks: &[Block],
    block_mass: &[f64],
    target: f64,
    closest: Option<&[f32]>,
) -> usize {
    let mut acc = 0.0;
    let mut last_positive = 0;
    for (b, &m) in blocks.iter().zip(block_mass) {
        if m <= 0.0 {
            continue;
        }
        let (_, w) = data.block_view(b);
        if acc + m >= target {
            let mut inner = acc;
            for r in 0..b.len {
                let mr = mass(w, closest, b, r);
                inner += mr;
                if mr > 0.0 {
                    last_positive = b.global + r;
                    if inner >= target {
                        return last_positive;
                    }
                }
            }
        } else if let Some(r) = (0..b.len).rev().find(|&r| mass(w, closest, b, r) > 0.0) {
            last_positive = b.global + r;
        }
        acc += m;
    }
    last_positive
}

/// Squared distances of every row to `c`; with `init` they replace `closest`, otherwise they
/// lower it where smaller.
fn potentials(
    data: &Dataset,
    blocks: &[Block],
    norms: &[f32],
    c: &[f32],
    closest: &mut [f32],
    init: bool,
) {
    let dim = data.dim();
    let packed = Packed::new(c, 1, dim);
    let cn: f32 = c.iter().map(|v| v * v).sum();
    let mut slices = split_by_blocks(closest, blocks);
    slices.par_iter_mut().zip(blocks).for_each(|(out, b)| {
        let (x, _) = data.block_view(b);
        let mut d = vec![0.0f32; b.len * packed.slots()];
        dots(x, &packed, &mut d);
        for r in 0..b.len {
            let dist = (norms[b.global + r] + cn - 2.0 * d[r * packed.slots()]).max(0.0);
            if init || dist < out[r] {
                out[r] = dist;
            }
        }
    });
}

/// Σ w·min(closest, d(x, candidate)) for each candidate, reduced in block order.
fn candidate_potentials(
    data: &Dataset,
    blocks: &[Block],
    norms: &[f32],
    cand_rows: &[f32],
    n_cand: usize,
    closest: &[f32],
) -> Vec<f64> {
    let dim = data.dim();
    let packed = Packed::new(cand_rows, n_cand, dim);
    let cn: Vec<f32> = cand_rows
        .chunks_exact(dim)
        .map(|c| c.iter().map(|v| v * v).sum())
        .collect();
    let partials: Vec<Vec<f64>> = blocks
        .par_iter()
        .map(|b| {
            let (x, w) = data.block_view(b);
            let slots = packed.slots();
            let mut d = vec![0.0f32; b.len * slots];
            dots(x, &packed, &mut d);
            let mut pot = vec![0.0f64; n_cand];
            for r in 0..b.len {
                let wr = w.map_or(1.0, |w| w[r] as f64);
                let cl = closest[b.global + r];
                for (t, p) in pot.iter_mut().enumerate() {
                    let dist = (norms[b.global + r] + cn[t] - 2.0 * d[r * slots + t]).max(0.0);
                    *p += wr * dist.min(cl) as f64;
                }
            }
            pot
        })
        .collect();
    let mut total = vec![0.0f64; n_cand];
    for p in partials {
        for (a, b) in total.iter_mut().zip(p) {
            *a += b;
        }
    }
    total
}

fn split_by_blocks<'a>(mut v: &'a mut [f32], blocks: &[Block]) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(blocks.len());
    for b in blocks {
        let (head, tail) = v.split_at_mut(b.len);
        out.push(head);
        v = tail;
    }
    out
}

/// `k` distinct rows, each drawn with probability proportional to its weight (weighted sampling
/// without replacement by exponential keys, Efraimidis and Spirakis 2006), in one pass that
/// keeps only the `k` best keys.
pub fn random_rows(data: &dyn Rows, k: usize, rng: &mut Rng) -> Result<Vec<f32>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    /// Orders by key, then prefers the lower row: the heap's top is the worst kept entry.
    #[derive(PartialEq)]
    struct Key(f64, usize);
    impl Eq for Key {}
    impl PartialOrd for Key {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Key {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            self.0.total_cmp(&o.0).then(o.1.cmp(&self.1))
        }
    }
    let dim = data.dim();
    let mut heap: BinaryHeap<Reverse<Key>> = BinaryHeap::with_capacity(k + 1);
    let mut positive = 0usize;
    data.scan(&mut |start, b| {
        for r in 0..b.rows(dim) {
            let w = b.weights.as_ref().map_or(1.0, |w| w[r] as f64);
            let u = rng.uniform_open();
            if w > 0.0 {
                positive += 1;
                heap.push(Reverse(Key(u.ln() / w, start + r)));
                if heap.len() > k {
                    heap.pop();
                }
            }
        }
        Ok(())
    })?;
    if positive < k {
        return Err(Error::Usage(format!(
            "--init random needs {k} rows with positive weight, the input has {positive}"
        )));
    }
    let mut keyed: Vec<Key> = heap.into_iter().map(|Reverse(x)| x).collect();
    keyed.sort_by(|a, b| b.cmp(a));
    let idx: Vec<usize> = keyed.iter().map(|x| x.1).collect();
    Ok(data
        .gather(&idx)?
        .into_iter()
        .flat_map(|(v, _)| v)
        .collect())
}
