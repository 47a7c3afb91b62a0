//! `trace` through the lab: a quick run reruns to identical results and tensors; a bad config
//! lists every problem and creates no run directory.

use crate::common;

use interplab_lab::trace::{Config, Kind};
use interplab_lab::Experiment;

#[test]
fn quick_trace_reruns_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(
        common::tensor_files(&first.dir),
        vec!["trace.safetensors".to_string()]
    );
    let r = &first.outcome.results;
    let (clean, corrupted) = (
        r["hidden"]["clean_prob"].as_f64().unwrap(),
        r["hidden"]["corrupted_prob"].as_f64().unwrap(),
    );
    assert!(corrupted < clean, "{corrupted} vs {clean}");
    assert!(r["corruption"]["gaussian"]["samples"].as_u64() == Some(1));
    assert!(first.dir.join("trace_hidden.png").is_file());
}

#[test]
fn a_bad_config_lists_every_problem_and_writes_nothing() {
    let cfg = Config {
        model: "smollm2-135m".into(),
        prompt: "  ".into(),
        subject: "The Eiffel Tower".into(),
        samples: 0,
        window: 0,
        noise: f64::NAN,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "the prompt is empty",
        "samples must be at least 1",
        "window must be at least 1",
        "noise must be a finite number",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
    assert_eq!(
        Kind::parse_list("attn,hidden").unwrap(),
        vec![Kind::Attn, Kind::Hidden]
    );
    assert!(Kind::parse_list("mlp,sideways").is_err());
    common::refused_without_writing(cfg.into());
}
