//! The CPU backend and the driver against a brute-force f64 reference.

mod common;

use std::cell::RefCell;

use lakemeans::backend::Backend;
use lakemeans::backend::cpu::{CpuBackend, SUB_ROWS};
use lakemeans::data::{Batch, Dataset};
use lakemeans::kmeans::{self, Init, KMeansParams, Progress};
use lakemeans::rng::Rng;

fn d2(x: &[f32], c: &[f32]) -> f64 {
    x.iter()
        .zip(c)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum()
}

/// Exact nearest centroid in f64, lowest index on ties.
fn brute_argmin(x: &[f32], cents: &[f32], d: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (j, c) in cents.chunks_exact(d).enumerate() {
        let v = d2(x, c);
        if v < best.1 {
            best = (j, v);
        }
    }
    best
}

/// Checks a step's labels against the brute force: each label is the argmin, or within float
/// rounding of it.
fn check_labels(data: &Dataset, cents: &[f32], labels: &[u32], dists: &[f32]) {
    let d = data.dim();
    for i in 0..data.rows() {
        let x = data.row(i);
        let (j, best) = brute_argmin(x, cents, d);
        let got = d2(
            x,
            &cents[labels[i] as usize * d..(labels[i] as usize + 1) * d],
        );
        let scale = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() + 1.0;
        assert!(
            labels[i] as usize == j || (got - best).abs() <= 1e-5 * scale,
            "row {i}: label {} at {got}, argmin {j} at {best}",
            labels[i]
        );
        assert!(
            (dists[i] as f64 - got).abs() <= 1e-6 * got.max(1e-12) + 1e-30,
            "row {i}: distance {} vs {got}",
            dists[i]
        );
    }
}

fn dataset(n: usize, d: usize, k: usize, seed: u64, weighted: bool, batches: usize) -> Dataset {
    let v = common::blobs(n, d, k, seed);
    let mut rng = Rng::new(seed + 1);
    let w: Vec<f32> = (0..n).map(|_| (rng.uniform() * 3.0) as f32).collect();
    let per = n.div_ceil(batches);
    let mut out = Vec::new();
    for s in (0..n).step_by(per) {
        let e = (s + per).min(n);
        out.push(Batch {
            values: v[s * d..e * d].to_vec(),
            weights: weighted.then(|| w[s..e].to_vec()),
        });
    }
    Dataset::new(d, out)
}

#[test]
fn step_labels_are_the_argmin_and_sums_match_f64() {
    for &(n, d, k, weighted) in &[
        (1000, 1, 1, false),
        (3001, 7, 13, true),
        (2500, 33, 70, false),
        (777, 130, 9, true),
        (50, 3, 50, false),
        // Every width of the register kernels (k up to 8, 16, 32, 64), blocks and tiles cut
        // short, and a narrow k = 64 too wide for registers.
        (4099, 16, 10, false),
        (2100, 8, 4, true),
        (2049, 2, 33, false),
        (3000, 32, 64, true),
        (1500, 100, 64, false),
    ] {
        let data = dataset(n, d, k.min(8), n as u64, weighted, 3);
        let mut rng = Rng::new(5);
        let cents: Vec<f32> = (0..k)
            .flat_map(|_| data.row(rng.below(n as u64) as usize).to_vec())
            .collect();
        let mut be = CpuBackend::new(&data);
        let step = be.step(&cents, k, true).unwrap();
        let a = be.assignment().unwrap();
        check_labels(&data, &cents, &a.labels, &a.distances);
        // Sums, weights, counts and inertia against f64 brute force over the reported labels.
        let mut sums = vec![0.0f64; k * d];
        let mut mass = vec![0.0f64; k * d];
        let mut wts = vec![0.0f64; k];
        let mut counts = vec![0u64; k];
        let mut inertia = 0.0;
        for i in 0..n {
            let l = a.labels[i] as usize;
            let w = data.weight(i) as f64;
            wts[l] += w;
            counts[l] += 1;
            inertia += w * d2(data.row(i), &cents[l * d..(l + 1) * d]);
            for t in 0..d {
                sums[l * d + t] += w * data.row(i)[t] as f64;
                mass[l * d + t] += (w * data.row(i)[t] as f64).abs();
            }
        }
        assert_eq!(step.counts, counts);
        for (a, b) in step.weights.iter().zip(&wts) {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0));
        }
        // Sums run in f32 for at most SUB_ROWS rows before they are folded into f64: each
        // term is off by at most (SUB_ROWS + 1) units in the last place of the run's sum.
        let u = f32::EPSILON as f64 / 2.0;
        for ((a, b), m) in step.sums.iter().zip(&sums).zip(&mass) {
            let bound = (SUB_ROWS + 1) as f64 * u * m;
            assert!((a - b).abs() <= bound + 1e-30, "{a} vs {b}");
        }
        assert!(
            (step.inertia - inertia).abs() <= 1e-6 * inertia,
            "{} vs {inertia}",
            step.inertia
        );
        assert_eq!(step.changed, n as u64);
    }
}

