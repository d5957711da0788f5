//! Greedy k-means++ picks the same rows as the implementation it replaced. The fixture
//! `kmeanspp_picks.json` was recorded from that scalar implementation (commit 77f5b4c) by the
//! ignored test `record_kmeanspp_picks`; the cases cover one and several batches, weights
//! (some zero), exact duplicate rows, k = 1 and k close to the row count.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lakemeans::backend::cpu::CpuBackend;
use lakemeans::data::{Batch, Dataset};
use lakemeans::rng::Rng;

const SEEDS: [u64; 3] = [0, 1, 42];

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kmeanspp_picks.json")
}

/// Gaussian blobs around `centers` random centres, cut into batches of the given sizes.
fn blobs(sizes: &[usize], dim: usize, centers: usize, weighted: bool, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let c: Vec<f64> = (0..centers * dim)
        .map(|_| rng.normal_pair().0 * 8.0)
        .collect();
    let batches = sizes
        .iter()
        .map(|&n| {
            let mut values = Vec::with_capacity(n * dim);
            for _ in 0..n {
                let j = rng.below(centers as u64) as usize;
                for t in 0..dim {
                    values.push((c[j * dim + t] + rng.normal_pair().0) as f32);
                }
            }
            let weights = weighted.then(|| {
                (0..n)
                    .map(|_| match rng.below(8) {
                        0 => 0.0,
                        b => b as f32 * 0.5,
                    })
                    .collect()
            });
            Batch { values, weights }
        })
        .collect();
    Dataset::new(dim, batches)
}

/// Rows drawn from only 40 distinct points, so most distances are exactly zero.
fn duplicates(n: usize, dim: usize) -> Dataset {
    let mut rng = Rng::new(7);
    let points: Vec<f32> = (0..40 * dim)
        .map(|_| rng.below(1000) as f32 / 10.0)
        .collect();
    let values = (0..n)
        .flat_map(|_| {
            let j = rng.below(40) as usize;
            points[j * dim..(j + 1) * dim].to_vec()
        })
        .collect();
    Dataset::from_rows(dim, values, None)
}

/// The cases, by name: data and k.
fn cases() -> Vec<(&'static str, Dataset, usize)> {
    vec![
        ("single_batch", blobs(&[6000], 5, 12, false, 1), 8),
        (
            "batches_weighted",
            blobs(&[2500, 4396, 1000], 17, 30, true, 2),
            40,
        ),
        ("duplicates", duplicates(9000, 3), 30),
        ("k1", blobs(&[500], 4, 3, false, 3), 1),
        ("k_near_rows", blobs(&[300], 8, 5, false, 4), 250),
        ("wide", blobs(&[5000], 130, 20, false, 5), 64),
    ]
}

fn picks(data: &Dataset, k: usize, seed: u64) -> Vec<f32> {
    let mut cpu = CpuBackend::new(data);
    lakemeans::kmeans::kmeans_plus_plus(data, &mut cpu, k, &mut Rng::derive(seed, 0))
        .expect("k-means++")
}

/// The first row equal to each chosen centroid.
fn rows_of(data: &Dataset, centroids: &[f32]) -> Vec<usize> {
    centroids
        .chunks_exact(data.dim())
        .map(|c| {
            (0..data.rows())
                .find(|&i| data.row(i) == c)
                .expect("a k-means++ centroid is a row of the data")
        })
        .collect()
}

type Recorded = BTreeMap<String, Vec<Vec<usize>>>;

#[test]
fn kmeans_plus_plus_picks_the_recorded_rows() {
    let recorded: Recorded = serde_json::from_slice(&std::fs::read(fixture()).unwrap()).unwrap();
    for (name, data, k) in cases() {
        for (s, &seed) in SEEDS.iter().enumerate() {
            let got = rows_of(&data, &picks(&data, k, seed));
            assert_eq!(got, recorded[name][s], "case {name}, seed {seed}");
        }
    }
}

#[test]
#[ignore = "rewrites the fixture from the current implementation"]
fn record_kmeanspp_picks() {
    let mut out = Recorded::new();
    for (name, data, k) in cases() {
        let per_seed = SEEDS
            .iter()
            .map(|&seed| rows_of(&data, &picks(&data, k, seed)))
            .collect();
        out.insert(name.to_string(), per_seed);
    }
    std::fs::write(fixture(), serde_json::to_string(&out).unwrap()).unwrap();
}
