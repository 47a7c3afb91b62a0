//! Hand-built models whose circuits are known by construction: the test subjects of every
//! analysis in this crate.
//!
//! [`induction_model`] is a two-layer attention-only transformer with no norms and one-hot
//! learned positions. Its residual stream is the direct sum of four named subspaces:
//!
//! | subspace | width | written by | holds |
//! |---|---|---|---|
//! | `T` | vocab | the embedding | the current token, one-hot |
//! | `P` | n_ctx | the positional embedding | the position, one-hot |
//! | `S` | vocab | head 0.0 | the *previous* token, one-hot |
//! | `O` | vocab | head 1.0 | the predicted next token, read by the unembedding |
//! | `D` | 1 | heads 0.1 and 1.1 | nothing anyone reads (distractors) |
//!
//! - **Head 0.0, previous-token head**: query reads position p from `P`, key reads position p'
//!   from `P`; the QK circuit scores `GAIN` exactly when p' = p − 1. Its OV circuit copies `T`
//!   of the attended position into `S`.
//! - **Head 1.0, induction head**: query reads the current token from `T`, key reads the
//!   previous token from `S` (so it K-composes with head 0.0): it attends to the position just
//!   after an earlier copy of the current token. Its OV circuit copies `T` of the attended
//!   position into `O`, and the unembedding reads `O`: the model predicts the token that
//!   followed the earlier copy. With no earlier copy it attends BOS, whose value is zero, and
//!   the logits are uniform.
//! - **Heads 0.1 and 1.1, distractors**: 0.1 has a zero QK circuit (uniform attention over the
//!   prefix); 1.1 attends to the current position. Both write a constant into `D`, which
//!   nothing reads, so ablating them changes no logit.
//!
//! On a random token sequence repeated twice, the second repeat is predicted with probability
//! close to 1 (the logit gap is `UNEMBED_GAIN` against every other token), the first repeat
//! exactly at chance (uniform logits, loss ln(vocab)).

use candle_core::{Device, Tensor};
use interplab_core::config::ModelConfig;
use interplab_core::model::weights::{AttnWeights, BlockWeights, NormWeights, Weights};
use interplab_core::model::HookedTransformer;
use interplab_core::Result;

/// Attention score (after scaling) given to the matching key; 30 makes the softmax a hard
/// selection among up to 64 positions (e^-30 · 64 ≈ 6e-12).
const GAIN: f64 = 30.0;
/// The logit of the copied token above all others.
const UNEMBED_GAIN: f32 = 20.0;

/// Where each subspace of the toy model's residual stream starts.
#[derive(Debug, Clone, Copy)]
pub struct ToyLayout {
    pub vocab: usize,
    pub n_ctx: usize,
    pub t: usize,
    pub p: usize,
    pub s: usize,
    pub o: usize,
    pub d: usize,
    pub d_model: usize,
}

impl ToyLayout {
    fn new(vocab: usize, n_ctx: usize) -> ToyLayout {
        let (t, p) = (0, vocab);
        let s = p + n_ctx;
        let o = s + vocab;
        let d = o + vocab;
        ToyLayout {
            vocab,
            n_ctx,
            t,
            p,
            s,
            o,
            d,
            d_model: d + 1,
        }
    }
}

/// The previous-token head of [`induction_model`] as (layer, head).
pub const PREV_TOKEN_HEAD: (usize, usize) = (0, 0);
/// The induction head of [`induction_model`].
pub const INDUCTION_HEAD: (usize, usize) = (1, 0);
/// The distractor heads of [`induction_model`].
pub const DISTRACTOR_HEADS: [(usize, usize); 2] = [(0, 1), (1, 1)];

