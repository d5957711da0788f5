"""lakemeans.KMeans against scikit-learn, its estimator conventions, and its input checks."""

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans as SkKMeans

import lakemeans
from conftest import blobs

N, D, K = 200_000, 16, 8


@pytest.fixture(scope="module")
def data():
    X = blobs(N, D, K, seed=7)
    rng = np.random.default_rng(3)
    init = X[rng.choice(N, K, replace=False)].astype(np.float64)
    sk = SkKMeans(K, init=init, n_init=1, algorithm="lloyd", max_iter=300, tol=1e-4).fit(X)
    return X, init, sk


def table(X):
    return pa.table({f"f{j}": X[:, j] for j in range(X.shape[1])})


INPUTS = {
    "numpy": lambda X: X,
    "numpy-fortran": np.asfortranarray,
    "numpy-float64": lambda X: X.astype(np.float64),
    "pyarrow": table,
    "pyarrow-batch": lambda X: table(X).combine_chunks().to_batches()[0],
    "polars": lambda X: pl.from_arrow(table(X)),
}


@pytest.mark.parametrize("kind", ["numpy", "numpy-fortran", "pyarrow", "polars"])
def test_matches_scikit_learn_from_the_same_centroids(data, kind):
    X, init, sk = data
    km = lakemeans.KMeans(K, init=init, tol=1e-4, device="cpu").fit(INPUTS[kind](X))
    assert abs(km.inertia_ - sk.inertia_) <= 1e-4 * sk.inertia_
    agree = np.mean(km.labels_ == sk.labels_)
    assert agree >= 0.999, agree
    assert np.allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-3, atol=1e-3)


def test_every_input_kind_gives_the_same_fit():
    X = blobs(20_000, 5, 4, seed=1)
    fits = {}
    for kind, make in INPUTS.items():
        fits[kind] = lakemeans.KMeans(4, device="cpu").fit(make(X))
    ref = fits["numpy"]
    for kind, km in fits.items():
        assert np.array_equal(km.labels_, ref.labels_), kind
        assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-6), kind


def test_random_state_none_draws_a_fresh_seed_and_records_it(tmp_path):
    X = blobs(5_000, 3, 3, seed=3)
    fits = [lakemeans.KMeans(3, init="random", max_iter=1, random_state=None, device="cpu").fit(X)
            for _ in range(2)]
    assert fits[0].seed_ != fits[1].seed_
    # The recorded seed repeats the fit, and the saved model keeps it.
    again = lakemeans.KMeans(3, init="random", max_iter=1, random_state=fits[0].seed_, device="cpu").fit(X)
    assert np.array_equal(again.cluster_centers_, fits[0].cluster_centers_)
    fits[0].save(tmp_path / "m.json")
    assert lakemeans.load(tmp_path / "m.json").seed_ == fits[0].seed_
    assert lakemeans.KMeans(3, random_state=7, device="cpu").fit(X).seed_ == 7


def test_estimator_conventions():
    X = blobs(5_000, 3, 3, seed=2)
    km = lakemeans.KMeans(3, random_state=5, device="cpu")
    assert km.get_params()["random_state"] == 5
    assert km.set_params(max_iter=50) is km and km.max_iter == 50
    with pytest.raises(ValueError, match="invalid parameter"):
        km.set_params(n_jobs=2)
    with pytest.raises(lakemeans.NotFittedError):
        km.predict(X)
    labels = km.fit_predict(X)
    assert labels.dtype == np.int32 and labels.shape == (5_000,)
    assert np.array_equal(km.predict(X), labels)
    assert km.n_features_in_ == 3 and not hasattr(km, "feature_names_in_")
    assert km.cluster_centers_.shape == (3, 3)
    assert km.n_iter_ >= 1
    dist = km.transform(X)
    assert dist.shape == (5_000, 3)
    assert np.array_equal(dist.argmin(axis=1), labels)
    assert km.score(X) == pytest.approx(-km.inertia_, rel=1e-5)
    assert np.sum(dist.min(axis=1) ** 2) == pytest.approx(km.inertia_, rel=1e-4)

    t = table(X)
    km.fit(t)
    assert list(km.feature_names_in_) == ["f0", "f1", "f2"]
    with pytest.raises(ValueError, match="fitted on"):
        km.predict(t.rename_columns(["a", "b", "c"]))


