//! TransformerLens weight processing (`fold_ln`, `center_writing_weights`, `center_unembed`,
//! `fold_value_biases`): log-probs are unchanged on every architecture, each step alone does
//! what TransformerLens' step does, and the hooks that must not change do not.

use crate::common;

use candle_core::{DType, Device, Tensor, D};
use common::{fixture, max_abs_diff, read_st, smollm2, tiny, tokens};
use interplab_core::config::NormKind;
use interplab_core::model::process::ProcessOptions;
use interplab_core::model::{log_softmax, HookedTransformer, NameFilter};

const TOL: f32 = 1e-4;

/// The fixture's reference input ids `[batch, pos]`.
fn fixture_tokens(name: &str) -> Tensor {
    let r = read_st(&fixture(&format!("hf/{name}/reference.safetensors")));
    r["input_ids"].to_dtype(DType::U32).unwrap()
}

/// `model` processed with `opts` (the original is left alone).
fn processed(model: &HookedTransformer, opts: ProcessOptions) -> HookedTransformer {
    let mut m = model.clone();
    m.process_weights(&opts).unwrap();
    m
}

/// Max |log_softmax(a(tokens)) - log_softmax(b(tokens))|.
fn logprob_diff(a: &HookedTransformer, b: &HookedTransformer, tokens: &Tensor) -> f32 {
    let la = log_softmax(&a.forward(tokens).unwrap()).unwrap();
    let lb = log_softmax(&b.forward(tokens).unwrap()).unwrap();
    max_abs_diff(&la, &lb)
}

/// Max |x| over all elements.
fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Max |mean of `t` along `dim`|.
fn max_abs_mean(t: &Tensor, dim: usize) -> f32 {
    max_abs(&t.to_dtype(DType::F64).unwrap().mean(dim).unwrap())
}

fn all_preserve_logprobs(name: &str) {
    let m = tiny(name).model;
    let t = fixture_tokens(name);
    let p = processed(&m, ProcessOptions::all());
    let d = logprob_diff(&m, &p, &t);
    assert!(d < TOL, "{name}: log-probs differ by {d} after processing");
    assert!(!p.cfg.tied_embeddings, "{name}: embeddings still tied");
    assert!(
        p.weights.ln_final.w.is_none(),
        "{name}: ln_final.w not folded"
    );
    for (l, b) in p.weights.blocks.iter().enumerate() {
        assert!(
            b.ln1.w.is_none() && b.ln1.b.is_none(),
            "{name}: ln1 of block {l} not folded"
        );
        assert!(
            b.ln2.w.is_none() && b.ln2.b.is_none(),
            "{name}: ln2 of block {l} not folded"
        );
        assert!(b.attn.b_v.is_none(), "{name}: b_V of block {l} not folded");
    }
}

#[test]
fn gpt2_all_steps_keep_logprobs() {
    all_preserve_logprobs("gpt2-tiny");
}

#[test]
fn neox_all_steps_keep_logprobs() {
    all_preserve_logprobs("neox-tiny");
}

#[test]
fn llama_all_steps_keep_logprobs() {
    all_preserve_logprobs("llama-tiny");
}

#[test]
fn gemma3_all_steps_keep_logprobs() {
    all_preserve_logprobs("gemma3-tiny");
    // Post-norms and QK-norm come after a linear map: they stay.
    let p = processed(&tiny("gemma3-tiny").model, ProcessOptions::all());
    for b in &p.weights.blocks {
        assert!(b.ln1_post.as_ref().is_some_and(|n| n.w.is_some()));
        assert!(b.ln2_post.as_ref().is_some_and(|n| n.w.is_some()));
        assert!(b.attn.q_norm.as_ref().is_some_and(|n| n.w.is_some()));
    }
}

#[test]
fn smollm2_all_steps_keep_logprobs() {
    let m = &smollm2();
    let ids = m
        .tokenizer
        .encode(
            "When Mary and John went to the store, John gave a drink to",
            false,
        )
        .unwrap();
    let t = tokens(&ids);
    let p = processed(&m.model, ProcessOptions::all());
    let d = logprob_diff(&m.model, &p, &t);
    assert!(d < TOL, "smollm2: log-probs differ by {d} after processing");
}

