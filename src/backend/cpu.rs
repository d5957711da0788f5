//! Multi-threaded CPU backend.
//!
//! Rows are cut into fixed blocks (a function of the data only). Each block is assigned and
//! summed on its own, in f64, and the block partials are added in block order. The result is
//! therefore the same bytes whatever the thread count.

use rayon::prelude::*;

use super::{Assignment, Backend, DeviceInfo, FarPoint, Step};
use crate::data::{Block, Dataset};
use crate::error::Result;

/// Rows per reduction block.
const BLOCK_ROWS: usize = 2048;
/// Centroids per packed panel: one 256-bit vector of f32.
const LANES: usize = 8;
/// Rows per register tile.
const TILE_ROWS: usize = 4;
/// Bytes of centroid panels scanned per pass over a block; sized to stay in L1/L2.
const CHUNK_BYTES: usize = 48 * 1024;
/// Memory allowed for block partial sums that are alive at once.
const PARTIALS_BYTES: usize = 256 << 20;

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

    /// Packed slots, `k` rounded up to whole panels.
    pub fn slots(&self) -> usize {
        self.norms.len()
    }
}

/// Dot products of every row of `x` with every packed centroid: `out[r * slots + j]`.
pub fn dots(x: &[f32], packed: &Packed, out: &mut [f32]) {
    let dim = packed.dim;
    let slots = packed.slots();
    for (r, xr) in x.chunks_exact(dim).enumerate() {
        for p in 0..packed.n_panels() {
            let panel = &packed.panels[p * dim * LANES..(p + 1) * dim * LANES];
            let mut acc = [0.0f32; LANES];
            for (col, &xv) in panel.chunks_exact(LANES).zip(xr) {
                for l in 0..LANES {
                    acc[l] += xv * col[l];
                }
            }
            out[r * slots + p * LANES..r * slots + (p + 1) * LANES].copy_from_slice(&acc);
        }
    }
}