def test_sample_weight_counts_like_repeated_rows():
    X = blobs(3_000, 4, 3, seed=4)
    init = X[:3].astype(np.float64)
    w = np.ones(len(X))
    w[:1000] = 2
    weighted = lakemeans.KMeans(3, init=init, device="cpu").fit(X, sample_weight=w)
    repeated = lakemeans.KMeans(3, init=init, device="cpu").fit(np.vstack([X, X[:1000]]))
    assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-5)
    assert np.array_equal(weighted.labels_, repeated.labels_[: len(X)])
    sk = SkKMeans(3, init=init, n_init=1, algorithm="lloyd").fit(X, sample_weight=w)
    assert weighted.inertia_ == pytest.approx(sk.inertia_, rel=1e-4)


def test_scaling_reports_centroids_in_input_units():
    X = blobs(5_000, 3, 3, seed=6)
    X[:, 2] *= 1000
    # Run to a fixed point, so every centroid is the mean of its final members.
    km = lakemeans.KMeans(3, scale="standard", tol=0, device="cpu").fit(X)
    assert km.n_iter_ < 300
    for j in range(3):
        members = X[km.labels_ == j].astype(np.float64)
        assert np.allclose(km.cluster_centers_[j], members.mean(axis=0), rtol=1e-5, atol=1e-4)


def test_a_nan_names_its_column_and_row():
    X = blobs(100, 4, 2, seed=0)
    X[17, 3] = np.nan
    with pytest.raises(ValueError, match="X has a NaN in column 3 at row 17"):
        lakemeans.KMeans(2).fit(X)
    X[17, 3] = np.inf
    with pytest.raises(ValueError, match="infinite value in column 3 at row 17"):
        lakemeans.KMeans(2).fit(X)


def test_a_non_numeric_column_is_named():
    t = pa.table({"a": [1.0, 2.0, 3.0], "name": ["x", "y", "z"]})
    with pytest.raises(ValueError, match=r"column 'name' \(index 1\) is Utf8"):
        lakemeans.KMeans(2).fit(t)
    with pytest.raises(ValueError, match=r"column 'name' \(index 1\)"):
        lakemeans.KMeans(2).fit(pl.from_arrow(t))
    with pytest.raises(ValueError, match=r"column 'a' \(index 0\) has a null at row 1"):
        lakemeans.KMeans(2).fit(pa.table({"a": [1.0, None, 3.0]}))


def test_pandas_frames():
    pd = pytest.importorskip("pandas")
    X = blobs(2_000, 3, 3, seed=8)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    km = lakemeans.KMeans(3, device="cpu").fit(df)
    assert list(km.feature_names_in_) == ["a", "b", "c"]
    ref = lakemeans.KMeans(3, device="cpu").fit(X)
    assert np.array_equal(km.labels_, ref.labels_)
    df["s"] = ["x"] * len(df)
    with pytest.raises(ValueError, match=r"column 's' \(index 3\)"):
        lakemeans.KMeans(3).fit(df)


def test_bad_arguments_raise_value_error_with_the_command_line_message():
    X = blobs(10, 2, 2, seed=0)
    with pytest.raises(ValueError, match="--k 11 is larger than the number of rows"):
        lakemeans.KMeans(11).fit(X)
    with pytest.raises(ValueError, match="must be at least 1"):
        lakemeans.KMeans(0).fit(X)
    with pytest.raises(ValueError, match="scale must be"):
        lakemeans.KMeans(2, scale="log").fit(X)
    with pytest.raises(ValueError, match="init must"):
        lakemeans.KMeans(2, init="file.parquet").fit(X)
    with pytest.raises(ValueError, match="shape"):
        lakemeans.KMeans(2, init=np.zeros((3, 2))).fit(X)


def test_the_gil_is_released_while_fitting():
    import threading

    X = blobs(300_000, 16, 8, seed=5)
    started, done = threading.Event(), threading.Event()

    def fit():
        started.set()
        lakemeans.KMeans(8, max_iter=30, tol=0, device="cpu").fit(X)
        done.set()

    t = threading.Thread(target=fit)
    t.start()
    started.wait()
    ticks = 0
    while not done.is_set():
        ticks += 1
    t.join()
    # Held for the whole fit, the GIL would let this loop run only between native calls.
    assert ticks > 100_000, ticks
