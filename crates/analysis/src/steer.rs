//! Steering vectors: contrastive activation addition (CAA, Rimsky et al. 2023; Turner et al.'s
//! activation addition) and directional ablation.
//!
//! - [`steering_vector`]: the mean over prompt pairs of `act(positive) − act(negative)` at one
//!   hook, each prompt read at its last token.
//! - [`Intervention::Add`]: `x + c·v` at every position of the hook.
//! - [`Intervention::ProjectOut`]: `x − (x·v̂) v̂` at every position (the direction ablated).
//! - [`logit_diffs`]: `logit[a] − logit[b]` at each prompt's last token under an intervention.
//! - [`corpus_loss`]: mean next-token loss over documents under an intervention (the side effect).
//!
//! All means are accumulated in f64.

use candle_core::{DType, Tensor};
use interplab_core::model::{HookedTransformer, Hooks, Input, NameFilter, RunOptions};
use interplab_core::{Error, Result};

use crate::stats::{mean_stderr, next_token_losses};

/// What is done to the activations at one hook.
#[derive(Debug, Clone, PartialEq)]
pub enum Intervention {
    /// Nothing.
    None,
    /// Add `coefficient · vector` at every position.
    Add {
        /// The hook (`blocks.L.hook_resid_pre`, …).
        hook: String,
        /// `v`, of the hook's last dimension.
        vector: Vec<f32>,
        /// `c`.
        coefficient: f64,
    },
    /// Remove the component along `vector` at every position.
    ProjectOut {
        /// The hook.
        hook: String,
        /// The direction (normalised here).
        vector: Vec<f32>,
    },
}

