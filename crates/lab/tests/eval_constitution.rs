//! `eval-constitution` through the lab: the quick run (one AdvBench request, one worked
//! example, two critique →
//! revision rounds, the model as its own judge) writes a run in which every request has a
//! transcript through every round, and a judge that cannot be loaded is refused before
//! anything is written.

use crate::common;

use interplab_lab::eval_constitution::Config;
use interplab_lab::Experiment;

#[test]
fn quick_constitution_has_transcripts_through_every_round() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Config {
        judge: Some("smollm2-135m".into()),
        ..Config::quick()
    };
    let first = common::run_into(
        cfg.into(),
        &tmp.path().join("run"),
        interplab_lab::Existing::Refuse,
        &mut interplab_lab::NoProgress,
    );
    let r = &first.outcome.results;
    let n = r["requests"].as_array().unwrap().len();
    assert_eq!(n, 1);
    let k = r["constitution"]["principles"].as_array().unwrap().len();
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3, "round 0 and two revision rounds");
    for (i, s) in rounds.iter().enumerate() {
        assert_eq!(s["round"], i);
        let (kr, nr) = (
            s["refusal"]["k"].as_u64().unwrap(),
            s["refusal"]["n"].as_u64().unwrap(),
        );
        assert!(kr <= nr && nr as usize == n);
        let rate = s["refusal"]["rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&rate));
        let h = s["harm"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&h));
        if i == 0 {
            assert!(s["refusal_vs_round0"].is_null());
        } else {
            assert_eq!(s["refusal_vs_round0"]["test"], "exact McNemar");
            assert_eq!(s["harm_vs_round0"]["test"], "paired bootstrap");
            let name = r["constitution"]["principles"][(i - 1) % k]["name"]
                .as_str()
                .unwrap();
            assert_eq!(s["principle"], name);
        }
    }
    let traces = r["traces"].as_array().unwrap();
    assert_eq!(traces.len(), n);
    for t in traces {
        let steps = t["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3);
        assert!(steps[0]["critique"].is_null());
        for (i, s) in steps.iter().enumerate() {
            assert_eq!(s["round"], i);
            assert_eq!(s["refused"].as_bool().unwrap(), !s["phrase"].is_null());
            if i > 0 {
                assert!(s["critique"].is_string());
                assert_eq!(s["principle"].as_u64().unwrap() as usize, (i - 1) % k);
            }
        }
    }
    // The revision prompt holds the worked examples, the request and the critique request.
    let rev = r["example_prompts"]["revision"].as_str().unwrap();
    assert_eq!(
        rev.matches("Revision request:").count(),
        1 + r["constitution"]["examples"].as_array().unwrap().len()
    );
    let html = std::fs::read_to_string(first.dir.join("report.html")).unwrap();
    for needle in [
        "Transcripts",
        "Round 0 response",
        "Round 2",
        "Critique:",
        "Revision:",
        "known error rates",
        "Judge: smollm2-135m",
    ] {
        assert!(html.contains(needle), "{needle} not in the report");
    }
    assert!(first.dir.join("constitution.safetensors").is_file());
}

#[test]
fn a_judge_that_cannot_be_loaded_is_refused_before_any_work() {
    let e = common::refused_without_writing(
        Config {
            judge: Some("no-such-judge-model".into()),
            ..Config::quick()
        }
        .into(),
    );
    assert!(
        e.contains("judge") && e.contains("no-such-judge-model"),
        "{e}"
    );
}

#[test]
fn a_bad_config_lists_every_problem() {
    let cfg = Config {
        model: String::new(),
        rounds: 0,
        sets: vec![],
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in ["model is empty", "rounds", "sets is empty"] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
}
