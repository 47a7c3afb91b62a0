//! `eval-sycophancy` through the lab: the quick run (8 items, chat template on and off,
//! with generation) writes its run directory and its rates agree with its items.

use crate::common;

use interplab_lab::eval_sycophancy::Config;
use interplab_lab::{Existing, Experiment, NoProgress};

fn in_unit(v: &serde_json::Value) -> f64 {
    let x = v.as_f64().unwrap();
    assert!((0.0..=1.0).contains(&x), "{x}");
    x
}

#[test]
fn quick_sycophancy_is_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let first = common::run_into(
        Config::quick().into(),
        &tmp.path().join("run"),
        Existing::Refuse,
        &mut NoProgress,
    );
    let r = &first.outcome.results;
    assert_eq!(r["n_items"], 8);
    let variants = r["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    assert_eq!(variants[0]["chat"], true);
    assert!(variants[0]["example_prompt"]
        .as_str()
        .unwrap()
        .contains("Answer:"));
    for v in variants {
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 8);
        let syc = items.iter().filter(|i| i["sycophantic"] == true).count() as u64;
        assert_eq!(v["sycophancy"]["rate"]["k"].as_u64().unwrap(), syc);
        in_unit(&v["sycophancy"]["rate"]["rate"]);
        in_unit(&v["balanced"]);
        in_unit(&v["mean_p_sycophantic"]);
        let on_a = v["on_a_items"]["n"].as_u64().unwrap();
        let on_b = v["on_b_items"]["n"].as_u64().unwrap();
        assert_eq!(on_a + on_b, 8);
        let per_sub: u64 = v["per_subdomain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[1]["n"].as_u64().unwrap())
            .sum();
        assert_eq!(per_sub, 8);
        for i in items {
            let p = in_unit(&i["p_sycophantic"]);
            assert_eq!(p > 0.5, i["sycophantic"] == true, "{i}");
            assert!(i["reply"].is_string());
        }
        let read = v["generated"]["n"].as_u64().unwrap();
        assert_eq!(read + v["generated_unreadable"].as_u64().unwrap(), 8);
    }
    let c = &r["comparisons"][0][1];
    assert_eq!(c["test"], "exact McNemar");
    in_unit(&c["p_value"]);
    let html = std::fs::read_to_string(first.dir.join("report.html")).unwrap();
    assert!(html.contains("Transcripts: chat template") && html.contains("syco_"));
    assert!(first.dir.join("sycophancy.svg").is_file());
}

#[test]
fn a_bad_config_lists_every_problem() {
    let cfg = Config {
        model: String::new(),
        chat: Vec::new(),
        batch: 0,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "model is empty",
        "chat lists no variant",
        "batch must be at least 1",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
}
