//! Insight into a clustered table of any size: the profile, the quality metrics, the
//! comparison with an existing segment label and the 2-D map, computed from the row source and
//! the rows' clusters, and written as the profile table, its JSON twin and the HTML report.
//!
//! This is the one entry point the front ends call (after `fit`, or from `profile`). It reads
//! the table in input units straight from the Parquet files ([`Source::raw_pass`]), so it runs
//! in bounded memory whether or not the rows fit: counts, weights, means, standard deviations,
//! ranges, category shares and the crosstab are exact either way. Medians are exact when every
//! value fits the memory budget beside what the caller already holds; otherwise a second pass
//! builds histogram sketches and each median carries its error bound (see
//! [`super::sketch`]). The silhouette and the map use seeded samples of the clustered rows
//! (at most [`super::SILHOUETTE_SAMPLE`] and [`super::PROJECTION_SAMPLE`] rows) and the two
//! indices make two passes over them, in memory or streamed from the spill cache.

use std::path::{Path, PathBuf};

use super::builder::{Columns, Levels, ProfileBuilder};
use super::compare::Comparison;
use super::metrics::{Quality, quality};
use super::pca::{self, Projection};
use super::profile::Profile;
use super::{ExtraKind, LevelIndex, extra_is_numeric, numeric_values, projection_rows};
use crate::data::{Batch, Rows, Slabber};
use crate::error::{Error, Result};
use crate::html;
use crate::io::source::RawRows;
use crate::io::{Outputs, Source, check_target};

/// What to find out about a clustering beyond the clusters themselves.
#[derive(Debug, Clone, Default)]
pub struct InsightSpec {
    /// Columns not clustered on to describe per cluster (numbers like the features, anything
    /// else as category shares).
    pub describe: Vec<String>,
    /// A segment label to compare the clusters with.
    pub compare_with: Option<String>,
    /// Silhouette, Calinski–Harabasz and Davies–Bouldin.
    pub metrics: bool,
    /// Build the profile (for a file, a report, or the caller to show).
    pub profile: bool,
    /// Project a sample on two principal components (for the report's map).
    pub projection: bool,
    /// Seed of the silhouette and projection samples.
    pub seed: u64,
}

impl InsightSpec {
    /// The extra columns the row source must carry, each once.
    pub fn carry(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for c in self.describe.iter().chain(&self.compare_with) {
            if !v.contains(c) {
                v.push(c.clone());
            }
        }
        v
    }

    /// Whether anything at all is asked.
    pub fn any(&self) -> bool {
        self.metrics || self.profile || self.projection || self.compare_with.is_some()
    }

    /// Whether the clustered rows are needed (the metrics and the map work in that space).
    pub fn needs_rows(&self) -> bool {
        self.metrics || self.projection
    }
}

/// A table whose kept rows have their clusters.
pub struct Clustered<'a> {
    /// Opened with the [`InsightSpec::carry`] columns.
    pub source: &'a Source,
    /// The cluster of every kept row, in row order.
    pub labels: &'a [u32],
    pub k: usize,
    /// The rows in clustered space, when metrics or the map are wanted.
    pub rows: Option<&'a dyn Rows>,
    /// The memory budget, and what of it the caller already holds (rows, labels).
    pub budget: u64,
    pub resident: u64,
    /// Where the labels came from, for error messages (an assignments file).
    pub labels_from: Option<&'a Path>,
}

/// What [`analyse`] found.
#[derive(Default)]
pub struct Insight {
    pub quality: Option<Quality>,
    pub comparison: Option<Comparison>,
    /// With the metrics and the comparison attached.
    pub profile: Option<Profile>,
    pub projection: Option<Projection>,
    /// Passes over the Parquet files.
    pub passes: usize,
}

/// Runs what `spec` asks for over a clustered table; see the module documentation.
pub fn analyse(c: &Clustered, spec: &InsightSpec) -> Result<Insight> {
    if !spec.any() {
        return Ok(Insight::default());
    }
    let src = c.source;
    let plan = Plan::new(src, spec)?;
    let n = c.labels.len();
    if let Some(rows) = c.rows
        && rows.rows() != n
    {
        return Err(label_mismatch(c, &rows.rows().to_string()));
    }
    let mut ins = Insight::default();
    let want_stats = spec.profile || spec.compare_with.is_some();
    if want_stats {
        let weighted = src.is_weighted();
        let exact_need = n as u64 * ProfileBuilder::exact_row_bytes(&plan.cols, weighted);
        let exact = c.resident.saturating_add(exact_need) <= c.budget;
        if !exact {
            let need = ProfileBuilder::sketch_bytes(&plan.cols, c.k);
            if c.resident.saturating_add(need) > c.budget {
                return Err(Error::Usage(format!(
                    "--memory-budget {} is too small to profile {} clusters of {} numeric \
                     columns: the median sketches take {} beside the {} already held",
                    human(c.budget),
                    c.k,
                    plan.cols.numbers(),
                    human(need),
                    human(c.resident)
                )));
            }
        }
        let mut b = ProfileBuilder::new(plan.cols.clone(), c.k, exact);
        let levels = stream(c, &plan, true, &mut |x, w, l| b.add(x, w, l))?;
        ins.passes += 1;
        if b.needs_sketch_pass() {
            b.start_sketches();
            stream(c, &plan, false, &mut |x, w, l| b.add_sketch(x, w, l))?;
            ins.passes += 1;
        }
        let (profile, comparison) = b.finish(c.labels, levels);
        ins.comparison = comparison;
        ins.profile = spec.profile.then_some(profile);
    }
    if spec.needs_rows() {
        let rows = c
            .rows
            .ok_or_else(|| Error::Internal("metrics without the clustered rows".into()))?;
        if spec.metrics {
            let sample = super::silhouette_rows(n, spec.seed);
            ins.quality = Some(quality(rows, c.labels, c.k, &sample)?);
        }
        if spec.projection {
            let sample = projection_rows(n, spec.seed);
            ins.projection = Some(pca::project(rows, c.labels, c.k, &sample)?);
        }
    }
    if let Some(p) = ins.profile.as_mut() {
        p.metrics = ins.quality.clone();
        p.compare = ins.comparison.clone();
    }
    Ok(ins)
}

