//! The spill cache: clustered rows written once to local temporary files and read back, slab
//! by slab, on every later pass of a streamed fit.
//!
//! Reading raw `f32` rows back costs a sequential read (often from the page cache); decoding
//! Parquet again costs decompression and casts on every pass. BENCHMARKS.md has both measured.
//! The files are deleted when the fit ends, fails or is interrupted ([`super::cleanup`]).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::cleanup::Tracked;
use crate::data::{Batch, Dataset, Moments, Rows, SLAB_ROWS, slab_weight};
use crate::error::{Error, Result};

/// Rows of a fit, on disk.
pub struct Spill {
    dim: usize,
    rows: usize,
    values: Tracked,
    weights: Option<Tracked>,
    moments: Moments,
    total_weight: f64,
    passes: AtomicUsize,
}

/// Writes slabs in order, then becomes a [`Spill`].
pub struct SpillWriter {
    dim: usize,
    rows: usize,
    values: (Tracked, BufWriter<File>),
    weights: Option<(Tracked, BufWriter<File>)>,
    moments: Moments,
    total_weight: f64,
}

fn spill_error(dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::Usage(format!(
        "cannot write the spill cache in {} ({e}); give a directory with room for the rows \
         with --spill-dir, or a larger --memory-budget",
        dir.display()
    ))
}

fn create(dir: &Path, what: &str) -> Result<(Tracked, BufWriter<File>)> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".lakemeans-spill-{what}-"))
        .tempfile_in(dir)
        .map_err(|e| spill_error(dir, e))?;
    let file = tmp.reopen().map_err(|e| spill_error(dir, e))?;
    Ok((Tracked::new(tmp), BufWriter::with_capacity(1 << 20, file)))
}

impl SpillWriter {
    pub fn new(dir: &Path, dim: usize, weighted: bool) -> Result<Self> {
        Ok(SpillWriter {
            dim,
            rows: 0,
            values: create(dir, "rows")?,
            weights: if weighted {
                Some(create(dir, "weights")?)
            } else {
                None
            },
            moments: Moments::new(dim),
            total_weight: 0.0,
        })
    }

