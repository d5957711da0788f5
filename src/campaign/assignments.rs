//! Reads assignments files (`fit`, `refit` or `predict --output`): the `cluster` column and the
//! identifier or key columns carried beside it, as text.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::io::resolve_inputs;

/// Which column types a requested column may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Text only (strings, large strings, string views, dictionaries of strings).
    Text,
    /// Text or integers (first-party ids), integers written in decimal.
    TextOrInteger,
    /// Anything that Arrow can cast to text (join keys).
    Any,
}

/// One requested column: its values as text, `None` for nulls.
#[derive(Debug, Clone)]
pub struct TextColumn {
    pub name: String,
    pub values: Vec<Option<String>>,
}

/// The rows of an assignments file, in file order.
#[derive(Debug, Clone)]
pub struct Assignments {
    pub files: Vec<PathBuf>,
    pub labels: Vec<u32>,
    pub columns: Vec<TextColumn>,
}

impl Assignments {
    /// The segment ids present, ascending.
    pub fn segment_ids(&self) -> Vec<u32> {
        let mut ids = self.labels.clone();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

fn check_type(path: &Path, name: &str, t: &DataType, accept: Accept, why: &str) -> Result<()> {
    let ok = match accept {
        Accept::Text => is_text(t),
        Accept::TextOrInteger => is_text(t) || t.is_integer(),
        Accept::Any => arrow_cast::can_cast_types(t, &DataType::Utf8),
    };
    if ok {
        return Ok(());
    }
    let wanted = match accept {
        Accept::Text => "a string",
        Accept::TextOrInteger => "a string or an integer",
        Accept::Any => "a type that can be read as text",
    };
    Err(Error::input(
        path,
        format!("column '{name}' is {t}, not {wanted} ({why})"),
    ))
}

fn missing(path: &Path, name: &str, schema: &Schema, why: &str) -> Error {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    Error::input(
        path,
        format!("no column '{name}' ({why}; columns: {})", names.join(", ")),
    )
}

/// Reads `cluster` and `columns` (name, accepted types) from the assignments at `path` (a file
/// or a directory of files). `why` finishes the error message for a missing column, naming the
/// flag that asked for it.
pub fn read_assignments(
    path: &Path,
    columns: &[(String, Accept)],
    why: &str,
) -> Result<Assignments> {
    let files = resolve_inputs(&[path.to_path_buf()])?;
    let mut labels = Vec::new();
    let mut cols: Vec<TextColumn> = columns
        .iter()
        .map(|(n, _)| TextColumn {
            name: n.clone(),
            values: Vec::new(),
        })
        .collect();
    for f in &files {
        let b = ParquetRecordBatchReaderBuilder::try_new(crate::io::store::Blob::open(
            f,
            &Default::default(),
        )?)
        .map_err(|e| Error::input(f, format!("not a readable Parquet file ({e})")))?;
        let schema = b.schema().clone();
        let cluster = schema.index_of("cluster").map_err(|_| {
            Error::input(
                f,
                "no column 'cluster' (expected assignments as `lakemeans fit --output`, \
                 `refit --output` or `predict --output` write them)",
            )
        })?;
        if !schema.field(cluster).data_type().is_integer() {
            return Err(Error::input(
                f,
                format!(
                    "column 'cluster' is {}, not an integer",
                    schema.field(cluster).data_type()
                ),
            ));
        }
        let mut roots = vec![cluster];
        for (name, accept) in columns {
            let i = schema
                .index_of(name)
                .map_err(|_| missing(f, name, &schema, why))?;
            check_type(f, name, schema.field(i).data_type(), *accept, why)?;
            roots.push(i);
        }
        let mask = ProjectionMask::roots(b.parquet_schema(), roots);
        let reader = b
            .with_projection(mask)
            .build()
            .map_err(|e| Error::input(f, format!("cannot read ({e})")))?;
        let first_row = labels.len();
        for rb in reader {
            let rb = rb.map_err(|e| Error::input(f, format!("cannot decode ({e})")))?;
            let col = rb
                .column_by_name("cluster")
                .ok_or_else(|| Error::input(f, "no column 'cluster'"))?;
            push_labels(f, col, &mut labels, first_row)?;
            for c in cols.iter_mut() {
                let a = rb
                    .column_by_name(&c.name)
                    .ok_or_else(|| missing(f, &c.name, &schema, why))?;
                push_text(f, &c.name, a, &mut c.values)?;
            }
        }
    }
    if labels.is_empty() {
        return Err(Error::input(path, "the assignments have no rows"));
    }
    Ok(Assignments {
        files,
        labels,
        columns: cols,
    })
}

fn push_labels(f: &Path, col: &ArrayRef, labels: &mut Vec<u32>, first_row: usize) -> Result<()> {
    let cast = arrow_cast::cast(col, &DataType::Int64)
        .map_err(|e| Error::input(f, format!("column 'cluster': {e}")))?;
    let a = cast.as_primitive::<Int64Type>();
    for i in 0..a.len() {
        let v = a.value(i);
        if a.is_null(i) || !(0..=i64::from(u32::MAX / 2)).contains(&v) {
            return Err(Error::input(
                f,
                format!(
                    "column 'cluster' has a missing or negative value at row {}",
                    labels.len() - first_row
                ),
            ));
        }
        labels.push(v as u32);
    }
    Ok(())
}

fn push_text(f: &Path, name: &str, col: &ArrayRef, out: &mut Vec<Option<String>>) -> Result<()> {
    let cast = arrow_cast::cast(col, &DataType::Utf8)
        .map_err(|e| Error::input(f, format!("column '{name}': {e}")))?;
    let a = cast.as_string::<i32>();
    out.extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())));
    Ok(())
}
