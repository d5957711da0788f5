//! Synthetic audiences: a Gaussian mixture with known labels, for tests, demos and benchmarks.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::io::Outputs;
use crate::io::writer::ROW_GROUP_ROWS;
use crate::rng::Rng;

/// Rows generated from one random stream; fixed so output does not depend on thread count.
const CHUNK_ROWS: usize = 1 << 16;

/// Shape of a synthetic table.
#[derive(Debug, Clone, Copy)]
pub struct GenSpec {
    pub rows: usize,
    pub features: usize,
    pub clusters: usize,
    pub seed: u64,
    /// Standard deviation of the cluster centres; points have unit variance around them.
    pub spread: f64,
}

/// Writes `customer_id` (int64), `f0..f{d-1}` (float32) and the true `label` (int32).
pub fn generate(spec: &GenSpec, path: &Path) -> Result<()> {
    if spec.rows == 0 || spec.features == 0 || spec.clusters == 0 {
        return Err(Error::Usage(
            "--rows, --features and --clusters must all be at least 1".into(),
        ));
    }
    let d = spec.features;
    let mut crng = Rng::derive(spec.seed, u64::MAX);
    let centers: Vec<f64> = (0..spec.clusters * d)
        .map(|_| crng.normal_pair().0 * spec.spread)
        .collect();

    let mut fields = vec![Field::new("customer_id", DataType::Int64, false)];
    fields.extend((0..d).map(|j| Field::new(format!("f{j}"), DataType::Float32, false)));
    fields.push(Field::new("label", DataType::Int32, false));
    let schema = Arc::new(Schema::new(fields));
    let float_cols: Vec<String> = (0..d).map(|j| format!("f{j}")).collect();
    let no_dict: Vec<&str> = std::iter::once("customer_id")
        .chain(float_cols.iter().map(String::as_str))
        .collect();

    let groups = spec.rows.div_ceil(ROW_GROUP_ROWS);
    let batches = (0..groups).map(|g| {
        let start = g * ROW_GROUP_ROWS;
        let end = (start + ROW_GROUP_ROWS).min(spec.rows);
        row_group(spec, &centers, &schema, start, end)
    });
    let mut out = Outputs::default();
    out.parquet(path, schema.clone(), batches, &no_dict)?;
    out.commit()
}

fn row_group(
    spec: &GenSpec,
    centers: &[f64],
    schema: &Arc<Schema>,
    start: usize,
    end: usize,
) -> Result<RecordBatch> {
    let d = spec.features;
    let chunks: Vec<(Vec<i32>, Vec<Vec<f32>>)> = (start..end)
        .step_by(CHUNK_ROWS)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|s| {
            let n = CHUNK_ROWS.min(end - s);
            let mut rng = Rng::derive(spec.seed, (s / CHUNK_ROWS) as u64);
            let labels: Vec<i32> = (0..n)
                .map(|_| rng.below(spec.clusters as u64) as i32)
                .collect();
            let mut cols = vec![Vec::with_capacity(n); d];
            for (j, col) in cols.iter_mut().enumerate() {
                let mut pending = None;
                for &l in &labels {
                    let z = match pending.take() {
                        Some(z) => z,
                        None => {
                            let (a, b) = rng.normal_pair();
                            pending = Some(b);
                            a
                        }
                    };
                    col.push((centers[l as usize * d + j] + z) as f32);
                }
            }
            (labels, cols)
        })
        .collect();
    let mut labels = Vec::with_capacity(end - start);
    let mut cols: Vec<Vec<f32>> = vec![Vec::with_capacity(end - start); d];
    for (l, c) in chunks {
        labels.extend(l);
        for (dst, src) in cols.iter_mut().zip(c) {
            dst.extend(src);
        }
    }
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        (start..end).map(|i| 1_000_000 + i as i64),
    ))];
    arrays.extend(
        cols.into_iter()
            .map(|c| Arc::new(Float32Array::from(c)) as ArrayRef),
    );
    arrays.push(Arc::new(Int32Array::from(labels)));
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| Error::Internal(e.to_string()))
}
