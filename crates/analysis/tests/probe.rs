//! `probe` against scikit-learn and scipy (fixtures/probe_reference.json, written by
//! scripts/reference/make_probe_reference.py).

use interplab_analysis::probe::{auroc, fit_logistic, wilson_interval, Features, LogisticOptions};
use serde_json::Value;

fn reference() -> Value {
    let text = include_str!("fixtures/probe_reference.json");
    serde_json::from_str(text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn logistic_weights_match_scikit_learn() {
    let r = reference();
    let l = &r["logistic"];
    let d = l["d"].as_u64().unwrap() as usize;
    let x: Vec<f32> = floats(&l["x"]).iter().map(|&v| v as f32).collect();
    let y: Vec<bool> = l["y"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect();
    let f = Features::new(&x, d).unwrap();
    for fit in l["fits"].as_array().unwrap() {
        let opts = LogisticOptions {
            l2: fit["l2"].as_f64().unwrap(),
            tolerance: 1e-8,
            max_iterations: 5000,
        };
        let ours = fit_logistic(f, &y, &opts);
        assert!(ours.converged, "{ours:?}");
        let (w, b) = (floats(&fit["weights"]), fit["bias"].as_f64().unwrap());
        // sklearn stops at tol 1e-12, we at a largest gradient component of 1e-8, on a
        // strictly convex objective: the optima agree to 1e-5 of the largest coefficient.
        let scale = w.iter().fold(b.abs(), |m, v| m.max(v.abs()));
        for (j, (a, e)) in ours.probe.weights.iter().zip(&w).enumerate() {
            assert!(
                (a - e).abs() < 1e-5 * scale,
                "C {}: w[{j}] {a} vs {e}",
                fit["C"]
            );
        }
        assert!(
            (ours.probe.bias - b).abs() < 1e-5 * scale,
            "bias {} vs {b}",
            ours.probe.bias
        );
    }
}

#[test]
fn auroc_matches_scikit_learn() {
    for case in reference()["auroc"].as_array().unwrap() {
        let s = floats(&case["scores"]);
        let l: Vec<bool> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        let want = case["auroc"].as_f64().unwrap();
        let got = auroc(&s, &l);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
}

#[test]
fn wilson_intervals_match_scipy() {
    for case in reference()["wilson"].as_array().unwrap() {
        let (k, n) = (case["k"].as_u64().unwrap(), case["n"].as_u64().unwrap());
        let (lo, hi) = wilson_interval(k as usize, n as usize);
        let (wl, wh) = (
            case["low"].as_f64().unwrap(),
            case["high"].as_f64().unwrap(),
        );
        assert!(
            (lo - wl).abs() < 1e-9 && (hi - wh).abs() < 1e-9,
            "{k}/{n}: ({lo}, {hi}) vs ({wl}, {wh})"
        );
    }
}
