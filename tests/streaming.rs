//! Streaming fits: a memory budget too small for the rows must change nothing in the results,
//! whatever the device, the files the table is split into, or the init; bad input found late
//! and interruptions leave nothing behind; scaler statistics keep f64 resolution.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use common::*;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// Writes rows `lo..hi` of a blob table (`id`, `f0..`, `w`) with row groups of `group` rows.
fn write_part(
    path: &Path,
    x: &[f32],
    d: usize,
    lo: usize,
    hi: usize,
    group: usize,
    nan_at: Option<usize>,
) {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    fields.extend((0..d).map(|j| Field::new(format!("f{j}"), DataType::Float64, true)));
    fields.push(Field::new("w", DataType::Float64, false));
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        schema.clone(),
        Some(props),
    )
    .unwrap();
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        (lo..hi).map(|i| i as i64 * 3 + 7),
    ))];
    for j in 0..d {
        cols.push(Arc::new(Float64Array::from_iter_values((lo..hi).map(
            |i| {
                if nan_at == Some(i) && j == d - 1 {
                    f64::NAN
                } else {
                    x[i * d + j] as f64
                }
            },
        ))));
    }
    cols.push(Arc::new(Float64Array::from_iter_values(
        (lo..hi).map(|i| 0.5 + (i % 5) as f64),
    )));
    w.write(&RecordBatch::try_new(schema, cols).unwrap())
        .unwrap();
    w.close().unwrap();
}

const N: usize = 150_000;
const D: usize = 5;

/// The same table as one file and as `parts` files in a directory (row groups of 7,000 rows).
fn tables(dir: &Path, parts: usize, nan_at: Option<usize>) -> (String, String) {
    let x = blobs(N, D, 6, 11);
    one_and_split(dir, N, parts, |path, lo, hi| {
        write_part(path, &x, D, lo, hi, 7_000, nan_at)
    })
}

/// Runs a fit into `out_dir` and returns its JSON summary and the three files' bytes.
fn fit(
    input: &str,
    out_dir: &Path,
    extra: &[&str],
    gpu: bool,
) -> (serde_json::Value, Vec<Vec<u8>>) {
    fit_env(input, out_dir, extra, gpu, &[])
}

fn fit_env(
    input: &str,
    out_dir: &Path,
    extra: &[&str],
    gpu: bool,
    env: &[(&str, &str)],
) -> (serde_json::Value, Vec<Vec<u8>>) {
    std::fs::create_dir_all(out_dir).unwrap();
    let (a, c, m) = (
        p(out_dir, "a.parquet"),
        p(out_dir, "c.parquet"),
        p(out_dir, "m.json"),
    );
    let mut args = vec![
        "fit",
        input,
        "--k",
        "6",
        "--id",
        "id",
        "--weight",
        "w",
        "--output",
        s(&a),
        "--centroids",
        s(&c),
        "--model",
        s(&m),
        "--json",
        "--max-iter",
        "15",
    ];
    args.extend_from_slice(extra);
    let o = if gpu {
        args.extend_from_slice(&["--device", "gpu"]);
        std::process::Command::new(env!("CARGO_BIN_EXE_lakemeans"))
            .args(&args)
            .env_remove("LAKEMEANS_HIDE_GPU")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    } else {
        args.extend_from_slice(&["--device", "cpu"]);
        lakemeans(&args)
    };
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bytes = [a, c, m]
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    (j, bytes)
}

#[test]
fn a_tiny_budget_streams_and_gives_the_same_bytes_on_the_cpu() {
    let dir = tmpdir();
    let (one, split) = tables(dir.path(), 37, None);
    for init in ["k-means||", "random"] {
        for scale in ["standard", "minmax"] {
            let base = ["--init", init, "--scale", scale];
            let (jm, mem) = fit(&one, &dir.path().join("mem"), &base, false);
            assert_eq!(jm["mode"], "in-memory");
            let mut small = base.to_vec();
            small.extend_from_slice(&["--memory-budget", "2MB"]);
            let (js, streamed) = fit(&one, &dir.path().join("stream"), &small, false);
            assert_eq!(js["mode"], "streaming", "{js}");
            assert_eq!(js["init"], init);
            assert!(js["passes"].as_u64().unwrap() > jm["iterations"].as_u64().unwrap());
            assert!(
                mem == streamed,
                "{init}/{scale}: streamed files differ from in-memory ones"
            );
            let (_, files) = fit(&split, &dir.path().join("from-split"), &small, false);
            assert!(mem == files, "{init}/{scale}: 37 files differ from one");
            let (_, t1) = fit(
                &split,
                &dir.path().join("t1"),
                &[&small[..], &["--threads", "1"]].concat(),
                false,
            );
            assert!(mem == t1, "{init}/{scale}: one thread differs");
        }
    }
}

