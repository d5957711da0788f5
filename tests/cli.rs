//! The `lakemeans` command end to end: outputs, determinism, predict, and every bad input.

mod common;

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Decimal128Array, Float32Array, Float64Array, Int32Array, Int64Array,
    StringArray,
};
use common::*;

/// A small clean table: id, three features of mixed types, a weight, and a label.
fn clean_table(path: &std::path::Path, n: usize) {
    let v = blobs(n, 3, 4, 11);
    let col = |j: usize| v.iter().skip(j).step_by(3).copied().collect::<Vec<f32>>();
    write_parquet(
        path,
        vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
            ),
            ("a", Arc::new(Float32Array::from(col(0)))),
            (
                "b",
                Arc::new(Float64Array::from(
                    col(1).iter().map(|&x| x as f64).collect::<Vec<_>>(),
                )),
            ),
            (
                "c",
                Arc::new(Int32Array::from(
                    col(2).iter().map(|&x| x.round() as i32).collect::<Vec<_>>(),
                )),
            ),
            (
                "w",
                Arc::new(Float64Array::from(
                    (0..n).map(|i| 1.0 + (i % 3) as f64).collect::<Vec<_>>(),
                )),
            ),
            (
                "segment",
                Arc::new(StringArray::from(
                    (0..n).map(|i| format!("s{}", i % 2)).collect::<Vec<_>>(),
                )),
            ),
        ],
    );
}

