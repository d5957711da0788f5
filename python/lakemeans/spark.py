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
import shutil
import threading
import uuid
from typing import Sequence

import numpy as np

from . import _native
from . import KMeans as _LocalKMeans

__all__ = ["KMeans", "KMeansModel"]

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
    """A partition's Arrow batches (the features `cols`, then the weight if any, under
    positional names) as native rows (None when it has no rows)."""
    import pyarrow as pa

    batches = [b for b in batches if b.num_rows]
    if not batches:
        return None
    t = pa.Table.from_batches(batches)
    w = None
    if weight:
        w = t.column(len(cols)).to_numpy(zero_copy_only=False).astype(np.float32)
        if np.isnan(w).any():
            raise ValueError(f"weight column '{weight}' has a null or NaN")
    # The columns' own names again, for the messages about bad values.
    feats = t.select(list(range(len(cols)))).rename_columns(list(cols))
    return _native.rows_from_stream(feats, w)


def _column(name: str):
    """The top-level column `name`, even when it holds a dot or a backtick (a plain name
    would read `a.b` as field b of a struct a)."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _positional(j: int) -> str:
    """The name column j takes on its way to the Python workers: `mapInArrow` fails on
    input columns whose names hold a dot or a backtick."""
    return f"_lakemeans_{j}"


def _inputs(df, cols: Sequence[str], weight: str | None):
    """The feature columns and the weight under positional names, doubles cast to float by
    Spark: half the bytes to send to the Python workers, and the same rounding (to nearest,
    ties to even) as the native reader."""
    from pyspark.sql.types import DoubleType

    types = {f.name: f.dataType for f in df.schema.fields}
    out = []
    for j, c in enumerate(cols):
        col = _column(c).cast("float") if isinstance(types[c], DoubleType) else _column(c)
        out.append(col.alias(_positional(j)))
    if weight:
        out.append(_column(weight).alias(_positional(len(cols))))
    return df.select(*out)


_PARTS = "pid int, parts array<binary>, miss boolean"


def _answer(pid, parts, miss=False):
    """One task's reply: its partition, its results (None for no rows) and whether it missed
    the row files."""
    import pyarrow as pa

    return pa.RecordBatch.from_pydict(
        {"pid": [pid], "parts": [parts], "miss": [miss]},
        schema=pa.schema([("pid", pa.int32()), ("parts", pa.list_(pa.binary())), ("miss", pa.bool_())]),
    )


def _row_file(fit_id: str, pid: int, make: bool = False) -> str:
    """Where a fit keeps a partition's rows on a worker's host: Spark's per-application files
    directory, which Spark removes when the application ends."""
    from pyspark import SparkFiles

    folder = os.path.join(SparkFiles.getRootDirectory(), f"lakemeans-{fit_id}")
    if make:
        os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"part-{pid}.rows")


def _state_file(fit_id: str, pid: int) -> str:
    """Where a partition keeps its rows' nearest k-means|| candidates between passes (beside
    its row file, in the folder that file's pass made)."""
    return _row_file(fit_id, pid)[: -len(".rows")] + ".near"


