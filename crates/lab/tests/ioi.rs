//! `ioi` through the lab: a quick run reruns to identical results and tensors; a bad config
//! lists every problem and creates no run directory.

use crate::common;

use interplab_lab::ioi::Config;
use interplab_lab::Experiment;

#[test]
fn quick_ioi_reruns_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(
        common::tensor_files(&first.dir),
        vec!["ioi.safetensors".to_string()]
    );
    let r = &first.outcome.results;
    assert_eq!(r["prompts"].as_array().unwrap().len(), 4);
    assert_eq!(r["result"]["logit_diffs"].as_array().unwrap().len(), 4);
    assert!(r["result"]["head_patching"].as_array().unwrap().is_empty());
}

#[test]
fn a_bad_config_lists_every_problem_and_writes_nothing() {
    let cfg = Config {
        model: String::new(),
        n_prompts: 0,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in ["model is empty", "n_prompts must be at least 1"] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
    common::refused_without_writing(cfg.into());
}
