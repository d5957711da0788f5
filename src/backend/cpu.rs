//! Multi-threaded CPU backend.
//!
//! Rows are cut into fixed blocks (a function of the data only). Each block is assigned and
//! summed on its own, in f64, and the block partials are added in block order. The result is
//! therefore the same bytes whatever the thread count.

mod seeding;

use rayon::prelude::*;

use super::{Assignment, Backend, DeviceInfo, FarPoint, Step};
use crate::data::{Block, Dataset};
use crate::error::Result;

/// Rows per reduction block.
const BLOCK_ROWS: usize = 2048;
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
enum Isa {
    Avx512,
    Avx2,
    Portable,
}

/// The best instruction set this CPU has. A given machine always takes the same path, so
/// results stay reproducible there.
fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    })
}

/// Nearest centroid of each row of `x` (row-major): writes the winning index and its exact
/// squared distance. Scores are ‖c‖² − 2·x·c; ties keep the lowest index.
pub fn assign_rows(
    x: &[f32],
    centroids: &[f32],
    packed: &Packed,
    labels: &mut [u32],
    dist: &mut [f32],
) {
    let isa = isa();
    dispatch(isa, || assign_body(isa, x, centroids, packed, labels, dist))
}

/// Runs `f` inside a function compiled for `isa`, so that everything `f` inlines (distance
/// loops, f64 sums) is vectorised for it too.
#[inline(always)]
fn dispatch<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match isa {
            // SAFETY: `isa()` checked that the CPU has these features.
            Isa::Avx512 => return unsafe { avx512(f) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { avx2(f) },
            Isa::Portable => {}
        }
    }
    f()
}

/// Each row keeps a running minimum per lane (one lane per centroid slot of a panel); panels
/// are scanned in increasing order with a strict `<`, and the lanes are merged at the end
/// preferring the lower index on equal scores, which is the lowest-index tie rule overall.
#[inline(always)]
fn assign_body(
    isa: Isa,
    x: &[f32],
    centroids: &[f32],
    packed: &Packed,
    labels: &mut [u32],
    dist: &mut [f32],
) {
    let dim = packed.dim;
    let rows = labels.len();
    assert_eq!(x.len(), rows * dim);
    assert_eq!(dist.len(), rows);
    let mut best_s = vec![f32::INFINITY; rows * LANES];
    let mut best_i = vec![0i32; rows * LANES];
    let panels_per_chunk = (CHUNK_BYTES / (dim * LANES * 4)).max(2);
    let n_panels = packed.n_panels();
    let mut p0 = 0;
    while p0 < n_panels {
        let p1 = (p0 + panels_per_chunk).min(n_panels);
        let tile_rows = if isa == Isa::Avx512 {
            TILE_ROWS
        } else {
            TILE_ROWS / 2
        };
        let mut i = 0;
        while i < rows {
            let r = tile_rows.min(rows - i);
            match isa {
                // SAFETY: `isa` was detected on this CPU, and the slices the kernels read were
                // checked against `rows` and `dim` above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe {
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
                Isa::Avx2 => unsafe {
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
    for r in 0..rows {
        let (s, idx) = (
            &best_s[r * LANES..(r + 1) * LANES],
            &best_i[r * LANES..(r + 1) * LANES],
        );
        let mut b = 0;
        for l in 1..LANES {
            if s[l] < s[b] || (s[l] == s[b] && idx[l] < idx[b]) {
                b = l;
            }
        }
        labels[r] = idx[b] as u32;
    }
    for (r, (&l, d)) in labels.iter().zip(dist.iter_mut()).enumerate() {
        let c = &centroids[l as usize * dim..(l as usize + 1) * dim];
        *d = sq_dist(&x[r * dim..(r + 1) * dim], c);
    }
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

/// Squared Euclidean distance, accumulated in f64 so the reported figure is exact to f32.
/// Four partial sums in a fixed order let the compiler vectorise without changing the result.
#[inline(always)]
pub fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            let d = x[l] as f64 - y[l] as f64;
            acc[l] += d * d;
        }
    }
    let mut tail = 0.0;
    for (&x, &y) in ra.iter().zip(rb) {
        let d = x as f64 - y as f64;
        tail += d * d;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3]) + tail) as f32
}

/// Per-block result before the ordered reduction.
struct Partial {
    sums: Vec<f64>,
    weights: Vec<f64>,
    counts: Vec<u64>,
    inertia: f64,
    changed: u64,
}

pub struct CpuBackend<'a> {
    data: &'a Dataset,
    blocks: Vec<Block>,
    labels: Vec<u32>,
    distances: Vec<f32>,
    /// False until the first step, so the first step counts every row as changed.
    assigned: bool,
    seeding: seeding::State,
}

impl<'a> CpuBackend<'a> {
    pub fn new(data: &'a Dataset) -> Self {
        CpuBackend {
            data,
            blocks: data.blocks(BLOCK_ROWS),
            labels: vec![0; data.rows()],
            distances: vec![0.0; data.rows()],
            assigned: false,
            seeding: seeding::State::default(),
        }
    }
}

