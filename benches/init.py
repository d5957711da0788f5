#!/usr/bin/env python3
"""Initialisation against Lloyd time, and k-means++ quality, beside scikit-learn.

  speed    For each k: `lakemeans fit --device cpu --tol 0 --json` gives seconds.init and the
           Lloyd time (fit - init over the iterations plus the final assignment pass);
           scikit-learn's `kmeans_plusplus` is timed on the same float32 matrix, and so is
           copying that matrix k times (the floor the k passes of greedy k-means++ sit on).
  quality  Over seeds 0..n-1, `lakemeans fit --n-init 1` against scikit-learn's
           KMeans(init="k-means++", n_init=1), both with max_iter 300 and tol 1e-4; prints the
           mean final inertias and their ratio.

`--init` picks lakemeans' method (k-means++, k-means|| or random) for both commands;
scikit-learn always runs its greedy k-means++.
  digits   Writes scikit-learn's digits (1797 x 64) to Parquet, for `quality`.

Prints one JSON line per measurement. Run it with the python that ../shared/peers/setup.sh
prints; the commands are in BENCHMARKS.md.
"""
import argparse, json, subprocess, sys, time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def load(path):
    t = pq.read_table(path)
    cols = [f.name for f in t.schema if f.name.startswith("f") and pa.types.is_floating(f.type)]
    X = np.column_stack([t.column(c).to_numpy().astype(np.float32) for c in cols])
    return np.ascontiguousarray(X), cols


def lakemeans(a, table, cols, k, *extra):
    cmd = [a.lakemeans, "fit", table, "--k", str(k), "--features", ",".join(cols),
           "--scale", "none", "--device", "cpu", "--init", a.init, "--json", *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def cmd_speed(a):
    X, cols = load(a.table)
    from sklearn.cluster import kmeans_plusplus
    for k in a.k:
        dst = np.empty_like(X)
        t = time.perf_counter()
        for _ in range(k):
            np.copyto(dst, X)
        copy_s = time.perf_counter() - t
        del dst
        j = lakemeans(a, a.table, cols, k, "--max-iter", str(a.max_iter), "--tol", "0",
                      "--seed", "0")
        s = j["seconds"]
        passes = j["iterations"] + 1
        lloyd_it = (s["fit"] - s["init"]) / passes
        sk_s = None
        if not a.skip_sklearn:
            t = time.perf_counter()
            kmeans_plusplus(X, k, random_state=0)
            sk_s = time.perf_counter() - t
        print(json.dumps({
            "rows": len(X), "dims": X.shape[1], "k": k, "init": j["init"],
            "lakemeans_init_s": round(s["init"], 3),
            "lakemeans_lloyd_iter_s": round(lloyd_it, 4),
            "init_over_iter": round(s["init"] / lloyd_it, 2),
            "copy_matrix_k_times_s": round(copy_s, 3),
            "sklearn_kmeans_plusplus_s": sk_s and round(sk_s, 3),
            "sklearn_over_lakemeans": sk_s and round(sk_s / s["init"], 2),
        }), flush=True)


def cmd_quality(a):
    X, cols = load(a.table)
    from sklearn.cluster import KMeans
    ours, theirs = [], []
    for seed in range(a.seeds):
        j = lakemeans(a, a.table, cols, a.k[0], "--n-init", "1", "--seed", str(seed))
        ours.append(j["inertia"])
        km = KMeans(a.k[0], init="k-means++", n_init=1, random_state=seed).fit(X)
        theirs.append(float(km.inertia_))
        print(json.dumps({"seed": seed, "lakemeans": ours[-1], "sklearn": theirs[-1]}),
              flush=True)
    print(json.dumps({
        "table": a.table, "rows": len(X), "dims": X.shape[1], "k": a.k[0], "seeds": a.seeds,
        "init": a.init,
        "lakemeans_mean_inertia": float(np.mean(ours)),
        "sklearn_mean_inertia": float(np.mean(theirs)),
        "ratio": float(np.mean(ours) / np.mean(theirs)),
        "lakemeans": ours, "sklearn": theirs,
    }), flush=True)


def cmd_digits(a):
    from sklearn.datasets import load_digits
    X = load_digits().data.astype(np.float32)
    pq.write_table(pa.table({f"f{j}": pa.array(X[:, j]) for j in range(X.shape[1])}), a.table)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("command", choices=["speed", "quality", "digits"])
    p.add_argument("table")
    p.add_argument("--lakemeans", default="target/release/lakemeans")
    p.add_argument("--k", type=lambda s: [int(v) for v in s.split(",")], default=[64])
    p.add_argument("--max-iter", type=int, default=10)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--skip-sklearn", action="store_true",
                   help="speed: leave out kmeans_plusplus (hours at k = 20000 on this machine)")
    p.add_argument("--init", default="k-means++", choices=["k-means++", "k-means||", "random"])
    a = p.parse_args()
    {"speed": cmd_speed, "quality": cmd_quality, "digits": cmd_digits}[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
