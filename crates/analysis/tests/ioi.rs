//! IOI on SmolLM2-135M: the generator's names are single tokens; the model prefers the
//! indirect object. Measured with these 16 seeded prompts: mean logit difference 4.86 (standard
//! error 0.55), accuracy 16/16. The test asserts mean > 2.5 (over four standard errors below
//! the measurement, far above 0) and accuracy ≥ 0.9 (a model that cannot tell the names apart
//! scores 0.5; P(≥ 15/16 | p = 0.5) = 0.03%).

mod common;

use interplab_analysis::ioi::{analyse, generate, single_token_names};

#[test]
fn smollm2_prefers_the_indirect_object() {
    let m = common::smollm2();
    let names = single_token_names(&m.tokenizer);
    assert!(names.len() >= 20, "{names:?}");
    for n in &names {
        assert_eq!(
            m.tokenizer.encode(&format!(" {n}"), false).unwrap().len(),
            1
        );
    }
    let prompts = generate(&m.tokenizer, 16, 0).unwrap();
    for p in &prompts {
        let (c, x) = (
            m.tokenizer.encode(&p.clean, false).unwrap(),
            m.tokenizer.encode(&p.corrupted, false).unwrap(),
        );
        assert_eq!(c.len(), x.len());
    }
    let r = analyse(&m.model, &m.tokenizer, &prompts, false, false).unwrap();
    eprintln!(
        "mean {} se {} acc {} {:?}",
        r.mean_logit_diff, r.stderr, r.accuracy, r.logit_diffs
    );
    assert!(r.mean_logit_diff > 2.5 && r.accuracy >= 0.9, "{r:?}");
}
