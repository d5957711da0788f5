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
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use rayon::prelude::*;

use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};

/// Rows decoded per Arrow batch.
const DECODE_ROWS: usize = 8 * 1024;

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
    /// Adds the counts of a later file; the first bad row stays the earliest one.
    fn merge(&mut self, other: Invalid) {
        self.nulls += other.nulls;
        self.nans += other.nans;
        self.infs += other.infs;
        self.negative += other.negative;
        if self.first.is_none() {
            self.first = other.first;
        }
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
    // The schemas of the columns carried beside the features, taken from the first file.
    let sub_schema = |names: &[String]| -> Result<SchemaRef> {
        let fields: Vec<_> = names
            .iter()
            .map(|c| {
                schema
                    .field_with_name(c)
                    .cloned()
                    .map_err(|_| missing(&files[0], c, &schema))
            })
            .collect::<Result<_>>()?;
        Ok(Arc::new(Schema::new(fields)))
    };
    let id_schema = sub_schema(&opts.ids)?;
    let carry_schema = sub_schema(&opts.carry)?;

    let mut invalid: Vec<Invalid> = (0..dim).map(|_| Invalid::default()).collect();
    let mut invalid_weight = Invalid::default();
    let mut batches = Vec::new();
    let mut ids = Vec::new();
    let mut carry = Vec::new();
    let mut dropped = 0;
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
        let part = read_file(path, &b, &features, opts, &id_schema, &carry_schema)?;
        for (acc, inv) in invalid.iter_mut().zip(part.invalid) {
            acc.merge(inv);
        }
        invalid_weight.merge(part.invalid_weight);
        dropped += part.dropped;
        if !part.batch.values.is_empty() {
            batches.push(part.batch);
        }
        ids.extend(part.ids);
        carry.extend(part.carry);
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

/// Feature columns decoded together by one task. Parquet readers keep each column's
/// dictionary page alive while they decode it; grouping bounds that memory, and groups decode
/// in parallel.
const GROUP_COLUMNS: usize = 16;

/// One file's rows, invalid rows already removed when `drop_invalid` is set.
struct FilePart {
    batch: Batch,
    ids: Vec<RecordBatch>,
    carry: Vec<RecordBatch>,
    invalid: Vec<Invalid>,
    invalid_weight: Invalid,
    dropped: usize,
}

/// What one decoding task found.
enum Decoded {
    Features {
        invalid: Vec<Invalid>,
        bad: Vec<usize>,
    },
    Extra {
        weights: Option<Vec<f32>>,
        invalid_weight: Invalid,
        bad: Vec<usize>,
        ids: Vec<RecordBatch>,
        carry: Vec<RecordBatch>,
    },
}

/// A row-major matrix that several tasks fill at once, each in its own columns.
struct SharedMatrix {
    ptr: *mut f32,
    rows: usize,
    dim: usize,
}
// SAFETY: tasks write disjoint columns (each feature belongs to exactly one group) and the
// matrix outlives them (they run inside a rayon scope that ends before it is used again).
unsafe impl Sync for SharedMatrix {}

impl SharedMatrix {
    fn set_column(&self, j: usize, start: usize, vals: &[f32]) {
        assert!(j < self.dim && start + vals.len() <= self.rows);
        for (r, &v) in vals.iter().enumerate() {
            // SAFETY: in bounds by the assert; no other task writes column `j`.
            unsafe { *self.ptr.add((start + r) * self.dim + j) = v };
        }
    }
}

fn read_file(
    path: &Path,
    b: &ParquetRecordBatchReaderBuilder<File>,
    features: &[String],
    opts: &ReadOptions,
    id_schema: &SchemaRef,
    carry_schema: &SchemaRef,
) -> Result<FilePart> {
    let dim = features.len();
    let rows = b.metadata().file_metadata().num_rows().max(0) as usize;
    let meta = ArrowReaderMetadata::try_new(b.metadata().clone(), ArrowReaderOptions::default())
        .map_err(|e| Error::input(path, format!("cannot read ({e})")))?;
    let reader = |cols: &[&String]| -> Result<ParquetRecordBatchReader> {
        let file = File::open(path).map_err(|e| Error::input(path, describe_io(&e)))?;
        let rb = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone());
        let roots: Vec<usize> = rb
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| cols.contains(&f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(rb.parquet_schema(), roots);
        rb.with_projection(mask)
            .with_batch_size(DECODE_ROWS)
            .build()
            .map_err(|e| Error::input(path, format!("cannot read ({e})")))
    };
    let batches = |r: ParquetRecordBatchReader| {
        r.map(|rb| {
            rb.map_err(|e| {
                Error::input(
                    path,
                    format!("cannot decode row group data ({e}); is the file truncated?"),
                )
            })
        })
    };
    let short = |got: usize| {
        Error::input(
            path,
            format!("footer promises {rows} rows but {got} could be decoded"),
        )
    };

    let mut values = vec![0.0f32; rows * dim];
    let matrix = SharedMatrix {
        ptr: values.as_mut_ptr(),
        rows,
        dim,
    };
    let groups: Vec<Vec<usize>> = (0..dim)
        .collect::<Vec<_>>()
        .chunks(GROUP_COLUMNS)
        .map(<[usize]>::to_vec)
        .collect();
    let extra_cols: Vec<&String> = opts
        .ids
        .iter()
        .chain(&opts.weight)
        .chain(&opts.carry)
        .collect();
    let tasks = groups.len() + usize::from(!extra_cols.is_empty());
    let decoded: Vec<Result<Decoded>> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            if t < groups.len() {
                let group = &groups[t];
                let names: Vec<&String> = group.iter().map(|&j| &features[j]).collect();
                let mut invalid: Vec<Invalid> = group.iter().map(|_| Invalid::default()).collect();
                let mut bad = Vec::new();
                let mut row = 0;
                for rb in batches(reader(&names)?) {
                    let rb = rb?;
                    let n = rb.num_rows();
                    if row + n > rows {
                        return Err(short(row + n));
                    }
                    for ((&j, name), inv) in group.iter().zip(&names).zip(invalid.iter_mut()) {
                        let col = column_f32(&rb, name, path)?;
                        check_values(&col, &mut bad, inv, path, row);
                        matrix.set_column(j, row, col.values());
                    }
                    row += n;
                }
                if row != rows {
                    return Err(short(row));
                }
                Ok(Decoded::Features { invalid, bad })
            } else {
                let mut weights = opts.weight.as_ref().map(|_| Vec::with_capacity(rows));
                let mut invalid_weight = Invalid::default();
                let (mut bad, mut ids, mut carry) = (Vec::new(), Vec::new(), Vec::new());
                let mut row = 0;
                for rb in batches(reader(&extra_cols)?) {
                    let rb = rb?;
                    if let (Some(name), Some(w)) = (&opts.weight, weights.as_mut()) {
                        let col = column_f32(&rb, name, path)?;
                        check_values(&col, &mut bad, &mut invalid_weight, path, row);
                        check_negative(&col, &mut bad, &mut invalid_weight, path, row);
                        w.extend_from_slice(col.values());
                    }
                    if !opts.ids.is_empty() {
                        ids.push(project(&rb, &opts.ids, id_schema, path)?);
                    }
                    if !opts.carry.is_empty() {
                        carry.push(project(&rb, &opts.carry, carry_schema, path)?);
                    }
                    row += rb.num_rows();
                }
                if row != rows {
                    return Err(short(row));
                }
                Ok(Decoded::Extra {
                    weights,
                    invalid_weight,
                    bad,
                    ids,
                    carry,
                })
            }
        })
        .collect();

    let mut part = FilePart {
        batch: Batch::default(),
        ids: Vec::new(),
        carry: Vec::new(),
        invalid: Vec::with_capacity(dim),
        invalid_weight: Invalid::default(),
        dropped: 0,
    };
    let mut bad = Vec::new();
    let mut weights = None;
    for d in decoded {
        match d? {
            Decoded::Features { invalid, bad: b } => {
                part.invalid.extend(invalid);
                bad.extend(b);
            }
            Decoded::Extra {
                weights: w,
                invalid_weight,
                bad: b,
                ids,
                carry,
            } => {
                weights = w;
                part.invalid_weight = invalid_weight;
                part.ids = ids;
                part.carry = carry;
                bad.extend(b);
            }
        }
    }
    bad.sort_unstable();
    bad.dedup();
    if opts.drop_invalid && !bad.is_empty() {
        drop_rows(&mut values, dim, &bad);
        if let Some(w) = weights.as_mut() {
            drop_rows(w, 1, &bad);
        }
        part.ids = drop_from_batches(&part.ids, &bad)?;
        part.carry = drop_from_batches(&part.carry, &bad)?;
        part.dropped = bad.len();
    }
    part.batch = Batch { values, weights };
    Ok(part)
}