#[test]
fn ties_go_to_the_lowest_index() {
    let data = Dataset::from_rows(2, vec![0.0, 0.0, 1.0, 1.0], None);
    // Centroids 0 and 2 are identical; 1 is far.
    let cents = vec![0.5, 0.5, 9.0, 9.0, 0.5, 0.5];
    let mut be = CpuBackend::new(&data);
    be.step(&cents, 3, false).unwrap();
    assert_eq!(be.assignment().unwrap().labels, vec![0, 0]);
    // The same with the twins far apart in wider centroid sets (registers, then panels).
    for (k, a, b) in [(40, 5, 37), (64, 0, 63), (100, 20, 90)] {
        let mut cents: Vec<f32> = (0..k).flat_map(|j| [50.0 + j as f32, 0.0]).collect();
        cents[2 * a..2 * a + 2].copy_from_slice(&[0.5, 0.5]);
        cents[2 * b..2 * b + 2].copy_from_slice(&[0.5, 0.5]);
        let mut be = CpuBackend::new(&data);
        be.step(&cents, k, false).unwrap();
        assert_eq!(
            be.assignment().unwrap().labels,
            vec![a as u32; 2],
            "k = {k}"
        );
    }
}

struct Recorder(RefCell<Vec<f64>>);
impl Progress for Recorder {
    fn iteration(&self, _run: usize, _iter: usize, inertia: f64, _changed: u64) {
        self.0.borrow_mut().push(inertia);
    }
}

#[test]
fn inertia_never_increases_and_centroids_are_weighted_means() {
    for (weighted, init) in [
        (false, Init::KMeansPlusPlus),
        (true, Init::KMeansPlusPlus),
        (true, Init::Random),
    ] {
        let data = dataset(6000, 5, 12, 42, weighted, 4);
        let mut params = KMeansParams::new(12);
        params.init = init.clone();
        params.tol = 0.0;
        params.max_iter = 50;
        let rec = Recorder(RefCell::new(Vec::new()));
        let mut be = CpuBackend::new(&data);
        let r = kmeans::fit(&data, &mut be, &params, &rec).unwrap();
        let hist = rec.0.into_inner();
        assert!(hist.len() >= 2);
        for w in hist.windows(2) {
            assert!(w[1] <= w[0] * (1.0 + 1e-12), "inertia rose: {hist:?}");
        }
        assert!(r.inertia <= hist.last().copied().unwrap() * (1.0 + 1e-12));
        // Final labels are the argmin of the final centroids.
        check_labels(
            &data,
            &r.centroids,
            &r.assignment.labels,
            &r.assignment.distances,
        );
        // At convergence the centroids are the weighted means of their members.
        assert!(r.converged, "50 iterations should converge on blobs");
        let d = data.dim();
        let mut sums = vec![0.0f64; 12 * d];
        let mut wts = [0.0f64; 12];
        for i in 0..data.rows() {
            let l = r.assignment.labels[i] as usize;
            wts[l] += data.weight(i) as f64;
            for t in 0..d {
                sums[l * d + t] += data.weight(i) as f64 * data.row(i)[t] as f64;
            }
        }
        for j in 0..12 {
            assert!(wts[j] > 0.0, "cluster {j} is empty");
            for t in 0..d {
                let mean = sums[j * d + t] / wts[j];
                assert!(
                    (r.centroids[j * d + t] as f64 - mean).abs() <= 1e-5 * mean.abs().max(1.0),
                    "centroid {j}[{t}]"
                );
            }
        }
        // Reported inertia is the weighted sum of exact squared distances.
        let exact: f64 = (0..data.rows())
            .map(|i| {
                let l = r.assignment.labels[i] as usize;
                data.weight(i) as f64 * d2(data.row(i), &r.centroids[l * d..(l + 1) * d])
            })
            .sum();
        assert!((r.inertia - exact).abs() <= 1e-6 * exact);
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let data = dataset(20_000, 6, 10, 9, true, 3);
    let mut params = KMeansParams::new(10);
    params.n_init = 2;
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut be = CpuBackend::new(&data);
            kmeans::fit(&data, &mut be, &params, &kmeans::Quiet).unwrap()
        })
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(a.centroids, b.centroids);
    assert_eq!(a.assignment, b.assignment);
    assert_eq!(a.inertia.to_bits(), b.inertia.to_bits());
    assert_eq!(a.run_inertias.len(), 2);
}