class _Passes:
    """The passes of one fit, each a `mapInArrow` job whose tasks return small partials.

    Only the first pass takes the rows through Spark (cached columns to Arrow, to the Python
    worker, to native rows): it leaves each partition's native rows in a file on the worker's
    host. Later passes run over a DataFrame of one row per partition that has rows, and task
    j reads the file of the j-th of them instead. Spark gives a task to whichever Python
    worker is idle, so a file, which every worker of the host can read, keeps the rows where
    worker memory would not. When a task finds no file (a task on another host, a lost
    executor), the pass runs again over the rows, which writes the files again; from then on
    the DataFrame is cached, as MLlib caches its input. Every result is the same bits whichever
    way a pass ran. On a single host (`local` masters), the last pass removes each file once
    its task has read it; `close` removes whatever is left (a fit that failed, or stopped
    before its last pass), and always on a cluster, where a rerun pass can leave copies on
    other hosts.
    """

    def __init__(self, df, cols, weight):
        self.df, self.cols, self.weight = df, list(cols), weight
        self.spark = df.sparkSession
        self.fit_id = uuid.uuid4().hex
        self.partitions = None  # known after the first pass
        self.live = None  # the partitions that have rows, known after the first pass
        self.cached = False
        self.removed = False  # whether the last pass removed every row file
        self.one_host = self.spark.sparkContext.master.startswith("local")

    def run(self, compute, last=False):
        """`compute(rows, state)` (a list of bytes) of every partition that has rows, in
        partition order; `state` is a path where the partition may keep what the next pass
        needs. `last` says no pass follows, so the row files can go."""
        if self.live is not None:
            got = self._from_files(compute, last)
            if got is not None:
                self.removed = last and self.one_host
                return got
            if not self.cached:
                self.df = self.df.persist()
                self.cached = True
        return self._from_rows(compute, keep=not last)

    def _from_rows(self, compute, keep):
        from pyspark import TaskContext

        cols, weight, fit_id = self.cols, self.weight, self.fit_id

        def run(batches):
            pid = TaskContext.get().partitionId()
            rows = _rows(batches, cols, weight)
            if rows is None:
                yield _answer(pid, None)
                return
            path = _row_file(fit_id, pid, make=True)
            state = _state_file(fit_id, pid)
            if not keep:
                yield _answer(pid, [bytes(b) for b in compute(rows, state)])
                return
            # The file is written while the pass computes: both release the GIL, and the
            # write mostly waits for the disk.
            failed = []

            def save():
                try:
                    _native.save_rows(rows, path)
                except BaseException as e:  # raised again on the task's thread
                    failed.append(e)

            saver = threading.Thread(target=save)
            saver.start()
            try:
                parts = [bytes(b) for b in compute(rows, state)]
            finally:
                saver.join()
            if failed:
                raise failed[0]
            yield _answer(pid, parts)

        got = sorted(self.df.mapInArrow(run, _PARTS).collect(), key=lambda r: r["pid"])
        self.partitions = len(got)
        self.live = [r["pid"] for r in got if r["parts"] is not None]
        return [[bytes(b) for b in r["parts"]] for r in got if r["parts"] is not None]

    def _from_files(self, compute, last):
        """The pass over the row files, or None when a task found none. Task j reads the
        file of the j-th partition that has rows."""
        from pyspark import TaskContext

        cols, fit_id, live = self.cols, self.fit_id, list(self.live)

        def run(batches):
            for _ in batches:
                pass
            pid = live[TaskContext.get().partitionId()]
            path = _row_file(fit_id, pid)
            rows = _native.load_rows(path, cols)
            if rows is None:
                yield _answer(pid, None, miss=True)
                return
            state = _state_file(fit_id, pid)
            if last:
                try:
                    os.remove(path)
                    os.rmdir(os.path.dirname(path))
                except OSError:
                    pass  # another attempt removed it, or other partitions' files are there
            yield _answer(pid, [bytes(b) for b in compute(rows, state)])

        n = len(live)
        if n == 0:
            return []
        got = self.spark.range(0, n, 1, n).mapInArrow(run, _PARTS).collect()
        if any(r["miss"] for r in got) or sorted(r["pid"] for r in got) != live:
            return None
        return [[bytes(b) for b in r["parts"]] for r in sorted(got, key=lambda r: r["pid"])]

    def close(self):
        """Removes the row files the last pass did not (on every host that ran a task), and
        Spark's cache if any."""
        fit_id = self.fit_id

        def run(batches):
            for _ in batches:
                pass
            shutil.rmtree(os.path.dirname(_row_file(fit_id, 0)), ignore_errors=True)
            return iter(())

        try:
            if not self.removed:
                # A first pass that failed has not counted the partitions.
                n = self.partitions or self.df.rdd.getNumPartitions()
                self.spark.range(0, n, 1, n).mapInArrow(run, "id long").collect()
        finally:
            if self.cached:
                self.df.unpersist()


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
        cols, weight = self.inputCols, self.weightCol
        _check_columns(df, cols, weight)
        passes = _Passes(_inputs(df, cols, weight), cols, weight)
        try:
            return self._fit(passes)
        finally:
            passes.close()

    def _fit(self, passes) -> "KMeansModel":
        cols, weight, k, seed, device = self.inputCols, self.weightCol, self.k, self.seed, self.device
        dim = len(cols)

        # The first pass: statistics, and the k rows with the smallest seeded keys (random
        # init's centres; k-means||'s first centre and its top-up), under the seed the
        # command line's k-means|| draws with.
        draw_seed = _native.parallel_seed(seed)
        first = passes.run(lambda r, _: [_native.stats(r), _native.smallest_keys(r, k, draw_seed)])
        scaler, tol_unit, rows = _native.reduce_stats([p[0] for p in first], dim, self.scale)
        if rows < k:
            raise ValueError(f"--k {k} is larger than the number of rows ({rows})")
        spare = bytes(_native.merge_smallest([p[1] for p in first], dim, k, scaler))

        if self.initCentroids is not None:
            c = np.asarray(self.initCentroids, dtype=np.float64)
            if c.shape != (k, dim):
                raise ValueError(f"initCentroids must have shape ({k}, {dim}), got {c.shape}")
            centroids = bytes(_native.scale_centroids(scaler, c.reshape(-1).tolist()))
        elif self.initMode == "random":
            if len(spare) < 4 * k * dim:
                raise ValueError(f"the table has fewer than k = {k} rows with positive weight")
            centroids = spare
        else:
            centroids = self._kmeans_parallel(passes, scaler, spare, draw_seed)

        iterations, tol, cost = 0, self.tol * tol_unit, None
        for _ in range(self.maxIter):
            parts = passes.run(
                lambda r, _, c=centroids: [_native.partials(r, scaler, c, k, device)]
            )
            moved, shift, cost, _, _ = _native.lloyd_update(centroids, [p[0] for p in parts])
            iterations += 1
            if bytes(moved) == centroids:
                break  # the pass's cost is the final centroids' cost: no pass needed for it
            centroids, cost = bytes(moved), None
            if shift <= tol:
                break
        if cost is None:
            parts = passes.run(
                lambda r, _, c=centroids: [_native.partials(r, scaler, c, k, device)], last=True
            )
            _, _, cost, _, _ = _native.lloyd_update(centroids, [p[0] for p in parts])
        model = _native.model(cols, scaler, centroids, cost, rows, iterations, seed)
        return KMeansModel(model, weightCol=weight, device=device)

    def _kmeans_parallel(self, passes, scaler, spare, draw_seed):
        """The library's k-means|| (l = 2k), its passes run as jobs: a round's pass returns
        each partition's part of φ and the rows it may draw; the last pass weights the
        candidates by their nearest rows. Each partition keeps its rows' nearest candidates
        in a state file, so a pass measures only the newest candidates, as the command
        line's does; it runs on the CPU, as there. The library's loop makes every decision."""

        def round_pass(batches, l, key):
            parts = passes.run(lambda r, s: [_native.round_share(r, scaler, s, batches, l, key)])
            return [p[0] for p in parts]

        def weights_pass(batches):
            parts = passes.run(lambda r, s: [_native.weight_share(r, scaler, s, batches)])
            return [p[0] for p in parts]

        return bytes(
            _native.kmeans_parallel(
                round_pass, weights_pass, spare, len(self.inputCols), self.k, self.initSteps, 2.0, draw_seed
            )
        )


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
        # The model travels to the workers as its JSON; the columns go under positional names
        # (see `_positional`) and get theirs back at the end.
        text, device = self._model.to_json(), self.device
        names = df.columns
        at = [names.index(c) for c in cols]

        def run(batches):
            model = _native.Model.from_json(text)
            for b in batches:
                if not b.num_rows:
                    continue
                feats = pa.Table.from_batches([b]).select(at).rename_columns(cols)
                rows = _native.rows_from_stream(feats)
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
            [
                StructField(_positional(j), f.dataType, f.nullable)
                for j, f in enumerate(df.schema.fields)
            ]
            + [StructField("cluster", IntegerType()), StructField("distance", FloatType())]
        )
        positional = df.toDF(*[_positional(j) for j in range(len(names))])
        return positional.mapInArrow(run, schema).toDF(*names, "cluster", "distance")

    def toLocal(self) -> _LocalKMeans:
        """The same model as a `lakemeans.KMeans`."""
        return _LocalKMeans.from_json(self._model.to_json())

    def save(self, path: str | os.PathLike) -> None:
        """Writes the command line's JSON model (`lakemeans predict --model` reads it)."""
        self.toLocal().save(path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "KMeansModel":
        return cls(_native.Model.load(os.fspath(path)), device=device)
