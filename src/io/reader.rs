//! Reads Parquet feature tables into a [`Dataset`], decoding only the columns it needs.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};

/// Rows decoded per Arrow batch.
const DECODE_ROWS: usize = 64 * 1024;
/// Rows per dataset batch; large enough that per-batch overheads vanish.
const BATCH_ROWS: usize = 1 << 20;

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
}

/// Expands directories to every `*.parquet` below them, in sorted path order.
pub fn resolve_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if inputs.is_empty() {
        return Err(Error::Usage("no input given".into()));
    }
    let mut files = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| Error::input(p, describe_io(&e)))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            if found.is_empty() {
                return Err(Error::input(p, "directory holds no *.parquet files"));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::input(dir, describe_io(&e)))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::input(dir, describe_io(&e)))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Spark and Hive write markers such as _SUCCESS and hidden .crc files beside the data.
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if name.ends_with(".parquet") {
            out.push(path);
        }
    }
    Ok(())
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| Error::input(path, describe_io(&e)))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::input(path, format!("not a readable Parquet file ({e})")))
}

/// Integer, float, decimal and boolean columns can be features.
fn is_feature_type(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Boolean)
}

/// The first difference between two schemas, by column name and type.
fn schema_difference(a: &Schema, b: &Schema) -> Option<String> {
    for f in a.fields() {
        match b.field_with_name(f.name()) {
            Err(_) => return Some(format!("column '{}' is missing", f.name())),
            Ok(g) if g.data_type() != f.data_type() => {
                return Some(format!(
                    "column '{}' is {} here but {} in the first file",
                    f.name(),
                    g.data_type(),
                    f.data_type()
                ));
            }
            Ok(_) => {}
        }
    }
    b.fields()
        .iter()
        .find(|g| a.field_with_name(g.name()).is_err())
        .map(|g| format!("column '{}' is not in the first file", g.name()))
}

