//! Whole jobs, as every front end runs them: open the table, prepare the rows (in memory or
//! streamed), fit, and write the results.
//!
//! Whether the rows live in memory is decided here and nowhere else, from the memory budget:
//! the clustered `f32` matrix stays in memory when it fits, and otherwise every pass streams
//! from a spill cache on local disk. The driver and the backends see the same [`Rows`] either
//! way, cut into the same slabs, so the results are the same bytes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::RecordBatch;
use serde::Serialize;

use crate::backend::{self, Assignment, DeviceChoice, DeviceInfo};
use crate::data::{Dataset, Rows};
use crate::error::{Error, Result};
use crate::io::results::{AssignmentBatches, write_centroids};
use crate::io::source::{Checked, Keep, Source};
use crate::io::spill::{Spill, SpillWriter};
use crate::io::{Outputs, ReadOptions, read_centroids};
use crate::kmeans::{self, Init, KMeansParams, KMeansResult, Progress};
use crate::model::Model;
use crate::prep::{ScaleMethod, Scaler};
use crate::report::{PredictSummary, Seconds};

pub mod frame;
mod profile;
mod sweep;
pub use profile::{Clusters, ProfileJob, ProfileRun, profile};
pub use sweep::{SweepJob, SweepRun, sweep};

/// Bytes per row that a streamed fit keeps in memory: the label and distance of each row.
pub const STREAM_ROW_BYTES: u64 = 8;
/// Decoded row groups in flight get a quarter of what the per-row state leaves of the budget,
/// between these bounds; a few slabs and Parquet's own buffers come on top, a fixed allowance
/// that does not grow with the table.
const WINDOW_MIN: u64 = 1 << 20;
const WINDOW_MAX: u64 = 256 << 20;

/// Decoded bytes in flight for a streamed pass when `resident` bytes of `budget` are taken.
pub fn window_bytes(budget: u64, resident: u64) -> usize {
    (budget.saturating_sub(resident) / 4).clamp(WINDOW_MIN, WINDOW_MAX) as usize
}

/// Where the rows of a fit live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    InMemory,
    Streaming,
}

/// A size in bytes as users write it: `4GiB`, `500MB`, `1.5G`, `123456`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 4GiB or 500MB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0f64.powi(2),
        "mb" => 1e6,
        "g" | "gib" => 1024.0f64.powi(3),
        "gb" => 1e9,
        "t" | "tib" => 1024.0f64.powi(4),
        "tb" => 1e12,
        u => {
            return Err(format!(
                "unknown size unit '{u}' in '{s}' (use B, KB, MB, GB, KiB, MiB, GiB, ...)"
            ));
        }
    };
    let bytes = v * mult;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("'{s}' is not a positive size"));
    }
    Ok(bytes as u64)
}

/// Half of physical memory: the default budget. 8 GiB where the system does not say.
pub fn default_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    total.map_or(8 << 30, |t| t / 2)
}

/// How a table becomes clustered rows.
#[derive(Debug, Clone)]
pub struct Prepare {
    /// Bytes the rows and per-row state may take.
    pub budget: u64,
    /// Where a streamed fit keeps its spill cache (default: the system's temporary directory).
    pub spill_dir: Option<PathBuf>,
    /// Keep the `--id` columns in memory (otherwise a final pass reads them).
    pub extras: bool,
}

/// How features are scaled: learned from the table, or given (a model's).
#[derive(Debug, Clone)]
pub enum Scaling {
    Fit(ScaleMethod),
    Fixed(Scaler),
}

/// A table's rows in clustered space, ready for the passes.
pub struct Prepared {
    pub source: Source,
    pub scaler: Scaler,
    pub rows: Box<dyn Rows>,
    pub mode: Mode,
    pub checked: Checked,
    /// The `--id` columns of the kept rows when they are in memory.
    pub ids: Vec<RecordBatch>,
    /// Passes over the Parquet files so far.
    pub parquet_passes: usize,
    /// Bytes of the budget the prepared rows hold: the whole matrix in memory, or the
    /// per-row label and distance when streamed.
    pub resident: u64,
}

