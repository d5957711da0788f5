//! Lloyd's k-means, written once against [`Backend`].
//!
//! Semantics follow scikit-learn's `KMeans(algorithm="lloyd")` so that users and results carry
//! over: greedy k-means++ with `2 + ln k` candidates, `n_init` runs keeping the lowest inertia,
//! `tol` relative to the mean feature variance on the squared centroid shift, an early stop when
//! no label changes, and a final assignment against the final centroids. Empty clusters are
//! re-seeded on the rows farthest from their centroids.

pub mod distributed;
mod init;
mod parallel;

pub use init::{kmeans_plus_plus, random_rows};
pub use parallel::{
    ParallelPasses, kmeans_parallel, kmeans_parallel_with, parallel_seed, reduce_candidates,
    round_key, row_key, uniform,
};

use crate::backend::{Assignment, Backend};
use crate::data::Rows;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// How the first centroids are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// Greedy k-means++ (Arthur and Vassilvitskii 2007, with local trials as in scikit-learn).
    KMeansPlusPlus,
    /// `k` distinct rows drawn with probability proportional to their weight.
    Random,
    /// Scalable k-means++ (k-means||, Bahmani et al. 2012): a few passes that each sample
    /// about `oversampling * k` candidates, then weighted greedy k-means++ on the candidates.
    /// Needs no random access to the rows, so it is the default when a fit streams.
    KMeansParallel,
    /// Given centroids, `k * dim` row-major, in clustered space.
    Centroids(Vec<f32>),
}

/// Parameters of a fit. `KMeansParams::new(k)` gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansParams {
    /// Number of clusters.
    pub k: usize,
    /// Default: k-means++.
    pub init: Init,
    /// Runs from different seeds; the lowest inertia wins. Default 1.
    pub n_init: usize,
    /// Lloyd iterations per run at most. Default 300.
    pub max_iter: usize,
    /// Convergence threshold on Σ‖Δc‖², relative to the mean feature variance. Default 1e-4;
    /// 0 runs to `max_iter` unless no label changes.
    pub tol: f64,
    /// Seed of every random choice. Default 0.
    pub seed: u64,
    /// k-means|| sampling rounds (passes over the rows). Default 2, as Spark MLlib's
    /// `initSteps`: with `oversampling` 2 the candidates already number about 4k.
    pub init_rounds: usize,
    /// k-means|| expected candidates per round, as a multiple of k. Default 2 (the `l = 2k`
    /// of Bahmani et al. and Spark MLlib).
    pub oversampling: f64,
}

impl KMeansParams {
    pub fn new(k: usize) -> Self {
        KMeansParams {
            k,
            init: Init::KMeansPlusPlus,
            n_init: 1,
            max_iter: 300,
            tol: 1e-4,
            seed: 0,
            init_rounds: 2,
            oversampling: 2.0,
        }
    }
}

/// The result of a fit, in clustered space.
#[derive(Debug, Clone)]
pub struct KMeansResult {
    pub k: usize,
    pub dim: usize,
    /// `k * dim`, row-major.
    pub centroids: Vec<f32>,
    pub assignment: Assignment,
    /// Members per cluster in the final assignment.
    pub sizes: Vec<u64>,
    /// Total weight per cluster in the final assignment.
    pub weights: Vec<f64>,
    pub inertia: f64,
    pub iterations: usize,
    pub converged: bool,
    /// The run (0-based) among `n_init` that won.
    pub best_run: usize,
    /// Inertia of every run, in run order.
    pub run_inertias: Vec<f64>,
    /// Times an empty cluster was re-seeded, over the winning run.
    pub reseeded: usize,
    /// Wall-clock seconds spent choosing initial centroids, over all runs.
    pub init_seconds: f64,
}

/// Progress events for a progress bar.
pub trait Progress {
    fn iteration(&self, _run: usize, _iter: usize, _inertia: f64, _changed: u64) {}
}