/// Checks that every column `spec` names can serve as asked, from the schema alone.
pub fn check_columns(src: &Source, spec: &InsightSpec) -> Result<()> {
    Plan::new(src, spec).map(|_| ())
}

/// Bytes as a person reads them, rounded up.
fn human(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{} MiB", b.div_ceil(1 << 20))
    } else {
        format!("{} KiB", b.div_ceil(1 << 10))
    }
}

/// How the carried columns become the coded columns of wide rows.
struct Plan {
    cols: Columns,
    /// Feature values go into the wide rows (only when a profile is wanted).
    features: bool,
    file: PathBuf,
}

impl Plan {
    /// Decides from the schema how each extra column is read, so that a column that cannot
    /// serve fails before any row is read.
    fn new(src: &Source, spec: &InsightSpec) -> Result<Plan> {
        let file = src.files.first().cloned().unwrap_or_default();
        let dtype = |name: &str| {
            src.carry_schema
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .map_err(|_| Error::input(&file, format!("no column '{name}'")))
        };
        let mut cols = Columns {
            features: if spec.profile {
                src.features.clone()
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        for name in &spec.describe {
            if extra_is_numeric(&dtype(name)?, name, ExtraKind::Describe, &file)? {
                cols.numeric.push(name.clone());
            } else {
                cols.categorical.push(name.clone());
            }
        }
        if let Some(name) = &spec.compare_with {
            extra_is_numeric(&dtype(name)?, name, ExtraKind::Segment, &file)?;
            cols.segment = Some(name.clone());
        }
        Ok(Plan {
            features: spec.profile,
            cols,
            file,
        })
    }

    /// One unit's rows as wide rows: the features, the numeric described columns, and with
    /// `codes` the category codes. Codes are handed out in row order, so they are the same
    /// on every pass and whatever the files.
    fn widen(
        &self,
        part: &RawRows,
        dim: usize,
        codes: Option<&mut [LevelIndex]>,
    ) -> Result<Vec<f64>> {
        let rows = part.values.len().checked_div(dim).unwrap_or(0);
        let column = |name: &str| -> Result<Vec<&dyn arrow_array::Array>> {
            part.carry
                .iter()
                .map(|b| {
                    b.column_by_name(name)
                        .map(|c| c.as_ref())
                        .ok_or_else(|| Error::input(&self.file, format!("no column '{name}'")))
                })
                .collect()
        };
        let mut extra: Vec<Vec<f64>> = Vec::new();
        for name in &self.cols.numeric {
            let mut v = Vec::with_capacity(rows);
            for col in column(name)? {
                v.extend(numeric_values(col, name, &self.file)?);
            }
            extra.push(v);
        }
        if let Some(index) = codes {
            let coded = self.cols.categorical.iter().chain(&self.cols.segment);
            for (name, ix) in coded.zip(index.iter_mut()) {
                let mut v = Vec::with_capacity(rows);
                for col in column(name)? {
                    v.extend(ix.codes(col, name, &self.file)?.into_iter().map(f64::from));
                }
                extra.push(v);
            }
        }
        if extra.iter().any(|v| v.len() != rows) {
            return Err(Error::Internal(
                "carried columns out of step with the features".into(),
            ));
        }
        let width = if self.features { dim } else { 0 } + extra.len();
        let mut wide = Vec::with_capacity(rows * width);
        for r in 0..rows {
            if self.features {
                wide.extend_from_slice(&part.values[r * dim..(r + 1) * dim]);
            }
            wide.extend(extra.iter().map(|v| v[r]));
        }
        Ok(wide)
    }
}

/// Takes a slab of wide rows, their weights and their clusters.
type SlabSink<'a> = dyn FnMut(&[f64], Option<&[f32]>, &[u32]) + 'a;

/// One pass over the table's kept rows in input units, cut into slabs of wide rows and handed
/// to `sink` with their weights and clusters. `codes`: include the coded columns (the first
/// pass); returns their levels in final order.
fn stream(c: &Clustered, plan: &Plan, codes: bool, sink: &mut SlabSink) -> Result<Vec<Levels>> {
    let src = c.source;
    let dim = src.dim();
    let width = if codes {
        plan.cols.width()
    } else {
        plan.cols.numbers()
    };
    let coded = plan.cols.categorical.len() + plan.cols.segment.is_some() as usize;
    let mut index = vec![LevelIndex::default(); coded];
    let mut slabber = Slabber::<f64>::new(width, src.is_weighted());
    let mut start = 0usize;
    let mut feed = |s: Batch<f64>| -> Result<()> {
        let n = s.rows(width);
        if start + n > c.labels.len() {
            return Err(label_mismatch(c, &format!("{} or more", start + n)));
        }
        sink(&s.values, s.weights.as_deref(), &c.labels[start..start + n]);
        start += n;
        Ok(())
    };
    let checked = src.raw_pass(&mut |part| {
        let wide = plan.widen(&part, dim, codes.then_some(index.as_mut_slice()))?;
        slabber.push(&wide, part.weights.as_deref(), &mut feed)
    })?;
    slabber.finish(&mut feed)?;
    if checked.kept != c.labels.len() || start != checked.kept {
        return Err(label_mismatch(c, &checked.kept.to_string()));
    }
    Ok(index.iter().map(LevelIndex::natural_order).collect())
}

/// Labels and rows out of step: the user's assignments file, or a bug of ours.
fn label_mismatch(c: &Clustered, rows: &str) -> Error {
    match c.labels_from {
        Some(p) => assignments_mismatch(p, c.labels.len(), rows),
        None => Error::Internal(format!("{} labels for {rows} rows", c.labels.len())),
    }
}

/// An assignments file whose row count is not the table's.
pub fn assignments_mismatch(path: &Path, labels: usize, rows: &str) -> Error {
    Error::input(
        path,
        format!(
            "has {labels} rows but the input has {rows} (kept) rows; assignments must hold one \
             row per input row, in input order (and the fit's --drop-invalid)"
        ),
    )
}

/// Where the insight goes, and what the report says about the run.
pub struct InsightOutputs<'a> {
    /// The profile as Parquet, with its JSON twin beside it ([`sidecar`]).
    pub profile: Option<&'a Path>,
    pub report: Option<&'a Path>,
    pub title: String,
    pub files: &'a [PathBuf],
    /// Extra facts for the report's summary, such as the device or the scaling.
    pub facts: Vec<(String, String)>,
}

/// Where the JSON twin of a Parquet profile goes.
pub fn sidecar(path: &Path) -> Result<PathBuf> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        return Err(Error::Usage(format!(
            "{}: the profile path is the Parquet table; its JSON goes beside it with the \
             extension .json, so give a path such as profile.parquet",
            path.display()
        )));
    }
    Ok(path.with_extension("json"))
}

