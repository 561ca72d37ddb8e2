//! Aggregation kernels at n ∈ {10, 50} updates of d ∈ {10⁶, 10⁷} floats.
//!
//! Every group also measures this machine's plain read bandwidth over the same bytes (a
//! vectorised sum of every input, on all cores) so a kernel's input throughput can be read as a
//! fraction of it: criterion reports each benchmark's throughput in bytes of input per second.
//! `scripts/bench-summary.py` turns the results into the table of docs/performance.md.
//!
//!   cargo bench -p fedsilo --bench kernels            # everything (a few minutes)
//!   cargo bench -p fedsilo --bench kernels -- n10_    # one size

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fedsilo::kernels::{bulyan, krum, order_statistics, weighted_mean};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

fn updates(n: usize, d: usize) -> Vec<Vec<f32>> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
            (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect()
        })
        .collect()
}

/// Sum with 16 independent accumulators, so it is limited by memory, not by add latency.
fn plain_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Reads every input once, on all cores, in 64 Ki-value pieces.
fn read_all(ups: &[&[f32]]) -> f32 {
    ups.par_iter()
        .map(|u| u.par_chunks(1 << 16).map(plain_sum).sum::<f32>())
        .sum()
}

fn bench(c: &mut Criterion) {
    for &(n, d) in &[
        (10usize, 1_000_000usize),
        (50, 1_000_000),
        (10, 10_000_000),
        (50, 10_000_000),
    ] {
        let data = updates(n, d);
        let ups: Vec<&[f32]> = data.iter().map(|u| u.as_slice()).collect();
        let weights: Vec<f64> = (0..n).map(|i| 100.0 + i as f64).collect();
        let f = if n >= 50 { 11 } else { 1 };
        let k = (0.2 * n as f64) as usize;
        let label = format!("n{n}_d{}M", d / 1_000_000);
        let mut g = c.benchmark_group(&label);
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Bytes((n * d * 4) as u64));
        g.bench_function("read_bandwidth", |b| {
            b.iter(|| black_box(read_all(black_box(&ups))))
        });
        g.bench_function("weighted_mean", |b| {
            b.iter(|| black_box(weighted_mean(black_box(&ups), &weights)))
        });
        g.bench_function("trimmed_mean_0.2", |b| {
            b.iter(|| black_box(order_statistics::trimmed_mean(black_box(&ups), k)))
        });
        g.bench_function("median", |b| {
            b.iter(|| black_box(order_statistics::median(black_box(&ups))))
        });
        g.bench_function(format!("krum_f{f}"), |b| {
            b.iter(|| black_box(krum::multi_krum(black_box(&ups), &weights, f, 1)))
        });
        g.bench_function(format!("multi_krum_f{f}_m{}", n - f), |b| {
            b.iter(|| black_box(krum::multi_krum(black_box(&ups), &weights, f, n - f)))
        });
        g.bench_function(format!("bulyan_f{f}"), |b| {
            b.iter(|| black_box(bulyan::bulyan(black_box(&ups), f)))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
