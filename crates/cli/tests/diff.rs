//! End-to-end `interplab diff` on tiny fixture models whose answer is known by construction:
//! the llama fixture against a copy whose `lm_head` is all zeros predicts uniformly, so model B's
//! loss is exactly ln(vocab) on every token, and B − A is that minus A's loss. Models with
//! different token ids for the same text, and an empty corpus, are clear errors.

use crate::common;
use common::*;

use std::path::{Path, PathBuf};

/// A copy of the llama fixture in `dir` whose tokenizer gives "e" and "t" each other's ids: the
/// same vocabulary size, but other token ids for any text with an "e" in it.
fn swapped_tokenizer_copy(dir: &Path) -> PathBuf {
    let src = tiny_fixture("llama-tiny");
    let dst = dir.join("llama-tiny-swapped-ids");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let (e, t) = (vocab["e"].clone(), vocab["t"].clone());
    vocab.insert("e".into(), t);
    vocab.insert("t".into(), e);
    std::fs::write(dst.join("tokenizer.json"), tok.to_string()).unwrap();
    dst
}

/// A copy of the llama fixture in `dir` with `lm_head.weight` set to zero.
fn zero_unembedding_copy(dir: &Path) -> PathBuf {
    let src = tiny_fixture("llama-tiny");
    let dst = dir.join("llama-tiny-zero-unembed");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let mut tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let w = tensors
        .get("lm_head.weight")
        .expect("untied lm_head")
        .clone();
    tensors.insert("lm_head.weight".into(), w.zeros_like().unwrap());
    candle_core::safetensors::save(&tensors, dst.join("model.safetensors")).unwrap();
    dst
}

#[test]
fn diff_against_a_zero_unembedding_costs_ln_vocab_per_token() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_fixture("llama-tiny");
    let b = zero_unembedding_copy(dir.path());
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "The cat sat on the mat.\n\nA second paragraph, a little longer than the first one.\n\nThird.\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    let out = interplab(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--top",
        "5",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_ok(&out);
    for f in [
        "manifest.json",
        "results.json",
        "report.html",
        "losses.safetensors",
        "loss_diff_histogram.svg",
        "loss_diff_histogram.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("B − A"), "{stdout}");

    let ln_v = 300f64.ln(); // the fixture's vocab_size
    let st =
        candle_core::safetensors::load(run.join("losses.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let la: Vec<f32> = st["loss_a"].to_vec1().unwrap();
    let lb: Vec<f32> = st["loss_b"].to_vec1().unwrap();
    assert!(!lb.is_empty());
    assert_eq!(la.len(), lb.len());
    for &x in &lb {
        assert!(
            (x as f64 - ln_v).abs() < 1e-5,
            "loss_b {x} vs ln 300 {ln_v}"
        );
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    let (ma, mb, md) = (
        r["mean_loss_a"].as_f64().unwrap(),
        r["mean_loss_b"].as_f64().unwrap(),
        r["mean_diff"].as_f64().unwrap(),
    );
    assert!((mb - ln_v).abs() < 1e-5, "{mb}");
    assert!((md - (mb - ma)).abs() < 1e-9, "{md} vs {}", mb - ma);
    // Every document's difference is ln V minus its own mean, so they differ: a finite error.
    assert!(r["stderr"].as_f64().unwrap() > 0.0);
}

#[test]
fn diff_rejects_other_tokenizers_and_an_empty_corpus() {
    // The two real models: different vocabularies and tokenizers.
    assert_clean_error(
        &interplab(&["diff", "smollm2-135m", "gemma3-270m", "--max-docs", "1"]),
        "do not share a tokenizer",
    );
    let dir = tempfile::tempdir().unwrap();
    let llama = tiny_fixture("llama-tiny");
    // (All tiny fixtures share one tokenizer, so build one that differs.)
    let other = swapped_tokenizer_copy(dir.path());
    assert_clean_error(
        &interplab(&[
            "diff",
            llama.to_str().unwrap(),
            other.to_str().unwrap(),
            "--max-docs",
            "2",
        ]),
        "do not share a tokenizer",
    );
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let l = llama.to_str().unwrap();
    assert_clean_error(
        &interplab(&["diff", l, l, "--corpus", empty.to_str().unwrap()]),
        "no documents",
    );
}
