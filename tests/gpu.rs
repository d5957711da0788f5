//! GPU backend against the CPU backend and f64 brute force.
//!
//! These tests need a wgpu adapter; on machines without a GPU, Mesa's lavapipe (package
//! mesa-vulkan-drivers) provides one. They fail, rather than skip, when none is found.

use std::time::Duration;

use lakemeans::backend::cpu::CpuBackend;
use lakemeans::backend::gpu::{GpuBackend, GpuOptions, HIDE_ENV};
use lakemeans::backend::{
    Assignment, Backend, DeviceChoice, Fallback, FarPoint, SEED_BLOCK_ROWS, Seeder, Step,
};
use lakemeans::data::{Batch, Dataset};
use lakemeans::error::{Error, Result};

/// Deterministic generator for test data (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let u = self.unit().max(1e-7);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn options() -> GpuOptions {
    GpuOptions {
        adapter: None,
        hide: false,
        allow_software: true,
        max_chunk_rows: None,
        max_resident_bytes: None,
        timeout: Duration::from_secs(300),
    }
}

fn open<'a>(data: &'a Dataset, opts: GpuOptions) -> GpuBackend<'a> {
    match GpuBackend::with_options(data, opts) {
        Ok(g) => g,
        Err(Error::NoAdapter(msg)) => panic!(
            "these tests need a GPU adapter and none was found ({msg}); on a machine without a \
             GPU install Mesa's lavapipe (apt-get install mesa-vulkan-drivers libvulkan1)"
        ),
        Err(e) => panic!("cannot open the GPU backend: {e}"),
    }
}

/// `n` rows around a few blobs, offset from the origin so the expanded score cancels a bit.
fn blobs(rng: &mut Rng, n: usize, d: usize, weighted: bool) -> Dataset {
    let centers: Vec<Vec<f32>> = (0..8)
        .map(|_| (0..d).map(|_| 5.0 + 4.0 * rng.normal()).collect())
        .collect();
    let mut values = Vec::with_capacity(n * d);
    for _ in 0..n {
        let c = &centers[rng.below(centers.len())];
        values.extend(c.iter().map(|&v| v + rng.normal()));
    }
    let weights = weighted.then(|| (0..n).map(|_| 0.25 + 2.0 * rng.unit()).collect());
    Dataset::from_rows(d, values, weights)
}

/// `k` centroids: rows of the data (all of them when k = n), slightly moved.
fn pick_centroids(rng: &mut Rng, data: &Dataset, k: usize) -> Vec<f32> {
    let n = data.rows();
    let mut out = Vec::with_capacity(k * data.dim());
    for j in 0..k {
        let row = if k == n { j } else { rng.below(n) };
        out.extend(data.row(row).iter().map(|&v| v + 0.01 * rng.normal()));
    }
    out
}

fn dist64(x: &[f32], c: &[f32]) -> f64 {
    x.iter()
        .zip(c)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum()
}

fn norm64(x: &[f32]) -> f64 {
    x.iter().map(|&a| (a as f64).powi(2)).sum()
}

/// GPU labels and distances are right: a label differing from the CPU's is fine only when
/// both centroids are equally near within float rounding of the expanded score.
fn check_assignment(data: &Dataset, cents: &[f32], gpu: &Assignment, cpu: &Assignment, what: &str) {
    let d = data.dim();
    let cn_max = cents.chunks_exact(d).map(norm64).fold(0.0, f64::max);
    let mut disagree = 0;
    for i in 0..data.rows() {
        let x = data.row(i);
        let (lg, lc) = (gpu.labels[i] as usize, cpu.labels[i] as usize);
        let tol = 1e-5 * (norm64(x) + cn_max) + 1e-9;
        let dg = dist64(x, &cents[lg * d..(lg + 1) * d]);
        if lg != lc {
            disagree += 1;
            let dc = dist64(x, &cents[lc * d..(lc + 1) * d]);
            assert!(
                (dg - dc).abs() <= tol,
                "{what}: row {i} GPU label {lg} (d = {dg}) vs CPU {lc} (d = {dc}), not a tie"
            );
        }
        let got = gpu.distances[i] as f64;
        assert!(
            (got - dg).abs() <= tol,
            "{what}: row {i} GPU distance {got} vs exact {dg}"
        );
    }
    assert!(
        disagree * 100 <= data.rows(),
        "{what}: {disagree} labels differ, too many for ties"
    );
}

