//! Helpers shared by the integration tests: small tables written with arrow, and a runner for
//! the `lakemeans` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{Field, Schema};
use parquet::arrow::ArrowWriter;

/// Writes columns as one Parquet file.
pub fn write_parquet(path: &Path, cols: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch =
        RecordBatch::try_new(schema.clone(), cols.into_iter().map(|(_, a)| a).collect()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

pub fn lakemeans(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lakemeans"))
        .args(args)
        .env("LAKEMEANS_HIDE_GPU", "1")
        .output()
        .expect("run lakemeans")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Names of the files in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// One column of every batch of a Parquet file, cast to `to`.
fn read_column_as(path: &Path, name: &str, to: &arrow_schema::DataType) -> Vec<ArrayRef> {
    let f = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| arrow_cast::cast(b.unwrap().column_by_name(name).unwrap(), to).unwrap())
        .collect()
}

/// Reads one column of a Parquet file as i64 or f64 values.
pub fn read_column_f64(path: &Path, name: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for c in read_column_as(path, name, &arrow_schema::DataType::Float64) {
        let c = c
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        out.extend(c.values().iter().copied());
    }
    out
}

/// Reads one column of a Parquet file as text, nulls as `None`.
pub fn read_column_strings(path: &Path, name: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for c in read_column_as(path, name, &arrow_schema::DataType::Utf8) {
        let c = c
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        out.extend(c.iter().map(|v| v.map(str::to_string)));
    }
    out
}

/// Gaussian blobs, row-major, deterministic per seed.
pub fn blobs(n: usize, d: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut rng = lakemeans::rng::Rng::new(seed);
    let centers: Vec<f64> = (0..k * d).map(|_| rng.normal_pair().0 * 5.0).collect();
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let c = rng.below(k as u64) as usize;
        for j in 0..d {
            out.push((centers[c * d + j] + rng.normal_pair().0) as f32);
        }
    }
    out
}

/// Writes one table twice: whole, as `one.parquet` in `dir`, and cut into `parts` files of
/// consecutive rows in `dir/split` (`part-0000.parquet`, ...). `write(path, lo, hi)` writes
/// rows `lo..hi` of `n`. Returns both paths.
pub fn one_and_split(
    dir: &Path,
    n: usize,
    parts: usize,
    write: impl Fn(&Path, usize, usize),
) -> (String, String) {
    let one = p(dir, "one.parquet");
    write(&one, 0, n);
    let split = p(dir, "split");
    std::fs::create_dir(&split).unwrap();
    for i in 0..parts {
        let (lo, hi) = (i * n / parts, (i + 1) * n / parts);
        write(&split.join(format!("part-{i:04}.parquet")), lo, hi);
    }
    (s(&one).to_string(), s(&split).to_string())
}

/// The columns and device of a fit of [`partitioned`]'s table (and of the Delta fixtures,
/// which hold the same columns); callers add `--k`.
pub const PARTITIONED_FIT: [&str; 8] = [
    "--features",
    "spend,visits",
    "--id",
    "id",
    "--id",
    "country",
    "--device",
    "cpu",
];

pub const COUNTRIES: [&str; 3] = ["BE", "DE", "NL"];
pub const ROWS: usize = 120;

/// The rows of one partition of [`partitioned`]: ids, spend and visits, deterministic per partition.
pub fn rows(country: usize, month: usize) -> (Vec<i64>, Vec<f64>, Vec<i64>) {
    let v = blobs(ROWS, 2, 3, (country * 10 + month) as u64);
    let base = ((country * 10 + month) * ROWS) as i64;
    let ids = (0..ROWS as i64).map(|i| base + i).collect();
    let spend = v.iter().step_by(2).map(|&x| x as f64 * 10.0).collect();
    let visits = v
        .iter()
        .skip(1)
        .step_by(2)
        .map(|&x| (x * 3.0).round() as i64)
        .collect();
    (ids, spend, visits)
}

/// `root/country=C/month=M/part-0.parquet` for every country and months 1 and 2. The schema
/// evolves: month 1 files store visits as int32 and age as int64; month 2 files store visits
/// as int64, age as float64, and add a `tier` column.
pub fn partitioned(root: &Path) {
    for (ci, c) in COUNTRIES.iter().enumerate() {
        for month in 1..=2 {
            let dir = root.join(format!("country={c}/month={month}"));
            std::fs::create_dir_all(&dir).unwrap();
            let (ids, spend, visits) = rows(ci, month);
            let mut cols: Vec<(&str, ArrayRef)> = vec![
                ("id", Arc::new(Int64Array::from(ids))),
                ("spend", Arc::new(Float64Array::from(spend))),
            ];
            if month == 1 {
                cols.push((
                    "visits",
                    Arc::new(Int32Array::from_iter_values(
                        visits.iter().map(|&v| v as i32),
                    )),
                ));
                cols.push(("age", Arc::new(Int64Array::from(vec![40; ROWS]))));
            } else {
                cols.push(("visits", Arc::new(Int64Array::from(visits))));
                cols.push(("age", Arc::new(Float64Array::from(vec![40.5; ROWS]))));
                cols.push(("tier", Arc::new(StringArray::from(vec!["gold"; ROWS]))));
            }
            write_parquet(&dir.join("part-0.parquet"), cols);
        }
    }
}

/// Columns of [`wide`], `c00`, `c01`, ...
pub const WIDE_COLUMNS: usize = 24;

/// A table of [`WIDE_COLUMNS`] float columns of random values (which do not compress) in row
/// groups of `group_rows`: a table where reading two columns should cost a twelfth of it.
pub fn wide(path: &Path, rows: usize, group_rows: usize) {
    let mut rng = lakemeans::rng::Rng::new(11);
    let cols: Vec<(String, ArrayRef)> = (0..WIDE_COLUMNS)
        .map(|c| {
            let v = Float64Array::from_iter_values((0..rows).map(|_| rng.uniform()));
            (format!("c{c:02}"), Arc::new(v) as ArrayRef)
        })
        .collect();
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(n, a.data_type().clone(), false))
            .collect::<Vec<_>>(),
    ));
    let batch =
        RecordBatch::try_new(schema.clone(), cols.into_iter().map(|(_, a)| a).collect()).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// What a Parquet file's own metadata says reading `columns` of it must cost: the bytes of
/// those columns' chunks in every row group, and of the footer (metadata, its length and
/// the magic); and the file's size.
pub struct Cost {
    pub columns: u64,
    pub footer: u64,
    pub size: u64,
}

pub fn cost(path: &Path, columns: &[&str]) -> Cost {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let bytes = std::fs::read(path).unwrap();
    let size = bytes.len() as u64;
    let tail: [u8; 4] = bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap();
    let footer = u32::from_le_bytes(tail) as u64 + 8;
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
    let mut chunks = 0;
    for g in reader.metadata().row_groups() {
        for c in g.columns() {
            if columns.contains(&c.column_path().string().as_str()) {
                chunks += c.byte_range().1;
            }
        }
    }
    Cost {
        columns: chunks,
        footer,
        size,
    }
}
