//! Tiny random Hugging Face models (GPT-2, GPT-NeoX, Llama, Gemma 3), made by
//! `scripts/peer/make_fixtures.py`: logits and hook values match transformers within 1e-4.

use crate::common;

use candle_core::DType;
use common::{fixture, max_abs_diff, read_st, tiny};
use interplab_core::model::NameFilter;

const TOL: f32 = 1e-4;

fn check(name: &str) {
    let m = tiny(name);
    let reference = read_st(&fixture(&format!("hf/{name}/reference.safetensors")));
    let tokens = reference["input_ids"].to_dtype(DType::U32).unwrap();
    let wanted: Vec<String> = reference
        .keys()
        .filter(|k| k.starts_with("blocks.") || k.starts_with("ln_final"))
        .cloned()
        .collect();
    let (logits, cache) = m
        .model
        .run_with_cache(&tokens, &NameFilter::new(&wanted))
        .unwrap();
    let d = max_abs_diff(&logits, &reference["logits"]);
    assert!(d < TOL, "{name}: logits differ by {d}");
    for k in &wanted {
        let d = max_abs_diff(cache.get(k).unwrap(), &reference[k]);
        assert!(d < TOL, "{name}: {k} differs by {d}");
    }
}

#[test]
fn gpt2_matches_transformers() {
    check("gpt2-tiny");
}

#[test]
fn neox_matches_transformers() {
    check("neox-tiny");
}

#[test]
fn llama_matches_transformers() {
    check("llama-tiny");
}

#[test]
fn gemma3_matches_transformers() {
    check("gemma3-tiny");
}