impl Prepared {
    /// Full passes over the rows: Parquet decodes plus scans of the prepared rows.
    pub fn passes(&self) -> usize {
        self.parquet_passes + self.rows.passes()
    }
}

/// Reads `source` into clustered rows: a statistics pass when the scaling is learned, then a
/// pass that scales every row into memory or into the spill cache.
pub fn prepare(source: Source, scaling: Scaling, how: &Prepare) -> Result<Prepared> {
    let dim = source.dim() as u64;
    let rows = source.raw_rows() as u64;
    let weighted = source.is_weighted() as u64;
    // The carried columns are read by the insight passes, never held here.
    let extras = if how.extras {
        source.extras_bytes(Keep::Ids) as u64
    } else {
        0
    };
    let in_memory_bytes = rows * (dim * 4 + weighted * 4 + STREAM_ROW_BYTES) + extras;
    let streamed_bytes = rows * STREAM_ROW_BYTES;
    let mode = if in_memory_bytes <= how.budget {
        Mode::InMemory
    } else {
        let need = streamed_bytes;
        if need > how.budget {
            return Err(Error::Usage(format!(
                "--memory-budget {} is too small for {rows} rows: streaming keeps {} bytes per \
                 row (label and distance) in memory, {} MiB in all",
                fmt_mib(how.budget),
                STREAM_ROW_BYTES,
                need.div_ceil(1 << 20)
            )));
        }
        Mode::Streaming
    };
    let source = match mode {
        Mode::InMemory => source,
        // Decoded units in flight stay within a quarter of what the per-row state leaves.
        Mode::Streaming => source.with_window_bytes(window_bytes(how.budget, streamed_bytes)),
    };
    let mut parquet_passes = 0;
    let scaler = match scaling {
        Scaling::Fixed(s) => s,
        Scaling::Fit(ScaleMethod::None) => Scaler::identity(source.dim()),
        Scaling::Fit(method) => {
            let (stats, _) = source.stats_pass()?;
            parquet_passes += 1;
            stats.scaler(method)
        }
    };
    let keep_extras = if how.extras && mode == Mode::InMemory {
        Keep::Ids
    } else {
        Keep::Nothing
    };
    let (rows, checked, extras): (Box<dyn Rows>, _, _) = match mode {
        Mode::InMemory => {
            let mut slabs = Vec::new();
            let (checked, extras) = source.data_pass(&scaler, keep_extras, &mut |s| {
                slabs.push(s);
                Ok(())
            })?;
            (
                Box::new(Dataset::from_slabs(source.dim(), slabs)),
                checked,
                extras,
            )
        }
        Mode::Streaming => {
            let dir = how.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
            let mut w = SpillWriter::new(&dir, source.dim(), source.is_weighted())?;
            let (checked, extras) = source.data_pass(&scaler, Keep::Nothing, &mut |s| w.push(s))?;
            let spill: Spill = w.finish()?;
            (Box::new(spill), checked, extras)
        }
    };
    parquet_passes += 1;
    Ok(Prepared {
        source,
        scaler,
        rows,
        mode,
        checked,
        ids: extras.ids,
        parquet_passes,
        resident: match mode {
            Mode::InMemory => in_memory_bytes,
            Mode::Streaming => streamed_bytes,
        },
    })
}

fn fmt_mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

/// How the first centroids of a fit are chosen, as asked.
#[derive(Debug, Clone, PartialEq)]
pub enum InitChoice {
    /// Greedy k-means++ in memory, k-means|| when the fit streams.
    Auto,
    KMeansPlusPlus,
    Random,
    KMeansParallel,
    /// A Parquet file of `k` centroids in input units.
    File(PathBuf),
    /// `k` centroids in input units, row-major (an array handed over by a binding).
    Given(Vec<f64>),
}

