//! The row source: Parquet tables read as a stream of Arrow record batches.
//!
//! A table is a list of files; each file's row groups are the *units* of work. Units decode in
//! parallel, only the projected columns, a bounded window of them at a time, and are handed to
//! the consumer strictly in order: the order of the resolved input paths, then row order within
//! each file. Everything downstream (the scaler's statistics, the slabs the backends scan, the
//! assignments written out) is cut at global row positions, never at unit boundaries, so a
//! table split into a thousand files reads as the same rows as one file holding them.
//!
//! Opening a source reads only the footers. The passes ([`Source::stats_pass`],
//! [`Source::data_pass`], [`Source::ids_pass`]) each decode the table once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use rayon::prelude::*;

use super::reader::{
    Invalid, ReadOptions, choose_features, describe_io, missing, project, resolve_inputs,
    schema_difference,
};
use crate::data::{Batch, Slabber};
use crate::error::{Error, Result};
use crate::prep::{ScaleStats, Scaler};

/// Rows decoded per Arrow batch inside a unit.
const DECODE_ROWS: usize = 16 * 1024;

/// One row group of one file.
#[derive(Debug, Clone, Copy)]
struct Unit {
    file: usize,
    row_group: usize,
    rows: usize,
    /// Index of the unit's first row within its file.
    first_row: usize,
}

/// An opened table: footers read, features chosen, nothing decoded yet.
pub struct Source {
    pub files: Vec<PathBuf>,
    metas: Vec<ArrowReaderMetadata>,
    units: Vec<Unit>,
    pub features: Vec<String>,
    opts: ReadOptions,
    pub id_schema: SchemaRef,
    pub carry_schema: SchemaRef,
    raw_rows: usize,
    /// Decoded bytes allowed in flight across a window of units.
    window_bytes: usize,
}

/// What a unit's decode produces: its kept rows and what was wrong with the others.
struct Part {
    raw: Vec<f64>,
    values: Vec<f32>,
    weights: Option<Vec<f32>>,
    ids: Vec<RecordBatch>,
    carry: Vec<RecordBatch>,
    invalid: Vec<Invalid>,
    invalid_weight: Invalid,
    /// Rows (within the unit) with an unusable feature or weight, sorted.
    bad: Vec<usize>,
    /// Rows the unit read, before any were dropped.
    rows: usize,
}

/// What a pass asks each unit for.
#[derive(Clone, Copy)]
struct Want<'a> {
    /// Feature values as read, in f64 (for the scaler's statistics).
    raw: bool,
    /// Feature values in clustered space, in f32.
    scaled: Option<&'a Scaler>,
    /// The `--id` columns.
    ids: bool,
    /// The carried columns.
    carry: bool,
}

/// The outcome of a pass's checks: which rows were kept and what was wrong with the others.
#[derive(Debug, Default)]
pub struct Checked {
    pub kept: usize,
    pub dropped: usize,
    /// Per unit, the rows dropped by `--drop-invalid` (empty lists without it).
    drops: Vec<Vec<usize>>,
    invalid: Vec<Invalid>,
    invalid_weight: Invalid,
    total_weight: f64,
}

/// What a streaming data pass hands over, in row order: slabs of clustered rows, and the
/// `--id` columns of the kept rows as they are decoded.
pub enum Item {
    Slab(Batch),
    Ids(RecordBatch),
}

/// Which extra columns an in-memory data pass keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Nothing,
    /// The `--id` columns, for the assignments.
    Ids,
    /// The `--id` and the carried columns, for analyses that hold the whole table.
    IdsAndCarry,
}

/// One unit's kept rows in input units, as [`Source::raw_pass`] hands them over.
pub struct RawRows {
    /// Feature values as read, f64, row-major.
    pub values: Vec<f64>,
    /// Per-row weights when the table has a weight column.
    pub weights: Option<Vec<f32>>,
    /// The carried columns of the same rows.
    pub carry: Vec<RecordBatch>,
}

