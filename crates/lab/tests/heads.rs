//! `heads`: rerun identity and validation.

use crate::common;

use interplab_lab::heads::Config;
use interplab_lab::Experiment;

#[test]
fn a_rerun_gives_identical_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(common::tensor_files(&first.dir), vec!["scores.safetensors"]);
    let st = candle_core::safetensors::load(
        first.dir.join("scores.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for k in [
        "previous_token_head",
        "duplicate_token_head",
        "induction_head",
    ] {
        assert_eq!(st[k].dims(), &[30, 9], "{k}");
        assert!(first.dir.join(format!("{k}.png")).is_file(), "{k}");
    }
}

#[test]
fn a_bad_config_lists_every_problem() {
    let cfg = Config {
        model: String::new(),
        seq_len: 0,
        n_seq: 0,
        top_k: 0,
        text: Some(" ".into()),
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "model must be given",
        "seq_len must be at least 1",
        "n_seq must be at least 1",
        "top_k must be at least 1",
        "text is empty",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
}
