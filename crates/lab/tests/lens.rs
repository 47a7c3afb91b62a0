//! `lens`: rerun identity and validation.

use crate::common;

use interplab_lab::lens::Config;
use interplab_lab::Experiment;

#[test]
fn a_rerun_gives_identical_lens_and_attribution() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(common::tensor_files(&first.dir), vec!["lens.safetensors"]);
    let st = candle_core::safetensors::load(
        first.dir.join("lens.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(st["dla_heads"].dims(), &[30, 9]);
    for f in ["logit_lens.png", "dla_components.png", "dla_heads.png"] {
        assert!(first.dir.join(f).is_file(), "{f}");
    }
    let r = &first.outcome.results;
    let target = r["target"].as_u64().unwrap().to_string();
    assert_eq!(r["token_text"][&target], "\" Paris\"");
}

#[test]
fn a_bad_config_lists_every_problem() {
    let cfg = Config {
        model: "smollm2-135m".into(),
        prompt: String::new(),
        target: Some(String::new()),
        top_k: 0,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "prompt must be given",
        "target is empty",
        "top_k must be at least 1",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
}
