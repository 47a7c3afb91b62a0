//! GFLOP/s of the bf16 product (`interplab_core::bf16`) against candle's f32 matmul on the
//! forward's and the SAE's shapes: `cargo run --release -p interplab-core --example bf16_gemm`.
use std::time::Instant;

use candle_core::{Device, Tensor};
use interplab_core::bf16::{amx_available, PackedBf16};

fn main() {
    println!(
        "amx: {}  threads: {}",
        amx_available(),
        rayon::current_num_threads()
    );
    let shapes = [
        (1024, 576, 1536),
        (1024, 1536, 576),
        (1024, 576, 576),
        (1024, 576, 192),
        (1024, 576, 49152),
        (4096, 576, 4608),
        (4096, 4608, 576),
        (1, 576, 1536),
        (8, 576, 49152),
    ];
    for (m, k, n) in shapes {
        let mut r = interplab_core::rng::SplitMix(1);
        let mut v = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| (r.next_u64() % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let x = v(m * k);
        let w = v(k * n);
        let p = PackedBf16::pack(&w, k, n).unwrap();
        let flop = 2.0 * (m * k * n) as f64;
        let reps = ((2e10 / flop) as usize).clamp(3, 2000);
        let time = |f: &mut dyn FnMut()| {
            f();
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            best
        };
        let tb = time(&mut || {
            std::hint::black_box(p.matmul(&x, m).unwrap());
        });
        let a = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(w.clone(), (k, n), &Device::Cpu).unwrap();
        let tf = time(&mut || {
            std::hint::black_box(a.matmul(&b).unwrap());
        });
        println!(
            "{m:>5} x {k:>5} x {n:>6}: bf16 {:>7.1} GFLOP/s   f32 {:>6.1} GFLOP/s   {:.2}x",
            flop / tb / 1e9,
            flop / tf / 1e9,
            tf / tb
        );
    }
}
