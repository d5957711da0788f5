//! Profiles of tables larger than the memory budget: the streamed profile must agree with the
//! in-memory one on every exact statistic, its medians must lie within their stated bound of
//! the exact medians (computed here by brute force), and nothing may depend on the files the
//! table is split into or on the thread count. Bad input still fails cleanly.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::*;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

const N: usize = 150_000;
const D: usize = 4;
const K: usize = 5;

/// Feature `j` of row `i`: blobs, whole numbers (many ties), a skewed column, and blobs
/// again; a NaN at `nan_at` in the last feature.
fn feature(x: &[f32], i: usize, j: usize, nan_at: Option<usize>) -> f64 {
    let v = x[i * D + j] as f64;
    match j {
        _ if nan_at == Some(i) && j == D - 1 => f64::NAN,
        1 => v.round(),
        2 => (v / 4.0).exp(),
        _ => v,
    }
}

fn weight(i: usize) -> f64 {
    1.0 + (i % 3) as f64
}

fn age(i: usize) -> Option<i32> {
    (!i.is_multiple_of(10)).then(|| 18 + ((i * 37) % 60) as i32)
}

/// Writes rows `lo..hi`: `id`, `f0..f3`, `w`, `age` (nulls), `channel` (30 levels and nulls,
/// so that the rarest are folded), `persona` (a segment label), in row groups of 7,000 rows.
fn write_rows(path: &Path, x: &[f32], lo: usize, hi: usize, nan_at: Option<usize>) {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    fields.extend((0..D).map(|j| Field::new(format!("f{j}"), DataType::Float64, true)));
    fields.push(Field::new("w", DataType::Float64, false));
    fields.push(Field::new("age", DataType::Int32, true));
    fields.push(Field::new("channel", DataType::Utf8, true));
    fields.push(Field::new("persona", DataType::Int32, false));
    let schema = Arc::new(Schema::new(fields));
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        (lo..hi).map(|i| i as i64),
    ))];
    for j in 0..D {
        cols.push(Arc::new(Float64Array::from_iter_values(
            (lo..hi).map(|i| feature(x, i, j, nan_at)),
        )));
    }
    cols.push(Arc::new(Float64Array::from_iter_values(
        (lo..hi).map(weight),
    )));
    cols.push(Arc::new(Int32Array::from_iter((lo..hi).map(age))));
    cols.push(Arc::new(StringArray::from_iter((lo..hi).map(|i| {
        (!i.is_multiple_of(17)).then(|| format!("c{:02}", (i * 7) % 30))
    }))));
    cols.push(Arc::new(Int32Array::from_iter_values(
        (lo..hi).map(|i| (i % 4) as i32),
    )));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(7_000))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        schema.clone(),
        Some(props),
    )
    .unwrap();
    w.write(&RecordBatch::try_new(schema, cols).unwrap())
        .unwrap();
    w.close().unwrap();
}

