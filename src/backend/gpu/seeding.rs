//! The k-means++ score pass on the GPU (`shaders/seed.wgsl`, `shaders/seed_sum.wgsl`).
//!
//! Each chunk keeps D and the last pass's minima on the device; only the per-block masses
//! (eight bytes per block piece and candidate) and, for a draw, the D of the blocks it lands
//! in come back. Keeping a candidate is a device-side copy.

use bytemuck::{Pod, Zeroable};

use super::{GpuBackend, Growable, kernels, storage_desc, storage_in, uniform};
use crate::backend::seeding::{SEED_BLOCK_ROWS, Seeder};
use crate::error::{Error, Result};

const SCORE_WGSL: &str = include_str!("../../../shaders/seed.wgsl");
const SUM_WGSL: &str = include_str!("../../../shaders/seed_sum.wgsl");
/// Threads (rows) per score workgroup.
const SCORE_THREADS: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ScoreParams {
    rows: u32,
    n: u32,
    dp4: u32,
    fresh: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SumParams {
    rows: u32,
    n: u32,
    pieces: u32,
    out_base: u32,
}

/// A seeding block, or the part of one that lies in a chunk.
#[derive(Clone, Copy)]
struct Piece {
    block: usize,
    /// First row within the chunk.
    start: usize,
    rows: usize,
}

/// Per-chunk seeding buffers.
struct ChunkSeed {
    closest: wgpu::Buffer,
    /// `n * rows` minima of the last pass, candidate-major.
    scored: wgpu::Buffer,
    pieces: Vec<Piece>,
    piece_buf: wgpu::Buffer,
    score_params: wgpu::Buffer,
    sum_params: wgpu::Buffer,
}

/// The seeding state of a [`GpuBackend`].
pub struct State {
    chunks: Vec<ChunkSeed>,
    /// Candidates the `scored` buffers have room for.
    capacity: usize,
    /// Candidates of the last pass (0: nothing to keep).
    n_scored: usize,
    /// No centroid kept yet.
    fresh: bool,
    pipes: Option<(wgpu::ComputePipeline, wgpu::ComputePipeline)>,
    cand: Growable,
    cnorm: Growable,
    /// Per-piece masses, and their host-readable copy (also used for D).
    masses: Growable,
    readback: Growable,
}

impl State {
    pub fn new() -> Self {
        State {
            chunks: Vec::new(),
            capacity: 0,
            n_scored: 0,
            fresh: true,
            pipes: None,
            cand: Growable::new("seed candidates", storage_in()),
            cnorm: Growable::new("seed candidate norms", storage_in()),
            masses: Growable::new("seed masses", storage_in() | wgpu::BufferUsages::COPY_SRC),
            readback: Growable::new(
                "seed readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
        }
    }
}

impl GpuBackend<'_> {
    /// Cuts the seeding blocks at chunk boundaries and makes the per-chunk buffers.
    fn seed_setup(&mut self) -> Result<()> {
        let blocks = crate::data::blocks_of(self.data.rows(), SEED_BLOCK_ROWS);
        let mut chunks = Vec::with_capacity(self.chunks.len());
        for c in &self.chunks {
            let pieces: Vec<Piece> = blocks
                .iter()
                .enumerate()
                .filter_map(|(bi, b)| {
                    let lo = b.global.max(c.start);
                    let hi = (b.global + b.len).min(c.start + c.rows);
                    (lo < hi).then_some(Piece {
                        block: bi,
                        start: lo - c.start,
                        rows: hi - lo,
                    })
                })
                .collect();
            let words: Vec<u32> = pieces
                .iter()
                .flat_map(|p| [p.start as u32, p.rows as u32])
                .collect();
            let piece_buf = self
                .device
                .create_buffer(&storage_desc("seed pieces", words.len() as u64 * 4));
            self.queue
                .write_buffer(&piece_buf, 0, bytemuck::cast_slice(&words));
            chunks.push(ChunkSeed {
                closest: self
                    .device
                    .create_buffer(&storage_desc("seed closest", c.rows as u64 * 4)),
                scored: self.device.create_buffer(&storage_desc("seed scored", 16)),
                pieces,
                piece_buf,
                score_params: uniform(&self.device, "seed params", 16),
                sum_params: uniform(&self.device, "seed sum params", 16),
            });
        }
        self.seeding.chunks = chunks;
        self.seeding.capacity = 0;
        Ok(())
    }

    /// Grows the `scored` buffers to hold `n` candidates.
    fn seed_capacity(&mut self, n: usize) -> Result<()> {
        if n <= self.seeding.capacity {
            return Ok(());
        }
        let bind = self.limits.max_storage_buffer_binding_size;
        for (c, s) in self.chunks.iter().zip(&mut self.seeding.chunks) {
            let bytes = (n * c.rows * 4) as u64;
            if bytes > bind {
                return Err(Error::Device(format!(
                    "{n} k-means++ candidates over {} rows exceed what {} can bind",
                    c.rows, self.name
                )));
            }
            s.scored = self
                .device
                .create_buffer(&storage_desc("seed scored", bytes));
        }
        self.seeding.capacity = n;
        Ok(())
    }

    fn seed_pipes(&mut self) -> (wgpu::ComputePipeline, wgpu::ComputePipeline) {
        let dev = &self.device;
        self.seeding
            .pipes
            .get_or_insert_with(|| {
                (
                    kernels::build(dev, "lakemeans seed", SCORE_WGSL.to_string()),
                    kernels::build(dev, "lakemeans seed sum", SUM_WGSL.to_string()),
                )
            })
            .clone()
    }

    /// Binds `entries` in order and dispatches `groups` workgroups of `pipe`.
    fn seed_dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipe: &wgpu::ComputePipeline,
        entries: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) {
        let bind: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &bind,
        });
        let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        cp.set_pipeline(pipe);
        cp.set_bind_group(0, &group, &[]);
        cp.dispatch_workgroups(groups.0, groups.1, 1);
    }

    fn run_seed_score(&mut self, candidates: &[f32], n: usize) -> Result<Vec<f64>> {
        let (dim, dp) = (self.dim, self.dp4 * 4);
        self.seed_capacity(n)?;
        let (score, sum) = self.seed_pipes();
        let mut cpad = vec![0f32; n * dp];
        let mut norms = vec![0f32; n];
        for (t, c) in candidates.chunks_exact(dim).enumerate() {
            cpad[t * dp..t * dp + dim].copy_from_slice(c);
            norms[t] = c.iter().fold(0.0, |a, &v| a + v * v);
        }
        let dev = self.device.clone();
        let cbuf = self.seeding.cand.get(&dev, (n * dp * 4) as u64).clone();
        let nbuf = self.seeding.cnorm.get(&dev, (n * 4) as u64).clone();
        self.queue
            .write_buffer(&cbuf, 0, bytemuck::cast_slice(&cpad));
        self.queue
            .write_buffer(&nbuf, 0, bytemuck::cast_slice(&norms));
        let total_pieces: usize = self.seeding.chunks.iter().map(|s| s.pieces.len()).sum();
        let out_bytes = (total_pieces * n * 8) as u64;
        let out = self.seeding.masses.get(&dev, out_bytes).clone();
        let readback = self.seeding.readback.get(&dev, out_bytes).clone();

        let mut enc = dev.create_command_encoder(&Default::default());
        let streamed = !self.pool.is_empty();
        let mut padded = Vec::new();
        let mut out_base = 0;
        for ci in 0..self.chunks.len() {
            let (start, rows) = (self.chunks[ci].start, self.chunks[ci].rows);
            let points = match &self.chunks[ci].points {
                Some(p) => p.clone(),
                None => {
                    let slot = self.pool[ci % 2].clone();
                    self.fill_points(start, rows, &mut padded)?;
                    self.queue
                        .write_buffer(&slot, 0, bytemuck::cast_slice(&padded));
                    slot
                }
            };
            let s = &self.seeding.chunks[ci];
            let sp = ScoreParams {
                rows: rows as u32,
                n: n as u32,
                dp4: self.dp4 as u32,
                fresh: self.seeding.fresh as u32,
            };
            self.queue
                .write_buffer(&s.score_params, 0, bytemuck::bytes_of(&sp));
            let groups = rows.div_ceil(SCORE_THREADS) as u32;
            let binds = [
                &s.score_params,
                &points,
                &cbuf,
                &nbuf,
                &s.closest,
                &s.scored,
            ];
            self.seed_dispatch(&mut enc, &score, &binds, (groups, 1));
            let np = s.pieces.len();
            let up = SumParams {
                rows: rows as u32,
                n: n as u32,
                pieces: np as u32,
                out_base,
            };
            self.queue
                .write_buffer(&s.sum_params, 0, bytemuck::bytes_of(&up));
            let weights = &self.chunks[ci].weights;
            let binds = [&s.sum_params, &s.piece_buf, weights, &s.scored, &out];
            self.seed_dispatch(&mut enc, &sum, &binds, (np as u32, n as u32));
            out_base += np as u32;
            if streamed {
                // As in a Lloyd step: the next write to this pool slot must follow this
                // chunk's work, and waiting on every second chunk bounds staging memory.
                let done =
                    std::mem::replace(&mut enc, dev.create_command_encoder(&Default::default()));
                self.queue.submit([done.finish()]);
                if ci % 2 == 1 {
                    self.wait_idle()?;
                }
            }
        }
        enc.copy_buffer_to_buffer(&out, 0, &readback, 0, out_bytes);
        self.queue.submit([enc.finish()]);
        let words = self.read_back(&readback, out_bytes)?;
        let pairs: &[f32] = bytemuck::cast_slice(&words);

        let n_blocks = crate::data::blocks_of(self.data.rows(), SEED_BLOCK_ROWS).len();
        let mut masses = vec![0.0f64; n * n_blocks];
        let pieces = self.seeding.chunks.iter().flat_map(|s| &s.pieces);
        for (pi, piece) in pieces.enumerate() {
            for t in 0..n {
                let q = &pairs[(pi * n + t) * 2..(pi * n + t) * 2 + 2];
                masses[t * n_blocks + piece.block] += q[0] as f64 + q[1] as f64;
            }
        }
        self.seeding.n_scored = n;
        Ok(masses)
    }

    fn run_seed_keep(&mut self, t: usize) -> Result<()> {
        let mut enc = self.device.create_command_encoder(&Default::default());
        for (c, s) in self.chunks.iter().zip(&self.seeding.chunks) {
            let bytes = c.rows as u64 * 4;
            enc.copy_buffer_to_buffer(&s.scored, t as u64 * bytes, &s.closest, 0, bytes);
        }
        self.queue.submit([enc.finish()]);
        self.seeding.fresh = false;
        self.seeding.n_scored = 0;
        Ok(())
    }

    fn run_seed_distances(&mut self, blocks: &[usize]) -> Result<Vec<Vec<f32>>> {
        // Every piece of the wanted blocks, in the order of `blocks`.
        let mut parts = Vec::new();
        for &bi in blocks {
            for (ci, s) in self.seeding.chunks.iter().enumerate() {
                for p in s.pieces.iter().filter(|p| p.block == bi) {
                    parts.push((bi, ci, *p));
                }
            }
        }
        let bytes: u64 = parts.iter().map(|(_, _, p)| p.rows as u64 * 4).sum();
        let dev = self.device.clone();
        let rb = self.seeding.readback.get(&dev, bytes).clone();
        let mut enc = dev.create_command_encoder(&Default::default());
        let mut at = 0;
        for (_, ci, p) in &parts {
            let len = p.rows as u64 * 4;
            let src = &self.seeding.chunks[*ci].closest;
            enc.copy_buffer_to_buffer(src, p.start as u64 * 4, &rb, at, len);
            at += len;
        }
        self.queue.submit([enc.finish()]);
        let words = self.read_back(&rb, bytes.max(4))?;
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); blocks.len()];
        let mut at = 0;
        for (bi, _, p) in parts {
            let slot = blocks.iter().position(|&b| b == bi).unwrap_or(0);
            out[slot].extend(words[at..at + p.rows].iter().map(|&w| f32::from_bits(w)));
            at += p.rows;
        }
        Ok(out)
    }

    /// Runs `f` in the backend's error scopes; a failure drops the seeding pipelines with the
    /// others, so a later call rebuilds them.
    fn seed_scoped<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let r = self.scoped(f);
        if r.is_err() {
            self.seeding.pipes = None;
        }
        r
    }
}