    /// Appends one slab; every slab but the last must be full.
    pub fn push(&mut self, slab: Batch) -> Result<()> {
        let dir = self.values.0.dir();
        self.moments
            .merge(&Moments::of_slab(&slab.values, self.dim));
        self.total_weight += slab_weight(&slab, self.dim);
        self.rows += slab.rows(self.dim);
        self.values
            .1
            .write_all(bytemuck::cast_slice(&slab.values))
            .map_err(|e| spill_error(&dir, e))?;
        if let (Some((_, w)), Some(ws)) = (self.weights.as_mut(), &slab.weights) {
            w.write_all(bytemuck::cast_slice(ws))
                .map_err(|e| spill_error(&dir, e))?;
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Spill> {
        let dir = self.values.0.dir();
        let close = |(t, mut w): (Tracked, BufWriter<File>)| -> Result<Tracked> {
            w.flush().map_err(|e| spill_error(&dir, e))?;
            Ok(t)
        };
        Ok(Spill {
            dim: self.dim,
            rows: self.rows,
            values: close(self.values)?,
            weights: self.weights.map(close).transpose()?,
            moments: self.moments,
            total_weight: self.total_weight,
            passes: AtomicUsize::new(0),
        })
    }
}

impl Spill {
    /// Reads slabs in order on a second thread, one slab ahead of the consumer, through a
    /// few recycled buffers.
    fn read_ahead(&self, tx: SyncSender<Result<Batch>>, free: Receiver<Batch>) {
        let io = |e: std::io::Error| Error::Internal(format!("reading the spill cache: {e}"));
        let open = |t: &Tracked| t.reopen().map_err(io);
        let mut vf = match open(&self.values) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let mut wf = match self.weights.as_ref().map(open).transpose() {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let mut start = 0;
        while start < self.rows {
            let n = SLAB_ROWS.min(self.rows - start);
            let mut b = free.try_recv().unwrap_or_default();
            b.values.resize(n * self.dim, 0.0);
            let mut r = vf.read_exact(bytemuck::cast_slice_mut(&mut b.values));
            if let Some(f) = wf.as_mut() {
                let w = b.weights.get_or_insert_with(Vec::new);
                w.resize(n, 0.0);
                r = r.and_then(|_| f.read_exact(bytemuck::cast_slice_mut(w)));
            } else {
                b.weights = None;
            }
            let msg = r.map(|_| b).map_err(io);
            let failed = msg.is_err();
            if tx.send(msg).is_err() || failed {
                return;
            }
            start += n;
        }
    }
}

impl Rows for Spill {
    fn dim(&self) -> usize {
        self.dim
    }
    fn rows(&self) -> usize {
        self.rows
    }
    fn is_weighted(&self) -> bool {
        self.weights.is_some()
    }
    fn total_weight(&self) -> f64 {
        self.total_weight
    }
    fn moments(&self) -> &Moments {
        &self.moments
    }
    fn scan(&self, f: &mut dyn FnMut(usize, &Batch) -> Result<()>) -> Result<()> {
        self.passes.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel::<Result<Batch>>(1);
        let (back, free) = sync_channel::<Batch>(3);
        std::thread::scope(|s| {
            s.spawn(move || self.read_ahead(tx, free));
            // Owned here, so that an early return hangs up on the reader before the join.
            let rx = rx;
            let mut start = 0;
            for msg in rx.iter() {
                let b = msg?;
                f(start, &b)?;
                start += b.rows(self.dim);
                let _ = back.try_send(b);
            }
            if start != self.rows {
                return Err(Error::Internal(format!(
                    "the spill cache held {start} of {} rows",
                    self.rows
                )));
            }
            Ok(())
        })
    }
    fn gather(&self, idx: &[usize]) -> Result<Vec<(Vec<f32>, f32)>> {
        use std::os::unix::fs::FileExt;
        let io = |e: std::io::Error| Error::Internal(format!("reading the spill cache: {e}"));
        let vf = self.values.reopen().map_err(io)?;
        let wf = self
            .weights
            .as_ref()
            .map(|t| t.reopen())
            .transpose()
            .map_err(io)?;
        idx.iter()
            .map(|&i| {
                let mut v = vec![0f32; self.dim];
                vf.read_exact_at(bytemuck::cast_slice_mut(&mut v), (i * self.dim * 4) as u64)
                    .map_err(io)?;
                let mut w = [1f32];
                if let Some(f) = &wf {
                    f.read_exact_at(bytemuck::cast_slice_mut(&mut w), (i * 4) as u64)
                        .map_err(io)?;
                }
                Ok((v, w[0]))
            })
            .collect()
    }
    fn in_memory(&self) -> Option<&Dataset> {
        None
    }
    fn passes(&self) -> usize {
        self.passes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spill_scans_and_gathers_what_memory_holds() {
        let dim = 3;
        let n = SLAB_ROWS + 1234;
        let values: Vec<f32> = (0..n * dim).map(|i| (i % 1013) as f32 - 500.0).collect();
        let weights: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
        let mem = Dataset::from_rows(dim, values, Some(weights));
        let dir = tempfile::tempdir().expect("temp dir");
        let mut w = SpillWriter::new(dir.path(), dim, true).expect("writer");
        for s in mem.batches() {
            w.push(s.clone()).expect("push");
        }
        let spill = w.finish().expect("finish");
        assert_eq!(spill.rows(), mem.rows());
        assert_eq!(spill.moments(), Rows::moments(&mem));
        assert_eq!(spill.total_weight(), mem.total_weight());
        let mut i = 0;
        spill
            .scan(&mut |start, b| {
                assert_eq!(start, i * SLAB_ROWS);
                assert_eq!(b.values, mem.batches()[i].values);
                assert_eq!(b.weights, mem.batches()[i].weights);
                i += 1;
                Ok(())
            })
            .expect("scan");
        assert_eq!(i, 2);
        let idx = [n - 1, 0, SLAB_ROWS];
        assert_eq!(
            spill.gather(&idx).expect("gather"),
            mem.gather(&idx).expect("gather")
        );
        assert_eq!(spill.passes(), 1);
    }
}
