"""lakemeans.spark against Spark MLlib's KMeans on one table, end to end, in one run.

    lakemeans gen --rows 2000000 --features 32 --clusters 64 --seed 1 --output /tmp/gen2m.parquet
    python benches/spark.py /tmp/gen2m.parquet --k 64 --iters 10

Both fits read the same Parquet table on local[2], start from k-means|| with the same number
of rounds, run the given number of Lloyd iterations with tol 0, and are timed from the read
to the fitted model (MLlib's time includes its VectorAssembler). Before either, an untimed job
sums every feature column, so the JVM's first Parquet scan is paid by neither fit (whichever
ran first used to pay for it alone). Each prints its seconds and its training cost
(inertia). `--passes` also prints the seconds of each lakemeans pass (a
Spark job), as the driver sees them: whether it read the rows through Spark or the row files.
"""

import argparse
import os
import sys
import time

from pyspark.sql import SparkSession


def time_passes():
    """Wraps the two kinds of lakemeans pass to print their seconds."""
    import lakemeans.spark as ls

    def timed(name, run):
        def wrapper(self, compute, *args, **kwargs):
            t = time.perf_counter()
            got = run(self, compute, *args, **kwargs)
            print(f"  pass over {name}: {time.perf_counter() - t:.2f} s", flush=True)
            return got

        return wrapper

    ls._Passes._from_rows = timed("the rows", ls._Passes._from_rows)
    ls._Passes._from_files = timed("the row files", ls._Passes._from_files)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("table")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--passes", action="store_true", help="print the seconds of each lakemeans pass")
    a = ap.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(a.master)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "6g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    cols = [c for c in spark.read.parquet(a.table).columns if c.startswith("f")]
    from pyspark.sql import functions as F

    t = time.perf_counter()
    spark.read.parquet(a.table).agg(*[F.sum(c) for c in cols]).collect()
    print(f"warm-up (sum of every feature, untimed in either fit): {time.perf_counter() - t:.1f} s")

    from lakemeans.spark import KMeans as LmKMeans

    if a.passes:
        time_passes()

    t = time.perf_counter()
    df = spark.read.parquet(a.table)
    lm = LmKMeans(a.k, cols, maxIter=a.iters, tol=0.0, seed=1, device="cpu").fit(df)
    t_lm = time.perf_counter() - t
    print(f"lakemeans.spark: {t_lm:.1f} s, {lm.iterations} iterations, cost {lm.trainingCost:.6e}")

    from pyspark.ml.clustering import KMeans as MlKMeans
    from pyspark.ml.feature import VectorAssembler

    t = time.perf_counter()
    df = spark.read.parquet(a.table)
    vec = VectorAssembler(inputCols=cols, outputCol="features").transform(df)
    ml = MlKMeans(k=a.k, maxIter=a.iters, tol=0.0, seed=1, initSteps=2).fit(vec)
    t_ml = time.perf_counter() - t
    s = ml.summary
    print(f"pyspark.ml: {t_ml:.1f} s, {s.numIter} iterations, cost {s.trainingCost:.6e}")
    print(f"speed-up: {t_ml / t_lm:.2f}x")
    spark.stop()


if __name__ == "__main__":
    main()
