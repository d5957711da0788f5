//! Multi-threaded CPU backend.
//!
//! Rows are cut into fixed blocks (a function of the data only). Each block is assigned and
//! summed on its own, and the block partials are added in f64 in block order. The result is
//! therefore the same bytes whatever the thread count.
//!
//! Within a block, each row's distance to its winner is computed in f32 (eight lane partial
//! sums, reduced in a fixed order), and cluster sums are kept in f32 for runs of [`SUB_ROWS`]
//! rows, then folded into f64. f32 arithmetic over runs this short loses less than scikit-learn's
//! f32 sums over whole chunks, and halves the work per row of the f64 path.

#[cfg(target_arch = "x86_64")]
mod rows;
mod seeding;

use rayon::prelude::*;

use super::{Assignment, Backend, DeviceInfo, FarPoint, Step};
use crate::data::{Block, Rows, slab_blocks};
use crate::error::Result;

/// Rows per reduction block.
const BLOCK_ROWS: usize = 2048;
/// Rows whose cluster sums are kept in f32 before they are folded into the block's f64 sums
/// (a multiple of 8, the rows of a batch of the few-centroid kernel).
pub const SUB_ROWS: usize = 256;
/// Centroids per packed panel: one 512-bit vector of f32.
const LANES: usize = 16;
/// Rows per register tile: the most whose accumulators fit the register file.
const TILE_ROWS: usize = 8;
/// Bytes of centroid panels scanned per pass over a block; sized to stay in L1/L2.
const CHUNK_BYTES: usize = 24 * 1024;

/// Centroids packed for the distance kernel: panels of `LANES` centroids, transposed so one
/// feature of eight centroids is one contiguous vector.
pub struct Packed {
    dim: usize,
    panels: Vec<f32>,
    /// ‖c‖² per packed slot; padding slots hold +∞ so they never win.
    norms: Vec<f32>,
}

impl Packed {
    pub fn new(centroids: &[f32], k: usize, dim: usize) -> Self {
        let n_panels = k.div_ceil(LANES);
        let mut panels = vec![0.0f32; n_panels * dim * LANES];
        let mut norms = vec![f32::INFINITY; n_panels * LANES];
        for j in 0..k {
            let c = &centroids[j * dim..(j + 1) * dim];
            let (p, l) = (j / LANES, j % LANES);
            for (t, &v) in c.iter().enumerate() {
                panels[(p * dim + t) * LANES + l] = v;
            }
            norms[j] = c.iter().map(|v| v * v).sum();
        }
        Packed { dim, panels, norms }
    }

    fn n_panels(&self) -> usize {
        self.norms.len() / LANES
    }
}

/// Instruction sets the kernels are compiled for, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

/// Environment variable that picks the instruction set, so every path can be tested on one
/// machine.
pub const ISA_VAR: &str = "LAKEMEANS_ISA";

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Whether this CPU runs the kernels compiled for `self`.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            match self {
                Isa::Avx512 => avx2 && std::arch::is_x86_feature_detected!("avx512f"),
                Isa::Avx2 => avx2,
                Isa::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Portable
        }
    }
}

/// The instruction set of the CPU kernels: the best this CPU has, unless `LAKEMEANS_ISA` names
/// another one it has (`avx512`, `avx2` or `portable`). A request the CPU cannot serve is
/// refused on stderr and the best set is used. A given machine and setting always takes the
/// same path, so results stay reproducible there.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let best = [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Portable);
        let Ok(want) = std::env::var(ISA_VAR) else {
            return best;
        };
        let all = [Isa::Avx512, Isa::Avx2, Isa::Portable];
        match all.into_iter().find(|i| i.name() == want.trim()) {
            Some(i) if i.available() => i,
            Some(i) => {
                eprintln!(
                    "lakemeans: {ISA_VAR}={want}: this CPU cannot run the {} kernels; using {}",
                    i.name(),
                    best.name()
                );
                best
            }
            None => {
                eprintln!(
                    "lakemeans: {ISA_VAR}={want} is not one of avx512, avx2, portable; using {}",
                    best.name()
                );
                best
            }
        }
    })
}

/// Per-block result before the ordered reduction.
pub struct Partial {
    sums: Vec<f64>,
    weights: Vec<f64>,
    counts: Vec<u64>,
    inertia: f64,
    changed: u64,
    /// f32 cluster sums of the rows since the last fold, and how many rows each cluster took.
    sub: Vec<f32>,
    sub_rows: Vec<u32>,
    /// The block's weighted squared distances, row r into lane r mod 8.
    lanes: [f64; 8],
    /// Whether every row weighs 1: then the f32 sums are plain adds (x · 1 is x) and the
    /// weights are the counts, added at each fold (sums of ones in f64 are exact, so the bits
    /// are those of adding them row by row).
    unit: bool,
}

impl Partial {
    fn zero(k: usize, dim: usize, update: bool, unit: bool) -> Partial {
        let k = if update { k } else { 0 };
        Partial {
            sums: vec![0.0; k * dim],
            weights: vec![0.0; k],
            counts: vec![0; k],
            inertia: 0.0,
            changed: 0,
            sub: vec![0.0; k * dim],
            sub_rows: vec![0; k],
            lanes: [0.0; 8],
            unit,
        }
    }

    /// Adds row `xr` with weight `w` to cluster `j`'s weight and f32 run sums.
    ///
    /// # Safety
    /// `V`'s instruction set must be enabled in the caller.
    #[inline(always)]
    unsafe fn add_row<V: Simd>(&mut self, j: usize, xr: &[f32], w: f32) {
        let dim = xr.len();
        self.sub_rows[j] += 1;
        let w = if self.unit {
            None
        } else {
            self.weights[j] += w as f64;
            Some(w)
        };
        // SAFETY: as the function says.
        unsafe { V::scale_add(&mut self.sub[j * dim..(j + 1) * dim], xr, w) };
    }

    /// Folds the f32 sums of the clusters that took rows since the last fold into f64.
    fn fold(&mut self, dim: usize) {
        for (j, n) in self.sub_rows.iter_mut().enumerate() {
            if *n == 0 {
                continue;
            }
            self.counts[j] += *n as u64;
            if self.unit {
                self.weights[j] += *n as f64;
            }
            *n = 0;
            let sub = &mut self.sub[j * dim..(j + 1) * dim];
            for (a, b) in self.sums[j * dim..(j + 1) * dim].iter_mut().zip(sub) {
                *a += *b as f64;
                *b = 0.0;
            }
        }
    }

    /// Ends the block: the last fold, and the inertia from its lanes.
    fn finish(&mut self, dim: usize) {
        self.fold(dim);
        let l = &self.lanes;
        self.inertia = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    }
}

/// Widest centroid set held in registers by the lane kernels.
const MAX_LANES: usize = 64;

