//! The native side of `lakemeans.spark`: what one partition computes (statistics, Lloyd
//! partials, k-means|| draws) and what the driver does with the merged results. Partials
//! travel as bytes; their sums are exact, so the driver's result does not depend on how the
//! DataFrame is partitioned.

use lakemeans::kmeans::distributed::{self, Keyed, Partials, Stats};
use lakemeans::kmeans::{self, reduce_candidates};
use lakemeans::model::Model;
use lakemeans::prep::Scaler;
use lakemeans::rng::Rng;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{PyModel, Rows, bytes_of, device, err, scale};

fn scaler(json: &str) -> PyResult<Scaler> {
    serde_json::from_str(json).map_err(|e| PyValueError::new_err(format!("bad scaler ({e})")))
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .collect()
}

/// The partition's rows in clustered space.
fn clustered(rows: &Rows, scaler_json: &str) -> PyResult<lakemeans::data::Dataset> {
    let s = scaler(scaler_json)?;
    if s.offset.len() != rows.0.data.dim() {
        return Err(PyValueError::new_err(
            "the scaler does not match the columns",
        ));
    }
    Ok(if s.is_identity() {
        rows.0.data.clone()
    } else {
        s.transform_dataset(&rows.0.data)
    })
}

/// One partition's statistics (rows, weights, moments, ranges), as bytes.
#[pyfunction]
fn stats<'py>(py: Python<'py>, rows: &Rows) -> Bound<'py, PyBytes> {
    let b = py.detach(|| Stats::of(&rows.0.data).to_bytes());
    PyBytes::new(py, &b)
}

/// Merges partitions' statistics: (scaler JSON, the unit of `tol`, rows).
#[pyfunction]
fn reduce_stats(parts: Vec<Vec<u8>>, dim: usize, method: &str) -> PyResult<(String, f64, u64)> {
    let mut all = Stats::new(dim);
    for p in &parts {
        all.merge(&Stats::from_bytes(p).map_err(err)?);
    }
    let s = all.scaler(scale(method)?);
    let mv = all.mean_variance(&s);
    let json = serde_json::to_string(&s).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((json, mv, all.rows()))
}

/// One partition's Lloyd partials against `centroids` (f32 bytes, clustered space).
#[pyfunction]
fn partials<'py>(
    py: Python<'py>,
    rows: &Rows,
    scaler_json: &str,
    centroids: &[u8],
    k: usize,
    device: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let data = clustered(rows, scaler_json)?;
    let dev = self::device(device)?;
    let c = floats(centroids);
    let b = py
        .detach(|| Partials::of(&data, &c, k, dev).map(|p| p.to_bytes()))
        .map_err(err)?;
    Ok(PyBytes::new(py, &b))
}

fn merge(parts: &[Vec<u8>]) -> PyResult<Partials> {
    let mut it = parts.iter();
    let first = it
        .next()
        .ok_or_else(|| PyValueError::new_err("no partials: the DataFrame has no rows"))?;
    let mut all = Partials::from_bytes(first).map_err(err)?;
    for p in it {
        all.merge(&Partials::from_bytes(p).map_err(err)?)
            .map_err(err)?;
    }
    Ok(all)
}

/// Merges partials in the order given and moves the centroids (f32 bytes) as a Lloyd step
/// does: (new centroids, Σ‖Δc‖², inertia against the old centroids, member counts, cluster
/// weights as f64 bytes).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn lloyd_update<'py>(
    py: Python<'py>,
    centroids: &[u8],
    parts: Vec<Vec<u8>>,
) -> PyResult<(Bound<'py, PyBytes>, f64, f64, Vec<u64>, Bound<'py, PyBytes>)> {
    let step = merge(&parts)?.step();
    let mut c = floats(centroids);
    if c.len() != step.sums.len() {
        return Err(PyValueError::new_err("centroids do not match the partials"));
    }
    let shift = kmeans::move_centroids(&mut c, &step.sums, &step.weights, &[]);
    Ok((
        bytes_of(py, &c),
        shift,
        step.inertia,
        step.counts,
        bytes_of(py, &step.weights),
    ))
}

/// One partition's `m` rows (clustered space) with the smallest seeded keys, as bytes.
#[pyfunction]
fn smallest_keys<'py>(
    py: Python<'py>,
    rows: &Rows,
    scaler_json: &str,
    m: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let data = clustered(rows, scaler_json)?;
    let b = py.detach(|| distributed::keyed_to_bytes(&distributed::smallest_keys(&data, m, seed)));
    Ok(PyBytes::new(py, &b))
}

