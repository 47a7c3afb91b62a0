//! Gradients through the hooked transformer against central finite differences, in f64, on
//! tiny models of three architectures: for weights (after `make_trainable`) and for hook points
//! (`hook_gradients`). candle's fused softmax/norm/rope drop gradients silently, so this is the
//! test that proves the differentiable path uses none of them.

use crate::common;

use candle_core::{DType, Tensor, Var};
use common::{fixture, read_st, tiny};
use interplab_core::model::{
    next_token_loss as loss, HookedTransformer, Hooks, Input, NameFilter, RunOptions,
};

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn fixture_tokens(name: &str) -> Tensor {
    let r = read_st(&fixture(&format!("hf/{name}/reference.safetensors")));
    r["input_ids"].to_dtype(DType::U32).unwrap()
}

fn diff_opts() -> RunOptions<'static> {
    RunOptions::default()
}

/// Loss of `model` with one weight element moved by `delta`.
fn loss_with(
    model: &HookedTransformer,
    name: &str,
    index: usize,
    delta: f64,
    tokens: &Tensor,
) -> f64 {
    let mut m = model.clone();
    m.weights = m.weights.with_element_moved(name, index, delta).unwrap();
    let (logits, _) = m
        .run(Input::Tokens(tokens), &diff_opts(), None, None)
        .unwrap();
    scalar(&loss(&logits, tokens).unwrap())
}

fn check_weight_gradients(fixture_name: &str, params: &[&str]) {
    let model = tiny(fixture_name).model.to_dtype(DType::F64).unwrap();
    let tokens = fixture_tokens(fixture_name);
    let mut trainable = model.clone();
    let vars: Vec<(String, Var)> = trainable.weights.make_trainable().unwrap();
    let (logits, _) = trainable
        .run(Input::Tokens(&tokens), &diff_opts(), None, None)
        .unwrap();
    let grads = loss(&logits, &tokens).unwrap().backward().unwrap();
    let eps = 1e-5;
    for &name in params {
        let var = &vars
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .1;
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{fixture_name}: no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let n = g.len();
        let g_scale = g.iter().fold(0f64, |a, x| a.max(x.abs()));
        assert!(
            g_scale > 0.0,
            "{fixture_name}: gradient of {name} is all zero"
        );
        // Elements the inputs touch (rows of W_E for absent tokens and of W_pos beyond the
        // sequence have exactly zero gradient): seven spread over them, each compared on its
        // own at 1e-4 relative (central differences in f64 at eps 1e-5 err by ~1e-10).
        let touched: Vec<usize> = (0..n).filter(|&i| g[i] != 0.0).collect();
        let k = touched.len();
        let mut picks: Vec<usize> = (0..7).map(|j| touched[j * (k - 1) / 6]).collect();
        // And one untouched element, if any: its finite difference must be zero too.
        picks.extend((0..n).find(|&i| g[i] == 0.0));
        for index in picks {
            let fd = (loss_with(&model, name, index, eps, &tokens)
                - loss_with(&model, name, index, -eps, &tokens))
                / (2.0 * eps);
            let err = (fd - g[index]).abs();
            assert!(
                err <= 1e-4 * fd.abs() + 1e-10,
                "{fixture_name} {name}[{index}]: autograd {} vs finite difference {fd}",
                g[index]
            );
        }
    }
}

#[test]
fn weight_gradients_gpt2() {
    check_weight_gradients(
        "gpt2-tiny",
        &[
            "embed.W_E",
            "pos_embed.W_pos",
            "blocks.0.ln1.w",
            "blocks.0.ln1.b",
            "blocks.0.attn.W_Q",
            "blocks.0.attn.W_K",
            "blocks.1.attn.b_V",
            "blocks.1.mlp.W_in",
            "ln_final.w",
        ],
    );
}

#[test]
fn weight_gradients_llama() {
    check_weight_gradients(
        "llama-tiny",
        &[
            "blocks.0.ln1.w",
            "blocks.0.attn.W_Q",
            "blocks.0.attn.W_K",
            "blocks.1.attn.W_O",
            "blocks.1.mlp.W_gate",
            "blocks.1.mlp.W_in",
            "unembed.W_U",
        ],
    );
}

#[test]
fn weight_gradients_gemma3() {
    check_weight_gradients(
        "gemma3-tiny",
        &[
            "blocks.0.attn.q_norm.w",
            "blocks.0.attn.k_norm.w",
            "blocks.5.attn.W_K",
            "blocks.2.ln1_post.w",
            "blocks.3.mlp.W_gate",
            "embed.W_E",
        ],
    );
}

#[test]
fn neox_parallel_partial_rotary_gradients() {
    check_weight_gradients(
        "neox-tiny",
        &["blocks.0.attn.W_Q", "blocks.1.ln2.w", "blocks.1.mlp.W_out"],
    );
}

#[test]
fn hook_gradients_match_finite_differences() {
    let model = tiny("llama-tiny").model.to_dtype(DType::F64).unwrap();
    let tokens = fixture_tokens("llama-tiny");
    let names = [
        "blocks.0.hook_resid_mid",
        "blocks.1.attn.hook_pattern",
        "blocks.1.attn.hook_z",
        "blocks.0.mlp.hook_post",
    ];
    let filter = NameFilter::new(&names);
    let (_, acts, grads) = model
        .hook_gradients(
            Input::Tokens(&tokens),
            &RunOptions::default(),
            &filter,
            |l| loss(l, &tokens),
        )
        .unwrap();
    let eps = 1e-5;
    for name in names {
        let g: Vec<f64> = grads
            .get(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let shape = acts.get(name).unwrap().dims().to_vec();
        let g_scale = g.iter().fold(0f64, |a, x| a.max(x.abs()));
        assert!(g_scale > 0.0, "{name}: zero gradient");
        for index in [1usize, g.len() / 2, g.len() - 2] {
            let moved = |delta: f64| {
                let mut hooks = Hooks::new();
                hooks.add(name, |x: &Tensor, _| {
                    let mut v: Vec<f64> = x.flatten_all()?.to_vec1()?;
                    v[index] += delta;
                    Ok(Some(Tensor::from_vec(v, shape.as_slice(), x.device())?))
                });
                let (logits, _) = model
                    .run(Input::Tokens(&tokens), &diff_opts(), Some(&mut hooks), None)
                    .unwrap();
                scalar(&loss(&logits, &tokens).unwrap())
            };
            let fd = (moved(eps) - moved(-eps)) / (2.0 * eps);
            let err = (fd - g[index]).abs();
            // Per element, 1e-4 relative (docs/correctness.md).
            assert!(
                err <= 1e-4 * fd.abs() + 1e-10,
                "{name}[{index}]: autograd {} vs finite difference {fd}",
                g[index]
            );
        }
    }
}
