//! `WeightStorage::Quantized`: GGUF block matrices kept as GGML blocks and dequantised at each
//! use must hold exactly the values of a dense load, so every result equals the dense model's
//! (which `smollm2.rs` and `gemma3.rs` check against Hugging Face and TransformerLens), in a
//! fraction of the memory.

use crate::common;

use candle_core::Device;
use common::{fixture, max_abs_diff, read_st, tokens};
use interplab_core::loader::{load_resolved, LoadedModel, WeightStorage};
use interplab_core::model::process::ProcessOptions;
use interplab_core::model::{Matrix, NameFilter};
use interplab_core::source::{resolve, ModelSource};

fn load_with(alias: &str, storage: WeightStorage) -> LoadedModel {
    let src = ModelSource::parse(alias).unwrap();
    let resolved = resolve(&src, &mut |_| {}).unwrap();
    load_resolved(resolved, &Device::Cpu, storage).unwrap()
}

/// Every block matrix: (name, matrix).
fn block_matrices(m: &LoadedModel) -> Vec<(String, &Matrix)> {
    let mut out = Vec::new();
    for (l, b) in m.model.weights.blocks.iter().enumerate() {
        let a = &b.attn;
        for (n, w) in [
            ("W_Q", &a.w_q),
            ("W_K", &a.w_k),
            ("W_V", &a.w_v),
            ("W_O", &a.w_o),
        ] {
            out.push((format!("blocks.{l}.attn.{n}"), w));
        }
        let mlp = b.mlp.as_ref().unwrap();
        out.push((format!("blocks.{l}.mlp.W_in"), &mlp.w_in));
        out.push((
            format!("blocks.{l}.mlp.W_gate"),
            mlp.w_gate.as_ref().unwrap(),
        ));
        out.push((format!("blocks.{l}.mlp.W_out"), &mlp.w_out));
    }
    out
}

/// Quantised and dense loads of one GGUF hold identical values in far less memory, and give
/// identical logits.
fn same_values_less_memory(alias: &str, prompt: &str, max_ratio: f64) {
    let dense = load_with(alias, WeightStorage::Dense);
    let quant = load_with(alias, WeightStorage::Quantized);
    let (mut dense_bytes, mut quant_bytes) = (0usize, 0usize);
    for ((name, d), (_, q)) in block_matrices(&dense)
        .into_iter()
        .zip(block_matrices(&quant))
    {
        assert!(matches!(d, Matrix::Dense(_)), "{name} dense");
        assert!(matches!(q, Matrix::Quantized(_)), "{name} kept quantised");
        assert_eq!(d.dims(), q.dims(), "{name} dims");
        let diff = max_abs_diff(&d.tensor().unwrap(), &q.tensor().unwrap());
        assert_eq!(
            diff, 0.0,
            "{name}: dequantised at use differs from dense by {diff}"
        );
        dense_bytes += d.size_bytes();
        quant_bytes += q.size_bytes();
    }
    assert!(quant.model.weights.has_quantized() && !dense.model.weights.has_quantized());
    let ratio = quant_bytes as f64 / dense_bytes as f64;
    assert!(
        ratio < max_ratio,
        "{alias}: block matrices take {quant_bytes} bytes quantised vs {dense_bytes} dense ({ratio:.3})"
    );
    let ids = dense.tokenizer.encode(prompt, true).unwrap();
    let a = dense.model.forward(&tokens(&ids)).unwrap();
    let b = quant.model.forward(&tokens(&ids)).unwrap();
    let d = max_abs_diff(&a, &b);
    // The same f32 values; only the matmul's operand layout differs (`[in, out]` contiguous
    // vs a transposed view), which may change the summation order.
    assert!(d < 1e-4, "{alias}: logits differ by {d}");
}

#[test]
fn smollm2_quantized_equals_dense_in_a_sixth_of_the_memory() {
    // Q4_1: 20 bytes per 32 weights = 0.156 of f32.
    same_values_less_memory(
        "smollm2-135m",
        "The Eiffel Tower is located in the city of",
        0.17,
    );
}

