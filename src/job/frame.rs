//! Fits and predictions on rows that are already in memory: the arrays and data frames of the
//! Python binding. The checks and messages are the ones a Parquet read gives, with the column
//! index beside the name, since an array has no column names of its own.

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Schema};
use rayon::prelude::*;

use super::{InitChoice, Mode, build_model, resolve_init};
use crate::backend::{self, Assignment, DeviceChoice, DeviceInfo};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::kmeans::{self, KMeansParams, KMeansResult, Progress};
use crate::model::Model;
use crate::prep::{ScaleMethod, Scaler};

/// Rows in input units, with the names of their columns.
pub struct Frame {
    pub features: Vec<String>,
    pub data: Dataset,
}

/// What a value that cannot be clustered is called in messages.
fn what(v: f64) -> &'static str {
    if v.is_nan() {
        "a NaN"
    } else {
        "an infinite value"
    }
}

/// A dense matrix read through `get(row, column)` (any strides, any float type) into the
/// engine's row-major `f32` rows. A NaN or infinite value fails, naming its column and row.
/// Columns are called `x0`, `x1`, ... unless `names` are given.
pub fn matrix(
    rows: usize,
    cols: usize,
    names: Option<Vec<String>>,
    weights: Option<Vec<f32>>,
    get: impl Fn(usize, usize) -> f64 + Sync,
) -> Result<Frame> {
    if cols == 0 {
        return Err(Error::Usage("X has no columns to cluster on".into()));
    }
    let mut values = vec![0f32; rows * cols];
    values
        .par_chunks_mut(cols * 4096)
        .enumerate()
        .try_for_each(|(c, chunk)| {
            for (r, row) in chunk.chunks_exact_mut(cols).enumerate() {
                let i = c * 4096 + r;
                for (j, v) in row.iter_mut().enumerate() {
                    let x = get(i, j);
                    if !x.is_finite() {
                        return Err((i, j, x));
                    }
                    *v = x as f32;
                }
            }
            Ok(())
        })
        .map_err(|(i, j, x)| {
            Error::Usage(format!(
                "X has {} in column {j} at row {i}; drop or impute such rows first",
                what(x)
            ))
        })?;
    let features = match names {
        Some(n) if n.len() == cols => n,
        Some(n) => {
            return Err(Error::Usage(format!(
                "{} column names for {cols} columns",
                n.len()
            )));
        }
        None => (0..cols).map(|j| format!("x{j}")).collect(),
    };
    frame(features, values, weights)
}

/// Arrow record batches (a pyarrow table, a polars or pandas data frame) into rows: every
/// column is a feature and must be numeric or boolean, with no null, NaN or infinite value.
pub fn arrow(schema: &Schema, batches: &[RecordBatch], weights: Option<Vec<f32>>) -> Result<Frame> {
    let dim = schema.fields().len();
    if dim == 0 {
        return Err(Error::Usage("X has no columns to cluster on".into()));
    }
    for (j, f) in schema.fields().iter().enumerate() {
        let t = f.data_type();
        if !(t.is_numeric() || matches!(t, DataType::Boolean)) {
            return Err(Error::Usage(format!(
                "column '{}' (index {j}) is {t}, not numeric; features must be numbers or \
                 booleans",
                f.name()
            )));
        }
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut values = vec![0f32; rows * dim];
    let mut first = 0;
    for b in batches {
        let n = b.num_rows();
        let block = &mut values[first * dim..(first + n) * dim];
        for (j, f) in schema.fields().iter().enumerate() {
            let col = arrow_cast::cast(b.column(j), &DataType::Float64).map_err(|e| {
                Error::Usage(format!(
                    "column '{}' (index {j}) cannot be read as numbers ({e})",
                    f.name()
                ))
            })?;
            let col = col.as_primitive::<Float64Type>();
            for (r, row) in block.chunks_exact_mut(dim).enumerate() {
                if col.is_null(r) {
                    return Err(Error::Usage(format!(
                        "column '{}' (index {j}) has a null at row {}",
                        f.name(),
                        first + r
                    )));
                }
                let x = col.value(r);
                if !x.is_finite() {
                    return Err(Error::Usage(format!(
                        "column '{}' (index {j}) has {} at row {}",
                        f.name(),
                        what(x),
                        first + r
                    )));
                }
                row[j] = x as f32;
            }
        }
        first += n;
    }
    let features = schema.fields().iter().map(|f| f.name().clone()).collect();
    frame(features, values, weights)
}

fn frame(features: Vec<String>, values: Vec<f32>, weights: Option<Vec<f32>>) -> Result<Frame> {
    let dim = features.len();
    let rows = values.len() / dim;
    if let Some(w) = &weights {
        if w.len() != rows {
            return Err(Error::Usage(format!(
                "sample_weight has {} values but X has {rows} rows",
                w.len()
            )));
        }
        if let Some(i) = w.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(Error::Usage(format!(
                "sample_weight at row {i} is {}; weights must be finite and non-negative",
                w[i]
            )));
        }
        if rows > 0 && w.iter().all(|&v| v == 0.0) {
            return Err(Error::Usage("sample_weight is zero on every row".into()));
        }
    }
    Ok(Frame {
        features,
        data: Dataset::from_rows(dim, values, weights),
    })
}

