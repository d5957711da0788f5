//! The GPU through the command line: reproducible output files, and what happens without an
//! adapter. These run on whatever adapter exists (lavapipe in CI) and fail if there is none.

mod common;

use std::process::{Command, Output};

use common::*;

fn run(args: &[&str], hide: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lakemeans"));
    c.args(args);
    if hide {
        c.env("LAKEMEANS_HIDE_GPU", "1");
    } else {
        c.env_remove("LAKEMEANS_HIDE_GPU");
    }
    c.output().unwrap()
}

#[test]
fn two_gpu_fits_write_identical_files() {
    let dir = tmpdir();
    let input = p(dir.path(), "in.parquet");
    let o = run(
        &[
            "gen",
            "--rows",
            "20000",
            "--features",
            "12",
            "--clusters",
            "10",
            "--seed",
            "5",
            "--output",
            s(&input),
        ],
        true,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut outs = Vec::new();
    for i in 0..2 {
        let (a, c, m) = (
            p(dir.path(), &format!("a{i}.parquet")),
            p(dir.path(), &format!("c{i}.parquet")),
            p(dir.path(), &format!("m{i}.json")),
        );
        let o = run(
            &[
                "fit",
                s(&input),
                "--k",
                "10",
                "--n-init",
                "2",
                "--id",
                "customer_id",
                "--exclude",
                "label",
                "--device",
                "gpu",
                "--output",
                s(&a),
                "--centroids",
                s(&c),
                "--model",
                s(&m),
                "--json",
            ],
            false,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["device"], "gpu");
        assert!(!j["adapter"].as_str().unwrap().is_empty());
        outs.push([
            std::fs::read(a).unwrap(),
            std::fs::read(c).unwrap(),
            std::fs::read(m).unwrap(),
        ]);
    }
    assert!(outs[0] == outs[1], "two GPU runs wrote different files");
}

#[test]
fn without_an_adapter_gpu_exits_2_and_auto_falls_back() {
    let dir = tmpdir();
    let input = p(dir.path(), "in.parquet");
    let out = p(dir.path(), "a.parquet");
    let o = run(
        &[
            "gen",
            "--rows",
            "500",
            "--features",
            "3",
            "--clusters",
            "3",
            "--output",
            s(&input),
        ],
        true,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &[
            "fit",
            s(&input),
            "--k",
            "3",
            "--device",
            "gpu",
            "--output",
            s(&out),
        ],
        true,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no GPU adapter"), "{}", stderr(&o));
    assert!(!out.exists(), "a failed run left its output");
    let o = run(
        &[
            "fit",
            s(&input),
            "--k",
            "3",
            "--device",
            "auto",
            "--output",
            s(&out),
            "--json",
        ],
        true,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("running on the CPU"), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["device"], "cpu");
}

#[test]
fn devices_lists_an_adapter_with_its_limits() {
    let o = run(&["devices", "--json"], false);
    assert!(o.status.success(), "{}", stderr(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let first = &list.as_array().expect("a JSON list")[0];
    assert!(first["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
    let o = run(&["devices", "--json"], true);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
}

/// Adapter probing prints nothing that looks like an error on a machine without a Wayland
/// session, and `--device auto` says why it skips a software adapter.
#[test]
fn probing_is_quiet_and_honest_without_a_runtime_dir() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/datasets/audience_sample.parquet"
    );
    let quiet = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_lakemeans"))
            .args(args)
            .env_remove("LAKEMEANS_HIDE_GPU")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("NODEVICE_SELECT")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            !err.lines().any(|l| l.starts_with("error:")),
            "stray error line:\n{err}"
        );
        (String::from_utf8_lossy(&o.stdout).into_owned(), err)
    };
    let (devices, _) = quiet(&["devices", "--json"]);
    let (_, fit) = quiet(&["fit", sample, "--k", "4", "--max-iter", "5"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&devices).unwrap();
    let software_only = !list.is_empty() && list.iter().all(|a| a["device_type"] == "cpu");
    if software_only {
        assert!(
            fit.contains("only a software adapter (") || fit.contains("only software adapters ("),
            "{fit}"
        );
        assert!(fit.contains("running on the CPU, which is faster"), "{fit}");
        assert!(!fit.contains("no GPU adapter found"), "{fit}");
    }
}
