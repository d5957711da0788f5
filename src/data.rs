//! Rows in clustered space, as backends and the k-means driver see them.
//!
//! Every pass over the data is a scan over *slabs*: runs of [`SLAB_ROWS`] rows (the last one
//! shorter), each a dense row-major `f32` matrix. Slab boundaries are a function of the global
//! row index only, never of files, row groups or memory, so every reduction that works in
//! fixed blocks inside slabs gives the same bits whether the slabs sit in memory
//! ([`Dataset`]) or are streamed from disk ([`crate::io::spill::Spill`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::error::Result;

/// Rows per slab: a multiple of every reduction block (CPU 2,048, init 4,096, GPU tile 64).
pub const SLAB_ROWS: usize = 1 << 16;

/// A dense block of rows, row-major, `dim` values per row (`f32` in clustered space; `f64`
/// for raw values on their way to the scaler's statistics).
#[derive(Debug, Clone, Default)]
pub struct Batch<T = f32> {
    pub values: Vec<T>,
    /// Per-row sample weights; `None` means every row weighs 1.
    pub weights: Option<Vec<f32>>,
}

impl<T> Batch<T> {
    pub fn rows(&self, dim: usize) -> usize {
        self.values.len().checked_div(dim).unwrap_or(0)
    }
}

/// A contiguous run of rows inside one slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Global index of the first row.
    pub global: usize,
    /// Start within the slab.
    pub start: usize,
    pub len: usize,
}

/// Fixed blocks of at most `block` rows over a slab that starts at global row `global`.
/// `block` must divide [`SLAB_ROWS`], so blocks never straddle slabs.
pub fn slab_blocks(global: usize, rows: usize, block: usize) -> Vec<Block> {
    debug_assert_eq!(SLAB_ROWS % block, 0);
    (0..rows)
        .step_by(block)
        .map(|s| Block {
            global: global + s,
            start: s,
            len: block.min(rows - s),
        })
        .collect()
}

/// Fixed blocks of at most `block` rows over `rows` rows cut into slabs, as
/// [`Dataset::blocks`] gives them.
pub fn blocks_of(rows: usize, block: usize) -> Vec<Block> {
    (0..rows.div_ceil(SLAB_ROWS))
        .flat_map(|i| slab_blocks(i * SLAB_ROWS, SLAB_ROWS.min(rows - i * SLAB_ROWS), block))
        .collect()
}

/// Per-feature mean and variance, merged over fixed blocks in block order (Chan et al.'s
/// pairwise update), so the figures do not depend on threads or on where the rows live.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    pub n: f64,
    pub mean: Vec<f64>,
    /// Sum of squared deviations from the mean.
    pub m2: Vec<f64>,
}

impl Moments {
    pub fn new(dim: usize) -> Self {
        Moments {
            n: 0.0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
        }
    }

    /// Moments of the rows of `x`, unweighted, two passes in f64.
    pub fn of_rows(x: &[f32], dim: usize) -> Self {
        let mut m = Moments::new(dim);
        let rows = x.len() / dim;
        if rows == 0 {
            return m;
        }
        m.n = rows as f64;
        for row in x.chunks_exact(dim) {
            for (s, &v) in m.mean.iter_mut().zip(row) {
                *s += v as f64;
            }
        }
        m.mean.iter_mut().for_each(|s| *s /= rows as f64);
        for row in x.chunks_exact(dim) {
            for ((s, &mu), &v) in m.m2.iter_mut().zip(&m.mean).zip(row) {
                let d = v as f64 - mu;
                *s += d * d;
            }
        }
        m
    }

    pub fn merge(&mut self, o: &Moments) {
        if o.n == 0.0 {
            return;
        }
        if self.n == 0.0 {
            *self = o.clone();
            return;
        }
        let n = self.n + o.n;
        for j in 0..self.mean.len() {
            let delta = o.mean[j] - self.mean[j];
            self.mean[j] += delta * o.n / n;
            self.m2[j] += o.m2[j] + delta * delta * self.n * o.n / n;
        }
        self.n = n;
    }

