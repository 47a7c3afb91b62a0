//! Logit lens and direct logit attribution.
//!
//! **Logit lens** (nostalgebraist 2020): the residual stream after each layer (and the
//! embedding) is decoded as if it were the last one — `ln_final`, with its scale recomputed
//! from that residual, then the unembedding — giving next-token predictions per layer.
//!
//! **Direct logit attribution** (TransformerLens' `cache.apply_ln_to_stack` convention): the
//! final residual at a position is a sum of components (the embedding `blocks.0.hook_resid_pre`,
//! every `hook_attn_out` and every `hook_mlp_out`), so the logit of a token, or a logit
//! difference, splits into one term per component: centre the component (LayerNorm only; RMSNorm
//! does not centre), divide by the final norm's *cached* scale (`ln_final.hook_scale` of the
//! real run, so the terms add up), multiply by `ln_final`'s weight and project on the
//! unembedding direction `W_U[:, token]` (minus `W_U[:, contrast]`). The norm bias and `b_U`
//! form one constant term. Each layer's attention term splits further into heads,
//! `z_h · W_O[h]`, plus the output bias. By construction the terms sum to the model's logit
//! (difference); the tests hold that to float tolerance. Models with post-sublayer norms
//! (Gemma 3) are not split per head.

use candle_core::{DType, Tensor};
use interplab_core::config::NormKind;
use interplab_core::model::{
    log_softmax, HookName, HookedTransformer, Input, NameFilter, RunOptions,
};
use interplab_core::{Error, Result};
use serde::Serialize;

/// One layer of the logit lens.
#[derive(Debug, Clone, Serialize)]
pub struct LensLayer {
    /// `embed`, or the layer whose `resid_post` was decoded.
    pub name: String,
    /// The `k` most likely next tokens at the chosen position, with probabilities.
    pub top: Vec<(u32, f64)>,
    /// Probability of the target at every position (when a target is given).
    pub target_prob: Vec<f64>,
    /// Rank of the target at the chosen position (0 = top).
    pub target_rank: Option<usize>,
}

/// Decode every layer's residual stream at `position` (and the target's probability at every
/// position).
pub fn logit_lens(
    model: &HookedTransformer,
    tokens: &[u32],
    position: usize,
    target: Option<u32>,
    k: usize,
) -> Result<Vec<LensLayer>> {
    check(model, tokens, position, target)?;
    let n = tokens.len();
    let t = Tensor::new(tokens, model.device())?.unsqueeze(0)?;
    let filter = accumulated_resid_filter();
    let (_, cache) = model.run(
        Input::Tokens(&t),
        &RunOptions::default(),
        None,
        Some(&filter),
    )?;
    let mut names = vec![("embed".to_string(), HookName::ResidPre(0).to_string())];
    for l in 0..model.cfg.n_layers {
        names.push((format!("{l}"), HookName::ResidPost(l).to_string()));
    }
    let mut out = Vec::new();
    for (name, hook) in names {
        let resid = cache.get(&hook)?.squeeze(0)?; // [n, d]
        let lp: Vec<Vec<f32>> =
            log_softmax(&model.unembed_resid(&resid)?.to_dtype(DType::F32)?)?.to_vec2()?;
        let row = &lp[position];
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top = idx
            .iter()
            .take(k)
            .map(|&i| (i as u32, (row[i] as f64).exp()))
            .collect();
        let (target_prob, target_rank) = match target {
            Some(tg) => {
                let tv = row[tg as usize];
                (
                    (0..n).map(|p| (lp[p][tg as usize] as f64).exp()).collect(),
                    Some(row.iter().filter(|&&x| x > tv).count()),
                )
            }
            None => (Vec::new(), None),
        };
        out.push(LensLayer {
            name,
            top,
            target_prob,
            target_rank,
        });
    }
    Ok(out)
}