/// Sums, weights and counts of `step` against an f64 brute force over `labels`.
fn check_update(data: &Dataset, k: usize, labels: &[u32], step: &Step, what: &str) {
    let d = data.dim();
    let mut sums = vec![0f64; k * d];
    let mut mags = vec![0f64; k * d];
    let mut weights = vec![0f64; k];
    let mut counts = vec![0u64; k];
    for (i, &l) in labels.iter().enumerate() {
        let l = l as usize;
        let w = data.weight(i) as f64;
        weights[l] += w;
        counts[l] += 1;
        for (f, &v) in data.row(i).iter().enumerate() {
            sums[l * d + f] += w * v as f64;
            mags[l * d + f] += (w * v as f64).abs();
        }
    }
    assert_eq!(step.counts, counts, "{what}: counts");
    assert_eq!(step.sums.len(), k * d, "{what}: sums length");
    assert_eq!(step.weights.len(), k, "{what}: weights length");
    for (j, (&a, &b)) in step.weights.iter().zip(&weights).enumerate() {
        assert!(
            (a - b).abs() <= 1e-6 * b + 1e-9,
            "{what}: weight of {j}: {a} vs {b}"
        );
    }
    for e in 0..k * d {
        let (a, b) = (step.sums[e], sums[e]);
        assert!(
            (a - b).abs() <= 1e-6 * mags[e] + 1e-9,
            "{what}: sum entry {e}: {a} vs {b}"
        );
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

#[test]
fn agrees_with_cpu_across_shapes() {
    // (rows, features, clusters, weighted): rows never a multiple of a tile, odd widths,
    // k from 1 to 5000 and k = n.
    let shapes = [
        (1001, 1, 1, false),
        (777, 3, 5, true),
        (1531, 7, 33, false),
        (2049, 16, 100, true),
        (600, 33, 600, false),
        (1201, 130, 257, true),
        (333, 300, 20, false),
        (450, 300, 70, true),
        (5003, 4, 5000, false),
        (97, 2, 97, true),
    ];
    let mut rng = Rng(7);
    for (n, d, k, weighted) in shapes {
        let what = format!("n={n} d={d} k={k} weighted={weighted}");
        let data = blobs(&mut rng, n, d, weighted);
        let cents = pick_centroids(&mut rng, &data, k);
        let mut gpu = open(&data, options());
        let mut cpu = CpuBackend::new(&data);
        let gs = gpu.step(&cents, k, true).expect("GPU step");
        let cs = cpu.step(&cents, k, true).expect("CPU step");
        let (ga, ca) = (
            gpu.assignment().expect("GPU labels"),
            cpu.assignment().expect("CPU"),
        );
        check_assignment(&data, &cents, &ga, &ca, &what);
        assert!(
            rel(gs.inertia, cs.inertia) <= 1e-5,
            "{what}: inertia {} vs {}",
            gs.inertia,
            cs.inertia
        );
        assert_eq!(gs.changed, n as u64, "{what}: first step changes every row");
        check_update(&data, k, &ga.labels, &gs, &what);

        // A second pass with other centroids counts changed rows like the CPU does.
        let cents2 = pick_centroids(&mut rng, &data, k);
        let gs2 = gpu.step(&cents2, k, false).expect("GPU step 2");
        let cs2 = cpu.step(&cents2, k, false).expect("CPU step 2");
        let (ga2, ca2) = (
            gpu.assignment().expect("GPU labels"),
            cpu.assignment().expect("CPU"),
        );
        check_assignment(&data, &cents2, &ga2, &ca2, &what);
        let expect: u64 = ga
            .labels
            .iter()
            .zip(&ga2.labels)
            .filter(|(a, b)| a != b)
            .count() as u64;
        assert_eq!(gs2.changed, expect, "{what}: changed");
        assert!(rel(gs2.inertia, cs2.inertia) <= 1e-5, "{what}: inertia 2");
        assert!(
            gs2.sums.is_empty() && gs2.counts.is_empty(),
            "{what}: no update asked"
        );
    }
}

#[test]
fn farthest_matches_the_distances() {
    let mut rng = Rng(11);
    let data = blobs(&mut rng, 901, 5, true);
    let cents = pick_centroids(&mut rng, &data, 9);
    let mut gpu = open(&data, options());
    gpu.step(&cents, 9, false).expect("GPU step");
    let a = gpu.assignment().expect("labels");
    let far: Vec<FarPoint> = gpu.farthest(7).expect("farthest");
    assert_eq!(far.len(), 7);
    let mut order: Vec<usize> = (0..data.rows()).collect();
    order.sort_by(|&x, &y| a.distances[y].total_cmp(&a.distances[x]).then(x.cmp(&y)));
    for (p, &row) in far.iter().zip(&order) {
        assert_eq!(p.row, row);
        assert_eq!(p.label, a.labels[row]);
        assert_eq!(p.distance, a.distances[row]);
        assert_eq!(p.values, data.row(row));
        assert_eq!(p.weight, data.weight(row));
    }
    assert_eq!(gpu.farthest(5000).expect("all").len(), data.rows());
}

/// Runs a few update steps, returning every step and the final assignment.
fn run(gpu: &mut dyn Backend, cents: &[f32], k: usize) -> (Vec<Step>, Assignment) {
    let d = cents.len() / k;
    let mut c = cents.to_vec();
    let mut steps = Vec::new();
    for _ in 0..3 {
        let s = gpu.step(&c, k, true).expect("step");
        for j in 0..k {
            if s.weights[j] > 0.0 {
                for f in 0..d {
                    c[j * d + f] = (s.sums[j * d + f] / s.weights[j]) as f32;
                }
            }
        }
        steps.push(s);
    }
    (steps, gpu.assignment().expect("assignment"))
}

fn same_bits(a: &(Vec<Step>, Assignment), b: &(Vec<Step>, Assignment), what: &str) {
    for (s, t) in a.0.iter().zip(&b.0) {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&s.sums), bits(&t.sums), "{what}: sums");
        assert_eq!(bits(&s.weights), bits(&t.weights), "{what}: weights");
        assert_eq!(s.counts, t.counts, "{what}: counts");
        assert_eq!(s.inertia.to_bits(), t.inertia.to_bits(), "{what}: inertia");
        assert_eq!(s.changed, t.changed, "{what}: changed");
    }
    assert_eq!(a.1.labels, b.1.labels, "{what}: labels");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&a.1.distances),
        bits(&b.1.distances),
        "{what}: distances"
    );
}

