//! `patch` through the lab: a quick run reruns to identical results and tensors; a bad config
//! lists every problem and creates no run directory.

use crate::common;

use interplab_lab::patch::{Config, MetricName, Site};
use interplab_lab::Experiment;

#[test]
fn quick_patch_reruns_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(
        common::tensor_files(&first.dir),
        vec!["patching.safetensors".to_string()]
    );
    let r = &first.outcome.results;
    let n = r["clean_tokens"].as_array().unwrap().len();
    let values = r["attn_out"]["values"].as_array().unwrap();
    assert_eq!(values.len(), 30);
    assert!(values.iter().all(|row| row.as_array().unwrap().len() == n));
    assert!(first.dir.join("patch_attn_out.svg").is_file());
}

#[test]
fn a_bad_config_lists_every_problem_and_writes_nothing() {
    let cfg = Config {
        model: "smollm2-135m".into(),
        clean: "a".into(),
        corrupt: "b".into(),
        metric: MetricName::LogitDiff,
        answer: None,
        sites: vec![Site::ResidPre],
        head: Some("x".into()),
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "metric logit-diff needs answer and wrong",
        "head \"x\" is not LAYER.HEAD",
        "head needs a per-head site",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
    assert_eq!(
        Site::parse_list("z, resid_pre,").unwrap(),
        vec![Site::Z, Site::ResidPre]
    );
    assert!(Site::parse_list("resid_sideways")
        .unwrap_err()
        .to_string()
        .contains("unknown site"));
    common::refused_without_writing(cfg.into());
}

#[test]
fn attribution_of_kl_is_refused_before_any_sweep() {
    let cfg = Config {
        metric: MetricName::Kl,
        attribution: true,
        ..Config::quick()
    };
    // Refused by validate, which runs before any model is loaded.
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("attribution patching of metric kl"), "{e}");
    common::refused_without_writing(cfg.into());
}
