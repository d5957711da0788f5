//! Refitting a saved model on newer rows while keeping its segment ids.
//!
//! Lloyd starts from the previous centroids, by default in the previous model's scaling so that
//! old and new centroids live in one space. Each new cluster then takes the id of the previous
//! cluster it matches best: a minimum-cost assignment on squared centroid distance, measured in
//! the previous model's clustered space. With a larger k the extra clusters get fresh ids above
//! the previous maximum; with a smaller k the unmatched previous ids are reported as vanished.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::assignments::{Accept, read_assignments};
use super::drift::{Drift, DriftInput, compute_drift};
use super::matching::min_cost_assignment;
use super::source::read_model_features;
use crate::backend::{self, Assignment, DeviceChoice};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::html;
use crate::io::results::write_assignments;
use crate::io::{Outputs, Table, check_target};
use crate::kmeans::{self, Init, KMeansParams, Progress};
use crate::model::{FORMAT_VERSION, Model};
use crate::prep::{ScaleMethod, Scaler};
use crate::rng::Rng;

/// Everything `refit` needs.
#[derive(Debug, Clone)]
pub struct RefitSpec {
    pub inputs: Vec<PathBuf>,
    pub model: PathBuf,
    pub output: PathBuf,
    pub model_out: PathBuf,
    /// Carried into the output; with `previous_assignments`, the join key (all of them).
    pub ids: Vec<String>,
    pub previous_assignments: Option<PathBuf>,
    pub drift: Option<PathBuf>,
    pub report: Option<PathBuf>,
    /// `None`: the previous model's k.
    pub k: Option<usize>,
    /// Fit the scaling on the new rows instead of keeping the previous model's.
    pub rescale: bool,
    pub max_iter: usize,
    pub tol: f64,
    pub seed: u64,
    pub drop_invalid: bool,
    pub device: DeviceChoice,
    pub adapter: Option<String>,
}

/// Which previous id each new segment took.
#[derive(Debug, Clone, Serialize)]
pub struct IdLink {
    pub id: u32,
    /// `None` for a fresh id.
    pub previous_id: Option<u32>,
    /// Squared distance between the two centroids in the previous clustered space.
    pub distance: Option<f64>,
    pub size: u64,
}

/// The machine summary of a refit (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct RefitSummary {
    pub k: usize,
    pub previous_k: usize,
    pub rows: usize,
    /// Parquet files opened.
    pub files_read: usize,
    /// Bytes fetched from them.
    pub bytes_read: u64,
    pub dropped_rows: usize,
    pub features: Vec<String>,
    pub rescaled: bool,
    pub iterations: usize,
    pub converged: bool,
    pub inertia: f64,
    pub device: String,
    pub segments: Vec<IdLink>,
    pub new_ids: Vec<u32>,
    pub vanished_ids: Vec<u32>,
    pub moved_share: Option<f64>,
    pub seconds: f64,
}

