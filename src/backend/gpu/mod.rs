//! The GPU backend: WGSL compute shaders through wgpu.
//!
//! Rows are uploaded once per fit (one scan of the row source), padded to a multiple of four
//! features so the shaders can use vec4 loads. Each [`Backend::step`] uploads only the centroids; labels, distances and the
//! per-row bookkeeping stay on the device, and per pass only a few scalars plus the k x d
//! cluster sums come back.
//!
//! Rows are split into chunks no larger than the adapter's largest storage binding (or a
//! forced smaller size), each with its own buffers and dispatches. When the rows do not fit in
//! device memory at all, or the fit streams from disk, the points are scanned every pass and
//! uploaded through two buffers that take turns, so one chunk's copy overlaps the previous
//! chunk's kernels.
//!
//! Every result is reproducible bit for bit: the argmin and distances are per row, inertia is
//! summed in fixed trees, and cluster sums are exact fixed-point integer sums (see
//! `shaders/update.wgsl`).

mod adapter;
mod kernels;
mod seeding;

pub use adapter::{AdapterSummary, HIDE_ENV, hidden_by_env, list_adapters, quiet_probing};

use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

use super::{Assignment, Backend, DeviceInfo, FarPoint, Step};
use crate::data::Rows;
use crate::error::{Error, Result};
use kernels::{
    AssignShape, BUCKET_THREADS, BucketStep, Kernels, REDUCE_SLOTS, ROWS_PER_TILE, SORTED_SPAN,
    UpdateShape,
};

/// Caps the rows of one chunk, to exercise the chunked path on small data.
pub const MAX_CHUNK_ROWS_ENV: &str = "LAKEMEANS_GPU_MAX_CHUNK_ROWS";
/// Caps the bytes of points kept resident; larger data is streamed every pass.
pub const MAX_RESIDENT_BYTES_ENV: &str = "LAKEMEANS_GPU_MAX_RESIDENT_BYTES";
/// Seconds one GPU wait may take before the device is declared hung (default 600).
pub const TIMEOUT_ENV: &str = "LAKEMEANS_GPU_TIMEOUT_S";

/// How to set up the GPU backend. [`GpuOptions::from_env`] gives the defaults.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter name (`--adapter`).
    pub adapter: Option<String>,
    /// Behave as if there were no adapter.
    pub hide: bool,
    /// Accept software adapters such as lavapipe.
    pub allow_software: bool,
    /// Upper bound on rows per chunk (rounded down to a multiple of 64, at least 64).
    pub max_chunk_rows: Option<usize>,
    /// Point bytes above which the rows are streamed instead of kept on the device.
    pub max_resident_bytes: Option<u64>,
    /// Longest single wait on the device.
    pub timeout: Duration,
}

impl GpuOptions {
    /// Options from the `LAKEMEANS_*` environment variables, software adapters allowed.
    pub fn from_env(adapter: Option<&str>) -> GpuOptions {
        let num = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        GpuOptions {
            adapter: adapter.map(str::to_string),
            hide: hidden_by_env(),
            allow_software: true,
            max_chunk_rows: num(MAX_CHUNK_ROWS_ENV).map(|v| v as usize),
            max_resident_bytes: num(MAX_RESIDENT_BYTES_ENV),
            timeout: Duration::from_secs(num(TIMEOUT_ENV).unwrap_or(600).max(1)),
        }
    }
}

/// Marks an [`Error::Device`] message for an allocation the device refused.
const OUT_OF_MEMORY: &str = "out of device memory";

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AssignParams {
    rows: u32,
    k: u32,
    first: u32,
    tile_base: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct UpdateParams {
    rows: u32,
    k: u32,
    rows_per_wg: u32,
    wscale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceParams {
    count: u32,
    pad: [u32; 3],
}

/// A contiguous run of rows with its own bindings.
struct Chunk {
    start: usize,
    rows: usize,
    /// Index of the chunk's first assign workgroup among all chunks.
    tile_base: u32,
    /// The padded points, `None` when they are streamed through the pool.
    points: Option<wgpu::Buffer>,
    weights: wgpu::Buffer,
    labels: wgpu::Buffer,
    dist: wgpu::Buffer,
    assign_params: wgpu::Buffer,
    update_params: wgpu::Buffer,
}

/// A buffer that is grown (recreated) when a pass needs more room.
struct Growable {
    buf: Option<wgpu::Buffer>,
    usage: wgpu::BufferUsages,
    label: &'static str,
}

impl Growable {
    fn new(label: &'static str, usage: wgpu::BufferUsages) -> Self {
        Growable {
            buf: None,
            usage,
            label,
        }
    }

    fn get(&mut self, device: &wgpu::Device, bytes: u64) -> &wgpu::Buffer {
        let bytes = bytes.max(16).next_multiple_of(16);
        if self.buf.as_ref().is_none_or(|b| b.size() < bytes) {
            self.buf = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(self.label),
                size: bytes,
                usage: self.usage,
                mapped_at_creation: false,
            }));
        }
        self.buf.as_ref().expect("set just above")
    }
}

