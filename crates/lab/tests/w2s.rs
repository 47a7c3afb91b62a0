//! `w2s` on the real model: rerun identity, the shipped tasks' data, and bad input refused
//! before anything is written.

use crate::common;

use interplab_lab::w2s::Config;
use interplab_lab::Experiment;

#[test]
fn a_rerun_gives_identical_heads_and_every_accuracy_is_a_fraction() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    let t = &first.outcome.results["tasks"][0];
    assert_eq!(t["task"], "truth");
    assert_eq!(t["trials"].as_array().unwrap().len(), 2);
    for k in ["weak", "w2s", "w2s_confidence", "ceiling"] {
        let a = t[k]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{k} {a}");
    }
    for f in ["accuracy.png", "pgr.svg", "report.html"] {
        assert!(first.dir.join(f).is_file(), "{f}");
    }
}

#[test]
fn bad_input_is_refused_without_writing() {
    let mut cfg = Config {
        tasks: vec!["truth".into(), "astrology".into()],
        seeds: 0,
        ..Config::quick()
    };
    cfg.head.alpha_max = 1.5;
    cfg.head.lr = f64::NAN;
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "unknown task \"astrology\"",
        "seeds must be at least 1",
        "head.alpha_max",
        "head.lr must be a positive number",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    let e = common::refused_without_writing(
        Config {
            strong_layer: Some(30),
            ..Config::quick()
        }
        .into(),
    );
    assert!(e.contains("strong layer 30 is out of range"), "{e}");
}

#[test]
fn the_shipped_tasks_have_both_labels() {
    use interplab_lab::w2s::task_items;
    let syc = task_items("sycophancy").unwrap();
    assert_eq!(syc.len(), 150);
    // The label: the answer that sides with the user's stated view is (A); 78 of 150 items.
    assert_eq!(syc.iter().filter(|i| i.label).count(), 78);
    assert!(syc
        .iter()
        .all(|i| i.text.contains(" (A) ") && i.text.ends_with("Answer:")));
    let tox = task_items("toxicity").unwrap();
    assert_eq!(tox.len(), 200);
    assert_eq!(tox.iter().filter(|i| i.label).count(), 100);
    let truth = task_items("truth").unwrap();
    assert_eq!(truth.len(), 952);
}