/// Removes rows `bad` (sorted, unique) from a row-major matrix in place, keeping order.
fn drop_rows<T: Copy>(v: &mut Vec<T>, dim: usize, bad: &[usize]) {
    let rows = v.len() / dim;
    let mut out = 0;
    let mut next_bad = bad.iter().peekable();
    for r in 0..rows {
        if next_bad.peek() == Some(&&r) {
            next_bad.next();
            continue;
        }
        if out != r {
            v.copy_within(r * dim..(r + 1) * dim, out * dim);
        }
        out += 1;
    }
    v.truncate(out * dim);
}

/// Removes rows `bad` (file row numbers, sorted) from consecutive record batches.
fn drop_from_batches(batches: &[RecordBatch], bad: &[usize]) -> Result<Vec<RecordBatch>> {
    let mut start = 0;
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let n = b.num_rows();
        let keep: Vec<bool> = (start..start + n)
            .map(|r| bad.binary_search(&r).is_err())
            .collect();
        let mask = BooleanArray::from(keep);
        out.push(
            arrow_select::filter::filter_record_batch(b, &mask)
                .map_err(|e| Error::Internal(e.to_string()))?,
        );
        start += n;
    }
    Ok(out)
}

/// The columns `names` of a decoded batch, as a batch of `schema`.
fn project(
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

/// Notes rows with a null, NaN or infinite value in `bad` (file row numbers).
fn check_values(
    col: &arrow_array::Float32Array,
    bad: &mut Vec<usize>,
    inv: &mut Invalid,
    path: &Path,
    offset: usize,
) {
    // The common case, a clean column, costs one vectorised pass.
    if col.null_count() == 0 && col.values().iter().all(|v| v.is_finite()) {
        return;
    }
    for r in 0..col.len() {
        if col.is_null(r) {
            inv.nulls += 1;
        } else if col.value(r).is_nan() {
            inv.nans += 1;
        } else if col.value(r).is_infinite() {
            inv.infs += 1;
        } else {
            continue;
        }
        inv.note(path, offset + r);
        bad.push(offset + r);
    }
}

/// Notes rows with a negative weight.
fn check_negative(
    col: &arrow_array::Float32Array,
    bad: &mut Vec<usize>,
    inv: &mut Invalid,
    path: &Path,
    offset: usize,
) {
    for (r, &v) in col.values().iter().enumerate() {
        if v < 0.0 && col.is_valid(r) {
            inv.negative += 1;
            inv.note(path, offset + r);
            bad.push(offset + r);
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
