//! Toy Models of Superposition: gradients against finite differences, and the paper's first
//! experiment (n = 20, m = 5, I_i = 0.7^i, seven sparsities, 10k steps) checked on the trained
//! weights (the acceptance; a PyTorch run of the setup gave 5, 7, 9, 10, 12, 14, 13
//! represented features).

use interplab_core::rng::SplitMix;
use interplab_train::superposition::{geometry, loss_and_grad, SuperpositionConfig, ToyModel};

/// The loss in f64, written independently of the hand-written pass.
fn loss_f64(relu: bool, n: usize, m: usize, p: &[f64], imp: &[f64], x: &[f32]) -> f64 {
    let (w, b) = p.split_at(m * n);
    let bsz = x.len() / n;
    let mut total = 0.0;
    for xs in x.chunks_exact(n) {
        let h: Vec<f64> = (0..m)
            .map(|k| (0..n).map(|j| w[k * n + j] * xs[j] as f64).sum())
            .collect();
        for j in 0..n {
            let y = b[j] + (0..m).map(|k| w[k * n + j] * h[k]).sum::<f64>();
            let out = if relu { y.max(0.0) } else { y };
            total += imp[j] * (out - xs[j] as f64).powi(2);
        }
    }
    total / (bsz * n) as f64
}

#[test]
fn gradients_match_finite_differences() {
    let (n, m) = (6, 3);
    let mut rng = SplitMix::new(9);
    for relu in [true, false] {
        let w: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32 * 0.5).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.1).collect();
        let imp: Vec<f32> = (0..n).map(|i| 0.8f32.powi(i as i32)).collect();
        let x: Vec<f32> = (0..8 * n)
            .map(|_| {
                if rng.next_f64() < 0.5 {
                    rng.next_f32()
                } else {
                    0.0
                }
            })
            .collect();
        let (_, g) = loss_and_grad(relu, n, m, &w, &b, &imp, &x);
        let p: Vec<f64> = w.iter().chain(&b).map(|&v| v as f64).collect();
        let imp64: Vec<f64> = imp.iter().map(|&v| v as f64).collect();
        for i in 0..p.len() {
            let eps = 1e-6;
            let (mut a, mut c) = (p.clone(), p.clone());
            a[i] += eps;
            c[i] -= eps;
            let fd = (loss_f64(relu, n, m, &a, &imp64, &x) - loss_f64(relu, n, m, &c, &imp64, &x))
                / (2.0 * eps);
            assert!(
                (fd - g[i] as f64).abs() < 1e-4 * (1.0 + fd.abs()),
                "param {i}: fd {fd} analytic {}",
                g[i]
            );
        }
    }
}

#[test]
fn paper_experiment_structure() {
    let mut relu = ToyModel::new(SuperpositionConfig::default()).unwrap();
    relu.train(10_000, &mut |_, _| {});
    let cfg = &relu.cfg;
    let g: Vec<_> = relu
        .instances
        .iter()
        .map(|i| geometry(cfg.n, cfg.m, i))
        .collect();
    let counts: Vec<usize> = g.iter().map(|x| x.represented).collect();
    let dstar: Vec<f64> = g.iter().map(|x| x.dims_per_feature).collect();
    eprintln!("represented {counts:?}\nD* {dstar:.3?}");
    // Dense: exactly the 5 most important features, WᵀW an identity block on them.
    assert_eq!(counts[0], 5, "{counts:?}");
    for i in 0..5 {
        assert!(
            (g[0].wtw[i][i] - 1.0).abs() < 0.1,
            "W_{i}·W_{i} = {}",
            g[0].wtw[i][i]
        );
        for j in 0..5 {
            if i != j {
                assert!(
                    g[0].wtw[i][j].abs() < 0.1,
                    "W_{i}·W_{j} = {}",
                    g[0].wtw[i][j]
                );
            }
        }
    }
    for w in counts.windows(2) {
        assert!(w[1] + 1 >= w[0], "count fell by more than one: {counts:?}");
    }
    for (s, c) in cfg.sparsities.iter().zip(&counts) {
        if *s >= 0.99 {
            assert!(*c >= 12, "S = {s}: {c} features");
        }
    }
    let mut linear = ToyModel::new(SuperpositionConfig {
        relu: false,
        ..SuperpositionConfig::default()
    })
    .unwrap();
    linear.train(10_000, &mut |_, _| {});
    for i in &linear.instances {
        let gl = geometry(cfg.n, cfg.m, i);
        assert!(
            gl.represented <= 5,
            "linear S = {}: {}",
            i.sparsity,
            gl.represented
        );
    }
}
