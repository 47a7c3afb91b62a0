//! Patching between two prompts of different lengths, at their final positions: the residual
//! stream entering each layer and each head's output (`hook_z`) at the position where the
//! answer is read, patched from the clean prompt's run into the corrupted prompt's run.
//!
//! [`crate::patching`] needs prompts of equal length (it patches position by position). Two
//! conditions of a behavioural eval — "It is okay to …, isn't it?" against "It is not okay to
//! …, is it?", or the same question under two system prompts — tokenise to different lengths,
//! and the only position that aligns is the last one, where the answer's logit difference
//! `ld = logit[answer] − logit[wrong]` is read. Reported values are normalised as in
//! [`crate::patching`]: `(ld_patched − ld_corrupted) / (ld_clean − ld_corrupted)`, the fraction
//! of the logit-difference gap restored (0 = the corrupted answer, 1 = the clean one).
//!
//! Exactness: a patch at the final position cannot change earlier positions (causal attention),
//! so the corrupted run's keys and values of positions `0..n−1` are reused and only the final
//! position is recomputed, from the patched layer on. [`FinalPatching::patch_naive`] is the
//! plain definition (a full corrupted forward with one hook) that the tests hold this to.
//!
//! Attribution patching ([`FinalPatching::attribution`]) is the first-order estimate of the
//! same patches: `(a_clean − a_corrupted) · ∂ld/∂a` at the final position, the gradient taken
//! on the corrupted run, normalised by the same gap.
//!
//! [`answer_logit_diffs`] measures `ld` on many prompts with a set of heads ablated (zero, or
//! the head's mean `z` over every position of the given prompts) at every position, for the
//! effect of ablating the heads that carry a patching effect on a whole eval.

use candle_core::{DType, Tensor};
use interplab_core::model::{
    HookName, HookPoint, HookedTransformer, Hooks, Input, KvCache, NameFilter, RunOptions,
};
use interplab_core::{Error, Result};
use serde::Serialize;

/// A prompt and the two tokens whose logit difference at its last position is the answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerPrompt {
    pub tokens: Vec<u32>,
    /// The token of the answer measured as positive (" Yes").
    pub answer: u32,
    /// The token of the other answer (" No").
    pub wrong: u32,
}

/// The clean and corrupted runs of one pair of prompts, prepared once.
pub struct FinalPatching<'m> {
    model: &'m HookedTransformer,
    pub clean: AnswerPrompt,
    pub corrupted: AnswerPrompt,
    /// Per layer, the clean run's `resid_pre` `[1, 1, d_model]` and `z` `[1, 1, head, d_head]`
    /// at the final position.
    clean_resid: Vec<Tensor>,
    clean_z: Vec<Tensor>,
    corrupted_resid: Vec<Tensor>,
    corrupted_z: Vec<Tensor>,
    /// Keys and values of the corrupted prompt's positions before the last.
    corrupted_kv: KvCache,
    /// Raw logit differences of the unpatched runs.
    pub clean_logit_diff: f64,
    pub corrupted_logit_diff: f64,
}

/// The final-position `resid_pre` and `z` of every layer, the last-position logit difference,
/// and (when asked) the KV cache of the positions before the last.
type FinalRun = (Vec<Tensor>, Vec<Tensor>, f64, Option<KvCache>);

fn run_final(model: &HookedTransformer, p: &AnswerPrompt, keep_kv: bool) -> Result<FinalRun> {
    let n = p.tokens.len();
    let dev = model.device();
    let nl = model.cfg.n_layers;
    let filter = NameFilter::new(&[
        HookName::ResidPre(0).every_layer(),
        HookName::AttnZ(0).every_layer(),
    ]);
    let mut resid = vec![None; nl];
    let mut z = vec![None; nl];
    let mut kv = KvCache::default();
    let t = Tensor::from_vec(p.tokens.clone(), (1, n), dev)?;
    let logits = {
        let mut hooks = Hooks::new();
        hooks.add(filter, |x: &Tensor, h: HookPoint| {
            let l = h.layer.unwrap_or(0);
            let last = x.narrow(1, n - 1, 1)?.contiguous()?;
            if h.name.ends_with("hook_resid_pre") {
                resid[l] = Some(last);
            } else {
                z[l] = Some(last);
            }
            Ok(None)
        });
        model.forward_with_kv(&t, &mut kv, None, Some(&mut hooks))?
    };
    let row: Vec<f32> = logits.get(0)?.get(n - 1)?.to_dtype(DType::F32)?.to_vec1()?;
    let ld = row[p.answer as usize] as f64 - row[p.wrong as usize] as f64;
    let unwrap = |v: Vec<Option<Tensor>>, what: &str| -> Result<Vec<Tensor>> {
        v.into_iter()
            .map(|t| t.ok_or_else(|| Error::Input(format!("the forward emitted no {what}"))))
            .collect()
    };
    let kv = if keep_kv && n > 1 {
        Some(kv.prefix(n - 1, 1)?)
    } else {
        None
    };
    Ok((
        unwrap(resid, "resid_pre")?,
        unwrap(z, "attn.hook_z")?,
        ld,
        kv,
    ))
}

