//! End-to-end tests of the analysis commands on the real default model: each writes a complete
//! run directory, and bad input (unequal prompt lengths, a metric token that is not one token,
//! an empty corpus, an unknown site) is one clear error, never a panic.

use crate::common;
use common::*;

const CLEAN: &str = "When Mary and John went to the store, John gave a drink to";
const CORRUPT: &str = "When Mary and John went to the store, Mary gave a drink to";

#[test]
fn heads_writes_scores_figures_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = interplab(&[
        "heads",
        "smollm2-135m",
        "--seq-len",
        "12",
        "--n-seq",
        "2",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_run_dir(
        dir.path(),
        &[
            "scores.safetensors",
            "induction_head.svg",
            "induction_head.png",
        ],
    );
    let st = candle_core::safetensors::load(
        dir.path().join("scores.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(st["induction_head"].dims(), &[30, 9]);
}

#[test]
fn patch_sweeps_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = interplab(&[
        "patch",
        "smollm2-135m",
        "--clean",
        CLEAN,
        "--corrupt",
        CORRUPT,
        "--answer",
        " Mary",
        "--wrong",
        " John",
        "--sites",
        "resid_pre,z",
        "--out",
        d,
    ]);
    assert_ok(&out);
    assert_run_dir(
        dir.path(),
        &[
            "patching.safetensors",
            "patch_resid_pre.svg",
            "patch_resid_pre.png",
            "patch_z.png",
        ],
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("John"));
    assert_clean_error(
        &interplab(&[
            "patch",
            "smollm2-135m",
            "--clean",
            CLEAN,
            "--corrupt",
            "When Mary went",
            "--answer",
            " Mary",
            "--wrong",
            " John",
        ]),
        "needs equal lengths",
    );
    assert_clean_error(
        &interplab(&[
            "patch",
            "smollm2-135m",
            "--clean",
            CLEAN,
            "--corrupt",
            CORRUPT,
            "--answer",
            " Maryland Avenue",
            "--wrong",
            " John",
        ]),
        "not one",
    );
    assert_clean_error(
        &interplab(&[
            "patch",
            "smollm2-135m",
            "--clean",
            CLEAN,
            "--corrupt",
            CORRUPT,
            "--metric",
            "kl",
            "--sites",
            "resid_sideways",
        ]),
        "unknown site",
    );
}

#[test]
fn ablate_rejects_an_empty_corpus_and_compose_a_bad_kind() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    assert_clean_error(
        &interplab(&[
            "ablate",
            "smollm2-135m",
            "--corpus",
            empty.to_str().unwrap(),
        ]),
        "no documents",
    );
    assert_clean_error(
        &interplab(&["compose", "smollm2-135m", "--kinds", "x"]),
        "unknown composition kind",
    );
}

#[test]
fn trace_and_lens_write_run_directories_and_reject_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("trace");
    let out = interplab(&[
        "trace",
        "smollm2-135m",
        "--prompt",
        "The Eiffel Tower is in",
        "--subject",
        "The Eiffel Tower",
        "--samples",
        "1",
        "--kinds",
        "hidden",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_run_dir(
        &d,
        &["trace.safetensors", "trace_hidden.svg", "trace_hidden.png"],
    );
    assert_clean_error(
        &interplab(&[
            "trace",
            "smollm2-135m",
            "--prompt",
            "The Eiffel Tower is in",
            "--subject",
            "Big Ben",
        ]),
        "does not occur",
    );
    let l = dir.path().join("lens");
    let out = interplab(&[
        "lens",
        "smollm2-135m",
        "--prompt",
        "The Eiffel Tower is in",
        "--target",
        " Paris",
        "--out",
        l.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_run_dir(
        &l,
        &["logit_lens.png", "dla_components.png", "dla_heads.png"],
    );
    assert_clean_error(
        &interplab(&[
            "lens",
            "smollm2-135m",
            "--prompt",
            "The Eiffel Tower is in",
            "--target",
            " Parisian suburbs",
        ]),
        "not one",
    );
}

#[test]
fn ioi_writes_behaviour_only_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = interplab(&[
        "ioi",
        "smollm2-135m",
        "--n-prompts",
        "2",
        "--no-patching",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_run_dir(dir.path(), &["ioi.safetensors"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("accuracy"));
    assert_clean_error(
        &interplab(&["ioi", "smollm2-135m", "--n-prompts", "0"]),
        "at least 1",
    );
}

#[test]
fn patch_one_head_by_position_and_all_positions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let base = [
        "patch",
        "smollm2-135m",
        "--clean",
        CLEAN,
        "--corrupt",
        CORRUPT,
        "--answer",
        " Mary",
        "--wrong",
        " John",
    ];
    let mut args: Vec<&str> = base.to_vec();
    args.extend([
        "--sites",
        "attn_out,z",
        "--head",
        "23.3",
        "--all-positions",
        "--out",
        d,
    ]);
    let out = interplab(&args);
    assert_ok(&out);
    assert_run_dir(
        dir.path(),
        &[
            "patch_z_23.3_by_position.png",
            "patch_attn_out_all_positions.png",
        ],
    );
    for (head, needle) in [
        ("23.12", "head index 12 out of range"),
        ("40.1", "layer index 40 out of range"),
        ("x", "not LAYER.HEAD"),
    ] {
        let bad = dir.path().join("bad");
        let mut args: Vec<&str> = base.to_vec();
        args.extend([
            "--sites",
            "z",
            "--head",
            head,
            "--out",
            bad.to_str().unwrap(),
        ]);
        assert_clean_error(&interplab(&args), needle);
        assert!(
            !bad.exists(),
            "a rejected --head still created {}",
            bad.display()
        );
    }
}

#[test]
fn toy_superposition_writes_figures_and_rejects_bad_sparsity() {
    let dir = tempfile::tempdir().unwrap();
    let out = interplab(&[
        "toy",
        "superposition",
        "--steps",
        "200",
        "--sparsities",
        "0,0.9",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(dir.path().join("wtw.png").is_file() && dir.path().join("report.html").is_file());
    assert!(
        dir.path().join("dims_per_feature.svg").is_file()
            && dir.path().join("results.json").is_file()
    );
    assert_clean_error(
        &interplab(&["toy", "superposition", "--sparsities", "1.5"]),
        "sparsities must be in",
    );
}