impl InitChoice {
    pub fn parse(s: &str) -> InitChoice {
        match s {
            "auto" => InitChoice::Auto,
            "k-means++" | "kmeans++" => InitChoice::KMeansPlusPlus,
            "random" => InitChoice::Random,
            "k-means||" | "kmeans||" => InitChoice::KMeansParallel,
            path => InitChoice::File(PathBuf::from(path)),
        }
    }
}

/// Everything a fit needs. [`FitJob::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct FitJob {
    pub inputs: Vec<PathBuf>,
    pub read: ReadOptions,
    pub scale: ScaleMethod,
    pub init: InitChoice,
    /// k, n_init, max_iter, tol, seed and the k-means|| settings (`init` is set from
    /// [`FitJob::init`]).
    pub params: KMeansParams,
    pub device: DeviceChoice,
    pub adapter: Option<String>,
    pub prepare: Prepare,
    pub output: Option<PathBuf>,
    pub centroids: Option<PathBuf>,
    pub model: Option<PathBuf>,
    /// Fit on a uniform seeded sample of this many rows, then assign every row in one final
    /// pass (FAISS samples at most 256 rows per centroid by default).
    pub train_sample: Option<usize>,
    /// The insight that will follow the fit ([`crate::insight::analyse`]): its columns are
    /// checked as soon as the table is open, so a bad one fails before the fit, not after.
    pub insight: crate::insight::InsightSpec,
}

impl FitJob {
    pub fn new(inputs: Vec<PathBuf>, k: usize) -> Self {
        FitJob {
            inputs,
            read: ReadOptions::default(),
            scale: ScaleMethod::Standard,
            init: InitChoice::Auto,
            params: KMeansParams::new(k),
            device: DeviceChoice::Auto,
            adapter: None,
            prepare: Prepare {
                budget: default_budget(),
                spill_dir: None,
                extras: false,
            },
            output: None,
            centroids: None,
            model: None,
            train_sample: None,
            insight: Default::default(),
        }
    }
}

/// What a fit did. The files are written but not yet visible: `outputs` holds them until the
/// caller adds its own and commits.
pub struct FitRun {
    pub result: KMeansResult,
    pub prepared: Prepared,
    pub model: Model,
    pub info: DeviceInfo,
    /// The init that ran: `k-means++`, `k-means||`, `random` or `file`.
    pub init: &'static str,
    pub outputs: Outputs,
    pub seconds_read: f64,
    pub seconds_fit: f64,
    pub seconds_write: f64,
    /// Full passes over the rows: Parquet decodes and scans of the prepared rows.
    pub passes: usize,
    /// Rows the centroids were trained on (all of them without `train_sample`).
    pub train_rows: usize,
}

impl FitRun {
    /// Labels of every kept row (empty once written in a streamed fit).
    pub fn labels(&self) -> &[u32] {
        &self.result.assignment.labels
    }
}

