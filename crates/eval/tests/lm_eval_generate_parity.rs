//! `generate_until` against lm-evaluation-harness 0.4.13 (HF backend, the same GGUF
//! dequantised to f32): 40 capital-city questions at 0 and 2 shots, greedy, stop strings, two
//! filter pipelines and exact_match with ignore_case / ignore_punctuation. Expected values come
//! from `scripts/peer/lm_eval_generate_parity.py --write-fixture`: the prompts, the generated
//! text, each pipeline's output and each item's score must be the harness's, and the
//! aggregates with their standard errors equal. Batch 1 and batch 16 give the same text.

use std::path::PathBuf;

use candle_core::Device;
use interplab_core::loader::{load_resolved, LoadedModel, WeightStorage};
use interplab_core::source::{resolve, ModelSource};
use interplab_eval::generate::Generator;
use interplab_eval::metrics::aggregate;
use interplab_eval::task::{PromptOptions, Task};
use interplab_eval::{generation_metric_keys, generation_options, score_generations};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate")
}

fn model() -> LoadedModel {
    let src = ModelSource::parse("smollm2-135m").unwrap();
    let resolved = resolve(&src, &mut |_| {}).unwrap();
    load_resolved(resolved, &Device::Cpu, WeightStorage::Dense).unwrap()
}

#[test]
fn generations_filters_and_exact_match_match_the_harness() {
    let m = model();
    let task = Task::from_file(&fixtures().join("capitals.yaml")).unwrap();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("lm_eval_expected.json")).unwrap(),
    )
    .unwrap();
    let generator = Generator {
        model: &m.model,
        tokenizer: &m.tokenizer,
        add_bos: false,
    };
    let keys = generation_metric_keys(&task).unwrap();
    assert_eq!(keys, ["exact_match,strip", "exact_match,first-line-words"]);
    for (shots, want) in expected["shots"].as_object().unwrap() {
        let opts = PromptOptions {
            num_fewshot: Some(shots.parse().unwrap()),
            ..Default::default()
        };
        let requests = task.requests(&opts, None, None).unwrap();
        let want_items = want["items"].as_array().unwrap();
        assert_eq!(requests.len(), want_items.len());
        let items = score_generations(
            &generator,
            &task,
            &requests,
            &generation_options(&task, 0, 16),
            &mut |_| {},
        )
        .unwrap();
        for ((r, it), w) in requests.iter().zip(&items).zip(want_items) {
            let at = format!("{shots}-shot item {}", r.doc);
            assert_eq!(r.context, w["context"].as_str().unwrap(), "{at}");
            assert_eq!(it.text, w["text"].as_str().unwrap(), "{at}");
            for (name, out) in w["filtered"].as_object().unwrap() {
                assert_eq!(it.filtered[name], out.as_str().unwrap(), "{at} {name}");
            }
            for (key, score) in w["scores"].as_object().unwrap() {
                assert_eq!(it.scores[key], score.as_f64().unwrap(), "{at} {key}");
            }
        }
        for key in &keys {
            let values: Vec<f64> = items.iter().map(|i| i.scores[key]).collect();
            let a = aggregate(key, &values);
            let w = &want["aggregates"][key];
            assert!(
                (a.value - w["value"].as_f64().unwrap()).abs() < 1e-12,
                "{key}"
            );
            assert!(
                (a.stderr - w["stderr"].as_f64().unwrap()).abs() < 1e-12,
                "{key}"
            );
        }
        // Batch size does not change a greedy generation.
        let one = score_generations(
            &generator,
            &task,
            &requests[..8],
            &generation_options(&task, 0, 1),
            &mut |_| {},
        )
        .unwrap();
        for (a, b) in one.iter().zip(&items) {
            assert_eq!(a.text, b.text, "{shots}-shot item {}: batch 1 vs 16", a.doc);
        }
    }
}