/// Runs the refit and writes every output; all appear together or none does.
pub fn refit(spec: &RefitSpec, progress: &dyn Progress) -> Result<(RefitSummary, Option<Drift>)> {
    let t0 = Instant::now();
    check_targets(spec)?;
    let prev = Model::load(&spec.model)?;
    // The previous assignments are read first, so that a bad file fails before the fit.
    let previous = match &spec.previous_assignments {
        Some(p) => Some(read_assignments(
            p,
            &spec
                .ids
                .iter()
                .map(|c| (c.clone(), Accept::Any))
                .collect::<Vec<_>>(),
            "the --id columns join the previous assignments with the new rows",
        )?),
        None => None,
    };
    let mut table = read_model_features(&spec.inputs, &prev, &spec.ids, spec.drop_invalid)?;
    let current_sd = column_sd(&table.data);
    let scaler = if spec.rescale {
        Scaler::fit(prev.scaling.method, &table.data)
    } else {
        prev.scaling.clone()
    };
    table.data = scaler.transform_dataset(&table.data);
    let d = prev.features.len();
    let k = spec.k.unwrap_or(prev.k);
    let start = warm_start(&prev, &scaler, spec.rescale, &table.data, k, spec.seed)?;
    let params = KMeansParams {
        k,
        init: Init::Centroids(start),
        n_init: 1,
        max_iter: spec.max_iter,
        tol: spec.tol,
        seed: spec.seed,
        ..KMeansParams::new(k)
    };
    kmeans::validate(&params, &table.data)?;
    let mut be = backend::create(spec.device, &table.data, spec.adapter.as_deref())?;
    let result = kmeans::fit(&table.data, be.as_mut(), &params, progress)?;
    let device = be.info().kind;
    drop(be);

    // Match new clusters to previous ones in the previous clustered space.
    let new_input = scaler.inverse(&result.centroids);
    let mut new_in_prev_space: Vec<f32> = new_input.iter().map(|&v| v as f32).collect();
    for row in new_in_prev_space.chunks_exact_mut(d) {
        prev.scaling.transform_row(row);
    }
    let prev_flat = prev.flat_centroids();
    let cost: Vec<f64> = (0..k * prev.k)
        .map(|x| sq_dist(&new_in_prev_space, x / prev.k, &prev_flat, x % prev.k, d))
        .collect();
    let matched = min_cost_assignment(&cost, k, prev.k);
    let prev_ids = prev.ids();
    let mut fresh = prev_ids.iter().max().map_or(0, |&m| m + 1);
    let ids: Vec<u32> = matched
        .iter()
        .map(|m| match m {
            Some(j) => prev_ids[*j],
            None => {
                fresh += 1;
                fresh - 1
            }
        })
        .collect();
    // Centroids are stored in ascending id order.
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by_key(|&p| ids[p]);
    let sorted_ids: Vec<u32> = order.iter().map(|&p| ids[p]).collect();
    let identity = sorted_ids.iter().enumerate().all(|(i, &id)| id == i as u32);
    let model = Model {
        format_version: FORMAT_VERSION,
        features: prev.features.clone(),
        scaling: scaler.clone(),
        k,
        centroids: order
            .iter()
            .map(|&p| result.centroids[p * d..(p + 1) * d].to_vec())
            .collect(),
        centroids_input_units: order
            .iter()
            .map(|&p| new_input[p * d..(p + 1) * d].to_vec())
            .collect(),
        inertia: result.inertia,
        rows: table.data.rows(),
        iterations: result.iterations,
        seed: spec.seed,
        segment_ids: (!identity).then(|| sorted_ids.clone()),
    };
    let labels: Vec<u32> = result
        .assignment
        .labels
        .iter()
        .map(|&l| ids[l as usize])
        .collect();
    let mut links: Vec<IdLink> = (0..k)
        .map(|p| IdLink {
            id: ids[p],
            previous_id: matched[p].map(|j| prev_ids[j]),
            distance: matched[p].map(|j| cost[p * prev.k + j]),
            size: result.sizes[p],
        })
        .collect();
    links.sort_by_key(|l| l.id);
    let new_ids: Vec<u32> = links
        .iter()
        .filter(|l| l.previous_id.is_none())
        .map(|l| l.id)
        .collect();
    let vanished_ids: Vec<u32> = prev_ids
        .iter()
        .copied()
        .filter(|id| !sorted_ids.contains(id))
        .collect();

    let mut out = Outputs::default();
    write_assignments(
        &mut out,
        &spec.output,
        &table.id_schema,
        &table.ids,
        &Assignment {
            labels: labels.clone(),
            distances: result.assignment.distances.clone(),
        },
    )?;
    out.bytes(&spec.model_out, model.to_json()?.as_bytes())?;
    let drift = match (&previous, &spec.previous_assignments) {
        (Some(pa), Some(pa_path)) => {
            let shift_sd = if prev.scaling.method == ScaleMethod::Standard {
                (
                    prev.scaling.scale.clone(),
                    "standard deviation stored in the previous model's scaling",
                )
            } else {
                (current_sd, "standard deviation of the new rows")
            };
            let by_id = |m: &Model| -> Vec<(u32, Vec<f64>)> {
                m.ids()
                    .into_iter()
                    .zip(m.centroids_input_units.iter().cloned())
                    .collect()
            };
            let keys: Vec<&[Option<String>]> =
                pa.columns.iter().map(|c| c.values.as_slice()).collect();
            let drift = compute_drift(&DriftInput {
                features: &prev.features,
                previous_path: pa_path,
                previous_labels: &pa.labels,
                previous_keys: &join_keys(&keys, pa.labels.len()),
                labels: &labels,
                keys: &table_keys(&table)?,
                key_columns: &spec.ids,
                previous_centroids: &by_id(&prev),
                centroids: &by_id(&model),
                sd: &shift_sd.0,
                shift_unit: shift_sd.1,
                new_ids: &new_ids,
                vanished_ids: &vanished_ids,
            })?;
            if let Some(p) = &spec.drift {
                let json = serde_json::to_string_pretty(&drift)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                out.bytes(p, json.as_bytes())?;
            }
            if let Some(p) = &spec.report {
                let doc = html::drift::drift_report(&html::drift::DriftReport {
                    title: &format!(
                        "Segment drift: {} to {}",
                        file_name(&spec.model),
                        file_name(&spec.model_out)
                    ),
                    inputs: &table.files.iter().map(|f| file_name(f)).collect::<Vec<_>>(),
                    drift: &drift,
                });
                out.bytes(p, doc.as_bytes())?;
            }
            Some(drift)
        }
        _ => None,
    };
    out.commit()?;
    let summary = RefitSummary {
        k,
        previous_k: prev.k,
        rows: table.data.rows(),
        files_read: table.files.len(),
        bytes_read: table.bytes_read,
        dropped_rows: table.dropped,
        features: prev.features.clone(),
        rescaled: spec.rescale,
        iterations: result.iterations,
        converged: result.converged,
        inertia: result.inertia,
        device,
        segments: links,
        new_ids,
        vanished_ids,
        moved_share: drift.as_ref().and_then(|d| d.moved_share),
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((summary, drift))
}

fn check_targets(spec: &RefitSpec) -> Result<()> {
    for p in [&spec.output, &spec.model_out]
        .into_iter()
        .chain(&spec.drift)
        .chain(&spec.report)
    {
        check_target(p)?;
    }
    if spec.previous_assignments.is_none() && (spec.drift.is_some() || spec.report.is_some()) {
        return Err(Error::Usage(
            "--drift and --report compare with the previous run: give --previous-assignments \
             and --id"
                .into(),
        ));
    }
    if spec.previous_assignments.is_some() && spec.ids.is_empty() {
        return Err(Error::Usage(
            "--previous-assignments needs --id COL to join customers across the two runs".into(),
        ));
    }
    if spec.k == Some(0) {
        return Err(Error::Usage("--k must be at least 1".into()));
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn sq_dist(a: &[f32], i: usize, b: &[f32], j: usize, d: usize) -> f64 {
    a[i * d..(i + 1) * d]
        .iter()
        .zip(&b[j * d..(j + 1) * d])
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum()
}

/// Population standard deviation of each column, in input units.
fn column_sd(data: &Dataset) -> Vec<f64> {
    let d = data.dim();
    let n = data.rows().max(1) as f64;
    let mut sum = vec![0.0f64; d];
    for b in data.batches() {
        for row in b.values.chunks_exact(d) {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += v as f64;
            }
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let mut ss = vec![0.0f64; d];
    for b in data.batches() {
        for row in b.values.chunks_exact(d) {
            for ((s, &m), &v) in ss.iter_mut().zip(&mean).zip(row) {
                *s += (v as f64 - m).powi(2);
            }
        }
    }
    ss.iter()
        .map(|s| {
            let sd = (s / n).sqrt();
            if sd > 0.0 && sd.is_finite() { sd } else { 1.0 }
        })
        .collect()
}

/// The first centroids of the refit, in the clustered space of `scaler`: the previous ones;
/// with a smaller k those that attract the most new rows; with a larger k, extra rows drawn
/// as k-means++ draws them (probability proportional to the squared distance to the nearest
/// centroid so far), seeded.
fn warm_start(
    prev: &Model,
    scaler: &Scaler,
    rescale: bool,
    data: &Dataset,
    k: usize,
    seed: u64,
) -> Result<Vec<f32>> {
    let d = prev.features.len();
    let mut start: Vec<f32> = if rescale {
        let mut c: Vec<f32> = prev
            .centroids_input_units
            .iter()
            .flatten()
            .map(|&v| v as f32)
            .collect();
        for row in c.chunks_exact_mut(d) {
            scaler.transform_row(row);
        }
        c
    } else {
        prev.flat_centroids()
    };
    if k > data.rows() {
        return Err(Error::Usage(format!(
            "--k {k} is larger than the number of rows ({})",
            data.rows()
        )));
    }
    if k < prev.k {
        let mut counts = vec![0u64; prev.k];
        for_each_nearest(data, &start, prev.k, |c, _| counts[c] += 1);
        let mut by_size: Vec<usize> = (0..prev.k).collect();
        by_size.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
        let mut keep = by_size[..k].to_vec();
        keep.sort_unstable();
        start = keep
            .iter()
            .flat_map(|&c| start[c * d..(c + 1) * d].to_vec())
            .collect();
    }
    let mut rng = Rng::derive(seed, 0x5e9);
    while start.len() / d < k {
        let have = start.len() / d;
        let mut d2 = Vec::with_capacity(data.rows());
        for_each_nearest(data, &start, have, |_, dist| d2.push(dist));
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut target = rng.uniform() * total;
            let mut chosen = d2.len() - 1;
            for (i, &w) in d2.iter().enumerate() {
                if target < w {
                    chosen = i;
                    break;
                }
                target -= w;
            }
            chosen
        } else {
            rng.below(data.rows() as u64) as usize
        };
        start.extend_from_slice(data.row(pick));
    }
    Ok(start)
}

/// Calls `f(nearest centroid, squared distance)` for every row, in row order.
fn for_each_nearest(data: &Dataset, c: &[f32], k: usize, mut f: impl FnMut(usize, f64)) {
    let d = data.dim();
    for b in data.batches() {
        for row in b.values.chunks_exact(d) {
            let (mut best, mut bd) = (0, f64::INFINITY);
            for j in 0..k {
                let dist = sq_dist(row, 0, c, j, d);
                if dist < bd {
                    (best, bd) = (j, dist);
                }
            }
            f(best, bd);
        }
    }
}

/// One text key per row from several key columns; `None` when any part is null.
fn join_keys(cols: &[&[Option<String>]], rows: usize) -> Vec<Option<String>> {
    (0..rows)
        .map(|r| {
            let parts: Option<Vec<&str>> = cols.iter().map(|c| c[r].as_deref()).collect();
            parts.map(|p| p.join("\u{1f}"))
        })
        .collect()
}

/// The join keys of the new rows, from the id columns the reader carried.
fn table_keys(table: &Table) -> Result<Vec<Option<String>>> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let n = table.data.rows();
    let ncols = table.id_schema.fields().len();
    let mut cols: Vec<Vec<Option<String>>> = (0..ncols).map(|_| Vec::with_capacity(n)).collect();
    for b in &table.ids {
        for (j, col) in b.columns().iter().enumerate() {
            let cast = arrow_cast::cast(col, &arrow_schema::DataType::Utf8).map_err(|e| {
                Error::Input(format!(
                    "--id column '{}' cannot be read as text ({e})",
                    table.id_schema.field(j).name()
                ))
            })?;
            let a = cast.as_string::<i32>();
            cols[j].extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())));
        }
    }
    let refs: Vec<&[Option<String>]> = cols.iter().map(Vec::as_slice).collect();
    Ok(join_keys(&refs, n))
}
