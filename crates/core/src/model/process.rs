//! TransformerLens' weight processing: `fold_ln`, `center_writing_weights`, `center_unembed` and
//! `fold_value_biases`, with TransformerLens' semantics, on the compute layout of
//! [`Weights`] (`[in, out]` matrices, see the module doc of `weights.rs`).
//!
//! Every step is a re-parametrisation: the log-probabilities of the model are unchanged (to
//! float rounding). Some activations and weights change meaning, listed on each
//! [`ProcessOptions`] field. Arithmetic is done in f64 and the results are cast back to each
//! tensor's own dtype.
//!
//! Processing replaces weight tensors; a model made trainable with
//! [`Weights::make_trainable`] must be made trainable again afterwards.

use candle_core::{DType, Tensor, D};

use super::{HookedTransformer, NormWeights, Weights};
use crate::config::{ModelConfig, NormKind};
use crate::{Error, Result};

/// Which weight-processing steps [`HookedTransformer::process_weights`] applies, in this order:
/// `fold_ln`, `center_writing_weights`, `center_unembed`, `fold_value_biases`.
///
/// `Default` is [`ProcessOptions::none`]: plain inference with the weights as loaded.
/// TransformerLens' `from_pretrained` corresponds to [`ProcessOptions::all`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessOptions {
    /// Fold each norm's weight (and, for LayerNorm, its bias) into the linear maps that read
    /// from it: `ln1` into `W_Q`/`W_K`/`W_V` (`b_Q`/`b_K`/`b_V`), `ln2` into `W_in`/`W_gate`
    /// (`b_in`/`b_gate`), `ln_final` into `W_U` (`b_U`); missing biases are created as zeros, and
    /// tied embeddings are untied (`W_U` becomes its own tensor). For LayerNorm the folded
    /// matrices are also centred over `d_model` (their input is centred, so this changes
    /// nothing) and the norm becomes TransformerLens' `LayerNormPre` (centre and scale only);
    /// for RMSNorm only the weight folds (`RMSNormPre`). Gemma's post-sublayer norms and
    /// QK-norms come after a linear map and are left as they are. No-op without normalisation.
    ///
    /// Hook values are unchanged: `ln*.hook_normalized` and `ln*.hook_scale` are taken before
    /// the norm's weight and bias, and `attn.hook_q`/`hook_k`/`hook_v`, `mlp.hook_pre` and the
    /// logits come out the same. What changes is the meaning of the weights: `W_Q`, `W_in`,
    /// `W_U`, ... now include the norm's weight, and `b_Q`, `b_in`, `b_U`, ... its bias.
    pub fold_ln: bool,
    /// Subtract from every weight writing into the residual stream its mean over `d_model`:
    /// `W_E`, `W_pos`, `W_O`, `b_O`, `W_out`, `b_out` (untying embeddings first). Only valid
    /// for LayerNorm models without post-sublayer norms, where every reader of the residual
    /// centres it first; **skipped** (as TransformerLens does) for RMSNorm models, models
    /// without normalisation and Gemma-style post-norm models.
    ///
    /// Changes `hook_embed`, `hook_pos_embed`, `blocks.L.hook_resid_pre`/`hook_resid_mid`/
    /// `hook_resid_post`, `hook_attn_out`, `hook_mlp_out`, `attn.hook_result`, `hook_attn_in`,
    /// `hook_mlp_in` and `hook_{q,k,v}_input`: each becomes its old value minus its mean over
    /// `d_model`. `ln*.hook_normalized` and `ln*.hook_scale` are unchanged.
    pub center_writing_weights: bool,
    /// Subtract from `W_U` its mean over the vocabulary (and from `b_U` its mean), untying
    /// embeddings first. Softmax is shift-invariant, so log-probs are unchanged while
    /// `unembed.hook_out` (the logits) shifts by a constant per position. **Skipped** for models
    /// with a final logit soft-cap, where the shift would change the log-probs.
    pub center_unembed: bool,
    /// Fold the value bias into the output bias: attention patterns sum to one, so head `h`'s
    /// value bias adds the constant `b_V[h] @ W_O[h]` to the layer output; it moves into `b_O`
    /// (created as zeros if absent) and `b_V` becomes `None`. With grouped-query attention
    /// query head `h` reads key/value head `h / (n_heads / n_kv_heads)`, and its share of that
    /// head's bias is counted for it.
    ///
    /// Changes `attn.hook_v` and `attn.hook_z` (they lose `b_V`) and each head's
    /// `attn.hook_result` (the constant moves to `b_O`, which no head owns); `hook_attn_out`
    /// is unchanged.
    pub fold_value_biases: bool,
}