/// Rows and extras of an in-memory data pass.
pub struct Extras {
    pub ids: Vec<RecordBatch>,
    pub carry: Vec<RecordBatch>,
}

impl Source {
    /// Resolves the inputs, reads every footer (in parallel) and chooses the features.
    pub fn open(inputs: &[PathBuf], opts: &ReadOptions) -> Result<Source> {
        let files = resolve_inputs(inputs)?;
        let metas: Vec<ArrowReaderMetadata> =
            files.par_iter().map(|p| footer(p)).collect::<Result<_>>()?;
        let schema = metas[0].schema().clone();
        for (p, m) in files.iter().zip(&metas).skip(1) {
            if let Some(diff) = schema_difference(&schema, m.schema()) {
                return Err(Error::input(
                    p,
                    format!("schema differs from {}: {diff}", files[0].display()),
                ));
            }
        }
        let features = choose_features(&schema, opts, &files[0])?;
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
        let mut units = Vec::new();
        let mut raw_rows = 0;
        for (fi, m) in metas.iter().enumerate() {
            let mut first_row = 0;
            for (rg, g) in m.metadata().row_groups().iter().enumerate() {
                let rows = g.num_rows().max(0) as usize;
                units.push(Unit {
                    file: fi,
                    row_group: rg,
                    rows,
                    first_row,
                });
                first_row += rows;
            }
            raw_rows += first_row;
        }
        Ok(Source {
            files,
            metas,
            units,
            features,
            opts: opts.clone(),
            id_schema,
            carry_schema,
            raw_rows,
            window_bytes: 256 << 20,
        })
    }

    /// Caps the decoded bytes in flight (two windows of units are in flight at most).
    pub fn with_window_bytes(mut self, bytes: usize) -> Self {
        self.window_bytes = bytes.max(1);
        self
    }

    pub fn dim(&self) -> usize {
        self.features.len()
    }

    /// Rows in the files, before any are dropped.
    pub fn raw_rows(&self) -> usize {
        self.raw_rows
    }

    pub fn is_weighted(&self) -> bool {
        self.opts.weight.is_some()
    }

    /// Uncompressed bytes of the columns `keep` names, as the footers state them: what keeping
    /// them in memory costs.
    pub fn extras_bytes(&self, keep: Keep) -> usize {
        let carry: &[String] = if keep == Keep::IdsAndCarry {
            &self.opts.carry
        } else {
            &[]
        };
        let ids: &[String] = if keep == Keep::Nothing {
            &[]
        } else {
            &self.opts.ids
        };
        let names: Vec<&str> = ids.iter().chain(carry).map(String::as_str).collect();
        let mut total = 0i64;
        for m in &self.metas {
            for g in m.metadata().row_groups() {
                for c in g.columns() {
                    let top = c.column_path().parts().first();
                    if top.is_some_and(|t| names.contains(&t.as_str())) {
                        total += c.uncompressed_size();
                    }
                }
            }
        }
        total.max(0) as usize
    }

    /// Pass over the raw feature values: the scaler's statistics (weighted, f64, before any
    /// rounding) and the row checks.
    pub fn stats_pass(&self) -> Result<(ScaleStats, Checked)> {
        let dim = self.dim();
        let mut stats = ScaleStats::new(dim);
        let mut slabber = Slabber::<f64>::new(dim, self.is_weighted());
        let mut add = |s: Batch<f64>| {
            stats.merge(&ScaleStats::of_slab(&s.values, s.weights.as_deref(), dim));
            Ok(())
        };
        let want = Want {
            raw: true,
            scaled: None,
            ids: false,
            carry: false,
        };
        let mut checked = Checked::new(dim);
        let drop = self.opts.drop_invalid;
        self.scan_units(want, &mut |p: Part| {
            slabber.push(&p.raw, p.weights.as_deref(), &mut add)?;
            checked.add(p, drop);
            Ok(())
        })?;
        slabber.finish(&mut add)?;
        self.verify(&checked)?;
        Ok((stats, checked))
    }

