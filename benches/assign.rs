//! The assignment step (nearest centroid for every row, plus the cluster sums) on the CPU
//! and, when an adapter exists, on the GPU. `cargo bench --bench assign`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lakemeans::backend::Backend;
use lakemeans::backend::cpu::CpuBackend;
use lakemeans::backend::gpu::{GpuBackend, GpuOptions};
use lakemeans::data::Dataset;

/// Reproducible pseudo-random values in [-1, 1) (SplitMix64).
fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn assign(c: &mut Criterion) {
    // (rows, features, clusters): a narrow table with many clusters, a wide one with few.
    let shapes = [(50_000, 16, 256), (20_000, 128, 64), (100_000, 4, 8)];
    let mut group = c.benchmark_group("assign");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for (n, d, k) in shapes {
        let data = Dataset::from_rows(d, values(1, n * d), None);
        let cents = values(2, k * d);
        let id = format!("n{n}_d{d}_k{k}");
        // One multiply-add per row, centroid and feature.
        group.throughput(Throughput::Elements((n * k * d) as u64));

        let mut cpu = CpuBackend::new(&data);
        group.bench_with_input(BenchmarkId::new("cpu", &id), &k, |b, &k| {
            b.iter(|| black_box(cpu.step(&cents, k, true).expect("CPU step")))
        });

        let opts = GpuOptions {
            allow_software: true,
            ..GpuOptions::from_env(None)
        };
        match GpuBackend::with_options(&data, opts) {
            Ok(mut gpu) => {
                let name = gpu.info().name;
                group.bench_with_input(
                    BenchmarkId::new(format!("gpu {name}"), &id),
                    &k,
                    |b, &k| b.iter(|| black_box(gpu.step(&cents, k, true).expect("GPU step"))),
                );
            }
            Err(e) => eprintln!("skipping the GPU for {id}: {e}"),
        }
    }
    group.finish();
}

criterion_group!(benches, assign);
criterion_main!(benches);