fn check_head(h: usize, nh: usize) -> Result<()> {
    if h >= nh {
        return Err(Error::Input(format!("head {h} out of range (0..{nh})")));
    }
    Ok(())
}

fn check_prompt(model: &HookedTransformer, p: &AnswerPrompt, what: &str) -> Result<()> {
    if p.tokens.is_empty() {
        return Err(Error::Input(format!("the {what} prompt is empty")));
    }
    let v = model.cfg.d_vocab as u32;
    if p.answer >= v || p.wrong >= v || p.tokens.iter().any(|&t| t >= v) {
        return Err(Error::Input(format!(
            "the {what} prompt has a token outside the vocabulary ({v})"
        )));
    }
    if p.answer == p.wrong {
        return Err(Error::Input(format!(
            "the {what} prompt's answer and wrong tokens are the same ({})",
            p.answer
        )));
    }
    Ok(())
}

impl<'m> FinalPatching<'m> {
    /// Run both prompts once. Their lengths may differ; the two logit differences must not be
    /// equal (the normalised metric would be undefined).
    pub fn new(
        model: &'m HookedTransformer,
        clean: AnswerPrompt,
        corrupted: AnswerPrompt,
    ) -> Result<Self> {
        check_prompt(model, &clean, "clean")?;
        check_prompt(model, &corrupted, "corrupted")?;
        let (clean_resid, clean_z, clean_ld, _) = run_final(model, &clean, false)?;
        let (corrupted_resid, corrupted_z, corr_ld, kv) = run_final(model, &corrupted, true)?;
        if (clean_ld - corr_ld).abs() < 1e-6 {
            return Err(Error::Input(
                "clean and corrupted logit differences are equal: the normalised metric is \
                 undefined"
                    .into(),
            ));
        }
        Ok(FinalPatching {
            model,
            clean,
            corrupted,
            clean_resid,
            clean_z,
            corrupted_resid,
            corrupted_z,
            corrupted_kv: kv.unwrap_or_default(),
            clean_logit_diff: clean_ld,
            corrupted_logit_diff: corr_ld,
        })
    }

    /// The fraction of the gap a raw logit difference restores.
    pub fn normalise(&self, ld: f64) -> f64 {
        (ld - self.corrupted_logit_diff) / (self.clean_logit_diff - self.corrupted_logit_diff)
    }

    fn n_heads(&self) -> usize {
        self.model.cfg.n_heads
    }

    /// Run the corrupted prompt's final position from block `layer` on, `batch` rows at once,
    /// starting from `resid` `[batch, 1, d_model]`, with `hooks`; the raw logit difference per
    /// row.
    fn run_last(
        &self,
        resid: &Tensor,
        layer: usize,
        hooks: Option<&mut Hooks>,
    ) -> Result<Vec<f64>> {
        let batch = resid.dim(0)?;
        let mut kv = if self.corrupted_kv.is_empty() {
            KvCache::default()
        } else {
            self.corrupted_kv.prefix(self.corrupted_kv.len(), batch)?
        };
        let fin = self.model.run_resid_with_kv(resid, layer, &mut kv, hooks)?;
        let logits = self.model.unembed_resid(&fin.squeeze(1)?)?;
        let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        let (a, w) = (
            self.corrupted.answer as usize,
            self.corrupted.wrong as usize,
        );
        Ok(rows.iter().map(|r| r[a] as f64 - r[w] as f64).collect())
    }