#[test]
fn fit_writes_assignments_centroids_and_model() {
    let dir = tmpdir();
    let (input, out, cents, model) = (
        p(dir.path(), "in.parquet"),
        p(dir.path(), "a.parquet"),
        p(dir.path(), "c.parquet"),
        p(dir.path(), "m.json"),
    );
    clean_table(&input, 500);
    let o = lakemeans(&[
        "fit",
        s(&input),
        "--k",
        "4",
        "--id",
        "id",
        "--weight",
        "w",
        "--exclude",
        "segment",
        "--output",
        s(&out),
        "--centroids",
        s(&cents),
        "--model",
        s(&model),
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["k"], 4);
    assert_eq!(j["rows"], 500);
    assert_eq!(j["features"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(j["device"], "cpu");
    for key in ["iterations", "converged", "inertia", "seconds"] {
        assert!(!j[key].is_null(), "missing {key}");
    }
    for key in ["read", "fit", "init", "write", "total"] {
        assert!(j["seconds"][key].as_f64().unwrap() >= 0.0);
    }
    // Init is a part of the fit, timed inside it.
    assert!(j["seconds"]["init"].as_f64() <= j["seconds"]["fit"].as_f64());
    assert_eq!(
        read_column_f64(&out, "id"),
        (0..500).map(|i| i as f64).collect::<Vec<_>>()
    );
    let labels = read_column_f64(&out, "cluster");
    assert!(labels.iter().all(|&l| (0.0..4.0).contains(&l)));
    let sizes = read_column_f64(&cents, "size");
    assert_eq!(sizes.iter().sum::<f64>(), 500.0);
    for (c, &sz) in sizes.iter().enumerate() {
        assert_eq!(labels.iter().filter(|&&l| l == c as f64).count() as f64, sz);
    }
    // Centroids are in input units: the weighted mean of column `a` over each cluster.
    let a = read_column_f64(&input, "a");
    let w = read_column_f64(&input, "w");
    let ca = read_column_f64(&cents, "a");
    let cw = read_column_f64(&cents, "weight");
    for c in 0..4 {
        let (mut s, mut ws) = (0.0, 0.0);
        for i in 0..500 {
            if labels[i] == c as f64 {
                s += w[i] * a[i];
                ws += w[i];
            }
        }
        assert!(
            (ca[c] - s / ws).abs() < 1e-3,
            "cluster {c}: {} vs {}",
            ca[c],
            s / ws
        );
        assert!((cw[c] - ws).abs() < 1e-9);
    }
    // No temporary files are left beside the outputs.
    assert_eq!(
        listing(dir.path()),
        vec!["a.parquet", "c.parquet", "in.parquet", "m.json"]
    );

    // predict with the model reproduces the fit's labels and distances.
    let pred = p(dir.path(), "p.parquet");
    let o = lakemeans(&[
        "predict",
        s(&input),
        "--model",
        s(&model),
        "--output",
        s(&pred),
        "--id",
        "id",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_column_f64(&pred, "cluster"), labels);
    assert_eq!(
        read_column_f64(&pred, "distance"),
        read_column_f64(&out, "distance")
    );
}

#[test]
fn fit_without_output_prints_a_summary() {
    let dir = tmpdir();
    let input = p(dir.path(), "in.parquet");
    clean_table(&input, 200);
    let o = lakemeans(&[
        "fit",
        s(&input),
        "--k",
        "3",
        "--features",
        "a,b",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("k = 3") && out.contains("inertia") && out.contains("cluster sizes"),
        "{out}"
    );
    // Init time is shown apart from the fit it belongs to.
    assert!(out.contains(" of which init "), "{out}");
}

#[test]
fn outputs_are_byte_identical_across_thread_counts() {
    let dir = tmpdir();
    let input = p(dir.path(), "in.parquet");
    let o = lakemeans(&[
        "gen",
        "--rows",
        "30000",
        "--features",
        "6",
        "--clusters",
        "8",
        "--seed",
        "3",
        "--output",
        s(&input),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut files = Vec::new();
    for t in ["1", "2"] {
        let (a, c, m) = (
            p(dir.path(), &format!("a{t}.parquet")),
            p(dir.path(), &format!("c{t}.parquet")),
            p(dir.path(), &format!("m{t}.json")),
        );
        let o = lakemeans(&[
            "fit",
            s(&input),
            "--k",
            "8",
            "--n-init",
            "2",
            "--id",
            "customer_id",
            "--exclude",
            "label",
            "--threads",
            t,
            "--device",
            "cpu",
            "--output",
            s(&a),
            "--centroids",
            s(&c),
            "--model",
            s(&m),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        files.push([
            std::fs::read(a).unwrap(),
            std::fs::read(c).unwrap(),
            std::fs::read(m).unwrap(),
        ]);
    }
    assert!(
        files[0] == files[1],
        "outputs differ between --threads 1 and 2"
    );
}

#[test]
fn gen_is_deterministic_and_labels_are_recovered() {
    let dir = tmpdir();
    let (g1, g2) = (p(dir.path(), "g1.parquet"), p(dir.path(), "g2.parquet"));
    for g in [&g1, &g2] {
        let o = lakemeans(&[
            "gen",
            "--rows",
            "5000",
            "--features",
            "4",
            "--clusters",
            "5",
            "--seed",
            "9",
            "--spread",
            "20",
            "--output",
            s(g),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(&g1).unwrap(), std::fs::read(&g2).unwrap());
    let out = p(dir.path(), "a.parquet");
    let o = lakemeans(&[
        "fit",
        s(&g1),
        "--k",
        "5",
        "--exclude",
        "label",
        "--id",
        "customer_id",
        "--n-init",
        "3",
        "--device",
        "cpu",
        "--output",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Well-separated blobs: each found cluster is one true label.
    let truth = read_column_f64(&g1, "label");
    let found = read_column_f64(&out, "cluster");
    let mut map = std::collections::HashMap::new();
    for (t, f) in truth.iter().zip(&found) {
        let e = map.entry(*f as i64).or_insert(*t as i64);
        assert_eq!(*e, *t as i64, "cluster {f} mixes labels");
    }
}

#[test]
fn decimal_boolean_and_directory_inputs() {
    let dir = tmpdir();
    let lake = p(dir.path(), "lake");
    std::fs::create_dir_all(lake.join("day=2")).unwrap();
    std::fs::create_dir_all(lake.join("day=1")).unwrap();
    std::fs::write(lake.join("_SUCCESS"), b"").unwrap();
    for (day, off) in [("day=1", 0i64), ("day=2", 100)] {
        let dec = Decimal128Array::from((0..100).map(|i| (i * 125) as i128).collect::<Vec<_>>())
            .with_precision_and_scale(10, 2)
            .unwrap();
        write_parquet(
            &lake.join(day).join("part-0.parquet"),
            vec![
                (
                    "id",
                    Arc::new(Int64Array::from_iter_values(off..off + 100)) as ArrayRef,
                ),
                ("amount", Arc::new(dec)),
                (
                    "member",
                    Arc::new(BooleanArray::from(
                        (0..100).map(|i| i % 4 == 0).collect::<Vec<_>>(),
                    )),
                ),
            ],
        );
    }
    let out = p(dir.path(), "a.parquet");
    let o = lakemeans(&[
        "fit",
        s(&lake),
        "--k",
        "2",
        "--features",
        "amount,member",
        "--id",
        "id",
        "--device",
        "cpu",
        "--output",
        s(&out),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["rows"], 200);
    // Files are read in sorted path order: day=1 before day=2.
    assert_eq!(
        read_column_f64(&out, "id"),
        (0..200).map(|i| i as f64).collect::<Vec<_>>()
    );
}

#[test]
fn drop_invalid_skips_and_counts_rows() {
    let dir = tmpdir();
    let input = p(dir.path(), "in.parquet");
    write_parquet(
        &input,
        vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..6)) as ArrayRef,
            ),
            (
                "x",
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    None,
                    Some(f64::NAN),
                    Some(2.0),
                    Some(f64::INFINITY),
                    Some(3.0),
                ])),
            ),
        ],
    );
    let out = p(dir.path(), "a.parquet");
    let o = lakemeans(&[
        "fit",
        s(&input),
        "--k",
        "2",
        "--features",
        "x",
        "--id",
        "id",
        "--drop-invalid",
        "--device",
        "cpu",
        "--output",
        s(&out),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["dropped_rows"], 3);
    assert_eq!(j["rows"], 3);
    assert_eq!(read_column_f64(&out, "id"), vec![0.0, 3.0, 5.0]);
}

#[test]
fn constant_feature_does_not_produce_nan() {
    let dir = tmpdir();
    let input = p(dir.path(), "in.parquet");
    write_parquet(
        &input,
        vec![
            (
                "x",
                Arc::new(Float64Array::from(
                    (0..50).map(|i| i as f64).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            ("flat", Arc::new(Float64Array::from(vec![7.0; 50]))),
        ],
    );
    let (out, cents) = (p(dir.path(), "a.parquet"), p(dir.path(), "c.parquet"));
    let o = lakemeans(&[
        "fit",
        s(&input),
        "--k",
        "3",
        "--scale",
        "standard",
        "--device",
        "cpu",
        "--output",
        s(&out),
        "--centroids",
        s(&cents),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["inertia"].as_f64().unwrap().is_finite());
    assert!(
        read_column_f64(&out, "distance")
            .iter()
            .all(|d| d.is_finite())
    );
    assert!(
        read_column_f64(&cents, "flat")
            .iter()
            .all(|&v| (v - 7.0).abs() < 1e-9)
    );
}

/// Runs a command that must fail on bad input: exit 2, a message containing each of `needles`,
/// no panic, and no output or temporary file left in `dir`.
fn expect_bad(dir: &std::path::Path, args: &[&str], needles: &[&str]) {
    let before = listing(dir);
    let o = lakemeans(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "args {args:?}: expected exit 2, stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "args {args:?}: message lacks {n:?}: {err}");
    }
    assert_eq!(listing(dir), before, "args {args:?} left files behind");
}

#[test]
fn bad_inputs_exit_2_with_a_message_and_no_output() {
    let dir = tmpdir();
    let d = dir.path();
    let good = p(d, "good.parquet");
    clean_table(&good, 100);
    let out = p(d, "out.parquet");
    let o = s(&out);
    let g = s(&good);
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "fit".into(),
            g.into(),
            "--output".into(),
            o.into(),
            "--device".into(),
            "cpu".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>, needles: &[&str]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_bad(d, &a, needles);
    };

    // Missing and non-numeric feature columns.
    run(
        base(&["--k", "2", "--features", "a,nope"]),
        &["good.parquet", "nope"],
    );
    run(
        base(&["--k", "2", "--features", "a,segment"]),
        &["segment", "not numeric"],
    );
    // k = 0 and k > rows.
    run(base(&["--k", "0", "--features", "a"]), &["--k"]);
    run(base(&["--k", "101", "--features", "a"]), &["101", "100"]);
    // Input path that does not exist.
    run(
        vec![
            "fit".into(),
            s(&p(d, "missing.parquet")).into(),
            "--k".into(),
            "2".into(),
            "--output".into(),
            o.into(),
        ],
        &["missing.parquet", "no such file"],
    );

    // Nulls, NaN, inf: counted, first row named.
    let nan = p(d, "nan.parquet");
    write_parquet(
        &nan,
        vec![(
            "x",
            Arc::new(Float64Array::from(vec![
                Some(1.0),
                Some(2.0),
                None,
                Some(f64::NAN),
                Some(f64::NEG_INFINITY),
                None,
            ])) as ArrayRef,
        )],
    );
    run(
        vec![
            "fit".into(),
            s(&nan).into(),
            "--k".into(),
            "2".into(),
            "--output".into(),
            o.into(),
        ],
        &[
            "nan.parquet",
            "'x'",
            "2 null",
            "1 NaN",
            "1 infinite",
            "row 2",
            "--drop-invalid",
        ],
    );

    // Empty table.
    let empty = p(d, "empty.parquet");
    write_parquet(
        &empty,
        vec![(
            "x",
            Arc::new(Float64Array::from(Vec::<f64>::new())) as ArrayRef,
        )],
    );
    run(
        vec![
            "fit".into(),
            s(&empty).into(),
            "--k".into(),
            "1".into(),
            "--output".into(),
            o.into(),
        ],
        &["empty.parquet", "no rows"],
    );

    // Negative and all-zero weights.
    let negw = p(d, "negw.parquet");
    write_parquet(
        &negw,
        vec![
            (
                "x",
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef,
            ),
            ("w", Arc::new(Float64Array::from(vec![1.0, -1.0, 1.0]))),
        ],
    );
    run(
        vec![
            "fit".into(),
            s(&negw).into(),
            "--k".into(),
            "1".into(),
            "--weight".into(),
            "w".into(),
            "--output".into(),
            o.into(),
        ],
        &["negw.parquet", "'w'", "1 negative", "row 1"],
    );
    let zerow = p(d, "zerow.parquet");
    write_parquet(
        &zerow,
        vec![
            (
                "x",
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef,
            ),
            ("w", Arc::new(Float64Array::from(vec![0.0, 0.0, 0.0]))),
        ],
    );
    run(
        vec![
            "fit".into(),
            s(&zerow).into(),
            "--k".into(),
            "1".into(),
            "--weight".into(),
            "w".into(),
            "--output".into(),
            o.into(),
        ],
        &["zerow.parquet", "zero on every row"],
    );

    // Files whose schemas differ in a used column (differences elsewhere are fine).
    let other = p(d, "other.parquet");
    write_parquet(
        &other,
        vec![
            ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("a", Arc::new(Float64Array::from(vec![1.0]))),
        ],
    );
    run(
        vec![
            "fit".into(),
            g.into(),
            s(&other).into(),
            "--k".into(),
            "2".into(),
            "--features".into(),
            "a,b".into(),
            "--output".into(),
            o.into(),
        ],
        &["other.parquet", "column 'b' is missing from 1 of 2 files"],
    );

    // Not Parquet, and truncated Parquet.
    let text = p(d, "text.parquet");
    std::fs::write(&text, b"customer_id,x\n1,2\n").unwrap();
    run(
        vec![
            "fit".into(),
            s(&text).into(),
            "--k".into(),
            "1".into(),
            "--output".into(),
            o.into(),
        ],
        &["text.parquet", "not a readable Parquet file"],
    );
    let trunc = p(d, "trunc.parquet");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    run(
        vec![
            "fit".into(),
            s(&trunc).into(),
            "--k".into(),
            "1".into(),
            "--output".into(),
            o.into(),
        ],
        &["trunc.parquet"],
    );
    // Truncated in the middle of the data but with an intact footer: damage the column chunks.
    let corrupt = p(d, "corrupt.parquet");
    let mut bytes = bytes.clone();
    let half = bytes.len() / 2;
    for b in bytes[8..half].iter_mut() {
        *b = 0xAB;
    }
    std::fs::write(&corrupt, &bytes).unwrap();
    run(
        vec![
            "fit".into(),
            s(&corrupt).into(),
            "--k".into(),
            "1".into(),
            "--features".into(),
            "a".into(),
            "--output".into(),
            o.into(),
        ],
        &["corrupt.parquet"],
    );

    // --init of the wrong shape and with missing columns.
    let init3 = p(d, "init3.parquet");
    write_parquet(
        &init3,
        vec![
            (
                "a",
                Arc::new(Float64Array::from(vec![0.0, 1.0, 2.0])) as ArrayRef,
            ),
            ("b", Arc::new(Float64Array::from(vec![0.0, 1.0, 2.0]))),
        ],
    );
    run(
        base(&["--k", "2", "--features", "a,b", "--init", s(&init3)]),
        &["init3.parquet", "3 rows", "--k is 2"],
    );
    run(
        base(&["--k", "3", "--features", "a,b,c", "--init", s(&init3)]),
        &["init3.parquet", "'c'"],
    );

    // Predict: missing and corrupt model files.
    run(
        vec![
            "predict".into(),
            g.into(),
            "--model".into(),
            s(&p(d, "nomodel.json")).into(),
            "--output".into(),
            o.into(),
        ],
        &["nomodel.json"],
    );
    let bad_model = p(d, "bad.json");
    std::fs::write(&bad_model, b"{\"format_version\": 1, \"features\": [\"a\"]").unwrap();
    run(
        vec![
            "predict".into(),
            g.into(),
            "--model".into(),
            s(&bad_model).into(),
            "--output".into(),
            o.into(),
        ],
        &["bad.json", "not a lakemeans model"],
    );
    let wrong_shape = p(d, "shape.json");
    std::fs::write(&wrong_shape, br#"{"format_version":1,"features":["a","b"],"scaling":{"method":"none","offset":[0,0],"scale":[1,1]},"k":2,"centroids":[[1,2],[3]],"centroids_input_units":[[1,2],[3,4]],"inertia":0,"rows":1,"iterations":1,"seed":0}"#).unwrap();
    run(
        vec![
            "predict".into(),
            g.into(),
            "--model".into(),
            s(&wrong_shape).into(),
            "--output".into(),
            o.into(),
        ],
        &["shape.json", "corrupt model"],
    );

    // Output into a directory that does not exist.
    run(
        vec![
            "fit".into(),
            g.into(),
            "--k".into(),
            "2".into(),
            "--output".into(),
            s(&p(d, "nodir/out.parquet")).into(),
        ],
        &["nodir"],
    );
    // Bad usage from the argument parser.
    run(
        vec!["fit".into(), g.into(), "--k".into(), "two".into()],
        &["two"],
    );
}

#[test]
fn isa_override_is_obeyed_or_refused_on_stderr() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/datasets/audience_sample.parquet"
    );
    let fit = |isa: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lakemeans"))
            .args(["fit", sample, "--k", "3", "--exclude", "label"])
            .args(["--id", "customer_id", "--device", "cpu", "--json"])
            .env("LAKEMEANS_HIDE_GPU", "1")
            .env("LAKEMEANS_ISA", isa)
            .output()
            .unwrap()
    };
    let adapter = |o: &std::process::Output| {
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        j["adapter"].as_str().unwrap().to_string()
    };
    let o = fit("portable");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        adapter(&o).ends_with("threads, portable"),
        "{}",
        adapter(&o)
    );
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let o = fit("sse9");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("LAKEMEANS_ISA=sse9 is not one of avx512, avx2, portable"),
        "{}",
        stderr(&o)
    );
    let a = adapter(&o);
    assert!(
        ["avx512", "avx2", "portable"]
            .iter()
            .any(|i| a.ends_with(i)),
        "{a}"
    );
}

/// What a first session trips over: negative counts, silent commands, keys that go missing,
/// ids clustered as features, and help that names flags a command does not have.
#[test]
fn first_session_rough_edges() {
    let dir = tmpdir();
    let d = dir.path();
    let (t, m, a) = (p(d, "t.parquet"), p(d, "m.json"), p(d, "a.parquet"));
    let o = lakemeans(&["fit", s(&t), "--k", "-1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("must be at least 1"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("-- -1"), "{}", stderr(&o));

    let gen_args = [
        "gen",
        "--rows",
        "300",
        "--features",
        "2",
        "--clusters",
        "3",
        "--output",
    ];
    let o = lakemeans(&[&gen_args[..], &[s(&t)]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("wrote 300 rows x 2 features in 3 clusters to"),
        "{}",
        stderr(&o)
    );
    let help = String::from_utf8_lossy(&lakemeans(&["gen", "--help"]).stdout).into_owned();
    assert!(help.contains("Rows to write") && help.contains("The Parquet file to write"));

    let o = lakemeans(&[
        "fit",
        s(&t),
        "--k",
        "3",
        "--exclude",
        "label",
        "--model",
        s(&m),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("column 'customer_id' looks like an identifier"),
        "{}",
        stderr(&o)
    );
    let o = lakemeans(&[
        "fit",
        s(&t),
        "--k",
        "3",
        "--exclude",
        "label",
        "--id",
        "customer_id",
    ]);
    assert!(
        !stderr(&o).contains("looks like an identifier"),
        "{}",
        stderr(&o)
    );

    let o = lakemeans(&["predict", s(&t), "--model", s(&m), "--output", s(&a)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no --id column given"),
        "{}",
        stderr(&o)
    );

    let o = lakemeans(&["profile", s(&t)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("give --model") && stderr(&o).contains("--assignments"),
        "{}",
        stderr(&o)
    );
    let help = String::from_utf8_lossy(&lakemeans(&["profile", "--help"]).stdout).into_owned();
    assert!(!help.contains("--profile"), "{help}");
    let o = lakemeans(&[
        "fit",
        s(&t),
        "--k",
        "2",
        "--describe",
        "label",
        "--output",
        s(&a),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("give --profile or --report"),
        "{}",
        stderr(&o)
    );
}

/// An integer column with a different value in every row is an identifier by its values,
/// whatever its name; one with few values is a feature. Only inferred features are checked.
#[test]
fn an_all_distinct_integer_column_is_flagged_as_an_id() {
    let dir = tmpdir();
    let t = p(dir.path(), "t.parquet");
    let n = 500;
    let v = blobs(n, 2, 3, 5);
    let col = |j: usize| v.iter().skip(j).step_by(2).copied().collect::<Vec<f32>>();
    write_parquet(
        &t,
        vec![
            (
                "ticket",
                Arc::new(Int64Array::from_iter_values(
                    (0..n as i64).map(|i| 7 * i + 3),
                )) as ArrayRef,
            ),
            (
                "grade",
                Arc::new(Int32Array::from_iter_values((0..n as i32).map(|i| i % 5))),
            ),
            ("a", Arc::new(Float32Array::from(col(0)))),
            ("b", Arc::new(Float32Array::from(col(1)))),
        ],
    );
    let o = lakemeans(&["fit", s(&t), "--k", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("integer column 'ticket' holds a different value in every row")
            && err.contains("--id ticket")
            && err.contains("--exclude ticket"),
        "{err}"
    );
    assert!(!err.contains("'grade'"), "{err}");
    for extra in [["--exclude", "ticket"], ["--features", "ticket,a"]] {
        let o = lakemeans(&["fit", s(&t), "--k", "3", extra[0], extra[1]]);
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(!err.contains("holds a different value"), "{err}");
    }
}
