//! Profiles, quality metrics and segment comparison: against scikit-learn's values (fixtures
//! made by tests/fixtures/make_metric_fixtures.py), a brute-force profile, and end to end.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
use common::*;
use lakemeans::data::Dataset;
use lakemeans::insight::compare::{Contingency, adjusted_rand, compare, normalized_mutual_info};
use lakemeans::insight::metrics::quality;
use lakemeans::insight::profile::{ProfileInput, profile};
use lakemeans::insight::{Extra, ExtraValues, silhouette_rows};

struct Fixture {
    data: Dataset,
    labels: Vec<u32>,
    k: usize,
    segments: Vec<u32>,
    want: serde_json::Value,
}

fn fixture(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dim = v["dim"].as_u64().unwrap() as usize;
    let rows: Vec<f32> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let ints = |key: &str| -> Vec<u32> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    Fixture {
        data: Dataset::from_rows(dim, rows, None),
        labels: ints("labels"),
        k: v["k"].as_u64().unwrap() as usize,
        segments: ints("segments"),
        want: v,
    }
}

fn close(got: f64, want: &serde_json::Value, what: &str) {
    let want = want.as_f64().unwrap();
    assert!(
        (got - want).abs() <= 1e-6,
        "{what}: lakemeans {got}, scikit-learn {want}"
    );
}

#[test]
fn metrics_match_scikit_learn() {
    for name in ["metrics_blobs.json", "metrics_overlap.json"] {
        let f = fixture(name);
        let n = f.data.rows();
        // Small tables are their own silhouette sample, so no sampling ambiguity arises.
        let sample = silhouette_rows(n, 0);
        assert_eq!(sample, (0..n).collect::<Vec<_>>());
        let q = quality(&f.data, &f.labels, f.k, &sample).unwrap();
        close(
            q.silhouette.unwrap(),
            &f.want["silhouette"],
            &format!("{name} silhouette"),
        );
        close(
            q.calinski_harabasz.unwrap(),
            &f.want["calinski_harabasz"],
            &format!("{name} CH"),
        );
        close(
            q.davies_bouldin.unwrap(),
            &f.want["davies_bouldin"],
            &format!("{name} DB"),
        );
        let nseg = *f.segments.iter().max().unwrap() as usize + 1;
        let levels: Vec<String> = (0..nseg).map(|s| s.to_string()).collect();
        let c = compare("segment", &f.labels, f.k, &f.segments, &levels);
        close(c.ari, &f.want["ari"], &format!("{name} ARI"));
        close(c.nmi, &f.want["nmi"], &format!("{name} NMI"));
    }
}

#[test]
fn silhouette_is_the_same_on_any_thread_count() {
    let f = fixture("metrics_blobs.json");
    let sample = silhouette_rows(f.data.rows(), 0);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let a = one.install(|| quality(&f.data, &f.labels, f.k, &sample).unwrap());
    let b = quality(&f.data, &f.labels, f.k, &sample).unwrap();
    assert_eq!(a, b);
}

#[test]
fn scores_have_their_defining_properties() {
    let a: Vec<u32> = (0..60).map(|i| i % 3).collect();
    let t = Contingency::new(&a, 3, &a, 3);
    assert_eq!(adjusted_rand(&t), 1.0);
    assert!((normalized_mutual_info(&t) - 1.0).abs() < 1e-12);
    // Renaming the clusters changes nothing.
    let renamed: Vec<u32> = a.iter().map(|&l| 2 - l).collect();
    let t2 = Contingency::new(&a, 3, &renamed, 3);
    assert!((adjusted_rand(&t2) - 1.0).abs() < 1e-12);
    assert!((normalized_mutual_info(&t2) - 1.0).abs() < 1e-12);
    // Both scores are symmetric.
    let b: Vec<u32> = (0..60).map(|i| (i / 7) as u32 % 4).collect();
    let (ab, ba) = (
        Contingency::new(&a, 3, &b, 4),
        Contingency::new(&b, 4, &a, 3),
    );
    assert!((adjusted_rand(&ab) - adjusted_rand(&ba)).abs() < 1e-12);
    assert!((normalized_mutual_info(&ab) - normalized_mutual_info(&ba)).abs() < 1e-12);
    // Crosstab margins are the cluster and segment sizes; each segment's home holds most of it.
    let levels: Vec<String> = (0..4).map(|s| format!("s{s}")).collect();
    let c = compare("seg", &a, 3, &b, &levels);
    assert_eq!(
        c.crosstab
            .iter()
            .map(|r| r.iter().sum::<u64>())
            .collect::<Vec<_>>(),
        vec![20, 20, 20]
    );
    assert_eq!(c.crosstab.iter().flatten().sum::<u64>(), 60);
    for (s, h) in c.segment_homes.iter().enumerate() {
        let col: Vec<u64> = c.crosstab.iter().map(|r| r[s]).collect();
        assert_eq!(col[h.cluster], *col.iter().max().unwrap());
        assert_eq!(h.rows, col.iter().sum::<u64>());
    }
}

