//! The fused AdamW follows torch.optim.AdamW step for step (fixture from
//! `scripts/train/adamw_reference.py`).

use interplab_train::optim::{AdamW, AdamWConfig};

#[test]
fn matches_torch_adamw() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/adamw_reference.json");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vec = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let mut p = vec(&r["p0"]);
    let cfg = AdamWConfig {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-8,
        weight_decay: 0.5,
    };
    let mut opt = AdamW::new(cfg, p.len());
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
