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
//!
//! On AVX2 and AVX-512 the whole batches of eight rows take another layout ([`x86::rows8`]):
//! the rows are transposed so that one vector holds one feature of eight rows, and each
//! candidate's feature is broadcast against it. The same products and sums are taken in the
//! same order, so the bits are the same, but no lane is wasted on padding, the minima of a
//! candidate are stored eight at a time, and the work per row is about half.

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
    /// The candidates feature-major: `cols[f * n + j]` is feature `f` of candidate `j`.
    cols: &'a [f32],
}

/// [`score_block`] compiled for `isa`.
fn score_isa(isa: Isa, b: &BlockIn, out: &mut [&mut [f32]]) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if isa != Isa::Portable && b.dim <= x86::MAX_DIM {
            // SAFETY: `isa()` only returns a set this CPU has, and AVX-512 includes AVX2 and FMA.
            return unsafe { x86::rows8(b, out) };
        }
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn avx512(b: &BlockIn, out: &mut [&mut [f32]]) -> Vec<f64> {
            score_lanes(b, out, 0, Vec::new())
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(b: &BlockIn, out: &mut [&mut [f32]]) -> Vec<f64> {
            score_lanes(b, out, 0, Vec::new())
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
    score_lanes(b, out, 0, Vec::new())
}

/// Picks the panel width.
#[inline(always)]
fn score_lanes(b: &BlockIn, out: &mut [&mut [f32]], from: usize, mass: Vec<f64>) -> Vec<f64> {
    if b.lanes == 8 {
        score_block::<8>(b, out, from, mass)
    } else {
        score_block::<16>(b, out, from, mass)
    }
}

/// Writes each candidate's minima into `out[t]` for rows `from..` and returns the
/// candidates' masses, adding on to `mass` (the rows before `from`; empty for none).
#[inline(always)]
fn score_block<const L: usize>(
    b: &BlockIn,
    out: &mut [&mut [f32]],
    from: usize,
    mut mass: Vec<f64>,
) -> Vec<f64> {
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
    mass.resize(cnorms.len(), 0.0);
    let mut r0 = from;
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BlockIn, score_lanes};
    use crate::backend::cpu::rows::transpose8;

    /// Most features the kernel takes; wider rows take the panel kernel.
    pub const MAX_DIM: usize = 256;
    /// Candidates scored together: their accumulators, the eight transposed features and a
    /// broadcast fit AVX2's sixteen registers. More candidates take more groups, each
    /// transposing the batch again from L1; keeping the transposed batch in memory instead,
    /// for groups of up to 12, made the whole pass about 20% slower (measured).
    const GROUP: usize = 6;

    /// [`super::score_block`] with whole batches of eight rows transposed; the rows after the
    /// last whole batch go through the panel kernel, which computes the same bits.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `b.dim <= MAX_DIM`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows8(b: &BlockIn, out: &mut [&mut [f32]]) -> Vec<f64> {
        let (dim, n, rows) = (b.dim, out.len(), b.norms.len());
        assert!(dim <= MAX_DIM && b.cols.len() == n * dim && b.x.len() == rows * dim);
        let whole = rows / 8 * 8;
        let mut mass = vec![0.0f64; n];
        // SAFETY: compiled for AVX2 and FMA; every pointer below stays inside `b.x` (rows
        // `i..i + 8` with `i + 8 <= whole`), `b.cols`, `b.norms`, `b.closest` and `out[j]`,
        // whose lengths were checked above and by the caller.
        unsafe {
            let tail = crate::backend::cpu::x86::tail_mask(dim % 8);
            for i in (0..whole).step_by(8) {
                let xn = _mm256_loadu_ps(b.norms.as_ptr().add(i));
                let cl = _mm256_loadu_ps(b.closest.as_ptr().add(i));
                let w: Option<[f64; 8]> = b.w.map(|w| std::array::from_fn(|r| w[i + r] as f64));
                let w = w.as_ref();
                for j0 in (0..n).step_by(GROUP) {
                    let at = Batch {
                        tail,
                        xn,
                        cl,
                        w,
                        i,
                        j0,
                    };
                    match GROUP.min(n - j0) {
                        1 => group::<1>(b, &at, out, &mut mass),
                        2 => group::<2>(b, &at, out, &mut mass),
                        3 => group::<3>(b, &at, out, &mut mass),
                        4 => group::<4>(b, &at, out, &mut mass),
                        5 => group::<5>(b, &at, out, &mut mass),
                        _ => group::<6>(b, &at, out, &mut mass),
                    }
                }
            }
        }
        if whole < rows {
            // The tail's masses add on to the batches' in row order.
            mass = score_lanes(b, out, whole, mass);
        }
        mass
    }

    /// One batch of eight rows.
    struct Batch<'a> {
        /// The load mask of the last eight features.
        tail: __m256i,
        xn: __m256,
        cl: __m256,
        w: Option<&'a [f64; 8]>,
        /// Its first row in the block, and the first candidate of the group.
        i: usize,
        j0: usize,
    }

    /// Adds one feature `xv` of the batch times that feature of each candidate (at `c`).
    ///
    /// # Safety
    /// AVX2 must be enabled in the caller; `c..c + G` inside the candidates.
    #[inline(always)]
    unsafe fn feature<const G: usize>(acc: &mut [__m256; G], xv: __m256, c: *const f32) {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: as the function says.
            unsafe {
                let cv = _mm256_broadcast_ss(&*c.add(j));
                *a = _mm256_add_ps(*a, _mm256_mul_ps(xv, cv));
            }
        }
    }

    /// Candidates `j0..j0 + G` against a batch: `G` accumulators held in registers (a
    /// constant count, or the compiler keeps them in memory).
    ///
    /// # Safety
    /// AVX2 and FMA must be enabled in the caller; as [`rows8`] for the indices.
    #[inline(always)]
    unsafe fn group<const G: usize>(
        b: &BlockIn,
        at: &Batch,
        out: &mut [&mut [f32]],
        mass: &mut [f64],
    ) {
        let n = out.len();
        unsafe {
            let (two, zero) = (_mm256_set1_ps(2.0), _mm256_setzero_ps());
            let mut acc = [zero; G];
            let (dim, full) = (b.dim, b.dim / 8);
            let x = b.x.as_ptr().add(at.i * dim);
            // Eight features of the eight rows at a time, transposed in registers, then
            // added feature by feature (so in feature order, as the contract fixes).
            for q in 0..dim.div_ceil(8) {
                let r8: [__m256; 8] = std::array::from_fn(|r| {
                    let p = x.add(r * dim + 8 * q);
                    if q < full {
                        _mm256_loadu_ps(p)
                    } else {
                        _mm256_maskload_ps(p, at.tail)
                    }
                });
                let t8 = transpose8(r8);
                let c = b.cols.as_ptr().add(8 * q * n + at.j0);
                if q < full {
                    for (l, xv) in t8.iter().enumerate() {
                        feature(&mut acc, *xv, c.add(l * n));
                    }
                } else {
                    for (l, xv) in t8.iter().enumerate().take(dim % 8) {
                        feature(&mut acc, *xv, c.add(l * n));
                    }
                }
            }
            for (j, a) in acc.iter().enumerate() {
                let t = at.j0 + j;
                let d = _mm256_sub_ps(
                    _mm256_add_ps(at.xn, _mm256_broadcast_ss(&b.cnorms[t])),
                    _mm256_mul_ps(two, *a),
                );
                let m = _mm256_min_ps(_mm256_max_ps(d, zero), at.cl);
                _mm256_storeu_ps(out[t].as_mut_ptr().add(at.i), m);
                let mut l = [0.0f32; 8];
                _mm256_storeu_ps(l.as_mut_ptr(), m);
                // Row order, one add at a time, as the contract fixes.
                let mut s = mass[t];
                match at.w {
                    Some(w) => {
                        for r in 0..8 {
                            s += w[r] * l[r] as f64;
                        }
                    }
                    None => {
                        for v in l {
                            s += v as f64;
                        }
                    }
                }
                mass[t] = s;
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
        let mut cols = vec![0.0f32; n * dim];
        for (j, c) in candidates.chunks_exact(dim).enumerate() {
            for (f, &v) in c.iter().enumerate() {
                cols[f * n + j] = v;
            }
        }
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
                    cols: &cols,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A score pass over one block, as a kernel under test.
    type Kernel<'k> = &'k dyn Fn(&BlockIn, &mut [&mut [f32]]) -> Vec<f64>;

    /// The eight-row layout gives the same minima and masses, bit for bit, as the panel
    /// kernel: rows that end mid-batch, features that end mid-vector, weights, more
    /// candidates than one register group, and rows already near a centroid.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_eight_row_layout_scores_the_same_bits_as_the_panels() {
        if !Isa::Avx2.available() {
            eprintln!("no AVX2 here: only the panel kernel exists");
            return;
        }
        for (rows, dim, n, weighted) in [
            (4096, 32, 6, false),
            (1003, 7, 3, true),
            (517, 17, 13, false),
            (64, 1, 1, true),
            (333, 40, 25, true),
        ] {
            let mut rng = Rng::new((rows * dim + n) as u64);
            let x: Vec<f32> = (0..rows * dim)
                .map(|_| (4.0 * rng.normal_pair().0) as f32)
                .collect();
            let w: Vec<f32> = (0..rows).map(|_| (3.0 * rng.uniform()) as f32).collect();
            let closest: Vec<f32> = (0..rows)
                .map(|r| {
                    if r % 5 == 0 {
                        f32::INFINITY
                    } else {
                        (90.0 * rng.uniform()) as f32
                    }
                })
                .collect();
            let norms: Vec<f32> = x.chunks_exact(dim).map(norm).collect();
            let cands: Vec<f32> = (0..n)
                .flat_map(|j| x[(j * 7 % rows) * dim..][..dim].to_vec())
                .collect();
            let lanes = if n <= 8 { 8 } else { 16 };
            let mut cnorms: Vec<f32> = cands.chunks_exact(dim).map(norm).collect();
            cnorms.resize(n.div_ceil(lanes) * lanes, 0.0);
            let panels = if lanes == 8 {
                pack::<8>(&cands, n, dim)
            } else {
                pack::<16>(&cands, n, dim)
            };
            let mut cols = vec![0.0f32; n * dim];
            for (j, c) in cands.chunks_exact(dim).enumerate() {
                for (f, &v) in c.iter().enumerate() {
                    cols[f * n + j] = v;
                }
            }
            let b = BlockIn {
                x: &x,
                w: weighted.then_some(&w[..]),
                norms: &norms,
                closest: &closest,
                panels: &panels,
                cnorms: &cnorms,
                lanes,
                dim,
                cols: &cols,
            };
            let run = |f: Kernel| {
                let mut outs = vec![vec![0.0f32; rows]; n];
                let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|v| &mut v[..]).collect();
                let mass = f(&b, &mut refs);
                let bits: Vec<Vec<u32>> = outs
                    .iter()
                    .map(|v| v.iter().map(|x| x.to_bits()).collect())
                    .collect();
                (mass.iter().map(|m| m.to_bits()).collect::<Vec<_>>(), bits)
            };
            // SAFETY: AVX2 and FMA are available (checked above); dim is within the limit.
            let eight = run(&|b, o| unsafe { x86::rows8(b, o) });
            let panel = run(&|b, o| score_lanes(b, o, 0, Vec::new()));
            let what = format!("rows={rows} dim={dim} n={n} weighted={weighted}");
            assert_eq!(eight.0, panel.0, "{what}: masses");
            assert_eq!(eight.1, panel.1, "{what}: minima");
            // And against f64: each minimum is min(D, d(x, c)) to within f32 rounding.
            for (j, c) in cands.chunks_exact(dim).enumerate() {
                for r in (0..rows).step_by(37) {
                    let d: f64 = (0..dim)
                        .map(|f| (x[r * dim + f] as f64 - c[f] as f64).powi(2))
                        .sum();
                    let want = d.min(closest[r] as f64);
                    let got = f32::from_bits(eight.1[j][r]) as f64;
                    let scale = norms[r] as f64 + cnorms[j] as f64 + 1.0;
                    assert!(
                        (got - want).abs() <= 1e-5 * scale,
                        "{what}: row {r} cand {j}"
                    );
                }
            }
        }
    }
}