    /// Moments of a slab's rows, in fixed blocks merged in order.
    pub fn of_slab(x: &[f32], dim: usize) -> Self {
        let rows = x.len() / dim;
        let parts: Vec<Moments> = slab_blocks(0, rows, MOMENT_BLOCK)
            .par_iter()
            .map(|b| Moments::of_rows(&x[b.start * dim..(b.start + b.len) * dim], dim))
            .collect();
        let mut m = Moments::new(dim);
        for p in &parts {
            m.merge(p);
        }
        m
    }

    /// Mean over features of the population variance: scikit-learn's scale for `tol`.
    pub fn mean_variance(&self) -> f64 {
        if self.n == 0.0 || self.m2.is_empty() {
            return 0.0;
        }
        self.m2.iter().sum::<f64>() / self.n / self.m2.len() as f64
    }
}

const MOMENT_BLOCK: usize = 4096;

/// The rows a fit works on, wherever they live. Backends and the driver only ever scan slabs
/// in order or fetch a few rows by index, which both a memory-resident [`Dataset`] and a
/// streamed spill file can do.
pub trait Rows: Sync {
    fn dim(&self) -> usize;
    fn rows(&self) -> usize;
    fn is_weighted(&self) -> bool;
    /// Sum of all weights, in f64, reduced per slab in slab order.
    fn total_weight(&self) -> f64;
    /// Unweighted per-feature moments of the clustered values.
    fn moments(&self) -> &Moments;
    /// Calls `f(global_start, slab)` for every slab in row order; one full pass.
    fn scan(&self, f: &mut dyn FnMut(usize, &Batch) -> Result<()>) -> Result<()>;
    /// The values and weight of each row in `idx`, in the order given.
    fn gather(&self, idx: &[usize]) -> Result<Vec<(Vec<f32>, f32)>>;
    /// The rows themselves when they are all in memory (greedy k-means++ needs random access).
    fn in_memory(&self) -> Option<&Dataset>;
    /// Full passes made over the rows so far.
    fn passes(&self) -> usize;
}

/// All rows in memory, as slabs.
#[derive(Debug)]
pub struct Dataset {
    dim: usize,
    rows: usize,
    slabs: Vec<Batch>,
    moments: Moments,
    total_weight: f64,
    passes: AtomicUsize,
}

impl Clone for Dataset {
    fn clone(&self) -> Self {
        Dataset {
            dim: self.dim,
            rows: self.rows,
            slabs: self.slabs.clone(),
            moments: self.moments.clone(),
            total_weight: self.total_weight,
            passes: AtomicUsize::new(0),
        }
    }
}

impl Dataset {
    /// Builds a dataset from batches of any size; they are cut into slabs. Every batch must
    /// hold whole rows and, if any batch has weights, all do.
    pub fn new(dim: usize, batches: Vec<Batch>) -> Self {
        assert!(dim > 0, "a dataset needs at least one feature");
        let weighted = batches.first().is_some_and(|b| b.weights.is_some());
        let aligned = batches.iter().enumerate().all(|(i, b)| {
            b.rows(dim) == SLAB_ROWS || (i + 1 == batches.len() && b.rows(dim) <= SLAB_ROWS)
        });
        let slabs = if aligned {
            batches
        } else {
            let mut sl = Slabber::<f32>::new(dim, weighted);
            let mut out = Vec::new();
            for b in &batches {
                sl.push(&b.values, b.weights.as_deref(), &mut |s| {
                    out.push(s);
                    Ok(())
                })
                .expect("collecting slabs cannot fail");
            }
            sl.finish(&mut |s| {
                out.push(s);
                Ok(())
            })
            .expect("collecting slabs cannot fail");
            out
        };
        Self::from_slabs(dim, slabs)
    }

