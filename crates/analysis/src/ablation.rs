//! Zero, mean and resample ablation of attention heads over a corpus, ranked by the loss
//! increase they cause.
//!
//! For each head, its `hook_z` (`[batch, pos, head, d_head]`) is replaced at every position by
//! - `Zero`: zeros;
//! - `Mean`: the head's mean `z` over every position of every document (one pass first);
//! - `Resample`: the head's `z` from another document (chosen with the seed), at the same
//!   position (positions past that document's end wrap around it).
//!
//! The loss is the mean next-token cross-entropy (nats, f64) of a document; a head's effect is
//! the ablated minus the clean loss per document, averaged over documents, with the standard
//! error of that mean (sample standard deviation / √n_docs).
//!
//! Only what an ablation can change is recomputed: the clean run's `resid_pre` enters at the
//! head's layer (`start_at_layer`), and all heads of a layer are ablated side by side as one batch.

use candle_core::{DType, Tensor};
use interplab_core::model::{HookName, HookedTransformer, Hooks, Input, NameFilter, RunOptions};
use interplab_core::rng::SplitMix;
use interplab_core::{Error, Result};
use serde::Serialize;

use crate::stats::{mean_stderr, next_token_losses};

/// How a head's output is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AblationMethod {
    Zero,
    Mean,
    Resample { seed: u64 },
}

/// Loss increase per head: `[layer][head]`.
#[derive(Debug, Clone, Serialize)]
pub struct AblationResult {
    pub method: AblationMethod,
    pub n_docs: usize,
    pub n_tokens: usize,
    /// Mean clean loss over documents.
    pub clean_loss: f64,
    pub loss_increase: Vec<Vec<f64>>,
    pub stderr: Vec<Vec<f64>>,
}

impl AblationResult {
    /// The `k` heads whose ablation hurts most, as (layer, head, increase, stderr).
    pub fn top_k(&self, k: usize) -> Vec<(usize, usize, f64, f64)> {
        let mut all: Vec<(usize, usize, f64, f64)> = self
            .loss_increase
            .iter()
            .enumerate()
            .flat_map(|(l, r)| {
                r.iter()
                    .enumerate()
                    .map(move |(h, &v)| (l, h, v, self.stderr[l][h]))
            })
            .collect();
        all.sort_by(|a, b| b.2.total_cmp(&a.2));
        all.truncate(k);
        all
    }
}

/// Mean next-token loss of each batch row.
fn mean_losses(logits: &Tensor, tokens: &[u32]) -> Result<Vec<f64>> {
    Ok(next_token_losses(logits, tokens)?
        .iter()
        .map(|r| r.iter().sum::<f64>() / r.len() as f64)
        .collect())
}

