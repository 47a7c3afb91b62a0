//! Direct logit attribution adds up by construction: the terms sum to the model's own logit
//! (difference), on SmolLM2 (RMSNorm) and on the tiny GPT-2 fixture (LayerNorm, biases); each
//! layer's heads plus the output bias sum to the layer's attention term. The logit lens's last
//! layer is the model's own prediction.

use candle_core::Device;
use interplab_analysis::lens::{direct_logit_attribution, logit_lens};
use interplab_core::loader::{load, load_resolved};
use interplab_core::source::ResolvedModel;

fn check_sums(model: &interplab_core::model::HookedTransformer, tokens: &[u32], a: u32, b: u32) {
    let n = tokens.len();
    let d = direct_logit_attribution(model, tokens, n - 1, a, Some(b)).unwrap();
    let tol = 1e-3 * (1.0 + d.logit.abs());
    assert!(
        (d.total - d.logit).abs() < tol,
        "total {} vs logit {}",
        d.total,
        d.logit
    );
    for (l, heads) in d.heads.iter().enumerate() {
        let attn = d
            .components
            .iter()
            .find(|c| c.0 == format!("{l} attn"))
            .unwrap()
            .1;
        let sum: f64 = heads.iter().sum::<f64>() + d.head_bias[l];
        assert!(
            (sum - attn).abs() < 1e-4 * (1.0 + attn.abs()),
            "layer {l}: heads {sum} vs attn {attn}"
        );
    }
}

#[test]
fn dla_sums_to_the_logit_difference_on_smollm2() {
    let m = load("smollm2-135m", &Device::Cpu, &mut |_| {}).unwrap();
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
}

#[test]
fn dla_sums_to_the_logit_difference_with_layernorm_and_biases() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures/hf/gpt2-tiny");
    let m = load_resolved(
        ResolvedModel {
            path: path.clone(),
            sha256: String::new(),
            source: path.display().to_string(),
        },
        &Device::Cpu,
    )
    .unwrap();
    check_sums(&m.model, &[5, 17, 3, 99, 42, 7], 11, 12);
    assert!(direct_logit_attribution(&m.model, &[5, 17], 2, 11, None).is_err());
}
