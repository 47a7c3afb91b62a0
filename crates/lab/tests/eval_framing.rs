//! `eval-framing` through the lab: the quick run (three actions of each kind, both framings,
//! log-likelihood and generation, the mechanism study on the flipping items) reruns
//! identically; rates lie in [0, 1], counts add up, and the report holds the transcripts.

use crate::common;

use interplab_lab::eval_framing::{framed, Config};
use interplab_lab::Experiment;

/// (rate, k, n); a rate of nothing (n = 0) is NaN, written as null.
fn rate(v: &serde_json::Value) -> (f64, u64, u64) {
    let (k, n) = (v["k"].as_u64().unwrap(), v["n"].as_u64().unwrap());
    let r = v["rate"].as_f64().unwrap_or(f64::NAN);
    assert_eq!(r.is_nan(), n == 0, "{v}");
    (r, k, n)
}

#[test]
fn quick_framing_reruns_identically_and_adds_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    let r = &first.outcome.results;
    assert_eq!(r["n_actions"], 6);
    let items = r["items"].as_array().unwrap();
    for it in items {
        for f in 0..2 {
            let p = it["p_yes"][f].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{p}");
        }
    }
    let kinds = r["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 2);
    for k in kinds {
        let n = k["n"].as_u64().unwrap();
        assert_eq!(n, 3);
        for f in 0..2 {
            let (x, kk, nn) = rate(&k["agree"][f]);
            assert!((0.0..=1.0).contains(&x));
            assert_eq!(nn, n);
            assert!(kk <= nn);
            // Generation: readable + unreadable = all.
            let (_, _, readable) = rate(&k["gen_agree"][f]);
            assert_eq!(readable + k["unreadable"][f].as_u64().unwrap(), n);
        }
        // Agreeing with both and a consistent verdict exclude each other.
        let (_, both, _) = rate(&k["agree_both"]);
        let (_, cons, _) = rate(&k["consistent"]);
        assert!(both + cons <= n);
        assert_eq!(k["agree_test"]["test"], "exact McNemar");
        assert_eq!(k["p_yes_test"]["test"], "paired bootstrap");
        let p = k["verdict_shift"]["p_value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        let answer = k["answer"].as_str().unwrap();
        assert!(
            ["Yes", "Partly", "No"]
                .iter()
                .any(|s| answer.starts_with(s)),
            "{answer}"
        );
    }
    let m = &r["mechanism"];
    let studied = m["items"].as_array().unwrap().len();
    assert!(studied <= 2 && studied as u64 <= m["n_flips"].as_u64().unwrap());
    assert_eq!(m["logit_diffs"]["clean"].as_array().unwrap().len(), 6);
    // The metric is the eval's P(yes): one answer token after the shared ones.
    assert!(
        m["single_token_gap"].as_f64().unwrap() < 1e-3,
        "{}",
        m["single_token_gap"]
    );
    let html = std::fs::read_to_string(first.dir.join("report.html")).unwrap();
    assert!(html.contains("Sample transcripts"));
    let action = items[0]["action"].as_str().unwrap();
    let shown = interplab_report::html::escape(&framed(1, action, "Answer Yes or No."));
    assert!(
        html.contains(&shown),
        "the transcript of {action:?} is missing"
    );
    assert!(html.contains("Behaviour → mechanism"));
    assert!(first.dir.join("agreement.svg").is_file());
}

#[test]
fn a_bad_config_lists_every_problem() {
    let cfg = Config {
        model: String::new(),
        batch: 0,
        max_new_tokens: 0,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "model is empty",
        "batch must be at least 1",
        "max_new_tokens",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
}
