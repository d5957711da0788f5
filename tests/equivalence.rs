//! lakemeans against scikit-learn's Lloyd from the same init (fixture made offline by
//! tests/fixtures/make_sklearn_fixture.py), on the CPU and on the GPU, end to end through the CLI.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check_device(device: &str) {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("sklearn_lloyd.json")).unwrap()).unwrap();
    let sk_labels: Vec<f64> = expected["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let sk_inertia = expected["inertia"].as_f64().unwrap();
    let dir = tmpdir();
    let (out, model, pred) = (
        p(dir.path(), "a.parquet"),
        p(dir.path(), "m.json"),
        p(dir.path(), "p.parquet"),
    );
    let data = fixture("sklearn_lloyd.parquet");
    let init = fixture("sklearn_lloyd_init.parquet");
    let o = Command::new(env!("CARGO_BIN_EXE_lakemeans"))
        .args([
            "fit",
            s(&data),
            "--k",
            "32",
            "--init",
            s(&init),
            "--scale",
            "none",
            "--tol",
            "0",
            "--max-iter",
            "20",
        ])
        .args([
            "--device",
            device,
            "--id",
            "customer_id",
            "--output",
            s(&out),
            "--model",
            s(&model),
            "--json",
        ])
        .env_remove("LAKEMEANS_HIDE_GPU")
        .output()
        .unwrap();
    assert!(o.status.success(), "{device}: {}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["device"], device);
    let inertia = j["inertia"].as_f64().unwrap();
    let rel = (inertia - sk_inertia).abs() / sk_inertia;
    assert!(
        rel <= 1e-4,
        "{device}: inertia {inertia} vs scikit-learn {sk_inertia} ({rel:e} relative)"
    );
    let labels = read_column_f64(&out, "cluster");
    let same = labels
        .iter()
        .zip(&sk_labels)
        .filter(|(a, b)| a == b)
        .count() as f64
        / labels.len() as f64;
    assert!(
        same >= 0.999,
        "{device}: only {same} of labels equal scikit-learn's"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_lakemeans"))
        .args([
            "predict",
            s(&data),
            "--model",
            s(&model),
            "--output",
            s(&pred),
            "--device",
            device,
        ])
        .env_remove("LAKEMEANS_HIDE_GPU")
        .output()
        .unwrap();
    assert!(o.status.success(), "{device}: {}", stderr(&o));
    assert_eq!(
        read_column_f64(&pred, "cluster"),
        labels,
        "{device}: predict differs from fit"
    );
}

#[test]
fn cpu_matches_scikit_learn_from_the_same_init() {
    check_device("cpu");
}

#[test]
fn gpu_matches_scikit_learn_from_the_same_init() {
    check_device("gpu");
}