/// Picks and checks the feature columns against the first file's schema.
fn choose_features(schema: &Schema, opts: &ReadOptions, path: &Path) -> Result<Vec<String>> {
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

fn missing(path: &Path, column: &str, schema: &Schema) -> Error {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    Error::input(
        path,
        format!("no column '{column}' (columns: {})", names.join(", ")),
    )
}

/// Counts of unusable values in one column, for the error message.
#[derive(Default)]
struct Invalid {
    nulls: usize,
    nans: usize,
    infs: usize,
    negative: usize,
    /// File and row index of the first one.
    first: Option<(PathBuf, usize)>,
}

impl Invalid {
    fn total(&self) -> usize {
        self.nulls + self.nans + self.infs + self.negative
    }
    fn note(&mut self, path: &Path, row: usize) {
        if self.first.is_none() {
            self.first = Some((path.to_path_buf(), row));
        }
    }
    fn describe(&self, column: &str) -> String {
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

/// Reads every file into one table; schemas must agree.
pub fn read_table(inputs: &[PathBuf], opts: &ReadOptions) -> Result<Table> {
    let files = resolve_inputs(inputs)?;
    let first = open(&files[0])?;
    let schema = first.schema().clone();
    let features = choose_features(&schema, opts, &files[0])?;
    let dim = features.len();
    let id_fields: Vec<_> = opts
        .ids
        .iter()
        .map(|c| {
            schema
                .field_with_name(c)
                .cloned()
                .map_err(|_| missing(&files[0], c, &schema))
        })
        .collect::<Result<_>>()?;
    let id_schema = Arc::new(Schema::new(id_fields));
    let carry_fields: Vec<_> = opts
        .carry
        .iter()
        .map(|c| {
            schema
                .field_with_name(c)
                .cloned()
                .map_err(|_| missing(&files[0], c, &schema))
        })
        .collect::<Result<_>>()?;
    let carry_schema = Arc::new(Schema::new(carry_fields));

    let mut invalid: Vec<Invalid> = (0..dim).map(|_| Invalid::default()).collect();
    let mut invalid_weight = Invalid::default();
    let mut batches = Vec::new();
    let mut ids = Vec::new();
    let mut carry = Vec::new();
    let mut dropped = 0;
    let mut current = Batch::default();
    let mut builder = Some(first);
    for path in &files {
        let b = match builder.take() {
            Some(b) => b,
            None => open(path)?,
        };
        if let Some(diff) = schema_difference(&schema, b.schema()) {
            return Err(Error::input(
                path,
                format!("schema differs from {}: {diff}", files[0].display()),
            ));
        }
        let wanted: Vec<&String> = features
            .iter()
            .chain(&opts.ids)
            .chain(&opts.weight)
            .chain(&opts.carry)
            .collect();
        let roots: Vec<usize> = b
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| wanted.contains(&f.name()))
            .map(|(i, _)| i)
            .collect();
        let file_rows = b.metadata().file_metadata().num_rows().max(0) as usize;
        let mask = ProjectionMask::roots(b.parquet_schema(), roots);
        let reader = b
            .with_projection(mask)
            .with_batch_size(DECODE_ROWS)
            .build()
            .map_err(|e| Error::input(path, format!("cannot read ({e})")))?;
        let mut file_row = 0;
        for rb in reader {
            let rb = rb.map_err(|e| {
                Error::input(
                    path,
                    format!("cannot decode row group data ({e}); is the file truncated?"),
                )
            })?;
            let n = rb.num_rows();
            let mut keep = vec![true; n];
            let mut cols = Vec::with_capacity(dim);
            for (j, name) in features.iter().enumerate() {
                let col = column_f32(&rb, name, path)?;
                check_values(&col, &mut keep, &mut invalid[j], path, file_row, false);
                cols.push(col);
            }
            let weights = match &opts.weight {
                Some(w) => {
                    let col = column_f32(&rb, w, path)?;
                    check_values(&col, &mut keep, &mut invalid_weight, path, file_row, true);
                    Some(col)
                }
                None => None,
            };
            let kept = keep.iter().filter(|&&k| k).count();
            dropped += n - kept;
            if current.values.capacity() == 0 {
                // Reserve the whole batch at once: growing by doubling would double peak memory.
                current
                    .values
                    .reserve(BATCH_ROWS.min(file_rows - file_row).max(kept) * dim);
            }
            let start = current.values.len();
            current.values.resize(start + kept * dim, 0.0);
            for (j, col) in cols.iter().enumerate() {
                let vals = col.values();
                let mut r_out = 0;
                for (r, &k) in keep.iter().enumerate() {
                    if k {
                        current.values[start + r_out * dim + j] = vals[r];
                        r_out += 1;
                    }
                }
            }
            if let Some(wcol) = &weights {
                let w = current.weights.get_or_insert_with(Vec::new);
                w.extend(
                    keep.iter()
                        .zip(wcol.values())
                        .filter(|(k, _)| **k)
                        .map(|(_, &v)| v),
                );
            }
            if !opts.ids.is_empty() {
                ids.push(kept_columns(&rb, &opts.ids, &id_schema, &keep, path)?);
            }
            if !opts.carry.is_empty() {
                carry.push(kept_columns(&rb, &opts.carry, &carry_schema, &keep, path)?);
            }
            file_row += n;
            if current.values.len() >= BATCH_ROWS * dim {
                batches.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.values.is_empty() {
        batches.push(current);
    }

    if !opts.drop_invalid {
        let mut problems: Vec<String> = features
            .iter()
            .zip(&invalid)
            .filter(|(_, inv)| inv.total() > 0)
            .map(|(c, inv)| inv.describe(c))
            .collect();
        if let Some(w) = &opts.weight
            && invalid_weight.total() > 0
        {
            problems.push(invalid_weight.describe(w));
        }
        if !problems.is_empty() {
            return Err(Error::Input(format!(
                "{}\n(use --drop-invalid to skip such rows)",
                problems.join("\n")
            )));
        }
    } else if let Some(w) = &opts.weight
        && invalid_weight.negative > 0
    {
        return Err(Error::Input(invalid_weight.describe(w)));
    }

    let data = Dataset::new(dim, batches);
    if data.rows() == 0 {
        let what = if dropped > 0 {
            format!("all {dropped} rows were invalid and dropped")
        } else {
            "the table has no rows".into()
        };
        return Err(Error::input(&files[0], what));
    }
    if let Some(w) = &opts.weight
        && data.total_weight() <= 0.0
    {
        return Err(Error::input(
            &files[0],
            format!("weight column '{w}' is zero on every row"),
        ));
    }
    Ok(Table {
        files,
        features,
        data,
        ids,
        id_schema,
        carry,
        carry_schema,
        dropped,
    })
}

/// The columns `names` of a decoded batch, restricted to the kept rows.
fn kept_columns(
    rb: &RecordBatch,
    names: &[String],
    schema: &SchemaRef,
    keep: &[bool],
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
    let b = RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| Error::input(path, format!("columns {}: {e}", names.join(", "))))?;
    if keep.iter().all(|&k| k) {
        return Ok(b);
    }
    let mask = BooleanArray::from(keep.to_vec());
    arrow_select::filter::filter_record_batch(&b, &mask).map_err(|e| Error::Internal(e.to_string()))
}

/// A column cast to f32. Decimals, integers, half floats and booleans all convert.
fn column_f32(rb: &RecordBatch, name: &str, path: &Path) -> Result<arrow_array::Float32Array> {
    let col = rb
        .column_by_name(name)
        .ok_or_else(|| missing(path, name, &rb.schema()))?;
    let cast = arrow_cast::cast(col, &DataType::Float32).map_err(|e| {
        Error::input(
            path,
            format!("column '{name}' cannot be read as numbers ({e})"),
        )
    })?;
    Ok(cast.as_primitive::<Float32Type>().clone())
}

/// Marks rows with a null, NaN or infinite value (or a negative weight) as not kept.
fn check_values(
    col: &arrow_array::Float32Array,
    keep: &mut [bool],
    inv: &mut Invalid,
    path: &Path,
    offset: usize,
    is_weight: bool,
) {
    for (r, k) in keep.iter_mut().enumerate() {
        let bad = if col.is_null(r) {
            inv.nulls += 1;
            true
        } else {
            let v = col.value(r);
            if v.is_nan() {
                inv.nans += 1;
                true
            } else if v.is_infinite() {
                inv.infs += 1;
                true
            } else if is_weight && v < 0.0 {
                inv.negative += 1;
                true
            } else {
                false
            }
        };
        if bad {
            inv.note(path, offset + r);
            *k = false;
        }
    }
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