#[test]
fn gpt2_fold_ln_alone() {
    let m = tiny("gpt2-tiny").model;
    assert_eq!(m.cfg.norm, NormKind::LayerNorm);
    let t = fixture_tokens("gpt2-tiny");
    let p = processed(
        &m,
        ProcessOptions {
            fold_ln: true,
            ..ProcessOptions::none()
        },
    );
    // Folding alone changes no logit, not only no log-prob.
    let d = max_abs_diff(&m.forward(&t).unwrap(), &p.forward(&t).unwrap());
    assert!(d < TOL, "logits differ by {d}");
    assert!(p.weights.ln_final.w.is_none() && p.weights.ln_final.b.is_none());
    assert!(!p.cfg.tied_embeddings && p.weights.w_u.is_some());
    // W_E is untouched by folding, so untying did not alter it.
    assert_eq!(max_abs_diff(&m.weights.w_e, &p.weights.w_e), 0.0);
    // TransformerLens: every matrix reading a LayerNormPre has columns centred over d_model.
    for (l, b) in p.weights.blocks.iter().enumerate() {
        assert!(b.ln1.w.is_none() && b.ln1.b.is_none(), "ln1 of block {l}");
        assert!(b.ln2.w.is_none() && b.ln2.b.is_none(), "ln2 of block {l}");
        let w_q = b.attn.w_q_heads(p.cfg.n_heads).unwrap(); // [head, d_model, d_head]
        assert!(max_abs_mean(&w_q, 1) < 1e-6, "W_Q of block {l} not centred");
        let w_k = b.attn.w_k_heads(p.cfg.n_kv_heads).unwrap();
        assert!(max_abs_mean(&w_k, 1) < 1e-6, "W_K of block {l} not centred");
        let w_v = b.attn.w_v_heads(p.cfg.n_kv_heads).unwrap();
        assert!(max_abs_mean(&w_v, 1) < 1e-6, "W_V of block {l} not centred");
        let w_in = &b.mlp.as_ref().unwrap().w_in;
        assert!(
            max_abs_mean(&w_in.tensor().unwrap(), 0) < 1e-6,
            "W_in of block {l} not centred"
        );
    }
    assert!(
        max_abs_mean(p.weights.w_u.as_ref().unwrap(), 0) < 1e-6,
        "W_U not centred"
    );
    // GPT-2 has no b_U: it was created to hold ln_final's bias.
    assert!(p.weights.b_u.is_some());
    // The folded W_Q is diag(ln1.w) W_Q, centred over d_model.
    let b0 = &m.weights.blocks[0];
    let ln_w = b0.ln1.w.as_ref().unwrap().unsqueeze(1).unwrap();
    let want = b0.attn.w_q.tensor().unwrap().broadcast_mul(&ln_w).unwrap();
    let want = want.broadcast_sub(&want.mean_keepdim(0).unwrap()).unwrap();
    let d = max_abs_diff(&p.weights.blocks[0].attn.w_q.tensor().unwrap(), &want);
    assert!(
        d < 1e-6,
        "folded W_Q differs from diag(w) W_Q centred by {d}"
    );
}

#[test]
fn gpt2_center_writing_weights_alone() {
    let m = tiny("gpt2-tiny").model;
    let t = fixture_tokens("gpt2-tiny");
    let p = processed(
        &m,
        ProcessOptions {
            center_writing_weights: true,
            ..ProcessOptions::none()
        },
    );
    let d = max_abs_diff(&m.forward(&t).unwrap(), &p.forward(&t).unwrap());
    assert!(d < TOL, "logits differ by {d}");
    let w = &p.weights;
    assert!(max_abs_mean(&w.w_e, 1) < 1e-6, "W_E not centred");
    assert!(
        max_abs_mean(w.w_pos.as_ref().unwrap(), 1) < 1e-6,
        "W_pos not centred"
    );
    for (l, b) in w.blocks.iter().enumerate() {
        assert!(
            max_abs_mean(&b.attn.w_o.tensor().unwrap(), 1) < 1e-6,
            "W_O of block {l}"
        );
        assert!(
            max_abs_mean(b.attn.b_o.as_ref().unwrap(), 0) < 1e-6,
            "b_O of block {l}"
        );
        let mlp = b.mlp.as_ref().unwrap();
        assert!(
            max_abs_mean(&mlp.w_out.tensor().unwrap(), 1) < 1e-6,
            "W_out of block {l}"
        );
        assert!(
            max_abs_mean(mlp.b_out.as_ref().unwrap(), 0) < 1e-6,
            "b_out of block {l}"
        );
    }
    // GPT-2 ties W_U to W_E: the unembedding must keep the uncentred embedding.
    let d = max_abs_diff(&w.unembed().unwrap(), &m.weights.unembed().unwrap());
    assert_eq!(d, 0.0, "W_U changed with W_E");
    // The residual stream is the old one minus its mean over d_model.
    let name = "blocks.1.hook_resid_pre";
    let filter = NameFilter::new(&[name]);
    let (_, ca) = m.run_with_cache(&t, &filter).unwrap();
    let (_, cb) = p.run_with_cache(&t, &filter).unwrap();
    let a = ca.get(name).unwrap();
    let centred = a
        .broadcast_sub(&a.mean_keepdim(D::Minus1).unwrap())
        .unwrap();
    let d = max_abs_diff(&centred, cb.get(name).unwrap());
    assert!(d < TOL, "resid_pre is not the centred old one: {d}");
}

