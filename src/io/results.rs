//! The Parquet layouts of lakemeans' results.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, RecordBatchOptions,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::writer::Outputs;
use crate::backend::Assignment;
use crate::error::{Error, Result};

/// Rows per written batch of assignments: fixed, so the file's bytes do not depend on how
/// the rows arrived (files, row groups, memory or a stream).
const OUT_ROWS: usize = crate::data::SLAB_ROWS;

/// The assignments layout: the id columns, then `cluster` and `distance`.
pub fn assignments_schema(id_schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = id_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("cluster", DataType::Int32, false));
    fields.push(Field::new("distance", DataType::Float32, false));
    Arc::new(Schema::new(fields))
}

/// Pairs id columns and results that arrive separately, in row order, and hands out
/// assignment batches of exactly [`OUT_ROWS`] rows (the last one shorter).
pub struct AssignmentBatches {
    schema: SchemaRef,
    with_ids: bool,
    ids: std::collections::VecDeque<RecordBatch>,
    id_rows: usize,
    labels: Vec<u32>,
    distances: Vec<f32>,
}

impl AssignmentBatches {
    pub fn new(id_schema: &SchemaRef) -> Self {
        AssignmentBatches {
            schema: assignments_schema(id_schema),
            with_ids: !id_schema.fields().is_empty(),
            ids: Default::default(),
            id_rows: 0,
            labels: Vec::new(),
            distances: Vec::new(),
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The id columns of the next rows.
    pub fn ids(
        &mut self,
        b: RecordBatch,
        put: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        self.id_rows += b.num_rows();
        self.ids.push_back(b);
        self.drain(false, put)
    }

    /// The clusters and distances of the next rows.
    pub fn results(
        &mut self,
        labels: &[u32],
        distances: &[f32],
        put: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        self.labels.extend_from_slice(labels);
        self.distances.extend_from_slice(distances);
        self.drain(false, put)
    }

    /// Hands out what is left; ids and results must have covered the same rows.
    pub fn finish(mut self, put: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        self.drain(true, put)?;
        if !self.labels.is_empty() || self.id_rows > 0 {
            return Err(Error::Internal(format!(
                "assignments: {} results and {} id rows left unpaired",
                self.labels.len(),
                self.id_rows
            )));
        }
        Ok(())
    }

    fn drain(&mut self, last: bool, put: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        loop {
            let ready = if self.with_ids {
                self.id_rows.min(self.labels.len())
            } else {
                self.labels.len()
            };
            let n = if ready >= OUT_ROWS {
                OUT_ROWS
            } else if last && ready > 0 {
                ready
            } else {
                return Ok(());
            };
            let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
            if self.with_ids {
                // Only the leading batches that cover these rows are joined.
                let mut take = Vec::new();
                let mut got = 0;
                while got < n {
                    let b = self
                        .ids
                        .pop_front()
                        .ok_or_else(|| Error::Internal("assignments: id rows miscounted".into()))?;
                    got += b.num_rows();
                    take.push(b);
                }
                let all = arrow_select::concat::concat_batches(&take[0].schema(), &take)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                cols.extend(all.slice(0, n).columns().iter().cloned());
                if got > n {
                    self.ids.push_front(all.slice(n, got - n));
                }
                self.id_rows -= n;
            }
            cols.push(Arc::new(Int32Array::from_iter_values(
                self.labels.drain(..n).map(|l| l as i32),
            )));
            cols.push(Arc::new(Float32Array::from_iter_values(
                self.distances.drain(..n),
            )));
            put(RecordBatch::try_new_with_options(
                self.schema.clone(),
                cols,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )
            .map_err(|e| Error::Internal(e.to_string()))?)?;
        }
    }
}

/// Assignments of rows whose id columns are all in memory.
pub fn write_assignments(
    out: &mut Outputs,
    path: &Path,
    id_schema: &SchemaRef,
    ids: &[RecordBatch],
    a: &Assignment,
) -> Result<()> {
    let mut w = AssignmentBatches::new(id_schema);
    out.parquet_stream(path, w.schema(), &["distance"], |put| {
        for b in ids {
            w.ids(b.clone(), put)?;
        }
        w.results(&a.labels, &a.distances, put)?;
        w.finish(put)
    })
}

/// Centroids: `cluster`, `size`, `weight`, then the features in input units.
pub fn write_centroids(
    out: &mut Outputs,
    path: &Path,
    features: &[String],
    centroids_input: &[f64],
    sizes: &[u64],
    weights: &[f64],
) -> Result<()> {
    let k = sizes.len();
    let d = features.len();
    let mut fields = vec![
        Field::new("cluster", DataType::Int32, false),
        Field::new("size", DataType::Int64, false),
        Field::new("weight", DataType::Float64, false),
    ];
    fields.extend(
        features
            .iter()
            .map(|f| Field::new(f, DataType::Float64, false)),
    );
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(0..k as i32)),
        Arc::new(Int64Array::from_iter_values(
            sizes.iter().map(|&s| s as i64),
        )),
        Arc::new(Float64Array::from(weights.to_vec())),
    ];
    for j in 0..d {
        cols.push(Arc::new(Float64Array::from_iter_values(
            (0..k).map(|c| centroids_input[c * d + j]),
        )));
    }
    let batch =
        RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::Internal(e.to_string()))?;
    out.parquet(path, schema, [Ok(batch)], &[])
}

/// Reads the `cluster` column of an assignments file (or directory of them), as `fit
/// --output` writes it: one non-negative cluster per row, in row order.
pub fn read_labels(path: &Path) -> Result<Vec<u32>> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let files = super::resolve_inputs(&[path.to_path_buf()])?;
    let mut labels = Vec::new();
    for f in &files {
        let b = ParquetRecordBatchReaderBuilder::try_new(super::store::Blob::open(
            f,
            &Default::default(),
        )?)
        .map_err(|e| Error::input(f, format!("not a readable Parquet file ({e})")))?;
        if b.schema().field_with_name("cluster").is_err() {
            return Err(Error::input(
                f,
                "no column 'cluster' (expected assignments as `lakemeans fit --output` writes them)",
            ));
        }
        let reader = b
            .build()
            .map_err(|e| Error::input(f, format!("cannot read ({e})")))?;
        for rb in reader {
            let rb = rb.map_err(|e| Error::input(f, format!("cannot decode ({e})")))?;
            let col = rb
                .column_by_name("cluster")
                .ok_or_else(|| Error::input(f, "no column 'cluster'"))?;
            if !col.data_type().is_integer() {
                return Err(Error::input(
                    f,
                    format!("column 'cluster' is {}, not an integer", col.data_type()),
                ));
            }
            let cast = arrow_cast::cast(col, &DataType::Int64)
                .map_err(|e| Error::input(f, format!("column 'cluster': {e}")))?;
            let a = cast.as_primitive::<Int64Type>();
            for i in 0..a.len() {
                if a.is_null(i) || a.value(i) < 0 || a.value(i) > u32::MAX as i64 / 2 {
                    return Err(Error::input(
                        f,
                        format!(
                            "column 'cluster' has a missing or negative value at row {}",
                            labels.len()
                        ),
                    ));
                }
                labels.push(a.value(i) as u32);
            }
        }
    }
    Ok(labels)
}