    /// Pass that maps every kept row into clustered space with `scaler` and hands the rows to
    /// `sink` as slabs, in order; it also returns the extra columns `keep` names, of the kept
    /// rows.
    pub fn data_pass(
        &self,
        scaler: &Scaler,
        keep: Keep,
        sink: &mut dyn FnMut(Batch) -> Result<()>,
    ) -> Result<(Checked, Extras)> {
        let dim = self.dim();
        let mut slabber = Slabber::<f32>::new(dim, self.is_weighted());
        let want = Want {
            raw: false,
            scaled: Some(scaler),
            ids: keep != Keep::Nothing,
            carry: keep == Keep::IdsAndCarry,
        };
        let mut checked = Checked::new(dim);
        let mut out = Extras {
            ids: Vec::new(),
            carry: Vec::new(),
        };
        let drop = self.opts.drop_invalid;
        self.scan_units(want, &mut |mut p: Part| {
            slabber.push(&p.values, p.weights.as_deref(), sink)?;
            out.ids.append(&mut p.ids);
            out.carry.append(&mut p.carry);
            checked.add(p, drop);
            Ok(())
        })?;
        self.verify(&checked)?;
        slabber.finish(sink)?;
        Ok((checked, out))
    }

    /// Like [`Source::data_pass`], but the `--id` columns travel with the slabs instead of
    /// being collected, so nothing grows with the table.
    pub fn data_pass_with_ids(
        &self,
        scaler: &Scaler,
        sink: &mut dyn FnMut(Item) -> Result<()>,
    ) -> Result<Checked> {
        let dim = self.dim();
        let mut slabber = Slabber::<f32>::new(dim, self.is_weighted());
        let want = Want {
            raw: false,
            scaled: Some(scaler),
            ids: true,
            carry: false,
        };
        let mut checked = Checked::new(dim);
        let drop = self.opts.drop_invalid;
        self.scan_units(want, &mut |mut p: Part| {
            slabber.push(&p.values, p.weights.as_deref(), &mut |s| {
                sink(Item::Slab(s))
            })?;
            for b in p.ids.drain(..) {
                sink(Item::Ids(b))?;
            }
            checked.add(p, drop);
            Ok(())
        })?;
        self.verify(&checked)?;
        slabber.finish(&mut |s| sink(Item::Slab(s)))?;
        Ok(checked)
    }

    /// Pass over the kept rows in input units: each unit's raw feature values (f64, as read,
    /// row-major), weights and carried columns, handed to `f` in row order. Profiles need the
    /// values people know, at full resolution, and the columns that were not clustered on;
    /// nothing is kept between units, so the pass runs in bounded memory whatever the table.
    pub fn raw_pass(&self, f: &mut dyn FnMut(RawRows) -> Result<()>) -> Result<Checked> {
        let want = Want {
            raw: true,
            scaled: None,
            ids: false,
            carry: !self.opts.carry.is_empty(),
        };
        let mut checked = Checked::new(self.dim());
        let drop = self.opts.drop_invalid;
        self.scan_units(want, &mut |mut p: Part| {
            f(RawRows {
                values: std::mem::take(&mut p.raw),
                weights: p.weights.clone(),
                carry: std::mem::take(&mut p.carry),
            })?;
            checked.add(p, drop);
            Ok(())
        })?;
        self.verify(&checked)?;
        Ok(checked)
    }

    /// Pass over only the `--id` columns of the rows `checked` kept, handed to `f` in row
    /// order.
    pub fn ids_pass(
        &self,
        checked: &Checked,
        f: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        self.columns_pass(checked, false, f)
    }

    /// Pass over only the carried columns of the rows `checked` kept, handed to `f` in row
    /// order.
    pub fn carry_pass(
        &self,
        checked: &Checked,
        f: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        self.columns_pass(checked, true, f)
    }