impl ProcessOptions {
    /// Every step, as TransformerLens' `from_pretrained` does.
    pub fn all() -> Self {
        ProcessOptions {
            fold_ln: true,
            center_writing_weights: true,
            center_unembed: true,
            fold_value_biases: true,
        }
    }

    /// No step: the weights as loaded.
    pub fn none() -> Self {
        ProcessOptions::default()
    }
}

impl HookedTransformer {
    /// Apply the weight-processing steps chosen in `opts` (see [`ProcessOptions`] for each
    /// step, what it skips and which hooks change meaning). On error the model is unchanged.
    pub fn process_weights(&mut self, opts: &ProcessOptions) -> Result<()> {
        let mut cfg = self.cfg.clone();
        let mut w = self.weights.clone();
        if opts.fold_ln {
            fold_ln(&mut cfg, &mut w)?;
        }
        let centred = opts.center_writing_weights && can_center_writing_weights(&cfg);
        if centred {
            center_writing_weights(&mut cfg, &mut w)?;
        }
        if opts.center_unembed && cfg.final_logit_softcap.is_none() {
            center_unembed(&mut cfg, &mut w)?;
        }
        if opts.fold_value_biases {
            fold_value_biases(&cfg, &mut w)?;
            if centred {
                // The folded biases are means of centred rows already; this removes rounding.
                for b in w.blocks.iter_mut() {
                    if let Some(bo) = b.attn.b_o.as_mut() {
                        *bo = center_last(bo)?;
                    }
                }
            }
        }
        w.check_shapes(&cfg)?;
        self.cfg = cfg;
        self.weights = w;
        Ok(())
    }
}

/// Whether every reader of the residual stream centres it first (LayerNorm, no post-norms).
fn can_center_writing_weights(cfg: &ModelConfig) -> bool {
    cfg.norm == NormKind::LayerNorm && !cfg.post_norms
}

/// Give `W_U` its own tensor when it is tied to `W_E`, so either can change alone.
fn untie(cfg: &mut ModelConfig, w: &mut Weights) -> Result<()> {
    if w.w_u.is_none() {
        w.w_u = Some(w.w_e.t()?.contiguous()?);
    }
    cfg.tied_embeddings = false;
    Ok(())
}

/// `t` in f64, to process without rounding at each step.
fn f64_of(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F64)?)
}

/// `t` minus its mean over the last dimension (`d_model` for writing weights).
fn center_last(t: &Tensor) -> Result<Tensor> {
    let x = f64_of(t)?;
    let x = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    Ok(x.to_dtype(t.dtype())?)
}

/// A linear map `x @ w + b` reading a norm's output; `w` is `[d_model, out]`.
struct Reader<'a> {
    w: &'a mut Tensor,
    b: &'a mut Option<Tensor>,
}

/// Fold a norm's weight `ln_w` and bias `ln_b` (each `[d_model]`) into the maps reading from it:
/// `(n * ln_w + ln_b) @ W + b = n @ (diag(ln_w) W) + (ln_b @ W + b)`. With `center`, each
/// column of the new `W` is centred over `d_model` (exact when `n` is centred, as LayerNorm's is).
fn fold_into(
    readers: Vec<Reader>,
    ln_w: Option<&Tensor>,
    ln_b: Option<&Tensor>,
    center: bool,
) -> Result<()> {
    for r in readers {
        let dtype = r.w.dtype();
        let mut w = f64_of(r.w)?;
        if let Some(ln_b) = ln_b {
            let (_, out) = w.dims2()?;
            let add = f64_of(ln_b)?.unsqueeze(0)?.matmul(&w)?.squeeze(0)?;
            let bias = match r.b.as_ref() {
                Some(b) => (f64_of(b)? + add)?,
                None => {
                    let zero = Tensor::zeros(out, DType::F64, w.device())?;
                    (zero + add)?
                }
            };
            *r.b = Some(bias.to_dtype(dtype)?);
        }
        if let Some(ln_w) = ln_w {
            w = w.broadcast_mul(&f64_of(ln_w)?.unsqueeze(1)?)?;
        }
        if center {
            w = w.broadcast_sub(&w.mean_keepdim(0)?)?;
        }
        *r.w = w.to_dtype(dtype)?;
    }
    Ok(())
}

/// Take a norm's parameters out for folding, leaving the parameter-free norm behind. RMSNorm
/// has no bias to fold: its `b` (unused by RMSNorm) is left alone.
fn take_norm(n: &mut NormWeights, kind: NormKind) -> (Option<Tensor>, Option<Tensor>) {
    let w = n.w.take();
    let b = match kind {
        NormKind::LayerNorm => n.b.take(),
        _ => None,
    };
    (w, b)
}

