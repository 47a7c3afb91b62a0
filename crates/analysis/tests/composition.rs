//! Composition scores on the hand-built induction model: its induction head (1.0) reads, through
//! its keys, exactly what the previous-token head (0.0) writes, so that K-composition is the
//! strongest pair of all; and the random baseline sits far below it.

use interplab_analysis::composition::{composition_scores, random_baseline, CompositionKind};
use interplab_analysis::toy;

#[test]
fn induction_head_k_composes_with_the_previous_token_head() {
    let m = toy::induction_model(16, 32).unwrap();
    let k = composition_scores(&m, CompositionKind::K).unwrap();
    let (l1, h1, s) = k
        .strongest_partner(toy::INDUCTION_HEAD.0, toy::INDUCTION_HEAD.1)
        .unwrap();
    assert_eq!((l1, h1), toy::PREV_TOKEN_HEAD);
    let top = k.top_k(1)[0];
    assert_eq!(
        (top.0, top.1, top.2, top.3),
        (0, 0, 1, 0),
        "{:?}",
        k.top_k(4)
    );
    // Head 0.0's OV maps T to S; 1.0's keys read only S: the product is the whole of both
    // circuits' overlap. Its Q- and V-composition read T, which 0.0 does not write: zero.
    assert!(s > 0.1, "{s}");
    let q = composition_scores(&m, CompositionKind::Q).unwrap();
    let v = composition_scores(&m, CompositionKind::V).unwrap();
    assert!(q.get(0, 0, 1, 0).abs() < 1e-6 && v.get(0, 0, 1, 0).abs() < 1e-6);
    let base = random_baseline(m.cfg.d_model, m.cfg.d_head, 8, 0).unwrap();
    assert!(base > 0.0 && base < s, "baseline {base} vs {s}");
}