#[test]
fn a_tiny_budget_streams_and_gives_the_same_bytes_on_the_gpu() {
    let dir = tmpdir();
    let (one, split) = tables(dir.path(), 5, None);
    let base = ["--init", "k-means||"];
    let (jm, mem) = fit(&one, &dir.path().join("mem"), &base, true);
    assert_eq!(jm["device"], "gpu", "{jm}");
    let small = [&base[..], &["--memory-budget", "2MB"]].concat();
    let (js, streamed) = fit(&split, &dir.path().join("stream"), &small, true);
    assert_eq!(js["mode"], "streaming");
    assert!(
        mem == streamed,
        "GPU: streamed files differ from in-memory ones"
    );
    // Points that do not stay on the device stream through the two upload buffers.
    let env = [
        ("LAKEMEANS_GPU_MAX_RESIDENT_BYTES", "1"),
        ("LAKEMEANS_GPU_MAX_CHUNK_ROWS", "40000"),
    ];
    let (_, pooled) = fit_env(&split, &dir.path().join("pool"), &small, true, &env);
    assert!(mem == pooled, "GPU: double-buffered uploads differ");
}

#[test]
fn one_pass_predict_writes_what_the_fit_wrote() {
    let dir = tmpdir();
    let (one, _) = tables(dir.path(), 2, None);
    let out = dir.path().join("fit");
    let (_, files) = fit(&one, &out, &["--memory-budget", "2MB"], false);
    let pred = p(dir.path(), "pred.parquet");
    let o = lakemeans(&[
        "predict",
        &one,
        "--model",
        s(&out.join("m.json")),
        "--id",
        "id",
        "--output",
        s(&pred),
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["passes"], 1);
    assert!(
        std::fs::read(&pred).unwrap() == files[0],
        "predict differs from the fit's assignments"
    );
}

/// Neither spill files nor (temporary or final) outputs are left behind.
fn assert_left_nothing(spill: &Path, outs: &Path) {
    assert!(
        listing(spill).is_empty(),
        "spill files left: {:?}",
        listing(spill)
    );
    assert!(
        listing(outs).is_empty(),
        "outputs left: {:?}",
        listing(outs)
    );
}

#[test]
fn a_bad_value_in_a_late_row_group_fails_cleanly_and_leaves_no_files() {
    let dir = tmpdir();
    let bad_row = N - 1_234;
    let (_, split) = tables(dir.path(), 3, Some(bad_row));
    let spill = p(dir.path(), "spill");
    let outs = p(dir.path(), "outs");
    std::fs::create_dir(&spill).unwrap();
    std::fs::create_dir(&outs).unwrap();
    for scale in ["none", "standard"] {
        let o = lakemeans(&[
            "fit",
            &split,
            "--k",
            "4",
            "--weight",
            "w",
            "--id",
            "id",
            "--scale",
            scale,
            "--memory-budget",
            "2MB",
            "--spill-dir",
            s(&spill),
            "--output",
            s(&outs.join("a.parquet")),
            "--model",
            s(&outs.join("m.json")),
            "--device",
            "cpu",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let e = stderr(&o);
        // Row numbers count from 0 within each file; the last file starts at 2N/3.
        let want = format!(
            "part-0002.parquet: column 'f4' has 1 NaN (first at row {})",
            bad_row - 2 * N / 3
        );
        assert!(e.contains(&want), "{e}");
        assert_left_nothing(&spill, &outs);
    }
}

#[test]
fn an_interrupted_streamed_fit_removes_its_spill_and_temporary_files() {
    let dir = tmpdir();
    let x = blobs(400_000, 16, 8, 3);
    let input = p(dir.path(), "big.parquet");
    let mut cols: Vec<(String, ArrayRef)> = Vec::new();
    for j in 0..16 {
        cols.push((
            format!("f{j}"),
            Arc::new(Float64Array::from_iter_values(
                (0..400_000).map(|i| x[i * 16 + j] as f64),
            )),
        ));
    }
    write_parquet(
        &input,
        cols.iter().map(|(n, a)| (n.as_str(), a.clone())).collect(),
    );
    let spill = p(dir.path(), "spill");
    let outs = p(dir.path(), "outs");
    std::fs::create_dir(&spill).unwrap();
    std::fs::create_dir(&outs).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lakemeans"))
        .args([
            "fit",
            s(&input),
            "--k",
            "200",
            "--tol",
            "0",
            "--max-iter",
            "100000",
            "--memory-budget",
            "4MB",
            "--spill-dir",
            s(&spill),
            "--output",
            s(&outs.join("a.parquet")),
            "--device",
            "cpu",
        ])
        .env("LAKEMEANS_HIDE_GPU", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the spill cache exists, then ask the fit to stop.
    let start = std::time::Instant::now();
    while listing(&spill).is_empty() {
        assert!(start.elapsed().as_secs() < 120, "no spill file appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The shell's built-in kill: no procps needed.
    let kill = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_left_nothing(&spill, &outs);
}

#[test]
fn standardising_keeps_f64_resolution_of_large_values() {
    // Epoch milliseconds around 1.7e12, a few days apart: f32 spacing there is 131,072 ms.
    let n = 50_000;
    let ts: Vec<f64> = (0..n)
        .map(|i| 1.7e12 + ((i as u64 * 2_654_435_761) % 400_000_000) as f64 + 0.25)
        .collect();
    let other: Vec<f64> = (0..n).map(|i| (i % 17) as f64).collect();
    let dir = tmpdir();
    let input = p(dir.path(), "ts.parquet");
    write_parquet(
        &input,
        vec![
            ("ts", Arc::new(Float64Array::from(ts.clone())) as ArrayRef),
            ("o", Arc::new(Float64Array::from(other))),
        ],
    );
    // An f64 reference: two-pass mean and population standard deviation.
    let mean = ts.iter().sum::<f64>() / n as f64;
    let sd = (ts.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let opts = lakemeans::io::ReadOptions::default();
    let src = lakemeans::io::Source::open(std::slice::from_ref(&input), &opts).unwrap();
    let prepared = lakemeans::job::prepare(
        src,
        lakemeans::job::Scaling::Fit(lakemeans::prep::ScaleMethod::Standard),
        &lakemeans::job::Prepare {
            budget: 1 << 30,
            spill_dir: None,
            extras: false,
        },
    )
    .unwrap();
    let sc = &prepared.scaler;
    // Both are f64 sums of 50,000 values near 1.7e12, in different orders.
    assert!(
        (sc.offset[0] / mean - 1.0).abs() < 1e-12,
        "{} vs {mean}",
        sc.offset[0]
    );
    assert!(
        (sc.scale[0] / sd - 1.0).abs() < 1e-12,
        "{} vs {sd}",
        sc.scale[0]
    );
    let data = prepared.rows.in_memory().unwrap();
    let mut worst_f32_first = 0f64;
    for (i, &t) in ts.iter().enumerate() {
        let want = (t - mean) / sd;
        let got = data.row(i)[0] as f64;
        assert!(
            (got - want).abs() <= 2.0 * f32::EPSILON as f64 * want.abs().max(1.0),
            "row {i}: {got} vs {want}"
        );
        // What casting to f32 before standardising would give: visibly off.
        worst_f32_first = worst_f32_first.max((((t as f32) as f64 - mean) / sd - want).abs());
    }
    assert!(
        worst_f32_first > 1e-4,
        "the test data does not exercise f32 rounding"
    );
}

#[test]
fn kmeans_parallel_puts_one_centre_in_every_well_separated_blob() {
    use lakemeans::data::{Dataset, Rows};
    use lakemeans::io::spill::SpillWriter;
    use lakemeans::kmeans::kmeans_parallel;
    use lakemeans::rng::Rng;
    let (d, k, per) = (3, 8, 2_500);
    // Blob centres 100 apart on a grid, unit spread: any sensible seeding covers each once.
    let centre = |c: usize| {
        [
            100.0 * (c % 2) as f64,
            100.0 * ((c / 2) % 2) as f64,
            100.0 * (c / 4) as f64,
        ]
    };
    let mut rng = Rng::new(5);
    let mut x = Vec::new();
    for i in 0..k * per {
        let c = centre(i % k);
        for v in c {
            x.push((v + rng.normal_pair().0) as f32);
        }
    }
    let mem = Dataset::from_rows(d, x, None);
    let dir = tmpdir();
    let mut w = SpillWriter::new(dir.path(), d, false).unwrap();
    for s in mem.batches() {
        w.push(s.clone()).unwrap();
    }
    let spill = w.finish().unwrap();
    for seed in 0..10 {
        let a = kmeans_parallel(&mem, k, 2, 2.0, &mut Rng::derive(seed, 0)).unwrap();
        let b = kmeans_parallel(&spill, k, 2, 2.0, &mut Rng::derive(seed, 0)).unwrap();
        assert_eq!(a, b, "seed {seed}: streamed and in-memory seeding differ");
        // Brute force in f64: the blob nearest to each chosen centre.
        let mut hit = vec![0; k];
        for c in a.chunks_exact(d) {
            let nearest = (0..k)
                .min_by(|&p, &q| {
                    let dist = |t: usize| {
                        centre(t)
                            .iter()
                            .zip(c)
                            .map(|(m, &v)| (m - v as f64).powi(2))
                            .sum::<f64>()
                    };
                    dist(p).total_cmp(&dist(q))
                })
                .unwrap();
            hit[nearest] += 1;
        }
        assert_eq!(hit, vec![1; k], "seed {seed}: centres per blob {hit:?}");
    }
    assert_eq!(Rows::passes(&mem), Rows::passes(&spill));
}

#[test]
fn a_training_sample_fits_on_its_rows_and_assigns_every_row() {
    let dir = tmpdir();
    let (one, _) = tables(dir.path(), 2, None);
    let args = [
        "--train-sample",
        "20000",
        "--init",
        "k-means||",
        "--scale",
        "none",
    ];
    let (j, files) = fit(&one, &dir.path().join("mem"), &args, false);
    assert_eq!(j["train_rows"], 20000);
    assert_eq!(j["rows"], N as u64);
    let small = [&args[..], &["--memory-budget", "2MB"]].concat();
    let (_, streamed) = fit(&one, &dir.path().join("stream"), &small, false);
    assert!(
        files == streamed,
        "the sample or its fit depends on the budget"
    );
    // Every row's cluster is its nearest trained centroid, by brute force in f64.
    let x = blobs(N, D, 6, 11);
    let c: Vec<Vec<f64>> = (0..D)
        .map(|j| read_column_f64(&dir.path().join("mem/c.parquet"), &format!("f{j}")))
        .collect();
    let labels = read_column_f64(&dir.path().join("mem/a.parquet"), "cluster");
    let mut off = 0;
    for (i, &l) in labels.iter().enumerate() {
        let d2 = |k: usize| {
            (0..D)
                .map(|j| (x[i * D + j] as f64 - c[j][k]).powi(2))
                .sum::<f64>()
        };
        let best = (0..6).map(d2).fold(f64::INFINITY, f64::min);
        if d2(l as usize) > best * (1.0 + 1e-5) + 1e-6 {
            off += 1;
        }
    }
    assert_eq!(off, 0, "rows not at their nearest centroid");
}

#[test]
fn passes_times_every_kind_of_pass_in_one_run() {
    let dir = tmpdir();
    let (one, _) = tables(dir.path(), 1, None);
    let spill = p(dir.path(), "spill");
    std::fs::create_dir(&spill).unwrap();
    let o = lakemeans(&[
        "bench",
        "passes",
        &one,
        "--exclude",
        "id,w",
        "--k",
        "6",
        "--repeats",
        "2",
        "--spill-dir",
        s(&spill),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["rows"], N as u64);
    for kind in ["spill_assign", "memory_assign", "spill_step", "memory_step"] {
        assert_eq!(j[kind]["seconds"].as_array().unwrap().len(), 2, "{kind}");
    }
    assert!(j["ratio_spill_to_memory"].as_f64().unwrap() > 0.0);
    assert!(listing(&spill).is_empty(), "spill cache left behind");
    // The mode takes its own flags, not the workload matrix's.
    let mixed = lakemeans(&["bench", "--n", "1000", "passes", &one, "--k", "6"]);
    assert_eq!(mixed.status.code(), Some(2), "{}", stderr(&mixed));
}
