//! Model diff on cases whose answer is known: a model against itself differs nowhere; against a
//! copy whose unembedding is zero (uniform predictions) every token's loss is exactly ln(vocab).

use crate::common;

use interplab_analysis::diff::{diff_models, token_losses};

#[test]
fn self_diff_is_zero_and_a_uniform_model_costs_ln_vocab() {
    let m = common::tiny("llama-tiny");
    let docs = vec![vec![1u32, 5, 9, 3, 7, 7, 2], vec![4, 4, 8, 1]];
    let same = diff_models(&m.model, &m.model, &docs).unwrap();
    assert!(same.tokens.iter().all(|t| t.diff() == 0.0));
    assert_eq!(same.tokens.len(), 6 + 3);
    let mut uniform = m.model.clone();
    let w_u = uniform.weights.unembed().unwrap();
    uniform.weights.w_u = Some(w_u.zeros_like().unwrap());
    uniform.weights.b_u = None;
    let d = diff_models(&m.model, &uniform, &docs).unwrap();
    let ln_v = (m.model.cfg.d_vocab as f64).ln();
    for t in &d.tokens {
        assert!((t.loss_b - ln_v).abs() < 1e-5, "{t:?}");
    }
    let la = token_losses(&m.model, &docs[0]).unwrap();
    assert!((d.tokens[0].loss_a - la[0]).abs() < 1e-12);
    assert!(diff_models(&m.model, &m.model, &[vec![1]]).is_err());
}
