//! The grokking model against TransformerLens' HookedTransformer (logits, loss, gradients and
//! three AdamW steps, from scripts/train/grokking_reference.py), against its own plain
//! three-position forward, against finite differences; a reduced run that groks; resume.

use interplab_train::checkpoint;
use interplab_train::grokking::{
    embedding_fourier_norms, param_infos, split, Grokking, GrokkingConfig,
};
use safetensors::SafeTensors;

fn fixture() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/grokking_tl.safetensors"
    );
    std::fs::read(path).expect("fixture written by scripts/train/grokking_reference.py")
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("{name} in fixture"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn f64s(st: &SafeTensors, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The configuration of the fixture (see the script).
fn tl_config() -> GrokkingConfig {
    GrokkingConfig {
        p: 17,
        d_model: 24,
        n_heads: 3,
        d_head: 8,
        d_mlp: 40,
        ..GrokkingConfig::default()
    }
}

fn tl_model(st: &SafeTensors) -> Grokking {
    let mut m = Grokking::new(tl_config()).unwrap();
    for info in param_infos(&m.cfg) {
        m.set_param(info.name, &f32s(st, info.name)).unwrap();
    }
    m
}

fn tl_pairs(st: &SafeTensors) -> Vec<(u32, u32)> {
    let t = st.tensor("pairs").unwrap();
    let v: Vec<i64> = t
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    v.chunks(2).map(|c| (c[0] as u32, c[1] as u32)).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

#[test]
fn matches_transformer_lens_logits_loss_gradients_and_adamw_steps() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut model = tl_model(&st);
    let pairs = tl_pairs(&st);

    let logits = model.logits(&pairs);
    let d = max_abs_diff(&logits, &f32s(&st, "logits"));
    assert!(d < 1e-5, "logits differ from TransformerLens by {d}");

    let mut grad = vec![0.0f32; model.params().len()];
    let ev = model.loss_and_grad(&pairs, &mut grad);
    let want = f64s(&st, "loss")[0];
    assert!((ev.loss - want).abs() < 1e-6, "loss {} vs {want}", ev.loss);
    for info in param_infos(&model.cfg) {
        let ours = &grad[info.offset..info.offset + info.len()];
        let theirs = f32s(&st, &format!("grad.{}", info.name));
        let d = max_abs_diff(ours, &theirs);
        // f32 sums in a different order: relative to the gradient's scale.
        assert!(
            d <= 1e-4 * max_abs(&theirs) + 1e-8,
            "{}: gradient differs by {d} (max {})",
            info.name,
            max_abs(&theirs)
        );
    }

    let losses = f64s(&st, "losses3");
    for want in losses {
        let ev = model.step(&pairs);
        assert!((ev.loss - want).abs() < 1e-5, "loss {} vs {want}", ev.loss);
    }
    for info in param_infos(&model.cfg) {
        let d = max_abs_diff(
            model.param(info.name).unwrap(),
            &f32s(&st, &format!("after3.{}", info.name)),
        );
        assert!(d < 1e-6, "{} after 3 AdamW steps differs by {d}", info.name);
    }
}

#[test]
fn table_forward_equals_plain_transformer_at_full_size() {
    let model = Grokking::new(GrokkingConfig::default()).unwrap();
    let (train, _) = split(&model.cfg);
    let pairs = &train[..64];
    let fast = model.logits(pairs);
    let plain = model.forward_reference(pairs);
    let d = max_abs_diff(&fast, &plain);
    assert!(
        d < 1e-4 * (1.0 + max_abs(&plain)),
        "table forward differs by {d}"
    );
}

#[test]
fn gradient_matches_finite_differences() {
    let cfg = GrokkingConfig {
        p: 7,
        d_model: 8,
        n_heads: 2,
        d_head: 4,
        d_mlp: 16,
        frac_train: 0.5,
        seed: 3,
        ..GrokkingConfig::default()
    };
    let mut model = Grokking::new(cfg.clone()).unwrap();
    let (train, _) = split(&cfg);
    let mut grad = vec![0.0f32; model.params().len()];
    model.loss_and_grad(&train, &mut grad);
    let base: Vec<f32> = model.params().to_vec();
    let eps = 1e-2f32;
    let mut checked = 0;
    for info in param_infos(&cfg) {
        // The three largest gradient entries of each weight (f32 differences need signal).
        let mut idx: Vec<usize> = (info.offset..info.offset + info.len()).collect();
        idx.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
        for &i in idx.iter().take(3) {
            let local = i - info.offset;
            let mut w = base[info.offset..info.offset + info.len()].to_vec();
            w[local] = base[i] + eps;
            model.set_param(info.name, &w).unwrap();
            let up = model.evaluate(&train).loss;
            w[local] = base[i] - eps;
            model.set_param(info.name, &w).unwrap();
            let down = model.evaluate(&train).loss;
            w[local] = base[i];
            model.set_param(info.name, &w).unwrap();
            let fd = (up - down) / (2.0 * eps as f64);
            let err = (fd - grad[i] as f64).abs();
            assert!(
                err <= 2e-2 * fd.abs().max(grad[i].abs() as f64) + 1e-5,
                "{}[{local}]: backward {} vs finite difference {fd}",
                info.name,
                grad[i]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 27);
}

/// A reduced configuration that groks in seconds (p = 53, 40% train, d_model 64, lr 3e-3;
/// found by trying a few: at p = 31 with 40% train it memorises and never generalises within
/// 4,000 epochs). The paper's signature: training accuracy reaches 100% long before test
/// accuracy passes 95%, and the embedding's Fourier spectrum, spread out at initialisation,
/// concentrates on a few frequencies.
#[test]
fn reduced_modular_addition_groks_with_a_sparse_fourier_spectrum() {
    let cfg = GrokkingConfig {
        p: 53,
        frac_train: 0.4,
        d_model: 64,
        d_head: 16,
        d_mlp: 256,
        lr: 3e-3,
        epochs: 3000,
        log_every: 50,
        ..GrokkingConfig::default()
    };
    let mut model = Grokking::new(cfg).unwrap();
    let top5_share = |norms: &[f64]| {
        let mut v = norms[1..].to_vec();
        v.sort_by(|a, b| b.total_cmp(a));
        v[..5].iter().sum::<f64>() / v.iter().sum::<f64>()
    };
    let init_share = top5_share(&embedding_fourier_norms(&model));
    // Weights every 50 epochs, for the progress measures (as the paper's checkpoints).
    let mut snapshots = Vec::new();
    let mut done = false;
    while !done && model.epoch < 3000 {
        snapshots.push((model.epoch, model.params().to_vec()));
        model
            .train(50, &mut |_, e| {
                done = e.is_some_and(|e| e.test_acc >= 0.99);
                done
            })
            .unwrap();
    }
    let h = &model.history;
    let first = |f: &dyn Fn(&interplab_train::grokking::LogEntry) -> bool| {
        h.iter().find(|e| f(e)).map(|e| e.epoch)
    };
    let memorised = first(&|e| e.train_acc >= 1.0).expect("training accuracy reaches 100%");
    let generalised = first(&|e| e.test_acc >= 0.95).expect("test accuracy passes 95%");
    // Thresholds: the project's run of this config, and why each separates grokking from its
    // failures. 5× delay: a model that generalises while it fits (no grokking, e.g. a large
    // training fraction) passes 95% test within about the epoch it reaches 100% train; the
    // published delays (Power et al. 2022, Nanda et al. 2023) are 10× and more. This run:
    // 100% train at epoch 100, 95% test at 1050; top-5 share 0.823; at epoch 650 restricted
    // loss 0.17 vs test 3.56, excluded 7.46 vs train ≈ 0.
    eprintln!("train 100% at epoch {memorised}, test 95% at epoch {generalised}");
    assert!(
        generalised >= 5 * memorised.max(1),
        "train 100% at epoch {memorised}, test 95% at epoch {generalised}: not long before"
    );
    let last = h.last().unwrap();
    assert!(
        last.test_acc >= 0.99,
        "stopped at test accuracy {}",
        last.test_acc
    );
    // Random embeddings spread their norm about evenly over the (p − 1)/2 = 26 frequencies:
    // the top five hold roughly 5/26 plus noise (`init_share`: 0.224 here). A Fourier circuit
    // uses a handful of key frequencies (five at p = 113 in Nanda et al.), so the top five
    // hold most of it: 0.6 and twice the initial share cannot be reached without one.
    let share = top5_share(&last.fourier_norms);
    eprintln!(
        "top-5 share {share:.3} (at init {init_share:.3}), key frequencies {:?}",
        last.key_freqs
    );
    assert!(
        share >= 0.6 && share >= 2.0 * init_share,
        "top-5 frequencies hold {share:.2} of ‖W_E‖² (at init {init_share:.2})"
    );
    assert!(
        (1..=8).contains(&last.key_freqs.len()),
        "key frequencies {:?}",
        last.key_freqs
    );
    // The progress measures move before the test loss does (Nanda et al. 2023): with the final
    // key frequencies, at the snapshot where test accuracy first reaches 50% the restricted
    // loss is already far below the test loss, and removing the key frequencies (excluded
    // loss) wrecks the training loss.
    let key = model.analyse().key_freqs;
    let mid = h.iter().find(|e| e.test_acc >= 0.5).unwrap();
    let (_, w) = snapshots.iter().find(|(ep, _)| *ep == mid.epoch).unwrap();
    let mut probe = model.clone();
    probe.set_params(w).unwrap();
    let pm = probe.progress_measures(&key);
    // A model that had only memorised would have restricted loss near its test loss (it uses
    // no key frequency) and excluded loss near its train loss (removing them changes nothing):
    // the factors 0.5 and 10 sit far from both.
    eprintln!(
        "epoch {}: restricted {:.4} vs test {:.4}; excluded {:.4} vs train {:.4}",
        mid.epoch, pm.restricted_loss, mid.test_loss, pm.excluded_loss, mid.train_loss
    );
    assert!(
        pm.restricted_loss < 0.5 * mid.test_loss,
        "epoch {}: restricted {} vs test {}",
        mid.epoch,
        pm.restricted_loss,
        mid.test_loss
    );
    assert!(
        pm.excluded_loss > 10.0 * mid.train_loss.max(1e-3),
        "epoch {}: excluded {} vs train {}",
        mid.epoch,
        pm.excluded_loss,
        mid.train_loss
    );
}

#[test]
fn resumed_run_ends_with_the_same_weights() {
    let cfg = GrokkingConfig {
        p: 23,
        d_model: 32,
        d_head: 8,
        d_mlp: 64,
        epochs: 120,
        log_every: 25,
        ..GrokkingConfig::default()
    };
    let mut straight = Grokking::new(cfg.clone()).unwrap();
    straight.train(120, &mut |_, _| false).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.json");
    let mut first = Grokking::new(cfg).unwrap();
    first.train(70, &mut |_, _| false).unwrap();
    checkpoint::save(&path, &first).unwrap();
    drop(first);
    let mut resumed: Grokking = checkpoint::load(&path).unwrap();
    resumed.train(1000, &mut |_, _| false).unwrap();
    assert_eq!(resumed.epoch, 120);
    assert_eq!(
        resumed.params(),
        straight.params(),
        "weights differ after resume"
    );
    assert_eq!(resumed.history, straight.history);
}

/// A case with a known answer: logits built from three Fourier waves in (a + b − c); the
/// key-frequency components for two of them are exactly those two waves.
#[test]
fn key_frequency_components_recover_planted_waves() {
    use interplab_train::grokking::key_frequency_components;
    let p = 13;
    let tau = 2.0 * std::f64::consts::PI / p as f64;
    let wave = |k: usize, d: usize, sin: bool| {
        let x = tau * (k * d) as f64;
        if sin {
            x.sin()
        } else {
            x.cos()
        }
    };
    let mut logits = vec![0.0f32; p * p * p];
    let mut want = vec![0.0f32; p * p * p];
    for a in 0..p {
        for b in 0..p {
            for c in 0..p {
                let d = (a + b + p - c) % p;
                let kept = 3.0 * wave(5, d, false) + 2.0 * wave(2, d, true);
                let other = 1.5 * wave(4, d, false) + 0.7;
                logits[(a * p + b) * p + c] = (kept + other) as f32;
                want[(a * p + b) * p + c] = kept as f32;
            }
        }
    }
    let got = key_frequency_components(&logits, p, &[2, 5]);
    let d = max_abs_diff(&got, &want);
    assert!(d < 1e-5, "planted components recovered to {d}");
}