#[test]
fn runs_are_bit_identical() {
    let mut rng = Rng(3);
    // k = 900 takes the sorted update, whose row order within a cluster varies between runs.
    for (n, d, k) in [(3001, 9, 4), (2500, 40, 70), (2500, 40, 900)] {
        let data = blobs(&mut rng, n, d, true);
        let cents = pick_centroids(&mut rng, &data, k);
        let a = run(&mut open(&data, options()), &cents, k);
        let b = run(&mut open(&data, options()), &cents, k);
        same_bits(&a, &b, &format!("n={n} d={d} k={k}"));
        // Repeating a step on one backend gives the same numbers and no changed rows.
        let mut g = open(&data, options());
        let s1 = g.step(&cents, k, true).expect("step");
        let s2 = g.step(&cents, k, true).expect("step");
        assert_eq!(s2.changed, 0);
        assert_eq!(s1.sums, s2.sums);
        assert_eq!(s1.inertia.to_bits(), s2.inertia.to_bits());
    }
}

#[test]
fn chunked_and_streamed_match_whole() {
    let mut rng = Rng(5);
    let d = 11;
    // Uneven batches, so chunks straddle batch boundaries.
    let whole = blobs(&mut rng, 1234, d, true);
    let mut batches = Vec::new();
    let mut start = 0;
    for len in [100, 1, 533, 600] {
        let values = (start..start + len)
            .flat_map(|i| whole.row(i).to_vec())
            .collect();
        let weights = Some((start..start + len).map(|i| whole.weight(i)).collect());
        batches.push(Batch { values, weights });
        start += len;
    }
    let data = Dataset::new(d, batches);
    // k = 700 takes the sorted update (too many clusters for workgroup-private sums).
    for k in [6, 700] {
        let cents = pick_centroids(&mut rng, &data, k);
        let base = run(&mut open(&data, options()), &cents, k);
        for rows in [64, 100, 200, 1000] {
            let opts = GpuOptions {
                max_chunk_rows: Some(rows),
                ..options()
            };
            let got = run(&mut open(&data, opts), &cents, k);
            same_bits(&base, &got, &format!("k={k}, chunks of {rows} rows"));
            let opts = GpuOptions {
                max_chunk_rows: Some(rows),
                max_resident_bytes: Some(0),
                ..options()
            };
            let got = run(&mut open(&data, opts), &cents, k);
            same_bits(
                &base,
                &got,
                &format!("k={k}, streamed chunks of {rows} rows"),
            );
        }
    }
}

