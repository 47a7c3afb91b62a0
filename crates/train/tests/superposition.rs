//! Toy Models of Superposition: gradients against finite differences, and the paper's first
//! experiment (n = 20, m = 5, I_i = 0.7^i, seven sparsities, 10k steps) checked on the trained
//! weights (the acceptance; a PyTorch run of the setup gave 5, 7, 9, 10, 12, 14, 13
//! represented features).

use interplab_core::rng::SplitMix;
use interplab_train::optim::{AdamW, AdamWConfig};
use interplab_train::superposition::{
    batch, geometry, loss_and_grad, loss_and_grad_with, Kernel, SuperpositionConfig, ToyModel,
};

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

/// Random weights and sparse data for the kernel comparisons.
fn random_case(
    n: usize,
    m: usize,
    bsz: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix::new(seed);
    let w: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.1).collect();
    let imp: Vec<f32> = (0..n).map(|i| 0.9f32.powi(i as i32)).collect();
    let x: Vec<f32> = (0..bsz * n)
        .map(|_| {
            if rng.next_f64() < 0.3 {
                rng.next_f32()
            } else {
                0.0
            }
        })
        .collect();
    (w, b, imp, x)
}

/// Every kernel this CPU has (the portable one always): each gives the f64 definition's loss,
/// and the SIMD kernel the portable kernel's bits, on single batches and on whole runs.
#[test]
fn kernels_give_the_definition_and_the_portable_bits() {
    let kernels: Vec<Kernel> = [Kernel::Portable, Kernel::Avx2]
        .into_iter()
        .filter(|k| k.available())
        .collect();
    // Batches that are and are not multiples of the 8 lanes; m with and without a remainder
    // after the 4-row blocks.
    for (n, m, bsz) in [(20, 5, 64), (7, 4, 13), (3, 1, 5), (40, 9, 100)] {
        for relu in [true, false] {
            let (w, b, imp, x) = random_case(n, m, bsz, n as u64);
            let p: Vec<f64> = w.iter().chain(&b).map(|&v| v as f64).collect();
            let imp64: Vec<f64> = imp.iter().map(|&v| v as f64).collect();
            let want = loss_f64(relu, n, m, &p, &imp64, &x);
            let portable =
                loss_and_grad_with(Kernel::Portable, relu, n, m, &w, &b, &imp, &x).unwrap();
            for &k in &kernels {
                let got = loss_and_grad_with(k, relu, n, m, &w, &b, &imp, &x).unwrap();
                // f32 sums of at most 4,000 terms: a relative error of a few 1e-7.
                assert!(
                    (got.0 as f64 - want).abs() <= 1e-5 * want.abs(),
                    "{k:?} loss {} vs f64 {want} n={n} m={m} bsz={bsz} relu={relu}",
                    got.0
                );
                assert_eq!(
                    got.0.to_bits(),
                    portable.0.to_bits(),
                    "{k:?} loss n={n} m={m}"
                );
                let (pb, kb): (Vec<u32>, Vec<u32>) = (
                    portable.1.iter().map(|v| v.to_bits()).collect(),
                    got.1.iter().map(|v| v.to_bits()).collect(),
                );
                assert_eq!(pb, kb, "{k:?} gradient n={n} m={m} bsz={bsz} relu={relu}");
            }
        }
    }
    // Whole training runs, data generation included.
    let cfg = SuperpositionConfig {
        n: 12,
        m: 3,
        batch: 100,
        steps: 40,
        sparsities: vec![0.0, 0.5, 0.95],
        ..Default::default()
    };
    let mut p = ToyModel::new(cfg.clone()).unwrap();
    p.train_with(Kernel::Portable, 40, &mut |_, _| {}).unwrap();
    for &k in &kernels {
        let mut a = ToyModel::new(cfg.clone()).unwrap();
        a.train_with(k, 40, &mut |_, _| {}).unwrap();
        for (x, y) in p.instances.iter().zip(&a.instances) {
            assert_eq!(x.w(), y.w(), "{k:?}");
            assert_eq!(x.b(), y.b(), "{k:?}");
        }
        assert_eq!(p.loss_history, a.loss_history, "{k:?}");
    }
}

