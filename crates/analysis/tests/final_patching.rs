//! Final-position patching between prompts of different lengths: the fast path against the
//! plain definition, and cases whose answer is known by construction (on the tiny Llama
//! fixture, whose positions enter only through rotary attention).

use crate::common;

use interplab_analysis::final_patching::{
    answer_logit_diffs, mean_z, AnswerPrompt, FinalPatching, HeadAblation,
};
use interplab_core::model::HookName;

fn prompt(tokens: &[u32]) -> AnswerPrompt {
    AnswerPrompt {
        tokens: tokens.to_vec(),
        answer: 7,
        wrong: 11,
    }
}

// Different lengths, the same final token.
const CLEAN: &[u32] = &[3, 17, 25, 9, 40, 5];
const CORRUPTED: &[u32] = &[3, 33, 12, 9, 28, 14, 2, 19, 5];

#[test]
fn the_fast_patches_equal_the_plain_definition() {
    let m = common::tiny("llama-tiny");
    let s = FinalPatching::new(&m.model, prompt(CLEAN), prompt(CORRUPTED)).unwrap();
    let resid = s.resid_by_layer().unwrap();
    let heads = s.heads().unwrap();
    let nl = m.model.cfg.n_layers;
    assert_eq!((resid.len(), heads.len()), (nl, nl));
    for l in 0..nl {
        let naive = s.patch_naive(&HookName::ResidPre(l), None).unwrap();
        assert!(
            (resid[l] - naive).abs() < 1e-4,
            "resid {l}: {} vs {naive}",
            resid[l]
        );
        for (h, &v) in heads[l].iter().enumerate() {
            let naive = s.patch_naive(&HookName::AttnZ(l), Some(h)).unwrap();
            assert!((v - naive).abs() < 1e-4, "z {l}.{h}: {v} vs {naive}");
        }
    }
}

#[test]
fn known_answers_with_the_same_final_token() {
    let m = common::tiny("llama-tiny");
    let s = FinalPatching::new(&m.model, prompt(CLEAN), prompt(CORRUPTED)).unwrap();
    // The embedding of the shared last token is the same in both runs: patching it changes
    // nothing, and its attribution is exactly zero.
    assert!(s.resid_by_layer().unwrap()[0].abs() < 1e-5);
    let (resid_attr, head_attr) = s.attribution().unwrap();
    assert_eq!(resid_attr[0], 0.0);
    assert_eq!(head_attr.len(), m.model.cfg.n_layers);
    assert!(head_attr.iter().flatten().all(|v| v.is_finite()));
    // Every head's output at the last position from the clean run: with the same token there
    // and positions only inside attention, the last residual stream is the clean one, so the
    // whole gap is restored.
    let all: Vec<(usize, usize)> = (0..m.model.cfg.n_layers)
        .flat_map(|l| (0..m.model.cfg.n_heads).map(move |h| (l, h)))
        .collect();
    let restored = s.heads_together(&all).unwrap();
    assert!((restored - 1.0).abs() < 1e-4, "{restored}");
    assert_eq!(s.heads_together(&[]).unwrap(), 0.0);
    // One head alone, patched "together", is the single-head patch.
    let one = s.heads_together(&[(1, 2)]).unwrap();
    assert!((one - s.heads().unwrap()[1][2]).abs() < 1e-5);
    assert!(s
        .heads_together(&[(9, 0)])
        .unwrap_err()
        .to_string()
        .contains("outside"));
}

#[test]
fn attribution_is_the_slope_of_the_patch_at_the_corrupted_run() {
    // Central finite differences of the interpolated patch at alpha = 0 against the gradient
    // estimate, for every head and every layer's residual stream.
    let m = common::tiny("llama-tiny");
    let s = FinalPatching::new(&m.model, prompt(CLEAN), prompt(CORRUPTED)).unwrap();
    let (resid, heads) = s.attribution().unwrap();
    let eps = 1e-2;
    let slope = |name: &HookName, head: Option<usize>| {
        let up = s.patch_interpolated(name, head, eps).unwrap();
        let down = s.patch_interpolated(name, head, -eps).unwrap();
        (up - down) / (2.0 * eps)
    };
    assert!(
        s.patch_interpolated(&HookName::AttnZ(1), Some(0), 0.0)
            .unwrap()
            .abs()
            < 1e-5
    );
    for l in 0..m.model.cfg.n_layers {
        let fd = slope(&HookName::ResidPre(l), None);
        assert!(
            (fd - resid[l]).abs() < 2e-2 * (1.0 + fd.abs()),
            "resid {l}: {fd} vs {}",
            resid[l]
        );
        for (h, &a) in heads[l].iter().enumerate() {
            let fd = slope(&HookName::AttnZ(l), Some(h));
            assert!(
                (fd - a).abs() < 2e-2 * (1.0 + fd.abs()),
                "z {l}.{h}: {fd} vs {a}"
            );
        }
    }
}

#[test]
fn ablation_by_the_mean_of_one_prompt_changes_nothing_on_it() {
    let m = common::tiny("llama-tiny");
    let p = prompt(CLEAN);
    let plain = answer_logit_diffs(
        &m.model,
        std::slice::from_ref(&p),
        &[],
        HeadAblation::Zero,
        None,
    )
    .unwrap();
    let s = FinalPatching::new(&m.model, prompt(CLEAN), prompt(CORRUPTED)).unwrap();
    assert!((plain[0] - s.clean_logit_diff).abs() < 1e-4);
    // Mean z over a one-token prompt is that prompt's z: mean-ablating every head is no change.
    let one = prompt(&[5]);
    let means = mean_z(&m.model, &[&one.tokens]).unwrap();
    let all: Vec<(usize, usize)> = (0..2).flat_map(|l| (0..4).map(move |h| (l, h))).collect();
    let base = answer_logit_diffs(
        &m.model,
        std::slice::from_ref(&one),
        &[],
        HeadAblation::Zero,
        None,
    )
    .unwrap();
    let abl = answer_logit_diffs(&m.model, &[one], &all, HeadAblation::Mean, Some(&means)).unwrap();
    assert!((base[0] - abl[0]).abs() < 1e-4, "{base:?} vs {abl:?}");
    // Zero ablation of every head does change the answer.
    let zero = answer_logit_diffs(
        &m.model,
        std::slice::from_ref(&p),
        &all,
        HeadAblation::Zero,
        None,
    )
    .unwrap();
    assert!((zero[0] - plain[0]).abs() > 1e-4);
    let e = answer_logit_diffs(&m.model, &[p], &all, HeadAblation::Mean, None).unwrap_err();
    assert!(e.to_string().contains("mean z"), "{e}");
}

#[test]
fn bad_pairs_are_refused() {
    let m = common::tiny("llama-tiny");
    let e = FinalPatching::new(&m.model, prompt(CLEAN), prompt(CLEAN))
        .err()
        .unwrap();
    assert!(e.to_string().contains("equal"), "{e}");
    let e = FinalPatching::new(&m.model, prompt(&[]), prompt(CORRUPTED))
        .err()
        .unwrap();
    assert!(e.to_string().contains("empty"), "{e}");
    let mut same = prompt(CLEAN);
    same.wrong = same.answer;
    let e = FinalPatching::new(&m.model, same, prompt(CORRUPTED))
        .err()
        .unwrap();
    assert!(e.to_string().contains("the same"), "{e}");
}
