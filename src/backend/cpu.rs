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
pub fn assign_rows(
    x: &[f32],
    centroids: &[f32],
    packed: &Packed,
    labels: &mut [u32],
    dist: &mut [f32],
) {
    let dim = packed.dim;
    let rows = labels.len();
    debug_assert_eq!(x.len(), rows * dim);
    let mut best = vec![f32::INFINITY; rows];
    labels.fill(0);
    let panels_per_chunk = (CHUNK_BYTES / (dim * LANES * 4)).max(1);
    let n_panels = packed.n_panels();
    let mut p0 = 0;
    while p0 < n_panels {
        let p1 = (p0 + panels_per_chunk).min(n_panels);
        let mut i = 0;
        while i + TILE_ROWS <= rows {
            tile::<TILE_ROWS>(x, i, packed, p0, p1, &mut best, labels);
            i += TILE_ROWS;
        }
        while i < rows {
            tile::<1>(x, i, packed, p0, p1, &mut best, labels);
            i += 1;
        }
        p0 = p1;
    }
    for (r, (&l, d)) in labels.iter().zip(dist.iter_mut()).enumerate() {
        let c = &centroids[l as usize * dim..(l as usize + 1) * dim];
        *d = sq_dist(&x[r * dim..(r + 1) * dim], c);
    }
}

/// `R` rows against panels `p0..p1`, updating the running best score and index per row.
#[inline(always)]
fn tile<const R: usize>(
    x: &[f32],
    i: usize,
    packed: &Packed,
    p0: usize,
    p1: usize,
    best: &mut [f32],
    labels: &mut [u32],
) {
    let dim = packed.dim;
    let xs: [&[f32]; R] = std::array::from_fn(|r| &x[(i + r) * dim..(i + r + 1) * dim]);
    for p in p0..p1 {
        let panel = &packed.panels[p * dim * LANES..(p + 1) * dim * LANES];
        let mut acc = [[0.0f32; LANES]; R];
        for (t, col) in panel.chunks_exact(LANES).enumerate() {
            for r in 0..R {
                let xv = xs[r][t];
                for l in 0..LANES {
                    acc[r][l] += xv * col[l];
                }
            }
        }
        let norms = &packed.norms[p * LANES..(p + 1) * LANES];
        for r in 0..R {
            for l in 0..LANES {
                let s = norms[l] - 2.0 * acc[r][l];
                if s < best[i + r] {
                    best[i + r] = s;
                    labels[i + r] = (p * LANES + l) as u32;
                }
            }
        }
    }
}

/// Squared Euclidean distance, accumulated in f64 so the reported figure is exact to f32.
pub fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum::<f64>() as f32
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
