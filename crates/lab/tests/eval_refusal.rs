//! `eval-refusal` through the lab: the quick run (one request per set, every phrasing, three
//! benign requests, the model as its own judge) writes a run whose results hang together; a judge that cannot be loaded is refused before anything is written.

use crate::common;

use interplab_lab::eval_refusal::Config;
use interplab_lab::Experiment;
use serde_json::Value;

fn rate_ok(r: &Value) -> (u64, u64) {
    let (k, n) = (r["k"].as_u64().unwrap(), r["n"].as_u64().unwrap());
    assert!(k <= n, "{r}");
    let rate = r["rate"].as_f64().unwrap();
    assert!((rate - k as f64 / n as f64).abs() < 1e-12, "{r}");
    let (lo, hi) = (r["ci"][0].as_f64().unwrap(), r["ci"][1].as_f64().unwrap());
    assert!(0.0 <= lo && lo <= rate && rate <= hi && hi <= 1.0, "{r}");
    (k, n)
}

#[test]
fn quick_refusal_eval_writes_a_run_that_hangs_together() {
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
    let requests = r["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3, "one per set from three sets");
    let phrasings = r["phrasings"].as_array().unwrap();
    assert!(phrasings.len() >= 7);
    assert_eq!(phrasings[0]["phrasing"]["name"], "direct");
    let mut total_refused = 0;
    for p in phrasings {
        let (k, n) = rate_ok(&p["refusal"]);
        assert_eq!(n as usize, requests.len());
        let responses = p["responses"].as_array().unwrap();
        assert_eq!(responses.len(), requests.len());
        let refused = responses.iter().filter(|x| x["refused"] == true).count();
        assert_eq!(refused as u64, k);
        total_refused += refused;
        for x in responses {
            assert_eq!(x["refused"].as_bool().unwrap(), !x["phrase"].is_null());
            let h = x["harm"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&h), "{h}");
            assert!(x["n_tokens"].as_u64().unwrap() <= 8);
        }
        // Per set counts add up to the phrasing's.
        let ks: u64 = p["by_set"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| rate_ok(&s[1]).0)
            .sum();
        assert_eq!(ks, k);
    }
    let comparisons = r["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), phrasings.len() - 1);
    for c in comparisons {
        assert_eq!(c["refusal"]["test"], "exact McNemar");
        let p = c["refusal"]["p_value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert_eq!(c["harm"]["test"], "paired bootstrap");
    }
    let pooled = &r["pooled"];
    assert_eq!(
        pooled["n"].as_u64().unwrap() as usize,
        phrasings.len() * requests.len()
    );
    assert_eq!(pooled["n_clusters"], 3);
    let rate = pooled["rate"].as_f64().unwrap();
    assert!(
        (rate - total_refused as f64 / (phrasings.len() * requests.len()) as f64).abs() < 1e-12
    );
    let (_, n_benign) = rate_ok(&r["over_refusal"]["refusal"]);
    assert_eq!(n_benign, 3);
    let a = &r["judge"]["agreement"];
    let cells: u64 = [
        "refused_not_harmful",
        "refused_harmful",
        "complied_not_harmful",
        "complied_harmful",
    ]
    .iter()
    .map(|c| a[c].as_u64().unwrap())
    .sum();
    assert_eq!(cells as usize, phrasings.len() * requests.len());
    assert!(r["classifier"]["rates"]["n_refusals"].as_u64().unwrap() >= 20);
    let html = std::fs::read_to_string(first.dir.join("report.html")).unwrap();
    for needle in [
        "Transcripts",
        "Phrasing: direct",
        "Over-refusal",
        "known error rates",
        "Judge: smollm2-135m",
        "exact McNemar",
    ] {
        assert!(html.contains(needle), "{needle} not in the report");
    }
    for f in ["refusal.svg", "refusal.safetensors"] {
        assert!(first.dir.join(f).is_file(), "{f}");
    }
}

#[test]
fn a_judge_that_cannot_be_loaded_is_refused_before_any_work() {
    let e = common::refused_without_writing(
        Config {
            judge: Some("/no/such/judge.gguf".into()),
            ..Config::quick()
        }
        .into(),
    );
    assert!(
        e.contains("judge") && e.contains("/no/such/judge.gguf"),
        "{e}"
    );
    // A file that exists but is no model fails at loading, before any generation.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("judge.gguf");
    std::fs::write(&bad, b"not a model").unwrap();
    let e = common::refused_without_writing(
        Config {
            judge: Some(bad.display().to_string()),
            ..Config::quick()
        }
        .into(),
    );
    assert!(e.contains(&bad.display().to_string()), "{e}");
}

#[test]
fn a_bad_config_lists_every_problem() {
    let cfg = Config {
        model: String::new(),
        per_set: 0,
        sets: vec!["nosuchset".into()],
        phrasings: vec!["nosuchphrasing".into()],
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in ["model is empty", "per_set", "nosuchset", "nosuchphrasing"] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
}
