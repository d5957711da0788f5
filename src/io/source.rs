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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::file::reader::Length;
use rayon::prelude::*;

use super::partition::{Filter, Partitions, row_mask};
use super::reader::{Invalid, ReadOptions, choose_features, missing, project, resolve_table};
use super::store::{Blob, Tally};
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
    /// Each file's size in bytes.
    sizes: Vec<u64>,
    /// The Hive partition columns and each file's values.
    parts: Partitions,
    /// The type every file's copy of a used column is cast to, where the files differ.
    targets: HashMap<String, DataType>,
    /// The `--filter` predicates on file columns, applied to every decoded row.
    row_filters: Vec<Filter>,
    units: Vec<Unit>,
    pub features: Vec<String>,
    opts: ReadOptions,
    pub id_schema: SchemaRef,
    pub carry_schema: SchemaRef,
    raw_rows: usize,
    /// Decoded bytes allowed in flight across a window of units.
    window_bytes: usize,
    /// Bytes fetched from the files so far: footers, then every pass's column chunks.
    read: Tally,
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
    /// Resolves the inputs, prunes partitions by `--filter`, reads the remaining footers (in
    /// parallel), reconciles their schemas and chooses the features.
    pub fn open(inputs: &[PathBuf], opts: &ReadOptions) -> Result<Source> {
        let (listed, parts) =
            Partitions::prune(resolve_table(inputs, opts.table_version)?, &opts.filter)?;
        if listed.is_empty() {
            return Err(Error::Usage(format!(
                "--filter {} matches no partition of the table",
                describe_filters(&opts.filter)
            )));
        }
        let files: Vec<PathBuf> = listed.into_iter().map(|f| f.path).collect();
        let read = Tally::default();
        let (metas, sizes): (Vec<ArrowReaderMetadata>, Vec<u64>) = files
            .par_iter()
            .map(|p| footer(p, &read))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let table = TableSchema::of(&files, &metas, &parts);
        let schema = &table.schema;
        let features = choose_features(schema, opts, &files[0], &table.not_default)?;
        let row_filters: Vec<Filter> = opts
            .filter
            .iter()
            .filter(|f| !parts.contains(&f.column))
            .cloned()
            .collect();
        for f in &row_filters {
            let field = schema
                .field_with_name(&f.column)
                .map_err(|_| missing(&files[0], &f.column, schema))?;
            f.check_values(Some(field))?;
        }
        let used: Vec<&String> = features
            .iter()
            .chain(&opts.weight)
            .chain(&opts.ids)
            .chain(&opts.carry)
            .chain(row_filters.iter().map(|f| &f.column))
            .collect();
        let targets = table.reconcile(&used, &files, &metas, &parts)?;
        let sub_schema = |names: &[String]| -> Result<SchemaRef> {
            let fields: Vec<Field> = names
                .iter()
                .map(|c| {
                    let f = schema
                        .field_with_name(c)
                        .map_err(|_| missing(&files[0], c, schema))?;
                    let ty = targets.get(c).unwrap_or(f.data_type());
                    Ok(f.clone().with_data_type(ty.clone()))
                })
                .collect::<Result<_>>()?;
            Ok(Arc::new(Schema::new(fields)))
        };
        let id_schema = sub_schema(&opts.ids)?;
        let carry_schema = sub_schema(&opts.carry)?;
        let mut units = Vec::new();
        let mut raw_rows = 0;
        for (fi, m) in metas.iter().enumerate() {
            let keep = row_groups_to_read(m, &row_filters);
            let mut first_row = 0;
            for (rg, g) in m.metadata().row_groups().iter().enumerate() {
                let rows = g.num_rows().max(0) as usize;
                if keep[rg] {
                    units.push(Unit {
                        file: fi,
                        row_group: rg,
                        rows,
                        first_row,
                    });
                    raw_rows += rows;
                }
                first_row += rows;
            }
        }
        Ok(Source {
            files,
            metas,
            sizes,
            parts,
            targets,
            row_filters,
            units,
            features,
            opts: opts.clone(),
            id_schema,
            carry_schema,
            raw_rows,
            window_bytes: 256 << 20,
            read,
        })
    }

    /// How many files the source opens: those left after partition pruning.
    pub fn files_read(&self) -> usize {
        self.files.len()
    }

    /// Bytes fetched from the table's files so far, by every pass since it was opened.
    pub fn bytes_read(&self) -> u64 {
        self.read.get()
    }

    /// The counter behind [`Source::bytes_read`], which goes on counting after the source
    /// has been handed on.
    pub fn read_tally(&self) -> Tally {
        self.read.clone()
    }

    /// Caps the decoded bytes in flight (two windows of units are in flight at most).
    pub fn with_window_bytes(mut self, bytes: usize) -> Self {
        self.window_bytes = bytes.max(1);
        self
    }

    pub fn dim(&self) -> usize {
        self.features.len()
    }

    /// Rows in the row groups to be read, before any are filtered or dropped.
    pub fn raw_rows(&self) -> usize {
        self.raw_rows
    }

    /// Whether [`Source::raw_rows`] is the count of rows a pass keeps: no `--drop-invalid`
    /// and no `--filter` on a file column can remove any.
    pub fn exact_rows(&self) -> bool {
        !self.opts.drop_invalid && self.row_filters.is_empty()
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

    /// The integer features whose values are all distinct over the table's first `limit`
    /// rows (at least `min_rows` of them): identifiers, most likely. Only those columns of the
    /// first units are decoded, so the check costs a small, bounded read whatever the table.
    pub fn distinct_integer_features(&self, limit: usize, min_rows: usize) -> Result<Vec<String>> {
        let mut seen: Vec<(&String, std::collections::HashSet<i64>)> = Vec::new();
        let Some(first) = self.units.first() else {
            return Ok(Vec::new());
        };
        let schema = self.metas[first.file].schema();
        for c in &self.features {
            let ty = self
                .targets
                .get(c)
                .or_else(|| schema.field_with_name(c).ok().map(|f| f.data_type()));
            if !self.parts.contains(c) && ty.is_some_and(DataType::is_integer) {
                seen.push((c, std::collections::HashSet::new()));
            }
        }
        let mut rows = 0;
        for u in &self.units {
            if seen.is_empty() || rows >= limit {
                break;
            }
            let path = &self.files[u.file];
            let reader = self.unit_reader(*u, &|name| seen.iter().any(|(c, _)| *c == name))?;
            for batch in reader {
                let batch =
                    batch.map_err(|e| Error::input(path, format!("cannot decode ({e})")))?;
                let take = batch.num_rows().min(limit - rows);
                for (name, set) in seen.iter_mut() {
                    let arr = column_as::<Int64Type>(&batch, name, path, DataType::Int64)?;
                    // A repeat clears the set, which then marks the column as not distinct.
                    if !arr.iter().take(take).flatten().all(|v| set.insert(v)) {
                        set.clear();
                        set.shrink_to_fit();
                    }
                }
                seen.retain(|(_, set)| !set.is_empty());
                rows += take;
                if seen.is_empty() || rows >= limit {
                    break;
                }
            }
        }
        if rows < min_rows {
            return Ok(Vec::new());
        }
        Ok(seen.into_iter().map(|(c, _)| c.clone()).collect())
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

    /// A reader of unit `u`'s columns that `wanted` names. Only those columns of the row
    /// group travel from an object store.
    fn unit_reader(
        &self,
        u: Unit,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<ParquetRecordBatchReader> {
        let path = &self.files[u.file];
        let meta = &self.metas[u.file];
        let mut file = Blob::sized(path, self.sizes[u.file], &self.read)?;
        let roots: Vec<usize> = meta
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| wanted(f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(meta.parquet_schema(), roots);
        // Only the projected columns of this row group travel from an object store.
        let chunks = meta.metadata().row_group(u.row_group).columns();
        file.prefetch(
            chunks
                .iter()
                .enumerate()
                .filter(|&(i, _)| mask.leaf_included(i))
                .map(|(_, c)| {
                    let (start, len) = c.byte_range();
                    start..start + len
                })
                .collect(),
        )?;
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
            .with_projection(mask)
            .with_row_groups(vec![u.row_group])
            .with_batch_size(DECODE_ROWS)
            .build()
            .map_err(|e| Error::input(path, format!("cannot read ({e})")))
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
        cols.extend(self.row_filters.iter().map(|f| &f.column));
        let reader = self.unit_reader(u, &|name| {
            cols.iter().any(|c| *c == name) && !self.parts.contains(name)
        })?;

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
        let mut decoded = 0;
        for batch in reader {
            let batch = batch.map_err(|e| {
                Error::input(
                    path,
                    format!("cannot decode row group data ({e}); is the file truncated?"),
                )
            })?;
            let first = u.first_row + decoded;
            decoded += batch.num_rows();
            let batch = self.complete(batch, u.file, path)?;
            let (batch, kept) = self.filter_rows(batch)?;
            let n = batch.num_rows();
            let at = At {
                path,
                pos: p.rows,
                first,
                kept: kept.as_deref(),
            };
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
                    check_values(&arr, &mut p.bad, &mut p.invalid[j], &at);
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
                    check_values(&arr, &mut p.bad, &mut p.invalid_weight, &at);
                    check_negative(&arr, &mut p.bad, &mut p.invalid_weight, &at);
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
        if decoded != u.rows {
            return Err(Error::input(
                path,
                format!(
                    "footer promises {} rows in row group {} but {} could be decoded",
                    u.rows, u.row_group, decoded
                ),
            ));
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

    /// A decoded batch as the table sees it: each column cast to the type the files agree
    /// on, and the file's partition values appended as constant columns (a partition value
    /// takes the place of a file column of the same name).
    fn complete(&self, b: RecordBatch, file: usize, path: &Path) -> Result<RecordBatch> {
        if self.parts.fields.is_empty() && self.targets.is_empty() {
            return Ok(b);
        }
        let n = b.num_rows();
        let mut fields: Vec<Field> = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for (f, c) in b.schema().fields().iter().zip(b.columns()) {
            if self.parts.contains(f.name()) {
                continue;
            }
            match self.targets.get(f.name()) {
                Some(t) if t != f.data_type() => {
                    let cast = arrow_cast::cast(c, t).map_err(|e| {
                        Error::input(
                            path,
                            format!("column '{}' cannot be read as {t} ({e})", f.name()),
                        )
                    })?;
                    fields.push(f.as_ref().clone().with_data_type(t.clone()));
                    cols.push(cast);
                }
                _ => {
                    fields.push(f.as_ref().clone());
                    cols.push(c.clone());
                }
            }
        }
        for (i, f) in self.parts.fields.iter().enumerate() {
            fields.push(f.clone());
            cols.push(self.parts.column(file, i, n));
        }
        RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))
    }

    /// The rows of `b` that every `--filter` on a file column keeps, with their indices
    /// within `b` when some were removed.
    fn filter_rows(&self, b: RecordBatch) -> Result<(RecordBatch, Option<Vec<usize>>)> {
        if self.row_filters.is_empty() {
            return Ok((b, None));
        }
        let Some(mask) = row_mask(&self.row_filters, b.num_rows(), &|c| {
            b.column_by_name(c).cloned()
        })?
        else {
            return Ok((b, None));
        };
        let kept: Vec<usize> = (0..mask.len())
            .filter(|&i| mask.is_valid(i) && mask.value(i))
            .collect();
        let b = arrow_select::filter::filter_record_batch(&b, &mask)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok((b, Some(kept)))
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
            let what = if !opts.filter.is_empty() && c.dropped == 0 {
                format!("no row matches --filter {}", describe_filters(&opts.filter))
            } else if c.dropped > 0 {
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

/// A file's footer, and its size; the bytes fetched count in `read`.
fn footer(path: &Path, read: &Tally) -> Result<(ArrowReaderMetadata, u64)> {
    let file = Blob::open(path, read)?;
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::default())
        .map_err(|e| Error::input(path, format!("not a readable Parquet file ({e})")))?;
    Ok((meta, file.len()))
}

/// The filters in a message.
fn describe_filters(filters: &[Filter]) -> String {
    filters
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which row groups of a file may hold rows that pass `filters`, by their min/max
/// statistics (a row group without statistics is read).
fn row_groups_to_read(m: &ArrowReaderMetadata, filters: &[Filter]) -> Vec<bool> {
    let groups = m.metadata().row_groups();
    let mut keep = vec![true; groups.len()];
    for f in filters {
        let Ok(conv) = StatisticsConverter::try_new(
            &f.column,
            m.schema(),
            m.metadata().file_metadata().schema_descr(),
        ) else {
            continue;
        };
        let (Ok(min), Ok(max)) = (conv.row_group_mins(groups), conv.row_group_maxes(groups)) else {
            continue;
        };
        for (i, k) in keep.iter_mut().enumerate() {
            *k = *k && f.may_match(&min, &max, i);
        }
    }
    keep
}

/// The columns of a table whose files' schemas may differ (lake schemas evolve): every
/// column once, in the order first seen, then the partition columns.
struct TableSchema {
    schema: Schema,
    /// Columns not in every file, or whose types do not reconcile: never default features.
    not_default: Vec<String>,
}

impl TableSchema {
    fn of(files: &[PathBuf], metas: &[ArrowReaderMetadata], parts: &Partitions) -> TableSchema {
        let mut fields: Vec<Field> = Vec::new();
        let mut seen_in: Vec<usize> = Vec::new();
        let mut clash: Vec<bool> = Vec::new();
        for m in metas {
            for f in m.schema().fields() {
                if parts.contains(f.name()) {
                    continue;
                }
                match fields.iter().position(|g| g.name() == f.name()) {
                    Some(i) => {
                        seen_in[i] += 1;
                        match promote(fields[i].data_type(), f.data_type()) {
                            Some(t) => {
                                let nullable = fields[i].is_nullable() || f.is_nullable();
                                fields[i] =
                                    fields[i].clone().with_data_type(t).with_nullable(nullable);
                            }
                            None => clash[i] = true,
                        }
                    }
                    None => {
                        fields.push(f.as_ref().clone());
                        seen_in.push(1);
                        clash.push(false);
                    }
                }
            }
        }
        let not_default = fields
            .iter()
            .enumerate()
            .filter(|&(i, _)| seen_in[i] < files.len() || clash[i])
            .map(|(_, f)| f.name().clone())
            .chain(parts.names().cloned())
            .collect();
        fields.extend(parts.fields.iter().cloned());
        TableSchema {
            schema: Schema::new(fields),
            not_default,
        }
    }

    /// Checks that every column in `used` is in every file with types that reconcile, and
    /// returns the type each is read as where the files differ.
    fn reconcile(
        &self,
        used: &[&String],
        files: &[PathBuf],
        metas: &[ArrowReaderMetadata],
        parts: &Partitions,
    ) -> Result<HashMap<String, DataType>> {
        let mut targets = HashMap::new();
        for &c in used {
            if parts.contains(c) || targets.contains_key(c) {
                continue;
            }
            let absent: Vec<&PathBuf> = files
                .iter()
                .zip(metas)
                .filter(|(_, m)| m.schema().field_with_name(c).is_err())
                .map(|(p, _)| p)
                .collect();
            if !absent.is_empty() {
                let shown: Vec<String> = absent
                    .iter()
                    .take(5)
                    .map(|p| p.display().to_string())
                    .collect();
                let more = absent.len().saturating_sub(5);
                return Err(Error::Input(format!(
                    "column '{c}' is missing from {} of {} files: {}{}",
                    absent.len(),
                    files.len(),
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )));
            }
            let mut ty: Option<(DataType, &PathBuf)> = None;
            let mut differ = false;
            for (p, m) in files.iter().zip(metas) {
                let Ok(f) = m.schema().field_with_name(c) else {
                    continue;
                };
                ty = match ty {
                    None => Some((f.data_type().clone(), p)),
                    Some((t, first)) => match promote(&t, f.data_type()) {
                        Some(w) => {
                            differ |= &w != f.data_type() || w != t;
                            Some((w, first))
                        }
                        None => {
                            return Err(Error::input(
                                p,
                                format!(
                                    "column '{c}' is {} here but {t} in {}; the types do not \
                                     reconcile",
                                    f.data_type(),
                                    first.display()
                                ),
                            ));
                        }
                    },
                };
            }
            if let (true, Some((t, _))) = (differ, ty) {
                targets.insert(c.clone(), t);
            }
        }
        Ok(targets)
    }
}

/// The type two files' copies of a column are read as: the same type, a wider integer of the
/// same signedness, a signed integer wide enough for a narrower unsigned one, a float for
/// integers and floats mixed, or the large string type for strings; `None` when they do not
/// reconcile.
fn promote(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    if a == b {
        return Some(a.clone());
    }
    let width = |t: &DataType| t.primitive_width().unwrap_or(8);
    if a.is_integer() && b.is_integer() {
        let wider = if width(a) >= width(b) { a } else { b };
        return match (a.is_signed_integer(), b.is_signed_integer()) {
            (true, true) | (false, false) => Some(wider.clone()),
            _ => {
                let unsigned = if a.is_unsigned_integer() { a } else { b };
                (width(unsigned) < 8).then_some(Int64)
            }
        };
    }
    if a.is_numeric() && b.is_numeric() {
        return Some(Float64);
    }
    let stringy = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    if stringy(a) && stringy(b) {
        return Some(LargeUtf8);
    }
    None
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
    at: &At,
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
        at.note(inv, bad, r);
    }
}

/// Notes rows with a negative weight.
fn check_negative(
    col: &arrow_array::Float32Array,
    bad: &mut Vec<usize>,
    inv: &mut Invalid,
    at: &At,
) {
    for (r, &v) in col.values().iter().enumerate() {
        if v < 0.0 && col.is_valid(r) {
            inv.negative += 1;
            at.note(inv, bad, r);
        }
    }
}

/// Where the rows of a decoded batch are: their position among the unit's kept rows (what
/// `--drop-invalid` removes by) and their row number in the file (what messages name).
struct At<'a> {
    path: &'a Path,
    /// Kept rows of the unit before this batch.
    pos: usize,
    /// File row number of the batch's first decoded row.
    first: usize,
    /// Decoded-row index of each kept row, when `--filter` removed some.
    kept: Option<&'a [usize]>,
}

impl At<'_> {
    /// Records batch row `r` as unusable.
    fn note(&self, inv: &mut Invalid, bad: &mut Vec<usize>, r: usize) {
        let decoded = self.kept.map_or(r, |k| k[r]);
        inv.note(self.path, self.first + decoded);
        bad.push(self.pos + r);
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