    /// Builds a dataset from slabs as [`Slabber`] cuts them.
    pub fn from_slabs(dim: usize, slabs: Vec<Batch>) -> Self {
        let weighted = slabs.first().is_some_and(|b| b.weights.is_some());
        let mut rows = 0;
        let mut moments = Moments::new(dim);
        let mut total_weight = 0.0;
        for (i, b) in slabs.iter().enumerate() {
            assert_eq!(b.values.len() % dim, 0, "batch holds a partial row");
            let n = b.rows(dim);
            assert!(n == SLAB_ROWS || (i + 1 == slabs.len() && n <= SLAB_ROWS));
            assert_eq!(
                b.weights.is_some(),
                weighted,
                "mixed weighted and unweighted"
            );
            if let Some(w) = &b.weights {
                assert_eq!(w.len(), n);
            }
            moments.merge(&Moments::of_slab(&b.values, dim));
            total_weight += slab_weight(b, dim);
            rows += n;
        }
        Dataset {
            dim,
            rows,
            slabs,
            moments,
            total_weight,
            passes: AtomicUsize::new(0),
        }
    }

    /// A dataset from a row-major matrix.
    pub fn from_rows(dim: usize, values: Vec<f32>, weights: Option<Vec<f32>>) -> Self {
        Dataset::new(dim, vec![Batch { values, weights }])
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn batches(&self) -> &[Batch] {
        &self.slabs
    }
    pub fn is_weighted(&self) -> bool {
        self.slabs.first().is_some_and(|b| b.weights.is_some())
    }
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// Row `i` counted over all slabs.
    pub fn row(&self, i: usize) -> &[f32] {
        let b = &self.slabs[i / SLAB_ROWS];
        let r = i % SLAB_ROWS;
        &b.values[r * self.dim..(r + 1) * self.dim]
    }

    /// Weight of row `i` (1 when unweighted).
    pub fn weight(&self, i: usize) -> f32 {
        self.slabs[i / SLAB_ROWS]
            .weights
            .as_ref()
            .map_or(1.0, |w| w[i % SLAB_ROWS])
    }

    /// Fixed-size row blocks over all slabs; `block` must divide [`SLAB_ROWS`].
    ///
    /// The partition depends only on the row count and `block`, never on the thread count,
    /// which is what makes every reduction over blocks reproducible.
    pub fn blocks(&self, block: usize) -> Vec<Block> {
        blocks_of(self.rows, block)
    }

    /// The rows and weights of one block.
    pub fn block_view(&self, blk: &Block) -> (&[f32], Option<&[f32]>) {
        let b = &self.slabs[blk.global / SLAB_ROWS];
        let x = &b.values[blk.start * self.dim..(blk.start + blk.len) * self.dim];
        let w = b
            .weights
            .as_ref()
            .map(|w| &w[blk.start..blk.start + blk.len]);
        (x, w)
    }
}

/// Sum of a slab's weights in f64, in row order.
pub fn slab_weight(b: &Batch, dim: usize) -> f64 {
    match &b.weights {
        Some(w) => w.iter().map(|&v| v as f64).sum(),
        None => b.rows(dim) as f64,
    }
}

impl Rows for Dataset {
    fn dim(&self) -> usize {
        self.dim
    }
    fn rows(&self) -> usize {
        self.rows
    }
    fn is_weighted(&self) -> bool {
        Dataset::is_weighted(self)
    }
    fn total_weight(&self) -> f64 {
        self.total_weight
    }
    fn moments(&self) -> &Moments {
        &self.moments
    }
    fn scan(&self, f: &mut dyn FnMut(usize, &Batch) -> Result<()>) -> Result<()> {
        self.passes.fetch_add(1, Ordering::Relaxed);
        for (i, b) in self.slabs.iter().enumerate() {
            f(i * SLAB_ROWS, b)?;
        }
        Ok(())
    }
    fn gather(&self, idx: &[usize]) -> Result<Vec<(Vec<f32>, f32)>> {
        Ok(idx
            .iter()
            .map(|&i| (self.row(i).to_vec(), self.weight(i)))
            .collect())
    }
    fn in_memory(&self) -> Option<&Dataset> {
        Some(self)
    }
    fn passes(&self) -> usize {
        self.passes.load(Ordering::Relaxed)
    }
}

/// Cuts a stream of rows of any batch sizes into slabs of exactly [`SLAB_ROWS`] rows.
pub struct Slabber<T = f32> {
    dim: usize,
    cur: Batch<T>,
}

impl<T: Copy> Slabber<T> {
    pub fn new(dim: usize, weighted: bool) -> Self {
        Slabber {
            dim,
            cur: Self::empty(dim, weighted),
        }
    }