/// The logit lens's logit of `token` (minus `contrast`'s) at `position`, per layer: the
/// embedding (`blocks.0.hook_resid_pre`), then every layer's `resid_post`, each through
/// `ln_final` with its scale recomputed from that residual (TransformerLens'
/// `accumulated_resid(apply_ln=True)`) and the unembedding (with `b_U`, which TransformerLens'
/// residual directions leave out; SmolLM2 has none).
pub fn logit_lens_diff(
    model: &HookedTransformer,
    tokens: &[u32],
    position: usize,
    token: u32,
    contrast: Option<u32>,
) -> Result<Vec<f64>> {
    check(model, tokens, position, Some(token))?;
    if let Some(c) = contrast {
        check(model, tokens, position, Some(c))?;
    }
    let t = Tensor::new(tokens, model.device())?.unsqueeze(0)?;
    let filter = accumulated_resid_filter();
    let (_, cache) = model.run(
        Input::Tokens(&t),
        &RunOptions::default(),
        None,
        Some(&filter),
    )?;
    let mut hooks = vec![HookName::ResidPre(0).to_string()];
    hooks.extend((0..model.cfg.n_layers).map(|l| HookName::ResidPost(l).to_string()));
    let mut out = Vec::with_capacity(hooks.len());
    for hook in hooks {
        let resid = cache.get(&hook)?.get(0)?.narrow(0, position, 1)?; // [1, d]
        let logits: Vec<f64> = model
            .unembed_resid(&resid)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        out.push(logits[token as usize] - contrast.map_or(0.0, |c| logits[c as usize]));
    }
    Ok(out)
}

/// The direct contributions to one logit (difference) at one position.
#[derive(Debug, Clone, Serialize)]
pub struct DirectLogitAttribution {
    /// `(component, contribution)`: `embed`, then `L attn` and `L mlp` per layer.
    pub components: Vec<(String, f64)>,
    /// `heads[layer][head]`: each head's share of its layer's attention term (empty for models
    /// with post-sublayer norms).
    pub heads: Vec<Vec<f64>>,
    /// Each layer's attention output bias term.
    pub head_bias: Vec<f64>,
    /// The final norm's bias and the unembedding bias.
    pub constant: f64,
    /// Sum of every term.
    pub total: f64,
    /// The model's own logit (difference), for comparison.
    pub logit: f64,
}

