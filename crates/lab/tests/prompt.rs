//! `run` (lab module `prompt`): rerun identity, validation, and the activation-cache budget.

use crate::common;

use interplab_lab::prompt::Config;
use interplab_lab::Experiment;

#[test]
fn a_rerun_gives_identical_results_and_activations() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(
        common::tensor_files(&first.dir),
        vec!["activations.safetensors"]
    );
    let st = candle_core::safetensors::load(
        first.dir.join("activations.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(st["unembed.hook_out"].dims(), &[1, 10, 49152]);
    assert_eq!(st["blocks.0.attn.hook_pattern"].dims(), &[1, 9, 10, 10]);
    assert!(!st.contains_key("blocks.1.hook_resid_pre"));
    assert_eq!(first.outcome.results["top_next"][0]["token"], " Paris");
}

#[test]
fn a_bad_config_lists_every_problem_and_writes_nothing() {
    let _tmp = tempfile::tempdir().unwrap();
    let cfg = Config {
        model: "smollm2-135m".into(),
        prompt: Some("x".into()),
        token_ids: Some(vec![]),
        top_k: 0,
        cache: Some(" , ".into()),
        max_cache_bytes: Some(0),
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "exactly one of prompt and token_ids",
        "token_ids is empty",
        "top_k must be at least 1",
        "cache names no hook point",
        "max_cache_bytes must be at least 1",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    common::refused_without_writing(cfg.into());
}

#[test]
fn a_cache_over_its_budget_is_refused_before_the_forward() {
    let cfg = Config {
        model: "smollm2-135m".into(),
        token_ids: Some(vec![1, 2, 3, 4]),
        cache: Some("*".into()),
        max_cache_bytes: Some(1000),
        ..Default::default()
    };
    let e = common::refused_without_writing(cfg.into());
    assert!(e.contains("but 1000 bytes"), "{e}");
    assert!(e.contains("--max-cache-bytes"), "{e}");
}