/// Runs a fit end to end; outputs stay pending in [`FitRun::outputs`].
pub fn fit(job: &FitJob, progress: &dyn Progress) -> Result<FitRun> {
    let t0 = Instant::now();
    if job.params.k == 0 {
        return Err(Error::Usage("--k must be at least 1".into()));
    }
    if job.train_sample == Some(0) {
        return Err(Error::Usage("--train-sample must be at least 1".into()));
    }
    let source = Source::open(&job.inputs, &job.read)?;
    if job.read.features.is_none() {
        for c in source.features.iter().filter(|c| looks_like_an_id(c)) {
            eprintln!(
                "lakemeans: warning: column '{c}' looks like an identifier but is clustered as a \
                 feature; pass --id {c} to carry it, or --exclude {c}"
            );
        }
        let distinct = source.distinct_integer_features(ID_CHECK_ROWS, ID_CHECK_MIN_ROWS)?;
        for c in distinct.iter().filter(|c| !looks_like_an_id(c)) {
            eprintln!(
                "lakemeans: warning: integer column '{c}' holds a different value in every row \
                 (of the first {ID_CHECK_ROWS} at most), like an identifier, but is clustered \
                 as a feature; pass --id {c} to carry it, or --exclude {c}"
            );
        }
    }
    crate::insight::analysis::check_columns(&source, &job.insight)?;
    let prepared = prepare(source, Scaling::Fit(job.scale), &job.prepare)?;
    let features = prepared.source.features.clone();
    let (init, init_name) = resolve_init(
        &job.init,
        prepared.mode,
        &features,
        &job.params,
        &prepared.scaler,
    )?;
    let params = KMeansParams {
        init,
        ..job.params.clone()
    };
    kmeans::validate(&params, prepared.rows.as_ref())?;
    let seconds_read = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let rows: &dyn Rows = prepared.rows.as_ref();
    let sample = match job.train_sample {
        Some(m) if m < rows.rows() => Some(sample_rows(rows, m, params.seed)?),
        _ => None,
    };
    let (result, info) = match &sample {
        None => {
            let mut be = backend::create(job.device, rows, job.adapter.as_deref())?;
            let result = kmeans::fit(rows, be.as_mut(), &params, progress)?;
            (result, be.info())
        }
        Some(train) => {
            kmeans::validate(&params, train)?;
            let mut be = backend::create(job.device, train, job.adapter.as_deref())?;
            let mut result = kmeans::fit(train, be.as_mut(), &params, progress)?;
            drop(be);
            // One pass over every row against the trained centroids.
            let mut be = backend::create(job.device, rows, job.adapter.as_deref())?;
            let last = be.step(&result.centroids, params.k, true)?;
            result.assignment = be.assignment()?;
            result.sizes = last.counts;
            result.weights = last.weights;
            result.inertia = last.inertia;
            (result, be.info())
        }
    };
    let train_rows = sample.as_ref().map_or(rows.rows(), |d| d.rows());
    drop(sample);
    let seconds_fit = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let centroids_input = prepared.scaler.inverse(&result.centroids);
    let mut outputs = Outputs::default();
    let mut passes = prepared.passes();
    if let Some(p) = &job.output {
        passes += write_assignments(&mut outputs, p, &prepared, &result.assignment)? as usize;
    }
    if let Some(p) = &job.centroids {
        write_centroids(
            &mut outputs,
            p,
            &features,
            &centroids_input,
            &result.sizes,
            &result.weights,
        )?;
    }
    let model = build_model(&result, &features, &prepared.scaler, &params, rows.rows());
    if let Some(p) = &job.model {
        outputs.bytes(p, model.to_json()?.as_bytes())?;
    }
    Ok(FitRun {
        result,
        prepared,
        model,
        info,
        init: init_name,
        outputs,
        seconds_read,
        seconds_fit,
        seconds_write: t2.elapsed().as_secs_f64(),
        passes,
        train_rows,
    })
}

/// The init a fit runs, in clustered space, and its name for summaries: `Auto` is greedy
/// k-means++ in memory and k-means|| when streaming; given centroids are scaled like the rows.
fn resolve_init(
    choice: &InitChoice,
    mode: Mode,
    features: &[String],
    params: &KMeansParams,
    scaler: &Scaler,
) -> Result<(Init, &'static str)> {
    let given = |raw: &[f64]| {
        if raw.len() != params.k * features.len() {
            return Err(Error::Usage(format!(
                "the initial centroids must be {} x {} (k x features), got {} values",
                params.k,
                features.len(),
                raw.len()
            )));
        }
        if params.n_init > 1 {
            eprintln!(
                "lakemeans: given initial centroids make one start; ignoring --n-init {}",
                params.n_init
            );
        }
        Ok((Init::Centroids(scaler.transform_rows(raw)), "file"))
    };
    Ok(match choice {
        InitChoice::Auto if mode == Mode::Streaming => (Init::KMeansParallel, "k-means||"),
        InitChoice::Auto | InitChoice::KMeansPlusPlus => (Init::KMeansPlusPlus, "k-means++"),
        InitChoice::Random => (Init::Random, "random"),
        InitChoice::KMeansParallel => (Init::KMeansParallel, "k-means||"),
        InitChoice::File(p) => given(&read_centroids(p, features, params.k)?)?,
        InitChoice::Given(raw) => given(raw)?,
    })
}