/// Ablate every head of `model` in turn over `docs` (token ids; documents shorter than two
/// tokens are skipped).
pub fn ablate_heads(
    model: &HookedTransformer,
    docs: &[Vec<u32>],
    method: AblationMethod,
) -> Result<AblationResult> {
    let docs: Vec<&Vec<u32>> = docs.iter().filter(|d| d.len() >= 2).collect();
    if docs.is_empty() {
        return Err(Error::Input(
            "the corpus has no document of two or more tokens".into(),
        ));
    }
    let c = &model.cfg;
    let (nl, nh, dh) = (c.n_layers, c.n_heads, c.d_head);
    let dev = model.device();
    let filter = NameFilter::new(&[
        HookName::ResidPre(0).every_layer(),
        HookName::AttnZ(0).every_layer(),
    ]);
    // Clean runs, kept for the per-layer restarts.
    let mut clean = Vec::new();
    for d in &docs {
        let t = Tensor::new(d.as_slice(), dev)?.unsqueeze(0)?;
        let (logits, cache) = model.run(
            Input::Tokens(&t),
            &RunOptions::default(),
            None,
            Some(&filter),
        )?;
        let loss = mean_losses(&logits, d)?[0];
        clean.push((loss, cache));
    }
    // Mean z per layer, over all positions of all documents: [nh, dh].
    let means: Option<Vec<Tensor>> = if method == AblationMethod::Mean {
        let mut m = Vec::new();
        for l in 0..nl {
            let name = HookName::AttnZ(l).to_string();
            let mut sum = Tensor::zeros((nh, dh), DType::F64, dev)?;
            let mut count = 0usize;
            for (_, cache) in &clean {
                let z = cache.get(&name)?.to_dtype(DType::F64)?.squeeze(0)?;
                count += z.dim(0)?;
                sum = (sum + z.sum(0)?)?;
            }
            m.push((sum / count as f64)?.to_dtype(model.dtype())?);
        }
        Some(m)
    } else {
        None
    };
    let mut rng = match method {
        AblationMethod::Resample { seed } => Some(SplitMix::new(seed)),
        _ => None,
    };
    let mut inc = vec![vec![Vec::with_capacity(docs.len()); nh]; nl];
    for (di, d) in docs.iter().enumerate() {
        let n = d.len();
        let (clean_loss, cache) = &clean[di];
        // Resampling source: another document when there is one.
        let src = match rng.as_mut() {
            Some(r) if docs.len() > 1 => {
                let j = r.below(docs.len() as u64 - 1) as usize;
                Some(if j >= di { j + 1 } else { j })
            }
            Some(_) => Some(di),
            None => None,
        };
        for l in 0..nl {
            let zname = HookName::AttnZ(l).to_string();
            // The replacement z for one head: [n, dh].
            let replacement = |h: usize| -> Result<Tensor> {
                Ok(match method {
                    AblationMethod::Zero => Tensor::zeros((n, dh), model.dtype(), dev)?,
                    AblationMethod::Mean => means.as_ref().expect("means")[l]
                        .get(h)?
                        .unsqueeze(0)?
                        .repeat((n, 1))?,
                    AblationMethod::Resample { .. } => {
                        let other = clean[src.expect("source")].1.get(&zname)?.squeeze(0)?;
                        let m = other.dim(0)?;
                        let idx: Vec<u32> = (0..n).map(|p| (p % m) as u32).collect();
                        other
                            .index_select(&Tensor::new(idx.as_slice(), dev)?, 0)?
                            .get_on_dim(1, h)?
                    }
                })
            };
            // Batch item h ablates head h: z_new[h, :, h, :] = replacement(h).
            let reps = (0..nh).map(&replacement).collect::<Result<Vec<_>>>()?;
            let resid = cache
                .get(&HookName::ResidPre(l).to_string())?
                .repeat((nh, 1, 1))?;
            let mut hooks = Hooks::new();
            hooks.add(NameFilter::new(&[zname.as_str()]), |z: &Tensor, _| {
                let mut items = Vec::with_capacity(nh);
                for (h, rep) in reps.iter().enumerate() {
                    let zi = z.get(h)?; // [n, nh, dh]
                    let mut heads = Vec::with_capacity(nh);
                    for g in 0..nh {
                        heads.push(if g == h {
                            rep.clone()
                        } else {
                            zi.get_on_dim(1, g)?
                        });
                    }
                    items.push(Tensor::stack(&heads, 1)?);
                }
                Ok(Some(Tensor::stack(&items, 0)?))
            });
            let opts = RunOptions {
                start_at_layer: Some(l),
                ..Default::default()
            };
            let (logits, _) = model.run(Input::Resid(&resid), &opts, Some(&mut hooks), None)?;
            for (h, loss) in mean_losses(&logits, d)?.into_iter().enumerate() {
                inc[l][h].push(loss - clean_loss);
            }
        }
    }
    let nd = docs.len() as f64;
    Ok(AblationResult {
        method,
        n_docs: docs.len(),
        n_tokens: docs.iter().map(|d| d.len()).sum(),
        clean_loss: clean.iter().map(|c| c.0).sum::<f64>() / nd,
        loss_increase: inc
            .iter()
            .map(|r| r.iter().map(|v| mean_stderr(v).0).collect())
            .collect(),
        stderr: inc
            .iter()
            .map(|r| r.iter().map(|v| mean_stderr(v).1).collect())
            .collect(),
    })
}
