//! Causal tracing on SmolLM2-135M with a fact it knows ("The Eiffel Tower is located in the
//! city of" → " Paris", p = 0.70 clean).
//!
//! What was measured (3 Gaussian samples, 3σ; hidden-state restoration): the early site is
//! there, as in ROME, but on the subject token "iffel" — the last token of the name — not on
//! the subject's final token " Tower": restoring "iffel" in early layers recovers up to two
//! thirds of the total effect (0.47 of 0.69), restoring " Tower" nothing (≤ 0.02). The late site is
//! the last token (layers 24–29, p ≈ 0.6) as in ROME. The test asserts that structure:
//! an early-middle subject-token site carrying ≥ 30% of the total effect, nothing at the
//! non-subject tokens before the last one in those layers, and the late site at the last token.

use crate::common;

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
    // Thresholds: from this project's run of this test (`cargo test -p interplab-analysis
    // --test integration trace:: -- --nocapture` prints the numbers), each well between what a working tracer gives and
    // what a broken one would. Measured total effect 0.692 (p(Paris) 0.702 clean, 0.01
    // corrupted); a corruption that is not applied leaves p unchanged: total ≈ 0.
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
    // Measured: the best early restoration, "iffel" (token 2), recovers 0.466 of the 0.692
    // (67%). A restoration that does nothing (wrong hook, wrong position, restoring the
    // corrupted value) gives 0 here.
    assert!(
        best >= 0.3 * total,
        "best early subject effect {best} at token {best_tok}, total {total}"
    );
    let n = toks.len();
    // Measured: at most 0.001 at the tokens after the subject in layers 0-9 (they have not yet
    // read much of the subject). A restoration that writes every position gives the whole total
    // effect (0.69) here, one that writes the subject's positions instead the 0.47 above.
    for tk in span.1..n - 1 {
        for l in 0..10 {
            assert!(
                tr.indirect_effect(tk, l) < 0.05,
                "token {tk} layer {l}: {}",
                tr.indirect_effect(tk, l)
            );
        }
    }
    // Measured: restoring the last token's final residual gives back all of it, 0.692 (it is
    // the whole input of the unembedding); a broken restoration gives 0.
    let after_subject = (span.1..n - 1)
        .flat_map(|tk| (0..10).map(move |l| (tk, l)))
        .map(|(tk, l)| tr.indirect_effect(tk, l))
        .fold(f64::MIN, f64::max);
    eprintln!(
        "clean p {:.3}, total effect {total:.3}, best early subject effect {best:.3} (token \
         {best_tok}), max after the subject in layers 0-9 {after_subject:.3}, last token at \
         layer 29 {:.3}",
        tr.clean_prob,
        tr.indirect_effect(n - 1, 29)
    );
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
    // Resample thresholds, same origin. Measured: with the Space Needle as the subject p(Paris)
    // falls from 0.702 to 0.012 (bound: a quarter of the clean p), and restoring "iffel" early
    // brings back 0.658 of the 0.690 effect (bound 30%); a tracer that ignored the alternative
    // run fails the first, one that restored nothing the second.
    eprintln!(
        "resample: clean p {:.3}, corrupted p {:.3}, best early \"iffel\" effect {early_best:.3} \
         of {:.3}",
        rt.clean_prob,
        rt.corrupted_prob,
        rt.total_effect()
    );
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