#[test]
fn hidden_adapters_mean_no_adapter() {
    let data = Dataset::from_rows(2, vec![0.0, 1.0, 2.0, 3.0], None);
    match GpuBackend::with_options(
        &data,
        GpuOptions {
            hide: true,
            ..options()
        },
    ) {
        Err(Error::NoAdapter(_)) => {}
        Err(e) => panic!("expected NoAdapter, got {e}"),
        Ok(_) => panic!("expected NoAdapter, got a backend"),
    }
}

#[test]
fn unknown_adapter_name_is_no_adapter() {
    let data = Dataset::from_rows(2, vec![0.0, 1.0, 2.0, 3.0], None);
    let opts = GpuOptions {
        adapter: Some("no such adapter, surely".into()),
        ..options()
    };
    assert!(matches!(
        GpuBackend::with_options(&data, opts),
        Err(Error::NoAdapter(_))
    ));
}

#[test]
fn adapters_are_listed() {
    let all = lakemeans::backend::gpu::list_adapters();
    assert!(
        !all.is_empty(),
        "no adapter listed; install mesa-vulkan-drivers for lavapipe"
    );
    for a in &all {
        eprintln!("{a:?}");
    }
    assert!(all.iter().all(|a| a.max_storage_buffer_binding_size > 0));
}

/// The environment switch, checked in a child process so no other test sees the variable.
#[test]
fn hide_env_var_hides_adapters() {
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args(["--exact", "hidden_child", "--ignored", "--nocapture"])
        .env(HIDE_ENV, "1")
        .output()
        .expect("run child");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child did not run:\n{text}");
}

#[test]
#[ignore = "run by hide_env_var_hides_adapters with the variable set"]
fn hidden_child() {
    assert!(lakemeans::backend::gpu::list_adapters().is_empty());
    let data = Dataset::from_rows(2, vec![0.0, 1.0, 2.0, 3.0], None);
    assert!(matches!(
        GpuBackend::new(&data, None),
        Err(Error::NoAdapter(_))
    ));
    let gpu = lakemeans::backend::create(DeviceChoice::Gpu, &data, None);
    assert!(matches!(gpu, Err(Error::NoAdapter(_))));
    let auto = lakemeans::backend::create(DeviceChoice::Auto, &data, None).expect("auto");
    assert_eq!(auto.info().kind, "cpu");
}

#[test]
fn shader_failure_is_a_device_error() {
    let mut rng = Rng(13);
    let data = blobs(&mut rng, 300, 3, false);
    let cents = pick_centroids(&mut rng, &data, 4);
    let mut gpu = open(&data, options());
    let broken = "@compute @workgroup_size(1) fn main() { let x: u32 = undefined_name; }";
    match gpu.compile_check(broken) {
        Err(Error::Device(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected a device error, got {other:?}"),
    }
    // Too many invocations for any adapter: a pipeline validation failure.
    let huge = "@compute @workgroup_size(1024, 1024, 64) fn main() {}";
    assert!(matches!(gpu.compile_check(huge), Err(Error::Device(_))));
    // The backend is still usable afterwards.
    gpu.compile_check("@compute @workgroup_size(1) fn main() {}")
        .expect("valid shader");
    gpu.step(&cents, 4, true)
        .expect("step after a failed compile");
}

/// A GPU backend that starts failing like a lost device after `ok` steps, or after
/// `seed_ok` seeding calls.
struct Flaky<'a> {
    inner: GpuBackend<'a>,
    ok: usize,
    seed_ok: usize,
}

impl Flaky<'_> {
    fn seed_call(&mut self) -> Result<()> {
        if self.seed_ok == 0 {
            return Err(Error::Device("simulated device loss".into()));
        }
        self.seed_ok -= 1;
        Ok(())
    }
}

impl Seeder for Flaky<'_> {
    fn seed_reset(&mut self) -> Result<()> {
        self.seed_call()?;
        self.inner.seed_reset()
    }
    fn seed_score(&mut self, c: &[f32], n: usize) -> Result<Vec<f64>> {
        self.seed_call()?;
        self.inner.seed_score(c, n)
    }
    fn seed_keep(&mut self, t: usize) -> Result<()> {
        self.seed_call()?;
        self.inner.seed_keep(t)
    }
    fn seed_distances(&mut self, blocks: &[usize]) -> Result<Vec<Vec<f32>>> {
        self.seed_call()?;
        self.inner.seed_distances(blocks)
    }
}

