//! `toy-whispers` through the lab on SmolLM2-135M (quick config: 6 sonnets, layers 0 and 1,
//! 64 features, an MLP of 8 hidden units): a rerun gives identical results and inverter
//! weights, which load with the documented names and shapes; a bad config lists every problem
//! and leaves no run directory.

use crate::common;

use interplab_lab::whispers::Config;
use interplab_lab::Experiment;

#[test]
fn a_rerun_gives_identical_results_and_inverters() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(
        common::tensor_files(&first.dir),
        ["inverter_L0.safetensors", "inverter_L1.safetensors"]
    );
    let r = &first.outcome.results;
    let classes: Vec<u32> = serde_json::from_value(r["classes"].clone()).unwrap();
    let c = classes.len();
    for l in [0, 1] {
        let path = first.dir.join(format!("inverter_L{l}.safetensors"));
        let t = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
        let dims = |n: &str| t[n].dims().to_vec();
        assert_eq!(dims("W1"), [64, 8]);
        assert_eq!(dims("b1"), [8]);
        assert_eq!(dims("W2"), [8, c]);
        assert_eq!(dims("b2"), [c]);
        assert_eq!(dims("mean"), [64]);
        assert_eq!(dims("std"), [64]);
        assert_eq!(t["classes"].to_vec1::<u32>().unwrap(), classes);
    }
    for f in ["config.json", "checkpoint.json", "accuracy_by_layer.svg"] {
        assert!(first.dir.join(f).is_file(), "no {f}");
    }
}

#[test]
fn a_bad_config_lists_every_problem_and_writes_nothing() {
    let cfg = Config {
        max_len: 0,
        top_k: 0,
        layers: Some(vec!["x".into()]),
        random_dims: true,
        test_fraction: 1.5,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "max_len",
        "top_k",
        "random_dims needs dims",
        "not a layer number",
        "test fraction",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    common::refused_without_writing(cfg.into());
}
