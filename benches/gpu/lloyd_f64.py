#!/usr/bin/env python3
"""lloyd_f64.py DATA.parquet INIT.parquet MAX_ITER: a float64 Lloyd reference on a CUDA GPU.

Runs Lloyd's algorithm from the given initial centroids in float64 with PyTorch, stopping like
`lakemeans fit --tol 0` (after MAX_ITER updates, or as soon as no label changes), and prints one
JSON line with the iterations run and the inertia of the final assignment (exact squared
distances, summed in float64). Empty clusters keep their centroid. It is the reference that the
fp32 GPU figures in BENCHMARKS.md are checked against: scores are formed in float64, so a near-tie
between centroids is decided correctly where an fp32 expansion can flip it."""
import json, sys

import numpy as np, pyarrow.parquet as pq, torch


def load(path):
    t = pq.read_table(path)
    cols = [c for c in t.column_names if c.startswith("f")]
    return torch.from_numpy(np.column_stack([t.column(c).to_numpy() for c in cols]).astype(np.float64))


def main():
    data, init, max_iter = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dev = torch.device("cuda")
    X, C = load(data).to(dev), load(init).to(dev)
    n, k = X.shape[0], C.shape[0]
    chunk = max(1024, min(n, (2 << 30) // (8 * k)))
    xx = (X * X).sum(1)

    def assign(C):
        cc = (C * C).sum(1)
        lab = torch.empty(n, dtype=torch.long, device=dev)
        for s in range(0, n, chunk):
            sc = torch.addmm(cc, X[s:s + chunk], C.T, beta=1.0, alpha=-2.0) + xx[s:s + chunk, None]
            lab[s:s + chunk] = sc.argmin(1)
        return lab

    lab = assign(C)
    it = 0
    while it < max_iter:
        sums = torch.zeros_like(C).index_add_(0, lab, X)
        cnt = torch.zeros(k, dtype=torch.float64, device=dev).index_add_(0, lab, torch.ones(n, dtype=torch.float64, device=dev))
        nz = cnt > 0
        C[nz] = sums[nz] / cnt[nz, None]
        it += 1
        new = assign(C)
        changed = int((new != lab).sum())
        lab = new
        if changed == 0:
            break
    inertia = 0.0
    for s in range(0, n, chunk):
        inertia += float(((X[s:s + chunk] - C[lab[s:s + chunk]]) ** 2).sum())
    print(json.dumps({"peer": "torch-lloyd-f64", "rows": n, "dims": X.shape[1], "k": k,
                      "iterations": it, "converged": it < max_iter or changed == 0, "inertia": inertia}))


if __name__ == "__main__":
    main()
