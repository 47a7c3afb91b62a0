//! Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", ROME).
//!
//! A factual prompt ("The Eiffel Tower is located in the city of") is run clean, and corrupted
//! by removing the information in the subject ("The Eiffel Tower"):
//! - [`Corruption::Gaussian`]: add noise N(0, (k·σ)²) to the subject tokens' embeddings
//!   (`hook_embed`), σ the standard deviation of the embedding matrix's entries (k = 3 in ROME),
//!   `samples` draws, seeded;
//! - [`Corruption::Resample`]: replace the subject by other subjects of the same token length
//!   (one corrupted run per alternative), the idea list's variant with real inputs.
//!
//! Then one state of the clean run is restored into every corrupted run and the probability of
//! the clean answer at the last position is measured. Restored states, as ROME draws them:
//! - hidden state: `resid_post` of one (layer, token);
//! - MLP / attention: `hook_mlp_out` / `hook_attn_out` at one token for a window of `window`
//!   layers centred on the layer (clipped at the ends).
//!
//! Indirect effect of a state = p(answer | corrupted, state restored) − p(answer | corrupted),
//! averaged over the corrupted runs; total effect = p(answer | clean) − p(answer | corrupted).
//!
//! Only what a restoration can change is computed: a restored state at token t cannot change
//! positions before t (their keys and values come from the corrupted runs' KV caches), and layers
//! below the first restored one come from the corrupted runs' cached residuals.

use candle_core::{DType, Tensor};
use interplab_core::model::{
    log_softmax, HookName, HookPoint, HookedTransformer, Hooks, KvCache, NameFilter,
};
use interplab_core::rng::SplitMix;
use interplab_core::{Error, Result};
use serde::Serialize;
use std::cell::RefCell;

use crate::stats::argmax;

/// How the subject is corrupted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// Gaussian noise of `scale` × the embedding std on the subject's embeddings.
    Gaussian {
        scale: f64,
        samples: usize,
        seed: u64,
    },
    /// Other subjects' tokens (each exactly as many tokens as the subject).
    Resample { alternatives: Vec<Vec<u32>> },
}

/// Which states are restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceKind {
    Hidden,
    Mlp,
    Attn,
}

impl TraceKind {
    /// All kinds, in ROME's order.
    pub const ALL: [TraceKind; 3] = [TraceKind::Hidden, TraceKind::Mlp, TraceKind::Attn];

    /// `hidden`, `mlp` or `attn`.
    pub fn name(self) -> &'static str {
        match self {
            TraceKind::Hidden => "hidden",
            TraceKind::Mlp => "mlp",
            TraceKind::Attn => "attn",
        }
    }
}

/// The result of one trace.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub kind: TraceKind,
    /// `effect[token][layer]`: p(answer) with the state restored (ROME plots this).
    pub prob: Vec<Vec<f64>>,
    /// p(answer) of the clean run.
    pub clean_prob: f64,
    /// Mean p(answer) of the corrupted runs.
    pub corrupted_prob: f64,
    /// Subject token positions `[start, end)`.
    pub subject: (usize, usize),
    pub answer: u32,
    pub window: usize,
}

impl Trace {
    /// Indirect effect of a state: restored minus corrupted probability.
    pub fn indirect_effect(&self, token: usize, layer: usize) -> f64 {
        self.prob[token][layer] - self.corrupted_prob
    }

    /// Total effect: clean minus corrupted probability.
    pub fn total_effect(&self) -> f64 {
        self.clean_prob - self.corrupted_prob
    }
}

/// Positions `[start, end)` of `subject`'s tokens inside `tokens` (the last occurrence).
pub fn find_subject(tokens: &[u32], subject: &[u32]) -> Result<(usize, usize)> {
    if subject.is_empty() || subject.len() > tokens.len() {
        return Err(Error::Input(
            "the subject is empty or longer than the prompt".into(),
        ));
    }
    (0..=tokens.len() - subject.len())
        .rev()
        .find(|&i| tokens[i..i + subject.len()] == *subject)
        .map(|i| (i, i + subject.len()))
        .ok_or_else(|| Error::Input("the subject's tokens do not occur in the prompt".into()))
}

/// Prepared clean and corrupted runs.
pub struct Tracer<'m> {
    model: &'m HookedTransformer,
    tokens: Vec<u32>,
    subject: (usize, usize),
    answer: u32,
    clean: interplab_core::model::ActivationCache,
    /// Corrupted runs: activations `[runs, pos, ...]` and KV caches.
    corrupted: interplab_core::model::ActivationCache,
    kv: KvCache,
    runs: usize,
    clean_prob: f64,
    corrupted_prob: f64,
}