    /// The `--id` columns, or with `carry` the carried ones, of the kept rows.
    fn columns_pass(
        &self,
        checked: &Checked,
        carry: bool,
        f: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let want = Want {
            raw: false,
            scaled: None,
            ids: !carry,
            carry,
        };
        let mut unit = 0;
        self.scan_units(want, &mut |p: Part| {
            let drops = checked.drops.get(unit).map_or(&[][..], Vec::as_slice);
            unit += 1;
            let cols = if carry { &p.carry } else { &p.ids };
            for b in drop_from_batches(cols, drops)? {
                f(b)?;
            }
            Ok(())
        })
    }

    /// Decodes units in windows, the next window while the consumer works on this one, and
    /// hands the parts over in unit order.
    fn scan_units(&self, want: Want, f: &mut dyn FnMut(Part) -> Result<()>) -> Result<()> {
        let per_row = self.dim() * (8 * want.raw as usize + 4 * want.scaled.is_some() as usize)
            + 4 * self.is_weighted() as usize
            + 16;
        let threads = rayon::current_num_threads().max(1);
        let mut windows: Vec<std::ops::Range<usize>> = Vec::new();
        let mut s = 0;
        while s < self.units.len() {
            let mut e = s;
            let mut bytes = 0;
            while e < self.units.len() && e - s < 2 * threads {
                let b = self.units[e].rows * per_row;
                if e > s && bytes + b > self.window_bytes {
                    break;
                }
                bytes += b;
                e += 1;
            }
            windows.push(s..e);
            s = e;
        }
        let decode = |r: std::ops::Range<usize>| -> Vec<Result<Part>> {
            r.into_par_iter()
                .map(|u| self.decode_unit(u, want))
                .collect()
        };
        let mut pending = windows.first().map(|r| decode(r.clone()));
        for w in 1..=windows.len() {
            let Some(current) = pending.take() else { break };
            // The next window decodes on the pool while this thread hands over the current one.
            pending = std::thread::scope(|s| -> Result<_> {
                let next = windows.get(w).map(|r| {
                    let r = r.clone();
                    s.spawn(move || decode(r))
                });
                for p in current {
                    f(p?)?;
                }
                next.map(|h| {
                    h.join()
                        .map_err(|_| Error::Internal("a decoding thread panicked".into()))
                })
                .transpose()
            })?;
        }
        Ok(())
    }