impl Seeder for GpuBackend<'_> {
    fn seed_reset(&mut self) -> Result<()> {
        self.seeding.fresh = true;
        self.seeding.n_scored = 0;
        if self.seeding.chunks.len() != self.chunks.len() || self.seeding.chunks.is_empty() {
            self.seed_scoped(|g| g.seed_setup())?;
        }
        Ok(())
    }

    fn seed_score(&mut self, candidates: &[f32], n: usize) -> Result<Vec<f64>> {
        if n == 0 || candidates.len() != n * self.dim || self.seeding.chunks.is_empty() {
            return Err(Error::Internal(format!(
                "seed_score got {} values for {n} candidates of {} features",
                candidates.len(),
                self.dim
            )));
        }
        self.seed_scoped(|g| g.run_seed_score(candidates, n))
    }

    fn seed_keep(&mut self, t: usize) -> Result<()> {
        if t >= self.seeding.n_scored {
            return Err(Error::Internal(format!(
                "seed_keep({t}) after scoring {} candidates",
                self.seeding.n_scored
            )));
        }
        self.seed_scoped(|g| g.run_seed_keep(t))
    }

    fn seed_distances(&mut self, blocks: &[usize]) -> Result<Vec<Vec<f32>>> {
        if blocks.is_empty() {
            return Ok(Vec::new());
        }
        self.seed_scoped(|g| g.run_seed_distances(blocks))
    }
}