impl Backend for Flaky<'_> {
    fn info(&self) -> lakemeans::backend::DeviceInfo {
        self.inner.info()
    }
    fn step(&mut self, c: &[f32], k: usize, update: bool) -> Result<Step> {
        if self.ok == 0 {
            return Err(Error::Device("simulated device loss".into()));
        }
        self.ok -= 1;
        self.inner.step(c, k, update)
    }
    fn farthest(&mut self, m: usize) -> Result<Vec<FarPoint>> {
        self.inner.farthest(m)
    }
    fn assignment(&mut self) -> Result<Assignment> {
        self.inner.assignment()
    }
}

#[test]
fn device_failure_falls_back_to_cpu() {
    let mut rng = Rng(9);
    let data = blobs(&mut rng, 800, 6, false);
    let (c1, c2) = (
        pick_centroids(&mut rng, &data, 5),
        pick_centroids(&mut rng, &data, 5),
    );
    let flaky = Flaky {
        inner: open(&data, options()),
        ok: 1,
        seed_ok: usize::MAX,
    };
    let mut fb = Fallback::new(&data, Box::new(flaky));
    let mut cpu = CpuBackend::new(&data);
    fb.step(&c1, 5, true).expect("GPU step");
    cpu.step(&c1, 5, true).expect("CPU step");
    assert!(!fb.fell_back());
    let got = fb.step(&c2, 5, true).expect("falls back");
    let want = cpu.step(&c2, 5, true).expect("CPU step");
    assert!(fb.fell_back());
    assert_eq!(fb.info().kind, "cpu");
    assert_eq!(
        got, want,
        "after the fall-back the CPU continues from the GPU's state"
    );
}

/// The k-means++ rows chosen on `backend` for a seed, as row indices of `data`.
fn seeds_on(data: &Dataset, backend: &mut dyn Backend, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = lakemeans::rng::Rng::derive(seed, 0);
    let c = lakemeans::kmeans::kmeans_plus_plus(data, backend, k, &mut rng).expect("k-means++");
    c.chunks_exact(data.dim())
        .map(|c| (0..data.rows()).find(|&i| data.row(i) == c).expect("a row"))
        .collect()
}

/// Rows cut into uneven batches, so seeding blocks and GPU chunks straddle each other.
fn batched(rng: &mut Rng, sizes: &[usize], d: usize, weighted: bool) -> Dataset {
    let whole = blobs(rng, sizes.iter().sum(), d, weighted);
    let mut batches = Vec::new();
    let mut start = 0;
    for &len in sizes {
        let values = (start..start + len)
            .flat_map(|i| whole.row(i).to_vec())
            .collect();
        let weights = weighted.then(|| (start..start + len).map(|i| whole.weight(i)).collect());
        batches.push(Batch { values, weights });
        start += len;
    }
    Dataset::new(d, batches)
}

/// Σ w·(distance to the nearest of `cents`)², in f64: the potential a seeding leaves.
fn potential(data: &Dataset, picks: &[usize]) -> f64 {
    (0..data.rows())
        .map(|i| {
            let x = data.row(i);
            let m = picks
                .iter()
                .map(|&j| dist64(x, data.row(j)))
                .fold(f64::INFINITY, f64::min);
            data.weight(i) as f64 * m
        })
        .sum()
}

// The GPU may round a distance differently from the CPU by an ulp (a shader compiler is free
// to fuse a multiply and an add), and it sums block masses in compensated f32 pairs instead of
// f64. `gpu_seeding_pass_matches_the_cpu` bounds that difference per pass (masses within
// 1e-5, the same best candidate unless two are that close). A pick can therefore differ only
// where a draw lands within that rounding of a row boundary, or two candidates nearly tie;
// from there on the run is a different, equally valid k-means++ draw. So: most runs pick
// exactly the CPU's rows, and the others leave a potential of the same size.
#[test]
fn gpu_kmeans_plus_plus_picks_the_cpus_rows() {
    let mut rng = Rng(21);
    let cases = [
        (batched(&mut rng, &[3000, 5000, 1200], 7, false), 20),
        (batched(&mut rng, &[4096, 4097, 10], 33, true), 50),
        (blobs(&mut rng, 700, 130, false), 100),
    ];
    let chunked = GpuOptions {
        max_chunk_rows: Some(1000),
        ..options()
    };
    let streamed = GpuOptions {
        max_chunk_rows: Some(640),
        max_resident_bytes: Some(0),
        ..options()
    };
    let (mut runs, mut same) = (0, 0);
    for (data, k) in &cases {
        for seed in 0..3 {
            let want = seeds_on(data, &mut CpuBackend::new(data), *k, seed);
            for opts in [options(), chunked.clone(), streamed.clone()] {
                let got = seeds_on(data, &mut open(data, opts), *k, seed);
                runs += 1;
                if got == want {
                    same += 1;
                    continue;
                }
                let (pg, pc) = (potential(data, &got), potential(data, &want));
                assert!(
                    (0.5..2.0).contains(&(pg / pc)),
                    "n={} seed {seed}: potential {pg} against the CPU's {pc}",
                    data.rows()
                );
            }
        }
    }
    assert!(
        3 * same >= 2 * runs,
        "only {same} of {runs} runs picked the CPU's rows"
    );
}

