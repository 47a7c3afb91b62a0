//! `ablate`: rerun identity (resample ablation, so the seed is exercised) and validation.

use crate::common;

use interplab_lab::ablate::{Config, Method};
use interplab_lab::Experiment;

#[test]
fn a_rerun_gives_identical_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Config {
        method: Method::Resample,
        seed: 3,
        ..Config::quick()
    };
    let (first, _) = common::assert_rerun_identical(cfg.into(), tmp.path());
    assert_eq!(
        common::tensor_files(&first.dir),
        vec!["ablation.safetensors"]
    );
    let r = &first.outcome.results;
    assert_eq!(r["result"]["method"]["resample"]["seed"], 3);
    assert_eq!(r["top"].as_array().unwrap().len(), 5);
    assert_eq!(r["top_kinds"].as_array().unwrap().len(), 5);
}

#[test]
fn a_bad_config_lists_every_problem_and_an_empty_corpus_writes_nothing() {
    let cfg = Config {
        model: "smollm2-135m".into(),
        max_docs: 0,
        max_tokens: 1,
        top_k: 0,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "max_docs must be at least 1",
        "max_tokens must be at least 2",
        "top_k must be at least 1",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let cfg = Config {
        corpus: empty.display().to_string(),
        ..Config::quick()
    };
    let e = common::refused_without_writing(cfg.into());
    assert!(e.contains("no documents"), "{e}");
}