/// The table as one file and split into `parts` files; returns both paths and the raw rows.
fn tables(dir: &Path, parts: usize, nan_at: Option<usize>) -> (String, String, Vec<f32>) {
    let x = blobs(N, D, K, 21);
    let (one, split) = one_and_split(dir, N, parts, |path, lo, hi| {
        write_rows(path, &x, lo, hi, nan_at)
    });
    (one, split, x)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lakemeans"))
        .args(args)
        .env("LAKEMEANS_HIDE_GPU", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run lakemeans")
}

/// The assignments of a fit on the four features, and the labels in them.
fn assignments(input: &str, dir: &Path) -> (String, Vec<u32>) {
    let a = p(dir, "a.parquet");
    let o = lakemeans(&[
        "fit",
        input,
        "--k",
        &K.to_string(),
        "--features",
        "f0,f1,f2,f3",
        "--weight",
        "w",
        "--seed",
        "3",
        "--output",
        s(&a),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let labels = read_column_f64(&a, "cluster")
        .into_iter()
        .map(|v| v as u32)
        .collect();
    (s(&a).to_string(), labels)
}

/// The columns every run here profiles: features, weight, described and segment columns.
const COLUMNS: [&str; 8] = [
    "--features",
    "f0,f1,f2,f3",
    "--weight",
    "w",
    "--describe",
    "age,channel",
    "--compare-with",
    "persona",
];

/// `profile --json` of [`COLUMNS`], plus `extra`.
fn profile(input: &str, a: &str, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let mut args = vec!["profile", input, "--assignments", a, "--json"];
    args.extend_from_slice(&COLUMNS);
    args.extend_from_slice(extra);
    let o = run(&args, env);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The JSON without the medians and what is said about them: what must be exact either way.
fn exact_part(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "median" | "median_error" | "medians"))
                .map(|(k, v)| (k.clone(), exact_part(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(exact_part).collect()),
        other => other.clone(),
    }
}

/// The usual median of integer-weighted values, by repeating each value `w` times.
fn brute_median(vals: &[(f64, u32)]) -> Option<f64> {
    let mut v: Vec<f64> = vals
        .iter()
        .flat_map(|&(x, w)| std::iter::repeat_n(x, w as usize))
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Exact medians of column `col` (a feature, or `age` for `D`) per cluster, then the
/// population's.
fn exact_medians(x: &[f32], labels: &[u32], col: usize) -> Vec<Option<f64>> {
    let value = |i: usize| {
        if col < D {
            Some(feature(x, i, col, None))
        } else {
            age(i).map(f64::from)
        }
    };
    let mut groups: Vec<Vec<(f64, u32)>> = vec![Vec::new(); K + 1];
    for i in 0..N {
        if let Some(v) = value(i) {
            let w = weight(i) as u32;
            groups[labels[i] as usize].push((v, w));
            groups[K].push((v, w));
        }
    }
    groups.iter().map(|g| brute_median(g)).collect()
}

/// The stats object of column `col` in cluster `c` (or the population for `c == K`).
fn stat(j: &Value, c: usize, col: usize) -> &Value {
    match (c == K, col < D) {
        (false, true) => &j["clusters"][c]["features"][col],
        (false, false) => &j["clusters"][c]["described"][0],
        (true, true) => &j["population"][col],
        (true, false) => &j["described_population"][0],
    }
}

#[test]
fn a_streamed_profile_is_exact_but_for_medians_within_their_bound() {
    let dir = tmpdir();
    let (one, split, x) = tables(dir.path(), 13, None);
    let (a, labels) = assignments(&one, dir.path());
    // The metrics (their silhouette takes most of the time) once in memory, once streamed.
    let mem = profile(&one, &a, &["--metrics"], &[]);
    assert_eq!(mem["medians"]["exact"], true, "{}", mem["medians"]);
    // 3 MB holds the labels, the spill's per-row state and the sketches, not every value.
    let tiny = ["--memory-budget", "3MB"];
    let streamed = profile(&one, &a, &[&tiny[..], &["--metrics"]].concat(), &[]);
    assert_eq!(streamed["medians"]["exact"], false);
    assert_eq!(streamed["medians"]["method"], "histogram");
    assert_eq!(streamed["medians"]["bins"], 1024);
    assert_eq!(exact_part(&streamed), exact_part(&mem));
    assert!(streamed["metrics"]["calinski_harabasz"].is_f64());
    assert_eq!(streamed["compare"]["column"], "persona");
    // 30 channels and a null: the rarest are folded into "(other)".
    let shares = streamed["clusters"][0]["categories"][0]["shares"]
        .as_array()
        .unwrap();
    assert_eq!(shares.len(), 25);
    assert_eq!(shares[24]["category"], "(other)");

    for col in 0..=D {
        let want = exact_medians(&x, &labels, col);
        for (c, want) in want.iter().enumerate() {
            let (m, st) = (stat(&mem, c, col), stat(&streamed, c, col));
            let Some(want) = want else {
                assert!(st["median"].is_null());
                continue;
            };
            // In memory: exact (up to the last bits that serde_json's default float parsing
            // may get wrong).
            let exact = m["median"].as_f64().unwrap();
            assert!(
                (exact - want).abs() <= 1e-15 * want.abs(),
                "column {col} cluster {c}: in-memory median {exact}, exact {want}"
            );
            assert!(m["median_error"].is_null());
            // Streamed: within the stated bound, which is within 1/1024 of the range.
            let got = st["median"].as_f64().unwrap();
            let bound = st["median_error"].as_f64().unwrap();
            let range = st["max"].as_f64().unwrap() - st["min"].as_f64().unwrap();
            assert!(
                (got - want).abs() <= bound + 1e-14 * (1.0 + want.abs()),
                "column {col} cluster {c}: streamed median {got}, exact {want}, bound {bound}"
            );
            assert!(bound <= range / 1024.0 * (1.0 + 1e-9), "{bound} vs {range}");
        }
    }

    // Nothing depends on the files or the threads.
    let unmeasured = |j: &Value| {
        let mut j = j.clone();
        j.as_object_mut().unwrap().remove("metrics");
        j
    };
    let (streamed, mem) = (unmeasured(&streamed), unmeasured(&mem));
    let from_split = profile(&split, &a, &tiny, &[]);
    assert_eq!(from_split, streamed, "13 files differ from one");
    let t1 = profile(&split, &a, &tiny, &[("RAYON_NUM_THREADS", "1")]);
    let t2 = profile(&split, &a, &tiny, &[("RAYON_NUM_THREADS", "2")]);
    assert_eq!(t1, streamed, "one thread differs");
    assert_eq!(t2, streamed, "two threads differ");
    let t1 = profile(&split, &a, &[], &[("RAYON_NUM_THREADS", "1")]);
    assert_eq!(t1, mem, "in memory: one thread or 13 files differ");
}

#[test]
fn fit_profiles_and_reports_a_streamed_table() {
    let dir = tmpdir();
    let (one, _, _) = tables(dir.path(), 1, None);
    let fit = |name: &str, budget: Option<&str>| -> (Value, Value, String) {
        let out = dir.path().join(name);
        std::fs::create_dir(&out).unwrap();
        let (prof, report) = (out.join("p.parquet"), out.join("r.html"));
        let mut args = vec![
            "fit",
            &one,
            "--k",
            "5",
            "--init",
            "k-means||",
            "--profile",
            s(&prof),
            "--report",
            s(&report),
            "--json",
        ];
        args.extend_from_slice(&COLUMNS);
        if let Some(b) = budget {
            args.extend_from_slice(&["--memory-budget", b]);
        }
        let o = lakemeans(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let j: Value = serde_json::from_slice(&o.stdout).unwrap();
        let pj: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("p.json")).unwrap()).unwrap();
        let errors = read_column_f64(&prof, "median_error");
        assert_eq!(errors.len(), 5 * (4 + 1 + 25 + 4));
        (j, pj, std::fs::read_to_string(report).unwrap())
    };
    let (jm, pm, hm) = fit("mem", None);
    let (js, ps, hs) = fit("stream", Some("2MB"));
    assert_eq!(jm["mode"], "in-memory");
    assert_eq!(js["mode"], "streaming");
    assert_eq!(exact_part(&ps), exact_part(&pm));
    for key in ["ari", "nmi", "cluster_sizes", "inertia"] {
        assert_eq!(js[key], jm[key], "{key}");
    }
    assert_eq!(ps["medians"]["exact"], false);
    assert!(hs.contains("Medians are approximate"), "streamed report");
    assert!(!hm.contains("Medians are approximate"), "in-memory report");
}

/// A sweep over a table larger than the budget streams from the spill cache and measures
/// every k exactly as it does in memory, split files and one thread included.
#[test]
fn a_streamed_sweep_equals_the_in_memory_one() {
    let dir = tmpdir();
    let (one, split, _) = tables(dir.path(), 5, None);
    let sweep = |input: &str, budget: Option<&str>, env: &[(&str, &str)]| -> Value {
        let mut args = vec![
            "sweep",
            input,
            "--k",
            "3..5",
            "--init",
            "k-means||",
            "--features",
            "f0,f1,f2,f3",
            "--weight",
            "w",
            "--compare-with",
            "persona",
            "--json",
        ];
        if let Some(b) = budget {
            args.extend_from_slice(&["--memory-budget", b]);
        }
        let o = run(&args, env);
        assert!(o.status.success(), "{}", stderr(&o));
        let j: Value = serde_json::from_slice(&o.stdout).unwrap();
        for key in ["seconds", "passes", "mode"] {
            assert!(j[key] != Value::Null, "{key}");
        }
        j
    };
    let mem = sweep(&one, None, &[]);
    let streamed = sweep(&one, Some("2MB"), &[]);
    assert_eq!(mem["mode"], "in-memory");
    assert_eq!(streamed["mode"], "streaming");
    let same = |mut a: Value, mut b: Value| {
        for v in [&mut a, &mut b] {
            for key in [
                "seconds",
                "passes",
                "mode",
                "adapter",
                "files_read",
                "bytes_read",
            ] {
                v.as_object_mut().unwrap().remove(key);
            }
        }
        assert_eq!(a, b);
    };
    // Every k has its measures and the persona comparison, whichever way the rows lived.
    let pts = streamed["points"].as_array().unwrap();
    assert_eq!(pts.len(), 3);
    for pt in pts {
        for key in [
            "silhouette",
            "calinski_harabasz",
            "davies_bouldin",
            "ari",
            "nmi",
        ] {
            assert!(pt[key].is_f64(), "{key}: {pt}");
        }
    }
    // The same passes over the rows, whichever way they live: the statistics, the spill or
    // memory, the segment codes, then at least one Lloyd pass per k.
    assert_eq!(streamed["passes"], mem["passes"]);
    assert!(
        streamed["passes"].as_u64().unwrap() >= 3 + 3,
        "{}",
        streamed["passes"]
    );
    same(mem.clone(), streamed);
    same(
        mem.clone(),
        sweep(&split, Some("2MB"), &[("RAYON_NUM_THREADS", "1")]),
    );
    // A budget too small for the per-row state is refused up front, naming it.
    let o = run(
        &["sweep", &one, "--k", "2,3", "--memory-budget", "100KB"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--memory-budget"), "{}", stderr(&o));
}

#[test]
fn bad_input_still_fails_cleanly_when_a_profile_streams() {
    let dir = tmpdir();
    let bad_row = N - 1_234;
    let (_, split, _) = tables(dir.path(), 3, Some(bad_row));
    let labels = |n: usize| -> String {
        let path = p(dir.path(), &format!("a{n}.parquet"));
        let cluster = Int32Array::from_iter_values((0..n).map(|i| (i % K) as i32));
        write_parquet(&path, vec![("cluster", Arc::new(cluster) as ArrayRef)]);
        s(&path).to_string()
    };
    let a = labels(N);
    let outs = p(dir.path(), "outs");
    std::fs::create_dir(&outs).unwrap();
    let prof = outs.join("p.parquet");
    let profile = |inputs: &[&str], assign: &str| {
        let mut args = vec!["profile"];
        args.extend_from_slice(inputs);
        args.extend_from_slice(&[
            "--assignments",
            assign,
            "--features",
            "f0,f1,f2,f3",
            "--weight",
            "w",
            "--describe",
            "age",
            "--memory-budget",
            "3MB",
            "--output",
            s(&prof),
        ]);
        lakemeans(&args)
    };
    // A NaN in a late row group of the last file: file, column and row, and no output.
    let o = profile(&[&split], &a);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let want = format!(
        "part-0002.parquet: column 'f3' has 1 NaN (first at row {})",
        bad_row - 2 * N / 3
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert!(listing(&outs).is_empty(), "{:?}", listing(&outs));

    // Assignments of another table: the file is named with both row counts.
    let part = |i: usize| dir.path().join(format!("split/part-{i:04}.parquet"));
    let (p0, p1) = (part(0), part(1));
    let o = profile(&[s(&p0), s(&p1)], &labels(N / 3));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("a50000.parquet: has 50000 rows but the input has 100000"),
        "{e}"
    );
    assert!(listing(&outs).is_empty(), "{:?}", listing(&outs));
}
