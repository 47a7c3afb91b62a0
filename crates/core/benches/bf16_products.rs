//! The products of a fine-tuning step of SmolLM2-135M (8 × 128 tokens) in bf16 on the tile unit
//! against candle's f32 gemm. The bf16 side includes packing the right-hand matrix, which a
//! training step would redo every time (its weights and gradients change): this is what
//! bf16 products in the backward pass would cost, not only the kernel.
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench -p interplab-core --bench bf16_products`.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use interplab_core::bf16::PackedBf16;
use std::hint::black_box;
use std::time::Duration;

/// `[m, k] @ [k, n]`: an MLP projection forward, its input gradient, its weight gradient, and
/// the same three for the unembedding.
const SHAPES: [(usize, usize, usize); 6] = [
    (1024, 576, 1536),
    (1024, 1536, 576),
    (576, 1024, 1536),
    (1024, 576, 49152),
    (1024, 49152, 576),
    (576, 1024, 49152),
];

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed) % 2001) as f32 * 1e-3 - 1.0)
        .collect()
}

fn products(c: &mut Criterion) {
    for (m, k, n) in SHAPES {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let mut g = c.benchmark_group(format!("product_{m}x{k}x{n}"));
        g.bench_function(BenchmarkId::from_parameter("bf16_pack"), |bench| {
            bench.iter(|| black_box(PackedBf16::pack(&b, k, n).unwrap()))
        });
        g.bench_function(
            BenchmarkId::from_parameter("bf16_pack_and_product"),
            |bench| {
                bench.iter(|| {
                    let p = PackedBf16::pack(&b, k, n).unwrap();
                    black_box(p.matmul(&a, m).unwrap())
                })
            },
        );
        let at = Tensor::from_vec(a.clone(), (m, k), &Device::Cpu).unwrap();
        let bt = Tensor::from_vec(b.clone(), (k, n), &Device::Cpu).unwrap();
        g.bench_function(BenchmarkId::from_parameter("f32_gemm"), |bench| {
            bench.iter(|| black_box(at.matmul(&bt).unwrap()))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = products
}
criterion_main!(benches);
