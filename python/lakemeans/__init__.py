"""k-means for data-lake feature tables, with scikit-learn's estimator conventions.

`KMeans` fits arrays and data frames in memory; `fit_parquet` runs the command line's
streaming Parquet engine. Both call the same Rust library as the `lakemeans` command, and a
fitted model saves and loads the JSON that the command's `--model` flag writes, so a model
fitted here predicts from the command line and the other way round.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from . import _native

__all__ = ["KMeans", "NotFittedError", "fit_parquet", "load"]

_PARAMS = (
    "n_clusters",
    "init",
    "n_init",
    "max_iter",
    "tol",
    "random_state",
    "device",
    "scale",
)


class NotFittedError(ValueError, AttributeError):
    """Raised by a method that needs a fitted model (as scikit-learn's of the same name)."""


def _weights(sample_weight):
    if sample_weight is None:
        return None
    return np.ascontiguousarray(np.asarray(sample_weight, dtype=np.float32).reshape(-1))


def _rows(X: Any, sample_weight=None):
    """X as native rows: NumPy arrays are read in place through the buffer protocol, anything
    with `__arrow_c_stream__` (pyarrow, polars, pandas with pyarrow) through the Arrow C
    stream. Returns the rows and the column names (None for an array)."""
    w = _weights(sample_weight)
    if hasattr(X, "__arrow_c_stream__"):
        rows = _native.rows_from_stream(X, w)
        return rows, rows.features
    if hasattr(X, "__arrow_c_array__") and hasattr(X, "schema"):
        import pyarrow as pa  # a pyarrow RecordBatch of an older pyarrow

        rows = _native.rows_from_stream(pa.Table.from_batches([X]), w)
        return rows, rows.features
    if hasattr(X, "columns") and hasattr(X, "dtypes") and hasattr(X, "to_numpy"):
        return _pandas_rows(X, w)
    a = np.asarray(X)
    if a.ndim != 2:
        raise ValueError(f"X must be 2-D (rows x features), got {a.ndim} dimensions")
    if a.dtype not in (np.float32, np.float64):
        if a.dtype.kind not in "biuf":
            raise ValueError(f"X holds {a.dtype} values, not numbers")
        a = a.astype(np.float64)
    return _native.rows_from_buffer(a, w), None


def _pandas_rows(df, w):
    """A pandas data frame without pyarrow: its numeric columns as one float64 array."""
    names = [str(c) for c in df.columns]
    for j, (name, dtype) in enumerate(zip(names, df.dtypes)):
        if getattr(dtype, "kind", "O") not in "biuf":
            raise ValueError(
                f"column '{name}' (index {j}) is {dtype}, not numeric; "
                "features must be numbers or booleans"
            )
    a = df.to_numpy(dtype=np.float64, na_value=np.nan)
    return _native.rows_from_buffer(a, w, names), names


class KMeans:
    """Lloyd's k-means in the conventions of `sklearn.cluster.KMeans`.

    `init` is "k-means++" (greedy, as scikit-learn), "random", "k-means||" or an array of
    shape (n_clusters, n_features) in input units. `scale` ("none", "standard", "minmax")
    rescales features before clustering; centroids are reported in input units, distances
    and inertia in the clustered space. `device` is "auto" (a GPU when there is one), "cpu"
    or "gpu". `random_state=None` seeds every fit afresh from the operating system; `seed_`
    (and the saved model) tells the seed a fit ran with, so it can be repeated.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | None = 0,
        device: str = "auto",
        scale: str = "none",
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.scale = scale

    # scikit-learn's parameter protocol
    def get_params(self, deep: bool = True) -> dict:
        return {p: getattr(self, p) for p in _PARAMS}

    def set_params(self, **params) -> "KMeans":
        for p, v in params.items():
            if p not in _PARAMS:
                raise ValueError(f"invalid parameter {p!r} for KMeans (valid: {', '.join(_PARAMS)})")
            setattr(self, p, v)
        return self

    def __repr__(self) -> str:
        default = KMeans()
        shown = [
            f"{p}={getattr(self, p)!r}"
            for p in _PARAMS
            if p == "n_clusters" or _differs(getattr(self, p), getattr(default, p))
        ]
        return f"KMeans({', '.join(shown)})"

    def fit(self, X, y=None, sample_weight=None) -> "KMeans":
        rows, names = _rows(X, sample_weight)
        init, centroids = self.init, None
        if not isinstance(init, str):
            centroids = np.ascontiguousarray(np.asarray(init, dtype=np.float64))
            if centroids.shape != (self.n_clusters, len(rows.features)):
                raise ValueError(
                    f"init must have shape ({self.n_clusters}, {len(rows.features)}), "
                    f"got {centroids.shape}"
                )
            centroids = centroids.reshape(-1)
            init = "k-means++"
        model, labels, inertia, n_iter = _native.fit(
            rows,
            int(self.n_clusters),
            init=init,
            centroids=centroids,
            n_init=int(self.n_init),
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            seed=_seed(self.random_state),
            device=self.device,
            scale=self.scale,
        )
        self._set_fitted(model, names)
        self.labels_ = _labels(labels)
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        return self

    def _set_fitted(self, model, names):
        self._model = model
        self.seed_ = model.seed
        self.cluster_centers_ = np.asarray(model.centroids_input_units, dtype=np.float64)
        self.n_features_in_ = len(model.features)
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _check_rows(self, X, sample_weight=None):
        if not hasattr(self, "_model"):
            raise _not_fitted()
        rows, names = _rows(X, sample_weight)
        fitted = getattr(self, "feature_names_in_", None)
        if names is not None and fitted is not None and list(names) != list(fitted):
            raise ValueError(
                f"X has columns {list(names)} but the model was fitted on {list(fitted)}"
            )
        return rows

    def predict(self, X, sample_weight=None) -> np.ndarray:
        rows = self._check_rows(X)
        labels, _, _ = _native.predict(self._model, rows, self.device)
        return _labels(labels)

    def fit_predict(self, X, y=None, sample_weight=None) -> np.ndarray:
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X) -> np.ndarray:
        """Euclidean distance of each row to each centroid, in the clustered space."""
        rows = self._check_rows(X)
        d = _native.transform(self._model, rows)
        return np.frombuffer(d, dtype=np.float64).reshape(-1, self._model.k)

    def fit_transform(self, X, y=None, sample_weight=None) -> np.ndarray:
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None) -> float:
        """Opposite of the (weighted) inertia of X under the model, as scikit-learn."""
        rows = self._check_rows(X, sample_weight)
        _, _, inertia = _native.predict(self._model, rows, self.device)
        return -inertia

    # the command line's model file
    def to_json(self) -> str:
        if not hasattr(self, "_model"):
            raise _not_fitted()
        return self._model.to_json()

    def save(self, path: str | os.PathLike) -> None:
        """Writes the model as the JSON that `lakemeans fit --model` writes."""
        text = self.to_json()
        tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, text: str) -> "KMeans":
        return cls._from_model(_native.Model.from_json(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KMeans":
        """A fitted estimator from a model file (`lakemeans fit --model` or `save`)."""
        return cls._from_model(_native.Model.load(os.fspath(path)))

    @classmethod
    def _from_model(cls, model, names=None) -> "KMeans":
        km = cls(model.k, scale=model.scaling)
        km._set_fitted(model, names if names is not None else model.features)
        km.inertia_ = model.inertia
        km.n_iter_ = model.iterations
        return km


def load(path: str | os.PathLike) -> KMeans:
    """Shorthand for `KMeans.load`."""
    return KMeans.load(path)


def fit_parquet(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    k: int,
    *,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    weight: str | None = None,
    id: Sequence[str] = (),
    drop_invalid: bool = False,
    init: str = "auto",
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: int | None = 0,
    device: str = "auto",
    scale: str = "none",
    memory_budget: int | None = None,
    output: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
) -> KMeans:
    """Fits Parquet files or directories with the streaming engine of `lakemeans fit`.

    The rows stay in memory when they fit `memory_budget` bytes (default: half of physical
    memory) and stream from a spill cache otherwise. `output` writes the assignments (with
    the `id` columns), `model` the JSON model, as the command's flags of the same names.
    Returns a fitted `KMeans`; `labels_` holds every kept row's label.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    m, labels, inertia, n_iter = _native.fit_parquet(
        [os.fspath(p) for p in paths],
        int(k),
        features=None if features is None else list(features),
        exclude=list(exclude),
        weight=weight,
        ids=list(id),
        drop_invalid=drop_invalid,
        init=init,
        n_init=int(n_init),
        max_iter=int(max_iter),
        tol=float(tol),
        seed=_seed(random_state),
        device=device,
        scale=scale,
        memory_budget=memory_budget,
        output=None if output is None else os.fspath(output),
        model=None if model is None else os.fspath(model),
    )
    km = KMeans(
        int(k),
        init=init if init != "auto" else "k-means++",
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        random_state=random_state,
        device=device,
        scale=scale,
    )
    km._set_fitted(m, m.features)
    km.labels_ = _labels(labels)
    km.inertia_ = inertia
    km.n_iter_ = n_iter
    return km


def _labels(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.uint32).astype(np.int32)


def _seed(random_state) -> int:
    """The seed a fit runs with. None draws a fresh one from the operating system's randomness
    for every fit, as scikit-learn does; the fit records it as `seed_` and in the model."""
    if random_state is None:
        return int.from_bytes(os.urandom(8), "little") >> 1
    if isinstance(random_state, (int, np.integer)) and random_state >= 0:
        return int(random_state)
    raise ValueError(f"random_state must be a non-negative integer or None, got {random_state!r}")


def _differs(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return True
    return a != b


def _not_fitted():
    return NotFittedError("this KMeans is not fitted yet; call fit first")