fn keyed(parts: &[Vec<u8>], dim: usize) -> PyResult<Vec<Keyed>> {
    let mut all = Vec::new();
    for p in parts {
        all.extend(distributed::keyed_from_bytes(p, dim).map_err(err)?);
    }
    Ok(all)
}

/// The `m` smallest keyed rows of all partitions, as f32 bytes (row-major).
#[pyfunction]
fn merge_smallest<'py>(
    py: Python<'py>,
    parts: Vec<Vec<u8>>,
    dim: usize,
    m: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let rows: Vec<f32> = distributed::smallest(keyed(&parts, dim)?, m)
        .into_iter()
        .flat_map(|(_, v)| v)
        .collect();
    Ok(bytes_of(py, &rows))
}

/// One partition's draw of a k-means|| round against the candidates so far.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn sample<'py>(
    py: Python<'py>,
    rows: &Rows,
    scaler_json: &str,
    cands: &[u8],
    scale_: f64,
    seed: u64,
    round: usize,
    device: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let data = clustered(rows, scaler_json)?;
    let dev = self::device(device)?;
    let c = floats(cands);
    let key = kmeans::round_key(seed, round);
    let b = py
        .detach(|| {
            distributed::sample(&data, &c, scale_, key, dev)
                .map(|s| distributed::keyed_to_bytes(&s))
        })
        .map_err(err)?;
    Ok(PyBytes::new(py, &b))
}

/// Every partition's drawn rows in the one order all splits agree on, as f32 bytes.
#[pyfunction]
fn merge_samples<'py>(
    py: Python<'py>,
    parts: Vec<Vec<u8>>,
    dim: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut all = keyed(&parts, dim)?;
    distributed::sort_keyed(&mut all);
    let rows: Vec<f32> = all.into_iter().flat_map(|(_, v)| v).collect();
    Ok(bytes_of(py, &rows))
}

/// The library's last k-means|| step on the driver: candidates (f32 bytes) weighted by the
/// merged partials against them, reduced to `k` centres; None when k or fewer carry weight.
#[pyfunction]
fn reduce<'py>(
    py: Python<'py>,
    cands: &[u8],
    parts: Vec<Vec<u8>>,
    k: usize,
    seed: u64,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let weights = merge(&parts)?.step().weights;
    let c = floats(cands);
    let mut rng = Rng::derive(seed, 0);
    let out = py
        .detach(|| reduce_candidates(&c, &weights, k, &mut rng))
        .map_err(err)?;
    Ok(out.map(|c| bytes_of(py, &c)))
}

/// Centroids in input units (f64 bytes) into clustered space (f32 bytes).
#[pyfunction]
fn scale_centroids<'py>(
    py: Python<'py>,
    scaler_json: &str,
    raw: Vec<f64>,
) -> PyResult<Bound<'py, PyBytes>> {
    Ok(bytes_of(py, &scaler(scaler_json)?.transform_rows(&raw)))
}

/// The model of a distributed fit, in the command line's format.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn model(
    features: Vec<String>,
    scaler_json: &str,
    centroids: &[u8],
    inertia: f64,
    rows: usize,
    iterations: usize,
    seed: u64,
) -> PyResult<PyModel> {
    let c = floats(centroids);
    let m = Model::new(
        features,
        scaler(scaler_json)?,
        &c,
        inertia,
        rows,
        iterations,
        seed,
    );
    Model::from_json(&m.to_json().map_err(err)?)
        .map(PyModel)
        .map_err(err)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(stats, m)?)?;
    m.add_function(wrap_pyfunction!(reduce_stats, m)?)?;
    m.add_function(wrap_pyfunction!(partials, m)?)?;
    m.add_function(wrap_pyfunction!(lloyd_update, m)?)?;
    m.add_function(wrap_pyfunction!(smallest_keys, m)?)?;
    m.add_function(wrap_pyfunction!(merge_smallest, m)?)?;
    m.add_function(wrap_pyfunction!(sample, m)?)?;
    m.add_function(wrap_pyfunction!(merge_samples, m)?)?;
    m.add_function(wrap_pyfunction!(reduce, m)?)?;
    m.add_function(wrap_pyfunction!(scale_centroids, m)?)?;
    m.add_function(wrap_pyfunction!(model, m)?)?;
    Ok(())
}