#[test]
fn gpt2_center_unembed_alone() {
    let m = tiny("gpt2-tiny").model;
    let t = fixture_tokens("gpt2-tiny");
    let p = processed(
        &m,
        ProcessOptions {
            center_unembed: true,
            ..ProcessOptions::none()
        },
    );
    let w_u = p.weights.w_u.as_ref().unwrap();
    assert!(
        max_abs_mean(w_u, 1) < 1e-6,
        "W_U not centred over the vocabulary"
    );
    assert_eq!(
        max_abs_diff(&m.weights.w_e, &p.weights.w_e),
        0.0,
        "W_E changed"
    );
    let d = logprob_diff(&m, &p, &t);
    assert!(d < TOL, "log-probs differ by {d}");
    // The logits shift by one constant per position: the mean over the vocabulary.
    let la = m.forward(&t).unwrap();
    let lb = p.forward(&t).unwrap();
    let ca = la
        .broadcast_sub(&la.mean_keepdim(D::Minus1).unwrap())
        .unwrap();
    let d = max_abs_diff(&ca, &lb);
    assert!(d < TOL, "logits are not the old ones centred: {d}");
}

#[test]
fn gpt2_fold_value_biases_alone() {
    let m = tiny("gpt2-tiny").model;
    let t = fixture_tokens("gpt2-tiny");
    let p = processed(
        &m,
        ProcessOptions {
            fold_value_biases: true,
            ..ProcessOptions::none()
        },
    );
    let d = max_abs_diff(&m.forward(&t).unwrap(), &p.forward(&t).unwrap());
    assert!(d < TOL, "logits differ by {d}");
    for (l, (a, b)) in m.weights.blocks.iter().zip(&p.weights.blocks).enumerate() {
        assert!(b.attn.b_v.is_none(), "b_V of block {l} still there");
        // b_O' = b_O + sum_h b_V[h] @ W_O[h].
        let b_v = a.attn.b_v.as_ref().unwrap().unsqueeze(0).unwrap();
        let want = (b_v
            .matmul(&a.attn.w_o.tensor().unwrap())
            .unwrap()
            .squeeze(0)
            .unwrap()
            + a.attn.b_o.as_ref().unwrap())
        .unwrap();
        let d = max_abs_diff(b.attn.b_o.as_ref().unwrap(), &want);
        assert!(d < 1e-5, "b_O of block {l} differs by {d}");
    }
}

/// Grouped-query attention: llama-tiny has 4 query heads on 2 kv heads and no biases; give it
/// a random `b_V` (2 heads) and check folding counts each kv head once per query head using it.
#[test]
fn llama_gqa_value_bias_folds() {
    let mut m = tiny("llama-tiny").model;
    assert!(
        m.cfg.n_kv_heads < m.cfg.n_heads,
        "fixture is not grouped-query"
    );
    let n = m.cfg.n_kv_heads * m.cfg.d_head;
    let mut rng = interplab_core::rng::SplitMix::new(302);
    for b in m.weights.blocks.iter_mut() {
        assert!(b.attn.b_v.is_none() && b.attn.b_o.is_none());
        let bias: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        b.attn.b_v = Some(Tensor::from_vec(bias, n, &Device::Cpu).unwrap());
    }
    let t = fixture_tokens("llama-tiny");
    let p = processed(
        &m,
        ProcessOptions {
            fold_value_biases: true,
            ..ProcessOptions::none()
        },
    );
    let d = max_abs_diff(&m.forward(&t).unwrap(), &p.forward(&t).unwrap());
    assert!(d < TOL, "logits differ by {d}");
    for b in &p.weights.blocks {
        assert!(b.attn.b_v.is_none() && b.attn.b_o.is_some());
    }
}

