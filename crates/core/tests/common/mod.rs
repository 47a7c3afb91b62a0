//! Shared helpers of the integration tests: fixture paths, the real models (fetched into the
//! cache on first use, once per test binary), tensor comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use interplab_core::loader::{load, load_resolved, LoadedModel, WeightStorage};
use interplab_core::source::ResolvedModel;

/// `crates/core/tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// All tensors of a safetensors file.
pub fn read_st(path: &std::path::Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// SmolLM2-135M-Instruct (alias `smollm2-135m`), loaded once per test binary.
pub fn smollm2() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load("smollm2-135m", &Device::Cpu, &mut |_| {}).expect("loading smollm2-135m"))
}

/// Gemma 3 270M (alias `gemma3-270m`), loaded once per test binary.
pub fn gemma3() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load("gemma3-270m", &Device::Cpu, &mut |_| {}).expect("loading gemma3-270m"))
}

/// Qwen2.5-Coder-0.5B-Instruct (alias `qwen2.5-coder-0.5b`), loaded once per test binary.
pub fn qwen2() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| {
        load("qwen2.5-coder-0.5b", &Device::Cpu, &mut |_| {}).expect("loading qwen2.5-coder-0.5b")
    })
}

/// A tiny Hugging Face fixture model by directory name (`gpt2-tiny`, ...).
pub fn tiny(name: &str) -> LoadedModel {
    let path = fixture(&format!("hf/{name}"));
    load_resolved(
        ResolvedModel {
            path: path.clone(),
            sha256: String::new(),
            source: path.display().to_string(),
        },
        &Device::Cpu,
        WeightStorage::Dense,
    )
    .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Max |a - b| over all elements (shapes must agree).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Token ids as a `[1, n]` u32 tensor.
pub fn tokens(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

/// An i64 tensor as u32 ids.
pub fn ids_of(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

/// Max over elements of |a - b| / max(1, |b|): absolute error for ordinary values, relative
/// error for the few huge ones (SmolLM2's residual reaches 2e4 at the first position, where one
/// f32 ulp is 2e-3, so no two f32 implementations agree there to 1e-3 absolute).
pub fn max_mixed_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    let denom = b.abs().unwrap().maximum(1f32).unwrap();
    ((a - &b).unwrap().abs().unwrap() / denom)
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Logits of `prompts` (tokenised without BOS) against a slimmed transformers reference
/// (`reference/<name>/hf_logits_slim.safetensors`): token ids, the last positions' logits and
/// the per-position max within 1e-3, argmax identical. Returns the worst last-position error.
#[allow(dead_code)]
pub fn assert_logits_match_reference(m: &LoadedModel, name: &str, prompts: &[&str]) -> f32 {
    let r = read_st(&fixture(&format!(
        "reference/{name}/hf_logits_slim.safetensors"
    )));
    let mut worst = 0f32;
    for (i, p) in prompts.iter().enumerate() {
        let want_ids = ids_of(&r[&format!("tokens_{i}")]);
        let ids = m.tokenizer.encode(p, false).unwrap();
        assert_eq!(ids, want_ids, "{name} prompt {i} token ids");
        let logits = m.model.forward(&tokens(&ids)).unwrap().squeeze(0).unwrap();
        let last = &r[&format!("logits_last_{i}")];
        let k = last.dim(0).unwrap();
        let ours = logits.narrow(0, ids.len() - k, k).unwrap();
        let d = max_abs_diff(&ours, last);
        assert!(
            d < 1e-3,
            "{name} prompt {i}: last-position logits differ by {d}"
        );
        worst = worst.max(d);
        let argmax: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
        assert_eq!(
            argmax,
            ids_of(&r[&format!("argmax_{i}")]),
            "{name} prompt {i} argmax"
        );
        let max = logits.max(1).unwrap();
        let d = max_abs_diff(&max, &r[&format!("max_{i}")]);
        assert!(
            d < 1e-3,
            "{name} prompt {i}: per-position max logit differs by {d}"
        );
    }
    worst
}
