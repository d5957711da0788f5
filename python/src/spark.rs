//! The native side of `lakemeans.spark`: what one partition computes (statistics, Lloyd
//! partials, k-means|| draws) and what the driver does with the merged results. Partials
//! travel as bytes; their sums are exact, so the driver's result does not depend on how the
//! DataFrame is partitioned.

use std::borrow::Cow;
use std::path::PathBuf;

use lakemeans::data::Dataset;
use lakemeans::job::frame::Frame;
use lakemeans::kmeans;
use lakemeans::kmeans::distributed::{self, Partials, RoundShare, Stats};
use lakemeans::model::Model;
use lakemeans::prep::Scaler;
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

/// The partition's rows in clustered space: the rows themselves when nothing is scaled.
fn clustered<'a>(rows: &'a Rows, scaler_json: &str) -> PyResult<Cow<'a, Dataset>> {
    let s = scaler(scaler_json)?;
    if s.offset.len() != rows.0.data.dim() {
        return Err(PyValueError::new_err(
            "the scaler does not match the columns",
        ));
    }
    Ok(if s.is_identity() {
        Cow::Borrowed(&rows.0.data)
    } else {
        Cow::Owned(s.transform_dataset(&rows.0.data))
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

/// One partition's `m` rows (input units) with the smallest seeded keys, as bytes. It runs in
/// the first pass, before the scaler is known.
#[pyfunction]
fn smallest_keys<'py>(py: Python<'py>, rows: &Rows, m: usize, seed: u64) -> Bound<'py, PyBytes> {
    let b = py
        .detach(|| distributed::keyed_to_bytes(&distributed::smallest_keys(&rows.0.data, m, seed)));
    PyBytes::new(py, &b)
}

/// The `m` smallest keyed rows of all partitions, in clustered space under the scaler, as f32
/// bytes (row-major).
#[pyfunction]
fn merge_smallest<'py>(
    py: Python<'py>,
    parts: Vec<Vec<u8>>,
    dim: usize,
    m: usize,
    scaler_json: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut all = Vec::new();
    for p in &parts {
        all.extend(distributed::keyed_from_bytes(p, dim).map_err(err)?);
    }
    let rows: Vec<f64> = distributed::smallest(all, m)
        .into_iter()
        .flat_map(|(_, v)| v.into_iter().map(f64::from))
        .collect();
    Ok(bytes_of(py, &scaler(scaler_json)?.transform_rows(&rows)))
}

/// Runs a k-means|| pass over a partition's rows in clustered space, without the GIL;
/// `cands` are f32 bytes of each round's candidates, the newest last.
fn near_pass<'py>(
    py: Python<'py>,
    rows: &Rows,
    scaler_json: &str,
    cands: Vec<Vec<u8>>,
    pass: impl FnOnce(&Dataset, &[Vec<f32>]) -> lakemeans::Result<Vec<u8>> + Send,
) -> PyResult<Bound<'py, PyBytes>> {
    let data = clustered(rows, scaler_json)?;
    let cands: Vec<Vec<f32>> = cands.iter().map(|b| floats(b)).collect();
    let b = py.detach(|| pass(&data, &cands)).map_err(err)?;
    Ok(PyBytes::new(py, &b))
}

/// One partition's share of the k-means|| round keyed by `round_key`: its part of φ and the
/// rows the round may draw (`distributed::round_share`). Its rows' nearest candidates stay
/// in the file at `state` for the next pass.
#[pyfunction]
fn round_share<'py>(
    py: Python<'py>,
    rows: &Rows,
    scaler_json: &str,
    state: PathBuf,
    cands: Vec<Vec<u8>>,
    l: f64,
    round_key: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    near_pass(py, rows, scaler_json, cands, |data, cands| {
        distributed::round_share(data, &state, cands, l, round_key).map(|s| s.to_bytes())
    })
}

/// One partition's weight of the rows nearest to each candidate (`distributed::weight_share`):
/// k-means||'s last pass, which removes the file at `state`.
#[pyfunction]
fn weight_share<'py>(
    py: Python<'py>,
    rows: &Rows,
    scaler_json: &str,
    state: PathBuf,
    cands: Vec<Vec<u8>>,
) -> PyResult<Bound<'py, PyBytes>> {
    near_pass(py, rows, scaler_json, cands, |data, cands| {
        distributed::weight_share(data, &state, cands)
    })
}

/// The passes of the library's k-means|| as Spark jobs: `round(batches, l, round_key)` and
/// `weights(batches)` are Python callables that run a pass over the partitions (with
/// [`round_share`] and [`weight_share`]) and return each partition's result as bytes;
/// `batches` are every round's candidates so far (f32 bytes), the newest last. The spare
/// rows come from the fit's first pass. The loop runs on the driver's thread, which holds
/// the GIL throughout, as the callables need it.
struct SparkPasses<'py> {
    py: Python<'py>,
    round: Bound<'py, PyAny>,
    weights: Bound<'py, PyAny>,
    spare: Vec<f32>,
    dim: usize,
    /// Each round's candidates so far, which a partition replays when its state is lost.
    batches: Vec<Vec<f32>>,
    /// The exception a callable raised, raised again once the loop has stopped.
    failure: Option<PyErr>,
}

