//! `interplab sae`: a small train → eval → features round on the default model, and the bad
//! inputs the SAE commands must refuse with one clear line.

use crate::common;

use common::{assert_ok, assert_one_line_error, assert_run_dir, interplab};

/// A TopK SAE of 128 latents on SmolLM2's `blocks.1.hook_resid_post`, trained on 8,192 tokens
/// of the sonnets.
const TRAIN: &[&str] = &[
    "sae",
    "train",
    "smollm2-135m",
    "--corpus",
    "sonnets",
    "--hook",
    "blocks.1.hook_resid_post",
    "--arch",
    "topk",
    "--k",
    "8",
    "--latents",
    "128",
    "--tokens",
    "8k",
    "--batch-size",
    "512",
    "--buffer",
    "2048",
    "--context",
    "64",
    "--lr",
    "1e-3",
    "--eval-tokens",
    "1024",
    "--ce-tokens",
    "256",
];

fn results(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

#[test]
fn train_then_eval_then_features_and_the_saved_sae_reads_raw_activations() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("train");
    let mut args = TRAIN.to_vec();
    args.extend(["--out", run.to_str().unwrap()]);
    assert_ok(&interplab(&args));
    assert_run_dir(
        &run,
        &[
            "frontier.svg",
            "saes/topk-k8/cfg.json",
            "saes/topk-k8/sae_weights.safetensors",
        ],
    );
    let r = results(&run);
    let m = &r["saes"][0]["eval"]["metrics"];
    assert_eq!(
        m["l0"].as_f64().unwrap(),
        8.0,
        "TopK fires exactly k latents per token"
    );
    let fvu = m["fvu"].as_f64().unwrap();
    assert!(fvu > 0.0 && fvu < 1.0, "FVU {fvu}");
    assert_ne!(
        r["scale_in"].as_f64().unwrap(),
        1.0,
        "expected-norm scaling was applied"
    );

    // The saved SAE, evaluated afresh on the same held-out tokens, gives the same FVU: the
    // normalisation scale is folded into its weights, so it reads raw activations.
    let sae_dir = run.join("saes/topk-k8");
    let ev = tmp.path().join("eval");
    assert_ok(&interplab(&[
        "sae",
        "eval",
        "smollm2-135m",
        "--sae",
        sae_dir.to_str().unwrap(),
        "--corpus",
        "sonnets",
        "--eval-tokens",
        "1024",
        "--ce-tokens",
        "256",
        "--context",
        "64",
        "--out",
        ev.to_str().unwrap(),
    ]));
    let e = results(&ev);
    let fvu2 = e["saes"][0]["eval"]["metrics"]["fvu"].as_f64().unwrap();
    assert!(
        (fvu2 - fvu).abs() <= 1e-6 * fvu,
        "train {fvu} vs eval {fvu2}"
    );
    let (ce1, ce2) = (
        r["saes"][0]["eval"]["downstream"]["ce_sae"]
            .as_f64()
            .unwrap(),
        e["saes"][0]["eval"]["downstream"]["ce_sae"]
            .as_f64()
            .unwrap(),
    );
    assert!(
        (ce1 - ce2).abs() <= 1e-6 * ce1,
        "CE with the SAE: train {ce1} vs eval {ce2}"
    );

    let feats = tmp.path().join("features");
    assert_ok(&interplab(&[
        "sae",
        "features",
        "smollm2-135m",
        "--sae",
        sae_dir.to_str().unwrap(),
        "--corpus",
        "sonnets",
        "--tokens",
        "2k",
        "--cards",
        "3",
        "--out",
        feats.to_str().unwrap(),
    ]));
    let f = results(&feats);
    assert_eq!(f["cards"].as_array().unwrap().len(), 3);
    let html = std::fs::read_to_string(feats.join("report.html")).unwrap();
    assert!(
        html.contains("class=\"ctx\"") && html.contains("title="),
        "contexts with hover values"
    );
}

#[test]
fn a_hook_that_does_not_exist_is_one_line() {
    let out = interplab(&[
        "sae",
        "train",
        "smollm2-135m",
        "--hook",
        "blocks.99.hook_resid_post",
        "--tokens",
        "8k",
        "--batch-size",
        "512",
        "--buffer",
        "2048",
        "--corpus",
        "sonnets",
    ]);
    assert_one_line_error(&out, "blocks.99.hook_resid_post");
}