#[test]
fn training_step_is_loss_and_grad_on_the_published_batch_then_adamw() {
    // The training pass generates its data inside itself; `batch` is documented to give the
    // same data. One step by hand (gradient on `batch`, then AdamW) must equal one step of
    // `train`, for every instance; and a thread count does not change the result.
    let cfg = SuperpositionConfig {
        n: 10,
        m: 4,
        batch: 37,
        steps: 1,
        sparsities: vec![0.0, 0.8],
        ..Default::default()
    };
    let before = ToyModel::new(cfg.clone()).unwrap();
    let trained_on = |threads: usize| {
        let mut m = before.clone();
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| m.train(1, &mut |_, _| {}));
        m
    };
    let model = trained_on(1);
    let two = trained_on(2);
    for (a, b) in model.instances.iter().zip(&two.instances) {
        assert_eq!(a.w(), b.w(), "1 and 2 threads differ");
        assert_eq!(a.b(), b.b(), "1 and 2 threads differ");
    }
    for (k, (inst0, inst1)) in before.instances.iter().zip(&model.instances).enumerate() {
        let x = batch(&cfg, inst0.sparsity, k as u64, 0);
        let imp: Vec<f32> = cfg.importance(k).iter().map(|&v| v as f32).collect();
        let (_, g) = loss_and_grad(cfg.relu, cfg.n, cfg.m, inst0.w(), inst0.b(), &imp, &x);
        let mut params: Vec<f32> = inst0.w().iter().chain(inst0.b()).copied().collect();
        let mut opt = AdamW::new(
            AdamWConfig {
                lr: cfg.lr,
                weight_decay: 0.0,
                ..Default::default()
            },
            params.len(),
        );
        opt.step(&mut params, &g);
        let trained: Vec<f32> = inst1.w().iter().chain(inst1.b()).copied().collect();
        assert_eq!(params, trained, "instance {k}");
    }
}

#[test]
fn data_have_the_configured_density_and_uniform_values() {
    // Feature values are 0 with probability S, else uniform on [0, 1]: over 10⁶ draws the
    // non-zero fraction is 1 − S and the non-zero values have mean 1/2 and variance 1/12
    // (tolerances: several standard errors).
    let cfg = SuperpositionConfig {
        n: 50,
        batch: 1000,
        ..Default::default()
    };
    for s in [0.0, 0.5, 0.99] {
        let (mut nz, mut sum, mut sq, mut total) = (0usize, 0.0f64, 0.0f64, 0usize);
        for t in 0..20 {
            for v in batch(&cfg, s, 3, t) {
                total += 1;
                assert!((0.0..=1.0).contains(&v));
                if v != 0.0 {
                    nz += 1;
                    sum += v as f64;
                    sq += (v as f64).powi(2);
                }
            }
        }
        let frac = nz as f64 / total as f64;
        let se = ((1.0 - s) * s / total as f64).sqrt().max(1e-9);
        assert!(
            (frac - (1.0 - s)).abs() < 5.0 * se + 1e-6,
            "S={s}: density {frac}"
        );
        let mean = sum / nz as f64;
        let var = sq / nz as f64 - mean * mean;
        assert!(
            (mean - 0.5).abs() < 5.0 * (1.0 / 12.0 / nz as f64).sqrt(),
            "S={s}: mean {mean}"
        );
        assert!((var - 1.0 / 12.0).abs() < 0.01, "S={s}: variance {var}");
    }
}

#[test]
fn phase_diagram_corners() {
    // Two features into one dimension (the paper's "superposition as a phase change"): with
    // dense features the dimension goes to the more important feature alone — feature 2 is
    // dropped when it matters a tenth as much, and takes the dimension when it matters ten
    // times as much; with rare features (density 0.01) of equal importance both are stored,
    // antipodally, in superposition. Three restarts per cell, the lowest expected loss kept.
    use interplab_train::superposition::{best_restarts, classify_pair, PairPhase};
    let restarts = 3;
    let cfg = SuperpositionConfig::phase_diagram(&[1.0, 0.01], &[0.1, 1.0, 10.0], restarts);
    let mut model = ToyModel::new(cfg.clone()).unwrap();
    model.train(cfg.steps, &mut |_, _| {});
    let best = best_restarts(&model, restarts);
    assert_eq!(best.len(), 6);
    let phase: Vec<PairPhase> = best
        .iter()
        .map(|&k| classify_pair(1, &model.instances[k]))
        .collect();
    let w: Vec<&[f32]> = best.iter().map(|&k| model.instances[k].w()).collect();
    eprintln!("{phase:?}\n{w:?}");
    // Cells are density-major: (1, 0.1), (1, 1), (1, 10), (0.01, 0.1), (0.01, 1), (0.01, 10).
    assert_eq!(
        phase[0],
        PairPhase::NotRepresented,
        "dense, importance 0.1: {w:?}"
    );
    assert_eq!(
        phase[2],
        PairPhase::Dedicated,
        "dense, importance 10: {w:?}"
    );
    assert_eq!(
        phase[4],
        PairPhase::Superposition,
        "sparse, importance 1: {w:?}"
    );
}