    fn decode_unit(&self, ui: usize, want: Want) -> Result<Part> {
        let u = self.units[ui];
        let path = &self.files[u.file];
        let dim = self.dim();
        let opts = &self.opts;
        let features = want.raw || want.scaled.is_some();
        let mut cols: Vec<&String> = Vec::new();
        if features {
            cols.extend(&self.features);
            cols.extend(&opts.weight);
        }
        if want.ids {
            cols.extend(&opts.ids);
        }
        if want.carry {
            cols.extend(&opts.carry);
        }
        let file = File::open(path).map_err(|e| Error::input(path, describe_io(&e)))?;
        let rb =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metas[u.file].clone());
        let roots: Vec<usize> = rb
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| cols.contains(&f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(rb.parquet_schema(), roots);
        let reader = rb
            .with_projection(mask)
            .with_row_groups(vec![u.row_group])
            .with_batch_size(DECODE_ROWS)
            .build()
            .map_err(|e| Error::input(path, format!("cannot read ({e})")))?;

        let mut p = Part {
            raw: Vec::with_capacity(if want.raw { u.rows * dim } else { 0 }),
            values: Vec::with_capacity(if want.scaled.is_some() {
                u.rows * dim
            } else {
                0
            }),
            weights: (features && opts.weight.is_some()).then(|| Vec::with_capacity(u.rows)),
            ids: Vec::new(),
            carry: Vec::new(),
            invalid: (0..dim).map(|_| Invalid::default()).collect(),
            invalid_weight: Invalid::default(),
            bad: Vec::new(),
            rows: 0,
        };
        let mut col = vec![0f64; 0];
        for batch in reader {
            let batch = batch.map_err(|e| {
                Error::input(
                    path,
                    format!("cannot decode row group data ({e}); is the file truncated?"),
                )
            })?;
            let n = batch.num_rows();
            let offset = u.first_row + p.rows;
            if features {
                let base = p.raw.len().max(p.values.len());
                if want.raw {
                    p.raw.resize(base + n * dim, 0.0);
                }
                if want.scaled.is_some() {
                    p.values.resize(base + n * dim, 0.0);
                }
                for (j, name) in self.features.iter().enumerate() {
                    let arr = column_as::<Float64Type>(&batch, name, path, DataType::Float64)?;
                    check_values(&arr, &mut p.bad, &mut p.invalid[j], path, offset);
                    col.clear();
                    col.extend_from_slice(arr.values());
                    if want.raw {
                        for (r, &v) in col.iter().enumerate() {
                            p.raw[base + r * dim + j] = v;
                        }
                    }
                    if let Some(s) = want.scaled {
                        for (r, &v) in col.iter().enumerate() {
                            p.values[base + r * dim + j] = s.apply(j, v);
                        }
                    }
                }
                if let (Some(name), Some(w)) = (&opts.weight, p.weights.as_mut()) {
                    let arr = column_as::<Float32Type>(&batch, name, path, DataType::Float32)?;
                    check_values(&arr, &mut p.bad, &mut p.invalid_weight, path, offset);
                    check_negative(&arr, &mut p.bad, &mut p.invalid_weight, path, offset);
                    w.extend_from_slice(arr.values());
                }
            }
            if want.ids && !opts.ids.is_empty() {
                p.ids
                    .push(project(&batch, &opts.ids, &self.id_schema, path)?);
            }
            if want.carry && !opts.carry.is_empty() {
                p.carry
                    .push(project(&batch, &opts.carry, &self.carry_schema, path)?);
            }
            p.rows += n;
        }
        if p.rows != u.rows {
            return Err(Error::input(
                path,
                format!(
                    "footer promises {} rows in row group {} but {} could be decoded",
                    u.rows, u.row_group, p.rows
                ),
            ));
        }
        // File row numbers back to unit row numbers.
        for b in p.bad.iter_mut() {
            *b -= u.first_row;
        }
        p.bad.sort_unstable();
        p.bad.dedup();
        if opts.drop_invalid && !p.bad.is_empty() {
            drop_rows(&mut p.raw, dim, &p.bad);
            drop_rows(&mut p.values, dim, &p.bad);
            if let Some(w) = p.weights.as_mut() {
                drop_rows(w, 1, &p.bad);
            }
            p.ids = drop_from_batches(&p.ids, &p.bad)?;
            p.carry = drop_from_batches(&p.carry, &p.bad)?;
        }
        Ok(p)
    }

    /// Turns what the checks found into the errors users see: every unusable column with
    /// its counts and first row, or an empty or weightless table.
    fn verify(&self, c: &Checked) -> Result<()> {
        let opts = &self.opts;
        if !opts.drop_invalid {
            let mut problems: Vec<String> = self
                .features
                .iter()
                .zip(&c.invalid)
                .filter(|(_, inv)| inv.total() > 0)
                .map(|(col, inv)| inv.describe(col))
                .collect();
            if let Some(w) = &opts.weight
                && c.invalid_weight.total() > 0
            {
                problems.push(c.invalid_weight.describe(w));
            }
            if !problems.is_empty() {
                return Err(Error::Input(format!(
                    "{}\n(use --drop-invalid to skip such rows)",
                    problems.join("\n")
                )));
            }
        } else if let Some(w) = &opts.weight
            && c.invalid_weight.negative > 0
        {
            return Err(Error::Input(c.invalid_weight.describe(w)));
        }
        if c.kept == 0 {
            let what = if c.dropped > 0 {
                format!("all {} rows were invalid and dropped", c.dropped)
            } else {
                "the table has no rows".into()
            };
            return Err(Error::input(&self.files[0], what));
        }
        if let Some(w) = &opts.weight
            && c.total_weight <= 0.0
        {
            return Err(Error::input(
                &self.files[0],
                format!("weight column '{w}' is zero on every row"),
            ));
        }
        Ok(())
    }
}