#[test]
fn gpu_seeding_pass_matches_the_cpu() {
    let mut rng = Rng(22);
    let data = batched(&mut rng, &[5000, 3500], 19, true);
    let d = data.dim();
    let blocks = data.blocks(SEED_BLOCK_ROWS);
    let all: Vec<usize> = (0..blocks.len()).collect();
    let mut cpu = CpuBackend::new(&data);
    let mut gpu = open(&data, options());
    cpu.seed_reset().unwrap();
    gpu.seed_reset().unwrap();
    let mut kept = Vec::new();
    for step in 0..12 {
        let n = 1 + step % 9;
        let cands = pick_centroids(&mut rng, &data, n);
        let mc = cpu.seed_score(&cands, n).unwrap();
        let mg = gpu.seed_score(&cands, n).unwrap();
        // Each mass is a sum of non-negative terms, each within a few ulps of the CPU's.
        for (a, b) in mc.iter().zip(&mg) {
            assert!(rel(*a, *b) < 1e-5, "step {step}: mass {a} vs {b}");
        }
        // The same best candidate, unless two are within that rounding of each other.
        let pots =
            |m: &[f64]| -> Vec<f64> { m.chunks(blocks.len()).map(|c| c.iter().sum()).collect() };
        let (pc, pg) = (pots(&mc), pots(&mg));
        let argmin = |p: &[f64]| (0..p.len()).fold(0, |b, t| if p[t] < p[b] { t } else { b });
        let (bc, bg) = (argmin(&pc), argmin(&pg));
        assert!(
            bc == bg || rel(pc[bg], pc[bc]) < 1e-5,
            "step {step}: best {bg} vs {bc}"
        );
        let t = step % n;
        cpu.seed_keep(t).unwrap();
        gpu.seed_keep(t).unwrap();
        kept.extend_from_slice(&cands[t * d..(t + 1) * d]);
        let (dc, dg) = (
            cpu.seed_distances(&all).unwrap(),
            gpu.seed_distances(&all).unwrap(),
        );
        // D against an f64 brute force, on both backends.
        for (bi, b) in blocks.iter().enumerate() {
            for r in 0..b.len {
                let x = data.row(b.global + r);
                let exact = kept
                    .chunks_exact(d)
                    .map(|c| dist64(x, c))
                    .fold(f64::INFINITY, f64::min);
                let scale = norm64(x) + kept.chunks_exact(d).map(norm64).fold(0.0, f64::max);
                for (what, v) in [("cpu", dc[bi][r]), ("gpu", dg[bi][r])] {
                    assert!(
                        (v as f64 - exact).abs() <= 1e-5 * scale,
                        "{what} D of row {}: {v} vs {exact}",
                        b.global + r
                    );
                }
            }
        }
    }
}

#[test]
fn device_failure_during_seeding_falls_back_to_cpu() {
    let mut rng = Rng(23);
    let data = blobs(&mut rng, 5000, 6, false);
    let want = seeds_on(&data, &mut CpuBackend::new(&data), 12, 4);
    for seed_ok in [0, 1, 2, 7, 20] {
        let flaky = Flaky {
            inner: open(&data, options()),
            ok: usize::MAX,
            seed_ok,
        };
        let mut fb = Fallback::new(&data, Box::new(flaky));
        let got = seeds_on(&data, &mut fb, 12, 4);
        assert!(fb.fell_back(), "after {seed_ok} calls");
        assert_eq!(got, want, "failing after {seed_ok} seeding calls");
    }
}
