//! Initial centroids. Every choice here walks the rows in fixed blocks and reduces in block
//! order, so the chosen rows do not depend on the thread count or the backend's layout.

use std::collections::HashMap;

use crate::backend::{SEED_BLOCK_ROWS, Seeder};
use crate::data::{Block, Dataset, Rows};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Greedy k-means++: each new centroid is the best of `2 + ln k` candidates drawn with
/// probability proportional to weight × squared distance to the nearest chosen centroid,
/// "best" meaning the lowest resulting potential.
///
/// The passes over the rows run on `seeder` (one per step, for all its candidates); this
/// function only draws and decides, from per-block masses, so the bookkeeping costs
/// O(blocks + block rows) per candidate.
pub fn kmeans_plus_plus(
    data: &Dataset,
    seeder: &mut dyn Seeder,
    k: usize,
    rng: &mut Rng,
) -> Result<Vec<f32>> {
    let blocks = data.blocks(SEED_BLOCK_ROWS);
    let trials = 2 + (k as f64).ln() as usize;
    seeder.seed_reset()?;
    let weights: Vec<f64> = blocks
        .iter()
        .map(|b| {
            let (_, w) = data.block_view(b);
            (0..b.len).map(|r| mass(w, None, r)).sum()
        })
        .collect();
    let target = rng.uniform() * data.total_weight();
    let first = Picker::new(data, &blocks, &weights, None).pick(target)?;

    let mut centroids = Vec::with_capacity(k * data.dim());
    centroids.extend_from_slice(data.row(first));
    let mut masses = seeder.seed_score(data.row(first), 1)?;
    seeder.seed_keep(0)?;
    let mut pot = total(&masses);

    for _ in 1..k {
        let targets: Vec<f64> = (0..trials).map(|_| rng.uniform() * pot).collect();
        let mut picker = Picker::new(data, &blocks, &masses, Some(&mut *seeder));
        picker.prefetch(&targets)?;
        let cand = targets
            .iter()
            .map(|&t| picker.pick(t))
            .collect::<Result<Vec<usize>>>()?;
        let cand_rows: Vec<f32> = cand
            .iter()
            .flat_map(|&i| data.row(i).iter().copied())
            .collect();
        let scores = seeder.seed_score(&cand_rows, trials)?;
        let per_cand: Vec<&[f64]> = scores.chunks_exact(blocks.len()).collect();
        let pots: Vec<f64> = per_cand.iter().map(|m| total(m)).collect();
        let mut best = 0;
        for (t, &p) in pots.iter().enumerate() {
            if p < pots[best] {
                best = t;
            }
        }
        seeder.seed_keep(best)?;
        masses = per_cand[best].to_vec();
        pot = pots[best];
        centroids.extend_from_slice(data.row(cand[best]));
    }
    Ok(centroids)
}

/// Block masses added in block order.
fn total(masses: &[f64]) -> f64 {
    masses.iter().fold(0.0, |a, &m| a + m)
}

/// Mass of row `r` of a block: its weight, times its distance D when given (`d` is the
/// block's D, `w` its weights).
fn mass(w: Option<&[f32]>, d: Option<&[f32]>, r: usize) -> f64 {
    w.map_or(1.0, |w| w[r] as f64) * d.map_or(1.0, |d| d[r] as f64)
}

/// Draws rows by mass: block masses on the host, D of a block fetched from the seeder only
/// when a draw lands in it.
struct Picker<'a, 's> {
    data: &'a Dataset,
    blocks: &'a [Block],
    masses: &'a [f64],
    /// `None` for the first draw, which is by weight alone.
    seeder: Option<&'s mut dyn Seeder>,
    fetched: HashMap<usize, Vec<f32>>,
}

/// The row a draw settles on if no row reaches the target.
enum Last {
    None,
    Row(usize),
    /// The last row with positive mass of this block.
    InBlock(usize),
}

impl<'a, 's> Picker<'a, 's> {
    fn new(
        data: &'a Dataset,
        blocks: &'a [Block],
        masses: &'a [f64],
        seeder: Option<&'s mut dyn Seeder>,
    ) -> Self {
        Picker {
            data,
            blocks,
            masses,
            seeder,
            fetched: HashMap::new(),
        }
    }

    /// Fetches, in one call, D of every block a target falls in and of the last block with
    /// mass (where an overshooting draw is clipped to).
    fn prefetch(&mut self, targets: &[f64]) -> Result<()> {
        let mut want: Vec<usize> = targets.iter().filter_map(|&t| self.locate(t)).collect();
        want.extend(self.masses.iter().rposition(|&m| m > 0.0));
        want.sort_unstable();
        want.dedup();
        self.fetch(&want)
    }

    /// The first block whose running mass reaches `target`.
    fn locate(&self, target: f64) -> Option<usize> {
        let mut acc = 0.0;
        for (bi, &m) in self.masses.iter().enumerate() {
            if m <= 0.0 {
                continue;
            }
            if acc + m >= target {
                return Some(bi);
            }
            acc += m;
        }
        None
    }

    fn fetch(&mut self, blocks: &[usize]) -> Result<()> {
        let missing: Vec<usize> = blocks
            .iter()
            .copied()
            .filter(|b| !self.fetched.contains_key(b))
            .collect();
        if let (Some(s), false) = (self.seeder.as_mut(), missing.is_empty()) {
            let got = s.seed_distances(&missing)?;
            if got.len() != missing.len() {
                return Err(Error::Internal(
                    "seed_distances returned too few blocks".into(),
                ));
            }
            self.fetched.extend(missing.into_iter().zip(got));
        }
        Ok(())
    }

    /// Masses of the rows of block `bi`, in row order.
    fn row_masses(
        &mut self,
        bi: usize,
    ) -> Result<impl ExactSizeIterator<Item = f64> + DoubleEndedIterator + '_> {
        self.fetch(&[bi])?;
        let d = self.fetched.get(&bi).map(Vec::as_slice);
        let (_, w) = self.data.block_view(&self.blocks[bi]);
        Ok((0..self.blocks[bi].len).map(move |r| mass(w, d, r)))
    }

    /// The first row whose running sum of mass reaches `target` (numpy's `searchsorted`,
    /// left), clipped to the last row with positive mass.
    fn pick(&mut self, target: f64) -> Result<usize> {
        let mut acc = 0.0;
        let mut last = Last::None;
        for bi in 0..self.blocks.len() {
            let (m, global) = (self.masses[bi], self.blocks[bi].global);
            if m <= 0.0 {
                continue;
            }
            if acc + m >= target {
                let mut inner = acc;
                for (r, mr) in self.row_masses(bi)?.enumerate() {
                    inner += mr;
                    if mr > 0.0 {
                        last = Last::Row(global + r);
                        if inner >= target {
                            return Ok(global + r);
                        }
                    }
                }
            } else {
                last = Last::InBlock(bi);
            }
            acc += m;
        }
        match last {
            Last::None => Ok(0),
            Last::Row(i) => Ok(i),
            Last::InBlock(bi) => {
                let global = self.blocks[bi].global;
                let r = self.row_masses(bi)?.rposition(|m| m > 0.0);
                Ok(global + r.unwrap_or(0))
            }
        }
    }
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