impl Checked {
    fn new(dim: usize) -> Self {
        Checked {
            invalid: (0..dim).map(|_| Invalid::default()).collect(),
            ..Default::default()
        }
    }

    fn add(&mut self, p: Part, drop_invalid: bool) {
        for (acc, inv) in self.invalid.iter_mut().zip(p.invalid) {
            acc.merge(inv);
        }
        self.invalid_weight.merge(p.invalid_weight);
        self.total_weight += p
            .weights
            .as_ref()
            .map_or(0.0, |w| w.iter().map(|&v| v as f64).sum());
        let dropped = if drop_invalid { p.bad.len() } else { 0 };
        self.kept += p.rows - dropped;
        self.dropped += dropped;
        self.drops
            .push(if drop_invalid { p.bad } else { Vec::new() });
    }
}

fn footer(path: &Path) -> Result<ArrowReaderMetadata> {
    let file = File::open(path).map_err(|e| Error::input(path, describe_io(&e)))?;
    ArrowReaderMetadata::load(&file, ArrowReaderOptions::default())
        .map_err(|e| Error::input(path, format!("not a readable Parquet file ({e})")))
}

/// A column cast to a primitive type. Decimals, integers, half floats and booleans convert.
fn column_as<T: arrow_array::types::ArrowPrimitiveType>(
    rb: &RecordBatch,
    name: &str,
    path: &Path,
    to: DataType,
) -> Result<arrow_array::PrimitiveArray<T>> {
    let col = rb
        .column_by_name(name)
        .ok_or_else(|| missing(path, name, &rb.schema()))?;
    let cast = arrow_cast::cast(col, &to).map_err(|e| {
        Error::input(
            path,
            format!("column '{name}' cannot be read as numbers ({e})"),
        )
    })?;
    Ok(cast.as_primitive::<T>().clone())
}

/// Notes rows with a null, NaN or infinite value in `bad` (file row numbers).
fn check_values<T>(
    col: &arrow_array::PrimitiveArray<T>,
    bad: &mut Vec<usize>,
    inv: &mut Invalid,
    path: &Path,
    offset: usize,
) where
    T: arrow_array::types::ArrowPrimitiveType,
    T::Native: num_like::Float,
{
    use num_like::Float;
    // The common case, a clean column, costs one vectorised pass.
    if col.null_count() == 0 && col.values().iter().all(|v| v.finite()) {
        return;
    }
    for r in 0..col.len() {
        if col.is_null(r) {
            inv.nulls += 1;
        } else if col.value(r).nan() {
            inv.nans += 1;
        } else if !col.value(r).finite() {
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

/// The two float types values are checked in.
mod num_like {
    pub trait Float: Copy {
        fn finite(self) -> bool;
        fn nan(self) -> bool;
    }
    impl Float for f32 {
        fn finite(self) -> bool {
            self.is_finite()
        }
        fn nan(self) -> bool {
            self.is_nan()
        }
    }
    impl Float for f64 {
        fn finite(self) -> bool {
            self.is_finite()
        }
        fn nan(self) -> bool {
            self.is_nan()
        }
    }
}

/// Removes rows `bad` (sorted, unique) from a row-major matrix in place, keeping order.
fn drop_rows<T: Copy>(v: &mut Vec<T>, dim: usize, bad: &[usize]) {
    if v.is_empty() {
        return;
    }
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

/// Removes rows `bad` (unit row numbers, sorted) from consecutive record batches.
fn drop_from_batches(batches: &[RecordBatch], bad: &[usize]) -> Result<Vec<RecordBatch>> {
    if bad.is_empty() {
        return Ok(batches.to_vec());
    }
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
