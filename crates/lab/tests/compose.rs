//! `compose`: rerun identity and validation.

use crate::common;

use interplab_lab::compose::{Config, Kind};
use interplab_lab::Experiment;

#[test]
fn a_rerun_gives_identical_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(
        common::tensor_files(&first.dir),
        vec!["composition.safetensors"]
    );
    let st = candle_core::safetensors::load(
        first.dir.join("composition.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(st["k"].dims(), &[30, 9, 30, 9]);
    let r = &first.outcome.results;
    assert!(r["k"]["top"].as_array().is_some_and(|t| t.len() == 10));
    assert!(r.get("q").is_none() && r["random_baseline"].as_f64().is_some());
}

#[test]
fn a_bad_config_lists_every_problem() {
    let cfg = Config {
        model: "smollm2-135m".into(),
        kinds: vec![Kind::Q, Kind::Q],
        top_k: 0,
        baseline_samples: 0,
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "kinds lists q twice",
        "top_k must be at least 1",
        "baseline_samples must be at least 1",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    let none = Config {
        kinds: vec![],
        ..Config::quick()
    };
    assert!(none
        .validate()
        .unwrap_err()
        .to_string()
        .contains("at least one of q, k, v"));
}