/// The saved model of a fit.
fn build_model(
    result: &KMeansResult,
    features: &[String],
    scaler: &Scaler,
    params: &KMeansParams,
    rows: usize,
) -> Model {
    Model::new(
        features.to_vec(),
        scaler.clone(),
        &result.centroids,
        result.inertia,
        rows,
        result.iterations,
        params.seed,
    )
}

/// Rows read to tell an identifier by its values: a bounded prefix, so the check costs the
/// same on a table of a hundred million rows.
const ID_CHECK_ROWS: usize = 65_536;

/// Below this many rows a column of distinct integers is as likely a feature as an id.
const ID_CHECK_MIN_ROWS: usize = 64;

/// A column name such as `id`, `customer_id`, `customerId` or `uuid`.
pub fn looks_like_an_id(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["id", "uuid", "guid"].contains(&lower.as_str())
        || ["_id", "-id", " id", "_uuid", "_key"]
            .iter()
            .any(|s| lower.ends_with(s))
        || (name.ends_with("Id") && name.len() > 2)
}

/// `m` rows drawn uniformly without replacement (Floyd's algorithm, seeded), gathered in row
/// order in one pass: the same rows whatever the thread count or where the rows live.
pub fn sample_rows(rows: &dyn Rows, m: usize, seed: u64) -> Result<Dataset> {
    let n = rows.rows();
    let mut rng = crate::rng::Rng::derive(seed, 0x7261_696e);
    let mut picked = std::collections::HashSet::with_capacity(m);
    for j in n - m..n {
        let t = rng.below(j as u64 + 1) as usize;
        if !picked.insert(t) {
            picked.insert(j);
        }
    }
    let mut idx: Vec<usize> = picked.into_iter().collect();
    idx.sort_unstable();
    let dim = rows.dim();
    let mut values = Vec::with_capacity(m * dim);
    let mut weights = rows.is_weighted().then(|| Vec::with_capacity(m));
    let mut next = 0;
    rows.scan(&mut |start, slab| {
        let end = start + slab.rows(dim);
        while next < idx.len() && idx[next] < end {
            let r = idx[next] - start;
            values.extend_from_slice(&slab.values[r * dim..(r + 1) * dim]);
            if let (Some(w), Some(sw)) = (weights.as_mut(), &slab.weights) {
                w.push(sw[r]);
            }
            next += 1;
        }
        Ok(())
    })?;
    Ok(Dataset::from_rows(dim, values, weights))
}

/// The assignments of a prepared table: ids from memory, or from one more pass over the
/// Parquet files when the fit streamed (then it returns true).
pub fn write_assignments(
    out: &mut Outputs,
    path: &Path,
    p: &Prepared,
    a: &Assignment,
) -> Result<bool> {
    let id_schema = &p.source.id_schema;
    let mut w = AssignmentBatches::new(id_schema);
    let streamed_ids = p.mode == Mode::Streaming && !id_schema.fields().is_empty();
    out.parquet_stream(path, w.schema(), &["distance"], |put| {
        if streamed_ids {
            let mut done = 0;
            p.source.ids_pass(&p.checked, &mut |b| {
                let n = b.num_rows();
                w.ids(b, put)?;
                let end = (done + n).min(a.labels.len());
                w.results(&a.labels[done..end], &a.distances[done..end], put)?;
                done = end;
                Ok(())
            })?;
        } else {
            for b in &p.ids {
                w.ids(b.clone(), put)?;
            }
            w.results(&a.labels, &a.distances, put)?;
        }
        w.finish(put)
    })?;
    Ok(streamed_ids)
}

