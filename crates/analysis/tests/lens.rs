//! Direct logit attribution adds up by construction: the terms sum to the model's own logit
//! (difference), on SmolLM2 (RMSNorm) and on the tiny GPT-2 fixture (LayerNorm, biases); each
//! layer's heads plus the output bias sum to the layer's attention term. The logit lens's last
//! layer is the model's own prediction. On SmolLM2 the per-layer logit-lens logit difference,
//! the per-component and the per-head direct logit attribution match TransformerLens within
//! 5e-5 (`tests/fixtures/lens_smollm2.*`, made by `scripts/peer/make_lens_reference.py`).
//!
//! Tolerances are set a decade above the errors measured here (`cargo test -p interplab-analysis --test
//! integration lens:: -- --nocapture` prints them): terms vs the logit difference 4.4e-7 (SmolLM2) and 2.1e-7
//! (GPT-2 fixture), bound 1e-5; heads + bias vs the layer's attention term 1.6e-7, bound 2e-6;
//! vs TransformerLens 6.5e-6 (lens), 5.1e-6 (components), 3.7e-6 (heads), bound 5e-5.

use crate::common;

use candle_core::Device;
use interplab_analysis::lens::{direct_logit_attribution, logit_lens, logit_lens_diff};

fn check_sums(model: &interplab_core::model::HookedTransformer, tokens: &[u32], a: u32, b: u32) {
    let n = tokens.len();
    let d = direct_logit_attribution(model, tokens, n - 1, a, Some(b)).unwrap();
    let tol = 1e-5; // measured 4.4e-7 (SmolLM2), 2.1e-7 (GPT-2 fixture)
    eprintln!(
        "|sum of terms - logit difference| = {:.2e} (logit difference {})",
        (d.total - d.logit).abs(),
        d.logit
    );
    assert!(
        (d.total - d.logit).abs() < tol,
        "total {} vs logit {}",
        d.total,
        d.logit
    );
    let mut worst = 0f64;
    for (l, heads) in d.heads.iter().enumerate() {
        let attn = d
            .components
            .iter()
            .find(|c| c.0 == format!("{l} attn"))
            .unwrap()
            .1;
        let sum: f64 = heads.iter().sum::<f64>() + d.head_bias[l];
        worst = worst.max((sum - attn).abs());
        assert!(
            (sum - attn).abs() < 2e-6, // measured 1.6e-7
            "layer {l}: heads {sum} vs attn {attn}"
        );
    }
    eprintln!("max |heads + bias - attn term| = {worst:.2e}");
}

#[test]
fn dla_sums_to_the_logit_difference_on_smollm2() {
    let m = common::smollm2();
    let toks = m
        .tokenizer
        .encode(
            "When Mary and John went to the store, John gave a drink to",
            false,
        )
        .unwrap();
    let (a, b) = (
        m.tokenizer.encode(" Mary", false).unwrap()[0],
        m.tokenizer.encode(" John", false).unwrap()[0],
    );
    check_sums(&m.model, &toks, a, b);
    let lens = logit_lens(&m.model, &toks, toks.len() - 1, Some(a), 3).unwrap();
    assert_eq!(lens.len(), 31);
    // The last layer decoded is the model's prediction: " Mary" on top.
    assert_eq!(lens[30].target_rank, Some(0));

    // TransformerLens on the same tokens (fold_ln=True, so its W_U carries ln_final's weight).
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lens_smollm2.safetensors");
    let tl = candle_core::safetensors::load(p, &Device::Cpu).unwrap();
    let tl_tokens: Vec<i64> = tl["tokens"].to_vec1().unwrap();
    assert_eq!(
        tl_tokens,
        toks.iter().map(|&t| t as i64).collect::<Vec<_>>()
    );
    let pos = toks.len() - 1;
    let close = |what: &str, ours: &[f64], theirs: &[f32]| {
        assert_eq!(ours.len(), theirs.len(), "{what}");
        let worst = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| (a - *b as f64).abs())
            .fold(0.0, f64::max);
        eprintln!("{what}: max |ours - TransformerLens| = {worst:.2e}");
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            assert!(
                (a - *b as f64).abs() < 5e-5, // measured ≤ 6.5e-6
                "{what}[{i}]: ours {a} vs TransformerLens {b}"
            );
        }
    };
    let tl_lens: Vec<f32> = tl["lens_logit_diff"].to_vec1().unwrap();
    close(
        "lens_logit_diff",
        &logit_lens_diff(&m.model, &toks, pos, a, Some(b)).unwrap(),
        &tl_lens,
    );
    let d = direct_logit_attribution(&m.model, &toks, pos, a, Some(b)).unwrap();
    let tl_comp: Vec<f32> = tl["component_dla"].to_vec1().unwrap();
    let ours: Vec<f64> = d.components.iter().map(|c| c.1).collect();
    close("component_dla", &ours, &tl_comp);
    let tl_heads: Vec<f32> = tl["head_dla"].flatten_all().unwrap().to_vec1().unwrap();
    let ours: Vec<f64> = d.heads.iter().flatten().copied().collect();
    close("head_dla", &ours, &tl_heads);
}

#[test]
fn dla_sums_to_the_logit_difference_with_layernorm_and_biases() {
    let m = common::tiny("gpt2-tiny");
    check_sums(&m.model, &[5, 17, 3, 99, 42, 7], 11, 12);
    assert!(direct_logit_attribution(&m.model, &[5, 17], 2, 11, None).is_err());
}
