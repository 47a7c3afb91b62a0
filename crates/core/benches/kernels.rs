//! Interplab's CPU kernels against the equivalent composed candle ops, at SmolLM2-135M sizes
//! (a batch of 8×128 tokens = 1024 rows; d_mlp 1536, d_model 576, 9 heads).
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench -p interplab-core --bench kernels`.

use candle_core::{Device, Tensor, D};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use interplab_core::kernels;
use std::hint::black_box;
use std::time::Duration;

const ROWS: usize = 1024;
const D_MLP: usize = 1536;
const D_MODEL: usize = 576;

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()
}

type Run<'a> = Box<dyn Fn() -> candle_core::Result<Tensor> + 'a>;

/// Benchmarks each named implementation of one operation in its own group.
fn compare(c: &mut Criterion, group: &str, runs: Vec<(&str, Run<'_>)>) {
    let mut g = c.benchmark_group(group);
    for (name, run) in runs {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(run().unwrap()))
        });
    }
    g.finish();
}

fn activations(c: &mut Criterion) {
    let x = randn(&[ROWS, D_MLP]);
    let up = randn(&[ROWS, D_MLP]);
    let (x, up) = (&x, &up);
    compare(
        c,
        "silu_1024x1536",
        vec![
            ("interplab", Box::new(|| kernels::silu(x))),
            ("candle", Box::new(|| x.silu())),
        ],
    );
    compare(
        c,
        "gelu_tanh_1024x1536",
        vec![
            ("interplab", Box::new(|| kernels::gelu_tanh(x))),
            ("candle", Box::new(|| x.gelu())),
        ],
    );
    compare(
        c,
        "gelu_erf_1024x1536",
        vec![
            ("interplab", Box::new(|| kernels::gelu_erf(x))),
            ("candle", Box::new(|| x.gelu_erf())),
        ],
    );
    compare(
        c,
        "silu_mul_1024x1536",
        vec![
            ("interplab", Box::new(|| kernels::silu_mul(x, up))),
            ("candle", Box::new(|| x.silu()? * up)),
        ],
    );
    compare(
        c,
        "gelu_tanh_mul_1024x1536",
        vec![
            ("interplab", Box::new(|| kernels::gelu_tanh_mul(x, up))),
            ("candle", Box::new(|| x.gelu()? * up)),
        ],
    );
}

fn norms(c: &mut Criterion) {
    let x = randn(&[ROWS, D_MODEL]);
    let w = randn(&[D_MODEL]);
    let b = randn(&[D_MODEL]);
    let (x, w, b) = (&x, &w, &b);
    let eps = 1e-5;
    compare(
        c,
        "rms_norm_1024x576",
        vec![
            (
                "interplab",
                Box::new(|| Ok(kernels::rms_norm(x, Some(w), eps)?.0)),
            ),
            (
                "candle-composed",
                Box::new(|| {
                    let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
                    x.broadcast_div(&scale)?.broadcast_mul(w)
                }),
            ),
            (
                "candle-nn-fused-no-grad",
                Box::new(|| candle_nn::ops::rms_norm(x, w, eps as f32)),
            ),
        ],
    );
    compare(
        c,
        "layer_norm_1024x576",
        vec![
            (
                "interplab",
                Box::new(|| Ok(kernels::layer_norm(x, Some(w), Some(b), eps)?.0)),
            ),
            (
                "candle-composed",
                Box::new(|| {
                    let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
                    let scale = (xc.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
                    xc.broadcast_div(&scale)?.broadcast_mul(w)?.broadcast_add(b)
                }),
            ),
            (
                "candle-nn-fused-no-grad",
                Box::new(|| candle_nn::ops::layer_norm(x, w, b, eps as f32)),
            ),
        ],
    );
}

fn softmax(c: &mut Criterion) {
    // One layer's attention scores: [batch 8, heads 9, 128 queries, 128 keys].
    let x = randn(&[8, 9, 128, 128]);
    let x = &x;
    compare(
        c,
        "softmax_8x9x128x128",
        vec![
            ("interplab", Box::new(|| kernels::softmax_last_dim(x))),
            (
                "candle-nn-fused-no-grad",
                Box::new(|| candle_nn::ops::softmax_last_dim(x)),
            ),
            (
                "candle-composed",
                Box::new(|| candle_nn::ops::softmax(x, D::Minus1)),
            ),
        ],
    );
}

/// Forward + backward, where training pays for both.
fn backward(c: &mut Criterion) {
    let gate = candle_core::Var::from_tensor(&randn(&[ROWS, D_MLP])).unwrap();
    let up = candle_core::Var::from_tensor(&randn(&[ROWS, D_MLP])).unwrap();
    let r = randn(&[ROWS, D_MLP]);
    let (gate, up, r) = (gate.as_tensor(), up.as_tensor(), &r);
    let grads = |y: Tensor| -> candle_core::Result<Tensor> {
        let store = (y * r)?.sum_all()?.backward()?;
        Ok(store.get(gate).unwrap().clone())
    };
    compare(
        c,
        "silu_mul_fwd_bwd_1024x1536",
        vec![
            (
                "interplab",
                Box::new(|| grads(kernels::silu_mul(gate, up)?)),
            ),
            ("candle", Box::new(|| grads((gate.silu()? * up)?))),
            // The loss and candle's backprop bookkeeping alone, common to both rows above.
            ("loss-only", Box::new(|| grads(gate.clone()))),
        ],
    );

    let x = candle_core::Var::from_tensor(&randn(&[ROWS, D_MODEL])).unwrap();
    let w = candle_core::Var::from_tensor(&randn(&[D_MODEL])).unwrap();
    let r = randn(&[ROWS, D_MODEL]);
    let (x, w, r) = (x.as_tensor(), w.as_tensor(), &r);
    let eps = 1e-5;
    let grads = |y: Tensor| -> candle_core::Result<Tensor> {
        let store = (y * r)?.sum_all()?.backward()?;
        Ok(store.get(x).unwrap().clone())
    };
    compare(
        c,
        "rms_norm_fwd_bwd_1024x576",
        vec![
            (
                "interplab",
                Box::new(|| grads(kernels::rms_norm(x, Some(w), eps)?.0)),
            ),
            (
                "candle-composed",
                Box::new(|| {
                    let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
                    grads(x.broadcast_div(&scale)?.broadcast_mul(w)?)
                }),
            ),
            ("loss-only", Box::new(|| grads(x.clone()))),
        ],
    );
}

fn config() -> Criterion {
    // Short runs: the machine is shared, so medians matter more than tight intervals.
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = activations, norms, softmax, backward
}
criterion_main!(benches);
