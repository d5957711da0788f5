//! Lake tables: Hive partitions as columns, `--filter` pruning, and schemas that evolve
//! between files.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
use common::*;

/// The same rows as one flat file, for the countries `keep`, in the partitioned table's
/// (sorted path) order, with `country` and `month` as ordinary columns.
fn flat(path: &Path, keep: &[&str], keep_row: impl Fn(i64) -> bool) {
    let (mut ids, mut spend, mut visits, mut country, mut month) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (ci, c) in COUNTRIES.iter().enumerate() {
        if !keep.contains(c) {
            continue;
        }
        for m in 1..=2 {
            let (i, s, v) = rows(ci, m);
            for r in 0..ROWS {
                if !keep_row(v[r]) {
                    continue;
                }
                ids.push(i[r]);
                spend.push(s[r]);
                visits.push(v[r]);
                country.push(c.to_string());
                month.push(m as i64);
            }
        }
    }
    write_parquet(
        path,
        vec![
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("spend", Arc::new(Float64Array::from(spend))),
            ("visits", Arc::new(Int64Array::from(visits))),
            ("country", Arc::new(StringArray::from(country))),
            ("month", Arc::new(Int64Array::from(month))),
        ],
    );
}

fn fit(input: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["fit", input];
    args.extend(PARTITIONED_FIT);
    args.extend(["--k", "3"]);
    args.extend(["--json", "--output", s(out)]);
    args.extend_from_slice(extra);
    let o = lakemeans(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("error"), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn partition_columns_are_columns_and_evolving_schemas_read() {
    let dir = tmpdir();
    let root = p(dir.path(), "table");
    partitioned(&root);
    let out = p(dir.path(), "a.parquet");
    let profile = p(dir.path(), "profile.parquet");
    let j = fit(
        s(&root),
        &out,
        &["--compare-with", "country", "--profile", s(&profile)],
    );
    assert_eq!(j["rows"], 6 * ROWS);
    assert_eq!(j["files_read"], 6);
    assert!(j["ari"].is_number(), "{j}");
    let country = read_column_strings(&out, "country");
    assert_eq!(country.len(), 6 * ROWS);
    assert_eq!(country[0].as_deref(), Some("BE"));
    assert_eq!(country[6 * ROWS - 1].as_deref(), Some("NL"));
    // A partition column works as a weight (month is typed as an integer).
    fit(
        s(&root),
        &p(dir.path(), "w.parquet"),
        &["--weight", "month"],
    );
}

#[test]
fn a_partition_filter_reads_only_its_directories_and_matches_a_flat_file() {
    let dir = tmpdir();
    let root = p(dir.path(), "table");
    partitioned(&root);
    let (lake_out, flat_out) = (p(dir.path(), "lake.parquet"), p(dir.path(), "flat.parquet"));
    let (lake_c, flat_c) = (p(dir.path(), "lc.parquet"), p(dir.path(), "fc.parquet"));
    let j = fit(
        s(&root),
        &lake_out,
        &["--filter", "country in (NL,BE)", "--centroids", s(&lake_c)],
    );
    assert_eq!(j["files_read"], 4);
    assert_eq!(j["rows"], 4 * ROWS);
    let flat_in = p(dir.path(), "flat-in.parquet");
    flat(&flat_in, &["BE", "NL"], |_| true);
    let jf = fit(s(&flat_in), &flat_out, &["--centroids", s(&flat_c)]);
    assert_eq!(jf["files_read"], 1);
    assert_eq!(j["inertia"], jf["inertia"]);
    for col in ["id", "cluster", "distance"] {
        assert_eq!(
            read_column_f64(&lake_out, col),
            read_column_f64(&flat_out, col)
        );
    }
    assert_eq!(
        read_column_strings(&lake_out, "country"),
        read_column_strings(&flat_out, "country")
    );
    for col in ["size", "spend", "visits"] {
        assert_eq!(read_column_f64(&lake_c, col), read_column_f64(&flat_c, col));
    }
    // `=` and `!=` prune the same way.
    let j = fit(
        s(&root),
        &p(dir.path(), "x.parquet"),
        &["--filter", "country=DE"],
    );
    assert_eq!(j["files_read"], 2);
    let j = fit(
        s(&root),
        &p(dir.path(), "y.parquet"),
        &["--filter", "country!=DE", "--filter", "month=2"],
    );
    assert_eq!(j["files_read"], 2);
}

#[test]
fn a_filter_on_a_file_column_filters_rows_exactly() {
    let dir = tmpdir();
    let root = p(dir.path(), "table");
    partitioned(&root);
    let (lake_out, flat_out) = (p(dir.path(), "lake.parquet"), p(dir.path(), "flat.parquet"));
    let j = fit(s(&root), &lake_out, &["--filter", "visits != 0"]);
    let flat_in = p(dir.path(), "flat-in.parquet");
    flat(&flat_in, &COUNTRIES, |v| v != 0);
    let jf = fit(s(&flat_in), &flat_out, &[]);
    assert_eq!(j["rows"], jf["rows"]);
    assert!(
        j["rows"].as_u64().unwrap() < 6 * ROWS as u64,
        "nothing was filtered"
    );
    for col in ["id", "cluster", "distance"] {
        assert_eq!(
            read_column_f64(&lake_out, col),
            read_column_f64(&flat_out, col)
        );
    }
}

#[test]
fn a_used_column_missing_from_some_files_names_them() {
    let dir = tmpdir();
    let root = p(dir.path(), "table");
    partitioned(&root);
    let o = lakemeans(&[
        "fit",
        s(&root),
        "--k",
        "2",
        "--features",
        "spend,visits",
        "--id",
        "tier",
        "--device",
        "cpu",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("column 'tier' is missing from 3 of 6 files"),
        "{e}"
    );
    assert!(e.contains("month=1"), "{e}");
    // Unused, unreconciled columns do not matter; by default only columns in every file are
    // features (tier is a string anyway; age is int64 in some files and float64 in others).
    let o = lakemeans(&["fit", s(&root), "--k", "2", "--device", "cpu", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        j["features"],
        serde_json::json!(["id", "spend", "visits", "age"])
    );
}

#[test]
fn a_null_partition_is_null_and_filters_fail_clearly() {
    let dir = tmpdir();
    let root = p(dir.path(), "t");
    for c in ["BE", "NL", "__HIVE_DEFAULT_PARTITION__"] {
        let d = root.join(format!("country={c}"));
        std::fs::create_dir_all(&d).unwrap();
        let (ids, spend, visits) = rows(0, 1);
        write_parquet(
            &d.join("p.parquet"),
            vec![
                ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
                ("spend", Arc::new(Float64Array::from(spend))),
                ("visits", Arc::new(Int64Array::from(visits))),
            ],
        );
    }
    let out = p(dir.path(), "a.parquet");
    fit(s(&root), &out, &[]);
    let country = read_column_strings(&out, "country");
    assert_eq!(country[0].as_deref(), Some("BE"));
    assert_eq!(country[ROWS].as_deref(), Some("NL"));
    assert_eq!(country[2 * ROWS], None);
    // A null matches neither = nor !=.
    let j = fit(
        s(&root),
        &p(dir.path(), "b.parquet"),
        &["--filter", "country!=NL"],
    );
    assert_eq!(j["files_read"], 1);
    let o = lakemeans(&["fit", s(&root), "--k", "2", "--filter", "country=FR"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("matches no partition"),
        "{}",
        stderr(&o)
    );
    let o = lakemeans(&["fit", s(&root), "--k", "2", "--filter", "nosuch=1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no column 'nosuch'"), "{}", stderr(&o));
}

#[test]
fn a_local_file_reads_only_the_projected_columns() {
    let dir = tmpdir();
    let path = p(dir.path(), "wide.parquet");
    wide(&path, 100_000, 25_000);
    let two = ["c03", "c17"];
    let need = cost(&path, &two);
    let o = lakemeans(&[
        "fit",
        s(&path),
        "--k",
        "3",
        "--device",
        "cpu",
        "--json",
        "--features",
        &two.join(","),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let read = j["bytes_read"].as_u64().unwrap();
    eprintln!(
        "local, two columns: bytes_read {read} of a {}-byte file",
        need.size
    );
    assert!(read >= need.columns + need.footer, "{read}");
    assert!(
        (read as f64) < 0.4 * need.size as f64,
        "{read} of {}",
        need.size
    );
}
