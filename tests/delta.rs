//! Delta Lake tables read as their snapshots: the rows lakemeans reads are the rows the
//! deltalake package returns (tests/fixtures/make_delta_fixture.py writes both).

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/delta")
        .join(name)
}

fn expected(version: &str) -> (Vec<f64>, Vec<Option<String>>) {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let v = &j["history"][version];
    let ids = v["id"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let countries = v["country"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect();
    (ids, countries)
}

/// The ids and countries lakemeans reads from `table`, sorted by id.
fn read(table: &Path, extra: &[&str]) -> (Vec<f64>, Vec<Option<String>>, serde_json::Value) {
    let dir = tmpdir();
    let out = p(dir.path(), "a.parquet");
    let mut args = vec!["fit", s(table), "--k", "2"];
    args.extend(PARTITIONED_FIT);
    args.extend(["--json", "--output", s(&out)]);
    args.extend_from_slice(extra);
    let o = lakemeans(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids = read_column_f64(&out, "id");
    let countries = read_column_strings(&out, "country");
    let mut rows: Vec<(f64, Option<String>)> = ids.into_iter().zip(countries).collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ids, countries) = rows.into_iter().unzip();
    (ids, countries, j)
}

#[test]
fn the_latest_and_older_snapshots_match_deltalake() {
    let table = fixture("history");
    let (ids, countries, j) = read(&table, &[]);
    assert_eq!((ids, countries), expected("6"));
    // The overwrite at version 4 left only its own files and the later appends' live.
    assert_eq!(j["files_read"], 9, "{j}");
    for v in ["1", "2", "3"] {
        let (ids, countries, _) = read(&table, &["--table-version", v]);
        assert_eq!((ids, countries), expected(v), "version {v}");
    }
    let (ids, _, _) = read(&table, &["--table-version", "2", "--filter", "country=NL"]);
    let (want, wc) = expected("2");
    let want: Vec<f64> = want
        .into_iter()
        .zip(wc)
        .filter(|(_, c)| c.as_deref() == Some("NL"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ids, want);
}

#[test]
fn the_checkpoint_stands_in_for_the_commits_before_it() {
    let dir = tmpdir();
    let copy = p(dir.path(), "t");
    copy_dir(&fixture("history"), &copy);
    for v in 0..5 {
        std::fs::remove_file(copy.join(format!("_delta_log/{v:020}.json"))).unwrap();
    }
    let (ids, countries, _) = read(&copy, &[]);
    assert_eq!((ids, countries), expected("6"));
    let o = lakemeans(&["fit", s(&copy), "--k", "2", "--table-version", "3"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("commit 0 is missing"), "{}", stderr(&o));
}

#[test]
fn unsupported_features_and_versions_are_refused() {
    let o = lakemeans(&["fit", s(&fixture("dv")), "--k", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("deletion vectors"), "{}", stderr(&o));
    let o = lakemeans(&[
        "fit",
        s(&fixture("history")),
        "--k",
        "2",
        "--table-version",
        "99",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("has versions up to 6"),
        "{}",
        stderr(&o)
    );
    let dir = tmpdir();
    let plain = p(dir.path(), "plain.parquet");
    copy_dir(&fixture("history"), &p(dir.path(), "t"));
    let first = std::fs::read_dir(p(dir.path(), "t/country=NL"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(first, &plain).unwrap();
    let o = lakemeans(&["fit", s(&plain), "--k", "2", "--table-version", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("needs a Delta table"), "{}", stderr(&o));
}

#[test]
fn an_iceberg_table_is_refused_clearly() {
    let dir = tmpdir();
    let t = p(dir.path(), "ice");
    std::fs::create_dir_all(t.join("metadata")).unwrap();
    std::fs::create_dir_all(t.join("data")).unwrap();
    std::fs::write(t.join("metadata/v1.metadata.json"), "{}").unwrap();
    let o = lakemeans(&["fit", s(&t), "--k", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("Iceberg"), "{}", stderr(&o));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