/// One step's centroids, laid out once for every block's pass.
pub struct Pass {
    k: usize,
    dim: usize,
    /// Whether this is the first step, which counts every row as changed.
    first: bool,
    update: bool,
    isa: Isa,
    kernel: Kernel,
    /// The centroids row-major, for the distance of each row to its winner.
    cents: Vec<f32>,
}

enum Kernel {
    /// Few centroids: all of them in `width` lanes (a power of two ≥ k, whole vectors), one
    /// feature per vector, `cols[t * width + l]` = feature t of centroid l. Scores stay in
    /// registers.
    Lanes {
        cols: Vec<f32>,
        /// ‖c‖² per lane; +∞ past k so padding never wins.
        norms: Vec<f32>,
    },
    /// Many centroids: packed panels scanned in cache-sized chunks, running minima in memory.
    Panels(Packed),
    /// Few centroids on AVX2 or AVX-512: eight rows per vector ([`rows`]).
    #[cfg(target_arch = "x86_64")]
    Rows(rows::Cols),
}

/// ‖c‖² as the distance kernels use it (f32, in feature order).
fn sq_norm(c: &[f32]) -> f32 {
    c.iter().map(|v| v * v).sum()
}

impl Kernel {
    /// The eight-rows kernel, where the instruction set and the shape allow it.
    fn rows(centroids: &[f32], k: usize, dim: usize, isa: Isa) -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        if isa != Isa::Portable && k <= rows::MAX_K && dim <= rows::MAX_DIM {
            return Some(Kernel::Rows(rows::Cols::new(centroids, k, dim)));
        }
        let _ = (centroids, k, dim, isa);
        None
    }

    /// Centroids in lanes, where they fit whole vectors (16 lanes on AVX-512, 8 elsewhere).
    fn lanes(centroids: &[f32], k: usize, dim: usize, isa: Isa) -> Option<Kernel> {
        let width = k
            .next_power_of_two()
            .max(if isa == Isa::Avx512 { 16 } else { 8 });
        if width > MAX_LANES || width * dim * 4 > CHUNK_BYTES {
            return None;
        }
        let mut cols = vec![0.0f32; dim * width];
        let mut norms = vec![f32::INFINITY; width];
        for (j, c) in centroids.chunks_exact(dim).take(k).enumerate() {
            for (t, &v) in c.iter().enumerate() {
                cols[t * width + j] = v;
            }
            norms[j] = sq_norm(c);
        }
        Some(Kernel::Lanes { cols, norms })
    }
}

impl Pass {
    pub fn new(centroids: &[f32], k: usize, dim: usize, first: bool, update: bool) -> Pass {
        Pass::with_isa(centroids, k, dim, first, update, isa())
    }

    fn with_isa(
        centroids: &[f32],
        k: usize,
        dim: usize,
        first: bool,
        update: bool,
        isa: Isa,
    ) -> Pass {
        let kernel = Kernel::rows(centroids, k, dim, isa)
            .or_else(|| Kernel::lanes(centroids, k, dim, isa))
            .unwrap_or_else(|| Kernel::Panels(Packed::new(centroids, k, dim)));
        Pass {
            k,
            dim,
            first,
            update,
            isa,
            kernel,
            cents: centroids[..k * dim].to_vec(),
        }
    }

    /// The whole pass over one block of rows (`x` row-major, `w` their weights): each row's
    /// nearest centroid and squared distance (‖x − c‖² computed directly, not from the score)
    /// go to `labels` and `dists` (whose old labels count the changes), and the block's inertia
    /// and, with `update`, its per-cluster sums come back. The block is read once, while it is in cache.
    pub fn block(
        &self,
        x: &[f32],
        w: Option<&[f32]>,
        labels: &mut [u32],
        dists: &mut [f32],
    ) -> Partial {
        let rows = labels.len();
        assert_eq!(x.len(), rows * self.dim);
        assert_eq!(dists.len(), rows);
        assert!(w.is_none_or(|w| w.len() == rows));
        let b = BlockRows {
            x,
            w,
            labels,
            dists,
        };
        match self.isa {
            // SAFETY: the kernel is only built for AVX2 or AVX-512, which include AVX2 and FMA,
            // and within its shape limits.
            #[cfg(target_arch = "x86_64")]
            _ if let Kernel::Rows(cols) = &self.kernel => unsafe { rows::block(self, cols, b) },
            // SAFETY: `isa()` only picks an instruction set this CPU has.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::block_avx512(self, b) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::block_avx2(self, b) },
            _ => block_portable(self, b),
        }
    }

    /// Records row `r`'s winner `j`: its label (counting a change), its distance, and its
    /// share of the inertia and, with `update`, of cluster j's sums. Everything is added in
    /// row order, so each block's partial is fixed by its rows alone; the eight-rows kernel
    /// does the same arithmetic, so every kernel gives the same bits.
    ///
    /// # Safety
    /// `V`'s instruction set must be enabled in the caller.
    #[inline(always)]
    unsafe fn settle<V: Simd>(&self, b: &mut BlockRows, part: &mut Partial, r: usize, j: usize) {
        let dim = self.dim;
        // SAFETY: the caller runs with `V`'s instruction set.
        unsafe {
            let d = V::dist(
                &b.x[r * dim..(r + 1) * dim],
                &self.cents[j * dim..(j + 1) * dim],
            );
            self.record::<V>(b, part, r, j, d);
        }
    }

    /// [`Pass::settle`] once the distance `d` of row `r` to its winner `j` is known (the
    /// eight-rows kernel computes eight at a time).
    ///
    /// # Safety
    /// `V`'s instruction set must be enabled in the caller.
    #[inline(always)]
    unsafe fn record<V: Simd>(
        &self,
        b: &mut BlockRows,
        part: &mut Partial,
        r: usize,
        j: usize,
        d: f32,
    ) {
        let dim = self.dim;
        let xr = &b.x[r * dim..(r + 1) * dim];
        part.changed += (self.first || b.labels[r] != j as u32) as u64;
        b.labels[r] = j as u32;
        b.dists[r] = d;
        let w = b.w.map_or(1.0, |w| w[r]);
        part.lanes[r % 8] += w as f64 * d as f64;
        if self.update {
            // SAFETY: as above.
            unsafe { part.add_row::<V>(j, xr, w) };
            if (r + 1).is_multiple_of(SUB_ROWS) {
                part.fold(dim);
            }
        }
    }
}

/// One block's rows and the slices its results go to.
struct BlockRows<'a> {
    x: &'a [f32],
    w: Option<&'a [f32]>,
    labels: &'a mut [u32],
    dists: &'a mut [f32],
}

/// Kernel flavours, as constants so each path is compiled separately.
const AVX512: u8 = 0;
const AVX2: u8 = 1;
const PORTABLE: u8 = 2;

