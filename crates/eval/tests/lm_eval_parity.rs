//! Interplab's scoring against lm-evaluation-harness 0.4.13 (HF backend, the same GGUF
//! dequantised to f32) on the first 40 TruthfulQA MC1 items of BIG-bench, at 0 and 2 shots.
//! The expected values and the task files come from `scripts/peer/lm_eval_parity.py
//! --fixture crates/eval/tests/fixtures/truthfulqa --limit 40`.

use std::path::PathBuf;

use candle_core::Device;
use interplab_core::loader::{load_resolved, LoadedModel, WeightStorage};
use interplab_core::source::{resolve, ModelSource};
use interplab_eval::loglik::Scorer;
use interplab_eval::metrics::mc_aggregates;
use interplab_eval::score_requests;
use interplab_eval::task::{PromptOptions, Task};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/truthfulqa")
}

fn model() -> LoadedModel {
    let src = ModelSource::parse("smollm2-135m").unwrap();
    let resolved = resolve(&src, &mut |_| {}).unwrap();
    load_resolved(resolved, &Device::Cpu, WeightStorage::Dense).unwrap()
}

#[test]
fn per_item_loglikelihoods_and_metrics_match_the_harness() {
    let m = model();
    let task = Task::from_file(&fixtures().join("truthfulqa_mc1.yaml")).unwrap();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("lm_eval_expected.json")).unwrap(),
    )
    .unwrap();
    let metrics = vec!["acc".to_string(), "acc_norm".to_string()];
    for (shots, want) in expected["shots"].as_object().unwrap() {
        let opts = PromptOptions {
            num_fewshot: Some(shots.parse().unwrap()),
            ..Default::default()
        };
        let requests = task.requests(&opts, m.chat.as_ref(), None).unwrap();
        let want_items = want["items"].as_array().unwrap();
        assert_eq!(requests.len(), want_items.len());
        // The prompts are the harness's, character for character (few-shot draws included).
        for (r, w) in requests.iter().zip(want_items) {
            assert_eq!(
                r.context,
                w["context"].as_str().unwrap(),
                "{shots}-shot item {}",
                r.doc
            );
        }
        let scorer = Scorer {
            model: &m.model,
            tokenizer: &m.tokenizer,
            add_bos: false,
            batch: 16,
        };
        let items = score_requests(&scorer, &requests, &metrics, &mut |_| {}).unwrap();
        let mut worst = 0f64;
        for (it, w) in items.iter().zip(want_items) {
            let lls: Vec<f64> = w["loglikelihoods"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(it.loglikelihoods.len(), lls.len());
            for (a, b) in it.loglikelihoods.iter().zip(&lls) {
                worst = worst.max((a - b).abs());
            }
            assert_eq!(
                it.acc,
                w["acc"].as_f64().unwrap(),
                "{shots}-shot item {}",
                it.doc
            );
            assert_eq!(it.acc_norm, w["acc_norm"].as_f64().unwrap());
        }
        assert!(worst < 1e-3, "{shots}-shot: max |Δ log-likelihood| {worst}");
        // BIG-bench lists the correct choice first: a scorer that always picked choice 0 would
        // score 1.0, so the per-item values above are what this test rests on.
        assert!(
            items.iter().any(|i| i.pred != 0),
            "every prediction is the first choice"
        );
        for a in mc_aggregates(&items, &metrics) {
            let value = want["aggregates"][&a.metric].as_f64().unwrap();
            let stderr = want["aggregates"][format!("{}_stderr", a.metric)]
                .as_f64()
                .unwrap();
            assert!((a.value - value).abs() < 1e-12, "{shots}-shot {}", a.metric);
            assert!(
                (a.stderr - stderr).abs() < 1e-12,
                "{shots}-shot {} stderr",
                a.metric
            );
        }
    }
}

#[test]
fn scores_do_not_depend_on_the_batch_size() {
    let m = model();
    let task = Task::from_file(&fixtures().join("truthfulqa_mc1.yaml")).unwrap();
    let opts = PromptOptions {
        num_fewshot: Some(2),
        ..Default::default()
    };
    let requests = task.requests(&opts, None, Some(12)).unwrap();
    let metrics = vec!["acc".to_string()];
    let run = |batch| {
        let scorer = Scorer {
            model: &m.model,
            tokenizer: &m.tokenizer,
            add_bos: false,
            batch,
        };
        score_requests(&scorer, &requests, &metrics, &mut |_| {}).unwrap()
    };
    let (one, sixteen) = (run(1), run(16));
    // Differently shaped products round differently in f32 (the matrix library picks its
    // blocking by shape), so the sums agree to float precision, not bit for bit: measured
    // 1.4e-5 on a sum of −11 nats (1.3e-6 relative). The bound is 1e-5 relative to the sum
    // (1e-5 absolute below one nat); the predictions must be the same.
    for (a, b) in one.iter().zip(&sixteen) {
        for (x, y) in a.loglikelihoods.iter().zip(&b.loglikelihoods) {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "item {}: {x} vs {y}",
                a.doc
            );
        }
        assert_eq!(
            (a.pred, a.pred_norm),
            (b.pred, b.pred_norm),
            "item {}",
            a.doc
        );
        assert_eq!(a.is_greedy, b.is_greedy);
    }
}