/// The k-means passes on a GPU. Holds the dataset for streaming and for [`Backend::farthest`].
pub struct GpuBackend<'a> {
    data: &'a dyn Rows,
    device: wgpu::Device,
    queue: wgpu::Queue,
    name: String,
    api: &'static str,
    limits: wgpu::Limits,
    /// First uncaptured error or device loss, reported by wgpu callbacks.
    fault: Arc<Mutex<Option<String>>>,
    timeout: Duration,
    dim: usize,
    dp4: usize,
    chunk_rows: usize,
    chunks: Vec<Chunk>,
    /// Two point buffers that streamed chunks take turns in (empty when resident).
    pool: Vec<wgpu::Buffer>,
    tiles: u32,
    partial: wgpu::Buffer,
    changed: wgpu::Buffer,
    reduce_out: wgpu::Buffer,
    reduce_params: wgpu::Buffer,
    /// Per-feature fixed-point scales 2^e, padded to vec4 (0 on padding).
    scale: wgpu::Buffer,
    scale_exp: Vec<i32>,
    wscale_exp: i32,
    centroids: Growable,
    cnorm: Growable,
    acc: Growable,
    buckets: Growable,
    order: Growable,
    readback: Growable,
    kernels: Kernels,
    stepped: bool,
    seeding: seeding::State,
}

/// Exponent e with max_abs * 2^e < 2^62 (so rounded terms fit the 96-bit accumulators with
/// 2^33 rows of headroom), clamped so 2^e is a normal f32.
fn fixed_point_exponent(max_abs: f32) -> i32 {
    if max_abs.is_nan() || max_abs <= 0.0 || max_abs.is_infinite() {
        return 0;
    }
    let floor_log2 = (max_abs as f64).log2().floor() as i32;
    // log2 of values just below a power of two can round up; step down until it holds.
    let mut e = 61 - floor_log2;
    while (max_abs as f64) * 2f64.powi(e) >= 2f64.powi(62) {
        e -= 1;
    }
    e.clamp(-126, 126)
}

/// Value of a 96-bit two's-complement accumulator entry `[low, mid, high]`.
fn decode96(w: &[u32]) -> i128 {
    let hi = w[2] as i32 as i128;
    (hi << 64) | ((w[1] as i128) << 32) | w[0] as i128
}

