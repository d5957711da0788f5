#!/usr/bin/env python3
"""lakemeans against faiss-cpu and scikit-learn, end to end, on the same Parquet files.

Generates the workloads with the peers' own generator, draws one initial-centroid file per
workload, then runs lakemeans and each peer alternately (Parquet in, fit, assignments Parquet
out), timing whole processes and recording peak memory. Prints one JSON line per run and a
table of medians and ratios at the end.

Run through benches/peers.sh, which builds lakemeans and the peers' Python environment.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

WORKLOADS = {
    # name: rows, dims, k, iterations
    "W1": (1_000_000, 32, 64, 20),
    "W2": (200_000, 128, 1024, 10),
}


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS in MB, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB=%M"] + cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    rss = next(int(l.split("=")[1]) for l in p.stderr.splitlines() if l.startswith("MAXRSS_KB="))
    return wall, rss / 1024, p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lakemeans", required=True)
    ap.add_argument("--peers", required=True, help="path of kmeans_peers.py")
    ap.add_argument("--workloads", default="W1,W2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--with-sklearn", action="store_true")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="lakemeans-peers-")
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    summary = []
    for name in a.workloads.split(","):
        n, d, k, iters = WORKLOADS[name]
        data = os.path.join(work, f"{name}.parquet")
        init = os.path.join(work, f"{name}_init.parquet")
        if not os.path.exists(data):
            subprocess.run([py, a.peers, "gen", "--rows", str(n), "--dims", str(d), "--clusters", str(k), "--output", data], check=True)
            subprocess.run([py, a.peers, "init", "--input", data, "--k", str(k), "--output", init], check=True)
        matrix_mb = n * d * 4 / 2**20
        runs = {"lakemeans": [], "faiss": []}
        if a.with_sklearn:
            runs["sklearn"] = []
        for rep in range(a.repeats):
            for tool in runs:
                if tool == "lakemeans":
                    out = os.path.join(work, f"{name}_lakemeans.parquet")
                    wall, rss, stdout = timed([
                        a.lakemeans, "fit", data, "--k", str(k), "--init", init, "--scale", "none",
                        "--tol", "0", "--max-iter", str(iters), "--device", "cpu", "--threads", str(a.threads),
                        "--id", "customer_id", "--exclude", "label", "--output", out, "--json"])
                    j = json.loads(stdout)
                    fit, inertia = j["seconds"]["fit"], j["inertia"]
                else:
                    wall, rss, stdout = timed([py, a.peers, "run", "--input", data, "--k", str(k), "--init", init,
                                               "--iters", str(iters), "--tol", "0", "--peer", tool,
                                               "--threads", str(a.threads), "--output-dir", work])
                    j = json.loads(stdout.strip().splitlines()[-1])
                    fit, inertia = j["fit_s"], j["inertia"]
                rec = {"workload": name, "tool": tool, "repeat": rep, "threads": a.threads, "wall_s": round(wall, 3),
                       "fit_s": round(fit, 3), "peak_rss_mb": round(rss), "matrix_mb": round(matrix_mb), "inertia": inertia}
                print(json.dumps(rec), flush=True)
                runs[tool].append(rec)
        med = {t: statistics.median(r["wall_s"] for r in rs) for t, rs in runs.items()}
        rss = {t: max(r["peak_rss_mb"] for r in rs) for t, rs in runs.items()}
        summary.append((name, a.threads, med, rss, matrix_mb))
    print()
    print(f"{'workload':8} {'threads':>7} {'tool':10} {'wall s (median)':>16} {'peak RSS MB':>12} {'speed-up vs tool':>17}")
    for name, threads, med, rss, matrix_mb in summary:
        for t in med:
            ratio = "" if t == "lakemeans" else f"{med[t] / med['lakemeans']:.2f}x"
            print(f"{name:8} {threads:>7} {t:10} {med[t]:>16.3f} {rss[t]:>12} {ratio:>17}")
        print(f"{name:8} {threads:>7} {'(f32 matrix ' + str(round(matrix_mb)) + ' MB; lakemeans peak / matrix = ' + format(rss['lakemeans'] / matrix_mb, '.2f') + ')'}")


if __name__ == "__main__":
    main()
