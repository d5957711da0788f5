//! One pass over the same table from each place its rows can live, timed in one process: the
//! Parquet files (decode, checks, scaling), the spill cache of a streamed fit, and memory.
//!
//! A fit that streams reads Parquet twice and the spill cache on every later pass; one in
//! memory scans its slabs. Timing the three in separate runs on a shared machine mixes in
//! whatever else ran at the time, so here every kind does the same work on the same rows in
//! one run: each slab, as it arrives, is assigned to the nearest of `k` centroids with the CPU
//! kernel `predict` uses, so only where the rows come from differs. The spill and in-memory
//! kinds also time a full Lloyd step (assignment and the weighted sums) through the CPU
//! backend, as a fit runs it. Spill and memory passes alternate, so that a change in the
//! machine's load falls on both.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::backend::cpu::{Pass, assign_slab};
use crate::backend::{self, DeviceChoice};
use crate::data::{Batch, Dataset, Rows};
use crate::error::{Error, Result};
use crate::io::source::Keep;
use crate::io::spill::SpillWriter;
use crate::io::{ReadOptions, Source, read_centroids};
use crate::prep::ScaleMethod;

/// What to time.
#[derive(Debug, Clone)]
pub struct PassesJob {
    pub inputs: Vec<PathBuf>,
    pub read: ReadOptions,
    pub k: usize,
    /// Centroids in input units (a Parquet file as `fit --init` takes); otherwise `k` rows
    /// spread evenly over the table.
    pub init: Option<PathBuf>,
    pub scale: ScaleMethod,
    /// Where the spill cache goes (default: the system's temporary directory).
    pub spill_dir: Option<PathBuf>,
    /// Timed passes of each spill and in-memory kind (the Parquet pass runs once per repeat
    /// too, but at most twice: it is the slow one).
    pub repeats: usize,
}

/// Seconds of each pass, every repeat in order, and their medians.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timed {
    pub seconds: Vec<f64>,
    pub median: f64,
}

impl Timed {
    fn push(&mut self, s: f64) {
        self.seconds.push(s);
        let mut v = self.seconds.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        self.median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct PassTimes {
    pub rows: usize,
    pub features: usize,
    pub k: usize,
    pub threads: usize,
    /// The scaler's statistics: decode and f64 checks, no assignment.
    pub parquet_stats: Timed,
    /// Decode, checks, scaling, assignment of every slab.
    pub parquet_assign: Timed,
    /// One decode writing the spill cache and filling memory (set-up, timed for reference).
    pub load: f64,
    pub spill_assign: Timed,
    pub memory_assign: Timed,
    /// A full Lloyd step through the CPU backend.
    pub spill_step: Timed,
    pub memory_step: Timed,
    /// Median pass time over the in-memory one, per kind of assignment pass.
    pub ratio_parquet_to_memory: f64,
    pub ratio_spill_to_memory: f64,
    pub ratio_spill_step_to_memory_step: f64,
}

/// Runs the passes; see the module documentation.
pub fn time_passes(job: &PassesJob) -> Result<PassTimes> {
    if job.k == 0 || job.repeats == 0 {
        return Err(Error::Usage("--k and --repeats must be at least 1".into()));
    }
    let source = Source::open(&job.inputs, &job.read)?;
    let dim = source.dim();
    let mut out = PassTimes {
        rows: 0,
        features: dim,
        k: job.k,
        threads: rayon::current_num_threads(),
        parquet_stats: Timed::default(),
        parquet_assign: Timed::default(),
        load: 0.0,
        spill_assign: Timed::default(),
        memory_assign: Timed::default(),
        spill_step: Timed::default(),
        memory_step: Timed::default(),
        ratio_parquet_to_memory: 0.0,
        ratio_spill_to_memory: 0.0,
        ratio_spill_step_to_memory_step: 0.0,
    };
    let t = Instant::now();
    let (stats, _) = source.stats_pass()?;
    out.parquet_stats.push(t.elapsed().as_secs_f64());
    let scaler = stats.scaler(job.scale);

    // Set-up: one decode fills memory and the spill cache at once.
    let t = Instant::now();
    let dir = job.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut spill = SpillWriter::new(&dir, dim, source.is_weighted())?;
    let mut slabs = Vec::new();
    source.data_pass(&scaler, Keep::Nothing, &mut |s| {
        spill.push(s.clone())?;
        slabs.push(s);
        Ok(())
    })?;
    let spill = spill.finish()?;
    let memory = Dataset::from_slabs(dim, slabs);
    out.load = t.elapsed().as_secs_f64();
    out.rows = memory.rows();
    if job.k > out.rows {
        return Err(Error::Usage(format!(
            "--k {} is more than the table's {} rows",
            job.k, out.rows
        )));
    }

    let centroids = match &job.init {
        Some(p) => scaler.transform_rows(&read_centroids(p, &source.features, job.k)?),
        None => {
            let idx: Vec<usize> = (0..job.k).map(|j| j * out.rows / job.k).collect();
            memory
                .gather(&idx)?
                .into_iter()
                .flat_map(|(v, _)| v)
                .collect()
        }
    };
    let pass = Pass::new(&centroids, job.k, dim, false, false);
    let mut work = Assign::new(&pass, dim);
    let step = |rows: &dyn Rows| -> Result<f64> {
        let mut be = backend::create(DeviceChoice::Cpu, rows, None)?;
        let t = Instant::now();
        be.step(&centroids, job.k, false)?;
        Ok(t.elapsed().as_secs_f64())
    };
    for r in 0..job.repeats {
        if r < 2 {
            let t = Instant::now();
            source.data_pass(&scaler, Keep::Nothing, &mut |s| {
                work.slab(&s);
                Ok(())
            })?;
            out.parquet_assign.push(t.elapsed().as_secs_f64());
        }
        out.spill_assign.push(work.scan(&spill)?);
        out.memory_assign.push(work.scan(&memory)?);
        out.spill_step.push(step(&spill)?);
        out.memory_step.push(step(&memory)?);
    }
    let m = out.memory_assign.median.max(f64::MIN_POSITIVE);
    out.ratio_parquet_to_memory = out.parquet_assign.median / m;
    out.ratio_spill_to_memory = out.spill_assign.median / m;
    out.ratio_spill_step_to_memory_step =
        out.spill_step.median / out.memory_step.median.max(f64::MIN_POSITIVE);
    Ok(out)
}

/// The work every assignment pass does on a slab, with buffers kept between slabs.
struct Assign<'a> {
    pass: &'a Pass,
    dim: usize,
    labels: Vec<u32>,
    dists: Vec<f32>,
}

impl<'a> Assign<'a> {
    fn new(pass: &'a Pass, dim: usize) -> Self {
        Assign {
            pass,
            dim,
            labels: Vec::new(),
            dists: Vec::new(),
        }
    }

    fn slab(&mut self, slab: &Batch) {
        let r = slab.rows(self.dim);
        self.labels.resize(r, 0);
        self.dists.resize(r, 0.0);
        assign_slab(slab, self.pass, &mut self.labels, &mut self.dists);
    }

    /// One timed pass over `rows`.
    fn scan(&mut self, rows: &dyn Rows) -> Result<f64> {
        let t = Instant::now();
        rows.scan(&mut |_, slab| {
            self.slab(slab);
            Ok(())
        })?;
        Ok(t.elapsed().as_secs_f64())
    }
}