impl Backend for CpuBackend<'_> {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            kind: "cpu".into(),
            name: format!("{} threads", rayon::current_num_threads()),
            api: None,
        }
    }

    fn step(&mut self, centroids: &[f32], k: usize, update: bool) -> Result<Step> {
        let dim = self.data.dim();
        let packed = Packed::new(centroids, k, dim);
        let acc_len = if update { k * dim } else { 0 };
        // Blocks in flight at once. Partials are still added in block order, so this may follow
        // the thread count without changing a bit of the result; it only bounds memory.
        let wave = 2 * rayon::current_num_threads();
        let first = !self.assigned;
        let mut total = Partial {
            sums: vec![0.0; acc_len],
            weights: vec![0.0; if update { k } else { 0 }],
            counts: vec![0; if update { k } else { 0 }],
            inertia: 0.0,
            changed: 0,
        };
        // Hand each block its own slice of the label and distance arrays.
        let mut label_slices: Vec<&mut [u32]> = Vec::with_capacity(self.blocks.len());
        let mut dist_slices: Vec<&mut [f32]> = Vec::with_capacity(self.blocks.len());
        {
            let (mut lrest, mut drest) = (&mut self.labels[..], &mut self.distances[..]);
            for b in &self.blocks {
                let (l, lr) = lrest.split_at_mut(b.len);
                let (d, dr) = drest.split_at_mut(b.len);
                label_slices.push(l);
                dist_slices.push(d);
                lrest = lr;
                drest = dr;
            }
        }
        let data = self.data;
        let mut work: Vec<_> = self
            .blocks
            .iter()
            .zip(label_slices)
            .zip(dist_slices)
            .collect();
        for chunk in work.chunks_mut(wave) {
            let partials: Vec<Partial> = chunk
                .par_iter_mut()
                .map(|((blk, labels), dists)| {
                    let (x, w) = data.block_view(blk);
                    let old = if first { None } else { Some(labels.to_vec()) };
                    assign_rows(x, centroids, &packed, labels, dists);
                    let changed = match old {
                        None => labels.len() as u64,
                        Some(o) => {
                            o.iter().zip(labels.iter()).filter(|(a, b)| a != b).count() as u64
                        }
                    };
                    accumulate(x, w, labels, dists, dim, k, update, changed)
                })
                .collect();
            for p in partials {
                total.inertia += p.inertia;
                total.changed += p.changed;
                for (a, b) in total.sums.iter_mut().zip(&p.sums) {
                    *a += b;
                }
                for (a, b) in total.weights.iter_mut().zip(&p.weights) {
                    *a += b;
                }
                for (a, b) in total.counts.iter_mut().zip(&p.counts) {
                    *a += b;
                }
            }
        }
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
        Ok(farthest_of(self.data, &self.labels, &self.distances, m))
    }

    fn assignment(&mut self) -> Result<Assignment> {
        Ok(Assignment {
            labels: self.labels.clone(),
            distances: self.distances.clone(),
        })
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accumulate(
    x: &[f32],
    w: Option<&[f32]>,
    labels: &[u32],
    dists: &[f32],
    dim: usize,
    k: usize,
    update: bool,
    changed: u64,
) -> Partial {
    let mut p = Partial {
        sums: vec![0.0; if update { k * dim } else { 0 }],
        weights: vec![0.0; if update { k } else { 0 }],
        counts: vec![0; if update { k } else { 0 }],
        inertia: 0.0,
        changed,
    };
    for (r, (&l, &d)) in labels.iter().zip(dists).enumerate() {
        let wr = w.map_or(1.0, |w| w[r] as f64);
        p.inertia += wr * d as f64;
        if update {
            let l = l as usize;
            p.weights[l] += wr;
            p.counts[l] += 1;
            let s = &mut p.sums[l * dim..(l + 1) * dim];
            for (a, &v) in s.iter_mut().zip(&x[r * dim..(r + 1) * dim]) {
                *a += wr * v as f64;
            }
        }
    }
    p
}

/// The `m` rows with the largest distance to their centroid, farthest first, ties to the lowest
/// row. Shared by backends that keep labels and distances on the host.
pub fn farthest_of(data: &Dataset, labels: &[u32], distances: &[f32], m: usize) -> Vec<FarPoint> {
    let mut idx: Vec<usize> = (0..distances.len()).collect();
    let order = |&a: &usize, &b: &usize| distances[b].total_cmp(&distances[a]).then(a.cmp(&b));
    let m = m.min(idx.len());
    if m == 0 {
        return Vec::new();
    }
    if m < idx.len() {
        idx.select_nth_unstable_by(m - 1, order);
        idx.truncate(m);
    }
    idx.sort_by(order);
    idx.into_iter()
        .map(|row| FarPoint {
            row,
            label: labels[row],
            distance: distances[row],
            weight: data.weight(row),
            values: data.row(row).to_vec(),
        })
        .collect()
}