impl<'py> SparkPasses<'py> {
    fn batches_bytes(&self) -> Vec<Bound<'py, PyBytes>> {
        self.batches.iter().map(|b| bytes_of(self.py, b)).collect()
    }

    /// Each partition's bytes from a callable's reply; an exception is kept for the caller.
    fn parts(&mut self, reply: PyResult<Bound<'_, PyAny>>) -> lakemeans::Result<Vec<Vec<u8>>> {
        reply.and_then(|r| r.extract()).map_err(|e| {
            let msg = format!("a k-means|| pass failed: {e}");
            self.failure = Some(e);
            lakemeans::Error::Internal(msg)
        })
    }
}

impl kmeans::ParallelPasses for SparkPasses<'_> {
    fn spare(&mut self, m: usize, _seed: u64) -> lakemeans::Result<Vec<f32>> {
        Ok(self.spare[..(m * self.dim).min(self.spare.len())].to_vec())
    }

    fn round(&mut self, new: &[f32], l: f64, round_key: u64) -> lakemeans::Result<Vec<RoundShare>> {
        self.batches.push(new.to_vec());
        let reply = self.round.call1((self.batches_bytes(), l, round_key));
        self.parts(reply)?
            .iter()
            .map(|p| RoundShare::from_bytes(p, self.dim))
            .collect()
    }

    fn weights(&mut self, cands: &[f32]) -> lakemeans::Result<Vec<f64>> {
        let seen: usize = self.batches.iter().map(Vec::len).sum();
        self.batches.push(cands[seen..].to_vec());
        let reply = self.weights.call1((self.batches_bytes(),));
        let parts = self.parts(reply)?;
        distributed::merge_weight_shares(&parts)
    }
}

/// The library's k-means|| over a DataFrame, its passes run by the callables `round` and
/// `weights` (see `SparkPasses`): `k` centres (f32 bytes, clustered space).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn kmeans_parallel<'py>(
    py: Python<'py>,
    round: Bound<'py, PyAny>,
    weights: Bound<'py, PyAny>,
    spare: &[u8],
    dim: usize,
    k: usize,
    rounds: usize,
    oversampling: f64,
    seed: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut passes = SparkPasses {
        py,
        round,
        weights,
        spare: floats(spare),
        dim,
        batches: Vec::new(),
        failure: None,
    };
    let out = kmeans::kmeans_parallel_with(&mut passes, dim, k, rounds, oversampling, seed);
    if let Some(e) = passes.failure {
        return Err(e);
    }
    Ok(bytes_of(py, &out.map_err(err)?))
}

/// The seed of a fit's k-means|| draws and spare rows for the fit seed `seed`, as the
/// command line derives it.
#[pyfunction]
fn parallel_seed(seed: u64) -> u64 {
    kmeans::parallel_seed(seed)
}

/// Keeps a partition's rows (input units) on this host for the next passes of a fit.
#[pyfunction]
fn save_rows(py: Python<'_>, rows: &Rows, path: PathBuf) -> PyResult<()> {
    py.detach(|| distributed::save_rows(&rows.0.data, &path))
        .map_err(err)
}

/// The rows [`save_rows`] kept, or None when this host has none at `path`.
#[pyfunction]
fn load_rows(py: Python<'_>, path: PathBuf, features: Vec<String>) -> PyResult<Option<Rows>> {
    let data = py.detach(|| distributed::load_rows(&path)).map_err(err)?;
    match data {
        Some(d) if d.dim() != features.len() => Err(PyValueError::new_err(format!(
            "{}: the row cache has {} columns, not {}",
            path.display(),
            d.dim(),
            features.len()
        ))),
        Some(data) => Ok(Some(Rows(Frame { features, data }))),
        None => Ok(None),
    }
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
    m.add_function(wrap_pyfunction!(round_share, m)?)?;
    m.add_function(wrap_pyfunction!(weight_share, m)?)?;
    m.add_function(wrap_pyfunction!(kmeans_parallel, m)?)?;
    m.add_function(wrap_pyfunction!(parallel_seed, m)?)?;
    m.add_function(wrap_pyfunction!(save_rows, m)?)?;
    m.add_function(wrap_pyfunction!(load_rows, m)?)?;
    m.add_function(wrap_pyfunction!(scale_centroids, m)?)?;
    m.add_function(wrap_pyfunction!(model, m)?)?;
    Ok(())
}
