//! One Lloyd iteration (assign + weighted update) on the CPU backend, at a few shapes.

use criterion::{Criterion, criterion_group, criterion_main};
use lakemeans::backend::Backend;
use lakemeans::backend::cpu::CpuBackend;
use lakemeans::data::Dataset;
use lakemeans::rng::Rng;

fn data(n: usize, d: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    Dataset::from_rows(
        d,
        (0..n * d).map(|_| rng.normal_pair().0 as f32).collect(),
        None,
    )
}

fn lloyd_iteration(c: &mut Criterion) {
    let mut g = c.benchmark_group("lloyd_iteration_cpu");
    g.sample_size(10);
    for &(n, d, k) in &[(200_000, 16, 32), (100_000, 32, 64), (20_000, 128, 1024)] {
        let ds = data(n, d, 1);
        let cents: Vec<f32> = (0..k).flat_map(|j| ds.row(j * (n / k)).to_vec()).collect();
        let mut be = CpuBackend::new(&ds);
        g.throughput(criterion::Throughput::Elements(n as u64));
        g.bench_function(format!("n{n}_d{d}_k{k}"), |b| {
            b.iter(|| be.step(&cents, k, true).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, lloyd_iteration);
criterion_main!(benches);
