//! `interplab toy grokking` end to end: a tiny run writes its run directory; an interrupted run
//! (stopped after fewer epochs) resumed with --resume ends where an uninterrupted run does; bad
//! input is a clean error.

use crate::common;

use common::{assert_clean_error, assert_ok, assert_run_dir, interplab, results};

const TINY: &[&str] = &[
    "toy",
    "grokking",
    "--p",
    "13",
    "--d-model",
    "16",
    "--n-heads",
    "2",
    "--d-head",
    "8",
    "--d-mlp",
    "32",
    "--log-every",
    "20",
    "--checkpoint-every",
    "30",
];

fn run(extra: &[&str]) -> std::process::Output {
    let args: Vec<&str> = TINY.iter().chain(extra).copied().collect();
    interplab(&args)
}

fn run_p(p: &str, extra: &[&str]) -> std::process::Output {
    let mut args = TINY.to_vec();
    args[3] = p;
    args.extend(extra);
    interplab(&args)
}

#[test]
fn tiny_run_writes_figures_and_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let out = run(&["--epochs", "90", "--out", straight.to_str().unwrap()]);
    assert_ok(&out);
    assert_run_dir(
        &straight,
        &[
            "metrics.json",
            "checkpoint.json",
            "weights.safetensors",
            "loss.svg",
            "loss.png",
            "accuracy.png",
            "embedding_fourier.png",
            "fourier_over_time.png",
            "neuron_clusters.png",
        ],
    );
    let r = results(&straight);
    assert_eq!(r["epochs"], 90);
    assert_eq!(r["final"]["fourier_norms"].as_array().unwrap().len(), 7);

    // "Interrupted" after 60 epochs (two checkpoints), then resumed to 90.
    let split = tmp.path().join("split");
    let s = split.to_str().unwrap();
    assert_ok(&run(&["--epochs", "60", "--out", s]));
    let out = run(&["--epochs", "90", "--out", s, "--resume"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming from epoch 60"));
    let weights = |dir: &std::path::Path| {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint.json")).unwrap())
                .unwrap();
        (v["model"]["params"].clone(), v["model"]["history"].clone())
    };
    let (w_split, h_split) = weights(&split);
    let (w_straight, h_straight) = weights(&straight);
    assert_eq!(w_split, w_straight, "final weights differ after resume");
    // The shorter first run also logged its own last epoch (59); every other entry is equal.
    let h_split: Vec<_> = h_split
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["epoch"] != 59)
        .cloned()
        .collect();
    assert_eq!(&h_split, h_straight.as_array().unwrap());
}

#[test]
fn bad_input_is_a_clean_error() {
    assert_clean_error(&run_p("14", &[]), "p must be odd");
    assert_clean_error(&run(&["--frac-train", "1.5"]), "frac_train");
    assert_clean_error(&run(&["--stop-at-test-acc", "2"]), "stop_at_test_acc");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("checkpoint.json"), b"{ not json").unwrap();
    let out = run(&[
        "--epochs",
        "5",
        "--resume",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert_clean_error(&out, "checkpoint");
}
