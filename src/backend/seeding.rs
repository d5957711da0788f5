//! Greedy k-means++'s pass over the rows, as a backend primitive.
//!
//! The driver ([`crate::kmeans::kmeans_plus_plus`]) draws candidates and decides which one to
//! keep; a backend holds D, each row's squared distance to the nearest kept centroid, and
//! scores candidates against it. One score pass reads every row once for all candidates of a
//! step:
//!
//!   d(x, c) = max(0, (‖x‖² + ‖c‖²) − 2·x·c)      in f32, each dot product and squared norm
//!                                                   summed feature by feature, with no fused
//!                                                   multiply-add
//!   m(x, c) = min(D(x), d(x, c))
//!   mass(b, c) = Σ_{x in block b} w(x)·m(x, c)     in f64, in row order
//!
//! Keeping a candidate makes its minima the new D, so the winner's distances are never
//! computed twice. Blocks are `Dataset::blocks(SEED_BLOCK_ROWS)`: a function of the data
//! only, so the masses, and thus every pick, do not depend on the thread count.

use super::Fallback;
use crate::error::Result;

/// Rows per seeding block: the unit of the mass sums and of [`Seeder::seed_distances`].
pub const SEED_BLOCK_ROWS: usize = 4096;

pub trait Seeder {
    /// Starts a new seeding: no centroid is kept, every row is infinitely far.
    fn seed_reset(&mut self) -> Result<()>;

    /// Scores `n` candidates (`n * dim`, row-major) against D. Returns mass(b, c) for every
    /// candidate and block, candidate-major (`n * blocks`), and remembers each candidate's
    /// minima until the next call.
    fn seed_score(&mut self, candidates: &[f32], n: usize) -> Result<Vec<f64>>;

    /// Makes candidate `t` of the last score pass a kept centroid: its minima become D.
    fn seed_keep(&mut self, t: usize) -> Result<()>;

    /// D of every row of the given blocks, one vector per block.
    fn seed_distances(&mut self, blocks: &[usize]) -> Result<Vec<Vec<f32>>>;
}

/// What the GPU has been told so far, to replay on the CPU if it fails mid-seeding.
#[derive(Default)]
pub(super) struct SeedLog {
    /// Whether a seeding was started at all.
    started: bool,
    /// Kept centroids, in order.
    kept: Vec<f32>,
    /// The last scored candidates and their count.
    scored: Option<(Vec<f32>, usize)>,
}

impl SeedLog {
    /// Brings a fresh backend to the same seeding state.
    pub(super) fn replay(&self, s: &mut dyn Seeder, dim: usize) -> Result<()> {
        if !self.started {
            return Ok(());
        }
        s.seed_reset()?;
        for c in self.kept.chunks_exact(dim) {
            s.seed_score(c, 1)?;
            s.seed_keep(0)?;
        }
        if let Some((c, n)) = &self.scored {
            s.seed_score(c, *n)?;
        }
        Ok(())
    }
}

impl Seeder for Fallback<'_> {
    fn seed_reset(&mut self) -> Result<()> {
        self.seed_log = SeedLog {
            started: true,
            ..SeedLog::default()
        };
        self.run(|b| b.seed_reset())
    }

    fn seed_score(&mut self, candidates: &[f32], n: usize) -> Result<Vec<f64>> {
        let m = self.run(|b| b.seed_score(candidates, n))?;
        self.seed_log.scored = Some((candidates.to_vec(), n));
        Ok(m)
    }

    fn seed_keep(&mut self, t: usize) -> Result<()> {
        self.run(|b| b.seed_keep(t))?;
        let dim = self.data.dim();
        if let Some((c, _)) = &self.seed_log.scored {
            let row = c[t * dim..(t + 1) * dim].to_vec();
            self.seed_log.kept.extend(row);
        }
        Ok(())
    }

    fn seed_distances(&mut self, blocks: &[usize]) -> Result<Vec<Vec<f32>>> {
        self.run(|b| b.seed_distances(blocks))
    }
}