impl Intervention {
    /// Hooks that carry out the intervention.
    pub fn hooks(&self, device: &candle_core::Device) -> Result<Hooks<'static>> {
        let mut hooks = Hooks::new();
        match self {
            Intervention::None => {}
            Intervention::Add {
                hook,
                vector,
                coefficient,
            } => {
                let v = Tensor::new(vector.as_slice(), device)?;
                let c = *coefficient;
                hooks.add(hook.as_str(), move |x, _| {
                    let add = (v.to_dtype(x.dtype())? * c)?;
                    Ok(Some(x.broadcast_add(&add)?))
                });
            }
            Intervention::ProjectOut { hook, vector } => {
                let norm = vector
                    .iter()
                    .map(|&x| (x as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                if norm == 0.0 {
                    return Err(Error::Input(
                        "cannot project out a zero direction".to_string(),
                    ));
                }
                let unit: Vec<f32> = vector.iter().map(|&x| (x as f64 / norm) as f32).collect();
                let u = Tensor::new(unit.as_slice(), device)?;
                hooks.add(hook.as_str(), move |x, _| {
                    let u = u.to_dtype(x.dtype())?;
                    let d = u.dim(0)?;
                    let along = x.broadcast_matmul(&u.reshape((d, 1))?)?; // [.., pos, 1]
                    Ok(Some(x.broadcast_sub(&along.broadcast_mul(&u)?)?))
                });
            }
        }
        Ok(hooks)
    }
}

/// Prompts per forward pass in [`last_token_activations`] and [`logit_diffs`].
pub const BATCH: usize = 32;

/// Prompts in batches of [`BATCH`], right-padded with each prompt's first token: the model is
/// causal, so padding after a prompt's last token changes none of its positions. Yields the
/// prompts' indices and the `[batch, len]` ids.
fn padded_batches<'a>(
    model: &'a HookedTransformer,
    prompts: &'a [Vec<u32>],
) -> impl Iterator<Item = Result<(&'a [Vec<u32>], Tensor)>> + 'a {
    prompts.chunks(BATCH).map(move |chunk| {
        if chunk.iter().any(|p| p.is_empty()) {
            return Err(Error::Input("an empty prompt".to_string()));
        }
        let len = chunk.iter().map(Vec::len).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(chunk.len() * len);
        for p in chunk {
            ids.extend_from_slice(p);
            ids.extend(std::iter::repeat_n(p[0], len - p.len()));
        }
        Ok((
            chunk,
            Tensor::from_vec(ids, (chunk.len(), len), model.device())?,
        ))
    })
}

/// The activation at `hook`, last token, of each prompt: `[prompt][d]`.
pub fn last_token_activations(
    model: &HookedTransformer,
    prompts: &[Vec<u32>],
    hook: &str,
) -> Result<Vec<Vec<f32>>> {
    let filter = NameFilter::new(&[hook]);
    // Blocks after the hook's cannot change it: stop after its block.
    let stop_at_layer = hook
        .strip_prefix("blocks.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse::<usize>().ok())
        .map(|l| l + 1)
        .filter(|&l| l < model.cfg.n_layers);
    let opts = RunOptions {
        stop_at_layer,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(prompts.len());
    for batch in padded_batches(model, prompts) {
        let (chunk, input) = batch?;
        let (_, cache) = model.run(Input::Tokens(&input), &opts, None, Some(&filter))?;
        let act = cache.get(hook)?;
        for (row, p) in chunk.iter().enumerate() {
            let a = act.get(row)?.get(p.len() - 1)?;
            out.push(a.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?);
        }
    }
    Ok(out)
}

/// The mean of `positive[i] − negative[i]` over pairs (f64 sums).
pub fn mean_difference_vector(positive: &[Vec<f32>], negative: &[Vec<f32>]) -> Result<Vec<f32>> {
    if positive.is_empty() || positive.len() != negative.len() {
        return Err(Error::Input(format!(
            "a steering vector needs matching, non-empty pairs ({} positive, {} negative)",
            positive.len(),
            negative.len()
        )));
    }
    let d = positive[0].len();
    let mut sum = vec![0f64; d];
    for (p, n) in positive.iter().zip(negative) {
        if p.len() != d || n.len() != d {
            return Err(Error::Input("activations of different widths".to_string()));
        }
        for ((s, &a), &b) in sum.iter_mut().zip(p).zip(n) {
            *s += a as f64 - b as f64;
        }
    }
    let k = positive.len() as f64;
    Ok(sum.iter().map(|s| (s / k) as f32).collect())
}

/// The CAA steering vector: [`mean_difference_vector`] of the last-token activations at `hook`
/// of positive and negative prompts, pair by pair.
pub fn steering_vector(
    model: &HookedTransformer,
    positive: &[Vec<u32>],
    negative: &[Vec<u32>],
    hook: &str,
) -> Result<Vec<f32>> {
    let p = last_token_activations(model, positive, hook)?;
    let n = last_token_activations(model, negative, hook)?;
    mean_difference_vector(&p, &n)
}

/// `logit[a] − logit[b]` at the last token of each prompt, with `iv` applied.
pub fn logit_diffs(
    model: &HookedTransformer,
    prompts: &[Vec<u32>],
    a: u32,
    b: u32,
    iv: &Intervention,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(prompts.len());
    for batch in padded_batches(model, prompts) {
        let (chunk, input) = batch?;
        let mut hooks = iv.hooks(model.device())?;
        let logits = model.run_with_hooks(&input, &mut hooks)?;
        for (row, p) in chunk.iter().enumerate() {
            let last = logits.get(row)?.get(p.len() - 1)?.to_dtype(DType::F32)?;
            let (la, lb) = (
                last.get(a as usize)?.to_scalar::<f32>()?,
                last.get(b as usize)?.to_scalar::<f32>()?,
            );
            out.push(la as f64 - lb as f64);
        }
    }
    Ok(out)
}

/// Mean next-token loss (nats) over every predicted token of `docs`, with `iv` applied, and its
/// standard error over documents.
pub fn corpus_loss(
    model: &HookedTransformer,
    docs: &[Vec<u32>],
    iv: &Intervention,
) -> Result<(f64, f64)> {
    let mut per_doc = Vec::with_capacity(docs.len());
    let (mut total, mut count) = (0f64, 0usize);
    for d in docs.iter().filter(|d| d.len() >= 2) {
        let input = Tensor::new(d.as_slice(), model.device())?.unsqueeze(0)?;
        let mut hooks = iv.hooks(model.device())?;
        let logits = model.run_with_hooks(&input, &mut hooks)?;
        let losses = &next_token_losses(&logits, d)?[0];
        total += losses.iter().sum::<f64>();
        count += losses.len();
        per_doc.push(losses.iter().sum::<f64>() / losses.len() as f64);
    }
    if count == 0 {
        return Err(Error::Input(
            "the corpus has no document of two or more tokens".to_string(),
        ));
    }
    Ok((total / count as f64, mean_stderr(&per_doc).1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::induction_model;
    use interplab_core::rng::SplitMix;

    const VOCAB: usize = 12;

    fn w_u_column_diff(model: &HookedTransformer, a: u32, b: u32) -> Vec<f64> {
        let w: Vec<Vec<f32>> = model.weights.unembed().unwrap().to_vec2().unwrap();
        w.iter()
            .map(|row| row[a as usize] as f64 - row[b as usize] as f64)
            .collect()
    }

    /// The toy model has no final norm, so adding `c·v` to the last resid_post moves
    /// `logit[a] − logit[b]` by exactly `c · v·(W_U[:, a] − W_U[:, b])`.
    #[test]
    fn adding_a_vector_moves_the_logit_difference_by_the_predicted_amount() {
        let model = induction_model(VOCAB, 16).unwrap();
        let d = model.cfg.d_model;
        let mut rng = SplitMix::new(3);
        let v: Vec<f32> = (0..d).map(|_| rng.normal() as f32).collect();
        let prompts = vec![vec![0, 3, 5, 7, 3], vec![0, 4, 4, 9]];
        let (a, b) = (5, 2);
        let base = logit_diffs(&model, &prompts, a, b, &Intervention::None).unwrap();
        // The shorter prompt, right-padded in the batch, gives what it gives alone.
        let alone = logit_diffs(&model, &prompts[1..], a, b, &Intervention::None).unwrap();
        assert!((alone[0] - base[1]).abs() < 1e-5, "{alone:?} vs {base:?}");
        let dw = w_u_column_diff(&model, a, b);
        let slope: f64 = v.iter().zip(&dw).map(|(&x, w)| x as f64 * w).sum();
        assert!(slope.abs() > 1.0, "the direction must matter: {slope}");
        for c in [-2.0, 0.5, 3.0] {
            let iv = Intervention::Add {
                hook: "blocks.1.hook_resid_post".into(),
                vector: v.clone(),
                coefficient: c,
            };
            let got = logit_diffs(&model, &prompts, a, b, &iv).unwrap();
            for (g, b0) in got.iter().zip(&base) {
                let want = b0 + c * slope;
                assert!(
                    (g - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "c {c}: {g} vs {want}"
                );
            }
        }
    }

    /// Projecting out `v̂` at the last resid_post removes `(x·v̂)·v̂·(W_U[:, a] − W_U[:, b])`.
    #[test]
    fn projecting_out_a_direction_removes_its_contribution() {
        let model = induction_model(VOCAB, 16).unwrap();
        let hook = "blocks.1.hook_resid_post";
        let prompts = vec![vec![0u32, 3, 5, 7, 3]];
        let (a, b) = (5, 7);
        // The direction that carries the prediction: O_a, plus noise.
        let d = model.cfg.d_model;
        let mut rng = SplitMix::new(9);
        let mut v: Vec<f32> = (0..d).map(|_| 0.1 * rng.normal() as f32).collect();
        let o = 2 * VOCAB + 16; // the O subspace starts after T, P and S
        v[o + a as usize] += 1.0;
        let x = last_token_activations(&model, &prompts, hook)
            .unwrap()
            .remove(0);
        let norm = v.iter().map(|&t| (t as f64).powi(2)).sum::<f64>().sqrt();
        let along: f64 = x
            .iter()
            .zip(&v)
            .map(|(&p, &q)| p as f64 * q as f64)
            .sum::<f64>()
            / norm;
        let dw = w_u_column_diff(&model, a, b);
        let lost = along
            * v.iter()
                .zip(&dw)
                .map(|(&q, w)| q as f64 / norm * w)
                .sum::<f64>();
        assert!(lost.abs() > 1.0, "the direction carries the logit: {lost}");
        let base = logit_diffs(&model, &prompts, a, b, &Intervention::None).unwrap()[0];
        let iv = Intervention::ProjectOut {
            hook: hook.into(),
            vector: v,
        };
        let got = logit_diffs(&model, &prompts, a, b, &iv).unwrap()[0];
        assert!(
            (got - (base - lost)).abs() < 1e-4 * (1.0 + base.abs()),
            "{got} vs {}",
            base - lost
        );
        // A zero direction cannot be projected out.
        let zero = Intervention::ProjectOut {
            hook: hook.into(),
            vector: vec![0.0; d],
        };
        assert!(zero.hooks(model.device()).is_err());
    }

    /// Prompts that differ only in the last token differ at layer 0's resid_pre by exactly the
    /// difference of the two tokens' embeddings.
    #[test]
    fn the_steering_vector_of_one_token_swap_is_the_embedding_difference() {
        let model = induction_model(VOCAB, 16).unwrap();
        let pos = vec![vec![0u32, 3, 5], vec![0, 7, 5]];
        let neg = vec![vec![0u32, 3, 8], vec![0, 7, 8]];
        let v = steering_vector(&model, &pos, &neg, "blocks.0.hook_resid_pre").unwrap();
        let w_e: Vec<Vec<f32>> = model.weights.w_e.to_vec2().unwrap();
        for (j, &x) in v.iter().enumerate() {
            assert!((x - (w_e[5][j] - w_e[8][j])).abs() < 1e-6, "{j}: {x}");
        }
        assert!(mean_difference_vector(&[vec![1.0]], &[]).is_err());
    }

    #[test]
    fn corpus_loss_without_intervention_is_the_models_loss() {
        let model = induction_model(VOCAB, 16).unwrap();
        let docs = vec![vec![0u32, 3, 5, 7, 3, 5, 7], vec![0, 4, 9, 4, 9]];
        let (loss, _) = corpus_loss(&model, &docs, &Intervention::None).unwrap();
        let mut total = 0.0;
        let mut n = 0;
        for d in &docs {
            let t = Tensor::new(d.as_slice(), model.device())
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let l = interplab_core::model::next_token_loss(&model.forward(&t).unwrap(), &t)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            total += l * (d.len() - 1) as f64;
            n += d.len() - 1;
        }
        assert!(
            (loss - total / n as f64).abs() < 1e-5,
            "{loss} vs {}",
            total / n as f64
        );
    }
}
