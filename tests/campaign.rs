//! `export` and `refit` end to end, against references computed here: a SHA-256 written from
//! FIPS 180-4 in this file (itself checked against Python's hashlib on a committed fixture),
//! the assignments read back with Arrow, and joins and counts done by hand.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use common::*;
use lakemeans::rng::Rng;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

// ---------------------------------------------------------------- an independent SHA-256

/// SHA-256 straight from FIPS 180-4, as lowercase hex.
fn sha256_ref(msg: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut m = msg.to_vec();
    m.push(0x80);
    while m.len() % 64 != 56 {
        m.push(0);
    }
    m.extend_from_slice(&((msg.len() as u64) * 8).to_be_bytes());
    for block in m.chunks_exact(64) {
        let mut w = [0u32; 64];
        for t in 0..16 {
            w[t] = u32::from_be_bytes(block[4 * t..4 * t + 4].try_into().unwrap());
        }
        for t in 16..64 {
            let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
            let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16]
                .wrapping_add(s0)
                .wrapping_add(w[t - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for t in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[t])
                .wrapping_add(w[t]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

/// Python's `email.strip().lower()` for the strings used here (ASCII whitespace).
fn py_normalise(e: &str) -> String {
    e.trim().to_lowercase()
}

#[test]
fn reference_sha256_agrees_with_python_hashlib() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/email_sha256.json"),
    )
    .unwrap();
    let pairs: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(pairs.len(), 10);
    for p in pairs {
        let raw = p["raw"].as_str().unwrap();
        assert_eq!(
            sha256_ref(py_normalise(raw).as_bytes()),
            p["sha256"].as_str().unwrap(),
            "{raw:?}"
        );
    }
    assert_eq!(
        sha256_ref(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

// ---------------------------------------------------------------- helpers

/// Reads named columns of a Parquet file as text (nulls as None), integers in decimal.
fn read_text_columns(path: &Path, names: &[&str]) -> Vec<Vec<Option<String>>> {
    let f = std::fs::File::open(path).unwrap();
    let r = ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let mut out = vec![Vec::new(); names.len()];
    for b in r {
        let b = b.unwrap();
        for (j, n) in names.iter().enumerate() {
            let c = arrow_cast::cast(b.column_by_name(n).unwrap(), &arrow_schema::DataType::Utf8)
                .unwrap();
            let s = c.as_string::<i32>();
            out[j].extend((0..s.len()).map(|i| s.is_valid(i).then(|| s.value(i).to_string())));
        }
    }
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Rows of a CSV file, header first (RFC 4180 quoting; no line breaks inside cells here).
fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'));
    text.lines()
        .map(|line| {
            let (mut cells, mut cell, mut quoted) = (Vec::new(), String::new(), false);
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match (c, quoted) {
                    ('"', true) if chars.peek() == Some(&'"') => {
                        cell.push('"');
                        chars.next();
                    }
                    ('"', _) => quoted = !quoted,
                    (',', false) => cells.push(std::mem::take(&mut cell)),
                    (c, _) => cell.push(c),
                }
            }
            cells.push(cell);
            cells
        })
        .collect()
}

/// Customers in clusters of very unequal sizes, with messy emails: mixed case, spaces around,
/// about 5% nulls and 1% blank. Returns the table's path.
fn messy_customers(dir: &Path, n: usize) -> PathBuf {
    let shares = [0.30, 0.25, 0.20, 0.12, 0.08, 0.05];
    let mut rng = Rng::new(2024);
    let d = 4;
    let centres: Vec<f64> = (0..shares.len() * d)
        .map(|_| rng.normal_pair().0 * 8.0)
        .collect();
    let mut cols: Vec<Vec<f64>> = (0..d).map(|_| Vec::with_capacity(n)).collect();
    let mut emails: Vec<Option<String>> = Vec::with_capacity(n);
    for i in 0..n {
        let u = rng.uniform();
        let mut acc = 0.0;
        let mut c = shares.len() - 1;
        for (j, s) in shares.iter().enumerate() {
            acc += s;
            if u < acc {
                c = j;
                break;
            }
        }
        for (j, col) in cols.iter_mut().enumerate() {
            col.push(centres[c * d + j] + rng.normal_pair().0);
        }
        let r = rng.uniform();
        emails.push(if r < 0.05 {
            None
        } else if r < 0.06 {
            Some("   ".to_string())
        } else {
            let base = format!("Customer.{i}@Example{}.COM", i % 7);
            let pad = ["", " ", "  ", "\t"][rng.below(4) as usize];
            let base = if rng.uniform() < 0.5 {
                base
            } else {
                base.to_lowercase()
            };
            Some(format!(
                "{pad}{base}{}",
                ["", " ", "\t "][rng.below(3) as usize]
            ))
        });
    }
    let path = dir.join("customers.parquet");
    let mut table: Vec<(&str, ArrayRef)> = vec![
        (
            "customer_id",
            Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| 500_000 + i),
            )),
        ),
        ("email", Arc::new(StringArray::from(emails))),
    ];
    let names = ["f0", "f1", "f2", "f3"];
    for (name, c) in names.iter().zip(cols) {
        table.push((name, Arc::new(Float64Array::from(c))));
    }
    write_parquet(&path, table);
    path
}

fn ok(args: &[&str]) -> std::process::Output {
    let o = lakemeans(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    o
}

fn bad(args: &[&str], needles: &[&str]) {
    let o = lakemeans(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    let e = stderr(&o);
    for n in needles {
        assert!(e.contains(n), "{args:?}: stderr lacks {n:?}: {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
}

// ---------------------------------------------------------------- export

#[test]
fn export_hashes_every_row_of_its_segment_and_skips_small_ones() {
    let dir = tmpdir();
    let input = messy_customers(dir.path(), 50_000);
    let assign = dir.path().join("assignments.parquet");
    ok(&[
        "fit",
        s(&input),
        "--k",
        "6",
        "--id",
        "customer_id",
        "--id",
        "email",
        "--output",
        s(&assign),
    ]);
    let out = dir.path().join("audiences");
    ok(&[
        "export",
        s(&assign),
        "--identifier",
        "email:email",
        "--min-size",
        "6000",
        "--out-dir",
        s(&out),
    ]);

    // The reference: every assignments row, grouped by cluster, minus null and blank emails.
    let cols = read_text_columns(&assign, &["email", "cluster"]);
    let mut expected: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut dropped = 0;
    for (e, c) in cols[0].iter().zip(&cols[1]) {
        let c: u32 = c.as_ref().unwrap().parse().unwrap();
        let entry = expected.entry(c).or_default();
        match e.as_deref().map(py_normalise) {
            Some(n) if !n.is_empty() => entry.push(sha256_ref(n.as_bytes())),
            _ => dropped += 1,
        }
    }
    assert!(dropped > 2000, "the table should have nulls and blanks");
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["dropped_identifiers"].as_u64(), Some(dropped));
    let written: Vec<&Value> = m["segments"].as_array().unwrap().iter().collect();
    let skipped: Vec<&Value> = m["skipped"].as_array().unwrap().iter().collect();
    assert_eq!(written.len() + skipped.len(), expected.len());
    assert!(!skipped.is_empty() && !written.is_empty());
    for sk in &skipped {
        let id = sk["id"].as_u64().unwrap() as u32;
        let rows = expected[&id].len();
        assert!(rows < 6000, "segment {id} has {rows} rows but was skipped");
        assert_eq!(sk["rows"].as_u64(), Some(rows as u64));
        assert!(sk["reason"].as_str().unwrap().contains("6000"));
    }
    let mut files = vec!["manifest.json".to_string()];
    for seg in &written {
        let id = seg["id"].as_u64().unwrap() as u32;
        let want = &expected[&id];
        assert!(want.len() >= 6000);
        let file = seg["file"].as_str().unwrap();
        assert!(file.starts_with(&format!("segment-{id}-")) && file.ends_with(".csv"));
        files.push(file.to_string());
        let bytes = std::fs::read(out.join(file)).unwrap();
        assert_eq!(seg["sha256"].as_str().unwrap(), sha256_ref(&bytes));
        let rows = read_csv(&out.join(file));
        assert_eq!(rows[0], ["segment", "segment_name", "email"]);
        let name = seg["name"].as_str().unwrap();
        let got: Vec<String> = rows[1..]
            .iter()
            .map(|r| {
                assert_eq!(r[0], id.to_string());
                assert_eq!(r[1], name);
                r[2].clone()
            })
            .collect();
        assert_eq!(&got, want, "segment {id}");
        assert_eq!(seg["rows"].as_u64(), Some(want.len() as u64));
    }
    files.sort();
    assert_eq!(listing(&out), files);
    // Nothing else appeared beside the directory.
    assert_eq!(
        listing(dir.path()),
        ["assignments.parquet", "audiences", "customers.parquet"]
    );
}

#[test]
fn export_layouts_follow_the_platforms() {
    let dir = tmpdir();
    let assign = dir.path().join("a.parquet");
    write_parquet(
        &assign,
        vec![
            (
                "email",
                Arc::new(StringArray::from(vec![
                    Some(" A@X.com"),
                    None,
                    Some("b@x.com"),
                    Some(""),
                ])) as ArrayRef,
            ),
            (
                "phone",
                Arc::new(StringArray::from(vec![
                    Some("020 7946 0018"),
                    Some("+1 (650) 555-1212"),
                    Some("not a number"),
                    None,
                ])),
            ),
            (
                "device",
                Arc::new(StringArray::from(vec![
                    Some("AECE52E7-03EE-455A-B3C4-E57283966239"),
                    None,
                    None,
                    None,
                ])),
            ),
            (
                "cluster",
                Arc::new(arrow_array::Int32Array::from(vec![0, 0, 1, 1])),
            ),
        ],
    );
    // Meta, Parquet: digits-only phones, lowercase headers.
    let meta = dir.path().join("meta");
    ok(&[
        "export",
        s(&assign),
        "--identifier",
        "email:email",
        "--identifier",
        "phone:phone",
        "--platform",
        "meta",
        "--format",
        "parquet",
        "--default-country",
        "GB",
        "--min-size",
        "0",
        "--out-dir",
        s(&meta),
    ]);
    let m = read_json(&meta.join("manifest.json"));
    // Row 3 has neither a usable email nor phone; row 2's phone is invalid but its email counts.
    assert_eq!(m["dropped_identifiers"], 1);
    assert_eq!(m["identifiers"][1]["invalid"], 1);
    let f0 = meta.join(m["segments"][0]["file"].as_str().unwrap());
    let c = read_text_columns(&f0, &["email", "phone"]);
    assert_eq!(
        c[0],
        vec![Some(sha256_ref(b"a@x.com")), None],
        "null email stays empty, never the hash of \"\""
    );
    assert_eq!(
        c[1],
        vec![
            Some(sha256_ref(b"442079460018")),
            Some(sha256_ref(b"16505551212"))
        ]
    );
    let f1 = meta.join(m["segments"][1]["file"].as_str().unwrap());
    assert_eq!(
        read_text_columns(&f1, &["email", "phone"]),
        vec![vec![Some(sha256_ref(b"b@x.com"))], vec![None]]
    );
    // Google, CSV: E.164 with '+', template headers, no segment columns.
    let google = dir.path().join("google");
    ok(&[
        "export",
        s(&assign),
        "--identifier",
        "phone:phone",
        "--platform",
        "google",
        "--default-country",
        "gb",
        "--min-size",
        "1",
        "--out-dir",
        s(&google),
    ]);
    let m = read_json(&google.join("manifest.json"));
    assert_eq!(m["min_size"], 1);
    assert_eq!(m["segments"].as_array().unwrap().len(), 1);
    assert_eq!(m["skipped"][0]["id"], 1);
    let rows = read_csv(&google.join(m["segments"][0]["file"].as_str().unwrap()));
    assert_eq!(
        rows,
        vec![
            vec!["Phone".to_string()],
            vec![sha256_ref(b"+442079460018")],
            vec![sha256_ref(b"+16505551212")]
        ]
    );
    // LinkedIn: raw ids lowercased under googleaid; its 300-row minimum skips both segments.
    let li = dir.path().join("li");
    ok(&[
        "export",
        s(&assign),
        "--identifier",
        "device:raw",
        "--platform",
        "linkedin",
        "--out-dir",
        s(&li),
    ]);
    let m = read_json(&li.join("manifest.json"));
    assert_eq!(m["min_size"], 300);
    assert_eq!(m["segments"].as_array().unwrap().len(), 0);
    let li2 = dir.path().join("li2");
    ok(&[
        "export",
        s(&assign),
        "--identifier",
        "device:raw",
        "--platform",
        "linkedin",
        "--segments",
        "0",
        "--min-size",
        "0",
        "--out-dir",
        s(&li2),
    ]);
    let m = read_json(&li2.join("manifest.json"));
    assert_eq!(
        m["skipped"][0]["reason"].as_str(),
        Some("not selected by --segments")
    );
    let rows = read_csv(&li2.join(m["segments"][0]["file"].as_str().unwrap()));
    assert_eq!(
        rows,
        vec![
            vec!["googleaid".to_string()],
            vec!["aece52e7-03ee-455a-b3c4-e57283966239".to_string()]
        ]
    );
}

#[test]
fn export_names_come_from_the_profile() {
    let dir = tmpdir();
    let input = messy_customers(dir.path(), 3000);
    let (assign, model) = (dir.path().join("a.parquet"), dir.path().join("model.json"));
    ok(&[
        "fit",
        s(&input),
        "--k",
        "3",
        "--id",
        "email",
        "--exclude",
        "customer_id",
        "--output",
        s(&assign),
        "--model",
        s(&model),
    ]);
    let o = ok(&["profile", s(&input), "--model", s(&model), "--json"]);
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    let out = dir.path().join("out");
    ok(&[
        "export",
        s(&assign),
        "--identifier",
        "email:email",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--out-dir",
        s(&out),
    ]);
    let m = read_json(&out.join("manifest.json"));
    for seg in m["segments"].as_array().unwrap() {
        let id = seg["id"].as_u64().unwrap() as usize;
        let want = p["clusters"][id]["description"].as_str().unwrap();
        assert_eq!(seg["name"].as_str(), Some(want));
        let rows = read_csv(&out.join(seg["file"].as_str().unwrap()));
        assert_eq!(rows[1][1], want);
    }
    // --names overrides.
    let names = dir.path().join("names.json");
    std::fs::write(&names, r#"{"1": "Big spenders, EU"}"#).unwrap();
    let out2 = dir.path().join("out2");
    ok(&[
        "export",
        s(&assign),
        "--identifier",
        "email:email",
        "--names",
        s(&names),
        "--out-dir",
        s(&out2),
    ]);
    let m = read_json(&out2.join("manifest.json"));
    let seg1 = m["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == 1)
        .unwrap();
    assert_eq!(seg1["name"], "Big spenders, EU");
    assert_eq!(seg1["file"], "segment-1-big-spenders-eu.csv");
    let text = std::fs::read_to_string(out2.join("segment-1-big-spenders-eu.csv")).unwrap();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("1,\"Big spenders, EU\",")
    );
}

#[test]
fn export_bad_input_exits_2_and_leaves_nothing() {
    let dir = tmpdir();
    let assign = dir.path().join("a.parquet");
    write_parquet(
        &assign,
        vec![
            (
                "email",
                Arc::new(StringArray::from(vec!["a@x.com", "b@x.com"])) as ArrayRef,
            ),
            ("num", Arc::new(Int64Array::from(vec![1, 2]))),
            (
                "cluster",
                Arc::new(arrow_array::Int32Array::from(vec![0, 2])),
            ),
        ],
    );
    let no_cluster = dir.path().join("nc.parquet");
    write_parquet(
        &no_cluster,
        vec![(
            "email",
            Arc::new(StringArray::from(vec!["a@x.com"])) as ArrayRef,
        )],
    );
    let out = dir.path().join("out");
    let o = s(&out);
    bad(
        &[
            "export",
            s(&assign),
            "--identifier",
            "mail:email",
            "--out-dir",
            o,
        ],
        &["no column 'mail'", "--identifier", "email, num, cluster"],
    );
    bad(
        &[
            "export",
            s(&assign),
            "--identifier",
            "num:email",
            "--out-dir",
            o,
        ],
        &["column 'num' is Int64, not a string"],
    );
    bad(
        &[
            "export",
            s(&no_cluster),
            "--identifier",
            "email:email",
            "--out-dir",
            o,
        ],
        &["no column 'cluster'"],
    );
    bad(
        &[
            "export",
            s(&assign),
            "--identifier",
            "email:email",
            "--platform",
            "tiktok",
            "--out-dir",
            o,
        ],
        &["tiktok", "google", "meta", "linkedin", "generic"],
    );
    bad(
        &[
            "export",
            s(&assign),
            "--identifier",
            "email:email",
            "--segments",
            "0,1",
            "--out-dir",
            o,
        ],
        &["--segments 1", "valid: 0, 2"],
    );
    bad(
        &[
            "export",
            s(&assign),
            "--identifier",
            "email:md5",
            "--out-dir",
            o,
        ],
        &["unknown identifier kind 'md5'", "email, phone, raw"],
    );
    bad(
        &[
            "export",
            s(&assign),
            "--identifier",
            "email:phone",
            "--platform",
            "linkedin",
            "--out-dir",
            o,
        ],
        &["linkedin does not match on phone"],
    );
    bad(
        &[
            "export",
            s(&assign),
            "--identifier",
            "email:phone",
            "--default-country",
            "XX",
            "--out-dir",
            o,
        ],
        &["--default-country 'XX'"],
    );
    assert_eq!(listing(dir.path()), ["a.parquet", "nc.parquet"]);
    // An existing, non-empty directory is refused and left as it was.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    bad(
        &[
            "export",
            s(&assign),
            "--identifier",
            "email:email",
            "--out-dir",
            o,
        ],
        &["not an empty directory"],
    );
    assert_eq!(listing(&out), ["keep.txt"]);
    assert_eq!(listing(dir.path()), ["a.parquet", "nc.parquet", "out"]);
}

// ---------------------------------------------------------------- refit

/// Well-separated customers: 5 segments in 3 features. Returns (ids, columns).
fn segments_table(n: usize, seed: u64) -> (Vec<i64>, Vec<Vec<f64>>, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let centres = [
        [0.0, 0.0, 0.0],
        [12.0, 0.0, 3.0],
        [0.0, 12.0, -3.0],
        [12.0, 12.0, 9.0],
        [-12.0, 6.0, 0.0],
    ];
    let mut cols: Vec<Vec<f64>> = (0..3).map(|_| Vec::with_capacity(n)).collect();
    let mut truth = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.below(5) as usize;
        truth.push(c);
        for (j, col) in cols.iter_mut().enumerate() {
            col.push(centres[c][j] + rng.normal_pair().0);
        }
    }
    ((0..n as i64).map(|i| 9_000_000 + i).collect(), cols, truth)
}

fn write_segments(path: &Path, ids: &[i64], cols: &[Vec<f64>]) {
    let mut t: Vec<(&str, ArrayRef)> = vec![(
        "customer_id",
        Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
    )];
    for (name, c) in ["recency", "frequency", "spend"].iter().zip(cols) {
        t.push((name, Arc::new(Float64Array::from(c.clone()))));
    }
    write_parquet(path, t);
}

/// customer_id → cluster of an assignments file.
fn clusters_by_id(path: &Path) -> HashMap<i64, i32> {
    let f = std::fs::File::open(path).unwrap();
    let r = ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let mut m = HashMap::new();
    for b in r {
        let b = b.unwrap();
        let ids = b
            .column_by_name("customer_id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let cl = b
            .column_by_name("cluster")
            .unwrap()
            .as_primitive::<Int32Type>();
        for i in 0..b.num_rows() {
            m.insert(ids.value(i), cl.value(i));
        }
    }
    m
}

struct Run {
    dir: tempfile::TempDir,
    input: PathBuf,
    assign: PathBuf,
    model: PathBuf,
    ids: Vec<i64>,
    cols: Vec<Vec<f64>>,
}

fn first_run(n: usize) -> Run {
    let dir = tmpdir();
    let (ids, cols, _) = segments_table(n, 11);
    let input = dir.path().join("m1.parquet");
    write_segments(&input, &ids, &cols);
    let (assign, model) = (dir.path().join("a1.parquet"), dir.path().join("m1.json"));
    ok(&[
        "fit",
        s(&input),
        "--k",
        "5",
        "--id",
        "customer_id",
        "--output",
        s(&assign),
        "--model",
        s(&model),
    ]);
    Run {
        dir,
        input,
        assign,
        model,
        ids,
        cols,
    }
}

/// Runs refit on `input` against the first run; returns (summary, drift, new assignments).
fn refit(r: &Run, input: &Path, extra: &[&str], tag: &str) -> (Value, Value, PathBuf) {
    let d = r.dir.path();
    let (out, model_out, drift) = (
        d.join(format!("{tag}-assignments.parquet")),
        d.join(format!("{tag}.json")),
        d.join(format!("{tag}-drift.json")),
    );
    let mut args = vec![
        "refit",
        s(input),
        "--model",
        s(&r.model),
        "--output",
        s(&out),
        "--model-out",
        s(&model_out),
        "--previous-assignments",
        s(&r.assign),
        "--id",
        "customer_id",
        "--drift",
        s(&drift),
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = ok(&args);
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    (summary, read_json(&drift), out)
}

/// Moved share and migration counted here, by joining the two assignments on customer_id.
fn check_drift_against_join(drift: &Value, before: &Path, after: &Path) {
    let (a, b) = (clusters_by_id(before), clusters_by_id(after));
    let mut pairs: BTreeMap<(i32, i32), u64> = BTreeMap::new();
    for (id, cb) in &b {
        if let Some(ca) = a.get(id) {
            *pairs.entry((*ca, *cb)).or_default() += 1;
        }
    }
    let joined: u64 = pairs.values().sum();
    let moved: u64 = pairs
        .iter()
        .filter(|(k, _)| k.0 != k.1)
        .map(|(_, v)| v)
        .sum();
    assert_eq!(drift["joined"].as_u64(), Some(joined));
    assert_eq!(drift["moved"].as_u64(), Some(moved));
    let m = &drift["migration"];
    for (i, pid) in m["previous_ids"].as_array().unwrap().iter().enumerate() {
        for (j, nid) in m["new_ids"].as_array().unwrap().iter().enumerate() {
            let key = (pid.as_i64().unwrap() as i32, nid.as_i64().unwrap() as i32);
            assert_eq!(
                m["counts"][i][j].as_u64().unwrap(),
                pairs.get(&key).copied().unwrap_or(0)
            );
        }
    }
}

#[test]
fn refit_on_the_same_table_keeps_everyone_and_every_id() {
    let r = first_run(20_000);
    let (summary, drift, out) = refit(&r, &r.input.clone(), &[], "same");
    assert!(drift["moved_share"].as_f64().unwrap() <= 0.001, "{drift}");
    for seg in summary["segments"].as_array().unwrap() {
        assert_eq!(seg["previous_id"], seg["id"], "{summary}");
    }
    assert_eq!(summary["new_ids"].as_array().unwrap().len(), 0);
    assert_eq!(drift["vanished_ids"].as_array().unwrap().len(), 0);
    check_drift_against_join(&drift, &r.assign, &out);
    for seg in drift["segments"].as_array().unwrap() {
        assert!(seg["psi"].as_f64().unwrap() < 1e-4);
        for v in seg["centroid_shift"].as_object().unwrap().values() {
            assert!(v.as_f64().unwrap().abs() < 0.01, "{seg}");
        }
    }
}

#[test]
fn refit_on_shuffled_rows_with_another_seed_keeps_every_id() {
    let r = first_run(20_000);
    let mut order: Vec<usize> = (0..r.ids.len()).collect();
    let mut rng = Rng::new(99);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let ids: Vec<i64> = order.iter().map(|&i| r.ids[i]).collect();
    let cols: Vec<Vec<f64>> = r
        .cols
        .iter()
        .map(|c| order.iter().map(|&i| c[i]).collect())
        .collect();
    let shuffled = r.dir.path().join("shuffled.parquet");
    write_segments(&shuffled, &ids, &cols);
    let (summary, drift, out) = refit(&r, &shuffled, &["--seed", "7"], "shuffled");
    for seg in summary["segments"].as_array().unwrap() {
        assert_eq!(seg["previous_id"], seg["id"], "{summary}");
    }
    // Each customer keeps its segment id, whatever the row order.
    let (a, b) = (clusters_by_id(&r.assign), clusters_by_id(&out));
    let changed = b.iter().filter(|(id, c)| a[*id] != **c).count();
    assert!(changed <= 20, "{changed} customers changed segment");
    check_drift_against_join(&drift, &r.assign, &out);
}

#[test]
fn refit_reports_the_feature_a_segment_moved_in() {
    let r = first_run(20_000);
    let before = clusters_by_id(&r.assign);
    // Population standard deviation of `frequency` in the first run.
    let f = &r.cols[1];
    let mean = f.iter().sum::<f64>() / f.len() as f64;
    let sd = (f.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / f.len() as f64).sqrt();
    let target = before[&r.ids[0]];
    let mut cols = r.cols.clone();
    for (i, id) in r.ids.iter().enumerate() {
        if before[id] == target {
            cols[1][i] += sd;
        }
    }
    let moved = r.dir.path().join("moved.parquet");
    write_segments(&moved, &r.ids, &cols);
    let (_, drift, out) = refit(&r, &moved, &[], "moved");
    let seg = drift["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == target)
        .unwrap();
    assert_eq!(seg["largest_shift"], "frequency", "{seg}");
    let shift = seg["centroid_shift"]["frequency"].as_f64().unwrap();
    assert!((shift - 1.0).abs() < 0.05, "shift {shift}");
    for s in drift["segments"].as_array().unwrap() {
        if s["id"] != target {
            let m = s["centroid_shift"]["frequency"].as_f64().unwrap();
            assert!(m.abs() < 0.05, "{s}");
        }
    }
    check_drift_against_join(&drift, &r.assign, &out);
}

#[test]
fn refit_with_another_k_gives_fresh_and_vanished_ids() {
    let r = first_run(6_000);
    let (summary, drift, out) = refit(&r, &r.input.clone(), &["--k", "6"], "k6");
    assert_eq!(summary["new_ids"], serde_json::json!([5]));
    assert_eq!(drift["new_ids"], serde_json::json!([5]));
    check_drift_against_join(&drift, &r.assign, &out);
    let (summary, drift, out) = refit(&r, &r.input.clone(), &["--k", "4"], "k4");
    let vanished = summary["vanished_ids"].as_array().unwrap().clone();
    assert_eq!(vanished.len(), 1);
    assert_eq!(drift["vanished_ids"].as_array().unwrap(), &vanished);
    let gone = vanished[0].as_i64().unwrap() as i32;
    let after = clusters_by_id(&out);
    assert!(after.values().all(|&c| c != gone && (0..5).contains(&c)));
    // The new model keeps the ids: predict with it reproduces the refit's clusters.
    // Its ids are stored unless they are 0..k.
    let model = read_json(&r.dir.path().join("k4.json"));
    let kept: Vec<i64> = match model["segment_ids"].as_array() {
        Some(ids) => ids.iter().map(|v| v.as_i64().unwrap()).collect(),
        None => (0..4).collect(),
    };
    assert_eq!(model["segment_ids"].is_null(), gone == 4);
    assert!(!kept.contains(&(gone as i64)) && kept.len() == 4);
    let p = r.dir.path().join("p.parquet");
    ok(&[
        "predict",
        s(&r.input),
        "--model",
        s(&r.dir.path().join("k4.json")),
        "--id",
        "customer_id",
        "--output",
        s(&p),
    ]);
    assert_eq!(clusters_by_id(&p), after);
    // A model with ids that are not 0..k: predict writes the ids, not the positions.
    let mut m1 = read_json(&r.model);
    m1["segment_ids"] = serde_json::json!([0, 2, 3, 5, 9]);
    let gappy = r.dir.path().join("gappy.json");
    std::fs::write(&gappy, m1.to_string()).unwrap();
    let (p1, p2) = (
        r.dir.path().join("p1.parquet"),
        r.dir.path().join("p2.parquet"),
    );
    for (model, out) in [(&r.model, &p1), (&gappy, &p2)] {
        ok(&[
            "predict",
            s(&r.input),
            "--model",
            s(model),
            "--id",
            "customer_id",
            "--output",
            s(out),
        ]);
    }
    let (plain, mapped) = (clusters_by_id(&p1), clusters_by_id(&p2));
    for (id, c) in &plain {
        assert_eq!(mapped[id], [0, 2, 3, 5, 9][*c as usize]);
    }
    // Refit from the refitted model: its ids are kept and the extra one is above their maximum.
    let r2 = Run {
        model: r.dir.path().join("k4.json"),
        assign: out,
        ..r
    };
    let (summary, _, _) = refit(&r2, &r2.input.clone(), &["--k", "5"], "k5");
    let mut ids: Vec<i64> = summary["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = kept.clone();
    want.push(kept.iter().max().unwrap() + 1);
    assert_eq!(ids, want);
}

#[test]
fn refit_bad_input_exits_2_and_writes_nothing() {
    let r = first_run(2_000);
    let d = r.dir.path();
    let other = d.join("other.parquet");
    write_parquet(
        &other,
        vec![
            (
                "customer_id",
                Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
            ),
            ("recency", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]))),
        ],
    );
    let (o, m) = (d.join("o.parquet"), d.join("o.json"));
    let base = |input: &Path| -> Vec<String> {
        [
            "refit",
            s(input),
            "--model",
            s(&r.model),
            "--output",
            s(&o),
            "--model-out",
            s(&m),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let run_bad = |args: Vec<String>, needles: &[&str]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        bad(&a, needles);
    };
    run_bad(
        base(&other),
        &["no column 'frequency'", "fitted on the features"],
    );
    let mut a = base(&r.input);
    a.extend(
        ["--previous-assignments", s(&r.assign), "--id", "email"]
            .iter()
            .map(|x| x.to_string()),
    );
    run_bad(a, &["a1.parquet", "no column 'email'"]);
    let mut a = base(&r.input);
    a.extend(["--drift", "d.json"].iter().map(|x| x.to_string()));
    run_bad(a, &["--previous-assignments"]);
    assert!(!o.exists() && !m.exists());
    assert_eq!(
        listing(d),
        ["a1.parquet", "m1.json", "m1.parquet", "other.parquet"]
    );
}
