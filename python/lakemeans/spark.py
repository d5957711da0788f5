"""Lloyd's k-means on a Spark DataFrame, with the passes in lakemeans' native kernels.

Every pass over the rows is one `mapInArrow` job: each partition hands its Arrow batches to
the native code, which returns a small partial result (per-cluster sums, weights, counts and
inertia, or statistics, or sampled candidates). Only those partials reach the driver, never
the rows. Their sums are exact, so the merged result, and with it every label, is the same
however the DataFrame is partitioned.

    from lakemeans.spark import KMeans
    model = KMeans(64, ["f0", "f1", "f2"], maxIter=20).fit(df)
    model.transform(df)          # adds `cluster` and `distance`
    model.save("model.json")     # the command line's --model format
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from . import _native
from . import KMeans as _LocalKMeans

__all__ = ["KMeans", "KMeansModel"]

_PART_SCHEMA = "part binary"


def _check_columns(df, cols: Sequence[str], weight: str | None):
    """Fails before any job when a column is missing or not numeric."""
    from pyspark.sql.types import BooleanType, NumericType

    types = {f.name: f.dataType for f in df.schema.fields}
    for c in list(cols) + ([weight] if weight else []):
        if c not in types:
            raise ValueError(f"no column '{c}' (columns: {', '.join(types)})")
        t = types[c]
        if not isinstance(t, (NumericType, BooleanType)) or (c == weight and isinstance(t, BooleanType)):
            raise ValueError(
                f"column '{c}' is {t.simpleString()}, not numeric; "
                + ("the weight must be a number" if c == weight else "features must be numbers or booleans")
            )


def _rows(batches, cols, weight):
    """A partition's Arrow batches as native rows (None when it has no rows)."""
    import pyarrow as pa

    batches = [b for b in batches if b.num_rows]
    if not batches:
        return None
    t = pa.Table.from_batches(batches)
    w = None
    if weight:
        w = t.column(weight).to_numpy(zero_copy_only=False).astype(np.float32)
        if np.isnan(w).any():
            raise ValueError(f"weight column '{weight}' has a null or NaN")
    return _native.rows_from_stream(t.select(list(cols)), w)


def _job(df, cols, weight, compute):
    """Runs `compute(rows)` on every non-empty partition and returns the partials (bytes) in
    partition order."""
    import pyarrow as pa
    from pyspark import TaskContext

    def run(batches):
        rows = _rows(batches, cols, weight)
        if rows is None:
            return
        pid = TaskContext.get().partitionId()
        yield pa.RecordBatch.from_pydict(
            {"pid": [pid], "part": [bytes(compute(rows))]},
            schema=pa.schema([("pid", pa.int32()), ("part", pa.binary())]),
        )

    got = df.mapInArrow(run, "pid int, " + _PART_SCHEMA).collect()
    return [bytes(r["part"]) for r in sorted(got, key=lambda r: r["pid"])]