#[test]
fn expected_loss_of_known_solutions() {
    // Constructed cases with closed forms (n = 2, m = 1, importances 1, density p):
    // W = 0, b = 0 reconstructs nothing: E = p·E[x²] = p/3 per feature, mean over the two p/3.
    // W = (1, 0), b = 0 reconstructs feature 1 exactly when feature 2 is absent, and
    // x₁ + 0 when both are (feature 1's output ignores x₂ since W₁·W₂ = 0): only feature 2 is
    // lost, E = (p/3)/2.
    use interplab_train::superposition::pair_expected_loss;
    let p = 0.3;
    let cfg = SuperpositionConfig::phase_diagram(&[p], &[1.0], 1);
    let mut model = ToyModel::new(cfg).unwrap();
    let set = |model: &mut ToyModel, w: [f32; 2]| {
        let mut m2: ToyModel = model.clone();
        // Train zero steps, then overwrite the weights through a checkpoint round trip.
        let mut v = serde_json::to_value(&m2).unwrap();
        v["instances"][0]["params"] = serde_json::json!([w[0], w[1], 0.0, 0.0]);
        m2 = serde_json::from_value(v).unwrap();
        *model = m2;
    };
    set(&mut model, [0.0, 0.0]);
    let e0 = pair_expected_loss(1, &model.instances[0], &[1.0, 1.0], 400);
    assert!((e0 - p / 3.0).abs() < 1e-5, "{e0}");
    set(&mut model, [1.0, 0.0]);
    let e1 = pair_expected_loss(1, &model.instances[0], &[1.0, 1.0], 400);
    assert!((e1 - p / 6.0).abs() < 1e-5, "{e1}");
}

#[test]
fn geometry_half_band_reduced() {
    // The geometry experiment scaled down (n = 40, m = 4 instead of 200, 20; 5k steps), same
    // constant importance and 20 sparsities with 1/(1−S) from 1 to 20. The paper: D* starts at
    // 1 (dense: an orthogonal basis of m directions), is "sticky" at 1/2 over a band of
    // sparsities — the model stores 2m features as m antipodal pairs — and falls below it
    // for sparser features. Checked: D*(S = 0) ≈ 1; at least three consecutive sparsities with
    // D* in 0.5 ± 0.05; in that band's middle instance exactly 2m features are represented, each
    // with exactly one antipodal partner (cosine < −0.9); D* at the sparsest instance < 0.45.
    use interplab_train::superposition::longest_band;
    let cfg = SuperpositionConfig {
        n: 40,
        m: 4,
        steps: 5000,
        ..SuperpositionConfig::geometry(20, 20.0)
    };
    let mut model = ToyModel::new(cfg.clone()).unwrap();
    model.train(cfg.steps, &mut |_, _| {});
    let g: Vec<_> = model
        .instances
        .iter()
        .map(|i| geometry(cfg.n, cfg.m, i))
        .collect();
    let dstar: Vec<f64> = g.iter().map(|x| x.dims_per_feature).collect();
    eprintln!("D* {dstar:.3?}");
    assert!((dstar[0] - 1.0).abs() < 0.05, "dense D* {}", dstar[0]);
    let (a, b) = longest_band(&dstar, 0.45, 0.55).expect("no D* near 1/2");
    assert!(b - a + 1 >= 3, "band {a}..={b}: {dstar:.3?}");
    assert!(*dstar.last().unwrap() < 0.45, "{dstar:.3?}");
    let mid = &g[(a + b) / 2];
    assert_eq!(mid.represented, 2 * cfg.m, "{mid:?}");
    for i in (0..cfg.n).filter(|&i| mid.norms[i] > 0.5) {
        let partners = (0..cfg.n)
            .filter(|&j| j != i && mid.norms[j] > 0.5)
            .filter(|&j| mid.wtw[i][j] / (mid.norms[i] * mid.norms[j]) < -0.9)
            .count();
        assert_eq!(partners, 1, "feature {i} has {partners} antipodal partners");
    }
}
