//! Input rules shared by every read: which files a path means, which columns are features,
//! what makes a value unusable, and the small whole-file reads (`--init` centroids).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::delta;
use super::partition::{Filter, InputFile, partition_values};
use super::source::{Keep, Source};
use super::store::{self, Blob, Kind};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::prep::Scaler;

/// Which columns to read and what to do with bad rows.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Feature columns; `None` means every numeric column not named elsewhere.
    pub features: Option<Vec<String>>,
    /// Left out of the default feature set.
    pub exclude: Vec<String>,
    /// Carried through to the assignments unchanged.
    pub ids: Vec<String>,
    /// Non-negative sample weights.
    pub weight: Option<String>,
    /// Skip rows with a null, NaN or infinite feature or weight instead of failing.
    pub drop_invalid: bool,
    /// Extra columns of any type read alongside the features (for profiles and comparisons),
    /// left out of the default feature set; nulls in them are kept.
    pub carry: Vec<String>,
    /// Rows to read: every predicate must hold. On partition columns they prune whole
    /// directories; on others they skip row groups by their statistics and filter the rest.
    pub filter: Vec<Filter>,
    /// The version of a Delta table to read; the latest without one.
    pub table_version: Option<u64>,
}

/// A feature table in input units, with what must travel to the outputs.
#[derive(Debug)]
pub struct Table {
    pub files: Vec<PathBuf>,
    pub features: Vec<String>,
    pub data: Dataset,
    /// The `--id` columns of the kept rows, in row order (empty without `--id`).
    pub ids: Vec<RecordBatch>,
    pub id_schema: SchemaRef,
    /// The `carry` columns of the kept rows, in row order (empty without `carry`).
    pub carry: Vec<RecordBatch>,
    pub carry_schema: SchemaRef,
    /// Rows skipped by `drop_invalid`.
    pub dropped: usize,
    /// Bytes fetched from the files to read the table.
    pub bytes_read: u64,
}

/// Expands directories to every `*.parquet` below them, in sorted path order.
pub fn resolve_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(resolve_table(inputs, None)?
        .into_iter()
        .map(|f| f.path)
        .collect())
}

/// Like [`resolve_inputs`], with each file's partition values: the `key=value` directories
/// between the input path given and the file, or a Delta table's own, from its log at
/// `version` (the latest without one).
pub fn resolve_table(inputs: &[PathBuf], version: Option<u64>) -> Result<Vec<InputFile>> {
    if inputs.is_empty() {
        return Err(Error::Usage("no input given".into()));
    }
    if version.is_some()
        && !inputs
            .iter()
            .try_fold(false, |any, p| Ok::<_, Error>(any || delta::is_delta(p)?))?
    {
        return Err(Error::Usage(
            "--table-version needs a Delta table (a directory with _delta_log/) as input".into(),
        ));
    }
    let mut files = Vec::new();
    for p in inputs {
        let p = &store::plain(p)?;
        match store::kind(p)? {
            Kind::Dir if delta::is_delta(p)? => {
                let live = delta::snapshot(p, version)?;
                if live.is_empty() {
                    return Err(Error::input(
                        p,
                        "the Delta table has no data files at this version",
                    ));
                }
                files.extend(live);
            }
            Kind::Dir => {
                refuse_iceberg(p)?;
                let mut found: Vec<PathBuf> = store::walk(p)?
                    .into_iter()
                    .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
                    .collect();
                if found.is_empty() {
                    return Err(Error::input(p, "directory holds no *.parquet files"));
                }
                found.sort();
                files.extend(found.into_iter().map(|f| InputFile {
                    partitions: partition_values(p, &f),
                    path: f,
                }));
            }
            Kind::File => files.push(InputFile {
                path: p.clone(),
                partitions: Vec::new(),
            }),
        }
    }
    refuse_repeats(&files)?;
    Ok(files)
}

/// An Iceberg table's data files include deleted and replaced rows: reading them as a plain
/// directory of Parquet would be wrong.
fn refuse_iceberg(dir: &Path) -> Result<()> {
    if store::is_dir(&dir.join("metadata"))? && store::is_dir(&dir.join("data"))? {
        return Err(Error::input(
            dir,
            "looks like an Apache Iceberg table (metadata/ and data/); Iceberg tables are not \
             supported yet. Export the current snapshot to Parquet first",
        ));
    }
    Ok(())
}