/// Nearest centroid of each row of `x` (row-major): writes the winning index and its exact
/// squared distance. Scores are ‖c‖² − 2·x·c; ties keep the lowest index.
///
/// Each row keeps a running minimum per lane (one lane per centroid slot of a panel); panels
/// are scanned in increasing order with a strict `<`, and the lanes are merged at the end
/// preferring the lower index on equal scores, which is the lowest-index tie rule overall.
pub fn assign_rows(
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
    let simd = simd::available();
    let mut p0 = 0;
    while p0 < n_panels {
        let p1 = (p0 + panels_per_chunk).min(n_panels);
        let mut i = 0;
        while i < rows {
            let r = TILE_ROWS.min(rows - i);
            if simd {
                // SAFETY: `available()` checked the CPU for the features the kernel uses, and
                // the slices it reads were checked against `rows` and `dim` above.
                unsafe { simd::tile(x, i, r, packed, p0, p1, &mut best_s, &mut best_i) };
            } else {
                tile_portable(x, i, r, packed, p0, p1, &mut best_s, &mut best_i);
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

    use super::{LANES, Packed, TILE_ROWS};

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// Up to `TILE_ROWS` rows against panels `p0..p1`, two panels (16 centroids) at a time:
    /// eight accumulators of x·c, then a lane-wise min of ‖c‖² − 2·x·c.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `x` must hold rows `i..i + rows` of `packed.dim`
    /// values and `best_s`/`best_i` `LANES` entries for each of them.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
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
        // Short tiles repeat their last row; only the first `rows` results are stored.
        let xp: [*const f32; TILE_ROWS] =
            std::array::from_fn(|r| x[(i + r.min(rows - 1)) * dim..].as_ptr());
        let bsp = best_s[i * LANES..(i + rows) * LANES].as_mut_ptr();
        let bip = best_i[i * LANES..(i + rows) * LANES].as_mut_ptr();
        unsafe {
            let mut bs: [__m256; TILE_ROWS] =
                std::array::from_fn(|r| _mm256_loadu_ps(bsp.add(r.min(rows - 1) * LANES)));
            let mut bi: [__m256i; TILE_ROWS] = std::array::from_fn(|r| {
                _mm256_loadu_si256(bip.add(r.min(rows - 1) * LANES) as *const __m256i)
            });
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let two = _mm256_set1_ps(2.0);
            let panels = packed.panels.as_ptr();
            let norms = packed.norms.as_ptr();
            let mut p = p0;
            while p < p1 {
                let pair = p + 1 < p1;
                let a = panels.add(p * dim * LANES);
                let b = if pair { a.add(dim * LANES) } else { a };
                let mut acc0 = [_mm256_setzero_ps(); TILE_ROWS];
                let mut acc1 = [_mm256_setzero_ps(); TILE_ROWS];
                for t in 0..dim {
                    let ca = _mm256_loadu_ps(a.add(t * LANES));
                    let cb = _mm256_loadu_ps(b.add(t * LANES));
                    for r in 0..TILE_ROWS {
                        let xv = _mm256_broadcast_ss(&*xp[r].add(t));
                        acc0[r] = _mm256_fmadd_ps(xv, ca, acc0[r]);
                        acc1[r] = _mm256_fmadd_ps(xv, cb, acc1[r]);
                    }
                }
                let na = _mm256_loadu_ps(norms.add(p * LANES));
                let ia = _mm256_add_epi32(lane, _mm256_set1_epi32((p * LANES) as i32));
                for r in 0..TILE_ROWS {
                    // 2·acc is exact, so the fused form rounds exactly like ‖c‖² − 2·x·c.
                    let s = _mm256_fnmadd_ps(two, acc0[r], na);
                    let m = _mm256_cmp_ps::<_CMP_LT_OQ>(s, bs[r]);
                    bs[r] = _mm256_blendv_ps(bs[r], s, m);
                    bi[r] = _mm256_castps_si256(_mm256_blendv_ps(
                        _mm256_castsi256_ps(bi[r]),
                        _mm256_castsi256_ps(ia),
                        m,
                    ));
                }
                if pair {
                    let nb = _mm256_loadu_ps(norms.add((p + 1) * LANES));
                    let ib = _mm256_add_epi32(ia, _mm256_set1_epi32(LANES as i32));
                    for r in 0..TILE_ROWS {
                        let s = _mm256_fnmadd_ps(two, acc1[r], nb);
                        let m = _mm256_cmp_ps::<_CMP_LT_OQ>(s, bs[r]);
                        bs[r] = _mm256_blendv_ps(bs[r], s, m);
                        bi[r] = _mm256_castps_si256(_mm256_blendv_ps(
                            _mm256_castsi256_ps(bi[r]),
                            _mm256_castsi256_ps(ib),
                            m,
                        ));
                    }
                }
                p += if pair { 2 } else { 1 };
            }
            for r in 0..rows {
                _mm256_storeu_ps(bsp.add(r * LANES), bs[r]);
                _mm256_storeu_si256(bip.add(r * LANES) as *mut __m256i, bi[r]);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use super::Packed;

    pub fn available() -> bool {
        false
    }

    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        _: &[f32],
        _: usize,
        _: usize,
        _: &Packed,
        _: usize,
        _: usize,
        _: &mut [f32],
        _: &mut [i32],
    ) {
    }
}

/// Squared Euclidean distance, accumulated in f64 so the reported figure is exact to f32.
/// Four partial sums in a fixed order let the compiler vectorise without changing the result.
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
}

impl<'a> CpuBackend<'a> {
    pub fn new(data: &'a Dataset) -> Self {
        CpuBackend {
            data,
            blocks: data.blocks(BLOCK_ROWS),
            labels: vec![0; data.rows()],
            distances: vec![0.0; data.rows()],
            assigned: false,
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
        let wave = (PARTIALS_BYTES / ((acc_len + 2 * k) * 8).max(1)).clamp(1, 256);
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
