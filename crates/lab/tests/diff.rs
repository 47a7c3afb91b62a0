//! `diff` through the lab: a quick run (one model against itself) reruns to identical results
//! and tensors with every difference zero; a bad config lists every problem and creates no run
//! directory.

use crate::common;

use interplab_lab::diff::Config;
use interplab_lab::Experiment;

#[test]
fn quick_diff_reruns_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(
        common::tensor_files(&first.dir),
        vec!["losses.safetensors".to_string()]
    );
    let r = &first.outcome.results;
    assert_eq!(r["n_docs"].as_u64(), Some(2));
    assert_eq!(r["mean_diff"].as_f64(), Some(0.0));
    assert!(!r["tokens"].as_array().unwrap().is_empty());
    assert!(first.dir.join("loss_diff_histogram.svg").is_file());
    // The same model on both sides: every head pair is the same head with the same score.
    let heads = r["heads"].as_array().unwrap();
    assert_eq!(heads.len(), 3 * 3, "three kinds, top 3");
    for h in heads {
        assert_eq!(h["a"], h["b"], "{h}");
    }
    let induction_best = heads
        .iter()
        .find(|h| h["kind"] == "induction_head" && h["rank"] == 0)
        .unwrap();
    assert!(
        induction_best["a"][2].as_f64().unwrap() > 0.3,
        "{induction_best}"
    );
}

#[test]
fn a_bad_config_lists_every_problem_and_writes_nothing() {
    let cfg = Config {
        model_a: "smollm2-135m".into(),
        model_b: String::new(),
        max_docs: 0,
        max_tokens: 1,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "model_b is empty",
        "max_docs must be at least 1",
        "max_tokens must be at least 2",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
    common::refused_without_writing(cfg.into());
}