/// The whole-block pass on the portable path.
fn block_portable(pass: &Pass, b: BlockRows) -> Partial {
    // SAFETY: the portable vectors need no instruction set.
    unsafe { block_body::<Portable>(pass, b) }
}

/// Runs the lane or the panel kernel over one block and returns its partial. No closures on
/// this path: one could be compiled apart from the instruction set of its caller.
///
/// # Safety
/// `V`'s instruction set must be enabled in the caller.
#[inline(always)]
unsafe fn block_body<V: Simd>(pass: &Pass, mut b: BlockRows) -> Partial {
    let mut part = Partial::zero(pass.k, pass.dim, pass.update, b.w.is_none());
    // SAFETY: the caller runs with `V`'s instruction set.
    unsafe {
        match &pass.kernel {
            Kernel::Lanes { cols, norms } => V::lanes(pass, cols, norms, &mut b, &mut part),
            Kernel::Panels(packed) => panels::<V>(pass, packed, &mut b, &mut part),
            #[cfg(target_arch = "x86_64")]
            Kernel::Rows(_) => unreachable!("the eight-rows kernel has its own entry"),
        }
    }
    part.finish(pass.dim);
    part
}

/// `s += w · x`, element by element, a product and a sum (no fused multiply-add), so every
/// instruction set and kernel gives the same bits; `s += x` without a weight.
#[inline(always)]
fn scale_add(s: &mut [f32], x: &[f32], w: Option<f32>) {
    match w {
        Some(w) => {
            for (a, &v) in s.iter_mut().zip(x) {
                *a += w * v;
            }
        }
        None => {
            for (a, &v) in s.iter_mut().zip(x) {
                *a += v;
            }
        }
    }
}

/// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)): the one order in which every kernel
/// reduces a distance's eight lane partial sums.
#[inline(always)]
fn tree8(l: [f32; 8]) -> f32 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// ‖a − b‖² in f32: feature t goes to lane t mod 8 (products and sums apart, as the portable
/// kernels compute), then [`tree8`].
#[inline(always)]
fn dist_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut l = [0.0f32; 8];
    for (t, (&x, &c)) in a.iter().zip(b).enumerate() {
        let d = x - c;
        l[t % 8] += d * d;
    }
    tree8(l)
}

/// A vector of f32 lanes on one instruction set: just what the lane kernel needs.
trait Simd: Copy {
    /// Which of AVX512, AVX2 and PORTABLE this is.
    const KIND: u8;
    /// f32 lanes per vector.
    const N: usize;
    /// # Safety (every method)
    /// Runs only inside a function compiled for the instruction set; pointers must be valid
    /// for `N` values.
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// a·b + c: fused on the SIMD paths (as their panel kernels are), two roundings on the
    /// portable one (as its panel kernel does).
    unsafe fn madd(a: Self, b: Self, c: Self) -> Self;
    unsafe fn min(a: Self, b: Self) -> Self;
    /// The smallest lane, in every lane.
    unsafe fn hmin(self) -> Self;
    /// Bit l set where lane l of `a` equals lane l of `b`.
    unsafe fn eq_mask(a: Self, b: Self) -> u64;
    /// ‖a − b‖² of a row and its winner, in eight lane partial sums reduced by [`tree8`].
    #[inline(always)]
    unsafe fn dist(a: &[f32], b: &[f32]) -> f32 {
        dist_portable(a, b)
    }
    /// [`scale_add`]: the same bits on every instruction set.
    #[inline(always)]
    unsafe fn scale_add(s: &mut [f32], x: &[f32], w: Option<f32>) {
        scale_add(s, x, w)
    }
    /// [`lanes`] at `cols.len() / dim` lanes, with this set's rows per tile (about eight
    /// vector accumulators live).
    unsafe fn lanes(
        pass: &Pass,
        cols: &[f32],
        norms: &[f32],
        b: &mut BlockRows,
        part: &mut Partial,
    );
}

/// Plain arrays, which the compiler vectorises for the baseline instruction set.
#[derive(Clone, Copy)]
struct Portable([f32; 8]);

impl Simd for Portable {
    const KIND: u8 = PORTABLE;
    const N: usize = 8;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 8])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller passes a pointer valid for 8 values.
        Portable(unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) })
    }
    #[inline(always)]
    unsafe fn madd(a: Self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l] * b.0[l] + c.0[l]))
    }
    #[inline(always)]
    unsafe fn min(a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| {
            if b.0[l] < a.0[l] { b.0[l] } else { a.0[l] }
        }))
    }
    #[inline(always)]
    unsafe fn hmin(self) -> Self {
        let m = self
            .0
            .iter()
            .fold(self.0[0], |m, &v| if v < m { v } else { m });
        Portable([m; 8])
    }
    #[inline(always)]
    unsafe fn eq_mask(a: Self, b: Self) -> u64 {
        (0..8).fold(0, |m, l| m | ((a.0[l] == b.0[l]) as u64) << l)
    }
    #[inline(always)]
    unsafe fn lanes(
        pass: &Pass,
        cols: &[f32],
        norms: &[f32],
        b: &mut BlockRows,
        part: &mut Partial,
    ) {
        unsafe {
            match cols.len() / pass.dim {
                8 => lanes::<Self, 1, 4>(pass, cols, norms, b, part),
                16 => lanes::<Self, 2, 2>(pass, cols, norms, b, part),
                32 => lanes::<Self, 4, 1>(pass, cols, norms, b, part),
                _ => lanes::<Self, 8, 1>(pass, cols, norms, b, part),
            }
        }
    }
}

/// All `k` centroids against the block, `R` rows at a time, in `NV` vectors of `V::N` lanes
/// (lane l = centroid l; lanes past k have zero columns and norm +∞, so they never win).
/// For each feature t, the column of t over the centroids is loaded once per tile, and each
/// row's x_t is broadcast and multiplied into its accumulators, so ⟨x, c_l⟩ builds up in lane
/// l in feature order exactly as in the panel kernels. The score ‖c_l‖² − 2⟨x, c_l⟩ is then
/// reduced in registers: the smallest value in every lane, a bit mask of the lanes equal to
/// it, and its lowest set bit, which is the lowest index on ties.
///
/// # Safety
/// `V`'s instruction set must be enabled in the caller; `cols` holds `dim` columns of
/// `NV * V::N` lanes and `norms` one vector's worth per lane.
#[inline(always)]
unsafe fn lanes<V: Simd, const NV: usize, const R: usize>(
    pass: &Pass,
    cols: &[f32],
    norms: &[f32],
    b: &mut BlockRows,
    part: &mut Partial,
) {
    let width = NV * V::N;
    assert!(cols.len() == pass.dim * width && norms.len() == width);
    let rows = b.labels.len();
    let mut i = 0;
    // SAFETY: rows i..i + R exist in `b.x` (checked against `dim` by `Pass::block`), and the
    // column and norm slices have the lengths asserted above.
    unsafe {
        while i + R <= rows {
            lane_tile::<V, NV, R>(pass, cols, norms, b, part, i);
            i += R;
        }
        while i < rows {
            lane_tile::<V, NV, 1>(pass, cols, norms, b, part, i);
            i += 1;
        }
    }
}

