//! Both AdamWs — the fused one over f32 slices and the one over candle `Var`s — follow
//! torch.optim.AdamW step for step (fixture from `scripts/train/adamw_reference.py`).

use candle_core::{DType, Device, Tensor, Var};
use interplab_train::optim::{AdamW, AdamWConfig};
use interplab_train::optim_var::VarAdamW;

/// The settings `scripts/train/adamw_reference.py` uses.
const CONFIG: AdamWConfig = AdamWConfig {
    lr: 1e-2,
    beta1: 0.9,
    beta2: 0.98,
    eps: 1e-8,
    weight_decay: 0.5,
};

/// `tests/fixtures/adamw_reference.json`: `p0`, then per step `grads` and torch's `params`.
fn reference() -> serde_json::Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/adamw_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn matches_torch_adamw() {
    let r = reference();
    let vec =
        |v: &serde_json::Value| -> Vec<f32> { f64s(v).into_iter().map(|x| x as f32).collect() };
    let mut p = vec(&r["p0"]);
    let mut opt = AdamW::new(CONFIG, p.len());
    for (g, want) in r["grads"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["params"].as_array().unwrap())
    {
        opt.step(&mut p, &vec(g));
        for (a, b) in p.iter().zip(vec(want)) {
            assert!((a - b).abs() < 2e-6, "{a} vs torch {b}");
        }
    }
}

/// VarAdamW on a Var whose loss has the fixture's gradient, against torch.optim.AdamW
/// (`scripts/train/adamw_reference.py`): the in-place f32 path and the f64 `Var::set` path.
#[test]
fn var_adamw_matches_torch() {
    let r = reference();
    for dtype in [DType::F32, DType::F64] {
        let p0 = Tensor::new(f64s(&r["p0"]).as_slice(), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let var = Var::from_tensor(&p0).unwrap();
        // A second Var the loss never touches: it only decays.
        let idle = Var::from_tensor(&Tensor::ones(3, dtype, &Device::Cpu).unwrap()).unwrap();
        let mut opt = VarAdamW::new(
            vec![("p".into(), var.clone()), ("idle".into(), idle.clone())],
            CONFIG,
        );
        for (step, (g, want)) in r["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(r["params"].as_array().unwrap())
            .enumerate()
        {
            let g = Tensor::new(f64s(g).as_slice(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            // d/dp Σ p ⊙ g = g.
            let loss = (var.as_tensor() * &g).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            let got: Vec<f64> = var
                .as_tensor()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap();
            for (a, b) in got.iter().zip(f64s(want)) {
                assert!(
                    (a - b).abs() < 2e-6,
                    "{dtype:?} step {step}: {a} vs torch {b}"
                );
            }
            let decayed: Vec<f64> = idle
                .as_tensor()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap();
            let want_idle = (1.0 - 1e-2 * 0.5f64).powi(step as i32 + 1);
            assert!((decayed[0] - want_idle).abs() < 1e-6, "{decayed:?}");
        }
    }
}
