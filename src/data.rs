//! The in-memory form of a feature table that backends work on.
//!
//! Rows live in batches (one per Parquet row group read), each a dense row-major `f32`
//! matrix. Backends only ever walk batches in order, so a later streaming source can hand
//! them over one at a time without touching the k-means driver.

/// A dense block of rows, row-major, `dim` values per row.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub values: Vec<f32>,
    /// Per-row sample weights; `None` means every row weighs 1.
    pub weights: Option<Vec<f32>>,
}

impl Batch {
    pub fn rows(&self, dim: usize) -> usize {
        self.values.len().checked_div(dim).unwrap_or(0)
    }
}

/// All rows of a table in clustered (already scaled) space.
#[derive(Debug, Clone)]
pub struct Dataset {
    dim: usize,
    rows: usize,
    batches: Vec<Batch>,
}

impl Dataset {
    /// Builds a dataset; every batch must hold whole rows and, if any batch has weights, all do.
    pub fn new(dim: usize, batches: Vec<Batch>) -> Self {
        assert!(dim > 0, "a dataset needs at least one feature");
        let weighted = batches.first().is_some_and(|b| b.weights.is_some());
        let mut rows = 0;
        for b in &batches {
            assert_eq!(b.values.len() % dim, 0, "batch holds a partial row");
            assert_eq!(
                b.weights.is_some(),
                weighted,
                "mixed weighted and unweighted batches"
            );
            if let Some(w) = &b.weights {
                assert_eq!(w.len(), b.values.len() / dim);
            }
            rows += b.values.len() / dim;
        }
        Dataset { dim, rows, batches }
    }

    /// A single-batch dataset from a row-major matrix.
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
        &self.batches
    }
    /// Mutable values of each batch, for in-place scaling; the shape cannot change through this.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        self.batches.iter_mut().map(|b| b.values.as_mut_slice())
    }
    pub fn is_weighted(&self) -> bool {
        self.batches.first().is_some_and(|b| b.weights.is_some())
    }

    /// Row `i` counted over all batches.
    pub fn row(&self, mut i: usize) -> &[f32] {
        for b in &self.batches {
            let n = b.rows(self.dim);
            if i < n {
                return &b.values[i * self.dim..(i + 1) * self.dim];
            }
            i -= n;
        }
        panic!("row index out of range");
    }

    /// Weight of row `i` (1 when unweighted).
    pub fn weight(&self, mut i: usize) -> f32 {
        for b in &self.batches {
            let n = b.rows(self.dim);
            if i < n {
                return b.weights.as_ref().map_or(1.0, |w| w[i]);
            }
            i -= n;
        }
        panic!("row index out of range");
    }

    /// Sum of all weights, in f64, in row order.
    pub fn total_weight(&self) -> f64 {
        if !self.is_weighted() {
            return self.rows as f64;
        }
        self.batches
            .iter()
            .flat_map(|b| b.weights.iter().flatten())
            .map(|&w| w as f64)
            .sum()
    }

    /// Fixed-size row blocks `(global_start, batch, start_in_batch, len)` over all batches.
    ///
    /// The partition depends only on the data and `block`, never on the thread count, which is
    /// what makes every reduction over blocks reproducible.
    pub fn blocks(&self, block: usize) -> Vec<Block> {
        let mut out = Vec::new();
        let mut global = 0;
        for (bi, b) in self.batches.iter().enumerate() {
            let n = b.rows(self.dim);
            let mut s = 0;
            while s < n {
                let len = block.min(n - s);
                out.push(Block {
                    global: global + s,
                    batch: bi,
                    start: s,
                    len,
                });
                s += len;
            }
            global += n;
        }
        out
    }

    /// The rows and weights of one block.
    pub fn block_view(&self, blk: &Block) -> (&[f32], Option<&[f32]>) {
        let b = &self.batches[blk.batch];
        let x = &b.values[blk.start * self.dim..(blk.start + blk.len) * self.dim];
        let w = b
            .weights
            .as_ref()
            .map(|w| &w[blk.start..blk.start + blk.len]);
        (x, w)
    }
}

/// A contiguous run of rows inside one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub global: usize,
    pub batch: usize,
    pub start: usize,
    pub len: usize,
}
