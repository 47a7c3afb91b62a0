//! Evaluating SAEs on a model (docs/sae.md §Metrics): the reconstruction metrics of
//! [`crate::metrics`] on held-out activations, and the downstream ones — the model's
//! next-token cross-entropy with the reconstruction spliced in at the hook, against zero and
//! mean ablation of the hook, and the KL divergence to the clean model.
//!
//! Definitions, over every position `p` of every evaluated sequence that has a next token
//! (`p < context − 1`), every position spliced:
//! - `CE = mean_p −log softmax(logits_p)[t_{p+1}]`, accumulated in f64;
//! - `CE recovered = (CE_ablated − CE_sae) / (CE_ablated − CE_clean)` (a ratio of means), for
//!   zero ablation (the hook's activation replaced by 0) and mean ablation (by the training
//!   activations' mean);
//! - `KL = mean_p Σ_v p_clean(v) (log p_clean(v) − log p_sae(v))`.
//!
//! A transcoder reads `hook` and replaces `hook_out` (its prediction of that activation).
//! With `exclude_special`, the positions the SAE was not trained on ([`excluded`]: special
//! tokens and each sequence's first position) keep their clean activation in every spliced
//! pass, ablations included; they are still scored.

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::Context as _;
use candle_core::{DType, Tensor};
use interplab_core::loader::LoadedModel;
use interplab_core::model::{Hooks, Input, NameFilter, RunOptions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::metrics::{ce_loss_recovered, Accumulator, Metrics};
use crate::store::{excluded, hook_layer, HarvestSpec, Harvester};
use crate::Sae;

/// Downstream metrics of one SAE.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Downstream {
    /// Positions scored.
    pub tokens: u64,
    pub ce_clean: f64,
    pub ce_sae: f64,
    pub ce_zero_ablation: f64,
    pub ce_mean_ablation: f64,
    /// `(CE_zero − CE_sae) / (CE_zero − CE_clean)`.
    pub ce_recovered_zero: f64,
    /// `(CE_mean − CE_sae) / (CE_mean − CE_clean)`.
    pub ce_recovered_mean: f64,
    /// Mean KL(clean ‖ spliced) per position, nats.
    pub kl_sae: f64,
}

/// Reconstruction and downstream metrics of one SAE.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evaluation {
    pub metrics: Metrics,
    pub downstream: Downstream,
}

/// The reconstruction metrics of each SAE (all reading `spec.hook`, targets at `spec.hook_out`
/// for transcoders) on the rows of `seqs`, and the mean target row.
pub fn reconstruction(
    m: &LoadedModel,
    saes: &[&Sae],
    spec: &HarvestSpec,
    seqs: &[Vec<u32>],
) -> anyhow::Result<(Vec<Metrics>, Vec<f32>)> {
    let h = Harvester::new(m, spec.clone())?;
    for s in saes {
        check_widths(s, h.d_in, h.d_out, spec)?;
    }
    let mut acc: Vec<Accumulator> = saes
        .iter()
        .map(|s| Accumulator::new(s.d_out, s.d_sae))
        .collect();
    for (i, chunk) in seqs.chunks(spec.batch_sequences).enumerate() {
        let rows = h.harvest(chunk, i * spec.batch_sequences)?;
        let target = if spec.hook_out.is_some() {
            &rows.y
        } else {
            &rows.x
        };
        for (a, s) in acc.iter_mut().zip(saes) {
            let (codes, rec) = s.forward(&rows.x);
            a.add(target, &rec, &codes);
        }
    }
    let mean = acc.first().map(Accumulator::mean).unwrap_or_default();
    Ok((acc.iter().map(Accumulator::finish).collect(), mean))
}

/// An SAE's widths against the hooks', as a clear error.
pub fn check_widths(
    sae: &Sae,
    d_in: usize,
    d_out: usize,
    spec: &HarvestSpec,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        sae.d_in == d_in,
        "the SAE reads {} dimensions but `{}` has {d_in}",
        sae.d_in,
        spec.hook
    );
    if let Some(o) = &spec.hook_out {
        anyhow::ensure!(
            sae.d_out == d_out,
            "the transcoder writes {} dimensions but `{o}` has {d_out}",
            sae.d_out
        );
    }
    Ok(())
}

/// Per-position statistics of one batch's logits against the clean ones.
struct Scored {
    nll: f64,
    kl: f64,
}