/// Everything an in-memory fit needs besides the rows.
#[derive(Debug, Clone)]
pub struct FrameFit {
    pub scale: ScaleMethod,
    /// `File` is not accepted here; `Given` holds centroids in input units.
    pub init: InitChoice,
    pub params: KMeansParams,
    pub device: DeviceChoice,
    pub adapter: Option<String>,
}

/// What an in-memory fit did.
pub struct FrameRun {
    pub result: KMeansResult,
    pub model: Model,
    pub info: DeviceInfo,
}

/// Fits `frame` with the same driver, backends and model as [`super::fit`].
pub fn fit(frame: &Frame, job: &FrameFit, progress: &dyn Progress) -> Result<FrameRun> {
    if job.params.k == 0 {
        return Err(Error::Usage("--k must be at least 1".into()));
    }
    let scaler = match job.scale {
        ScaleMethod::None => Scaler::identity(frame.data.dim()),
        m => Scaler::fit(m, &frame.data),
    };
    let scaled;
    let rows: &Dataset = if scaler.is_identity() {
        &frame.data
    } else {
        scaled = scaler.transform_dataset(&frame.data);
        &scaled
    };
    let (init, _) = resolve_init(
        &job.init,
        Mode::InMemory,
        &frame.features,
        &job.params,
        &scaler,
    )?;
    let params = KMeansParams {
        init,
        ..job.params.clone()
    };
    kmeans::validate(&params, rows)?;
    let mut be = backend::create(job.device, rows, job.adapter.as_deref())?;
    let result = kmeans::fit(rows, be.as_mut(), &params, progress)?;
    let info = be.info();
    drop(be);
    let model = build_model(&result, &frame.features, &scaler, &params, rows.rows());
    Ok(FrameRun {
        result,
        model,
        info,
    })
}

/// `frame` in the model's clustered space, after checking it has the model's width.
fn clustered(model: &Model, frame: &Frame) -> Result<Dataset> {
    let d = model.features.len();
    if frame.data.dim() != d {
        return Err(Error::Usage(format!(
            "X has {} features but the model was fitted on {d} ({})",
            frame.data.dim(),
            model.features.join(", ")
        )));
    }
    Ok(model.scaling.transform_dataset(&frame.data))
}

/// Labels (segment ids) and squared distances of every row against a fitted model, and the
/// weighted inertia, exactly as `predict` computes them.
pub fn predict(
    model: &Model,
    frame: &Frame,
    device: DeviceChoice,
    adapter: Option<&str>,
) -> Result<(Assignment, f64)> {
    let rows = clustered(model, frame)?;
    let mut be = backend::create(device, &rows, adapter)?;
    let step = be.step(&model.flat_centroids(), model.k, false)?;
    let mut a = be.assignment()?;
    model.to_ids(&mut a.labels);
    Ok((a, step.inertia))
}

/// Euclidean distance of every row to every centroid, in clustered space, `rows * k`.
pub fn distances(model: &Model, frame: &Frame) -> Result<Vec<f64>> {
    let rows = clustered(model, frame)?;
    let (k, d) = (model.k, rows.dim());
    let c = model.flat_centroids();
    let mut out = vec![0f64; rows.rows() * k];
    out.par_chunks_mut(k).enumerate().for_each(|(i, o)| {
        let x = rows.row(i);
        for (j, v) in o.iter_mut().enumerate() {
            let s: f64 = x
                .iter()
                .zip(&c[j * d..(j + 1) * d])
                .map(|(&a, &b)| {
                    let t = a as f64 - b as f64;
                    t * t
                })
                .sum();
            *v = s.sqrt();
        }
    });
    Ok(out)
}