/// Checks every output path of the insight before any work. `shown`: the profile reaches the
/// user anyway (the `profile` command prints it), so `--describe` needs no file.
pub fn check_targets(
    profile: Option<&Path>,
    report: Option<&Path>,
    describe: bool,
    shown: bool,
) -> Result<()> {
    if let Some(p) = profile {
        check_target(p)?;
        check_target(&sidecar(p)?)?;
    }
    if let Some(r) = report {
        check_target(r)?;
    }
    if !shown && describe && profile.is_none() && report.is_none() {
        return Err(Error::Usage(
            "--describe needs somewhere to show the result: give --profile or --report".into(),
        ));
    }
    Ok(())
}

/// The report title for `k` clusters of `files`.
pub fn title(k: usize, files: &[PathBuf]) -> String {
    let name = files
        .first()
        .and_then(|f| f.file_stem())
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    if files.len() > 1 {
        format!("{k} clusters of {name} and {} more files", files.len() - 1)
    } else {
        format!("{k} clusters of {name}")
    }
}

/// Adds the profile table, its JSON and the report to `out` (nothing is visible until the
/// caller commits).
pub fn write(out: &mut Outputs, ins: &Insight, to: &InsightOutputs) -> Result<()> {
    let Some(p) = &ins.profile else {
        return Ok(());
    };
    if let Some(path) = to.profile {
        let batch = p.to_record_batch()?;
        out.parquet(path, batch.schema(), [Ok(batch)], &[])?;
        let json = serde_json::to_string_pretty(p).map_err(|e| Error::Internal(e.to_string()))?;
        out.bytes(&sidecar(path)?, json.as_bytes())?;
    }
    if let Some(path) = to.report {
        let inputs = html::file_names(to.files);
        let doc = html::cluster_report(&html::ClusterReport {
            title: &to.title,
            inputs: &inputs,
            profile: p,
            projection: ins.projection.as_ref(),
            facts: to.facts.clone(),
        });
        out.bytes(path, doc.as_bytes())?;
    }
    Ok(())
}
