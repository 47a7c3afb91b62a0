//! `memorise` on the real model: rerun identity, recall of a text built so that the answer is
//! known (counting, which the prefix determines, against random words), and bad input
//! refused before anything is written.

use crate::common;

use interplab_lab::memorise::Config;
use interplab_lab::Experiment;

#[test]
fn a_rerun_gives_identical_recall_and_every_kind_is_scored() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    let r = &first.outcome.results;
    let kinds: Vec<&str> = r["summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["licence", "passage", "code", "sonnet", "control"]);
    for s in r["sequences"].as_array().unwrap() {
        let m = &s["models"][0];
        assert_eq!(m["m"], 8);
        let sim = m["similarity"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&sim), "{s}");
    }
    assert!(first.dir.join("recall_by_kind.png").is_file());
}

const WORDS: [&str; 16] = [
    "apple", "river", "stone", "cloud", "lamp", "tiger", "paper", "glass", "honey", "mirror",
    "violet", "engine", "forest", "candle", "silver", "window",
];

/// `n` words drawn from [`WORDS`] with replacement, seeded.
fn words(n: usize, seed: u64) -> Vec<&'static str> {
    let mut rng = interplab_core::rng::SplitMix(seed);
    (0..n).map(|_| WORDS[rng.below(16) as usize]).collect()
}

#[test]
fn a_determined_continuation_is_recalled_and_random_words_are_not() {
    // "counting": "1, 2, 3, …": the prefix determines the continuation, and the model
    // continues the count token for token. "random": random words throughout; nothing in the
    // prefix predicts them. (A repeated list of words is not a reliable known answer for
    // this model: it falls into repeating one word.)
    let counting = (1..60)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let random = words(72, 2).join(" ");
    let tmp = tempfile::tempdir().unwrap();
    let texts = tmp.path().join("texts.jsonl");
    std::fs::write(
        &texts,
        format!(
            "{}\n{}\n",
            serde_json::json!({"id": "counting", "text": counting}),
            serde_json::json!({"id": "random", "text": random})
        ),
    )
    .unwrap();
    let cfg = Config {
        texts: texts.to_str().unwrap().into(),
        k: 32,
        m: 12,
        windows: 1,
        // Both texts are of the file's default kind "text".
        max_per_kind: 2,
        ..Config::quick()
    };
    let w = common::run_into(
        cfg.into(),
        &tmp.path().join("run"),
        interplab_lab::Existing::Refuse,
        &mut interplab_lab::NoProgress,
    );
    let seqs = w.outcome.results["sequences"].as_array().unwrap().clone();
    let get =
        |id: &str| seqs.iter().find(|s| s["id"] == format!("{id}#0")).unwrap()["models"][0].clone();
    let (rep, rnd) = (get("counting"), get("random"));
    assert_eq!(rep["exact"], true, "{rep}");
    assert_eq!(rep["edit_distance"], 0);
    assert!(rnd["similarity"].as_f64().unwrap() < 0.5, "{rnd}");
    assert!(rep["target_loss"].as_f64().unwrap() < rnd["target_loss"].as_f64().unwrap());
}

#[test]
fn bad_input_is_refused_without_writing() {
    let e = Config {
        models: vec!["a".into(), "b".into(), "c".into()],
        k: 0,
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    for needle in ["give one or two models, got 3", "k must be at least 1"] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    // A text too short for k + m tokens: named, with its length, and nothing written.
    let tmp = tempfile::tempdir().unwrap();
    let texts = tmp.path().join("texts.jsonl");
    std::fs::write(
        &texts,
        "{\"id\": \"long\", \"text\": \"one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two twenty-three twenty-four\"}\n{\"id\": \"tiny\", \"text\": \"Hello there.\"}\n",
    )
    .unwrap();
    let e = common::refused_without_writing(
        Config {
            texts: texts.to_str().unwrap().into(),
            ..Config::quick()
        }
        .into(),
    );
    assert!(e.contains("fewer tokens than k + m = 16 + 8 = 24"), "{e}");
    assert!(e.contains("\"tiny\" (3)"), "{e}");
    assert!(!e.contains("\"long\""), "{e}");
    std::fs::write(&texts, "{\"id\": \"x\"}\n").unwrap();
    let e = common::refused_without_writing(
        Config {
            texts: texts.to_str().unwrap().into(),
            ..Config::quick()
        }
        .into(),
    );
    assert!(e.contains("line 1: no \"text\" string"), "{e}");
}