    /// Patch the clean `resid_pre` of each layer at the final position: `values[layer]`,
    /// normalised.
    pub fn resid_by_layer(&self) -> Result<Vec<f64>> {
        let mut out = Vec::new();
        for l in 0..self.model.cfg.n_layers {
            let ld = self.run_last(&self.clean_resid[l], l, None)?[0];
            out.push(self.normalise(ld));
        }
        Ok(out)
    }

    /// Patch the clean `z` of each head, one at a time, at the final position:
    /// `values[layer][head]`, normalised.
    pub fn heads(&self) -> Result<Vec<Vec<f64>>> {
        let nh = self.n_heads();
        let mut out = Vec::new();
        for l in 0..self.model.cfg.n_layers {
            let resid = self.corrupted_resid[l].repeat((nh, 1, 1))?;
            // Row h takes head h's clean z.
            let mut mask = vec![0u8; nh * nh];
            for h in 0..nh {
                mask[h * nh + h] = 1;
            }
            let mask = Tensor::from_vec(mask, (nh, 1, nh, 1), self.model.device())?;
            let clean = self.clean_z[l].clone();
            let mut hooks = Hooks::new();
            hooks.add(
                NameFilter::new(&[HookName::AttnZ(l).to_string()]),
                |x: &Tensor, _| {
                    let c = clean.broadcast_as(x.dims())?;
                    Ok(Some(mask.broadcast_as(x.dims())?.where_cond(&c, x)?))
                },
            );
            let lds = self.run_last(&resid, l, Some(&mut hooks))?;
            out.push(lds.into_iter().map(|ld| self.normalise(ld)).collect());
        }
        Ok(out)
    }

    /// Patch the clean `z` of every head in `heads` (layer, head) together, at the final
    /// position; normalised.
    pub fn heads_together(&self, heads: &[(usize, usize)]) -> Result<f64> {
        let (nl, nh) = (self.model.cfg.n_layers, self.n_heads());
        if let Some(&(l, h)) = heads.iter().find(|&&(l, h)| l >= nl || h >= nh) {
            return Err(Error::Input(format!(
                "head {l}.{h} is outside the model ({nl} layers × {nh} heads)"
            )));
        }
        let Some(first) = heads.iter().map(|&(l, _)| l).min() else {
            return Ok(0.0);
        };
        let dev = self.model.device();
        let mut masks = Vec::new();
        for l in 0..nl {
            let mut m = vec![0u8; nh];
            for &(_, h) in heads.iter().filter(|&&(hl, _)| hl == l) {
                m[h] = 1;
            }
            masks.push(Tensor::from_vec(m, (1, 1, nh, 1), dev)?);
        }
        let names: Vec<String> = (first..nl)
            .map(|l| HookName::AttnZ(l).to_string())
            .collect();
        let mut hooks = Hooks::new();
        hooks.add(NameFilter::new(&names), |x: &Tensor, p: HookPoint| {
            let l = p.layer.unwrap_or(0);
            let c = self.clean_z[l].broadcast_as(x.dims())?;
            Ok(Some(masks[l].broadcast_as(x.dims())?.where_cond(&c, x)?))
        });
        let ld = self.run_last(&self.corrupted_resid[first], first, Some(&mut hooks))?[0];
        Ok(self.normalise(ld))
    }

    /// The plain definition: a full forward of the corrupted prompt with one hook that writes
    /// the clean final-position value of `name` (`blocks.L.hook_resid_pre`, or
    /// `blocks.L.attn.hook_z` with `head`) at the last position; normalised.
    pub fn patch_naive(&self, name: &HookName, head: Option<usize>) -> Result<f64> {
        self.patch_interpolated(name, head, 1.0)
    }