impl<'m> Tracer<'m> {
    /// Run the clean prompt and the corrupted runs. `answer` defaults to the clean run's top
    /// prediction at the last position.
    pub fn new(
        model: &'m HookedTransformer,
        tokens: &[u32],
        subject: (usize, usize),
        answer: Option<u32>,
        corruption: &Corruption,
    ) -> Result<Self> {
        let n = tokens.len();
        if n == 0 || subject.0 >= subject.1 || subject.1 > n {
            return Err(Error::Input(
                "the subject must be a non-empty span of the prompt".into(),
            ));
        }
        let dev = model.device();
        let filter = NameFilter::new(&[
            HookName::ResidPre(0).every_layer(),
            HookName::ResidPost(0).every_layer(),
            HookName::MlpOut(0).every_layer(),
            HookName::AttnOut(0).every_layer(),
        ]);
        let t = Tensor::new(tokens, dev)?.unsqueeze(0)?;
        let (logits, clean) = model.run(
            interplab_core::model::Input::Tokens(&t),
            &Default::default(),
            None,
            Some(&filter),
        )?;
        let lp = last_log_probs(&logits)?;
        let answer = match answer {
            Some(a) if (a as usize) < model.cfg.d_vocab => a,
            Some(a) => {
                return Err(Error::Input(format!(
                    "answer token {a} is out of the vocabulary"
                )))
            }
            None => argmax(&lp[0]),
        };
        let clean_prob = (lp[0][answer as usize] as f64).exp();
        // Corrupted runs.
        let (batch_tokens, noise): (Vec<u32>, Option<Tensor>) = match corruption {
            Corruption::Gaussian {
                scale,
                samples,
                seed,
            } => {
                let runs = (*samples).max(1);
                let sigma = embedding_std(model)? * scale;
                let mut rng = SplitMix::new(*seed);
                let d = model.cfg.d_model;
                let mut v = vec![0f32; runs * n * d];
                for r in 0..runs {
                    for p in subject.0..subject.1 {
                        for x in &mut v[(r * n + p) * d..(r * n + p + 1) * d] {
                            *x = (rng.normal() * sigma) as f32;
                        }
                    }
                }
                let noise = Tensor::from_vec(v, (runs, n, d), dev)?.to_dtype(model.dtype())?;
                (tokens.repeat(runs), Some(noise))
            }
            Corruption::Resample { alternatives } => {
                if alternatives.is_empty() {
                    return Err(Error::Input(
                        "resample corruption needs at least one alternative subject".into(),
                    ));
                }
                let mut all = Vec::new();
                for alt in alternatives {
                    if alt.len() != subject.1 - subject.0 {
                        return Err(Error::Input(format!(
                            "an alternative subject has {} tokens, the subject {}",
                            alt.len(),
                            subject.1 - subject.0
                        )));
                    }
                    let mut s = tokens.to_vec();
                    s[subject.0..subject.1].copy_from_slice(alt);
                    all.extend(s);
                }
                (all, None)
            }
        };
        let runs = batch_tokens.len() / n;
        let bt = Tensor::from_vec(batch_tokens, (runs, n), dev)?;
        let store = RefCell::new(interplab_core::model::ActivationCache::new());
        let mut kv = KvCache::default();
        let noise_ref = noise.as_ref();
        let logits = {
            let mut hooks = Hooks::new();
            if let Some(noise) = noise_ref.cloned() {
                hooks.add(
                    NameFilter::new(&[HookName::Embed.to_string()]),
                    move |x: &Tensor, _| Ok(Some(x.add(&noise)?)),
                );
            }
            hooks.add(filter, |x: &Tensor, p: HookPoint| {
                store.borrow_mut().insert(p.name, x.clone());
                Ok(None)
            });
            model.forward_with_kv(&bt, &mut kv, None, Some(&mut hooks))?
        };
        let lp = last_log_probs(&logits)?;
        let corrupted_prob = lp
            .iter()
            .map(|r| (r[answer as usize] as f64).exp())
            .sum::<f64>()
            / runs as f64;
        Ok(Tracer {
            model,
            tokens: tokens.to_vec(),
            subject,
            answer,
            clean,
            corrupted: store.into_inner(),
            kv,
            runs,
            clean_prob,
            corrupted_prob,
        })
    }