/// Does nothing; for library callers who do not want progress.
pub struct Quiet;
impl Progress for Quiet {}

/// Checks the parameters against the data before any work.
pub fn validate(params: &KMeansParams, data: &dyn Rows) -> Result<()> {
    if params.k == 0 {
        return Err(Error::Usage("--k must be at least 1".into()));
    }
    if data.rows() == 0 {
        return Err(Error::Usage("the input has no rows to cluster".into()));
    }
    if params.k > data.rows() {
        return Err(Error::Usage(format!(
            "--k {} is larger than the number of rows ({})",
            params.k,
            data.rows()
        )));
    }
    if params.n_init == 0 {
        return Err(Error::Usage("--n-init must be at least 1".into()));
    }
    if !(params.tol >= 0.0 && params.tol.is_finite()) {
        return Err(Error::Usage(format!(
            "--tol must be a finite number >= 0, got {}",
            params.tol
        )));
    }
    if params.init_rounds == 0 {
        return Err(Error::Usage("--init-rounds must be at least 1".into()));
    }
    if !(params.oversampling > 0.0 && params.oversampling.is_finite()) {
        return Err(Error::Usage(format!(
            "--oversampling must be a positive number, got {}",
            params.oversampling
        )));
    }
    if params.init == Init::KMeansPlusPlus && data.in_memory().is_none() {
        return Err(Error::Usage(
            "greedy k-means++ needs every row in memory (k passes over the data); this fit \
             streams, so use --init k-means|| (the default when streaming) or raise \
             --memory-budget"
                .into(),
        ));
    }
    if let Init::Centroids(c) = &params.init
        && c.len() != params.k * data.dim()
    {
        return Err(Error::Internal(
            "initial centroids of the wrong shape".into(),
        ));
    }
    Ok(())
}

/// Fits k-means on `data` with `backend` doing the passes over the rows.
pub fn fit(
    data: &dyn Rows,
    backend: &mut dyn Backend,
    params: &KMeansParams,
    progress: &dyn Progress,
) -> Result<KMeansResult> {
    validate(params, data)?;
    let tol = params.tol * data.moments().mean_variance();
    let runs = if matches!(params.init, Init::Centroids(_)) {
        1
    } else {
        params.n_init
    };
    let mut best: Option<KMeansResult> = None;
    let mut run_inertias = Vec::with_capacity(runs);
    let mut init_seconds = 0.0;
    for run in 0..runs {
        let mut rng = Rng::derive(params.seed, run as u64);
        let t = std::time::Instant::now();
        let centroids = initial_centroids(data, backend, params, &mut rng)?;
        init_seconds += t.elapsed().as_secs_f64();
        let mut r = lloyd(data, backend, params, centroids, tol, run, progress)?;
        run_inertias.push(r.inertia);
        // Strictly lower wins, so ties keep the earlier run.
        if best.as_ref().is_none_or(|b| r.inertia < b.inertia) {
            r.best_run = run;
            best = Some(r);
        }
    }
    let mut best = best.ok_or_else(|| Error::Internal("no k-means run".into()))?;
    if best.best_run + 1 != runs {
        // The backend holds the last run's labels; bring back the winner's.
        backend.step(&best.centroids, best.k, false)?;
    }
    best.assignment = backend.assignment()?;
    best.run_inertias = run_inertias;
    best.init_seconds = init_seconds;
    Ok(best)
}

/// The starting centroids of one run.
fn initial_centroids(
    data: &dyn Rows,
    backend: &mut dyn Backend,
    params: &KMeansParams,
    rng: &mut Rng,
) -> Result<Vec<f32>> {
    match &params.init {
        Init::KMeansPlusPlus => {
            let d = data.in_memory().ok_or_else(|| {
                Error::Internal("greedy k-means++ on rows that are not in memory".into())
            })?;
            kmeans_plus_plus(d, backend, params.k, rng)
        }
        Init::Random => random_rows(data, params.k, rng),
        Init::KMeansParallel => {
            kmeans_parallel(data, params.k, params.init_rounds, params.oversampling, rng)
        }
        Init::Centroids(c) => Ok(c.clone()),
    }
}