    /// [`Self::patch_naive`] writing `corrupted + alpha · (clean − corrupted)` instead: 0 at
    /// `alpha` = 0, the patch at 1, and its slope at 0 is what [`Self::attribution`] estimates.
    pub fn patch_interpolated(
        &self,
        name: &HookName,
        head: Option<usize>,
        alpha: f64,
    ) -> Result<f64> {
        let l = name
            .layer()
            .ok_or_else(|| Error::Input(format!("{name} is not a block hook")))?;
        let (clean, corr) = match (name, head) {
            (HookName::ResidPre(_), None) => {
                (self.clean_resid[l].clone(), self.corrupted_resid[l].clone())
            }
            (HookName::AttnZ(_), Some(h)) => {
                let nh = self.n_heads();
                check_head(h, nh)?;
                let c = self.corrupted_z[l].clone();
                let mut m = vec![0u8; nh];
                m[h] = 1;
                let m = Tensor::from_vec(m, (1, 1, nh, 1), self.model.device())?;
                (
                    m.broadcast_as(c.dims())?.where_cond(&self.clean_z[l], &c)?,
                    c,
                )
            }
            _ => {
                return Err(Error::Input(format!(
                    "naive patching supports resid_pre, or z with a head; not {name} {head:?}"
                )))
            }
        };
        let value = (&corr + ((clean - &corr)? * alpha)?)?;
        let n = self.corrupted.tokens.len();
        let t = Tensor::from_vec(self.corrupted.tokens.clone(), (1, n), self.model.device())?;
        let mut hooks = Hooks::new();
        hooks.add(NameFilter::new(&[name.to_string()]), |x: &Tensor, _| {
            let mut parts = Vec::new();
            if n > 1 {
                parts.push(x.narrow(1, 0, n - 1)?);
            }
            parts.push(value.clone());
            Ok(Some(Tensor::cat(&parts, 1)?))
        });
        let logits = self.model.run_with_hooks(&t, &mut hooks)?;
        let row: Vec<f32> = logits.get(0)?.get(n - 1)?.to_dtype(DType::F32)?.to_vec1()?;
        let ld =
            row[self.corrupted.answer as usize] as f64 - row[self.corrupted.wrong as usize] as f64;
        Ok(self.normalise(ld))
    }

    /// Attribution patching of the same sites: `(resid[layer], z[layer][head])`, each the
    /// normalised first-order estimate `(a_clean − a_corrupted) · ∂ld/∂a` at the final position,
    /// from one backward on the corrupted run.
    pub fn attribution(&self) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
        let model = self.model;
        let n = self.corrupted.tokens.len();
        let filter = NameFilter::new(&[
            HookName::ResidPre(0).every_layer(),
            HookName::AttnZ(0).every_layer(),
        ]);
        let t = Tensor::from_vec(self.corrupted.tokens.clone(), (1, n), model.device())?;
        let (a, w) = (
            self.corrupted.answer as usize,
            self.corrupted.wrong as usize,
        );
        let (_, _, grads) = model.hook_gradients(
            Input::Tokens(&t),
            &RunOptions::default(),
            &filter,
            |logits| {
                let last = logits.get(0)?.get(n - 1)?;
                Ok((last.get(a)? - last.get(w)?)?)
            },
        )?;
        let gap = self.clean_logit_diff - self.corrupted_logit_diff;
        let last_grad = |name: &HookName| -> Result<Tensor> {
            Ok(grads
                .get(&name.to_string())?
                .narrow(1, n - 1, 1)?
                .to_dtype(DType::F64)?)
        };
        let delta = |c: &Tensor, x: &Tensor| -> Result<Tensor> {
            Ok((c.to_dtype(DType::F64)? - x.to_dtype(DType::F64)?)?)
        };
        let mut resid = Vec::new();
        let mut heads = Vec::new();
        for l in 0..model.cfg.n_layers {
            let g = last_grad(&HookName::ResidPre(l))?;
            let d = delta(&self.clean_resid[l], &self.corrupted_resid[l])?;
            resid.push((d * g)?.sum_all()?.to_scalar::<f64>()? / gap);
            let g = last_grad(&HookName::AttnZ(l))?;
            let d = delta(&self.clean_z[l], &self.corrupted_z[l])?;
            // [1, 1, head, d_head] -> per head
            let per_head: Vec<f64> = (d * g)?.sum(3)?.flatten_all()?.to_vec1()?;
            heads.push(per_head.into_iter().map(|v| v / gap).collect());
        }
        Ok((resid, heads))
    }
}

/// How heads are removed in [`answer_logit_diffs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadAblation {
    /// `z` set to zero.
    Zero,
    /// `z` set to the head's mean over every position of the prompts measured.
    Mean,
}