/// Refuses a file reached twice (a repeated path, a directory with one of its subdirectories,
/// a symlink to a file already listed): its rows would silently count twice.
fn refuse_repeats(files: &[InputFile]) -> Result<()> {
    let mut seen: std::collections::HashMap<PathBuf, &PathBuf> = Default::default();
    for f in files {
        if let Some(first) = seen.insert(store::canonical_input(&f.path)?, &f.path) {
            return Err(Error::Usage(format!(
                "{} and {} are the same file; each input file must be reached once (check for \
                 a repeated path, a directory given with one of its subdirectories, or a \
                 symlink)",
                first.display(),
                f.path.display()
            )));
        }
    }
    Ok(())
}

pub(crate) fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<Blob>> {
    ParquetRecordBatchReaderBuilder::try_new(Blob::open(path, &Default::default())?)
        .map_err(|e| Error::input(path, format!("not a readable Parquet file ({e})")))
}

/// Integer, float, decimal and boolean columns can be features.
fn is_feature_type(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Boolean)
}

/// Picks and checks the feature columns against the first file's schema.
pub(crate) fn choose_features(
    schema: &Schema,
    opts: &ReadOptions,
    path: &Path,
    not_default: &[String],
) -> Result<Vec<String>> {
    let named = |c: &str| {
        schema
            .field_with_name(c)
            .map_err(|_| missing(path, c, schema))
    };
    for c in opts.ids.iter().chain(&opts.weight).chain(&opts.carry) {
        named(c)?;
    }
    let features = match &opts.features {
        Some(list) => {
            for c in list {
                let f = named(c)?;
                if !is_feature_type(f.data_type()) {
                    return Err(Error::input(
                        path,
                        format!(
                            "column '{c}' is {}, not numeric; features must be numbers or booleans",
                            f.data_type()
                        ),
                    ));
                }
            }
            let unique: BTreeSet<&String> = list.iter().collect();
            if unique.len() != list.len() {
                return Err(Error::Usage("--features names a column twice".into()));
            }
            list.clone()
        }
        None => {
            for c in &opts.exclude {
                named(c)?;
            }
            let skip: BTreeSet<&String> = opts
                .ids
                .iter()
                .chain(&opts.weight)
                .chain(&opts.exclude)
                .chain(&opts.carry)
                .chain(not_default)
                .collect();
            schema
                .fields()
                .iter()
                .filter(|f| f.data_type().is_numeric() && !skip.contains(f.name()))
                .map(|f| f.name().clone())
                .collect()
        }
    };
    if features.is_empty() {
        return Err(Error::input(
            path,
            "no numeric feature columns to cluster on (see --features)",
        ));
    }
    if let Some(w) = &opts.weight {
        let f = named(w)?;
        if !f.data_type().is_numeric() {
            return Err(Error::input(
                path,
                format!("weight column '{w}' is {}, not numeric", f.data_type()),
            ));
        }
        if features.contains(w) {
            return Err(Error::Usage(format!(
                "column '{w}' cannot be both a feature and the weight"
            )));
        }
    }
    Ok(features)
}

pub(crate) fn missing(path: &Path, column: &str, schema: &Schema) -> Error {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    Error::input(
        path,
        format!("no column '{column}' (columns: {})", names.join(", ")),
    )
}

/// Counts of unusable values in one column, for the error message.
#[derive(Debug, Default)]
pub(crate) struct Invalid {
    pub nulls: usize,
    pub nans: usize,
    pub infs: usize,
    pub negative: usize,
    /// File and row index of the first one.
    pub first: Option<(PathBuf, usize)>,
}