/// # Safety
/// As [`lanes`], and rows `i..i + R` exist.
#[inline(always)]
unsafe fn lane_tile<V: Simd, const NV: usize, const R: usize>(
    pass: &Pass,
    cols: &[f32],
    norms: &[f32],
    b: &mut BlockRows,
    part: &mut Partial,
    i: usize,
) {
    let dim = pass.dim;
    unsafe {
        let mut xp = [b.x.as_ptr(); R];
        for (r, p) in xp.iter_mut().enumerate() {
            *p = p.add((i + r) * dim);
        }
        let minus2 = V::splat(-2.0);
        let mut acc = [[V::splat(0.0); NV]; R];
        let mut c = cols.as_ptr();
        for t in 0..dim {
            let mut col = [minus2; NV];
            for (v, cv) in col.iter_mut().enumerate() {
                *cv = V::load(c.add(v * V::N));
            }
            for r in 0..R {
                let xv = V::splat(*xp[r].add(t));
                for v in 0..NV {
                    acc[r][v] = V::madd(xv, col[v], acc[r][v]);
                }
            }
            c = c.add(NV * V::N);
        }
        let mut nrm = [minus2; NV];
        for (v, nv) in nrm.iter_mut().enumerate() {
            *nv = V::load(norms.as_ptr().add(v * V::N));
        }
        for (r, acc) in acc.iter().enumerate() {
            // Plain loops: a closure here may be compiled apart, without the instruction set.
            let mut s = [minus2; NV];
            for v in 0..NV {
                s[v] = V::madd(minus2, acc[v], nrm[v]);
            }
            let mut m = s[0];
            for &sv in &s[1..] {
                m = V::min(m, sv);
            }
            let m = m.hmin();
            let mut hits = 0u64;
            for (v, &sv) in s.iter().enumerate() {
                hits |= V::eq_mask(sv, m) << (v * V::N);
            }
            // No lane equals the minimum only if a score is NaN (overflowing data); row 0 then.
            let j = hits.trailing_zeros() as usize;
            pass.settle::<V>(b, part, i + r, if j < pass.k { j } else { 0 });
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{AVX2, AVX512, BlockRows, Partial, Pass, Simd, block_body, lanes};

    /// Lanes `0..n` set (n < 8), for the last, short chunk of a row.
    ///
    /// # Safety
    /// AVX2 must be enabled in the caller.
    #[inline(always)]
    pub(super) unsafe fn tail_mask(n: usize) -> __m256i {
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }

    /// The eight lane partial sums of ‖x − c‖² (feature t in lane t mod 8, fused
    /// multiply-adds), for [`super::tree8`].
    ///
    /// # Safety
    /// AVX2 and FMA must be enabled in the caller; `x` and `c` must be valid for `dim` values.
    #[inline(always)]
    pub(super) unsafe fn diff_sq8(x: *const f32, c: *const f32, dim: usize) -> __m256 {
        let full = dim / 8;
        unsafe {
            let mut acc = _mm256_setzero_ps();
            for q in 0..full {
                let d = _mm256_sub_ps(_mm256_loadu_ps(x.add(8 * q)), _mm256_loadu_ps(c.add(8 * q)));
                acc = _mm256_fmadd_ps(d, d, acc);
            }
            if !dim.is_multiple_of(8) {
                let m = tail_mask(dim % 8);
                let d = _mm256_sub_ps(
                    _mm256_maskload_ps(x.add(8 * full), m),
                    _mm256_maskload_ps(c.add(8 * full), m),
                );
                acc = _mm256_fmadd_ps(d, d, acc);
            }
            acc
        }
    }

    /// [`super::scale_add`] on raw pointers, eight values at a time (same bits).
    ///
    /// # Safety
    /// AVX2 must be enabled in the caller; `s` and `x` must be valid for `dim` values.
    #[inline(always)]
    unsafe fn scale_add8(s: *mut f32, x: *const f32, w: Option<f32>, dim: usize) {
        let full = dim / 8;
        unsafe {
            for q in 0..full {
                let (sp, xv) = (s.add(8 * q), _mm256_loadu_ps(x.add(8 * q)));
                _mm256_storeu_ps(sp, _mm256_add_ps(_mm256_loadu_ps(sp), weighted(xv, w)));
            }
            if !dim.is_multiple_of(8) {
                let m = tail_mask(dim % 8);
                let (sp, xv) = (s.add(8 * full), _mm256_maskload_ps(x.add(8 * full), m));
                let v = _mm256_add_ps(_mm256_maskload_ps(sp, m), weighted(xv, w));
                _mm256_maskstore_ps(sp, m, v);
            }
        }
    }

    /// `w · x`, or `x` without a weight. A function, not a closure: an intrinsic in a closure
    /// kept out of line is built without AVX2 and becomes a call.
    ///
    /// # Safety
    /// AVX must be enabled in the caller.
    #[inline(always)]
    unsafe fn weighted(xv: __m256, w: Option<f32>) -> __m256 {
        match w {
            Some(w) => unsafe { _mm256_mul_ps(_mm256_set1_ps(w), xv) },
            None => xv,
        }
    }

    /// `s += x` for `dim` values: [`scale_add8`] without a weight.
    ///
    /// # Safety
    /// AVX2 must be enabled in the caller; `s` and `x` must be valid for `dim` values.
    #[inline(always)]
    pub(super) unsafe fn add8(s: *mut f32, x: *const f32, dim: usize) {
        unsafe { scale_add8(s, x, None, dim) }
    }

    /// [`Simd::dist`] on AVX2 and AVX-512 alike.
    ///
    /// # Safety
    /// AVX2 and FMA must be enabled in the caller.
    #[inline(always)]
    unsafe fn dist8(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let mut l = [0.0f32; 8];
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), diff_sq8(a.as_ptr(), b.as_ptr(), a.len())) };
        super::tree8(l)
    }

    #[derive(Clone, Copy)]
    pub struct Avx2(__m256);

    impl Simd for Avx2 {
        const KIND: u8 = AVX2;
        const N: usize = 8;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { Avx2(_mm256_set1_ps(v)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { Avx2(_mm256_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn madd(a: Self, b: Self, c: Self) -> Self {
            unsafe { Avx2(_mm256_fmadd_ps(a.0, b.0, c.0)) }
        }
        #[inline(always)]
        unsafe fn min(a: Self, b: Self) -> Self {
            unsafe { Avx2(_mm256_min_ps(a.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn hmin(self) -> Self {
            unsafe {
                let a = _mm256_min_ps(self.0, _mm256_permute2f128_ps::<1>(self.0, self.0));
                let b = _mm256_min_ps(a, _mm256_shuffle_ps::<0b01_00_11_10>(a, a));
                Avx2(_mm256_min_ps(b, _mm256_shuffle_ps::<0b10_11_00_01>(b, b)))
            }
        }
        #[inline(always)]
        unsafe fn eq_mask(a: Self, b: Self) -> u64 {
            unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a.0, b.0)) as u32 as u64 }
        }
        #[inline(always)]
        unsafe fn dist(a: &[f32], b: &[f32]) -> f32 {
            unsafe { dist8(a, b) }
        }
        #[inline(always)]
        unsafe fn scale_add(s: &mut [f32], x: &[f32], w: Option<f32>) {
            assert_eq!(s.len(), x.len());
            unsafe { scale_add8(s.as_mut_ptr(), x.as_ptr(), w, x.len()) }
        }
        #[inline(always)]
        unsafe fn lanes(
            pass: &Pass,
            cols: &[f32],
            norms: &[f32],
            b: &mut BlockRows,
            part: &mut Partial,
        ) {
            unsafe {
                match cols.len() / pass.dim {
                    8 => lanes::<Self, 1, 8>(pass, cols, norms, b, part),
                    16 => lanes::<Self, 2, 4>(pass, cols, norms, b, part),
                    32 => lanes::<Self, 4, 2>(pass, cols, norms, b, part),
                    _ => lanes::<Self, 8, 1>(pass, cols, norms, b, part),
                }
            }
        }
    }

    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl Simd for Avx512 {
        const KIND: u8 = AVX512;
        const N: usize = 16;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { Avx512(_mm512_set1_ps(v)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { Avx512(_mm512_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn madd(a: Self, b: Self, c: Self) -> Self {
            unsafe { Avx512(_mm512_fmadd_ps(a.0, b.0, c.0)) }
        }
        #[inline(always)]
        unsafe fn min(a: Self, b: Self) -> Self {
            unsafe { Avx512(_mm512_min_ps(a.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn hmin(self) -> Self {
            unsafe { Avx512(_mm512_set1_ps(_mm512_reduce_min_ps(self.0))) }
        }
        #[inline(always)]
        unsafe fn eq_mask(a: Self, b: Self) -> u64 {
            unsafe { _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a.0, b.0) as u64 }
        }
        #[inline(always)]
        unsafe fn dist(a: &[f32], b: &[f32]) -> f32 {
            unsafe { dist8(a, b) }
        }
        #[inline(always)]
        unsafe fn scale_add(s: &mut [f32], x: &[f32], w: Option<f32>) {
            assert_eq!(s.len(), x.len());
            unsafe { scale_add8(s.as_mut_ptr(), x.as_ptr(), w, x.len()) }
        }
        #[inline(always)]
        unsafe fn lanes(
            pass: &Pass,
            cols: &[f32],
            norms: &[f32],
            b: &mut BlockRows,
            part: &mut Partial,
        ) {
            unsafe {
                match cols.len() / pass.dim {
                    16 => lanes::<Self, 1, 8>(pass, cols, norms, b, part),
                    32 => lanes::<Self, 2, 4>(pass, cols, norms, b, part),
                    _ => lanes::<Self, 4, 2>(pass, cols, norms, b, part),
                }
            }
        }
    }

    /// The whole-block pass on AVX-512.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn block_avx512(pass: &Pass, b: BlockRows) -> Partial {
        // SAFETY: this function is compiled for AVX-512.
        unsafe { block_body::<Avx512>(pass, b) }
    }

    /// The whole-block pass on AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block_avx2(pass: &Pass, b: BlockRows) -> Partial {
        // SAFETY: this function is compiled for AVX2 and FMA.
        unsafe { block_body::<Avx2>(pass, b) }
    }
}

/// The smallest of `s`, by a fixed pairwise tree the compiler turns into vector minima.
#[inline(always)]
fn tree_min<const L: usize>(s: &[f32; L]) -> f32 {
    let mut m = *s;
    let mut h = L / 2;
    while h > 0 {
        for l in 0..h {
            if m[l + h] < m[l] {
                m[l] = m[l + h];
            }
        }
        h /= 2;
    }
    m[0]
}

thread_local! {
    /// Running minima of the panel kernels: `LANES` scores and indices per row of a block.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<i32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Many centroids: each row keeps a running minimum per lane (one lane per centroid slot of a
/// panel); panels are scanned in cache-sized chunks in increasing order with a strict `<`,
/// and the lanes are merged at the end preferring the lower index on equal scores, which is
/// the lowest-index tie rule overall.
///
/// # Safety
/// `V`'s instruction set must be enabled in the caller.
#[inline(always)]
unsafe fn panels<V: Simd>(pass: &Pass, packed: &Packed, b: &mut BlockRows, part: &mut Partial) {
    let rows = b.labels.len();
    let x = b.x;
    // Taken out and put back rather than borrowed in a closure (see `block_body`).
    let (mut best_s, mut best_i) = SCRATCH.take();
    {
        best_s.clear();
        best_s.resize(rows * LANES, f32::INFINITY);
        best_i.clear();
        best_i.resize(rows * LANES, 0);
        let panels_per_chunk = (CHUNK_BYTES / (pass.dim * LANES * 4)).max(2);
        let n_panels = packed.n_panels();
        let tile_rows = if V::KIND == AVX512 {
            TILE_ROWS
        } else {
            TILE_ROWS / 2
        };
        let mut p0 = 0;
        while p0 < n_panels {
            let p1 = (p0 + panels_per_chunk).min(n_panels);
            let mut i = 0;
            while i < rows {
                let r = tile_rows.min(rows - i);
                match V::KIND {
                    // SAFETY: `V` is the instruction set `isa()` found on this CPU, and the
                    // slices the kernels read were checked against `rows` and `dim`.
                    #[cfg(target_arch = "x86_64")]
                    AVX512 => unsafe {
                        simd::tile_avx512::<TILE_ROWS>(
                            x,
                            i,
                            r,
                            packed,
                            p0,
                            p1,
                            &mut best_s,
                            &mut best_i,
                        )
                    },
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    AVX2 => unsafe {
                        simd::tile_avx2::<{ TILE_ROWS / 2 }>(
                            x,
                            i,
                            r,
                            packed,
                            p0,
                            p1,
                            &mut best_s,
                            &mut best_i,
                        )
                    },
                    _ => tile_portable(x, i, r, packed, p0, p1, &mut best_s, &mut best_i),
                }
                i += r;
            }
            p0 = p1;
        }
        let (s, _) = best_s.as_chunks::<LANES>();
        let (idx, _) = best_i.as_chunks::<LANES>();
        for (r, (s, idx)) in s.iter().zip(idx).enumerate() {
            let m = tree_min(s);
            let mut j = i32::MAX;
            for l in 0..LANES {
                if s[l] == m && idx[l] < j {
                    j = idx[l];
                }
            }
            let j = if (j as usize) < pass.k { j as usize } else { 0 };
            // SAFETY: the caller runs with `V`'s instruction set.
            unsafe { pass.settle::<V>(b, part, r, j) };
        }
    }
    SCRATCH.set((best_s, best_i));
}

/// Rows `i..i + rows` against panels `p0..p1`, without SIMD intrinsics.
#[allow(clippy::too_many_arguments)]
fn tile_portable(
    x: &[f32],
    i: usize,
    rows: usize,
    packed: &Packed,
    p0: usize,
    p1: usize,
    best_s: &mut [f32],
    best_i: &mut [i32],
) {
    let dim = packed.dim;
    for r in i..i + rows {
        let xr = &x[r * dim..(r + 1) * dim];
        for p in p0..p1 {
            let panel = &packed.panels[p * dim * LANES..(p + 1) * dim * LANES];
            let mut acc = [0.0f32; LANES];
            for (col, &xv) in panel.chunks_exact(LANES).zip(xr) {
                for l in 0..LANES {
                    acc[l] += xv * col[l];
                }
            }
            for l in 0..LANES {
                let s = packed.norms[p * LANES + l] - 2.0 * acc[l];
                if s < best_s[r * LANES + l] {
                    best_s[r * LANES + l] = s;
                    best_i[r * LANES + l] = (p * LANES + l) as i32;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{LANES, Packed};

    /// Pointers to the rows of a tile; short tiles repeat their last row, and only the first
    /// `rows` results are stored.
    #[inline(always)]
    fn row_ptrs<const R: usize>(x: &[f32], i: usize, rows: usize, dim: usize) -> [*const f32; R] {
        std::array::from_fn(|r| x[(i + r.min(rows - 1)) * dim..].as_ptr())
    }

    /// Up to `R` rows against panels `p0..p1`, two 16-centroid panels at a time: eight
    /// 512-bit accumulators of x·c, then a lane-wise min of ‖c‖² − 2·x·c.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `x` must hold rows `i..i + rows` of `packed.dim` values
    /// and `best_s`/`best_i` `LANES` entries for each of them.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_avx512<const R: usize>(
        x: &[f32],
        i: usize,
        rows: usize,
        packed: &Packed,
        p0: usize,
        p1: usize,
        best_s: &mut [f32],
        best_i: &mut [i32],
    ) {
        let dim = packed.dim;
        let xp = row_ptrs::<R>(x, i, rows, dim);
        let bsp = best_s[i * LANES..(i + rows) * LANES].as_mut_ptr();
        let bip = best_i[i * LANES..(i + rows) * LANES].as_mut_ptr();
        unsafe {
            let mut bs: [__m512; R] =
                std::array::from_fn(|r| _mm512_loadu_ps(bsp.add(r.min(rows - 1) * LANES)));
            let mut bi: [__m512i; R] = std::array::from_fn(|r| {
                _mm512_loadu_si512(bip.add(r.min(rows - 1) * LANES) as *const __m512i)
            });
            let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let two = _mm512_set1_ps(2.0);
            let panels = packed.panels.as_ptr();
            let norms = packed.norms.as_ptr();
            let mut p = p0;
            while p < p1 {
                let pair = p + 1 < p1;
                let a = panels.add(p * dim * LANES);
                let b = if pair { a.add(dim * LANES) } else { a };
                let mut acc0 = [_mm512_setzero_ps(); R];
                let mut acc1 = [_mm512_setzero_ps(); R];
                for t in 0..dim {
                    let ca = _mm512_loadu_ps(a.add(t * LANES));
                    let cb = _mm512_loadu_ps(b.add(t * LANES));
                    for r in 0..R {
                        let xv = _mm512_set1_ps(*xp[r].add(t));
                        acc0[r] = _mm512_fmadd_ps(xv, ca, acc0[r]);
                        acc1[r] = _mm512_fmadd_ps(xv, cb, acc1[r]);
                    }
                }
                let count = if pair { 2 } else { 1 };
                for (h, acc) in [acc0, acc1].iter().take(count).enumerate() {
                    let n = _mm512_loadu_ps(norms.add((p + h) * LANES));
                    let idx = _mm512_add_epi32(lane, _mm512_set1_epi32(((p + h) * LANES) as i32));
                    for r in 0..R {
                        // 2·acc is exact, so the fused form rounds exactly like ‖c‖² − 2·x·c.
                        let s = _mm512_fnmadd_ps(two, acc[r], n);
                        let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(s, bs[r]);
                        bs[r] = _mm512_mask_blend_ps(m, bs[r], s);
                        bi[r] = _mm512_mask_blend_epi32(m, bi[r], idx);
                    }
                }
                p += count;
            }
            for r in 0..rows {
                _mm512_storeu_ps(bsp.add(r * LANES), bs[r]);
                _mm512_storeu_si512(bip.add(r * LANES) as *mut __m512i, bi[r]);
            }
        }
    }

    /// The same on 256-bit registers: one 16-centroid panel as two halves.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; otherwise as [`tile_avx512`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_avx2<const R: usize>(
        x: &[f32],
        i: usize,
        rows: usize,
        packed: &Packed,
        p0: usize,
        p1: usize,
        best_s: &mut [f32],
        best_i: &mut [i32],
    ) {
        let dim = packed.dim;
        let xp = row_ptrs::<R>(x, i, rows, dim);
        let bsp = best_s[i * LANES..(i + rows) * LANES].as_mut_ptr();
        let bip = best_i[i * LANES..(i + rows) * LANES].as_mut_ptr();
        unsafe {
            let load_s =
                |r: usize, h: usize| _mm256_loadu_ps(bsp.add(r.min(rows - 1) * LANES + h * 8));
            let load_i = |r: usize, h: usize| {
                _mm256_loadu_si256(bip.add(r.min(rows - 1) * LANES + h * 8) as *const __m256i)
            };
            let mut bs: [[__m256; 2]; R] = std::array::from_fn(|r| [load_s(r, 0), load_s(r, 1)]);
            let mut bi: [[__m256i; 2]; R] = std::array::from_fn(|r| [load_i(r, 0), load_i(r, 1)]);
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let two = _mm256_set1_ps(2.0);
            let panels = packed.panels.as_ptr();
            let norms = packed.norms.as_ptr();
            for p in p0..p1 {
                let a = panels.add(p * dim * LANES);
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                for t in 0..dim {
                    let lo = _mm256_loadu_ps(a.add(t * LANES));
                    let hi = _mm256_loadu_ps(a.add(t * LANES + 8));
                    for r in 0..R {
                        let xv = _mm256_broadcast_ss(&*xp[r].add(t));
                        acc[r][0] = _mm256_fmadd_ps(xv, lo, acc[r][0]);
                        acc[r][1] = _mm256_fmadd_ps(xv, hi, acc[r][1]);
                    }
                }
                for h in 0..2 {
                    let n = _mm256_loadu_ps(norms.add(p * LANES + h * 8));
                    let idx = _mm256_add_epi32(lane, _mm256_set1_epi32((p * LANES + h * 8) as i32));
                    for r in 0..R {
                        let s = _mm256_fnmadd_ps(two, acc[r][h], n);
                        let m = _mm256_cmp_ps::<_CMP_LT_OQ>(s, bs[r][h]);
                        bs[r][h] = _mm256_blendv_ps(bs[r][h], s, m);
                        bi[r][h] = _mm256_castps_si256(_mm256_blendv_ps(
                            _mm256_castsi256_ps(bi[r][h]),
                            _mm256_castsi256_ps(idx),
                            m,
                        ));
                    }
                }
            }
            for r in 0..rows {
                for h in 0..2 {
                    _mm256_storeu_ps(bsp.add(r * LANES + h * 8), bs[r][h]);
                    _mm256_storeu_si256(bip.add(r * LANES + h * 8) as *mut __m256i, bi[r][h]);
                }
            }
        }
    }
}

/// Nearest centroid of every row of a slab, block by block in parallel.
pub fn assign_slab(slab: &crate::data::Batch, pass: &Pass, labels: &mut [u32], dists: &mut [f32]) {
    let dim = pass.dim;
    labels
        .par_chunks_mut(BLOCK_ROWS)
        .zip(dists.par_chunks_mut(BLOCK_ROWS))
        .enumerate()
        .for_each(|(i, (l, d))| {
            let lo = i * BLOCK_ROWS;
            let x = &slab.values[lo * dim..(lo + l.len()) * dim];
            let w = slab.weights.as_ref().map(|w| &w[lo..lo + l.len()]);
            pass.block(x, w, l, d);
        });
}

pub struct CpuBackend<'a> {
    data: &'a dyn Rows,
    labels: Vec<u32>,
    distances: Vec<f32>,
    /// False until the first step, so the first step counts every row as changed.
    assigned: bool,
    seeding: seeding::State,
}

impl<'a> CpuBackend<'a> {
    pub fn new(data: &'a dyn Rows) -> Self {
        CpuBackend {
            data,
            labels: vec![0; data.rows()],
            distances: vec![0.0; data.rows()],
            assigned: false,
            seeding: seeding::State::default(),
        }
    }
}

impl Partial {
    fn add(&mut self, p: &Partial) {
        self.inertia += p.inertia;
        self.changed += p.changed;
        for (a, b) in self.sums.iter_mut().zip(&p.sums) {
            *a += b;
        }
        for (a, b) in self.weights.iter_mut().zip(&p.weights) {
            *a += b;
        }
        for (a, b) in self.counts.iter_mut().zip(&p.counts) {
            *a += b;
        }
    }
}

impl Backend for CpuBackend<'_> {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            kind: "cpu".into(),
            name: format!("{} threads, {}", rayon::current_num_threads(), isa().name()),
            api: None,
        }
    }

    fn step(&mut self, centroids: &[f32], k: usize, update: bool) -> Result<Step> {
        let dim = self.data.dim();
        if self.labels.len() != self.data.rows() {
            // The last assignment was handed out; start over.
            self.labels = vec![0; self.data.rows()];
            self.distances = vec![0.0; self.data.rows()];
            self.assigned = false;
        }
        let pass = Pass::new(centroids, k, dim, !self.assigned, update);
        let mut total = Partial::zero(k, dim, update, false);
        let (labels, distances) = (&mut self.labels, &mut self.distances);
        // Blocks are fixed row ranges inside each slab; their partials are added in block
        // order, so neither threads nor where the slab came from change a bit of the result.
        self.data.scan(&mut |start, slab| {
            let n = slab.rows(dim);
            let blocks = slab_blocks(start, n, BLOCK_ROWS);
            let mut work: Vec<(Block, &mut [u32], &mut [f32])> = Vec::with_capacity(blocks.len());
            let (mut lrest, mut drest) = (
                &mut labels[start..start + n],
                &mut distances[start..start + n],
            );
            for b in blocks {
                let (l, lr) = lrest.split_at_mut(b.len);
                let (d, dr) = drest.split_at_mut(b.len);
                work.push((b, l, d));
                lrest = lr;
                drest = dr;
            }
            let partials: Vec<Partial> = work
                .par_iter_mut()
                .map(|(blk, labels, dists)| {
                    let x = &slab.values[blk.start * dim..(blk.start + blk.len) * dim];
                    let w = slab
                        .weights
                        .as_ref()
                        .map(|w| &w[blk.start..blk.start + blk.len]);
                    pass.block(x, w, labels, dists)
                })
                .collect();
            for p in &partials {
                total.add(p);
            }
            Ok(())
        })?;
        self.assigned = true;
        Ok(Step {
            sums: total.sums,
            weights: total.weights,
            counts: total.counts,
            inertia: total.inertia,
            changed: total.changed,
        })
    }

    fn farthest(&mut self, m: usize) -> Result<Vec<FarPoint>> {
        farthest_of(self.data, &self.labels, &self.distances, m)
    }

    fn assignment(&mut self) -> Result<Assignment> {
        Ok(Assignment {
            labels: std::mem::take(&mut self.labels),
            distances: std::mem::take(&mut self.distances),
        })
    }
}

/// The `m` rows with the largest distance to their centroid, farthest first, ties to the lowest
/// row. Shared by backends that keep labels and distances on the host.
pub fn farthest_of(
    data: &dyn Rows,
    labels: &[u32],
    distances: &[f32],
    m: usize,
) -> Result<Vec<FarPoint>> {
    let mut idx: Vec<usize> = (0..distances.len()).collect();
    let order = |&a: &usize, &b: &usize| distances[b].total_cmp(&distances[a]).then(a.cmp(&b));
    let m = m.min(idx.len());
    if m == 0 {
        return Ok(Vec::new());
    }
    if m < idx.len() {
        idx.select_nth_unstable_by(m - 1, order);
        idx.truncate(m);
    }
    idx.sort_by(order);
    let rows = data.gather(&idx)?;
    Ok(idx
        .into_iter()
        .zip(rows)
        .map(|(row, (values, weight))| FarPoint {
            row,
            label: labels[row],
            distance: distances[row],
            weight,
            values,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Rows around a few offset centres, weights in [0, 3), and k centroids near rows; the
    /// last centroid repeats the first, so the tie rule is exercised on every row near it.
    fn case(n: usize, d: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(seed);
        let centres: Vec<f64> = (0..4 * d)
            .map(|_| 3.0 + 4.0 * rng.normal_pair().0)
            .collect();
        let mut x = Vec::with_capacity(n * d);
        for _ in 0..n {
            let c = rng.below(4) as usize;
            x.extend((0..d).map(|t| (centres[c * d + t] + rng.normal_pair().0) as f32));
        }
        let w = (0..n).map(|_| (rng.uniform() * 3.0) as f32).collect();
        let mut cents = Vec::with_capacity(k * d);
        for _ in 0..k {
            let r = rng.below(n as u64) as usize;
            cents.extend(x[r * d..(r + 1) * d].iter().map(|v| v + 0.1));
        }
        if k > 1 {
            let first = cents[..d].to_vec();
            cents[(k - 1) * d..].copy_from_slice(&first);
        }
        (x, w, cents)
    }

    /// One block pass from the labels `start`, as the backend runs it.
    fn run(
        pass: &Pass,
        x: &[f32],
        w: Option<&[f32]>,
        start: &[u32],
    ) -> (Vec<u32>, Vec<f32>, Partial) {
        let mut labels = start.to_vec();
        let mut dists = vec![0.0; start.len()];
        let p = pass.block(x, w, &mut labels, &mut dists);
        (labels, dists, p)
    }

    fn bits64(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn every_kernel_agrees_bit_for_bit_on_every_isa() {
        let shapes = [
            (2048 + 77, 1, 1),
            (1000, 3, 5),
            (999, 8, 8),
            (1001, 16, 10),
            (517, 17, 16),
            (700, 32, 17),
            (640, 5, 32),
            (333, 24, 33),
            (900, 32, 64),
            (301, 9, 64),
        ];
        let isas = [Isa::Avx512, Isa::Avx2, Isa::Portable];
        for isa in isas.into_iter().filter(|i| i.available()) {
            for (n, d, k) in shapes {
                let what = format!("{} n={n} d={d} k={k}", isa.name());
                let (x, w, cents) = case(n, d, k, (n * d * k) as u64);
                let start: Vec<u32> = (0..n as u32).map(|i| i % k as u32).collect();
                // Weighted and not (the eight-row kernel records whole unweighted batches
                // eight at a time), a first step (every row changed) and a later one.
                let mut weighted = None;
                for (weights, first) in [(Some(&w[..]), false), (None, false), (None, true)] {
                    let what = format!("{what} weighted={} first={first}", weights.is_some());
                    let with = |kernel: Kernel| {
                        let mut p = Pass::with_isa(&cents, k, d, first, true, isa);
                        p.kernel = kernel;
                        p
                    };
                    let mut kernels = vec![("panels", Kernel::Panels(Packed::new(&cents, k, d)))];
                    if let Some(l) = Kernel::lanes(&cents, k, d, isa) {
                        kernels.push(("lanes", l));
                    }
                    if let Some(r) = Kernel::rows(&cents, k, d, isa) {
                        kernels.push(("rows", r));
                    }
                    // Every shape here runs at least two kernels (k ≤ 64, small d).
                    assert!(kernels.len() >= 2, "{what}");
                    let mut runs = kernels.into_iter().map(|(name, kern)| {
                        let (l, dd, p) = run(&with(kern), &x, weights, &start);
                        (name, l, dd, p)
                    });
                    let (_, la, da, pa) = runs.next().expect("the panel kernel runs");
                    let bits32 = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    for (name, lb, db, pb) in runs {
                        let what = format!("{what} {name} vs panels");
                        assert_eq!(la, lb, "{what}: labels");
                        assert_eq!(bits32(&da), bits32(&db), "{what}: distances");
                        assert_eq!(bits64(&pa.sums), bits64(&pb.sums), "{what}: sums");
                        assert_eq!(bits64(&pa.weights), bits64(&pb.weights), "{what}: weights");
                        assert_eq!(pa.counts, pb.counts, "{what}: counts");
                        assert_eq!(
                            pa.inertia.to_bits(),
                            pb.inertia.to_bits(),
                            "{what}: inertia"
                        );
                        assert_eq!(pa.changed, pb.changed, "{what}: changed");
                    }
                    if weighted.is_none() {
                        weighted = Some((la, da, pa));
                    }
                }
                let (la, da, pa) = weighted.expect("the weighted run comes first");

                // Against f64 brute force: each label is the nearest centroid or ties it
                // within rounding of the expanded score; the duplicate of centroid 0 never
                // wins; distances, sums and counts are those of the labels.
                let d2 = |r: usize, j: usize| -> f64 {
                    (0..d)
                        .map(|t| (x[r * d + t] as f64 - cents[j * d + t] as f64).powi(2))
                        .sum()
                };
                let mut sums = vec![0.0f64; k * d];
                let mut mass = vec![0.0f64; k * d];
                let mut counts = vec![0u64; k];
                let mut changed = 0;
                for r in 0..n {
                    let l = la[r] as usize;
                    let best = (0..k).map(|j| d2(r, j)).fold(f64::INFINITY, f64::min);
                    let scale: f64 = x[r * d..(r + 1) * d]
                        .iter()
                        .map(|&v| (v as f64).powi(2))
                        .sum::<f64>()
                        + 1.0;
                    assert!(d2(r, l) - best <= 1e-5 * scale, "{what}: row {r} label {l}");
                    assert!(k == 1 || l != k - 1, "{what}: row {r} took the duplicate");
                    assert!((da[r] as f64 - d2(r, l)).abs() <= 1e-6 * d2(r, l) + 1e-30);
                    counts[l] += 1;
                    changed += (l as u32 != start[r]) as u64;
                    for t in 0..d {
                        sums[l * d + t] += w[r] as f64 * x[r * d + t] as f64;
                        mass[l * d + t] += (w[r] as f64 * x[r * d + t] as f64).abs();
                    }
                }
                assert_eq!(pa.counts, counts, "{what}: counts");
                assert_eq!(pa.changed, changed, "{what}: changed");
                // f32 runs of at most SUB_ROWS rows: each added term is off by at most
                // (SUB_ROWS + 1) units in the last place of the run's absolute sum.
                let u = f32::EPSILON as f64 / 2.0;
                for ((a, b), m) in pa.sums.iter().zip(&sums).zip(&mass) {
                    assert!(
                        (a - b).abs() <= (SUB_ROWS + 1) as f64 * u * m + 1e-30,
                        "{what}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn first_pass_counts_every_row_and_skipping_the_update_sums_nothing() {
        let (n, d, k) = (1500, 6, 12);
        let (x, w, cents) = case(n, d, k, 3);
        let start = vec![0u32; n];
        let (labels, _, p) = run(&Pass::new(&cents, k, d, true, false), &x, Some(&w), &start);
        assert_eq!(p.changed, n as u64);
        assert!(p.sums.is_empty() && p.weights.is_empty() && p.counts.is_empty());
        let (again, _, q) = run(
            &Pass::new(&cents, k, d, false, false),
            &x,
            Some(&w),
            &labels,
        );
        assert_eq!((again, q.changed), (labels, 0));
    }
}
