//! The k-means++ score pass on the CPU (see [`crate::backend::seeding`] for the maths).
//!
//! Candidates are packed `L` to a panel, transposed so that one feature of all of them is one
//! vector; each row is broadcast feature by feature against the panel, `R` rows at a time so
//! the dependent adds of different rows overlap. Every lane sums its products in feature
//! order with a separate multiply and add, which is the scalar order: results are the same
//! bits on every instruction set. The kernel is inlined into one `#[target_feature]` function
//! per instruction set ([`score_isa`]); reached through a closure instead, it is compiled
//! apart from the target function and runs as baseline SSE2 at about half the speed.
//! The f64 masses are summed lane by lane in row order, as the contract requires.

use rayon::prelude::*;

use super::{CpuBackend, Isa, isa};
use crate::backend::seeding::{SEED_BLOCK_ROWS, Seeder};
use crate::data::Block;
use crate::error::{Error, Result};

/// Rows scored together.
const TILE_ROWS: usize = 4;

/// The seeding state of a [`CpuBackend`].
#[derive(Default)]
pub struct State {
    blocks: Vec<Block>,
    /// ‖x‖² per row, summed feature by feature in f32.
    norms: Vec<f32>,
    /// D per row.
    closest: Vec<f32>,
    /// Minima of each candidate of the last score pass, one vector per candidate.
    scored: Vec<Vec<f32>>,
    n_scored: usize,
}

/// Squared norm in the order the contract fixes.
/// Greedy k-means++ runs only on rows held in memory (the driver checks before it starts).
fn in_memory<'a>(b: &CpuBackend<'a>) -> Result<&'a crate::data::Dataset> {
    b.data
        .in_memory()
        .ok_or_else(|| Error::Internal("k-means++ seeding on rows not in memory".into()))
}

fn norm(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |a, &x| a + x * x)
}

/// Candidates in panels of `L`: `panels[(p * dim + f) * L + l]` is feature `f` of candidate
/// `p * L + l`; padding lanes are zero and never read back.
fn pack<const L: usize>(cands: &[f32], n: usize, dim: usize) -> Vec<f32> {
    let mut panels = vec![0.0f32; n.div_ceil(L) * dim * L];
    for (j, c) in cands.chunks_exact(dim).take(n).enumerate() {
        let (p, l) = (j / L, j % L);
        for (f, &v) in c.iter().enumerate() {
            panels[(p * dim + f) * L + l] = v;
        }
    }
    panels
}

/// One block's inputs: rows `x` (row-major), their weights, norms and D, and the candidates
/// packed in panels of `lanes` with their norms (padded to whole panels).
struct BlockIn<'a> {
    x: &'a [f32],
    w: Option<&'a [f32]>,
    norms: &'a [f32],
    closest: &'a [f32],
    panels: &'a [f32],
    cnorms: &'a [f32],
    lanes: usize,
    dim: usize,
}

/// [`score_block`] compiled for `isa`.
fn score_isa(isa: Isa, b: &BlockIn, out: &mut [&mut [f32]]) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn avx512(b: &BlockIn, out: &mut [&mut [f32]]) -> Vec<f64> {
            score_lanes(b, out)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(b: &BlockIn, out: &mut [&mut [f32]]) -> Vec<f64> {
            score_lanes(b, out)
        }
        match isa {
            // SAFETY: `isa()` only returns a set this CPU has.
            Isa::Avx512 => return unsafe { avx512(b, out) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { avx2(b, out) },
            Isa::Portable => {}
        }
    }
    let _ = isa;
    score_lanes(b, out)
}

/// Picks the panel width.
#[inline(always)]
fn score_lanes(b: &BlockIn, out: &mut [&mut [f32]]) -> Vec<f64> {
    if b.lanes == 8 {
        score_block::<8>(b, out)
    } else {
        score_block::<16>(b, out)
    }
}

/// Writes each candidate's minima into `out[t]` and returns the candidates' masses.
#[inline(always)]
fn score_block<const L: usize>(b: &BlockIn, out: &mut [&mut [f32]]) -> Vec<f64> {
    let BlockIn {
        x,
        w,
        norms,
        closest,
        panels,
        cnorms,
        dim,
        ..
    } = *b;
    let n = out.len();
    let rows = norms.len();
    let mut mass = vec![0.0f64; cnorms.len()];
    let mut r0 = 0;
    while r0 < rows {
        if rows - r0 >= TILE_ROWS {
            tile::<L, TILE_ROWS>(
                x, w, norms, closest, panels, cnorms, out, &mut mass, dim, r0,
            );
            r0 += TILE_ROWS;
        } else {
            tile::<L, 1>(
                x, w, norms, closest, panels, cnorms, out, &mut mass, dim, r0,
            );
            r0 += 1;
        }
    }
    mass.truncate(n);
    mass
}

