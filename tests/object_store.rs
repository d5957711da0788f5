//! Object-store inputs and outputs, against a real S3 API: the moto server, started on a free
//! local port for each test. A partitioned table in a bucket fits exactly as its local copy
//! does, outputs land in the bucket, and an upload that fails part-way leaves no object.
//!
//! The server comes from Python's `moto[server]`: scripts/test.sh installs it into
//! target/python-venv; LAKEMEANS_TEST_PYTHON names another interpreter that has it. Without
//! one these tests fail and say so.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Float32Array, Int64Array};
use common::*;

/// A moto S3 server on a free local port, stopped when dropped.
struct Moto {
    child: Child,
    python: PathBuf,
    endpoint: String,
}

fn python() -> PathBuf {
    let python = std::env::var_os("LAKEMEANS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python-venv/bin/python")
        });
    let ok = Command::new(&python)
        .args(["-c", "import moto.server, boto3"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the object-store tests need a Python with moto[server] and boto3, and {} is not one: \
         run scripts/test.sh (it installs them into target/python-venv) or set \
         LAKEMEANS_TEST_PYTHON",
        python.display()
    );
    python
}

impl Moto {
    fn start() -> Moto {
        let python = python();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the moto server");
        let moto = Moto {
            child,
            python,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the moto server did not listen on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.s3(&["mb", "lake"]);
        moto
    }

    /// Runs tests/support/s3.py against the server; panics unless it succeeds.
    fn s3(&self, args: &[&str]) -> String {
        let o = self.s3_raw(args);
        assert!(o.status.success(), "s3.py {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn s3_raw(&self, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/s3.py");
        Command::new(&self.python)
            .arg(script)
            .arg(&self.endpoint)
            .args(args)
            .output()
            .expect("run s3.py")
    }

    /// The object `key` of bucket `lake`, or `None` when there is none.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let dir = tmpdir();
        let dest = p(dir.path(), "object");
        let o = self.s3_raw(&["get", "lake", key, s(&dest)]);
        match o.status.code() {
            Some(0) => Some(std::fs::read(&dest).unwrap()),
            Some(3) => None,
            _ => panic!("s3.py get {key}: {}", stderr(&o)),
        }
    }

    /// Multipart uploads of bucket `lake` neither completed nor aborted.
    fn open_uploads(&self) -> usize {
        self.s3(&["uploads", "lake"]).trim().parse().unwrap()
    }