/// RMSNorm: only the weight folds, and `center_writing_weights` is skipped.
#[test]
fn llama_rmsnorm_skips_centering() {
    let m = tiny("llama-tiny").model;
    assert_eq!(m.cfg.norm, NormKind::RmsNorm);
    let t = fixture_tokens("llama-tiny");
    let p = processed(
        &m,
        ProcessOptions {
            center_writing_weights: true,
            ..ProcessOptions::none()
        },
    );
    assert_eq!(
        max_abs_diff(&m.weights.w_e, &p.weights.w_e),
        0.0,
        "W_E changed"
    );
    for (a, b) in m.weights.blocks.iter().zip(&p.weights.blocks) {
        assert_eq!(
            max_abs_diff(&a.attn.w_o.tensor().unwrap(), &b.attn.w_o.tensor().unwrap()),
            0.0,
            "W_O changed"
        );
    }
    let p = processed(
        &m,
        ProcessOptions {
            fold_ln: true,
            ..ProcessOptions::none()
        },
    );
    let d = max_abs_diff(&m.forward(&t).unwrap(), &p.forward(&t).unwrap());
    assert!(d < TOL, "logits differ by {d} after folding RMSNorm");
    // No bias is invented for RMSNorm, and W_Q is just diag(w) W_Q (no centring).
    let (a, b) = (&m.weights.blocks[0], &p.weights.blocks[0]);
    assert!(b.attn.b_q.is_none() && b.ln1.w.is_none());
    let ln_w = a.ln1.w.as_ref().unwrap().unsqueeze(1).unwrap();
    let want = a.attn.w_q.tensor().unwrap().broadcast_mul(&ln_w).unwrap();
    let d = max_abs_diff(&b.attn.w_q.tensor().unwrap(), &want);
    assert!(d < 1e-6, "folded W_Q differs from diag(w) W_Q by {d}");
}

/// `ln*.hook_normalized` and `ln*.hook_scale` are taken before the norm's weight and after its
/// centring, so all processing leaves them as they were.
#[test]
fn gpt2_normalized_hooks_unchanged() {
    let m = tiny("gpt2-tiny").model;
    let t = fixture_tokens("gpt2-tiny");
    let p = processed(&m, ProcessOptions::all());
    let mut names = vec![
        "ln_final.hook_normalized".to_string(),
        "ln_final.hook_scale".to_string(),
    ];
    for l in 0..m.cfg.n_layers {
        for h in [
            "ln1.hook_normalized",
            "ln1.hook_scale",
            "ln2.hook_normalized",
            "ln2.hook_scale",
        ] {
            names.push(format!("blocks.{l}.{h}"));
        }
        names.push(format!("blocks.{l}.attn.hook_q"));
        names.push(format!("blocks.{l}.attn.hook_k"));
        names.push(format!("blocks.{l}.mlp.hook_pre"));
    }
    let filter = NameFilter::new(&names);
    let (_, ca) = m.run_with_cache(&t, &filter).unwrap();
    let (_, cb) = p.run_with_cache(&t, &filter).unwrap();
    assert!(names.contains(&"blocks.0.ln1.hook_normalized".to_string()));
    for n in &names {
        let d = max_abs_diff(ca.get(n).unwrap(), cb.get(n).unwrap());
        assert!(d < TOL, "{n} differs by {d}");
    }
}

#[test]
fn none_changes_nothing() {
    let m = tiny("gpt2-tiny").model;
    let p = processed(&m, ProcessOptions::default());
    assert_eq!(ProcessOptions::default(), ProcessOptions::none());
    assert!(p.cfg == m.cfg);
    let (a, b) = (m.weights.named().unwrap(), p.weights.named().unwrap());
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(max_abs_diff(ta, tb), 0.0, "{na} changed");
    }
}

/// Processing twice is the same as once (a second fold finds nothing to fold).
#[test]
fn gpt2_processing_is_idempotent() {
    let m = tiny("gpt2-tiny").model;
    let t = fixture_tokens("gpt2-tiny");
    let once = processed(&m, ProcessOptions::all());
    let twice = processed(&once, ProcessOptions::all());
    let d = max_abs_diff(&once.forward(&t).unwrap(), &twice.forward(&t).unwrap());
    assert!(d < TOL, "logits differ by {d}");
}