/// Rows `r0..r0 + R` against every panel.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tile<const L: usize, const R: usize>(
    x: &[f32],
    w: Option<&[f32]>,
    norms: &[f32],
    closest: &[f32],
    panels: &[f32],
    cnorms: &[f32],
    out: &mut [&mut [f32]],
    mass: &mut [f64],
    dim: usize,
    r0: usize,
) {
    let n = out.len();
    let xs: [&[f32]; R] = std::array::from_fn(|r| &x[(r0 + r) * dim..(r0 + r + 1) * dim]);
    for (p, panel) in panels.chunks_exact(dim * L).enumerate() {
        let mut acc = [[0.0f32; L]; R];
        for (f, col) in panel.chunks_exact(L).enumerate() {
            for r in 0..R {
                let xv = xs[r][f];
                for l in 0..L {
                    acc[r][l] += xv * col[l];
                }
            }
        }
        // All L lanes are finished together so this vectorises too; padding lanes hold
        // zero candidates and are never stored.
        let cn = &cnorms[p * L..(p + 1) * L];
        let lanes = L.min(n - p * L);
        for (r, acc_r) in acc.iter().enumerate() {
            let g = r0 + r;
            let wr = w.map_or(1.0, |w| w[g] as f64);
            let (xn, cl) = (norms[g], closest[g]);
            let mut m = [0.0f32; L];
            for l in 0..L {
                m[l] = ((xn + cn[l]) - 2.0 * acc_r[l]).max(0.0).min(cl);
            }
            let ms = &mut mass[p * L..(p + 1) * L];
            for l in 0..L {
                ms[l] += wr * m[l] as f64;
            }
            for (l, &v) in m.iter().enumerate().take(lanes) {
                out[p * L + l][g] = v;
            }
        }
    }
}

/// Splits each of `vs` into per-block slices, regrouped block by block.
fn per_block<'a>(vs: &'a mut [Vec<f32>], blocks: &[Block]) -> Vec<Vec<&'a mut [f32]>> {
    let mut out: Vec<Vec<&mut [f32]>> = blocks.iter().map(|_| Vec::new()).collect();
    for v in vs {
        let mut rest = &mut v[..];
        for (o, b) in out.iter_mut().zip(blocks) {
            let (head, tail) = rest.split_at_mut(b.len);
            o.push(head);
            rest = tail;
        }
    }
    out
}

impl Seeder for CpuBackend<'_> {
    fn seed_reset(&mut self) -> Result<()> {
        let data = in_memory(self)?;
        let s = &mut self.seeding;
        s.blocks = data.blocks(SEED_BLOCK_ROWS);
        s.norms = s
            .blocks
            .par_iter()
            .flat_map_iter(|b| {
                let (x, _) = data.block_view(b);
                x.chunks_exact(data.dim()).map(norm).collect::<Vec<_>>()
            })
            .collect();
        s.closest = vec![f32::INFINITY; data.rows()];
        s.n_scored = 0;
        Ok(())
    }

    fn seed_score(&mut self, candidates: &[f32], n: usize) -> Result<Vec<f64>> {
        let data = in_memory(self)?;
        let dim = data.dim();
        let s = &mut self.seeding;
        if n == 0 || candidates.len() != n * dim || s.closest.len() != data.rows() {
            return Err(Error::Internal(format!(
                "seed_score got {} values for {n} candidates of {dim} features",
                candidates.len()
            )));
        }
        let lanes = if n <= 8 { 8 } else { 16 };
        let mut cnorms: Vec<f32> = candidates.chunks_exact(dim).map(norm).collect();
        cnorms.resize(n.div_ceil(lanes) * lanes, 0.0);
        if s.scored.len() < n {
            s.scored.resize_with(n, Vec::new);
        }
        for v in &mut s.scored[..n] {
            v.resize(data.rows(), 0.0);
        }
        s.n_scored = n;
        let panels = if lanes == 8 {
            pack::<8>(candidates, n, dim)
        } else {
            pack::<16>(candidates, n, dim)
        };
        let (norms, closest, blocks) = (&s.norms, &s.closest, &s.blocks);
        let mut outs = per_block(&mut s.scored[..n], blocks);
        let isa = isa();
        let masses: Vec<Vec<f64>> = outs
            .par_iter_mut()
            .zip(blocks.par_iter())
            .map(|(out, b)| {
                let (x, w) = data.block_view(b);
                let rows = b.global..b.global + b.len;
                let block = BlockIn {
                    x,
                    w,
                    norms: &norms[rows.clone()],
                    closest: &closest[rows],
                    panels: &panels,
                    cnorms: &cnorms,
                    lanes,
                    dim,
                };
                score_isa(isa, &block, out)
            })
            .collect();
        let nb = blocks.len();
        let mut flat = vec![0.0f64; n * nb];
        for (bi, m) in masses.iter().enumerate() {
            for (t, &v) in m.iter().enumerate() {
                flat[t * nb + bi] = v;
            }
        }
        Ok(flat)
    }

    fn seed_keep(&mut self, t: usize) -> Result<()> {
        let s = &mut self.seeding;
        if t >= s.n_scored {
            return Err(Error::Internal(format!(
                "seed_keep({t}) after scoring {} candidates",
                s.n_scored
            )));
        }
        std::mem::swap(&mut s.closest, &mut s.scored[t]);
        s.n_scored = 0;
        Ok(())
    }

    fn seed_distances(&mut self, blocks: &[usize]) -> Result<Vec<Vec<f32>>> {
        let s = &self.seeding;
        blocks
            .iter()
            .map(|&bi| {
                let b = s
                    .blocks
                    .get(bi)
                    .ok_or_else(|| Error::Internal(format!("seeding block {bi} out of range")))?;
                Ok(s.closest[b.global..b.global + b.len].to_vec())
            })
            .collect()
    }
}
