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
