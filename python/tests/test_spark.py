"""lakemeans.spark on a local Spark with 2 cores: the local fit's answer, whatever the
partitioning, with bad columns refused before any job."""

import os
import shutil
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lakemeans
from conftest import blobs

pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("no java for Spark (scripts/test.sh installs openjdk-17-jre-headless)", allow_module_level=True)

from lakemeans.spark import KMeans, KMeansModel  # noqa: E402

N, D, K = 30_000, 6, 5


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    # The Python workers must import this interpreter's lakemeans.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    s = (
        SparkSession.builder.master("local[2]")
        .appName("lakemeans-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory, spark):
    X = blobs(N, D, K, seed=21)
    w = (np.arange(N) % 4 + 1).astype(np.float32)
    cols = [f"f{j}" for j in range(D)]
    t = pa.table({"id": np.arange(N)} | {c: X[:, j] for j, c in enumerate(cols)} | {"w": w, "name": ["r"] * N})
    path = tmp_path_factory.mktemp("spark") / "t.parquet"
    pq.write_table(t, path)
    return X, w, cols, spark.read.parquet(str(path))


def labels_by_id(model, df):
    rows = model.transform(df).select("id", "cluster").collect()
    out = np.empty(len(rows), dtype=np.int32)
    for r in rows:
        out[r["id"]] = r["cluster"]
    return out


def test_same_answer_as_the_local_fit(data):
    X, _, cols, df = data
    init = X[[3, 1000, 2000, 3000, 4000]].astype(np.float64)
    local = lakemeans.KMeans(K, init=init, max_iter=10, tol=0, device="cpu").fit(X)
    model = KMeans(K, cols, initCentroids=init, maxIter=10, tol=0, device="cpu").fit(df.repartition(2))
    assert abs(model.trainingCost - local.inertia_) <= 1e-6 * local.inertia_
    assert np.mean(labels_by_id(model, df) == local.labels_) >= 0.9999
    assert np.allclose(np.array(model.clusterCenters()), local.cluster_centers_, rtol=1e-5, atol=1e-5)


def test_weights_and_scaling_match_the_local_fit(data):
    X, w, cols, df = data
    init = X[[5, 50, 500, 5000, 25000]].astype(np.float64)
    local = lakemeans.KMeans(K, init=init, max_iter=10, tol=0, scale="standard", device="cpu")
    local.fit(X, sample_weight=w)
    model = KMeans(K, cols, weightCol="w", initCentroids=init, maxIter=10, tol=0, scale="standard",
                   device="cpu").fit(df)
    assert abs(model.trainingCost - local.inertia_) <= 1e-6 * local.inertia_
    assert np.mean(labels_by_id(model, df) == local.labels_) >= 0.9999


def test_partitioning_does_not_change_the_answer(data, tmp_path):
    X, _, cols, df = data
    fits = []
    for n in (2, 7, 64):
        m = KMeans(K, cols, maxIter=3, seed=4, device="cpu").fit(df.repartition(n))
        fits.append((m, np.array(m.clusterCenters()), labels_by_id(m, df)))
    for m, centres, labels in fits[1:]:
        assert m.trainingCost == fits[0][0].trainingCost
        assert np.array_equal(centres, fits[0][1])
        assert np.array_equal(labels, fits[0][2])
    # k-means|| found a sensible start: every cluster holds rows.
    assert len(np.unique(fits[0][2])) == K

    # The model file is the command line's, and loads back into Spark and into Python.
    m = fits[0][0]
    m.save(tmp_path / "m.json")
    again = KMeansModel.load(tmp_path / "m.json")
    assert again.trainingCost == m.trainingCost and again.iterations == m.iterations
    assert np.array_equal(lakemeans.load(tmp_path / "m.json").predict(X), fits[0][2])


def test_kmeans_parallel_picks_the_local_fits_start(data):
    # One k-means|| loop with draws keyed by row values: the same seed gives the same start
    # locally and on Spark, so one Lloyd step later the centres agree.
    X, _, cols, df = data
    local = lakemeans.KMeans(K, init="k-means||", max_iter=1, tol=0, random_state=7, device="cpu").fit(X)
    model = KMeans(K, cols, maxIter=1, tol=0, seed=7, device="cpu").fit(df.repartition(3))
    assert np.allclose(np.array(model.clusterCenters()), local.cluster_centers_, rtol=1e-5, atol=1e-5)


def test_random_init_and_tol_stop(data):
    _, _, cols, df = data
    m = KMeans(K, cols, initMode="random", maxIter=20, tol=1e-3, seed=2, device="cpu").fit(df)
    assert 1 <= m.iterations < 20


def test_bad_columns_fail_before_any_job(data, spark):
    _, _, cols, df = data
    sc = spark.sparkContext
    sc.setJobGroup("bad-columns", "must stay empty")
    with pytest.raises(ValueError, match="no column 'nope'"):
        KMeans(K, cols + ["nope"]).fit(df)
    with pytest.raises(ValueError, match="column 'name' is string, not numeric"):
        KMeans(K, ["f0", "name"]).fit(df)
    with pytest.raises(ValueError, match="column 'name' is string"):
        KMeans(K, cols, weightCol="name").fit(df)
    assert list(sc.statusTracker().getJobIdsForGroup("bad-columns")) == []
    sc.setJobGroup("other", "")


def test_column_names_with_dots_and_backticks(data, spark):
    """Names are taken as top-level columns, not as struct fields."""
    X, _, cols, _ = data
    names = ["a.b", "c.d.e", "f g", "h`i", "j", "k"]
    df = spark.createDataFrame(pa.table({n: X[:2000, j] for j, n in enumerate(names)}).to_pandas())
    model = KMeans(K, names, maxIter=5, seed=2, device="cpu").fit(df)
    assert model.inputCols == names
    got = model.transform(df).select("cluster").toPandas()["cluster"].to_numpy()
    want = model.toLocal().predict(X[:2000].astype(np.float32))
    assert np.array_equal(got, want)


def leftovers():
    """The folders fits left in Spark's files directory."""
    import glob

    from pyspark import SparkFiles

    return glob.glob(os.path.join(SparkFiles.getRootDirectory(), "lakemeans-*"))


def test_fits_leave_no_files_whether_they_end_or_fail(data, spark):
    """A fit that ends removes its row and state files; so does one whose first pass fails
    (a NaN weight, found by the tasks)."""
    X, w, cols, df = data
    before = set(leftovers())
    KMeans(K, cols, maxIter=3, seed=1, device="cpu").fit(df.repartition(3))
    KMeans(K, cols, maxIter=50, seed=1, device="cpu").fit(df)  # stops when nothing moves
    w = w[:1000].copy()
    w[500] = np.nan
    bad = spark.createDataFrame(pa.table({"a": X[:1000, 0], "b": X[:1000, 1], "w": w}).to_pandas())
    with pytest.raises(Exception, match="weight column 'w' has a null or NaN"):
        KMeans(2, ["a", "b"], weightCol="w", device="cpu").fit(bad.repartition(2))
    assert set(leftovers()) == before


def test_a_pass_that_misses_the_row_files_reads_the_rows_again(data, monkeypatch):
    """Later passes read each partition's rows from a file on the worker's host; a task that
    finds none (another host, a lost executor) sends the pass back through Spark's rows, with
    the same answer."""
    import lakemeans.spark as ls

    _, _, cols, df = data
    want = KMeans(K, cols, maxIter=3, seed=4, device="cpu").fit(df.repartition(3))
    real, missed = ls._Passes._from_files, []

    def lose_files(self, compute, *args):
        if not missed:
            shutil.rmtree(os.path.dirname(ls._row_file(self.fit_id, 0)))
        got = real(self, compute, *args)
        missed.append(got is None)
        return got

    monkeypatch.setattr(ls._Passes, "_from_files", lose_files)
    got = KMeans(K, cols, maxIter=3, seed=4, device="cpu").fit(df.repartition(3))
    assert missed[0] and not any(missed[1:])
    assert got.trainingCost == want.trainingCost
    assert np.array_equal(np.array(got.clusterCenters()), np.array(want.clusterCenters()))