/// One Lloyd run from `centroids`.
fn lloyd(
    data: &dyn Rows,
    backend: &mut dyn Backend,
    params: &KMeansParams,
    mut centroids: Vec<f32>,
    tol: f64,
    run: usize,
    progress: &dyn Progress,
) -> Result<KMeansResult> {
    let (k, dim) = (params.k, data.dim());
    let mut iterations = 0;
    let mut converged = false;
    let mut reseeded = 0;
    for it in 0..params.max_iter {
        let step = backend.step(&centroids, k, true)?;
        iterations = it + 1;
        progress.iteration(run, iterations, step.inertia, step.changed);
        // Labels computed against the current centroids did not move: a fixed point.
        if it > 0 && step.changed == 0 {
            converged = true;
            break;
        }
        let (mut sums, mut weights) = (step.sums, step.weights);
        let seeds = reseed_empty(backend, &mut sums, &mut weights, dim)?;
        reseeded += seeds.len();
        let shift = move_centroids(&mut centroids, &sums, &weights, &seeds);
        if shift <= tol {
            converged = true;
            break;
        }
    }
    // Final pass: labels, distances and inertia that belong to the returned centroids.
    let last = backend.step(&centroids, k, true)?;
    Ok(KMeansResult {
        k,
        dim,
        centroids,
        assignment: Assignment::default(),
        sizes: last.counts,
        weights: last.weights,
        inertia: last.inertia,
        iterations,
        converged,
        best_run: run,
        run_inertias: Vec::new(),
        reseeded,
        init_seconds: 0.0,
    })
}

/// The update of a Lloyd step: each centroid moves to the weighted mean of its members (`sums`
/// over `weights`), or onto its re-seed in `seeds`; one with no weight and no seed stays put.
/// Returns the total squared shift Σ‖Δc‖².
pub fn move_centroids(
    centroids: &mut [f32],
    sums: &[f64],
    weights: &[f64],
    seeds: &[(usize, Vec<f32>)],
) -> f64 {
    let k = weights.len();
    let dim = centroids.len() / k.max(1);
    let mut shift = 0.0f64;
    for (j, &w) in weights.iter().enumerate() {
        let seed = seeds.iter().find(|(c, _)| *c == j).map(|(_, v)| v);
        let old = &mut centroids[j * dim..(j + 1) * dim];
        for (t, c) in old.iter_mut().enumerate() {
            let new = match seed {
                Some(v) => v[t],
                None if w > 0.0 => (sums[j * dim + t] / w) as f32,
                None => *c,
            };
            let d = new as f64 - *c as f64;
            shift += d * d;
            *c = new;
        }
    }
    shift
}

/// Moves each cluster with no weight onto one of the rows farthest from its centroid, taking
/// that row out of the cluster it was in. Returns the new seeds as `(cluster, row values)`.
fn reseed_empty(
    backend: &mut dyn Backend,
    sums: &mut [f64],
    weights: &mut [f64],
    dim: usize,
) -> Result<Vec<(usize, Vec<f32>)>> {
    let empty: Vec<usize> = (0..weights.len()).filter(|&j| weights[j] <= 0.0).collect();
    if empty.is_empty() {
        return Ok(Vec::new());
    }
    let far = backend.farthest(empty.len())?;
    let mut seeds = Vec::with_capacity(far.len());
    for (&e, p) in empty.iter().zip(far) {
        let from = p.label as usize;
        let w = p.weight as f64;
        if from != e && weights[from] - w > 0.0 {
            for (s, &v) in sums[from * dim..(from + 1) * dim].iter_mut().zip(&p.values) {
                *s -= w * v as f64;
            }
            weights[from] -= w;
        }
        seeds.push((e, p.values));
    }
    Ok(seeds)
}
