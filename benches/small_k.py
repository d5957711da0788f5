#!/usr/bin/env python3
"""Per-iteration Lloyd time at the common shape (millions of rows, few features, few clusters):
lakemeans against faiss-cpu and against the memory-copy bound, in one run.

For each (d, k) it runs, alternately and --repeats times:
  * `lakemeans bench --n N --d D --k K --json --copy` for each lakemeans binary given (seconds
    per Lloyd iteration on data in memory, and the seconds to copy the same f32 matrix with
    every thread, the bandwidth bound of a pass; a binary without `--copy` is timed without it);
  * faiss-cpu through the peers' script (`kmeans_peers.py run --peer faiss`) on an N x D table
    from its own generator, from one initial-centroid file per (d, k), for --iters iterations:
    its fit seconds over the iterations.
Prints one JSON line per run, then a Markdown table of medians.

Run through benches/small_k.sh, which builds lakemeans and finds the peers' Python.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def lakemeans_bench(binary, n, d, k, iters, copy):
    cmd = [binary, "bench", "--device", "cpu", "--n", str(n), "--d", str(d), "--k", str(k),
           "--iters", str(iters), "--json"] + (["--copy"] if copy else [])
    [r] = json.loads(run(cmd))
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lakemeans", action="append", required=True,
                    help="NAME=PATH of a lakemeans binary; repeat to compare builds")
    ap.add_argument("--peers", required=True, help="path of kmeans_peers.py")
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--dims", default="16")
    ap.add_argument("--ks", default="10")
    ap.add_argument("--iters", type=int, default=30, help="faiss iterations per run")
    ap.add_argument("--bench-iters", type=int, default=5, help="timed lakemeans iterations per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="lakemeans-small-k-")
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    builds = [tuple(s.split("=", 1)) for s in a.lakemeans]
    has_copy = {name: "--copy" in run([path, "bench", "--help"]) for name, path in builds}
    dims = [int(v) for v in a.dims.split(",")]
    ks = [int(v) for v in a.ks.split(",")]
    rows = []
    for d in dims:
        data = os.path.join(work, f"n{a.rows}_d{d}.parquet")
        if not os.path.exists(data):
            run([py, a.peers, "gen", "--rows", str(a.rows), "--dims", str(d), "--clusters", "10",
                 "--output", data])
        for k in ks:
            init = os.path.join(work, f"n{a.rows}_d{d}_k{k}_init.parquet")
            if not os.path.exists(init):
                run([py, a.peers, "init", "--input", data, "--k", str(k), "--output", init])
            times = {name: [] for name, _ in builds}
            times["faiss"] = []
            copies = []
            for rep in range(a.repeats):
                for name, path in builds:
                    r = lakemeans_bench(path, a.rows, d, k, a.bench_iters, has_copy[name])
                    times[name].append(r["seconds_per_iter"])
                    if "copy_seconds" in r:
                        copies.append(r["copy_seconds"])
                    print(json.dumps({"d": d, "k": k, "repeat": rep, "tool": name, **r}), flush=True)
                out = run([py, a.peers, "run", "--input", data, "--k", str(k), "--init", init,
                           "--iters", str(a.iters), "--tol", "0", "--peer", "faiss",
                           "--threads", str(a.threads), "--output-dir", work])
                j = json.loads(out.strip().splitlines()[-1])
                times["faiss"].append(j["fit_s"] / a.iters)
                print(json.dumps({"d": d, "k": k, "repeat": rep, "tool": "faiss",
                                  "seconds_per_iter": j["fit_s"] / a.iters, **j}), flush=True)
            med = {t: statistics.median(v) for t, v in times.items()}
            rows.append((d, k, med, statistics.median(copies) if copies else None))
    names = [name for name, _ in builds]
    print()
    print(f"n = {a.rows:,}, {a.threads} threads, median of {a.repeats}; seconds per Lloyd iteration")
    print()
    head = " | ".join(f"{n} s/it" for n in names)
    print(f"| d | k | {head} | faiss-cpu s/it | {names[-1]} vs faiss-cpu | copy s | {names[-1]} / copy |")
    print("|---|---|" + "---|" * (len(names) + 4))
    for d, k, med, copy in rows:
        cells = " | ".join(f"{med[n]:.4f}" for n in names)
        last = med[names[-1]]
        c = f"{copy:.4f} | {last / copy:.2f}" if copy else "– | –"
        print(f"| {d} | {k} | {cells} | {med['faiss']:.4f} | {med['faiss'] / last:.2f}× | {c} |")


if __name__ == "__main__":
    sys.exit(main())