impl<'a> GpuBackend<'a> {
    /// Opens the adapter (by name substring when given) and uploads `data`.
    pub fn new(data: &'a dyn Rows, adapter: Option<&str>) -> Result<GpuBackend<'a>> {
        Self::with_options(data, GpuOptions::from_env(adapter))
    }

    pub fn with_options(data: &'a dyn Rows, opts: GpuOptions) -> Result<GpuBackend<'a>> {
        let adapter = adapter::select(&adapter::Selection {
            name: opts.adapter.clone(),
            hide: opts.hide,
            allow_software: opts.allow_software,
        })?;
        let info = adapter.get_info();
        // The adapter's own limits, not the portable defaults: bigger bindings and workgroups.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("lakemeans"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::Device(format!("cannot open {}: {e}", info.name)))?;

        let fault: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let f = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut g) = f.lock() {
                g.get_or_insert_with(|| e.to_string());
            }
        }));
        let f = fault.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut g) = f.lock() {
                g.get_or_insert_with(|| format!("device lost ({reason:?}): {msg}"));
            }
        });

        let dim = data.dim();
        let dp4 = dim.div_ceil(4);
        let row_bytes = (dp4 * 16) as u64;
        // The shaders index with u32, so no binding may exceed 4 GiB whatever the adapter says.
        let bind = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(u32::MAX as u64);
        let by_binding = (bind / row_bytes) as usize;
        let by_dispatch = limits.max_compute_workgroups_per_dimension as usize * ROWS_PER_TILE;
        let mut chunk_rows = by_binding.min(by_dispatch);
        if let Some(c) = opts.max_chunk_rows {
            chunk_rows = chunk_rows.min(c);
        }
        chunk_rows = chunk_rows / ROWS_PER_TILE * ROWS_PER_TILE;
        if chunk_rows == 0 {
            if by_binding < ROWS_PER_TILE {
                return Err(Error::Device(format!(
                    "rows of {dim} features are too wide for {}: {ROWS_PER_TILE} rows exceed its \
                     {bind}-byte storage binding",
                    info.name
                )));
            }
            chunk_rows = ROWS_PER_TILE;
        }

        let mut gpu = GpuBackend {
            data,
            device: device.clone(),
            queue,
            name: info.name.clone(),
            api: adapter::api_name(info.backend),
            limits,
            fault,
            timeout: opts.timeout,
            dim,
            dp4,
            chunk_rows,
            chunks: Vec::new(),
            pool: Vec::new(),
            tiles: 0,
            partial: device.create_buffer(&storage_desc("partial", 16)),
            changed: device.create_buffer(&storage_desc("changed", 8)),
            reduce_out: device.create_buffer(&storage_desc("reduce", (REDUCE_SLOTS * 8) as u64)),
            reduce_params: uniform(&device, "reduce params", 16),
            scale: device.create_buffer(&storage_desc("scale", row_bytes)),
            scale_exp: Vec::new(),
            wscale_exp: 0,
            centroids: Growable::new("centroids", storage_in()),
            cnorm: Growable::new("centroid norms", storage_in()),
            acc: Growable::new("accumulators", storage_in() | wgpu::BufferUsages::COPY_SRC),
            buckets: Growable::new("cluster buckets", storage_in()),
            order: Growable::new("rows by cluster", storage_in()),
            readback: Growable::new(
                "readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            kernels: Kernels::default(),
            stepped: false,
            seeding: seeding::State::new(),
        };
        let resident = opts
            .max_resident_bytes
            .is_none_or(|m| row_bytes * data.rows() as u64 <= m);
        gpu.upload(resident)?;
        Ok(gpu)
    }

    /// The first fault wgpu reported through a callback, as [`Error::Device`].
    fn check_fault(&self) -> Result<()> {
        match self.fault.lock() {
            Ok(g) => match g.as_ref() {
                Some(msg) => Err(Error::Device(format!("{}: {msg}", self.name))),
                None => Ok(()),
            },
            Err(_) => Err(Error::Device("GPU error state is poisoned".into())),
        }
    }

    /// Runs `f` inside error scopes so that validation, out-of-memory and internal errors of
    /// its wgpu calls become [`Error::Device`] instead of reaching the uncaptured handler.
    fn scoped<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.check_fault()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let int = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let r = f(self);
        let e_int = pollster::block_on(int.pop());
        let e_val = pollster::block_on(val.pop());
        let e_oom = pollster::block_on(oom.pop());
        if let Some(e) = e_oom {
            return Err(Error::Device(format!(
                "{}: {OUT_OF_MEMORY} ({e})",
                self.name
            )));
        }
        if let Some(e) = e_val.or(e_int) {
            self.kernels.clear();
            return Err(Error::Device(format!("{}: {e}", self.name)));
        }
        self.check_fault()?;
        r
    }

    /// Creates the per-chunk buffers and uploads rows and weights; streams when told to or
    /// when the device runs out of memory holding every row.
    fn upload(&mut self, resident: bool) -> Result<()> {
        let rows = self.data.rows();
        let mut layout = Vec::new();
        let mut s = 0;
        while s < rows {
            let len = self.chunk_rows.min(rows - s);
            layout.push((s, len));
            s += len;
        }
        self.tiles = layout
            .iter()
            .map(|&(_, n)| n.div_ceil(ROWS_PER_TILE) as u32)
            .sum();
        let partial_bytes = (self.tiles as u64 * 4).max(16);
        if partial_bytes > self.limits.max_storage_buffer_binding_size {
            return Err(Error::Device(format!(
                "{rows} rows exceed what {} can bind",
                self.name
            )));
        }

        let built = self.scoped(|g| g.build_chunks(&layout, resident));
        let built = match built {
            Err(Error::Device(msg)) if resident && msg.contains(OUT_OF_MEMORY) => {
                self.scoped(|g| g.build_chunks(&layout, false))
            }
            other => other,
        };
        built?;
        self.wait_idle()
    }

    fn build_chunks(&mut self, layout: &[(usize, usize)], resident: bool) -> Result<()> {
        let dev = self.device.clone();
        let row_bytes = (self.dp4 * 16) as u64;
        self.partial = dev.create_buffer(&storage_desc("partial", (self.tiles as u64 * 4).max(16)));
        self.chunks.clear();
        self.pool.clear();
        let mut tile_base = 0u32;
        for &(start, rows) in layout {
            let rw = storage_in() | wgpu::BufferUsages::COPY_SRC;
            self.chunks.push(Chunk {
                start,
                rows,
                tile_base,
                points: resident
                    .then(|| dev.create_buffer(&storage_desc("points", rows as u64 * row_bytes))),
                weights: dev.create_buffer(&storage_desc("weights", rows as u64 * 4)),
                labels: dev.create_buffer(&desc("labels", rows as u64 * 4, rw)),
                dist: dev.create_buffer(&desc("distances", rows as u64 * 4, rw)),
                assign_params: uniform(&dev, "assign params", 16),
                update_params: uniform(&dev, "update params", 16),
            });
            tile_base += rows.div_ceil(ROWS_PER_TILE) as u32;
        }
        // One scan: points (when resident), weights, and the largest |w * x| per feature
        // (computed in f32, as the shader does) for the fixed-point scales.
        let dim = self.dim;
        let mut max_abs = vec![0f32; dim];
        let mut max_w = 0f32;
        let data = self.data;
        chunked_scan(data, layout, self.dp4 * 4, &mut |ci, padded, w| {
            let c = &self.chunks[ci];
            if let Some(p) = &c.points {
                self.queue.write_buffer(p, 0, bytemuck::cast_slice(padded));
            }
            self.queue
                .write_buffer(&c.weights, 0, bytemuck::cast_slice(w));
            for (row, &wr) in padded.chunks_exact(self.dp4 * 4).zip(w) {
                max_w = max_w.max(wr.abs());
                for (m, &v) in max_abs.iter_mut().zip(row) {
                    *m = m.max((v * wr).abs());
                }
            }
            // Hand the staging memory back before the next chunk.
            self.queue.submit([]);
            Ok(())
        })?;
        self.scale_exp = max_abs.iter().map(|&m| fixed_point_exponent(m)).collect();
        self.wscale_exp = fixed_point_exponent(max_w);
        let mut sc = vec![0f32; self.dp4 * 4];
        for (o, &e) in sc.iter_mut().zip(&self.scale_exp) {
            *o = 2f32.powi(e);
        }
        self.queue
            .write_buffer(&self.scale, 0, bytemuck::cast_slice(&sc));
        if !resident {
            let cap = self.chunk_rows.min(self.data.rows()).max(1) as u64 * row_bytes;
            self.pool = (0..2)
                .map(|_| dev.create_buffer(&storage_desc("stream", cap)))
                .collect();
        }
        Ok(())
    }

    /// Rows `start..start + rows` padded with zeros to `dp4 * 4` features, into `out`, for
    /// passes that run only on rows held in memory (greedy k-means++).
    fn fill_points(&self, start: usize, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let data = self
            .data
            .in_memory()
            .ok_or_else(|| Error::Internal("seeding pass over rows not in memory".into()))?;
        let (dim, dp) = (self.dim, self.dp4 * 4);
        out.clear();
        out.resize(rows * dp, 0.0);
        for (r, g) in (start..start + rows).enumerate() {
            out[r * dp..r * dp + dim].copy_from_slice(data.row(g));
        }
        Ok(())
    }

    /// Waits until `rx` yields, polling the device; never longer than the timeout.
    fn wait_for<T>(&self, rx: &Receiver<T>) -> Result<T> {
        let start = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Disconnected) => {
                    return Err(Error::Device(format!("{}: callback dropped", self.name)));
                }
                Err(TryRecvError::Empty) => {}
            }
            match self.device.poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(Duration::from_millis(250)),
            }) {
                Ok(_) | Err(wgpu::PollError::Timeout) => {}
                Err(e) => return Err(Error::Device(format!("{}: {e}", self.name))),
            }
            self.check_fault()?;
            if start.elapsed() > self.timeout {
                return Err(Error::Device(format!(
                    "{} did not finish within {} s",
                    self.name,
                    self.timeout.as_secs()
                )));
            }
        }
    }

    /// Waits for all submitted work.
    fn wait_idle(&self) -> Result<()> {
        let (tx, rx) = channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        self.wait_for(&rx)
    }

    /// Maps the first `bytes` of the readback buffer and copies them out as u32 words.
    fn read_back(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u32>> {
        self.read_back_with(buf, bytes, <[u32]>::to_vec)
    }

    /// Maps the first `bytes` of `buf` and hands its words to `f`, with no copy: large
    /// accumulator sets are decoded straight from the mapping.
    fn read_back_with<R>(
        &self,
        buf: &wgpu::Buffer,
        bytes: u64,
        f: impl FnOnce(&[u32]) -> R,
    ) -> Result<R> {
        let (tx, rx) = channel();
        buf.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.wait_for(&rx)?
            .map_err(|e| Error::Device(format!("{}: reading results failed: {e}", self.name)))?;
        let out = {
            let view = buf
                .get_mapped_range(0..bytes)
                .map_err(|e| Error::Device(format!("{}: {e}", self.name)))?;
            match bytemuck::try_cast_slice::<u8, u32>(&view) {
                Ok(words) => f(words),
                // A mapping is at least 4-byte aligned in practice; copy if one is not.
                Err(_) => f(&bytemuck::pod_collect_to_vec::<u8, u32>(&view)),
            }
        };
        buf.unmap();
        Ok(out)
    }

    fn pass(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        pipeline: Pipe,
        entries: &[&wgpu::Buffer],
        groups: u32,
    ) {
        let pipe = match pipeline {
            Pipe::Assign(s) => self.kernels.assign(&self.device, s),
            Pipe::Update(s) => self.kernels.update(&self.device, s),
            Pipe::Sorted(dp4) => self.kernels.sorted(&self.device, dp4),
            Pipe::Bucket(step) => self.kernels.bucket(&self.device, step),
            Pipe::Reduce => self.kernels.reduce(&self.device),
        };
        let layout = pipe.get_bind_group_layout(0);
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
            layout: &layout,
            entries: &bind,
        });
        let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        cp.set_pipeline(pipe);
        cp.set_bind_group(0, &group, &[]);
        cp.dispatch_workgroups(groups, 1, 1);
    }

    fn run_step(&mut self, centroids: &[f32], k: usize, update: bool) -> Result<Step> {
        let (dim, dp4) = (self.dim, self.dp4);
        let dp = dp4 * 4;
        // Centroids padded like the rows, and their squared norms (in f64, then rounded).
        let mut cpad = vec![0f32; k * dp];
        let mut norms = vec![0f32; k];
        cpad.par_chunks_mut(dp)
            .zip(norms.par_iter_mut())
            .zip(centroids.par_chunks(dim.max(1)))
            .for_each(|((pad, norm), c)| {
                pad[..dim].copy_from_slice(c);
                *norm = c.iter().map(|&v| v as f64 * v as f64).sum::<f64>() as f32;
            });
        let entries = kernels::accumulator_entries(dp4, k);
        let acc_bytes = if update { (entries * 12) as u64 } else { 0 };
        if acc_bytes > self.limits.max_storage_buffer_binding_size {
            return Err(Error::Device(format!(
                "{k} clusters of {dim} features exceed what {} can bind",
                self.name
            )));
        }
        let dev = self.device.clone();
        let cbuf = self.centroids.get(&dev, (k * dp * 4) as u64).clone();
        let nbuf = self.cnorm.get(&dev, (k * 4) as u64).clone();
        self.queue
            .write_buffer(&cbuf, 0, bytemuck::cast_slice(&cpad));
        self.queue
            .write_buffer(&nbuf, 0, bytemuck::cast_slice(&norms));
        let acc = self.acc.get(&dev, acc_bytes).clone();
        let head = (REDUCE_SLOTS * 8 + 16) as u64;
        let readback = self.readback.get(&dev, head + acc_bytes).clone();

        let wg = self.limits.max_compute_workgroup_storage_size;
        let ashape = AssignShape::choose(dp4, k, wg);
        let ushape = UpdateShape::choose(dp4, k, wg);
        let max_groups = self.limits.max_compute_workgroups_per_dimension as usize;
        let base_rows = if ushape.shared > 0 { 4096 } else { 1024 };
        let wscale = 2f32.powi(self.wscale_exp);
        let first = !self.stepped;
        let sorted = if update && ushape.sorted() {
            let longest = self.chunks.iter().map(|c| c.rows).max().unwrap_or(0);
            Some((
                self.buckets.get(&dev, (k * 4) as u64).clone(),
                self.order.get(&dev, (longest * 4) as u64).clone(),
            ))
        } else {
            None
        };

        let mut enc = dev.create_command_encoder(&Default::default());
        enc.clear_buffer(&self.changed, 0, None);
        if update {
            enc.clear_buffer(&acc, 0, Some(acc_bytes));
        }
        let ctx = ChunkPass {
            k,
            update,
            first,
            ashape,
            ushape,
            base_rows,
            max_groups,
            wscale,
            cbuf: &cbuf,
            nbuf: &nbuf,
            acc: &acc,
            sorted: sorted.as_ref().map(|(b, o)| (b, o)),
        };
        if self.pool.is_empty() {
            for ci in 0..self.chunks.len() {
                let points = self.chunks[ci]
                    .points
                    .clone()
                    .ok_or_else(|| Error::Internal("resident chunk without points".into()))?;
                self.encode_chunk(&mut enc, ci, &points, &ctx);
            }
        } else {
            // Streamed: the two pool buffers take turns. A submit orders the next write to a
            // slot after the work that reads it, and waiting on every second one bounds the
            // staging memory while the copy of one chunk overlaps the kernels of the last.
            let layout: Vec<(usize, usize)> =
                self.chunks.iter().map(|c| (c.start, c.rows)).collect();
            let data = self.data;
            chunked_scan(data, &layout, dp, &mut |ci, padded, _| {
                let slot = self.pool[ci % 2].clone();
                self.queue
                    .write_buffer(&slot, 0, bytemuck::cast_slice(padded));
                self.encode_chunk(&mut enc, ci, &slot, &ctx);
                let done =
                    std::mem::replace(&mut enc, dev.create_command_encoder(&Default::default()));
                self.queue.submit([done.finish()]);
                if ci % 2 == 1 {
                    self.wait_idle()?;
                }
                Ok(())
            })?;
        }
        let rp = ReduceParams {
            count: self.tiles,
            pad: [0; 3],
        };
        self.queue
            .write_buffer(&self.reduce_params, 0, bytemuck::bytes_of(&rp));
        let binds = [
            &self.reduce_params.clone(),
            &self.partial.clone(),
            &self.reduce_out.clone(),
        ];
        self.pass(&mut enc, Pipe::Reduce, &binds, 1);
        enc.copy_buffer_to_buffer(&self.reduce_out, 0, &readback, 0, (REDUCE_SLOTS * 8) as u64);
        enc.copy_buffer_to_buffer(&self.changed, 0, &readback, (REDUCE_SLOTS * 8) as u64, 8);
        if update && acc_bytes > 0 {
            enc.copy_buffer_to_buffer(&acc, 0, &readback, head, acc_bytes);
        }
        self.queue.submit([enc.finish()]);
        let unscale: Vec<f64> = self.scale_exp.iter().map(|&e| 2f64.powi(-e)).collect();
        let wu = 2f64.powi(-self.wscale_exp);
        let step = self.read_back_with(&readback, head + acc_bytes, |words| {
            let pairs: &[f32] = bytemuck::cast_slice(&words[..REDUCE_SLOTS * 2]);
            let inertia: f64 = pairs
                .chunks_exact(2)
                .map(|p| p[0] as f64 - p[1] as f64)
                .sum();
            let cw = &words[REDUCE_SLOTS * 2..REDUCE_SLOTS * 2 + 2];
            let changed = cw[0] as u64 | (cw[1] as u64) << 32;
            let mut step = Step {
                sums: Vec::new(),
                weights: Vec::new(),
                counts: Vec::new(),
                inertia,
                changed,
            };
            if update {
                // Each value depends on its own words only, so decoding in parallel is exact.
                let acc_words = &words[head as usize / 4..];
                let entry = |e: usize| decode96(&acc_words[e * 3..e * 3 + 3]);
                step.sums = vec![0.0; k * dim];
                step.sums
                    .par_chunks_mut(dim.max(1))
                    .enumerate()
                    .for_each(|(j, out)| {
                        for (f, (o, u)) in out.iter_mut().zip(&unscale).enumerate() {
                            *o = entry(j * dp + f) as f64 * u;
                        }
                    });
                step.weights = (0..k).map(|j| entry(k * dp + j) as f64 * wu).collect();
                step.counts = (0..k).map(|j| entry(k * dp + k + j) as u64).collect();
            }
            step
        })?;
        self.stepped = true;
        Ok(step)
    }

    /// Records chunk `ci`'s assign pass (and update pass) over `points` into `enc`.
    fn encode_chunk(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        ci: usize,
        points: &wgpu::Buffer,
        x: &ChunkPass,
    ) {
        let c = &self.chunks[ci];
        let (rows, tile_base) = (c.rows, c.tile_base);
        let (weights, labels, dist) = (c.weights.clone(), c.labels.clone(), c.dist.clone());
        let (ap, up) = (c.assign_params.clone(), c.update_params.clone());
        let params = AssignParams {
            rows: rows as u32,
            k: x.k as u32,
            first: x.first as u32,
            tile_base,
        };
        self.queue.write_buffer(&ap, 0, bytemuck::bytes_of(&params));
        let groups = rows.div_ceil(ROWS_PER_TILE) as u32;
        let binds = [
            &ap,
            points,
            &weights,
            x.cbuf,
            x.nbuf,
            &labels,
            &dist,
            &self.partial.clone(),
            &self.changed.clone(),
        ];
        self.pass(enc, Pipe::Assign(x.ashape), &binds, groups);
        if !x.update {
            return;
        }
        let slices = x.ushape.slices();
        // The sorted update's workgroups take fixed spans of the row list instead of row ranges.
        let rpw = if x.sorted.is_some() {
            SORTED_SPAN
        } else {
            x.base_rows.max(rows.div_ceil(x.max_groups / slices))
        };
        let params = UpdateParams {
            rows: rows as u32,
            k: x.k as u32,
            rows_per_wg: rpw as u32,
            wscale: x.wscale,
        };
        self.queue.write_buffer(&up, 0, bytemuck::bytes_of(&params));
        if let Some((buckets, order)) = x.sorted {
            enc.clear_buffer(buckets, 0, None);
            let per_row = rows.div_ceil(BUCKET_THREADS) as u32;
            self.pass(
                enc,
                Pipe::Bucket(BucketStep::Count),
                &[&up, &labels, buckets],
                per_row,
            );
            self.pass(enc, Pipe::Bucket(BucketStep::Scan), &[&up, buckets], 1);
            let binds = [&up, &labels, buckets, order];
            self.pass(enc, Pipe::Bucket(BucketStep::Scatter), &binds, per_row);
            let binds = [
                &up,
                points,
                &weights,
                &labels,
                &self.scale.clone(),
                order,
                x.acc,
            ];
            self.pass(
                enc,
                Pipe::Sorted(x.ushape.dp4),
                &binds,
                rpw_groups(rows, rpw),
            );
            return;
        }
        let binds = [&up, points, &weights, &labels, &self.scale.clone(), x.acc];
        self.pass(
            enc,
            Pipe::Update(x.ushape),
            &binds,
            rpw_groups(rows, rpw) * slices as u32,
        );
    }

    /// Compiles a WGSL compute shader (entry point `main`) the way the kernels are compiled,
    /// to check that a shader failure surfaces as [`Error::Device`].
    #[doc(hidden)]
    pub fn compile_check(&mut self, wgsl: &str) -> Result<()> {
        let src = wgsl.to_string();
        self.scoped(|g| {
            kernels::build(&g.device, "check", src);
            Ok(())
        })
    }

    /// Labels and distances of every row, read back chunk by chunk.
    fn read_rows(&mut self) -> Result<Assignment> {
        let n = self.data.rows();
        let mut out = Assignment {
            labels: Vec::with_capacity(n),
            distances: Vec::with_capacity(n),
        };
        let dev = self.device.clone();
        for ci in 0..self.chunks.len() {
            let (rows, labels, dist) = {
                let c = &self.chunks[ci];
                (c.rows as u64, c.labels.clone(), c.dist.clone())
            };
            let rb = self.readback.get(&dev, rows * 8).clone();
            let mut enc = dev.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&labels, 0, &rb, 0, rows * 4);
            enc.copy_buffer_to_buffer(&dist, 0, &rb, rows * 4, rows * 4);
            self.queue.submit([enc.finish()]);
            let words = self.read_back(&rb, rows * 8)?;
            out.labels.extend_from_slice(&words[..rows as usize]);
            out.distances
                .extend(words[rows as usize..].iter().map(|&b| f32::from_bits(b)));
        }
        Ok(out)
    }
}