#[test]
fn gemma3_quantized_equals_dense() {
    // Q4_K_M mixes Q4_K, Q6_K and others; bounded by Q8_0 (34 bytes per 32 weights = 0.27).
    same_values_less_memory("gemma3-270m", "The capital of France is", 0.27);
}

#[test]
fn quantized_smollm2_matches_transformers_and_caches_every_hook() {
    let quant = load_with("smollm2-135m", WeightStorage::Quantized);
    let dense = common::smollm2();
    let r = read_st(&fixture("reference/smollm2/hf_logits_slim.safetensors"));
    let prompt = "When Mary and John went to the store, John gave a drink to";
    let ids = quant.tokenizer.encode(prompt, false).unwrap();
    let all = NameFilter::all();
    let (logits, cache) = quant.model.run_with_cache(&tokens(&ids), &all).unwrap();
    let last = &r["logits_last_0"];
    let k = last.dim(0).unwrap();
    let ours = logits.squeeze(0).unwrap();
    let ours = ours.narrow(0, ids.len() - k, k).unwrap();
    let d = max_abs_diff(&ours, last);
    assert!(
        d < 1e-3,
        "last-position logits differ from transformers by {d}"
    );
    let (_, want) = dense.model.run_with_cache(&tokens(&ids), &all).unwrap();
    assert_eq!(cache.len(), want.len(), "hook count");
    for name in want.names() {
        // Decode-sized inputs (≤ 16 rows) multiply the same weights from their blocks with
        // another f32 summation order than gemm, so the bound is relative to the values' size.
        let w = want.get(name).unwrap();
        let d = max_abs_diff(cache.get(name).unwrap(), w);
        let scale = w
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1.0);
        assert!(
            d < 1e-5 * scale,
            "{name}: quantised and dense caches differ by {d} (max |value| {scale})"
        );
    }
}

#[test]
fn processing_a_quantized_model_equals_processing_the_dense_one() {
    let dense = common::smollm2();
    let quant = load_with("smollm2-135m", WeightStorage::Quantized);
    let opts = ProcessOptions::all();
    let (mut a, mut b) = (dense.model.clone(), quant.model.clone());
    a.process_weights(&opts).unwrap();
    b.process_weights(&opts).unwrap();
    let (a, b) = (a.weights.named().unwrap(), b.weights.named().unwrap());
    assert_eq!(a.len(), b.len());
    for ((n, x), (m, y)) in a.iter().zip(&b) {
        assert_eq!(n, m);
        assert_eq!(max_abs_diff(x, y), 0.0, "{n} after processing");
    }
}

/// A batch of prompts of different lengths (left-padded, masked) generates, row by row, the
/// tokens each prompt generates alone, and decoding from the blocks generates what the dense
/// model does (the same weights; greedy).
#[test]
fn batch_generation_equals_one_prompt_at_a_time_and_dense() {
    use interplab_core::model::GenerateOptions;
    let quant = load_with("smollm2-135m", WeightStorage::Quantized);
    let dense = load_with("smollm2-135m", WeightStorage::Dense);
    let prompts: Vec<Vec<u32>> = [
        "The capital of France is",
        "1, 2, 3,",
        "Once upon a time, in a small village, there",
    ]
    .iter()
    .map(|p| quant.tokenizer.encode(p, true).unwrap())
    .collect();
    assert!(prompts[0].len() != prompts[1].len() && prompts[1].len() != prompts[2].len());
    let opts = GenerateOptions {
        max_new_tokens: 12,
        ..Default::default()
    };
    let batch = quant.model.generate_batch(&prompts, &opts, None).unwrap();
    for (p, got) in prompts.iter().zip(&batch) {
        let alone = quant.model.generate(p, &opts, None).unwrap();
        assert_eq!(got, &alone, "batched vs alone for {p:?}");
        let d = dense.model.generate(p, &opts, None).unwrap();
        assert_eq!(got, &d, "blocks vs dense for {p:?}");
    }
}
