//! The Parquet layouts of lakemeans' results.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, RecordBatchOptions,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::reader::Table;
use super::writer::{Outputs, ROW_GROUP_ROWS};
use crate::backend::Assignment;
use crate::error::{Error, Result};

/// Assignments: the id columns, then `cluster` and `distance`, one row per table row.
pub fn write_assignments(
    out: &mut Outputs,
    path: &Path,
    table: &Table,
    a: &Assignment,
) -> Result<()> {
    let mut fields: Vec<Field> = table
        .id_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("cluster", DataType::Int32, false));
    fields.push(Field::new("distance", DataType::Float32, false));
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    // Slices of the rows that follow the id batches, or fixed row groups without ids.
    let spans: Vec<(usize, usize, Option<&RecordBatch>)> = if table.ids.is_empty() {
        (0..a.labels.len())
            .step_by(ROW_GROUP_ROWS)
            .map(|s| (s, ROW_GROUP_ROWS.min(a.labels.len() - s), None))
            .collect()
    } else {
        let mut s = 0;
        table
            .ids
            .iter()
            .map(|b| {
                let span = (s, b.num_rows(), Some(b));
                s += b.num_rows();
                span
            })
            .collect()
    };
    let batches = spans.into_iter().map(|(start, len, ids)| {
        let mut cols: Vec<ArrayRef> = ids.map(|b| b.columns().to_vec()).unwrap_or_default();
        let labels = &a.labels[start..start + len];
        cols.push(Arc::new(Int32Array::from_iter_values(
            labels.iter().map(|&l| l as i32),
        )));
        cols.push(Arc::new(Float32Array::from(
            a.distances[start..start + len].to_vec(),
        )));
        RecordBatch::try_new_with_options(
            schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(len)),
        )
        .map_err(|e| Error::Internal(e.to_string()))
    });
    out.parquet(path, schema.clone(), batches, &["distance"])
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