#[test]
fn k_larger_than_the_latents_is_one_line() {
    let out = interplab(&[
        "sae",
        "train",
        "smollm2-135m",
        "--k",
        "300",
        "--latents",
        "256",
    ]);
    assert_one_line_error(
        &out,
        "k = 300 must be between 1 and the number of latents (256)",
    );
}

#[test]
fn a_corpus_smaller_than_the_tokens_says_how_many_there_are() {
    let out = interplab(&[
        "sae",
        "train",
        "smollm2-135m",
        "--corpus",
        "sonnets",
        "--hook",
        "blocks.1.hook_resid_post",
        "--tokens",
        "1M",
        "--latents",
        "128",
        "--k",
        "8",
    ]);
    assert_one_line_error(&out, "usable tokens in its training part");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fewer than the 1000000 asked for"), "{err}");
}

#[test]
fn an_sae_of_the_wrong_width_and_a_damaged_file_are_one_line() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sae/tests/fixtures/smollm2_l3_topk");
    let tmp = tempfile::tempdir().unwrap();
    // The same SAE pointed at the MLP's hidden layer (1,536 wide).
    let wide = tmp.path().join("wide");
    std::fs::create_dir(&wide).unwrap();
    let cfg = std::fs::read_to_string(fixture.join("cfg.json")).unwrap();
    std::fs::write(
        wide.join("cfg.json"),
        cfg.replace("blocks.3.hook_resid_post", "blocks.3.mlp.hook_post"),
    )
    .unwrap();
    std::fs::copy(
        fixture.join("sae_weights.safetensors"),
        wide.join("sae_weights.safetensors"),
    )
    .unwrap();
    let out = interplab(&[
        "sae",
        "eval",
        "smollm2-135m",
        "--sae",
        wide.to_str().unwrap(),
        "--corpus",
        "sonnets",
    ]);
    assert_one_line_error(
        &out,
        "the SAE reads 576 dimensions but `blocks.3.mlp.hook_post` has 1536",
    );

    // A truncated weights file.
    let cut = tmp.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    std::fs::write(cut.join("cfg.json"), &cfg).unwrap();
    let w = std::fs::read(fixture.join("sae_weights.safetensors")).unwrap();
    std::fs::write(cut.join("sae_weights.safetensors"), &w[..w.len() / 2]).unwrap();
    let out = interplab(&[
        "sae",
        "eval",
        "smollm2-135m",
        "--sae",
        cut.to_str().unwrap(),
        "--corpus",
        "sonnets",
    ]);
    assert_one_line_error(&out, "sae_weights.safetensors");
    assert_eq!(
        std::fs::read(cut.join("sae_weights.safetensors"))
            .unwrap()
            .len(),
        w.len() / 2,
        "input untouched"
    );
}

#[test]
fn an_interrupted_run_resumes_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let cut = tmp.path().join("cut");
    // `--arch` adds to TRAIN's topk: a TopK and a ReLU SAE.
    let common = ["--checkpoint-every", "4", "--arch", "relu", "--l1", "5"];
    let mut a = TRAIN.to_vec();
    a.extend(common);
    a.extend(["--out", whole.to_str().unwrap()]);
    assert_ok(&interplab(&a));
    let mut b = TRAIN.to_vec();
    b.extend(common);
    b.extend(["--out", cut.to_str().unwrap(), "--stop-after", "6"]);
    let out = interplab(&b);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped at step 6"));
    assert!(cut.join("checkpoint/store.safetensors").is_file());
    let mut c = TRAIN.to_vec();
    c.extend(common);
    c.extend(["--out", cut.to_str().unwrap(), "--resume"]);
    assert_ok(&interplab(&c));
    assert!(
        !cut.join("checkpoint").exists(),
        "the checkpoint is removed once the SAEs are saved"
    );
    for sae in ["topk-k8", "relu-l1-5"] {
        let w = |d: &std::path::Path| {
            std::fs::read(d.join("saes").join(sae).join("sae_weights.safetensors")).unwrap()
        };
        assert!(w(&whole) == w(&cut), "{sae}: resumed weights differ");
    }
    assert_eq!(
        std::fs::read(whole.join("results.json")).unwrap(),
        std::fs::read(cut.join("results.json")).unwrap()
    );
}
