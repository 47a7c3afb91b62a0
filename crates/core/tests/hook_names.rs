//! `hook_names()` is exact: for every architecture the repository has and every combination of
//! hook settings, the names it lists are the names the forward emits, and each parses back.

use crate::common;

use std::collections::BTreeSet;

use candle_core::{Device, Tensor};
use common::{smollm2, tiny, tokens};
use interplab_core::config::{ModelConfig, NormKind};
use interplab_core::model::{
    AttnWeights, BlockWeights, HookName, HookSettings, HookedTransformer, NameFilter, NormWeights,
    Weights,
};
use interplab_core::rng::SplitMix;

/// All 16 combinations of the four opt-in hook settings.
fn settings_combinations() -> Vec<HookSettings> {
    (0..16u8)
        .map(|bits| HookSettings {
            use_attn_result: bits & 1 != 0,
            use_split_qkv_input: bits & 2 != 0,
            use_attn_in: bits & 4 != 0,
            use_hook_mlp_in: bits & 8 != 0,
        })
        .collect()
}

fn check(what: &str, model: &HookedTransformer) {
    let t = tokens(&[1, 2, 3, 4]);
    for s in settings_combinations() {
        let mut m = model.clone();
        m.settings = s;
        let listed = m.hook_points();
        let names = m.hook_names();
        assert_eq!(names.len(), listed.len());
        for (h, n) in listed.iter().zip(&names) {
            assert_eq!(&h.to_string(), n);
            assert_eq!(
                HookName::parse(n),
                Some(*h),
                "{what} {s:?}: {n} does not parse back"
            );
        }
        let emitted = m.emitted_hook_points(&t).unwrap();
        if s.use_split_qkv_input {
            // Each of q, k, v passes ln1 on its own copy, so first emissions interleave.
            let a: BTreeSet<_> = emitted.iter().collect();
            let b: BTreeSet<_> = listed.iter().collect();
            assert_eq!(a, b, "{what} {s:?}: emitted vs listed");
        } else {
            assert_eq!(
                emitted, listed,
                "{what} {s:?}: emitted vs listed (in order)"
            );
        }
        // And run_with_cache with every hook caches exactly the listed names.
        let (_, cache) = m.run_with_cache(&t, &NameFilter::all()).unwrap();
        let cached: BTreeSet<&String> = cache.names().collect();
        let want: BTreeSet<&String> = names.iter().collect();
        assert_eq!(cached, want, "{what} {s:?}: cached vs listed");
    }
}

#[test]
fn gpt2_tiny() {
    check("gpt2-tiny", &tiny("gpt2-tiny").model);
}

#[test]
fn neox_tiny() {
    check("neox-tiny", &tiny("neox-tiny").model);
}

#[test]
fn llama_tiny() {
    check("llama-tiny", &tiny("llama-tiny").model);
}

#[test]
fn gemma3_tiny() {
    check("gemma3-tiny", &tiny("gemma3-tiny").model);
}

#[test]
fn smollm2_135m() {
    check("smollm2-135m", &smollm2().model);
}

/// An attention-only model with random weights, with or without LayerNorm (the toy
/// induction trainer's two configs).
fn attention_only(norm: NormKind) -> HookedTransformer {
    let (d, layers, heads, d_head, vocab, ctx) = (8, 2, 2, 4, 10, 16);
    let cfg = ModelConfig {
        norm,
        ..ModelConfig::attention_only(d, layers, heads, d_head, vocab, ctx)
    };
    let dev = Device::Cpu;
    let mut rng = SplitMix::new(5);
    let mut rand = |r: usize, c: usize| -> Tensor {
        let v: Vec<f32> = (0..r * c).map(|_| rng.normal() as f32 * 0.3).collect();
        Tensor::from_vec(v, (r, c), &dev).unwrap()
    };
    let ln = || match norm {
        NormKind::None => NormWeights::default(),
        _ => NormWeights {
            w: Some(Tensor::ones(d, candle_core::DType::F32, &dev).unwrap()),
            b: Some(Tensor::zeros(d, candle_core::DType::F32, &dev).unwrap()),
        },
    };
    let hd = heads * d_head;
    let blocks = (0..layers)
        .map(|_| BlockWeights {
            ln1: ln(),
            attn: AttnWeights {
                w_q: rand(d, hd).into(),
                w_k: rand(d, hd).into(),
                w_v: rand(d, hd).into(),
                w_o: rand(hd, d).into(),
                b_q: None,
                b_k: None,
                b_v: None,
                b_o: None,
                q_norm: None,
                k_norm: None,
            },
            ln1_post: None,
            ln2: NormWeights::default(),
            mlp: None,
            ln2_post: None,
        })
        .collect();
    let weights = Weights {
        w_e: rand(vocab, d),
        w_pos: Some(rand(ctx, d)),
        blocks,
        ln_final: ln(),
        w_u: Some(rand(d, vocab)),
        b_u: None,
        unembed_blocks: None,
        unembed_bf16: None,
    };
    HookedTransformer::new(cfg, weights, Device::Cpu).unwrap()
}

#[test]
fn attention_only_toys() {
    check("attention-only", &attention_only(NormKind::None));
    check(
        "attention-only + LayerNorm",
        &attention_only(NormKind::LayerNorm),
    );
}
