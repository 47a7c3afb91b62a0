//! `eval-sensitivity` through the lab: the quick grid (3 templates × 0/1 shots on 6
//! BBQ items) is consistent: every cell scored the same items, the spread is the
//! range of the cells, every cell is paired with the baseline, the prompts are re-templated.

use crate::common;

use interplab_lab::eval_sensitivity::{Config, PromptTemplate};
use interplab_lab::{Existing, Experiment, NoProgress};

#[test]
fn quick_sensitivity_grid_is_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let w = common::run_into(
        Config::quick().into(),
        &tmp.path().join("run"),
        Existing::Refuse,
        &mut NoProgress,
    );
    let r = &w.outcome.results;
    assert_eq!(r["n_items"], 6);
    let cells = r["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3 * 2);
    let accs: Vec<f64> = cells
        .iter()
        .map(|c| {
            let k = c["correct"].as_array().unwrap();
            assert_eq!(k.len(), 6);
            let ok = k.iter().filter(|x| **x == true).count();
            assert_eq!(c["acc"]["k"].as_u64().unwrap() as usize, ok);
            let a = c["acc"]["rate"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&a));
            a
        })
        .collect();
    let max = accs.iter().cloned().fold(f64::MIN, f64::max);
    let min = accs.iter().cloned().fold(f64::MAX, f64::min);
    assert!((r["spread"].as_f64().unwrap() - (max - min)).abs() < 1e-12);
    assert_eq!(r["comparisons"].as_array().unwrap().len(), 5);
    for c in r["comparisons"].as_array().unwrap() {
        assert_eq!(c["comparison"]["test"], "exact McNemar");
        assert_eq!(c["comparison"]["n"], 6);
    }
    // Each template's prompts use it; the 1-shot prompt holds one answered question.
    let prompt = |k: usize| cells[k]["example_prompt"].as_str().unwrap().to_string();
    assert!(prompt(0).starts_with("Q: ") && prompt(0).ends_with("\nA:"));
    assert_eq!(prompt(1).matches("Q: ").count(), 2, "{}", prompt(1));
    assert!(prompt(2).starts_with("Question: ") && prompt(2).ends_with("\nAnswer:"));
    assert!(!prompt(4).contains("Q: ") && !prompt(4).contains("Answer:"));
    let overall = r["overall"]["acc"].as_f64().unwrap();
    assert!((overall - accs.iter().sum::<f64>() / 6.0).abs() < 1e-12);
    assert!(w.dir.join("accuracy.svg").is_file());
}

#[test]
fn a_template_over_a_missing_field_is_refused_before_scoring() {
    let e = common::refused_without_writing(
        Config {
            templates: vec![PromptTemplate {
                name: "broken".into(),
                doc_to_text: "{{prompt}}".into(),
            }],
            ..Config::quick()
        }
        .into(),
    );
    assert!(e.contains("{{prompt}}") && e.contains("prompt"), "{e}");
}

#[test]
fn a_bad_config_lists_every_problem() {
    let cfg = Config {
        model: String::new(),
        templates: Vec::new(),
        shots: Vec::new(),
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in ["model is empty", "no templates", "no shot counts"] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
}
