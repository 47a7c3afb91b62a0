//! `interplab toy whispers` end to end on SmolLM2-135M with a tiny slice of the sonnets: the run
//! directory, resuming after an interruption (same numbers as the uninterrupted run), and
//! clean errors for bad input.

use crate::common;

use common::{assert_clean_error, assert_ok, assert_run_dir, interplab, results};

/// The tiny run: 6 sonnets, layers 0 and 1, 64 features, positions 0..40, an MLP with 8 hidden
/// units, 2 epochs.
fn tiny(out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "toy",
        "whispers",
        "smollm2-135m",
        "--max-docs",
        "6",
        "--layers",
        "0,1",
        "--dims",
        "64",
        "--epochs",
        "2",
        "--hidden",
        "8",
        "--positions",
        "0..40",
        "--samples",
        "1",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    interplab(&args)
}

#[test]
fn tiny_run_writes_its_directory_and_resumes_to_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = tiny(dir.to_str().unwrap(), &[]);
    assert_ok(&out);
    assert_run_dir(
        &dir,
        &[
            "config.json",
            "checkpoint.json",
            "accuracy_by_layer.svg",
            "accuracy_by_layer.png",
            "accuracy_by_position.svg",
            "accuracy_by_position.png",
            "inverter_L0.safetensors",
            "inverter_L1.safetensors",
        ],
    );
    let r = results(&dir);
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["hook"], "blocks.0.hook_resid_pre");
    assert_eq!(r["features"], 64);
    let classes = r["baselines"]["classes"].as_f64().unwrap();
    assert!((r["baselines"]["uniform_top1"].as_f64().unwrap() - 1.0 / classes).abs() < 1e-12);
    for l in layers {
        let a = l["test"]["top1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a));
        assert!(l["test"]["topk"].as_f64().unwrap() >= a);
        assert!(!l["samples"].as_array().unwrap().is_empty());
    }
    // The position window: buckets 32–63 (partly) and 64+ (not at all).
    assert_eq!(r["position_buckets"][6], "32–63");
    assert!(layers[0]["buckets"][6]["n"].as_u64().unwrap() > 0);
    assert_eq!(layers[0]["buckets"][7]["n"], 0);
    assert_eq!(layers[0]["buckets"][8]["n"], 0);
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(report.contains("At layer 0 the inverter recovers"));

    // Interrupt after layer 0: keep only its entry in the checkpoint, then resume.
    let ckpt = dir.join("checkpoint.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ckpt).unwrap()).unwrap();
    state["layers"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&ckpt, serde_json::to_vec(&state).unwrap()).unwrap();
    std::fs::remove_file(dir.join("results.json")).unwrap();
    let out = tiny(dir.to_str().unwrap(), &["--resume"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 layers done"));
    let again = results(&dir);
    for (a, b) in layers.iter().zip(again["layers"].as_array().unwrap()) {
        for key in [
            "train_loss",
            "train",
            "test",
            "test_seen",
            "buckets",
            "samples",
        ] {
            assert_eq!(
                a[key], b[key],
                "layer {} {key} differs after resume",
                a["layer"]
            );
        }
    }
    // A different configuration is not resumed.
    let out = tiny(dir.to_str().unwrap(), &["--resume", "--seed", "1"]);
    assert_clean_error(&out, "different configuration");
}

#[test]
fn bad_input_is_a_clean_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("bad");
    let o = out_dir.to_str().unwrap();
    assert_clean_error(
        &tiny(o, &["--hook", "blocks.{L}.hook_nonexistent"]),
        "not a hook point",
    );
    assert_clean_error(
        &interplab(&[
            "toy",
            "whispers",
            "--max-docs",
            "4",
            "--layers",
            "0,31",
            "--out",
            o,
        ]),
        "layer 31 is out of range",
    );
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n\n  \n").unwrap();
    assert_clean_error(
        &interplab(&[
            "toy",
            "whispers",
            "--corpus",
            empty.to_str().unwrap(),
            "--out",
            o,
        ]),
        "no documents",
    );
    assert_clean_error(
        &interplab(&["toy", "whispers", "--positions", "5..5", "--out", o]),
        "empty",
    );
    assert_clean_error(
        &interplab(&[
            "toy",
            "whispers",
            "--max-docs",
            "4",
            "--dims",
            "100000",
            "--out",
            o,
        ]),
        "more than the activation",
    );
    assert!(!out_dir.exists(), "a failed run left a run directory");
}
