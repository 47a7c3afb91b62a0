//! Shared helpers of the analysis tests: the real default model (loaded once per test binary)
//! and the tiny Hugging Face fixtures of `crates/core/tests/fixtures/hf/`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use interplab_core::loader::{load, load_resolved, LoadedModel, WeightStorage};
use interplab_core::source::ResolvedModel;

/// SmolLM2-135M-Instruct (alias `smollm2-135m`), loaded once per test binary.
pub fn smollm2() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load("smollm2-135m", &Device::Cpu, &mut |_| {}).expect("loading smollm2-135m"))
}

/// A tiny fixture model by directory name (`llama-tiny`, `gpt2-tiny`, ...).
pub fn tiny(name: &str) -> LoadedModel {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures/hf")
        .join(name);
    let resolved = ResolvedModel {
        path: path.clone(),
        sha256: String::new(),
        source: path.display().to_string(),
    };
    load_resolved(resolved, &Device::Cpu, WeightStorage::Dense)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The shared SmolLM2 reference directory (`tl_*` TransformerLens fixtures).
pub fn smollm2_reference(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures/reference/smollm2")
        .join(file)
}