/// Split the logit of `token` (minus `contrast`'s) at `position` into direct contributions.
pub fn direct_logit_attribution(
    model: &HookedTransformer,
    tokens: &[u32],
    position: usize,
    token: u32,
    contrast: Option<u32>,
) -> Result<DirectLogitAttribution> {
    check(model, tokens, position, Some(token))?;
    if let Some(c) = contrast {
        check(model, tokens, position, Some(c))?;
    }
    let c = &model.cfg;
    let t = Tensor::new(tokens, model.device())?.unsqueeze(0)?;
    let filter = NameFilter::new(&[
        HookName::ResidPre(0).to_string(),
        HookName::AttnOut(0).every_layer(),
        HookName::MlpOut(0).every_layer(),
        HookName::AttnZ(0).every_layer(),
        HookName::LnFinalScale.to_string(),
    ]);
    let (logits, cache) = model.run(
        Input::Tokens(&t),
        &RunOptions::default(),
        None,
        Some(&filter),
    )?;
    let f64v =
        |x: &Tensor| -> Result<Vec<f64>> { Ok(x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?) };
    let lrow = f64v(&logits.get(0)?.get(position)?)?;
    let logit = lrow[token as usize] - contrast.map_or(0.0, |c| lrow[c as usize]);
    // The unembedding direction, with ln_final's weight folded in.
    let w_u = model.weights.unembed()?.to_dtype(DType::F64)?; // [d, vocab]
    let col = |i: u32| -> Result<Vec<f64>> { f64v(&w_u.narrow(1, i as usize, 1)?) };
    let mut dir = col(token)?;
    if let Some(cn) = contrast {
        for (d, x) in dir.iter_mut().zip(col(cn)?) {
            *d -= x;
        }
    }
    let unweighted = dir.clone();
    if let Some(w) = &model.weights.ln_final.w {
        for (d, x) in dir.iter_mut().zip(f64v(w)?) {
            *d *= x;
        }
    }
    let scale = if c.norm == NormKind::None {
        1.0
    } else {
        f64v(
            &cache
                .get(&HookName::LnFinalScale.to_string())?
                .get(0)?
                .get(position)?,
        )?[0]
    };
    let centre = c.norm == NormKind::LayerNorm;
    let term = |v: Vec<f64>| -> f64 {
        let mean = if centre {
            v.iter().sum::<f64>() / v.len() as f64
        } else {
            0.0
        };
        v.iter().zip(&dir).map(|(x, d)| (x - mean) * d).sum::<f64>() / scale
    };
    let at = |name: &str| -> Result<Vec<f64>> { f64v(&cache.get(name)?.get(0)?.get(position)?) };
    let mut components = vec![(
        "embed".to_string(),
        term(at(&HookName::ResidPre(0).to_string())?),
    )];
    let mut heads = Vec::new();
    let mut head_bias = Vec::new();
    for l in 0..c.n_layers {
        components.push((
            format!("{l} attn"),
            term(at(&HookName::AttnOut(l).to_string())?),
        ));
        if !c.attn_only {
            components.push((
                format!("{l} mlp"),
                term(at(&HookName::MlpOut(l).to_string())?),
            ));
        }
        if !c.post_norms {
            let z = cache
                .get(&HookName::AttnZ(l).to_string())?
                .get(0)?
                .get(position)?; // [h, dh]
            let wo = model.weights.blocks[l].attn.w_o_heads(c.n_heads)?; // [h, dh, d]
            let per = z.unsqueeze(1)?.matmul(&wo)?.squeeze(1)?; // [h, d]
            heads.push(
                (0..c.n_heads)
                    .map(|h| Ok(term(f64v(&per.get(h)?)?)))
                    .collect::<Result<Vec<_>>>()?,
            );
            head_bias.push(match &model.weights.blocks[l].attn.b_o {
                Some(b) => term(f64v(b)?),
                None => 0.0,
            });
        }
    }
    let mut constant = 0.0;
    if let Some(b) = &model.weights.ln_final.b {
        constant += f64v(b)?
            .iter()
            .zip(&unweighted)
            .map(|(x, d)| x * d)
            .sum::<f64>();
    }
    if let Some(bu) = &model.weights.b_u {
        let bu = f64v(bu)?;
        constant += bu[token as usize] - contrast.map_or(0.0, |c| bu[c as usize]);
    }
    let total = components.iter().map(|c| c.1).sum::<f64>() + constant;
    Ok(DirectLogitAttribution {
        components,
        heads,
        head_bias,
        constant,
        total,
        logit,
    })
}

fn check(
    model: &HookedTransformer,
    tokens: &[u32],
    position: usize,
    target: Option<u32>,
) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::Input("empty prompt".into()));
    }
    if position >= tokens.len() {
        return Err(Error::Input(format!(
            "position {position} is past the prompt's {} tokens",
            tokens.len()
        )));
    }
    if let Some(t) = target {
        if t as usize >= model.cfg.d_vocab {
            return Err(Error::Input(format!("token {t} is out of the vocabulary")));
        }
    }
    if model.cfg.final_logit_softcap.is_some() {
        return Err(Error::Unsupported(
            "direct logit attribution with a final logit soft-cap".into(),
        ));
    }
    Ok(())
}

/// The embedding (`blocks.0.hook_resid_pre`) and every layer's `hook_resid_post`: the
/// residual streams the lens decodes.
fn accumulated_resid_filter() -> NameFilter {
    NameFilter::new(&[
        HookName::ResidPre(0).to_string(),
        HookName::ResidPost(0).every_layer(),
    ])
}