/// The mean `z` of every head over every position of `prompts`: per layer `[head, d_head]`.
pub fn mean_z(model: &HookedTransformer, prompts: &[&[u32]]) -> Result<Vec<Tensor>> {
    let c = &model.cfg;
    let dev = model.device();
    let mut sums = vec![Tensor::zeros((c.n_heads, c.d_head), DType::F64, dev)?; c.n_layers];
    let mut count = 0usize;
    for p in prompts {
        if p.is_empty() {
            return Err(Error::Input("an empty prompt".into()));
        }
        let t = Tensor::from_vec(p.to_vec(), (1, p.len()), dev)?;
        let (_, cache) = model.run(
            Input::Tokens(&t),
            &RunOptions::default(),
            None,
            Some(&NameFilter::new(&[HookName::AttnZ(0).every_layer()])),
        )?;
        for (l, s) in sums.iter_mut().enumerate() {
            let z = cache
                .get(&HookName::AttnZ(l).to_string())?
                .squeeze(0)?
                .to_dtype(DType::F64)?;
            *s = (&*s + z.sum(0)?)?;
        }
        count += p.len();
    }
    if count == 0 {
        return Err(Error::Input("no prompts to average over".into()));
    }
    sums.into_iter()
        .map(|s| Ok((s / count as f64)?.to_dtype(model.dtype())?))
        .collect()
}

/// The last-position logit difference of each prompt, with the heads in `ablate` (layer, head)
/// replaced at every position: by zeros, or by `means` (from [`mean_z`]) for
/// [`HeadAblation::Mean`]. With no heads, the plain logit differences.
pub fn answer_logit_diffs(
    model: &HookedTransformer,
    prompts: &[AnswerPrompt],
    ablate: &[(usize, usize)],
    method: HeadAblation,
    means: Option<&[Tensor]>,
) -> Result<Vec<f64>> {
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    if let Some(&(l, h)) = ablate.iter().find(|&&(l, h)| l >= nl || h >= nh) {
        return Err(Error::Input(format!(
            "head {l}.{h} is outside the model ({nl} layers × {nh} heads)"
        )));
    }
    let means = match (method, means) {
        (HeadAblation::Mean, Some(m)) if m.len() == nl => Some(m),
        (HeadAblation::Mean, _) if !ablate.is_empty() => {
            return Err(Error::Input(
                "mean ablation needs the mean z of every layer".into(),
            ))
        }
        _ => None,
    };
    let dev = model.device();
    let mut masks = Vec::new();
    for l in 0..nl {
        let mut m = vec![0u8; nh];
        for &(_, h) in ablate.iter().filter(|&&(hl, _)| hl == l) {
            m[h] = 1;
        }
        masks.push(Tensor::from_vec(m, (1, 1, nh, 1), dev)?);
    }
    let mut layers: Vec<usize> = ablate.iter().map(|&(l, _)| l).collect();
    layers.sort_unstable();
    layers.dedup();
    let names: Vec<String> = layers
        .iter()
        .map(|&l| HookName::AttnZ(l).to_string())
        .collect();
    let mut out = Vec::with_capacity(prompts.len());
    for p in prompts {
        check_prompt(model, p, "measured")?;
        let n = p.tokens.len();
        let t = Tensor::from_vec(p.tokens.clone(), (1, n), dev)?;
        let mut hooks = Hooks::new();
        if !names.is_empty() {
            hooks.add(NameFilter::new(&names), |x: &Tensor, hp: HookPoint| {
                let l = hp.layer.unwrap_or(0);
                let with = match means {
                    Some(m) => m[l].unsqueeze(0)?.unsqueeze(0)?.broadcast_as(x.dims())?,
                    None => x.zeros_like()?,
                };
                Ok(Some(masks[l].broadcast_as(x.dims())?.where_cond(&with, x)?))
            });
        }
        let logits = model.run_with_hooks(&t, &mut hooks)?;
        let row: Vec<f32> = logits.get(0)?.get(n - 1)?.to_dtype(DType::F32)?.to_vec1()?;
        out.push(row[p.answer as usize] as f64 - row[p.wrong as usize] as f64);
    }
    Ok(out)
}