/// Log-probabilities of each row of `logits` (`[rows, vocab]`, f32) in f64-accumulated form:
/// returns per row the log-sum-exp.
fn row_lse(row: &[f32]) -> f64 {
    let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let s: f64 = row.iter().map(|&v| (v as f64 - mx).exp()).sum();
    mx + s.ln()
}

/// Sum of NLL of the targets and of KL(clean ‖ this) over rows with a target.
fn score(
    logits: &[f32],
    clean: Option<(&[f32], &[f64])>,
    targets: &[Option<u32>],
    vocab: usize,
) -> Scored {
    let parts: Vec<(f64, f64)> = targets
        .par_iter()
        .enumerate()
        .filter_map(|(r, t)| {
            let t = (*t)?;
            let row = &logits[r * vocab..(r + 1) * vocab];
            let lse = row_lse(row);
            let nll = lse - row[t as usize] as f64;
            let kl = match clean {
                None => 0.0,
                Some((c, c_lse)) => {
                    let crow = &c[r * vocab..(r + 1) * vocab];
                    let cl = c_lse[r];
                    crow.iter()
                        .zip(row)
                        .map(|(&a, &b)| {
                            let lpa = a as f64 - cl;
                            let lpb = b as f64 - lse;
                            lpa.exp() * (lpa - lpb)
                        })
                        .sum::<f64>()
                }
            };
            Some((nll, kl))
        })
        .collect();
    Scored {
        nll: parts.iter().map(|p| p.0).sum(),
        kl: parts.iter().map(|p| p.1).sum(),
    }
}

