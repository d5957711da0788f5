//! `lakemeans bench`: a fixed matrix of Lloyd workloads for comparing hardware.
//!
//! Each workload times full Lloyd steps (assign + update) over random data already on the
//! device, so the figure is the per-iteration cost a fit pays, without reading Parquet.

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::{self, DeviceChoice};
use crate::data::{Batch, Dataset};
use crate::error::Result;
use crate::rng::Rng;

/// The standard matrix: rows, dimensions and cluster counts.
pub const ROWS: [usize; 3] = [100_000, 1_000_000, 10_000_000];
pub const DIMS: [usize; 4] = [8, 32, 128, 256];
pub const KS: [usize; 4] = [8, 64, 1024, 20_000];

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub rows: Vec<usize>,
    pub dims: Vec<usize>,
    pub ks: Vec<usize>,
    /// Timed iterations per workload (after one warm-up step).
    pub iterations: usize,
    /// Workloads whose estimated time per iteration exceeds this are skipped.
    pub budget_seconds: f64,
    /// Largest feature matrix generated, in bytes.
    pub max_bytes: usize,
    pub device: DeviceChoice,
    pub adapter: Option<String>,
    /// Also time a copy of each feature matrix, the bandwidth bound of a pass.
    pub copy: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub rows: usize,
    pub dims: usize,
    pub k: usize,
    pub device: String,
    pub adapter: String,
    /// Seconds per Lloyd iteration (median of the timed ones); absent when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_per_iter: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_per_second: Option<f64>,
    /// 2·n·k·d floating-point operations per iteration over the time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    /// Seconds of an assignment-only pass (no centroid sums), median of the timed ones: with
    /// `seconds_per_iter` it splits an iteration into its assign and update kernels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assign_seconds: Option<f64>,
    /// Seconds to copy the feature matrix with every thread (median of three), with `copy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_seconds: Option<f64>,
    /// Bytes read plus bytes written per second by that copy, in GB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_gb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Runs the matrix, smallest workloads first, calling `report` after each.
pub fn run(cfg: &BenchConfig, mut report: impl FnMut(&BenchResult)) -> Result<Vec<BenchResult>> {
    let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
    for &n in &cfg.rows {
        for &d in &cfg.dims {
            for &k in &cfg.ks {
                shapes.push((n, d, k));
            }
        }
    }
    shapes.sort_by_key(|&(n, d, k)| (n as u128 * d as u128 * k as u128, n, d, k));
    let mut best_gflops: f64 = 0.0;
    let mut out = Vec::new();
    let mut cached: Option<(usize, usize, Dataset)> = None;
    let mut device = cfg.device;
    for (n, d, k) in shapes {
        let flops = 2.0 * n as f64 * k as f64 * d as f64;
        let skip = if k > n {
            Some(format!("k = {k} exceeds n = {n}"))
        } else if n * d * 4 > cfg.max_bytes {
            Some(format!(
                "{:.1} GB of features exceeds the {:.1} GB limit",
                (n * d * 4) as f64 / 1e9,
                cfg.max_bytes as f64 / 1e9
            ))
        } else if best_gflops > 0.0 && flops / (best_gflops * 1e9) > cfg.budget_seconds {
            Some(format!(
                "estimated {:.1} s per iteration exceeds the {} s budget",
                flops / (best_gflops * 1e9),
                cfg.budget_seconds
            ))
        } else {
            None
        };
        if let Some(why) = skip {
            let r = BenchResult {
                rows: n,
                dims: d,
                k,
                device: String::new(),
                adapter: String::new(),
                seconds_per_iter: None,
                points_per_second: None,
                gflops: None,
                assign_seconds: None,
                copy_seconds: None,
                copy_gb_per_s: None,
                skipped: Some(why),
            };
            report(&r);
            out.push(r);
            continue;
        }
        if !matches!(&cached, Some((cn, cd, _)) if *cn == n && *cd == d) {
            // Free the old matrix before making the next one.
            drop(cached.take());
            cached = Some((n, d, random_data(n, d)));
        }
        let Some((_, _, data)) = &cached else {
            continue;
        };
        let mut be = backend::create(device, data, cfg.adapter.as_deref())?;
        // Resolve `auto` once, so the choice (and any fall-back notice) is made a single time.
        if device == DeviceChoice::Auto {
            device = if be.info().kind == "gpu" {
                DeviceChoice::Gpu
            } else {
                DeviceChoice::Cpu
            };
        }
        let centroids: Vec<f32> = (0..k)
            .flat_map(|j| data.row(j * (n / k)).to_vec())
            .collect();
        be.step(&centroids, k, true)?;
        let median = |be: &mut Box<dyn backend::Backend + '_>, update: bool| -> Result<f64> {
            let mut times = Vec::with_capacity(cfg.iterations.max(1));
            for _ in 0..cfg.iterations.max(1) {
                let t = Instant::now();
                be.step(&centroids, k, update)?;
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            Ok(times[times.len() / 2])
        };
        let t = median(&mut be, true)?;
        let assign = median(&mut be, false)?;
        let info = be.info();
        drop(be);
        let copy = cfg.copy.then(|| copy_seconds(data, cfg.iterations.max(1)));
        let gflops = flops / t / 1e9;
        best_gflops = best_gflops.max(gflops);
        let r = BenchResult {
            rows: n,
            dims: d,
            k,
            device: info.kind,
            adapter: info.name,
            seconds_per_iter: Some(t),
            points_per_second: Some(n as f64 / t),
            gflops: Some(gflops),
            assign_seconds: Some(assign),
            copy_seconds: copy,
            copy_gb_per_s: copy.map(|c| 2.0 * (n * d * 4) as f64 / c / 1e9),
            skipped: None,
        };
        report(&r);
        out.push(r);
    }
    Ok(out)
}

/// Median seconds of `repeats` copies of the feature matrix into another buffer with every
/// thread, after one untimed copy that maps the destination's pages.
fn copy_seconds(data: &Dataset, repeats: usize) -> f64 {
    const CHUNK: usize = 1 << 16;
    let mut times = Vec::with_capacity(repeats);
    let mut dst: Vec<Vec<f32>> = data
        .batches()
        .iter()
        .map(|b| vec![0.0; b.values.len()])
        .collect();
    for rep in 0..=repeats {
        let t = Instant::now();
        for (b, d) in data.batches().iter().zip(&mut dst) {
            d.par_chunks_mut(CHUNK)
                .zip(b.values.par_chunks(CHUNK))
                .for_each(|(d, s)| d.copy_from_slice(s));
        }
        if rep > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    std::hint::black_box(&dst);
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Standard normal features, generated in parallel from fixed per-chunk streams.
fn random_data(n: usize, d: usize) -> Dataset {
    const CHUNK: usize = 1 << 16;
    let mut values = vec![0.0f32; n * d];
    values
        .par_chunks_mut(CHUNK * d)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = Rng::derive(0xbe4c, c as u64);
            for pair in chunk.chunks_mut(2) {
                let (a, b) = rng.normal_pair();
                pair[0] = a as f32;
                if let Some(v) = pair.get_mut(1) {
                    *v = b as f32;
                }
            }
        });
    Dataset::new(
        d,
        vec![Batch {
            values,
            weights: None,
        }],
    )
}