#[test]
fn empty_clusters_are_reseeded() {
    // Two far groups, three centroids started on one group: one cluster empties at once.
    let mut v = Vec::new();
    for i in 0..50 {
        v.extend([i as f32 * 0.01, 0.0]);
    }
    for i in 0..50 {
        v.extend([100.0 + i as f32 * 0.01, 0.0]);
    }
    let data = Dataset::from_rows(2, v, None);
    let mut params = KMeansParams::new(3);
    params.init = Init::Centroids(vec![0.0, 0.0, 0.0, 0.0, 0.1, 0.0]);
    let mut be = CpuBackend::new(&data);
    let r = kmeans::fit(&data, &mut be, &params, &kmeans::Quiet).unwrap();
    assert!(r.reseeded >= 1);
    assert!(r.sizes.iter().all(|&s| s > 0), "sizes {:?}", r.sizes);
}

#[test]
fn kmeans_plus_plus_spreads_over_separated_blobs() {
    // Eight tight, far-apart blobs: k-means++ must put one seed in each.
    let mut v = Vec::new();
    for b in 0..8 {
        for i in 0..100 {
            v.extend([
                b as f32 * 1000.0 + (i % 10) as f32 * 0.01,
                (i / 10) as f32 * 0.01,
            ]);
        }
    }
    let data = Dataset::from_rows(2, v, None);
    for seed in 0..5 {
        let mut be = CpuBackend::new(&data);
        let c = kmeans::kmeans_plus_plus(&data, &mut be, 8, &mut Rng::new(seed)).unwrap();
        let mut blobs: Vec<i64> = c
            .chunks_exact(2)
            .map(|p| (p[0] / 1000.0).round() as i64)
            .collect();
        blobs.sort();
        assert_eq!(blobs, (0..8).collect::<Vec<_>>(), "seed {seed}");
    }
}

#[test]
fn zero_weight_rows_are_never_seeds() {
    let mut v = Vec::new();
    let mut w = Vec::new();
    for i in 0..200 {
        v.extend([i as f32, 0.0]);
        w.push(if i % 2 == 0 { 0.0 } else { 1.0 });
    }
    let data = Dataset::from_rows(2, v, Some(w));
    for seed in 0..5 {
        for c in [
            kmeans::kmeans_plus_plus(&data, &mut CpuBackend::new(&data), 10, &mut Rng::new(seed))
                .unwrap(),
            kmeans::random_rows(&data, 10, &mut Rng::new(seed)).unwrap(),
        ] {
            assert!(c.chunks_exact(2).all(|p| p[0] as i64 % 2 == 1), "{c:?}");
        }
    }
}
