//! End-to-end tests of `interplab trace` and `interplab lens` beyond the basic run directory
//! (that one is in `analysis.rs`): resample corruption from the built-in subject list, the
//! logit lens's logit difference ending at the model's own, and bad input as clear errors.

use crate::common;
use common::*;

#[test]
fn trace_resample_from_builtin_subjects_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("resample");
    let out = interplab(&[
        "trace",
        "smollm2-135m",
        "--prompt",
        "The Eiffel Tower is in",
        "--subject",
        "The Eiffel Tower",
        "--target",
        " Paris",
        "--mode",
        "resample",
        "--kinds",
        "hidden",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(d.join("report.html").is_file() && d.join("trace.safetensors").is_file());
    // The built-in list has other 4-token subjects (e.g. "The Space Needle"); the corrupted
    // runs make " Paris" less likely than the clean run.
    let r = results(&d);
    let alts = r["corruption"]["resample"]["alternatives"]
        .as_array()
        .unwrap();
    assert!(!alts.is_empty());
    assert!(alts.iter().all(|a| a.as_array().unwrap().len() == 4));
    let (clean, corrupted) = (
        r["hidden"]["clean_prob"].as_f64().unwrap(),
        r["hidden"]["corrupted_prob"].as_f64().unwrap(),
    );
    assert!(corrupted < clean, "{corrupted} vs {clean}");

    let eiffel = ["--subject", "The Eiffel Tower"];
    let run = |extra: &[&str]| {
        let mut args = vec![
            "trace",
            "smollm2-135m",
            "--samples",
            "1",
            "--kinds",
            "hidden",
        ];
        args.extend_from_slice(extra);
        interplab(&args)
    };
    assert_clean_error(&run(&["--prompt", "", eiffel[0], eiffel[1]]), "empty");
    assert_clean_error(
        &run(&[
            "--prompt",
            "The Eiffel Tower is in",
            eiffel[0],
            eiffel[1],
            "--target",
            " Parisian suburbs",
        ]),
        "not one",
    );
    assert_clean_error(
        &run(&[
            "--prompt",
            "The Eiffel Tower is in",
            eiffel[0],
            eiffel[1],
            "--mode",
            "resample",
            "--alternatives",
            "Big Ben",
        ]),
        "token",
    );
}

#[test]
fn lens_logit_difference_ends_at_the_models_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("lens");
    let out = interplab(&[
        "lens",
        "smollm2-135m",
        "--prompt",
        "When Mary and John went to the store, John gave a drink to",
        "--target",
        " Mary",
        "--contrast",
        " John",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let r = results(&d);
    let lens: Vec<f64> = r["lens_logit_diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(lens.len(), 31);
    let model = r["dla"]["logit"].as_f64().unwrap();
    let total = r["dla"]["total"].as_f64().unwrap();
    // The last layer through ln_final and W_U is the model's logit difference, and the direct
    // logit attribution adds up to it.
    assert!((lens[30] - model).abs() < 1e-3, "{} vs {model}", lens[30]);
    assert!((total - model).abs() < 1e-3, "{total} vs {model}");
    assert_clean_error(
        &interplab(&[
            "lens",
            "smollm2-135m",
            "--prompt",
            "When Mary and John",
            "--position",
            "40",
        ]),
        "outside",
    );
}
