//! The `sweep` job: fit every k of a range on the same prepared rows and measure each. The
//! rows are prepared once, in memory or in the spill cache as the budget allows, so a sweep
//! runs whatever the table's size and gives the same numbers either way.

use std::path::PathBuf;

use super::{InitChoice, Mode, Prepare, Scaling, prepare};
use crate::backend::{self, DeviceChoice, DeviceInfo};
use crate::error::{Error, Result};
use crate::insight::sweep::{Segments, Sweep, SweepPoint, sweep as sweep_ks};
use crate::insight::{ExtraKind, LevelIndex, extra_is_numeric, silhouette_rows};
use crate::io::{ReadOptions, Source, check_target};
use crate::kmeans::{self, Init, KMeansParams, Progress};
use crate::prep::ScaleMethod;

/// Bytes per row a sweep keeps for the `--compare-with` segment codes.
const SEGMENT_ROW_BYTES: u64 = 4;

/// Everything a sweep needs.
#[derive(Debug, Clone)]
pub struct SweepJob {
    pub inputs: Vec<PathBuf>,
    /// Features, weight, `--drop-invalid`; the carried column is set from `compare_with`.
    pub read: ReadOptions,
    pub scale: ScaleMethod,
    /// Auto, k-means++, random or k-means||; a centroids file fits one k and is refused.
    pub init: InitChoice,
    /// n_init, max_iter, tol, seed and the k-means|| settings; `k` is ignored.
    pub params: KMeansParams,
    /// The values of k, sorted and distinct.
    pub ks: Vec<usize>,
    /// A segment label column to score every k against (ARI, NMI).
    pub compare_with: Option<String>,
    pub device: DeviceChoice,
    pub adapter: Option<String>,
    pub prepare: Prepare,
}

/// What a sweep did.
pub struct SweepRun {
    pub sweep: Sweep,
    pub rows: usize,
    pub features: Vec<String>,
    pub files: Vec<PathBuf>,
    /// Files opened: those left after partition filters.
    pub files_read: usize,
    /// Bytes fetched from them.
    pub bytes_read: u64,
    pub info: DeviceInfo,
    pub mode: Mode,
    /// The init that ran: `k-means++`, `k-means||` or `random`.
    pub init: &'static str,
    /// Full passes over the rows: Parquet decodes and scans of the prepared rows.
    pub passes: usize,
}

/// Runs a sweep; `on_k` hears each k as soon as it is measured. `report`, when given, is
/// checked before any work so a bad path fails at once.
pub fn sweep(
    job: &SweepJob,
    report: Option<&std::path::Path>,
    progress: &dyn Progress,
    on_k: impl FnMut(&SweepPoint),
) -> Result<SweepRun> {
    if let Some(r) = report {
        check_target(r)?;
    }
    let Some(&k_max) = job.ks.last() else {
        return Err(Error::Usage("--k: no value of k given".into()));
    };
    let read = ReadOptions {
        carry: job.compare_with.iter().cloned().collect(),
        ids: Vec::new(),
        ..job.read.clone()
    };
    let source = Source::open(&job.inputs, &read)?;
    let file = source.files.first().cloned().unwrap_or_default();
    if let Some(name) = &job.compare_with {
        // Decided from the schema, so a bad segment column fails before any row is read.
        let dtype = source
            .carry_schema
            .field_with_name(name)
            .map(|f| f.data_type().clone())
            .map_err(|_| Error::input(&file, format!("no column '{name}'")))?;
        extra_is_numeric(&dtype, name, ExtraKind::Segment, &file)?;
    }
    let prepare_as = Prepare {
        extras: false,
        ..job.prepare.clone()
    };
    let prepared = prepare(source, Scaling::Fit(job.scale), &prepare_as)?;
    let rows = prepared.rows.as_ref();
    let mut passes = prepared.passes();
    let segments = match &job.compare_with {
        None => None,
        Some(name) => {
            let need = prepared.resident + rows.rows() as u64 * SEGMENT_ROW_BYTES;
            if need > job.prepare.budget {
                return Err(Error::Usage(format!(
                    "--memory-budget {} MiB is too small to compare {} rows with '{name}': the \
                     rows' state and segment codes take {} MiB",
                    job.prepare.budget >> 20,
                    rows.rows(),
                    need.div_ceil(1 << 20)
                )));
            }
            let mut index = LevelIndex::default();
            let mut codes = Vec::with_capacity(rows.rows());
            prepared.source.carry_pass(&prepared.checked, &mut |b| {
                let col = b
                    .column_by_name(name)
                    .ok_or_else(|| Error::input(&file, format!("no column '{name}'")))?;
                codes.extend(index.codes(col.as_ref(), name, &file)?);
                Ok(())
            })?;
            passes += 1;
            let (levels, remap) = index.natural_order();
            for c in &mut codes {
                *c = remap[*c as usize];
            }
            Some((name.as_str(), codes, levels.len()))
        }
    };
    let (init, init_name) = match &job.init {
        InitChoice::Auto if prepared.mode == Mode::Streaming => (Init::KMeansParallel, "k-means||"),
        InitChoice::Auto | InitChoice::KMeansPlusPlus => (Init::KMeansPlusPlus, "k-means++"),
        InitChoice::Random => (Init::Random, "random"),
        InitChoice::KMeansParallel => (Init::KMeansParallel, "k-means||"),
        InitChoice::File(_) | InitChoice::Given(_) => {
            return Err(Error::Usage(
                "--init: a sweep fits several k, so it takes auto, k-means++, k-means|| or \
                 random, not given centroids"
                    .into(),
            ));
        }
    };
    let base = KMeansParams {
        k: k_max,
        init,
        ..job.params.clone()
    };
    // Checks the largest k against the rows (and the rest of the settings) before any work.
    kmeans::validate(&base, rows)?;
    let seg = segments.as_ref().map(|(column, codes, count)| Segments {
        column,
        codes,
        count: *count,
    });
    let sample = silhouette_rows(rows.rows(), job.params.seed);
    let before = rows.passes();
    let mut be = backend::create(job.device, rows, job.adapter.as_deref())?;
    let result = sweep_ks(
        rows,
        be.as_mut(),
        &base,
        &job.ks,
        &sample,
        seg.as_ref(),
        progress,
        on_k,
    )?;
    let info = be.info();
    drop(be);
    passes += rows.passes() - before;
    Ok(SweepRun {
        sweep: result,
        rows: rows.rows(),
        features: prepared.source.features.clone(),
        files: prepared.source.files.clone(),
        files_read: prepared.source.files_read(),
        bytes_read: prepared.source.bytes_read(),
        info,
        mode: prepared.mode,
        init: init_name,
        passes,
    })
}