/// The usual median of integer-weighted values, by repeating each value `w` times.
fn brute_median(vals: &[(f64, u32)]) -> f64 {
    let mut v: Vec<f64> = vals
        .iter()
        .flat_map(|&(x, w)| std::iter::repeat_n(x, w as usize))
        .collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[test]
fn profile_matches_a_brute_force_computation() {
    let (n, d, k) = (301, 3, 4);
    let values = blobs(n, d, k, 5);
    let weights: Vec<f32> = (0..n).map(|i| 1.0 + (i % 3) as f32).collect();
    let labels: Vec<u32> = (0..n).map(|i| ((i * 7) % k) as u32).collect();
    let age: Vec<f64> = (0..n)
        .map(|i| {
            if i % 10 == 0 {
                f64::NAN
            } else {
                20.0 + (i % 47) as f64
            }
        })
        .collect();
    let codes: Vec<u32> = (0..n).map(|i| (i % 5 % 3) as u32).collect();
    let levels = vec!["email".to_string(), "search".into(), "social".into()];
    let extras = vec![
        Extra {
            name: "age".into(),
            values: ExtraValues::Numeric(age.clone()),
        },
        Extra {
            name: "channel".into(),
            values: ExtraValues::Categorical {
                codes: codes.clone(),
                levels,
            },
        },
    ];
    let data = Dataset::from_rows(d, values.clone(), Some(weights.clone()));
    let features: Vec<String> = (0..d).map(|j| format!("f{j}")).collect();
    let p = profile(&ProfileInput {
        data: &data,
        features: &features,
        labels: &labels,
        k,
        describe: &extras,
    });
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    assert!((p.total_weight - total).abs() < 1e-9);
    // Column j of the features, or the described numeric column for j == d.
    let col = |j: usize, i: usize| {
        if j < d {
            values[i * d + j] as f64
        } else {
            age[i]
        }
    };
    for j in 0..=d {
        let rows: Vec<usize> = (0..n).filter(|&i| !col(j, i).is_nan()).collect();
        let tw: f64 = rows.iter().map(|&i| weights[i] as f64).sum();
        let mean: f64 = rows
            .iter()
            .map(|&i| weights[i] as f64 * col(j, i))
            .sum::<f64>()
            / tw;
        let sd = (rows
            .iter()
            .map(|&i| weights[i] as f64 * (col(j, i) - mean).powi(2))
            .sum::<f64>()
            / tw)
            .sqrt();
        let pop = if j < d {
            &p.population[j]
        } else {
            &p.described_population[0]
        };
        assert!((pop.mean.unwrap() - mean).abs() < 1e-9);
        assert!((pop.sd.unwrap() - sd).abs() < 1e-9);
        let all: Vec<(f64, u32)> = rows
            .iter()
            .map(|&i| (col(j, i), weights[i] as u32))
            .collect();
        assert_eq!(pop.median.unwrap(), brute_median(&all));
        for c in 0..k {
            let mine: Vec<usize> = rows
                .iter()
                .copied()
                .filter(|&i| labels[i] as usize == c)
                .collect();
            let cw: f64 = mine.iter().map(|&i| weights[i] as f64).sum();
            let cm = mine
                .iter()
                .map(|&i| weights[i] as f64 * col(j, i))
                .sum::<f64>()
                / cw;
            let st = if j < d {
                &p.clusters[c].features[j]
            } else {
                &p.clusters[c].described[0]
            };
            assert!(
                (st.mean.unwrap() - cm).abs() < 1e-9,
                "cluster {c} column {j}"
            );
            assert!((st.z.unwrap() - (cm - mean) / sd).abs() < 1e-9);
            assert!((st.lift.unwrap() - cm / mean).abs() < 1e-9);
            let v: Vec<(f64, u32)> = mine
                .iter()
                .map(|&i| (col(j, i), weights[i] as u32))
                .collect();
            assert_eq!(
                st.median.unwrap(),
                brute_median(&v),
                "median, cluster {c} column {j}"
            );
        }
    }
    for c in 0..k {
        let cp = &p.clusters[c];
        let cw: f64 = (0..n)
            .filter(|&i| labels[i] as usize == c)
            .map(|i| weights[i] as f64)
            .sum();
        assert!((cp.share - cw / total).abs() < 1e-12);
        assert_eq!(
            cp.size as usize,
            (0..n).filter(|&i| labels[i] as usize == c).count()
        );
        // 3 to 5 distinguishing features (only 3 exist here), ordered by |z|, marked high/low.
        assert_eq!(cp.distinguishing.len(), 3);
        assert!(
            cp.distinguishing
                .windows(2)
                .all(|w| w[0].z.abs() >= w[1].z.abs())
        );
        for dd in &cp.distinguishing {
            assert_eq!(dd.direction, if dd.z >= 0.0 { "high" } else { "low" });
        }
        // Category shares, weighted.
        let shares = &cp.categories[0].shares;
        for (l, s) in shares.iter().enumerate() {
            let w: f64 = (0..n)
                .filter(|&i| labels[i] as usize == c && codes[i] as usize == l)
                .map(|i| weights[i] as f64)
                .sum();
            assert!((s.share - w / cw).abs() < 1e-12);
        }
        assert!((shares.iter().map(|s| s.share).sum::<f64>() - 1.0).abs() < 1e-12);
    }
    // The tidy table has a row per cluster and feature, described column and category.
    let t = p.to_record_batch().unwrap();
    assert_eq!(t.num_rows(), k * (d + 1 + 3));
}

fn customers(path: &Path, n: usize) {
    let v = blobs(n, 2, 3, 9);
    write_parquet(
        path,
        vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
            ),
            (
                "spend",
                Arc::new(Float64Array::from(
                    (0..n).map(|i| v[2 * i] as f64).collect::<Vec<_>>(),
                )),
            ),
            (
                "visits",
                Arc::new(Float64Array::from(
                    (0..n).map(|i| v[2 * i + 1] as f64).collect::<Vec<_>>(),
                )),
            ),
            (
                "age",
                Arc::new(Int32Array::from(
                    (0..n).map(|i| 20 + (i % 40) as i32).collect::<Vec<_>>(),
                )),
            ),
            (
                "channel",
                Arc::new(StringArray::from(
                    (0..n)
                        .map(|i| ["web", "store", "app"][i % 3])
                        .collect::<Vec<_>>(),
                )),
            ),
            (
                "persona",
                Arc::new(Int32Array::from(
                    (0..n).map(|i| (i % 4) as i32).collect::<Vec<_>>(),
                )),
            ),
        ],
    );
}