class KMeans:
    """Spark MLlib's `KMeans` parameters, run by lakemeans.

    `initMode` is "k-means||" (distributed, the library's k-means|| with draws keyed by row
    values so any partitioning agrees) or "random" (k rows with the smallest seeded keys);
    `initCentroids` (k x features, input units) overrides it. `scale` is "none", "standard"
    or "minmax", learned in one distributed pass. Empty clusters keep their centroid.
    """

    def __init__(
        self,
        k: int,
        inputCols: Sequence[str],
        *,
        weightCol: str | None = None,
        maxIter: int = 20,
        tol: float = 1e-4,
        seed: int = 0,
        initMode: str = "k-means||",
        initCentroids=None,
        initSteps: int = 2,
        device: str = "auto",
        scale: str = "none",
    ):
        if k < 1:
            raise ValueError("--k must be at least 1")
        if initMode not in ("k-means||", "random"):
            raise ValueError(f"initMode must be 'k-means||' or 'random', got '{initMode}'")
        if not inputCols:
            raise ValueError("inputCols names no column")
        self.k = int(k)
        self.inputCols = list(inputCols)
        self.weightCol = weightCol
        self.maxIter = int(maxIter)
        self.tol = float(tol)
        self.seed = int(seed)
        self.initMode = initMode
        self.initCentroids = initCentroids
        self.initSteps = int(initSteps)
        self.device = device
        self.scale = scale

    def fit(self, df) -> "KMeansModel":
        cols, weight, k = self.inputCols, self.weightCol, self.k
        _check_columns(df, cols, weight)
        dim, device, seed = len(cols), self.device, self.seed
        # Every pass reads the same columns: keep them cached, as MLlib caches its vectors.
        df = df.select(*cols, *([weight] if weight else [])).persist()
        try:
            return self._fit(df, dim, device, seed)
        finally:
            df.unpersist()

    def _fit(self, df, dim, device, seed) -> "KMeansModel":
        cols, weight, k = self.inputCols, self.weightCol, self.k

        stats = _job(df, cols, weight, _native.stats)
        scaler, tol_unit, rows = _native.reduce_stats(stats, dim, self.scale)
        if rows < k:
            raise ValueError(f"--k {k} is larger than the number of rows ({rows})")

        if self.initCentroids is not None:
            c = np.asarray(self.initCentroids, dtype=np.float64)
            if c.shape != (k, dim):
                raise ValueError(f"initCentroids must have shape ({k}, {dim}), got {c.shape}")
            centroids = bytes(_native.scale_centroids(scaler, c.reshape(-1).tolist()))
        elif self.initMode == "random":
            centroids = self._smallest(df, scaler, k)
        else:
            centroids = self._kmeans_parallel(df, scaler)

        iterations, tol = 0, self.tol * tol_unit
        for _ in range(self.maxIter):
            parts = _job(df, cols, weight, lambda r, c=centroids: _native.partials(r, scaler, c, k, device))
            centroids, shift, _, _, _ = _native.lloyd_update(centroids, parts)
            centroids = bytes(centroids)
            iterations += 1
            if shift <= tol:
                break
        parts = _job(df, cols, weight, lambda r, c=centroids: _native.partials(r, scaler, c, k, device))
        _, _, cost, _, _ = _native.lloyd_update(centroids, parts)
        model = _native.model(cols, scaler, centroids, cost, rows, iterations, seed)
        return KMeansModel(model, weightCol=weight, device=device)

    def _smallest(self, df, scaler, m):
        cols, weight, seed = self.inputCols, self.weightCol, self.seed
        parts = _job(df, cols, weight, lambda r: _native.smallest_keys(r, scaler, m, seed))
        return bytes(_native.merge_smallest(parts, len(cols), m))

    def _kmeans_parallel(self, df, scaler):
        """k-means|| as the library runs it, each pass a job: a first centre, `initSteps`
        rounds of draws with probability l·w·D²/φ (l = 2k), then the candidates weighted by
        their nearest rows and reduced to k centres on the driver."""
        cols, weight, k, seed, device = self.inputCols, self.weightCol, self.k, self.seed, self.device
        dim = len(cols)
        cands = self._smallest(df, scaler, 1)
        for rnd in range(self.initSteps):
            m = len(cands) // (4 * dim)
            parts = _job(df, cols, weight, lambda r, c=cands, m=m: _native.partials(r, scaler, c, m, device))
            _, _, phi, _, _ = _native.lloyd_update(cands, parts)
            if phi <= 0:
                break
            scale = 2.0 * k / phi
            parts = _job(
                df, cols, weight,
                lambda r, c=cands, s=scale, n=rnd: _native.sample(r, scaler, c, s, seed, n, device),
            )
            cands += bytes(_native.merge_samples(parts, dim))
        m = len(cands) // (4 * dim)
        parts = _job(df, cols, weight, lambda r, c=cands, m=m: _native.partials(r, scaler, c, m, device))
        centres = _native.reduce(cands, parts, k, seed)
        if centres is not None:
            return bytes(centres)
        # k or fewer distinct candidates carry weight: keep them, add rows with small keys.
        _, _, _, counts, _ = _native.lloyd_update(cands, parts)
        live = [cands[4 * dim * i : 4 * dim * (i + 1)] for i, n in enumerate(counts) if n > 0]
        extra = self._smallest(df, scaler, k)
        for i in range(k):
            if len(live) == k:
                break
            row = extra[4 * dim * i : 4 * dim * (i + 1)]
            if row not in live:
                live.append(row)
        if len(live) < k:
            raise ValueError(f"the table has fewer than k = {k} distinct rows")
        return b"".join(live)


class KMeansModel:
    """A fitted model: the command line's JSON model, applied to DataFrames."""

    def __init__(self, model, *, weightCol=None, device="auto"):
        self._model = model
        self._weightCol = weightCol
        self.device = device

    def clusterCenters(self) -> list:
        """Centroids in input units, one NumPy array each (as pyspark.ml)."""
        return [np.asarray(c) for c in self._model.centroids_input_units]

    @property
    def trainingCost(self) -> float:
        return self._model.inertia

    @property
    def iterations(self) -> int:
        return self._model.iterations

    @property
    def inputCols(self) -> list:
        return list(self._model.features)

    def transform(self, df):
        """`df` with `cluster` (int) and `distance` (the squared distance to the centroid in
        clustered space, as the command line's assignments) added."""
        import pyarrow as pa
        from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

        cols = self.inputCols
        _check_columns(df, cols, None)
        # The model travels to the workers as its JSON.
        text, device = self._model.to_json(), self.device

        def run(batches):
            model = _native.Model.from_json(text)
            for b in batches:
                if not b.num_rows:
                    continue
                rows = _native.rows_from_stream(pa.Table.from_batches([b]).select(cols))
                labels, dist, _ = _native.predict(model, rows, device)
                yield pa.RecordBatch.from_arrays(
                    b.columns
                    + [
                        pa.array(np.frombuffer(labels, dtype=np.uint32).astype(np.int32)),
                        pa.array(np.frombuffer(dist, dtype=np.float32)),
                    ],
                    names=b.schema.names + ["cluster", "distance"],
                )

        schema = StructType(
            df.schema.fields
            + [StructField("cluster", IntegerType()), StructField("distance", FloatType())]
        )
        return df.mapInArrow(run, schema)

    def toLocal(self) -> _LocalKMeans:
        """The same model as a `lakemeans.KMeans`."""
        return _LocalKMeans.from_json(self._model.to_json())

    def save(self, path: str | os.PathLike) -> None:
        """Writes the command line's JSON model (`lakemeans predict --model` reads it)."""
        self.toLocal().save(path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "KMeansModel":
        return cls(_native.Model.load(os.fspath(path)), device=device)