/// What every chunk of one step shares.
struct ChunkPass<'b> {
    k: usize,
    update: bool,
    first: bool,
    ashape: AssignShape,
    ushape: UpdateShape,
    base_rows: usize,
    max_groups: usize,
    wscale: f32,
    cbuf: &'b wgpu::Buffer,
    nbuf: &'b wgpu::Buffer,
    acc: &'b wgpu::Buffer,
    /// Per-cluster counters and the row list of the sorted update, when it runs.
    sorted: Option<(&'b wgpu::Buffer, &'b wgpu::Buffer)>,
}

/// Workgroups that cover `rows` in ranges of `per_group`.
fn rpw_groups(rows: usize, per_group: usize) -> u32 {
    rows.div_ceil(per_group) as u32
}

/// What [`chunked_scan`] calls per chunk: `(chunk index, padded rows, weights)`.
type ChunkFn<'f> = dyn FnMut(usize, &[f32], &[f32]) -> Result<()> + 'f;

/// Scans `data` once and calls `f(chunk, padded_rows, weights)` for each chunk of `layout`
/// (consecutive `(start, rows)` ranges covering every row), rows padded with zeros to `dp`
/// values.
fn chunked_scan(
    data: &dyn Rows,
    layout: &[(usize, usize)],
    dp: usize,
    f: &mut ChunkFn,
) -> Result<()> {
    let dim = data.dim();
    let mut ci = 0;
    let mut padded: Vec<f32> = Vec::new();
    let mut weights: Vec<f32> = Vec::new();
    data.scan(&mut |_, slab| {
        let n = slab.rows(dim);
        let mut r = 0;
        while r < n {
            let Some(&(_, rows)) = layout.get(ci) else {
                return Err(Error::Internal("rows beyond the chunk layout".into()));
            };
            let have = weights.len();
            let take = (rows - have).min(n - r);
            padded.resize((have + take) * dp, 0.0);
            for i in 0..take {
                let src = &slab.values[(r + i) * dim..(r + i + 1) * dim];
                padded[(have + i) * dp..(have + i) * dp + dim].copy_from_slice(src);
            }
            match &slab.weights {
                Some(w) => weights.extend_from_slice(&w[r..r + take]),
                None => weights.resize(have + take, 1.0),
            }
            r += take;
            if weights.len() == rows {
                f(ci, &padded, &weights)?;
                ci += 1;
                padded.clear();
                weights.clear();
            }
        }
        Ok(())
    })
}