    /// The answer token traced.
    pub fn answer(&self) -> u32 {
        self.answer
    }

    /// Restore every (token, layer) state of `kind` and measure p(answer).
    pub fn trace(&self, kind: TraceKind, window: usize) -> Result<Trace> {
        let (n, nl) = (self.tokens.len(), self.model.cfg.n_layers);
        if kind == TraceKind::Mlp && self.model.cfg.attn_only {
            return Err(Error::Input("the model has no MLPs".into()));
        }
        let mut prob = vec![vec![0f64; nl]; n];
        for (tok, row) in prob.iter_mut().enumerate() {
            for (layer, cell) in row.iter_mut().enumerate() {
                *cell = self.restore(kind, tok, layer, window.max(1))?;
            }
        }
        Ok(Trace {
            kind,
            prob,
            clean_prob: self.clean_prob,
            corrupted_prob: self.corrupted_prob,
            subject: self.subject,
            answer: self.answer,
            window,
        })
    }

    /// Mean p(answer) over the corrupted runs with one state restored at token `tok`.
    fn restore(&self, kind: TraceKind, tok: usize, layer: usize, window: usize) -> Result<f64> {
        let (n, nl, runs) = (self.tokens.len(), self.model.cfg.n_layers, self.runs);
        let q = n - tok;
        let (start, names): (usize, Vec<String>) = match kind {
            TraceKind::Hidden => (layer + 1, vec![]),
            TraceKind::Mlp | TraceKind::Attn => {
                let lo = layer.saturating_sub(window / 2);
                let hi = (lo + window).min(nl);
                let lo = hi.saturating_sub(window);
                let site = if kind == TraceKind::Mlp {
                    HookName::MlpOut
                } else {
                    HookName::AttnOut
                };
                (lo, (lo..hi).map(|l| site(l).to_string()).collect())
            }
        };
        // The residual entering block `start` at positions tok.., per corrupted run.
        let resid = if kind == TraceKind::Hidden {
            let corr = self
                .corrupted
                .get(&HookName::ResidPost(layer).to_string())?
                .narrow(1, tok, q)?;
            let clean = self
                .clean
                .get(&HookName::ResidPost(layer).to_string())?
                .narrow(1, tok, 1)?;
            let rest = corr.narrow(1, 1, q - 1)?;
            Tensor::cat(&[&clean.repeat((runs, 1, 1))?, &rest], 1)?
        } else {
            self.corrupted
                .get(&HookName::ResidPre(start).to_string())?
                .narrow(1, tok, q)?
        };
        let fin = if start >= nl {
            resid
        } else {
            let mut kv = if tok > 0 {
                self.kv.prefix(tok, runs)?
            } else {
                KvCache::default()
            };
            let mut hooks = Hooks::new();
            let clean = &self.clean;
            if !names.is_empty() {
                hooks.add(NameFilter::new(&names), |x: &Tensor, p: HookPoint| {
                    // Position tok is index 0 of the new positions.
                    let c = clean
                        .get(p.name)?
                        .narrow(1, tok, 1)?
                        .repeat((x.dim(0)?, 1, 1))?;
                    let rest = x.narrow(1, 1, x.dim(1)? - 1)?;
                    Ok(Some(Tensor::cat(&[&c, &rest], 1)?))
                });
            }
            self.model
                .run_resid_with_kv(&resid, start, &mut kv, Some(&mut hooks))?
        };
        let last = fin.narrow(1, q - 1, 1)?.squeeze(1)?;
        let lp: Vec<Vec<f32>> =
            log_softmax(&self.model.unembed_resid(&last)?.to_dtype(DType::F32)?)?.to_vec2()?;
        Ok(lp
            .iter()
            .map(|r| (r[self.answer as usize] as f64).exp())
            .sum::<f64>()
            / runs as f64)
    }
}

/// Standard deviation of the token embedding matrix's entries (times the embedding scale).
fn embedding_std(model: &HookedTransformer) -> Result<f64> {
    let v: Vec<f32> = model
        .weights
        .w_e
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    Ok(var.sqrt() * model.cfg.embed_scale.unwrap_or(1.0))
}

fn last_log_probs(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let n = logits.dim(1)?;
    Ok(log_softmax(
        &logits
            .narrow(1, n - 1, 1)?
            .squeeze(1)?
            .to_dtype(DType::F32)?,
    )?
    .to_vec2()?)
}