#[test]
fn fit_writes_profiles_metrics_and_comparison() {
    let dir = tmpdir();
    let input = p(dir.path(), "c.parquet");
    customers(&input, 600);
    let prof = p(dir.path(), "profile.parquet");
    let o = lakemeans(&[
        "fit",
        s(&input),
        "--k",
        "3",
        "--exclude",
        "id",
        "--describe",
        "age,channel",
        "--compare-with",
        "persona",
        "--metrics",
        "--profile",
        s(&prof),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Only spend and visits are clustered on: --describe and --compare-with columns are left out.
    assert_eq!(j["features"], serde_json::json!(["spend", "visits"]));
    for key in [
        "silhouette",
        "calinski_harabasz",
        "davies_bouldin",
        "ari",
        "nmi",
    ] {
        assert!(j[key].is_f64(), "{key} missing from {j}");
    }
    let pj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("profile.json")).unwrap())
            .unwrap();
    assert_eq!(pj["clusters"].as_array().unwrap().len(), 3);
    assert_eq!(pj["compare"]["column"], "persona");
    assert_eq!(
        pj["compare"]["segments"],
        serde_json::json!(["0", "1", "2", "3"])
    );
    assert!(
        pj["clusters"][0]["description"]
            .as_str()
            .unwrap()
            .contains("spend")
    );
    let kinds = read_column_f64(&prof, "cluster");
    assert_eq!(kinds.len(), 3 * (2 + 1 + 3 + 4));

    // profile from the assignments gives the same profile.
    let a = p(dir.path(), "a.parquet");
    let o = lakemeans(&[
        "fit",
        s(&input),
        "--k",
        "3",
        "--exclude",
        "id",
        "--output",
        s(&a),
        "--describe",
        "age,channel",
        "--profile",
        s(&p(dir.path(), "p2.parquet")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lakemeans(&[
        "profile",
        s(&input),
        "--assignments",
        s(&a),
        "--exclude",
        "id",
        "--describe",
        "age,channel",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let from_cli: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let from_fit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("p2.json")).unwrap())
            .unwrap();
    assert_eq!(from_cli["clusters"], from_fit["clusters"]);
}

#[test]
fn bad_extra_columns_fail_cleanly() {
    let dir = tmpdir();
    let input = p(dir.path(), "c.parquet");
    customers(&input, 100);
    let prof = p(dir.path(), "profile.parquet");
    let report = p(dir.path(), "r.html");
    for (args, needle) in [
        (vec!["--describe", "nope"], "no column 'nope'"),
        (
            vec!["--compare-with", "spend"],
            "--compare-with column 'spend'",
        ),
    ] {
        let mut all = vec![
            "fit",
            s(&input),
            "--k",
            "2",
            "--exclude",
            "id",
            "--profile",
            s(&prof),
            "--report",
            s(&report),
        ];
        all.extend(args);
        let o = lakemeans(&all);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
        assert!(stderr(&o).contains("c.parquet"), "{}", stderr(&o));
        assert_eq!(listing(dir.path()), vec!["c.parquet"]);
    }
    let o = lakemeans(&["fit", s(&input), "--k", "2", "--describe", "age"]);
    assert_eq!(o.status.code(), Some(2));
    let o = lakemeans(&["sweep", s(&input), "--k", "5..2"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn sweep_reports_every_k_and_recommends_one() {
    let dir = tmpdir();
    let input = p(dir.path(), "c.parquet");
    customers(&input, 500);
    let o = lakemeans(&[
        "sweep",
        s(&input),
        "--k",
        "2..5",
        "--exclude",
        "id",
        "--compare-with",
        "persona",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let pts = j["points"].as_array().unwrap();
    assert_eq!(
        pts.iter()
            .map(|p| p["k"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    for pt in pts {
        for key in [
            "inertia",
            "silhouette",
            "calinski_harabasz",
            "davies_bouldin",
            "ari",
            "nmi",
        ] {
            assert!(pt[key].is_f64(), "{key}");
        }
    }
    // The data are three blobs.
    assert_eq!(j["recommended_k"], 3);
    assert!(j["reason"].as_str().unwrap().starts_with("k = 3"));
    // Each k's silhouette equals what fit --metrics reports for that k.
    let o = lakemeans(&[
        "fit",
        s(&input),
        "--k",
        "4",
        "--exclude",
        "id",
        "--metrics",
        "--json",
        "--describe",
        "persona",
        "--report",
        s(&p(dir.path(), "r.html")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(f["silhouette"], pts[2]["silhouette"]);
}