/// The two-layer induction model described in the module doc, with `vocab` tokens and
/// context `n_ctx`. Token 0 plays BOS.
pub fn induction_model(vocab: usize, n_ctx: usize) -> Result<HookedTransformer> {
    let lay = ToyLayout::new(vocab, n_ctx);
    let d_head = vocab.max(n_ctx);
    let n_heads = 2;
    let dm = lay.d_model;
    let cfg = ModelConfig {
        attn_scale: 1.0,
        default_prepend_bos: true,
        ..ModelConfig::attention_only(dm, 2, n_heads, d_head, vocab, n_ctx)
    };
    let zeros = |r: usize, c: usize| vec![0f32; r * c];
    // W_E: token t -> T_t. W_pos: position p -> P_p.
    let mut w_e = zeros(vocab, dm);
    for t in 0..vocab {
        w_e[t * dm + lay.t + t] = 1.0;
    }
    let mut w_pos = zeros(n_ctx, dm);
    for p in 0..n_ctx {
        w_pos[p * dm + lay.p + p] = 1.0;
    }
    // Per-layer [d_model, n_heads * d_head] for Q, K, V and [n_heads * d_head, d_model] for O.
    let hd = n_heads * d_head;
    let mut layers = Vec::new();
    for layer in 0..2 {
        let (mut wq, mut wk, mut wv, mut wo) =
            (zeros(dm, hd), zeros(dm, hd), zeros(dm, hd), zeros(hd, dm));
        let g = GAIN.sqrt() as f32;
        if layer == 0 {
            // 0.0: q(p) = g·e_p, k(p') = g·e_{p'+1}: score GAIN iff p' = p - 1.
            for p in 0..n_ctx {
                wq[(lay.p + p) * hd + p] = g;
                if p + 1 < n_ctx {
                    wk[(lay.p + p) * hd + p + 1] = g;
                }
            }
            // OV: T_t -> S_t.
            for t in 0..vocab {
                wv[(lay.t + t) * hd + t] = 1.0;
                wo[t * dm + lay.s + t] = 1.0;
            }
        } else {
            // 1.0: q = g·e_(current token) from T, k = g·e_(previous token) from S, for real
            // tokens (t >= 1). Unit 0 is an attention sink: every real query puts g/2 on it and
            // BOS's position puts g on it, so a query with no earlier copy attends BOS (score
            // GAIN/2) rather than spreading over the prefix.
            for t in 1..vocab {
                wq[(lay.t + t) * hd + t] = g;
                wk[(lay.s + t) * hd + t] = g;
                wq[(lay.t + t) * hd] = g / 2.0;
            }
            wk[lay.p * hd] = g;
            // OV: T_t -> O_t for real tokens; BOS writes nothing, so attending it predicts
            // nothing (uniform logits).
            for t in 1..vocab {
                wv[(lay.t + t) * hd + t] = 1.0;
                wo[t * dm + lay.o + t] = 1.0;
            }
            // 1.1: attends to the current position (q(p) · k(p') = GAIN iff p = p').
            for p in 0..n_ctx {
                wq[(lay.p + p) * hd + d_head + p] = g;
                wk[(lay.p + p) * hd + d_head + p] = g;
            }
        }
        // Distractor x.1 values: every token writes 1 into D (through value unit 0 of head 1).
        for t in 0..vocab {
            wv[(lay.t + t) * hd + d_head] = 1.0;
        }
        wo[d_head * dm + lay.d] = 1.0;
        layers.push((wq, wk, wv, wo));
    }
    // W_U reads O: logit t = UNEMBED_GAIN · O_t.
    let mut w_u = zeros(dm, vocab);
    for t in 0..vocab {
        w_u[(lay.o + t) * vocab + t] = UNEMBED_GAIN;
    }
    let dev = Device::Cpu;
    let blocks = layers
        .into_iter()
        .map(|(wq, wk, wv, wo)| -> Result<BlockWeights> {
            Ok(BlockWeights {
                ln1: NormWeights { w: None, b: None },
                attn: AttnWeights {
                    w_q: Tensor::from_vec(wq, (dm, hd), &dev)?.into(),
                    w_k: Tensor::from_vec(wk, (dm, hd), &dev)?.into(),
                    w_v: Tensor::from_vec(wv, (dm, hd), &dev)?.into(),
                    w_o: Tensor::from_vec(wo, (hd, dm), &dev)?.into(),
                    b_q: None,
                    b_k: None,
                    b_v: None,
                    b_o: None,
                    q_norm: None,
                    k_norm: None,
                },
                ln1_post: None,
                ln2: NormWeights { w: None, b: None },
                mlp: None,
                ln2_post: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let weights = Weights {
        w_e: Tensor::from_vec(w_e, (vocab, dm), &dev)?,
        w_pos: Some(Tensor::from_vec(w_pos, (n_ctx, dm), &dev)?),
        blocks,
        ln_final: NormWeights { w: None, b: None },
        w_u: Some(Tensor::from_vec(w_u, (dm, vocab), &dev)?),
        b_u: None,
        unembed_blocks: None,
        unembed_bf16: None,
    };
    HookedTransformer::new(cfg, weights, dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use interplab_core::rng::SplitMix;

    #[test]
    fn predicts_the_second_repeat() {
        let m = induction_model(16, 40).unwrap();
        let mut rng = SplitMix::new(3);
        // Distinct tokens: a repeat inside the first half would make the continuation ambiguous.
        let mut half: Vec<u32> = (1..16).collect();
        rng.shuffle(&mut half);
        let mut ids = vec![0u32];
        ids.extend(&half);
        ids.extend(&half);
        let t = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = m.forward(&t).unwrap().squeeze(0).unwrap();
        let v: Vec<Vec<f32>> = logits.to_vec2().unwrap();
        // Position 16 + i predicts token half[i + 1] (the token after the first copy).
        for i in 0..14 {
            let row = &v[16 + i];
            let best = (0..16).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            assert_eq!(best as u32, half[i + 1], "position {}", 16 + i);
        }
    }
}
