//! Outputs never clobber inputs or each other: every refusal exits 2, says why, and leaves the
//! input's bytes as they were.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array};
use common::*;

fn table(path: &Path, n: usize) {
    let v = blobs(n, 2, 3, 5);
    write_parquet(
        path,
        vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
            ),
            (
                "x",
                Arc::new(Float64Array::from_iter_values(
                    v.iter().step_by(2).map(|&x| x as f64),
                )),
            ),
            (
                "y",
                Arc::new(Float64Array::from_iter_values(
                    v.iter().skip(1).step_by(2).map(|&x| x as f64),
                )),
            ),
        ],
    );
}

/// Runs the binary in `cwd`, so relative paths can be tested.
fn lakemeans_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lakemeans"))
        .args(args)
        .current_dir(cwd)
        .env("LAKEMEANS_HIDE_GPU", "1")
        .output()
        .expect("run lakemeans")
}

/// Asserts exit 2 with `needle` in the message, and `input` byte for byte as `before`.
fn refused(o: &Output, needle: &str, input: &Path, before: &[u8]) {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    assert!(
        stderr(o).contains(needle),
        "expected '{needle}' in: {}",
        stderr(o)
    );
    assert_eq!(std::fs::read(input).unwrap(), before, "the input changed");
}

fn fit_args<'a>(inputs: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["fit"];
    v.extend_from_slice(inputs);
    v.extend_from_slice(&["--k", "3", "--device", "cpu"]);
    v.extend_from_slice(extra);
    v
}

#[test]
fn output_that_is_the_input_is_refused() {
    let dir = tmpdir();
    let input = p(dir.path(), "same.parquet");
    table(&input, 200);
    let before = std::fs::read(&input).unwrap();
    let o = lakemeans(&fit_args(&[s(&input)], &["--output", s(&input)]));
    refused(&o, "is an input", &input, &before);
    // The same file spelled differently is still the same file.
    let o = lakemeans_in(
        dir.path(),
        &fit_args(&["same.parquet"], &["--output", "./same.parquet"]),
    );
    refused(&o, "is an input", &input, &before);
    // Every output flag is checked, not only --output.
    for flag in ["--centroids", "--model", "--profile", "--report"] {
        let o = lakemeans_in(
            dir.path(),
            &fit_args(&["./same.parquet"], &[flag, "same.parquet"]),
        );
        refused(&o, "is an input", &input, &before);
    }
}

#[test]
fn two_outputs_on_one_path_are_refused() {
    let dir = tmpdir();
    let input = p(dir.path(), "in.parquet");
    table(&input, 200);
    let before = std::fs::read(&input).unwrap();
    let outdir = p(dir.path(), "o");
    std::fs::create_dir(&outdir).unwrap();
    let target = p(&outdir, "a.parquet");
    for other in ["--model", "--centroids", "--profile"] {
        let o = lakemeans(&fit_args(
            &[s(&input)],
            &["--output", s(&target), other, s(&target)],
        ));
        refused(&o, "both write", &input, &before);
    }
    assert!(listing(&outdir).is_empty(), "something was written");
    // The profile's JSON twin counts as an output too.
    let o = lakemeans(&fit_args(
        &[s(&input)],
        &[
            "--profile",
            s(&p(&outdir, "p.parquet")),
            "--model",
            s(&p(&outdir, "p.json")),
        ],
    ));
    refused(&o, "both write", &input, &before);
}

#[test]
fn an_input_reached_twice_is_refused() {
    let dir = tmpdir();
    let clean = p(dir.path(), "clean");
    let nl = p(&clean, "country=NL");
    std::fs::create_dir_all(&nl).unwrap();
    let file = p(&nl, "part-0.parquet");
    table(&file, 200);
    let before = std::fs::read(&file).unwrap();
    let o = lakemeans(&fit_args(&[s(&file), s(&file)], &[]));
    refused(&o, "are the same file", &file, &before);
    let o = lakemeans(&fit_args(&[s(&clean), s(&nl)], &[]));
    refused(&o, "are the same file", &file, &before);
    #[cfg(unix)]
    {
        let link = p(dir.path(), "link.parquet");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let o = lakemeans(&fit_args(&[s(&file), s(&link)], &[]));
        refused(&o, "are the same file", &file, &before);
    }
}

#[test]
fn an_output_inside_an_input_directory_is_refused() {
    let dir = tmpdir();
    let table_dir = p(dir.path(), "table");
    std::fs::create_dir(&table_dir).unwrap();
    let file = p(&table_dir, "part-0.parquet");
    table(&file, 200);
    let before = std::fs::read(&file).unwrap();
    let out = p(&table_dir, "assignments.parquet");
    let o = lakemeans(&fit_args(&[s(&table_dir)], &["--output", s(&out)]));
    refused(&o, "lies inside input directory", &file, &before);
    assert_eq!(listing(&table_dir), vec!["part-0.parquet"]);
}

#[test]
fn other_commands_refuse_their_inputs_as_outputs() {
    let dir = tmpdir();
    let input = p(dir.path(), "in.parquet");
    let model = p(dir.path(), "m.json");
    let assign = p(dir.path(), "a.parquet");
    table(&input, 200);
    let o = lakemeans(&fit_args(
        &[s(&input)],
        &["--model", s(&model), "--output", s(&assign)],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let (input_bytes, model_bytes, assign_bytes) = (
        std::fs::read(&input).unwrap(),
        std::fs::read(&model).unwrap(),
        std::fs::read(&assign).unwrap(),
    );
    let o = lakemeans(&[
        "predict",
        s(&input),
        "--model",
        s(&model),
        "--output",
        s(&input),
    ]);
    refused(&o, "is an input", &input, &input_bytes);
    let o = lakemeans(&[
        "predict",
        s(&input),
        "--model",
        s(&model),
        "--output",
        s(&model),
    ]);
    refused(&o, "the --model input", &model, &model_bytes);
    let o = lakemeans(&[
        "profile",
        s(&input),
        "--assignments",
        s(&assign),
        "--output",
        s(&assign),
    ]);
    refused(&o, "the --assignments input", &assign, &assign_bytes);
    let o = lakemeans(&[
        "refit",
        s(&input),
        "--model",
        s(&model),
        "--output",
        s(&p(dir.path(), "new.parquet")),
        "--model-out",
        s(&model),
    ]);
    refused(&o, "the --model input", &model, &model_bytes);
    let o = lakemeans(&["sweep", s(&input), "--k", "2..3", "--report", s(&input)]);
    refused(&o, "is an input", &input, &input_bytes);
}

#[test]
fn an_unwritable_output_directory_is_a_usage_error() {
    let dir = tmpdir();
    let input = p(dir.path(), "in.parquet");
    table(&input, 200);
    let before = std::fs::read(&input).unwrap();
    let locked = p(dir.path(), "locked");
    std::fs::create_dir(&locked).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    // Root writes anywhere; sysfs refuses new files even to root.
    let target = if tempfile::tempfile_in(&locked).is_err() {
        p(&locked, "a.parquet")
    } else if Path::new("/sys/kernel").is_dir() {
        std::path::PathBuf::from("/sys/kernel/a.parquet")
    } else {
        return;
    };
    let o = lakemeans(&fit_args(&[s(&input)], &["--output", s(&target)]));
    refused(&o, "cannot write in directory", &input, &before);
}
