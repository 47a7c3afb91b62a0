//! Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF: Q4_K, Q6_K, Q5_0, Q8_0 and F32 tensors; Q/K/V
//! biases; 14 query heads on 2 key/value heads; rotary base 1e6; untied unembedding) against
//! Hugging Face transformers dequantising the same file to f32 (`shared/reference/qwen2`,
//! slimmed into `fixtures/reference/qwen2` by `scripts/peer/slim_reference.py --models qwen2`).

use crate::common;

use candle_core::Device;
use common::{fixture, max_abs_diff, qwen2, tokens};
use interplab_core::config::Architecture;
use interplab_core::loader::{load_resolved, WeightStorage};
use interplab_core::model::process::ProcessOptions;
use interplab_core::model::{log_softmax, Input, Matrix, NameFilter, RunOptions};
use interplab_core::source::{resolve, ModelSource};

#[test]
fn logits_and_tokens_match_transformers() {
    let m = qwen2();
    assert_eq!(m.model.cfg.architecture, Architecture::Qwen2);
    assert_eq!((m.model.cfg.n_heads, m.model.cfg.n_kv_heads), (14, 2));
    assert!(
        !m.model.cfg.tied_embeddings,
        "the GGUF has its own output.weight"
    );
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/qwen2/hf_logits_slim.json")).unwrap(),
    )
    .unwrap();
    let prompts = meta["source_json"]["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 3);
    let prompts: Vec<&str> = prompts
        .iter()
        .map(|p| p["prompt"].as_str().unwrap())
        .collect();
    let worst = common::assert_logits_match_reference(m, "qwen2", &prompts);
    eprintln!("last-position logits: max |ours - transformers| = {worst:.2e}");
}

#[test]
fn cached_hooks_replay_the_logits() {
    let m = qwen2();
    let ids = m.tokenizer.encode("def add(a, b):", false).unwrap();
    let t = tokens(&ids);
    let plain = m.model.forward(&t).unwrap();
    let (logits, cache) = m
        .model
        .run_with_cache(
            &t,
            &NameFilter::new(&["blocks.*.hook_resid_pre", "blocks.*.attn.hook_q"]),
        )
        .unwrap();
    assert_eq!(max_abs_diff(&plain, &logits), 0.0);
    // Q carries its bias: [batch, pos, 14 heads, 64].
    assert_eq!(
        cache.get("blocks.0.attn.hook_q").unwrap().dims(),
        &[1, ids.len(), 14, 64]
    );
    // Starting at layer 12 from the cached residual gives the same logits.
    let resid = cache.get("blocks.12.hook_resid_pre").unwrap();
    let opts = RunOptions {
        start_at_layer: Some(12),
        ..Default::default()
    };
    let (resumed, _) = m.model.run(Input::Resid(resid), &opts, None, None).unwrap();
    assert_eq!(max_abs_diff(&plain, &resumed), 0.0, "start_at_layer 12");
}

/// transformers' greedy continuation: prompt ids, the 20 new ids (argmax of a full forward
/// per step, no EOS stop: equal to its `generate(do_sample=False)`) and their text.
fn greedy_reference() -> (Vec<u32>, Vec<u32>, String) {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/qwen2/hf_logits_slim.json")).unwrap(),
    )
    .unwrap();
    let g = &meta["source_json"]["greedy_continuation"];
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let prompt = ids(&g["prompt_token_ids"]);
    assert_eq!(
        qwen2()
            .tokenizer
            .encode(g["prompt"].as_str().unwrap(), false)
            .unwrap(),
        prompt
    );
    (
        prompt,
        ids(&g["new_token_ids"]),
        g["text"].as_str().unwrap().to_string(),
    )
}

#[test]
fn greedy_generation_with_the_kv_cache_matches_transformers() {
    let m = qwen2();
    let (prompt, want, text) = greedy_reference();
    let opts = interplab_core::model::GenerateOptions {
        max_new_tokens: 20,
        ..Default::default()
    };
    let out = m.model.generate(&prompt, &opts, None).unwrap();
    assert_eq!(out, want);
    assert_eq!(m.tokenizer.decode(&out).unwrap(), text);
}

#[test]
fn greedy_generation_from_the_blocks_matches_transformers() {
    // As `interplab generate` decodes: every block matrix stays Q5_0 / Q8_0 / Q4_K / Q6_K
    // blocks, multiplied by the exact f32 row kernels (`qmatmul`), none made dense.
    let src = ModelSource::parse("qwen2.5-coder-0.5b").unwrap();
    let resolved = resolve(&src, &mut |_| {}).unwrap();
    let mut m = load_resolved(resolved, &Device::Cpu, WeightStorage::Quantized).unwrap();
    m.model.weights.dense_where_inexact().unwrap();
    for (l, b) in m.model.weights.blocks.iter().enumerate() {
        let mlp = b.mlp.as_ref().unwrap();
        for w in [
            &b.attn.w_q,
            &b.attn.w_k,
            &b.attn.w_v,
            &b.attn.w_o,
            &mlp.w_in,
            &mlp.w_out,
        ] {
            assert!(matches!(w, Matrix::Quantized(_)), "block {l} made dense");
        }
    }
    let (prompt, want, _) = greedy_reference();
    let opts = interplab_core::model::GenerateOptions {
        max_new_tokens: 20,
        ..Default::default()
    };
    assert_eq!(m.model.generate(&prompt, &opts, None).unwrap(), want);
}

#[test]
fn weight_processing_keeps_the_log_probs() {
    // Every step (fold the RMSNorm weights, fold the value biases into b_O, centre the
    // unembedding; centring the writing weights is skipped for RMSNorm) leaves log-probs
    // unchanged, at the tolerance `weight_processing.rs` uses for every architecture.
    let m = qwen2();
    let ids = m
        .tokenizer
        .encode("fn main() { println!(\"hi\"); }", false)
        .unwrap();
    let t = tokens(&ids);
    let mut p = m.model.clone();
    p.process_weights(&ProcessOptions::all()).unwrap();
    let la = log_softmax(&m.model.forward(&t).unwrap()).unwrap();
    let lb = log_softmax(&p.forward(&t).unwrap()).unwrap();
    let d = max_abs_diff(&la, &lb);
    eprintln!("processed weights: log-probs max difference {d:.2e}");
    assert!(d < 1e-4, "log-probs differ by {d} after processing");
    // The value biases moved into b_O.
    assert!(p
        .weights
        .blocks
        .iter()
        .all(|b| b.attn.b_v.is_none() && b.attn.b_o.is_some()));
}
