//! Head detection on a model built so the answer is known, and on SmolLM2 against
//! TransformerLens (`crates/core/tests/fixtures/reference/smollm2/tl_head_scores.*`, made by
//! `scripts/peer/make_analysis_reference.py` with the per-head score of TransformerLens 3.9's
//! `detect_head`).

use crate::common;

use candle_core::{Device, Tensor};
use interplab_analysis::heads::{
    head_scores, repeated_random_tokens, scores_from_cache, HeadKind, HeadScoreOptions,
};
use interplab_analysis::toy;
use interplab_core::model::NameFilter;

#[test]
fn toy_model_heads_rank_first() {
    let m = toy::induction_model(24, 64).unwrap();
    let pool: Vec<u32> = (1..24).collect();
    let seqs = repeated_random_tokens(&pool, 20, 4, 7, Some(0)).unwrap();
    let s = head_scores(&m, &seqs, &HeadKind::ALL, HeadScoreOptions::default()).unwrap();
    let prev = s[0].top_k(4);
    let ind = s[2].top_k(4);
    assert_eq!((prev[0].0, prev[0].1), toy::PREV_TOKEN_HEAD, "{prev:?}");
    assert_eq!((ind[0].0, ind[0].1), toy::INDUCTION_HEAD, "{ind:?}");
    // By construction both attend (almost) only where their detection pattern is 1. The
    // previous-token head's row 0 has no previous token (it attends to itself): 1/41 of the mass.
    assert!(prev[0].2 > 0.97, "{prev:?}");
    // The induction head's first-half rows have no earlier copy: it scores ~half.
    assert!(
        ind[0].2 > 0.45 && prev[1].2 < 0.2 && ind[1].2 < 0.2,
        "{ind:?} {prev:?}"
    );
}

#[test]
fn scores_from_a_cache_equal_a_fresh_run_and_apply_the_options() {
    let m = toy::induction_model(24, 64).unwrap();
    let pool: Vec<u32> = (1..24).collect();
    let seqs = repeated_random_tokens(&pool, 10, 2, 1, Some(0)).unwrap();
    let flat: Vec<u32> = seqs.iter().flatten().copied().collect();
    let t = Tensor::from_vec(flat, (2, 21), &Device::Cpu).unwrap();
    let (_, cache) = m
        .run_with_cache(&t, &NameFilter::new(&["blocks.*.attn.hook_pattern"]))
        .unwrap();
    let excluding = HeadScoreOptions {
        exclude_bos: true,
        exclude_current_token: true,
    };
    for opts in [HeadScoreOptions::default(), excluding] {
        let cached = scores_from_cache(&cache, 2, 2, &seqs, &HeadKind::ALL, opts).unwrap();
        let fresh = head_scores(&m, &seqs, &HeadKind::ALL, opts).unwrap();
        assert_eq!((cached.len(), fresh.len()), (3, 3));
        for (c, f) in cached.iter().zip(&fresh) {
            assert_eq!(c.kind.name(), f.kind.name());
            for (cr, fr) in c.scores.iter().zip(&f.scores) {
                for (a, b) in cr.iter().zip(fr) {
                    assert!(
                        (a - b).abs() < 1e-9,
                        "{opts:?} {}: {a} vs {b}",
                        c.kind.name()
                    );
                }
            }
        }
    }
    // The options are applied: with BOS and the diagonal excluded, the previous-token head
    // scores exactly 1 (all its remaining attention is on position q-1); without, its row 0
    // (which can only attend to itself) costs it about 1/21 of the score.
    let (pl, ph) = toy::PREV_TOKEN_HEAD;
    let with = scores_from_cache(&cache, 2, 2, &seqs, &HeadKind::ALL, excluding).unwrap();
    let without = head_scores(&m, &seqs, &HeadKind::ALL, HeadScoreOptions::default()).unwrap();
    assert!(
        (with[0].scores[pl][ph] - 1.0).abs() < 1e-6,
        "{:?}",
        with[0].scores
    );
    assert!(without[0].scores[pl][ph] < 0.99, "{:?}", without[0].scores);
}

#[test]
fn smollm2_scores_match_transformer_lens() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures/reference/smollm2");
    let refs = candle_core::safetensors::load(dir.join("tl_head_scores.safetensors"), &Device::Cpu)
        .unwrap();
    let tokens: Vec<u32> = refs["tokens"]
        .to_dtype(candle_core::DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let m = common::smollm2();
    let s = head_scores(
        &m.model,
        &[tokens],
        &HeadKind::ALL,
        HeadScoreOptions::default(),
    )
    .unwrap();
    let mut worst = 0f64;
    for hs in &s {
        let r: Vec<Vec<f32>> = refs[hs.kind.name()].to_vec2().unwrap();
        for (l, row) in r.iter().enumerate() {
            for (h, &v) in row.iter().enumerate() {
                worst = worst.max((hs.scores[l][h] - v as f64).abs());
            }
        }
    }
    eprintln!("head scores: max |ours - TransformerLens| = {worst:.2e}");
    // Measured 3.6e-7 (`cargo test -p interplab-analysis --test integration heads:: -- --nocapture`); bound 1e-5.
    assert!(worst < 1e-5, "max |ours - TransformerLens| = {worst}");
    // The reference's best heads (tl_head_scores.json top5) come out on top here too.
    let ind = s[2].top_k(1)[0];
    let prev = s[0].top_k(1)[0];
    assert_eq!((ind.0, ind.1), (18, 6));
    assert_eq!((prev.0, prev.1), (16, 0));
}