#[derive(Clone, Copy)]
enum Pipe {
    Assign(AssignShape),
    Update(UpdateShape),
    Sorted(u32),
    Bucket(BucketStep),
    Reduce,
}

fn storage_in() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST
}

fn desc(
    label: &'static str,
    bytes: u64,
    usage: wgpu::BufferUsages,
) -> wgpu::BufferDescriptor<'static> {
    wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16).next_multiple_of(16),
        usage,
        mapped_at_creation: false,
    }
}

fn storage_desc(label: &'static str, bytes: u64) -> wgpu::BufferDescriptor<'static> {
    desc(label, bytes, storage_in() | wgpu::BufferUsages::COPY_SRC)
}

fn uniform(device: &wgpu::Device, label: &'static str, bytes: u64) -> wgpu::Buffer {
    device.create_buffer(&desc(
        label,
        bytes,
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    ))
}

impl Backend for GpuBackend<'_> {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            kind: "gpu".into(),
            name: self.name.clone(),
            api: Some(self.api.to_string()),
        }
    }

    fn step(&mut self, centroids: &[f32], k: usize, update: bool) -> Result<Step> {
        if k == 0 || centroids.len() != k * self.dim {
            return Err(Error::Internal(format!(
                "step got {} centroid values for k = {k}, dim = {}",
                centroids.len(),
                self.dim
            )));
        }
        if k > u32::MAX as usize / 4 {
            return Err(Error::Device(format!(
                "{k} clusters are more than the GPU kernels index"
            )));
        }
        if self.data.rows() == 0 {
            let z = |n| if update { n } else { 0 };
            return Ok(Step {
                sums: vec![0.0; z(k * self.dim)],
                weights: vec![0.0; z(k)],
                counts: vec![0; z(k)],
                inertia: 0.0,
                changed: 0,
            });
        }
        self.scoped(|g| g.run_step(centroids, k, update))
    }

    fn farthest(&mut self, m: usize) -> Result<Vec<FarPoint>> {
        let a = self.scoped(|g| g.read_rows())?;
        super::cpu::farthest_of(self.data, &a.labels, &a.distances, m)
    }

    fn assignment(&mut self) -> Result<Assignment> {
        self.scoped(|g| g.read_rows())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponent_keeps_terms_below_2_62() {
        for m in [1e-30f32, 1e-3, 0.5, 1.0, 1.5, 2.0, 3.9999998, 1e6, 3.0e38] {
            let e = fixed_point_exponent(m);
            let scaled = m as f64 * 2f64.powi(e);
            assert!(scaled < 2f64.powi(62), "{m}: {scaled}");
            if (-126..126).contains(&e) {
                assert!(scaled >= 2f64.powi(60), "{m}: {scaled}");
            }
        }
        assert_eq!(fixed_point_exponent(0.0), 0);
        assert_eq!(fixed_point_exponent(f32::NAN), 0);
    }

    #[test]
    fn decode_is_twos_complement() {
        assert_eq!(decode96(&[5, 0, 0]), 5);
        assert_eq!(decode96(&[u32::MAX, u32::MAX, u32::MAX]), -1);
        assert_eq!(decode96(&[0, 1, 0]), 1 << 32);
        assert_eq!(decode96(&[0, 0, 1]), 1 << 64);
    }
}
