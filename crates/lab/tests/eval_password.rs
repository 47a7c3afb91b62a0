//! `eval-password` through the lab: the quick game (two defences, three attacks, one secret)
//! reruns identically; its rates, grid, pairing and transcripts are consistent with its cells.

use crate::common;

use interplab_lab::eval_password::Config;
use interplab_lab::Experiment;
use serde_json::Value;

#[test]
fn quick_password_game_is_consistent_and_reruns_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    let r = &first.outcome.results;
    let cells = r["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2 * 3);
    let leaks = |sel: &dyn Fn(&Value) -> bool, key: &str| {
        cells.iter().filter(|c| sel(c) && c[key] == true).count() as u64
    };
    for c in cells {
        // An exact leak is always a fuzzy one, and every response was scored on its text.
        assert!(c["exact"] == false || c["fuzzy"] == true, "{c}");
        assert!(!c["prompt"].as_str().unwrap().is_empty());
    }
    for d in r["per_defence"].as_array().unwrap() {
        let name = d["name"].as_str().unwrap();
        let mine = |c: &Value| c["defence"] == name;
        assert_eq!(d["fuzzy"]["n"], 3);
        assert_eq!(d["fuzzy"]["k"].as_u64().unwrap(), leaks(&mine, "fuzzy"));
        assert_eq!(d["exact"]["k"].as_u64().unwrap(), leaks(&mine, "exact"));
        for rate in [&d["exact"], &d["fuzzy"]] {
            let (p, lo, hi) = (
                rate["rate"].as_f64().unwrap(),
                rate["ci"][0].as_f64().unwrap(),
                rate["ci"][1].as_f64().unwrap(),
            );
            assert!(
                (0.0..=1.0).contains(&p) && lo <= p && p <= hi && hi <= 1.0,
                "{rate}"
            );
        }
    }
    for a in r["per_attack"].as_array().unwrap() {
        assert_eq!(a["fuzzy"]["n"], 2);
    }
    // The multi-turn attack's earlier turns are in its prompt.
    let mt = cells
        .iter()
        .find(|c| c["attack"] == "multi-turn-game")
        .unwrap();
    assert!(mt["prompt"].as_str().unwrap().contains("word game"), "{mt}");
    let grid = r["grid"].as_array().unwrap();
    assert_eq!(grid.len(), 3);
    assert!(grid.iter().all(|row| row.as_array().unwrap().len() == 2));
    let comps = r["comparisons"].as_array().unwrap();
    assert_eq!(comps.len(), 2);
    for c in comps {
        assert_eq!(c["comparison"]["test"], "exact McNemar");
        assert_eq!(c["comparison"]["n"], 3);
        let p = c["comparison"]["p_value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
    }
    let html = std::fs::read_to_string(first.dir.join("report.html")).unwrap();
    assert!(
        html.contains("Transcripts that leaked") && html.contains("Transcripts that did not leak")
    );
    let response = cells[0]["response"].as_str().unwrap();
    let shown = interplab_report::html::escape(response.trim());
    assert!(
        shown.is_empty() || html.contains(&shown),
        "first response not in the report"
    );
    assert!(first.dir.join("leaks.svg").is_file());
}

#[test]
fn unknown_defences_and_attacks_are_named() {
    let cfg = Config {
        defences: vec!["moat".into()],
        attacks: vec!["bribe".into()],
        n_secrets: 99,
        max_new_tokens: 0,
        ..Config::quick()
    };
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "unknown defence \"moat\"",
        "unknown attack \"bribe\"",
        "n_secrets is 99",
        "max_new_tokens",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
}