/// Everything `predict` needs.
#[derive(Debug, Clone)]
pub struct PredictJob {
    pub inputs: Vec<PathBuf>,
    /// Features must be the model's.
    pub read: ReadOptions,
    pub model: Model,
    pub device: DeviceChoice,
    pub adapter: Option<String>,
    pub prepare: Prepare,
    pub output: PathBuf,
}

/// Assigns every row of a table to the model's clusters and writes the assignments. On the
/// CPU (and whenever the rows would not fit the budget) this is one streamed pass over the
/// Parquet files: decode, scale with the model, assign, write.
pub fn predict(job: &PredictJob) -> Result<PredictSummary> {
    let t0 = Instant::now();
    let source = Source::open(&job.inputs, &job.read)?;
    let files_read = source.files_read();
    let bytes_read = source.read_tally();
    let m = &job.model;
    let centroids = m.flat_centroids();
    let mut out = Outputs::default();
    let mut sizes = vec![0u64; m.k];
    let (rows, inertia, dropped, info, passes, mode);
    if job.device == DeviceChoice::Cpu {
        let dim = source.dim();
        let pass = crate::backend::cpu::Pass::new(&centroids, m.k, dim, true, false);
        let mut w = AssignmentBatches::new(&source.id_schema);
        let mut total = 0.0f64;
        let mut n = 0usize;
        let mut checked = None;
        out.parquet_stream(&job.output, w.schema(), &["distance"], |put| {
            let mut labels = Vec::new();
            let mut dists = Vec::new();
            let c = source.data_pass_with_ids(&m.scaling, &mut |item| match item {
                crate::io::source::Item::Slab(slab) => {
                    let r = slab.rows(dim);
                    labels.resize(r, 0);
                    dists.resize(r, 0.0);
                    crate::backend::cpu::assign_slab(&slab, &pass, &mut labels, &mut dists);
                    for (i, (&l, &d)) in labels.iter().zip(&dists).enumerate() {
                        sizes[l as usize] += 1;
                        total += slab.weights.as_ref().map_or(1.0, |w| w[i] as f64) * d as f64;
                    }
                    n += r;
                    m.to_ids(&mut labels);
                    w.results(&labels, &dists, put)
                }
                crate::io::source::Item::Ids(b) => w.ids(b, put),
            })?;
            checked = Some(c);
            w.finish(put)
        })?;
        rows = n;
        inertia = total;
        dropped = checked.map_or(0, |c| c.dropped);
        info = DeviceInfo {
            kind: "cpu".into(),
            name: format!("{} threads", rayon::current_num_threads()),
            api: None,
        };
        passes = 1;
        mode = Mode::Streaming;
    } else {
        let p = prepare(source, Scaling::Fixed(m.scaling.clone()), &job.prepare)?;
        let data: &dyn Rows = p.rows.as_ref();
        let mut be = backend::create(job.device, data, job.adapter.as_deref())?;
        let step = be.step(&centroids, m.k, false)?;
        let mut a = be.assignment()?;
        info = be.info();
        drop(be);
        for &l in &a.labels {
            sizes[l as usize] += 1;
        }
        m.to_ids(&mut a.labels);
        let extra = write_assignments(&mut out, &job.output, &p, &a)?;
        rows = data.rows();
        inertia = step.inertia;
        dropped = p.checked.dropped;
        passes = p.passes() + extra as usize;
        mode = p.mode;
    }
    out.commit()?;
    let total = t0.elapsed().as_secs_f64();
    Ok(PredictSummary {
        k: m.k,
        rows,
        files_read,
        bytes_read: bytes_read.get(),
        inertia,
        device: info.kind,
        adapter: info.name,
        dropped_rows: dropped,
        cluster_sizes: sizes,
        mode,
        passes,
        seconds: Seconds {
            total,
            ..Default::default()
        },
    })
}