    fn empty(dim: usize, weighted: bool) -> Batch<T> {
        Batch {
            values: Vec::with_capacity(SLAB_ROWS * dim),
            weights: weighted.then(|| Vec::with_capacity(SLAB_ROWS)),
        }
    }

    /// Appends rows, handing every completed slab to `emit`.
    pub fn push(
        &mut self,
        mut values: &[T],
        mut weights: Option<&[f32]>,
        emit: &mut dyn FnMut(Batch<T>) -> Result<()>,
    ) -> Result<()> {
        let dim = self.dim;
        while !values.is_empty() {
            let have = self.cur.rows(dim);
            let take = (SLAB_ROWS - have).min(values.len() / dim);
            self.cur.values.extend_from_slice(&values[..take * dim]);
            values = &values[take * dim..];
            if let (Some(cw), Some(w)) = (self.cur.weights.as_mut(), weights) {
                cw.extend_from_slice(&w[..take]);
                weights = Some(&w[take..]);
            }
            if self.cur.rows(dim) == SLAB_ROWS {
                let weighted = self.cur.weights.is_some();
                let full = std::mem::replace(&mut self.cur, Self::empty(dim, weighted));
                emit(full)?;
            }
        }
        Ok(())
    }

    /// Hands over the last, partial slab, if any.
    pub fn finish(self, emit: &mut dyn FnMut(Batch<T>) -> Result<()>) -> Result<()> {
        if !self.cur.values.is_empty() {
            emit(self.cur)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slabs_do_not_depend_on_input_batches() {
        let dim = 3;
        let n = SLAB_ROWS * 2 + 17;
        let values: Vec<f32> = (0..n * dim).map(|i| (i % 97) as f32 * 0.5).collect();
        let one = Dataset::from_rows(dim, values.clone(), None);
        let parts: Vec<Batch> = values
            .chunks(dim * 1000)
            .map(|c| Batch {
                values: c.to_vec(),
                weights: None,
            })
            .collect();
        let many = Dataset::new(dim, parts);
        assert_eq!(one.batches().len(), 3);
        assert_eq!(many.batches().len(), 3);
        for (a, b) in one.batches().iter().zip(many.batches()) {
            assert_eq!(a.values, b.values);
        }
        assert_eq!(one.moments(), many.moments());
        assert_eq!(
            one.row(SLAB_ROWS + 5),
            &values[(SLAB_ROWS + 5) * dim..][..dim]
        );
    }

    #[test]
    fn moments_match_a_two_pass_reference() {
        let dim = 2;
        let values: Vec<f32> = (0..10_000).map(|i| ((i * 7919) % 1000) as f32).collect();
        let d = Dataset::from_rows(dim, values.clone(), None);
        let n = (values.len() / dim) as f64;
        for j in 0..dim {
            let col: Vec<f64> = values
                .iter()
                .skip(j)
                .step_by(dim)
                .map(|&v| v as f64)
                .collect();
            let mean = col.iter().sum::<f64>() / n;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            assert!((d.moments().mean[j] - mean).abs() < 1e-9);
            assert!((d.moments().m2[j] / n - var).abs() < 1e-6 * var);
        }
    }
}