/// How an activation is replaced.
enum Replace<'s> {
    Zero,
    Mean(&'s [f32]),
    Sae(&'s Sae),
}

/// CE, CE recovered and KL of each SAE spliced in at its hook, on `seqs` (all of one length),
/// `batch` sequences per pass. `mean` is the training activations' mean at the replaced hook
/// (`hook_out` for transcoders).
pub fn downstream(
    m: &LoadedModel,
    saes: &[&Sae],
    spec: &HarvestSpec,
    seqs: &[Vec<u32>],
    mean: &[f32],
    batch: usize,
) -> anyhow::Result<Vec<Downstream>> {
    let model = &m.model;
    let names = model.hook_names();
    for n in std::iter::once(&spec.hook).chain(spec.hook_out.iter()) {
        anyhow::ensure!(
            names.iter().any(|a| a == n),
            "hook `{n}` does not exist in this model"
        );
    }
    let replaced = spec.hook_out.clone().unwrap_or_else(|| spec.hook.clone());
    // Splicing a resid_post (or the next resid_pre) restarts from the next block.
    let restart = hook_layer(&spec.hook)
        .filter(|&l| spec.hook_out.is_none() && spec.hook == format!("blocks.{l}.hook_resid_post"));
    let n_cases = 2 + saes.len();
    let mut nll = vec![0.0f64; n_cases + 1];
    let mut kl = vec![0.0f64; n_cases + 1];
    let mut count = 0u64;
    let vocab = model.cfg.d_vocab;
    for chunk in seqs.chunks(batch.max(1)) {
        let (b, p) = (chunk.len(), chunk[0].len());
        let flat: Vec<u32> = chunk.iter().flatten().copied().collect();
        let tokens = Tensor::from_vec(flat, (b, p), model.device())?;
        let targets: Vec<Option<u32>> = (0..b * p)
            .map(|r| {
                let (s, pos) = (r / p, r % p);
                (pos + 1 < p).then(|| chunk[s][pos + 1])
            })
            .collect();
        count += targets.iter().filter(|t| t.is_some()).count() as u64;
        let keep: Vec<bool> = (0..b * p)
            .map(|r| spec.exclude_special && excluded(m, r % p, chunk[r / p][r % p]))
            .collect();
        // Clean pass, caching the hook when a restart is possible.
        let cache_filter = NameFilter::new(&[replaced.clone()]);
        let (clean_logits, cache) = model.run(
            Input::Tokens(&tokens),
            &RunOptions::default(),
            None,
            restart.is_some().then_some(&cache_filter),
        )?;
        let clean: Vec<f32> = clean_logits
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let clean_lse: Vec<f64> = clean.par_chunks(vocab).map(row_lse).collect();
        let s = score(&clean, None, &targets, vocab);
        nll[0] += s.nll;
        let mut cases: Vec<Replace> = vec![Replace::Zero, Replace::Mean(mean)];
        cases.extend(saes.iter().map(|s| Replace::Sae(s)));
        for (ci, case) in cases.iter().enumerate() {
            let logits = match restart {
                Some(l) => {
                    let act = cache.get(&replaced)?;
                    let new = replace_tensor(act, None, case, &keep)?;
                    let opts = RunOptions {
                        start_at_layer: Some(l + 1),
                        ..Default::default()
                    };
                    model.run(Input::Resid(&new), &opts, None, None)?.0
                }
                None => spliced_run(m, &tokens, spec, case, &keep)?,
            };
            let v: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            let s = score(&v, Some((&clean, &clean_lse)), &targets, vocab);
            nll[ci + 1] += s.nll;
            kl[ci + 1] += s.kl;
        }
    }
    let n = count.max(1) as f64;
    let ce: Vec<f64> = nll.iter().map(|v| v / n).collect();
    Ok((0..saes.len())
        .map(|i| Downstream {
            tokens: count,
            ce_clean: ce[0],
            ce_sae: ce[3 + i],
            ce_zero_ablation: ce[1],
            ce_mean_ablation: ce[2],
            ce_recovered_zero: ce_loss_recovered(ce[0], ce[3 + i], ce[1]),
            ce_recovered_mean: ce_loss_recovered(ce[0], ce[3 + i], ce[2]),
            kl_sae: kl[3 + i] / n,
        })
        .collect())
}

/// `act` (`[b, p, d]`) replaced as `case` says, except the rows flagged in `keep`; `input` is
/// a transcoder's input activation.
fn replace_tensor(
    act: &Tensor,
    input: Option<&Tensor>,
    case: &Replace,
    keep: &[bool],
) -> anyhow::Result<Tensor> {
    let shape = act.dims().to_vec();
    let d = *shape.last().context("a scalar activation")?;
    let rows = act.elem_count() / d;
    let out: Vec<f32> = match case {
        Replace::Zero => vec![0.0; rows * d],
        Replace::Mean(mu) => {
            anyhow::ensure!(
                mu.len() == d,
                "mean of width {} for a hook of width {d}",
                mu.len()
            );
            mu.iter().copied().cycle().take(rows * d).collect()
        }
        Replace::Sae(sae) => {
            let x: Vec<f32> = input
                .unwrap_or(act)
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            anyhow::ensure!(
                x.len() == rows * sae.d_in,
                "the SAE reads {} dimensions, the hook has {}",
                sae.d_in,
                x.len() / rows
            );
            sae.forward(&x).1
        }
    };
    let mut out = out;
    if keep.iter().any(|&k| k) {
        let orig: Vec<f32> = act.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for (r, _) in keep.iter().enumerate().filter(|(_, &k)| k) {
            out[r * d..(r + 1) * d].copy_from_slice(&orig[r * d..(r + 1) * d]);
        }
    }
    Ok(Tensor::from_vec(out, shape, act.device())?.to_dtype(act.dtype())?)
}

/// A full forward with the replacement done by hooks.
fn spliced_run(
    m: &LoadedModel,
    tokens: &Tensor,
    spec: &HarvestSpec,
    case: &Replace,
    keep: &[bool],
) -> anyhow::Result<Tensor> {
    let input: Rc<RefCell<Option<Tensor>>> = Rc::new(RefCell::new(None));
    let mut hooks = Hooks::new();
    let err: Rc<RefCell<Option<anyhow::Error>>> = Rc::new(RefCell::new(None));
    match &spec.hook_out {
        Some(out) => {
            let cell = input.clone();
            hooks.add(spec.hook.as_str(), move |t, _| {
                *cell.borrow_mut() = Some(t.clone());
                Ok(None)
            });
            let cell = input.clone();
            let e = err.clone();
            hooks.add(out.as_str(), move |t, _| {
                let x = cell.borrow_mut().take();
                match replace_tensor(t, x.as_ref(), case, keep) {
                    Ok(v) => Ok(Some(v)),
                    Err(er) => {
                        *e.borrow_mut() = Some(er);
                        Ok(None)
                    }
                }
            });
        }
        None => {
            let e = err.clone();
            hooks.add(spec.hook.as_str(), move |t, _| {
                match replace_tensor(t, None, case, keep) {
                    Ok(v) => Ok(Some(v)),
                    Err(er) => {
                        *e.borrow_mut() = Some(er);
                        Ok(None)
                    }
                }
            });
        }
    }
    let logits = m.model.run_with_hooks(tokens, &mut hooks)?;
    drop(hooks);
    if let Some(e) = err.borrow_mut().take() {
        return Err(e);
    }
    Ok(logits)
}