impl Invalid {
    pub fn total(&self) -> usize {
        self.nulls + self.nans + self.infs + self.negative
    }
    /// Adds the counts of a later file; the first bad row stays the earliest one.
    pub fn merge(&mut self, other: Invalid) {
        self.nulls += other.nulls;
        self.nans += other.nans;
        self.infs += other.infs;
        self.negative += other.negative;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
    pub fn note(&mut self, path: &Path, row: usize) {
        if self.first.is_none() {
            self.first = Some((path.to_path_buf(), row));
        }
    }
    pub fn describe(&self, column: &str) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.nulls, "null"),
            (self.nans, "NaN"),
            (self.infs, "infinite"),
            (self.negative, "negative"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        let (file, row) = self
            .first
            .as_ref()
            .map(|(f, r)| (f.display().to_string(), *r))
            .unwrap_or_default();
        format!(
            "{file}: column '{column}' has {} (first at row {row})",
            parts.join(", ")
        )
    }
}

/// Reads every file into one in-memory table in input units (no scaling); schemas must agree.
/// For analyses that need every raw row at hand; fits go through [`crate::job`], which
/// streams when the rows do not fit.
pub fn read_table(inputs: &[PathBuf], opts: &ReadOptions) -> Result<Table> {
    let src = Source::open(inputs, opts)?;
    let dim = src.dim();
    let mut slabs = Vec::new();
    let (checked, extras) = src.data_pass(&Scaler::identity(dim), Keep::IdsAndCarry, &mut |s| {
        slabs.push(s);
        Ok(())
    })?;
    let bytes_read = src.bytes_read();
    Ok(Table {
        data: Dataset::from_slabs(dim, slabs),
        files: src.files,
        features: src.features,
        ids: extras.ids,
        id_schema: src.id_schema,
        carry: extras.carry,
        carry_schema: src.carry_schema,
        dropped: checked.dropped,
        bytes_read,
    })
}

/// The columns `names` of a decoded batch, as a batch of `schema`.
pub(crate) fn project(
    rb: &RecordBatch,
    names: &[String],
    schema: &SchemaRef,
    path: &Path,
) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = names
        .iter()
        .map(|c| {
            rb.column_by_name(c)
                .cloned()
                .ok_or_else(|| missing(path, c, &rb.schema()))
        })
        .collect::<Result<_>>()?;
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| Error::input(path, format!("columns {}: {e}", names.join(", "))))
}

/// Reads a `--init` file: `k` rows whose columns are named like `features`, in input units.
pub fn read_centroids(path: &Path, features: &[String], k: usize) -> Result<Vec<f64>> {
    let b = open(path)?;
    let schema = b.schema().clone();
    for c in features {
        match schema.field_with_name(c) {
            Err(_) => {
                return Err(Error::input(
                    path,
                    format!("--init file has no column '{c}' (it needs one per feature)"),
                ));
            }
            Ok(f) if !is_feature_type(f.data_type()) => {
                return Err(Error::input(
                    path,
                    format!("--init column '{c}' is {}, not numeric", f.data_type()),
                ));
            }
            Ok(_) => {}
        }
    }
    let reader = b
        .build()
        .map_err(|e| Error::input(path, format!("cannot read ({e})")))?;
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); features.len()];
    for rb in reader {
        let rb = rb.map_err(|e| Error::input(path, format!("cannot decode ({e})")))?;
        for (j, c) in features.iter().enumerate() {
            let col = rb
                .column_by_name(c)
                .ok_or_else(|| missing(path, c, &schema))?;
            let cast = arrow_cast::cast(col, &DataType::Float64)
                .map_err(|e| Error::input(path, format!("column '{c}': {e}")))?;
            let arr = cast.as_primitive::<arrow_array::types::Float64Type>();
            for r in 0..arr.len() {
                if arr.is_null(r) || !arr.value(r).is_finite() {
                    return Err(Error::input(
                        path,
                        format!(
                            "--init column '{c}' has a missing or non-finite value at row {}",
                            cols[j].len()
                        ),
                    ));
                }
                cols[j].push(arr.value(r));
            }
        }
    }
    let rows = cols.first().map_or(0, Vec::len);
    if rows != k {
        return Err(Error::input(
            path,
            format!("--init file has {rows} rows but --k is {k}"),
        ));
    }
    Ok((0..rows)
        .flat_map(|r| cols.iter().map(move |c| c[r]))
        .collect())
}
