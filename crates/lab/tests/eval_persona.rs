//! `eval-persona` through the lab: the quick run (six false statements, the baseline and two
//! personas, the mechanism study for "friendly") reruns identically; rates lie in [0, 1],
//! counts add up, every persona is paired against "truthful", and the report holds the
//! transcripts and the figure.

use crate::common;

use interplab_lab::eval_persona::{Config, BASELINE};
use interplab_lab::Experiment;

#[test]
fn quick_persona_reruns_identically_and_adds_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    let r = &first.outcome.results;
    assert_eq!(r["n_claims"], 6);
    let personas = r["personas"].as_array().unwrap();
    assert_eq!(personas.len(), 3);
    assert_eq!(personas[0]["system"], BASELINE);
    assert!(personas[0]["vs_truthful"].is_null());
    for p in personas {
        let c = &p["callout"];
        assert_eq!(c["n"], 6);
        assert!((0.0..=1.0).contains(&c["rate"].as_f64().unwrap()));
        let readable = p["gen_callout"]["n"].as_u64().unwrap();
        assert_eq!(readable + p["unreadable"].as_u64().unwrap(), 6);
        for x in p["p_no"].as_array().unwrap() {
            assert!((0.0..=1.0).contains(&x.as_f64().unwrap()));
        }
    }
    for p in &personas[1..] {
        let v = &p["vs_truthful"]["callout"];
        assert_eq!(v["test"], "exact McNemar");
        assert_eq!(v["n"], 6);
        let d = v["effect"].as_f64().unwrap();
        let want = p["callout"]["rate"].as_f64().unwrap()
            - personas[0]["callout"]["rate"].as_f64().unwrap();
        assert!((d - want).abs() < 1e-12, "{d} vs {want}");
    }
    let m = &r["mechanism"];
    assert_eq!(m["corrupted"], "friendly");
    assert_eq!(
        m["logit_diffs"]["corrupted_ablated"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let html = std::fs::read_to_string(first.dir.join("report.html")).unwrap();
    let claim = r["claims"][0].as_str().unwrap();
    assert!(
        html.contains(&interplab_report::html::escape(claim)),
        "transcript of {claim:?} missing"
    );
    assert!(html.contains("Sample transcripts"));
    assert!(first.dir.join("callout.svg").is_file());
}

#[test]
fn a_mechanism_persona_that_is_not_asked_is_refused() {
    let cfg = Config {
        mechanism_persona: "grumpy".into(),
        personas: Vec::new(),
        ..Config::quick()
    };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("personas is empty") && e.contains("\"grumpy\""),
        "{e}"
    );
}