/// See [`ProcessOptions::fold_ln`].
fn fold_ln(cfg: &mut ModelConfig, w: &mut Weights) -> Result<()> {
    let kind = cfg.norm;
    let center = match kind {
        NormKind::LayerNorm => true,
        NormKind::RmsNorm => false,
        NormKind::None => return Ok(()),
    };
    let attn_only = cfg.attn_only;
    for (l, block) in w.blocks.iter_mut().enumerate() {
        let (ln_w, ln_b) = take_norm(&mut block.ln1, kind);
        let a = &mut block.attn;
        let readers = vec![
            Reader {
                w: a.w_q.dense_mut()?,
                b: &mut a.b_q,
            },
            Reader {
                w: a.w_k.dense_mut()?,
                b: &mut a.b_k,
            },
            Reader {
                w: a.w_v.dense_mut()?,
                b: &mut a.b_v,
            },
        ];
        fold_into(readers, ln_w.as_ref(), ln_b.as_ref(), center)?;

        if attn_only {
            continue;
        }
        let m = block
            .mlp
            .as_mut()
            .ok_or_else(|| Error::Unsupported(format!("fold_ln: block {l} has no MLP weights")))?;
        let (ln_w, ln_b) = take_norm(&mut block.ln2, kind);
        let mut readers = vec![Reader {
            w: m.w_in.dense_mut()?,
            b: &mut m.b_in,
        }];
        if let Some(g) = m.w_gate.as_mut() {
            readers.push(Reader {
                w: g.dense_mut()?,
                b: &mut m.b_gate,
            });
        }
        fold_into(readers, ln_w.as_ref(), ln_b.as_ref(), center)?;
    }

    untie(cfg, w)?;
    let (ln_w, ln_b) = take_norm(&mut w.ln_final, kind);
    let w_u = w
        .w_u
        .as_mut()
        .ok_or_else(|| Error::Unsupported("fold_ln: no unembedding after untying".into()))?;
    let readers = vec![Reader {
        w: w_u,
        b: &mut w.b_u,
    }];
    fold_into(readers, ln_w.as_ref(), ln_b.as_ref(), center)
}

/// See [`ProcessOptions::center_writing_weights`]; the caller checks it applies.
fn center_writing_weights(cfg: &mut ModelConfig, w: &mut Weights) -> Result<()> {
    untie(cfg, w)?;
    w.w_e = center_last(&w.w_e)?;
    if let Some(p) = w.w_pos.as_mut() {
        *p = center_last(p)?;
    }
    for block in w.blocks.iter_mut() {
        let a = &mut block.attn;
        let w_o = a.w_o.dense_mut()?;
        *w_o = center_last(w_o)?;
        if let Some(b) = a.b_o.as_mut() {
            *b = center_last(b)?;
        }
        if let Some(m) = block.mlp.as_mut() {
            let w_out = m.w_out.dense_mut()?;
            *w_out = center_last(w_out)?;
            if let Some(b) = m.b_out.as_mut() {
                *b = center_last(b)?;
            }
        }
    }
    Ok(())
}

/// See [`ProcessOptions::center_unembed`]; the caller checks it applies.
fn center_unembed(cfg: &mut ModelConfig, w: &mut Weights) -> Result<()> {
    untie(cfg, w)?;
    if let Some(u) = w.w_u.as_mut() {
        // `W_U` is `[d_model, d_vocab]`: the vocabulary is the last dimension.
        *u = center_last(u)?;
    }
    if let Some(b) = w.b_u.as_mut() {
        *b = center_last(b)?;
    }
    Ok(())
}

/// See [`ProcessOptions::fold_value_biases`].
fn fold_value_biases(cfg: &ModelConfig, w: &mut Weights) -> Result<()> {
    let (h, kvh, dh, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model);
    let rep = cfg.kv_repeat();
    for block in w.blocks.iter_mut() {
        let a = &mut block.attn;
        let Some(b_v) = a.b_v.take() else {
            continue;
        };
        let w_o = a.w_o.dense_mut()?;
        let dtype = w_o.dtype();
        let dev = w_o.device().clone();
        // [n_kv_heads, d_head] -> [n_heads, d_head]: query head q reads kv head q / rep.
        let b_v = f64_of(&b_v)?.reshape((kvh, dh))?;
        let kv_of_head: Vec<u32> = (0..h).map(|q| (q / rep) as u32).collect();
        let idx = Tensor::from_vec(kv_of_head, h, &dev)?;
        let b_v = b_v.index_select(&idx, 0)?.reshape((1, h * dh))?;
        let add = b_v.matmul(&f64_of(w_o)?)?.squeeze(0)?;
        let b_o = match a.b_o.as_ref() {
            Some(b) => (f64_of(b)? + add)?,
            None => (Tensor::zeros(d, DType::F64, &dev)? + add)?,
        };
        a.b_o = Some(b_o.to_dtype(dtype)?);
    }
    Ok(())
}
