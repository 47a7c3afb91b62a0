//! Causal tracing on SmolLM2-135M with a fact it knows ("The Eiffel Tower is located in the
//! city of" → " Paris", p = 0.70 clean).
//!
//! What was measured (3 Gaussian samples, 3σ; hidden-state restoration): the early site is
//! there, as in ROME, but on the subject token "iffel" — the last token of the name — not on
//! the subject's final token " Tower": restoring "iffel" at layers 0–20 recovers p ≈ 0.15–0.34
//! (up to ~half the total effect), restoring " Tower" recovers nothing (≤ 0.02). The late site is
//! the last token (layers 24–29, p ≈ 0.6) as in ROME. The test asserts that structure:
//! an early-middle subject-token site carrying ≥ 30% of the total effect, nothing at the
//! non-subject tokens before the last one in those layers, and the late site at the last token.

mod common;

use interplab_analysis::trace::{find_subject, Corruption, TraceKind, Tracer};

#[test]
fn eiffel_tower_has_an_early_subject_site_and_a_late_last_token_site() {
    let m = common::smollm2();
    let toks = m
        .tokenizer
        .encode("The Eiffel Tower is located in the city of", false)
        .unwrap();
    let subj = m.tokenizer.encode("The Eiffel Tower", false).unwrap();
    let span = find_subject(&toks, &subj).unwrap();
    assert_eq!(span, (0, 4));
    let paris = m.tokenizer.encode(" Paris", false).unwrap()[0];
    let c = Corruption::Gaussian {
        scale: 3.0,
        samples: 3,
        seed: 0,
    };
    let t = Tracer::new(&m.model, &toks, span, Some(paris), &c).unwrap();
    let tr = t.trace(TraceKind::Hidden, 10).unwrap();
    let total = tr.total_effect();
    assert!(total > 0.5, "total effect {total}");
    let early = 0..15; // layers 0-14 of 30: "early-middle"
    let (best_tok, best) = (span.0..span.1)
        .map(|tk| {
            (
                tk,
                early
                    .clone()
                    .map(|l| tr.indirect_effect(tk, l))
                    .fold(f64::MIN, f64::max),
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert!(
        best >= 0.3 * total,
        "best early subject effect {best} at token {best_tok}, total {total}"
    );
    let n = toks.len();
    for tk in span.1..n - 1 {
        for l in 0..10 {
            assert!(
                tr.indirect_effect(tk, l) < 0.05,
                "token {tk} layer {l}: {}",
                tr.indirect_effect(tk, l)
            );
        }
    }
    assert!(tr.indirect_effect(n - 1, 29) > 0.5 * total);
    // Resample corruption: the same prompt about the Space Needle (also 4 tokens) as the
    // corrupted run. Paris becomes unlikely, and restoring "iffel" early brings it back.
    let needle = m.tokenizer.encode("The Space Needle", false).unwrap();
    assert_eq!(needle.len(), 4);
    let r = Tracer::new(
        &m.model,
        &toks,
        span,
        Some(paris),
        &Corruption::Resample {
            alternatives: vec![needle],
        },
    )
    .unwrap();
    let rt = r.trace(TraceKind::Hidden, 10).unwrap();
    assert!(
        rt.corrupted_prob < 0.25 * rt.clean_prob,
        "{} vs {}",
        rt.corrupted_prob,
        rt.clean_prob
    );
    let early_best = (0..15)
        .map(|l| rt.indirect_effect(2, l))
        .fold(f64::MIN, f64::max);
    assert!(
        early_best > 0.3 * rt.total_effect(),
        "{early_best} of {}",
        rt.total_effect()
    );
    let bad = Corruption::Resample {
        alternatives: vec![vec![1, 2]],
    };
    assert!(Tracer::new(&m.model, &toks, span, Some(paris), &bad).is_err());
    // Bad input.
    assert!(find_subject(&toks, &m.tokenizer.encode(" London", false).unwrap()).is_err());
}