    /// Runs lakemeans with the S3 settings a local S3-compatible server needs.
    fn lakemeans(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lakemeans"))
            .args(args)
            .env("LAKEMEANS_HIDE_GPU", "1")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .envs(extra_env.iter().copied())
            .output()
            .expect("run lakemeans")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Writes `bytes` to a file in `dir` and returns its path.
fn saved(dir: &Path, name: &str, bytes: Vec<u8>) -> PathBuf {
    let path = p(dir, name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A server whose bucket `lake` holds [`partitioned`]'s table under `table/`, and the local
/// copy of the table in `dir/table`.
fn with_table() -> (Moto, tempfile::TempDir, PathBuf) {
    let moto = Moto::start();
    let dir = tmpdir();
    let root = p(dir.path(), "table");
    partitioned(&root);
    moto.s3(&["put-dir", s(&root), "lake", "table"]);
    (moto, dir, root)
}

#[test]
fn a_partitioned_table_in_a_bucket_fits_as_its_local_copy_does() {
    let (moto, dir, root) = with_table();

    let local_out = p(dir.path(), "a.parquet");
    let local_model = p(dir.path(), "model.json");
    let mut args = vec!["fit", s(&root), "--json"];
    args.extend(PARTITIONED_FIT);
    args.extend(["--k", "3"]);
    args.extend(["--output", s(&local_out), "--model", s(&local_model)]);
    let local = json(&lakemeans(&args));

    let mut args = vec!["fit", "s3://lake/table/", "--json"];
    args.extend(PARTITIONED_FIT);
    args.extend(["--k", "3"]);
    args.extend([
        "--output",
        "s3://lake/out/a.parquet",
        "--model",
        "s3://lake/out/model.json",
        "--centroids",
        "s3://lake/out/centroids.parquet",
    ]);
    let remote = json(&moto.lakemeans(&args, &[]));
    assert_eq!(remote["files_read"], 6);
    assert_eq!(remote["rows"], 6 * ROWS);
    assert_eq!(remote["inertia"], local["inertia"]);
    assert_eq!(remote["iterations"], local["iterations"]);

    let out = saved(
        dir.path(),
        "remote.parquet",
        moto.get("out/a.parquet").unwrap(),
    );
    assert_eq!(
        read_column_f64(&out, "cluster"),
        read_column_f64(&local_out, "cluster")
    );
    assert_eq!(
        read_column_f64(&out, "id"),
        read_column_f64(&local_out, "id")
    );
    let country = read_column_strings(&out, "country");
    assert_eq!(country, read_column_strings(&local_out, "country"));
    assert_eq!(country[0].as_deref(), Some("BE"));
    let model: serde_json::Value =
        serde_json::from_slice(&moto.get("out/model.json").unwrap()).unwrap();
    let local_model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&local_model).unwrap()).unwrap();
    assert_eq!(model, local_model);
    let centroids = saved(
        dir.path(),
        "c.parquet",
        moto.get("out/centroids.parquet").unwrap(),
    );
    assert_eq!(read_column_f64(&centroids, "spend").len(), 3);

    // Partition pruning lists the prefix but opens only the matching directories.
    let mut args = vec!["fit", "s3://lake/table", "--json"];
    args.extend(PARTITIONED_FIT);
    args.extend(["--k", "3"]);
    args.extend(["--filter", "country in (NL,BE)"]);
    let pruned = json(&moto.lakemeans(&args, &[]));
    assert_eq!(pruned["files_read"], 4);
    assert_eq!(pruned["rows"], 4 * ROWS);

    // A model in the bucket serves predict, and a single object is an input too.
    let o = moto.lakemeans(
        &[
            "predict",
            "s3://lake/table/country=NL/month=2/part-0.parquet",
            "--model",
            "s3://lake/out/model.json",
            "--output",
            "s3://lake/out/nl.parquet",
            "--id",
            "id",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let nl = saved(
        dir.path(),
        "nl.parquet",
        moto.get("out/nl.parquet").unwrap(),
    );
    assert_eq!(read_column_f64(&nl, "cluster").len(), ROWS);
    assert_eq!(moto.open_uploads(), 0);
}

/// One file of `rows` rows whose ids are random, so its assignments do not compress and span
/// several upload parts.
fn wide_ids(path: &Path, rows: usize) {
    let mut rng = lakemeans::rng::Rng::new(7);
    let v = blobs(rows, 2, 3, 7);
    write_parquet(
        path,
        vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(
                    (0..rows).map(|_| rng.next_u64() as i64),
                )) as ArrayRef,
            ),
            (
                "spend",
                Arc::new(Float32Array::from_iter_values(v.iter().step_by(2).copied())),
            ),
            (
                "visits",
                Arc::new(Float32Array::from_iter_values(
                    v.iter().skip(1).step_by(2).copied(),
                )),
            ),
        ],
    );
}

#[test]
fn an_upload_that_fails_part_way_leaves_no_object_behind() {
    let moto = Moto::start();
    let dir = tmpdir();
    let table = p(dir.path(), "big.parquet");
    wide_ids(&table, 1_500_000);
    moto.s3(&["put", s(&table), "lake", "big/data.parquet"]);
    let fit = |output: &str, model: &str, env: &[(&str, &str)]| {
        moto.lakemeans(
            &[
                "fit",
                "s3://lake/big",
                "--k",
                "3",
                "--id",
                "id",
                "--device",
                "cpu",
                "--output",
                output,
                "--model",
                model,
            ],
            env,
        )
    };
    let o = fit("s3://lake/out/ok.parquet", "s3://lake/out/ok.json", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ok = moto.get("out/ok.parquet").unwrap();
    // Parts are 8 MiB: the upload below fails after its first part has been stored.
    let limit = 9 << 20;
    assert!(ok.len() > limit, "assignments of {} bytes", ok.len());

    let fail = [("LAKEMEANS_FAIL_UPLOAD_AFTER_BYTES", "9437184")];
    let o = fit("s3://lake/out/new.parquet", "s3://lake/out/new.json", &fail);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("s3://lake/out/new.parquet") && err.contains("9437184 bytes"),
        "{err}"
    );
    assert_eq!(moto.get("out/new.parquet"), None);
    assert_eq!(moto.get("out/new.json"), None);
    assert_eq!(moto.open_uploads(), 0, "the failed upload was not aborted");

    // Failing over an existing object leaves that object as it was.
    let o = fit("s3://lake/out/ok.parquet", "s3://lake/out/ok.json", &fail);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(moto.get("out/ok.parquet").unwrap() == ok);
    assert_eq!(moto.open_uploads(), 0);
}

#[test]
fn object_urls_are_refused_clearly() {
    let (moto, _dir, _root) = with_table();
    let keys_before = moto.s3(&["keys", "lake", ""]);
    let refused = |args: &[&str], expect: &str| {
        let mut all = vec!["fit"];
        all.extend(args);
        all.extend(["--k", "2", "--features", "spend,visits", "--device", "cpu"]);
        let o = moto.lakemeans(&all, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    };
    let file = "s3://lake/table/country=NL/month=1/part-0.parquet";
    refused(&[file, "--output", file], "is an input");
    refused(
        &["s3://lake/table", "--output", "s3a://lake/table/a.parquet"],
        "lies inside input directory",
    );
    refused(
        &[
            "s3://lake/table",
            "--output",
            "s3://lake/o.parquet",
            "--model",
            "s3://lake/o.parquet",
        ],
        "both write",
    );
    refused(
        &["s3://missing-bucket/t"],
        "s3://missing-bucket/t: no such bucket",
    );
    refused(
        &["s3://lake/nothing-here"],
        "s3://lake/nothing-here: no such object",
    );
    refused(
        &[
            "s3://lake/table",
            "--output",
            "s3://missing-bucket/a.parquet",
        ],
        "s3://missing-bucket/a.parquet: cannot write there: no such bucket",
    );
    refused(
        &["s3://lake/table", "--output", "s3://lake/table2/"],
        "ends in a name",
    );
    refused(&["hdfs://lake/table"], "unsupported URL scheme");
    assert_eq!(moto.s3(&["keys", "lake", ""]), keys_before);
}

#[test]
fn a_delta_table_in_a_bucket_reads_as_its_local_copy() {
    let moto = Moto::start();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/delta");
    moto.s3(&["put-dir", s(&fixtures.join("history")), "lake", "delta"]);
    moto.s3(&["put-dir", s(&fixtures.join("dv")), "lake", "dv"]);
    let dir = tmpdir();
    for version in [None, Some("1")] {
        let read = |table: &str, out: &Path| {
            let mut args = vec!["fit", table, "--k", "2", "--features", "spend,visits"];
            args.extend(["--id", "id", "--id", "country", "--device", "cpu", "--json"]);
            args.extend(["--output", s(out)]);
            if let Some(v) = version {
                args.extend(["--table-version", v]);
            }
            json(&moto.lakemeans(&args, &[]))
        };
        let (local_out, remote_out) = (p(dir.path(), "l.parquet"), p(dir.path(), "r.parquet"));
        let local = read(s(&fixtures.join("history")), &local_out);
        let remote = read("s3://lake/delta", &remote_out);
        assert_eq!(remote["rows"], local["rows"]);
        assert_eq!(remote["files_read"], local["files_read"]);
        assert_eq!(
            read_column_f64(&remote_out, "id"),
            read_column_f64(&local_out, "id")
        );
        assert_eq!(
            read_column_strings(&remote_out, "country"),
            read_column_strings(&local_out, "country")
        );
    }
    let o = moto.lakemeans(
        &[
            "fit",
            "s3://lake/dv",
            "--k",
            "2",
            "--features",
            "spend,visits",
            "--device",
            "cpu",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("deletion vectors"), "{}", stderr(&o));
}

/// Fits `table` on `features` (all columns when empty) and returns the `--json` summary.
fn fit_wide(run: impl Fn(&[&str]) -> Output, table: &str, features: &[&str]) -> serde_json::Value {
    let list = features.join(",");
    let mut args = vec!["fit", table, "--k", "3", "--device", "cpu", "--json"];
    if !features.is_empty() {
        args.extend(["--features", &list]);
    }
    json(&run(&args))
}

#[test]
fn only_the_projected_columns_travel() {
    let moto = Moto::start();
    let dir = tmpdir();
    let local = p(dir.path(), "wide.parquet");
    wide(&local, 100_000, 25_000);
    moto.s3(&["put", s(&local), "lake", "wide/data.parquet"]);
    let run = |args: &[&str]| moto.lakemeans(args, &[]);

    // Two columns twelve apart, so no coalesced request spans the columns between them.
    let two = ["c03", "c17"];
    let need = cost(&local, &two);
    let narrow = fit_wide(run, "s3://lake/wide/data.parquet", &two);
    let read = narrow["bytes_read"].as_u64().unwrap();
    eprintln!(
        "two of {WIDE_COLUMNS} columns: bytes_read {read}, their chunks {}, footer {}, object {}",
        need.columns, need.footer, need.size
    );
    assert!(
        read >= need.columns + need.footer,
        "{read} < {}",
        need.columns + need.footer
    );
    assert!(
        (read as f64) < 0.4 * need.size as f64,
        "{read} bytes read of a {}-byte object for two of its {WIDE_COLUMNS} columns",
        need.size
    );

    let names: Vec<String> = (0..WIDE_COLUMNS).map(|c| format!("c{c:02}")).collect();
    let all = cost(
        &local,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let full = fit_wide(run, "s3://lake/wide/data.parquet", &[]);
    let read_all = full["bytes_read"].as_u64().unwrap();
    eprintln!(
        "all columns: bytes_read {read_all}, passes {}",
        full["passes"]
    );
    assert_eq!(full["features"].as_array().unwrap().len(), WIDE_COLUMNS);
    assert!(
        read_all >= all.columns + all.footer,
        "{read_all} < {}",
        all.columns
    );
    assert!(read_all as f64 >= 0.95 * all.size as f64);
    // A fit decodes the table at most twice (statistics, then rows), and each decode
    // fetches the chunks it needs once; the footer is fetched with the object's last 64 KiB.
    let bound = |chunks: u64| 2 * chunks + (64 << 10);
    assert!(
        read <= bound(need.columns),
        "{read} > {}",
        bound(need.columns)
    );
    assert!(
        read_all <= bound(all.columns),
        "{read_all} > {}",
        bound(all.columns)
    );
}

#[test]
fn an_unreachable_store_fails_fast_naming_the_url() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens there once the listener above is dropped.
    let endpoint = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_lakemeans"))
        .args(["fit", "s3://lake/t.parquet", "--k", "2", "--device", "cpu"])
        .env("LAKEMEANS_HIDE_GPU", "1")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("LAKEMEANS_STORE_RETRY_SECONDS", "2")
        .output()
        .unwrap();
    let took = t0.elapsed();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("s3://lake/t.parquet") && err.contains(&endpoint),
        "{err}"
    );
    assert!(err.contains("cannot connect"), "{err}");
}
