//! Attention-only transformers trained from scratch, for watching induction heads form
//! (Elhage et al. 2021; Olsson et al. 2022; RESEARCH.md §3).
//!
//! The model is Interplab's [`HookedTransformer`] with `attn_only`, learned positions, no
//! biases, and either no normalisation or LayerNorm (TransformerLens' attention-only toy
//! models), initialised as TransformerLens' `init_weights` with `init_mode = "gpt2"`: every
//! matrix normal with std `0.8/√d_model` (its default `initializer_range`), LayerNorm weights 1
//! and biases 0. Training is next-token cross-entropy over every position, with candle autograd
//! (the model's ops all carry gradients) and the fused in-place AdamW ([`VarAdamW`]).
//!
//! Data:
//! - [`Data::Repeated`]: each sequence is `seq_len` tokens drawn uniformly from the vocabulary,
//!   repeated `repeats` times. From the second repeat on, the next token is predictable by
//!   induction (find the earlier copy of the current token, predict what followed it).
//! - [`Data::Text`]: random windows of a byte-level text (every byte below 128 is a token; other
//!   bytes become `?`), the last tenth kept aside for evaluation.
//!
//! The batch of step `t` is drawn from a generator seeded with (seed, t), so a run resumed from
//! a checkpoint sees the same data as an uninterrupted one and ends with the same weights.
//! The analysis of checkpoints (head scores, composition) belongs to `interplab-analysis`; this
//! module trains and hands the model to a callback.

use candle_core::{DType, Device, Tensor};
use interplab_core::config::{ModelConfig, NormKind};
use interplab_core::model::weights::{AttnWeights, BlockWeights, NormWeights, Weights};
use interplab_core::model::{next_token_loss, HookedTransformer, Input, RunOptions};
use interplab_core::rng::SplitMix;
use interplab_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::optim::AdamWConfig;
use crate::optim_var::{VarAdamW, VarAdamWState};

/// The data a model trains on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataConfig {
    /// A chunk of uniform random tokens repeated to fill `seq_len × repeats` positions; the
    /// chunk's length is drawn per sequence from `min_seq_len..=seq_len`.
    Repeated {
        seq_len: usize,
        min_seq_len: usize,
        repeats: usize,
    },
    /// Byte-level text; `source` names it (`sonnets` or a path) for the record.
    Text { source: String },
}

/// What to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InductionConfig {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub d_vocab: usize,
    /// Context length of a training sequence.
    pub n_ctx: usize,
    /// LayerNorm before each attention layer and the unembedding (true) or no norm (false).
    pub layer_norm: bool,
    pub data: DataConfig,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Std of the initial weights; TransformerLens' default `0.8/√d_model` when `None`.
    pub init_std: Option<f64>,
    pub seed: u64,
}

impl Default for InductionConfig {
    /// RESEARCH.md §3's CPU-scale run: 2 layers, d_model 48, 4 heads, vocab 128, a 16-token
    /// sequence repeated 3 times, AdamW lr 1e-3, weight decay 1.
    fn default() -> Self {
        InductionConfig {
            n_layers: 2,
            d_model: 48,
            n_heads: 4,
            d_vocab: 128,
            n_ctx: 48,
            layer_norm: true,
            data: DataConfig::Repeated {
                seq_len: 16,
                min_seq_len: 8,
                repeats: 3,
            },
            steps: 2000,
            batch: 32,
            lr: 1e-3,
            weight_decay: 1.0,
            beta1: 0.9,
            beta2: 0.999,
            init_std: None,
            seed: 0,
        }
    }
}

impl InductionConfig {
    /// Check the configuration; the errors name the offending setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(m));
        if self.n_layers == 0 || self.d_model == 0 || self.n_heads == 0 || self.batch == 0 {
            return bad("layers, d_model, heads and batch must be positive".into());
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return bad(format!(
                "d_model {} is not a multiple of the head count {}",
                self.d_model, self.n_heads
            ));
        }
        if self.d_vocab < 2 || self.d_vocab > 1 << 20 {
            return bad(format!("vocabulary size {} out of range", self.d_vocab));
        }
        if self.n_ctx < 2 {
            return bad("the context must hold at least two tokens".into());
        }
        let lr_ok = self.lr > 0.0 && self.lr.is_finite();
        let wd_ok = self.weight_decay >= 0.0 && self.weight_decay.is_finite();
        if !lr_ok || !wd_ok {
            return bad("lr must be positive and weight decay non-negative".into());
        }
        if let DataConfig::Repeated {
            seq_len,
            min_seq_len,
            repeats,
        } = self.data
        {
            if min_seq_len == 0 || min_seq_len > seq_len || repeats < 2 {
                return bad(format!(
                    "repeated data needs 1 ≤ min_seq_len ({min_seq_len}) ≤ seq_len ({seq_len}) and ≥ 2 repeats"
                ));
            }
            if seq_len * repeats != self.n_ctx {
                return bad(format!(
                    "seq_len {seq_len} × repeats {repeats} must equal the context {}",
                    self.n_ctx
                ));
            }
        }
        Ok(())
    }

    /// The hooked transformer's config.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            norm: if self.layer_norm {
                NormKind::LayerNorm
            } else {
                NormKind::None
            },
            ..ModelConfig::attention_only(
                self.d_model,
                self.n_layers,
                self.n_heads,
                self.d_model / self.n_heads,
                self.d_vocab,
                self.n_ctx,
            )
        }
    }

    fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: 1e-8,
            weight_decay: self.weight_decay,
        }
    }
}

/// A freshly initialised attention-only model (module doc: TransformerLens' gpt2 init).
pub fn init_model(cfg: &InductionConfig) -> Result<HookedTransformer> {
    cfg.validate()?;
    let mc = cfg.model_config();
    let std = cfg.init_std.unwrap_or(0.8 / (cfg.d_model as f64).sqrt());
    let dev = Device::Cpu;
    // One generator per matrix, so adding a layer does not change the others' draws.
    let normal = |tag: u64, r: usize, c: usize| -> Result<Tensor> {
        let mut rng = SplitMix::new(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ tag);
        let v: Vec<f32> = (0..r * c).map(|_| (rng.normal() * std) as f32).collect();
        Ok(Tensor::from_vec(v, (r, c), &dev)?)
    };
    let norm = || -> Result<NormWeights> {
        Ok(if cfg.layer_norm {
            NormWeights {
                w: Some(Tensor::ones(cfg.d_model, DType::F32, &dev)?),
                b: Some(Tensor::zeros(cfg.d_model, DType::F32, &dev)?),
            }
        } else {
            NormWeights::default()
        })
    };
    let d = cfg.d_model;
    let blocks = (0..cfg.n_layers)
        .map(|l| -> Result<BlockWeights> {
            let tag = 0x100 * (l as u64 + 1);
            Ok(BlockWeights {
                ln1: norm()?,
                attn: AttnWeights {
                    w_q: normal(tag + 1, d, d)?.into(),
                    w_k: normal(tag + 2, d, d)?.into(),
                    w_v: normal(tag + 3, d, d)?.into(),
                    w_o: normal(tag + 4, d, d)?.into(),
                    b_q: None,
                    b_k: None,
                    b_v: None,
                    b_o: None,
                    q_norm: None,
                    k_norm: None,
                },
                ln1_post: None,
                ln2: NormWeights::default(),
                mlp: None,
                ln2_post: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let weights = Weights {
        w_e: normal(1, cfg.d_vocab, d)?,
        w_pos: Some(normal(2, cfg.n_ctx, d)?),
        blocks,
        ln_final: norm()?,
        w_u: Some(normal(3, d, cfg.d_vocab)?),
        b_u: None,
        unembed_blocks: None,
        unembed_bf16: None,
    };
    HookedTransformer::new(mc, weights, dev)
}

/// Byte-level tokens of documents joined by blank lines: bytes below 128 are their own token,
/// others become `?` (so the vocabulary is 128).
pub fn text_tokens(docs: &[String]) -> Vec<u32> {
    docs.join("\n\n")
        .bytes()
        .map(|b| if b < 128 { b as u32 } else { b'?' as u32 })
        .collect()
}

/// The data behind a [`DataConfig`]: nothing for repeated tokens, the token stream for text.
#[derive(Debug, Clone)]
pub enum Data {
    Repeated {
        seq_len: usize,
        min_seq_len: usize,
        repeats: usize,
    },
    Text {
        train: Vec<u32>,
        eval: Vec<u32>,
    },
}

impl Data {
    /// Repeated random tokens, or a text split 90/10 into training and evaluation parts.
    pub fn new(cfg: &InductionConfig, text: Option<Vec<u32>>) -> Result<Data> {
        match (&cfg.data, text) {
            (
                DataConfig::Repeated {
                    seq_len,
                    min_seq_len,
                    repeats,
                },
                _,
            ) => Ok(Data::Repeated {
                seq_len: *seq_len,
                min_seq_len: *min_seq_len,
                repeats: *repeats,
            }),
            (DataConfig::Text { source }, Some(tokens)) => {
                if let Some(bad) = tokens.iter().find(|&&t| t as usize >= cfg.d_vocab) {
                    return Err(Error::Input(format!(
                        "token {bad} of {source} is outside the vocabulary of {}",
                        cfg.d_vocab
                    )));
                }
                let cut = tokens.len() * 9 / 10;
                if tokens.len() - cut < cfg.n_ctx || cut < cfg.n_ctx {
                    return Err(Error::Input(format!(
                        "{source} has {} tokens: too short for windows of {} (need {})",
                        tokens.len(),
                        cfg.n_ctx,
                        10 * cfg.n_ctx
                    )));
                }
                Ok(Data::Text {
                    eval: tokens[cut..].to_vec(),
                    train: tokens[..cut].to_vec(),
                })
            }
            (DataConfig::Text { source }, None) => {
                Err(Error::Input(format!("no text given for {source}")))
            }
        }
    }

    /// `n` sequences of `n_ctx` tokens from the generator seeded with `seed`; `held_out`
    /// draws text windows from the evaluation part.
    pub fn sample(
        &self,
        n: usize,
        n_ctx: usize,
        d_vocab: usize,
        seed: u64,
        held_out: bool,
    ) -> Vec<Vec<u32>> {
        let mut rng = SplitMix::new(seed);
        (0..n)
            .map(|_| match self {
                Data::Repeated {
                    seq_len,
                    min_seq_len,
                    repeats,
                } => {
                    // Evaluation sequences have the full length: the standard repeated-token test.
                    let len = if held_out {
                        *seq_len
                    } else {
                        min_seq_len + rng.below((seq_len - min_seq_len + 1) as u64) as usize
                    };
                    let once: Vec<u32> =
                        (0..len).map(|_| rng.below(d_vocab as u64) as u32).collect();
                    once.iter()
                        .cycle()
                        .take(seq_len * repeats)
                        .copied()
                        .collect()
                }
                Data::Text { train, eval } => {
                    let src = if held_out { eval } else { train };
                    let start = rng.below((src.len() - n_ctx + 1) as u64) as usize;
                    src[start..start + n_ctx].to_vec()
                }
            })
            .collect()
    }
}

/// Seed of the training batch of step `t`.
fn batch_seed(seed: u64, t: u64) -> u64 {
    seed.wrapping_mul(0xD1B5_4A32_D192_ED03)
        .wrapping_add(t.wrapping_mul(0x9E37_79B9))
        .wrapping_add(0x5EED)
}

/// The fixed evaluation batch of a run (`n` sequences; held-out text for text data), drawn from
/// a stream no training batch uses.
pub fn eval_batch(cfg: &InductionConfig, data: &Data, n: usize) -> Vec<Vec<u32>> {
    data.sample(
        n,
        cfg.n_ctx,
        cfg.d_vocab,
        batch_seed(cfg.seed ^ 0xE7A1_0000_0000, u64::MAX),
        true,
    )
}

/// A model in training.
pub struct Trainer {
    pub cfg: InductionConfig,
    /// The model; its weights share storage with the optimiser's Vars.
    pub model: HookedTransformer,
    opt: VarAdamW,
    /// Steps taken.
    pub step: usize,
    /// Training loss per step.
    pub loss_history: Vec<f64>,
}

/// A trainer's whole state, as a checkpoint holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub cfg: InductionConfig,
    pub step: usize,
    pub loss_history: Vec<f64>,
    /// Every parameter: name, shape, values.
    pub params: Vec<(String, Vec<usize>, Vec<f32>)>,
    pub opt: VarAdamWState,
}

impl Trainer {
    /// A freshly initialised model.
    pub fn new(cfg: InductionConfig) -> Result<Trainer> {
        let mut model = init_model(&cfg)?;
        let vars = model.weights.make_trainable()?;
        let opt = VarAdamW::new(vars, cfg.adamw());
        Ok(Trainer {
            cfg,
            model,
            opt,
            step: 0,
            loss_history: Vec::new(),
        })
    }

    /// Continue from a saved state; its parameters must fit the configuration.
    pub fn from_state(state: TrainState) -> Result<Trainer> {
        let mut model = init_model(&state.cfg)?;
        let mut params = state.params.into_iter();
        let mut err = None;
        model.weights.visit_mut(&mut |name, t| {
            match params.next() {
                Some((n, shape, v))
                    if n == name && shape == t.dims() && v.len() == t.elem_count() =>
                {
                    *t = Tensor::from_vec(v, shape, t.device())?;
                }
                other => {
                    err.get_or_insert(format!(
                        "checkpoint parameter {:?} does not fit the model's {name} {:?}",
                        other.map(|o| (o.0, o.1)),
                        t.dims()
                    ));
                }
            }
            Ok(())
        })?;
        if let Some(e) = err.or_else(|| params.next().map(|p| format!("extra parameter {}", p.0))) {
            return Err(Error::Input(e));
        }
        if state.loss_history.len() != state.step || state.step > state.cfg.steps {
            return Err(Error::Input(format!(
                "checkpoint at step {} holds {} losses (of {} steps)",
                state.step,
                state.loss_history.len(),
                state.cfg.steps
            )));
        }
        let vars = model.weights.make_trainable()?;
        let opt = VarAdamW::from_state(vars, state.opt)?;
        if opt.steps() != state.step as u64 {
            return Err(Error::Input(format!(
                "optimiser took {} steps, the checkpoint says {}",
                opt.steps(),
                state.step
            )));
        }
        Ok(Trainer {
            cfg: state.cfg,
            model,
            opt,
            step: state.step,
            loss_history: state.loss_history,
        })
    }

    /// The state to checkpoint.
    pub fn state(&self) -> Result<TrainState> {
        let params = self
            .model
            .weights
            .named()?
            .into_iter()
            .map(|(n, t)| -> Result<_> {
                Ok((n, t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TrainState {
            cfg: self.cfg.clone(),
            step: self.step,
            loss_history: self.loss_history.clone(),
            params,
            opt: self.opt.state(),
        })
    }

    /// The training batch of step `t` as a `[batch, n_ctx]` tensor.
    pub fn batch(&self, data: &Data, t: usize) -> Result<Tensor> {
        let c = &self.cfg;
        let seqs = data.sample(
            c.batch,
            c.n_ctx,
            c.d_vocab,
            batch_seed(c.seed, t as u64),
            false,
        );
        let flat: Vec<u32> = seqs.into_iter().flatten().collect();
        Ok(Tensor::from_vec(flat, (c.batch, c.n_ctx), &Device::Cpu)?)
    }

    /// One step on the batch of the current step: loss, backward, AdamW. Returns the loss
    /// before the update.
    pub fn train_step(&mut self, data: &Data) -> Result<f64> {
        let tokens = self.batch(data, self.step)?;
        self.step_on(&tokens)
    }

    /// One step on `tokens` `[batch, pos]` (u32): loss, backward, AdamW, recorded in the
    /// history. Returns the loss before the update.
    pub fn step_on(&mut self, tokens: &Tensor) -> Result<f64> {
        let tokens = tokens.clone();
        let (logits, _) =
            self.model
                .run(Input::Tokens(&tokens), &RunOptions::default(), None, None)?;
        let loss = next_token_loss(&logits, &tokens)?;
        let grads = loss.backward()?;
        self.opt.step(&grads)?;
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        self.loss_history.push(l);
        self.step += 1;
        Ok(l)
    }

    /// Train `steps` more steps (up to `cfg.steps` in all), calling `progress(step, loss)`
    /// after each. A non-finite loss stops training with an error.
    pub fn train(
        &mut self,
        data: &Data,
        steps: usize,
        progress: &mut dyn FnMut(usize, f64),
    ) -> Result<()> {
        let end = (self.step + steps).min(self.cfg.steps);
        while self.step < end {
            let l = self.train_step(data)?;
            if !l.is_finite() {
                return Err(Error::Input(format!(
                    "loss became {l} at step {}: lower the learning rate",
                    self.step
                )));
            }
            progress(self.step, l);
        }
        Ok(())
    }
}

/// Where the loss falls fastest: the `window`-step stretch whose smoothed loss drops most.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossDrop {
    /// First and last step of the steepest stretch (1-based step numbers).
    pub start: usize,
    pub end: usize,
    /// Smoothed loss at `start` and `end`.
    pub before: f64,
    pub after: f64,
}

/// The steepest `window`-step drop of the loss, smoothed by a moving average of `window` steps
/// (so a drop is measured between two averages over disjoint stretches). `None` when the
/// history is shorter than three windows.
pub fn steepest_drop(loss: &[f64], window: usize) -> Option<LossDrop> {
    let w = window.max(1);
    if loss.len() < 3 * w {
        return None;
    }
    // mean of loss[i..i + w] for every i.
    let mut prefix = vec![0.0; loss.len() + 1];
    for (i, l) in loss.iter().enumerate() {
        prefix[i + 1] = prefix[i] + l;
    }
    let avg = |i: usize| (prefix[i + w] - prefix[i]) / w as f64;
    let mut best: Option<LossDrop> = None;
    // Skip the first window: the fall from the random initialisation is not a phase change.
    for i in w..loss.len() - 2 * w + 1 {
        let (a, b) = (avg(i), avg(i + w));
        if best.is_none_or(|x| a - b > x.before - x.after) {
            best = Some(LossDrop {
                start: i + 1,
                end: i + 2 * w,
                before: a,
                after: b,
            });
        }
    }
    best
}

/// The in-context-learning score of Olsson et al. (2022): the mean loss of the prediction made
/// at a late position minus that at an early one. With `n` the context length, the early
/// position is `⌊n/10⌋` and the late one `n − 2` (the last prediction), the paper's 50 and 500
/// in a context of 512 up to rounding: `per_position[p]` is the mean loss of predicting token
/// `p + 1`. Returns (score, early, late).
pub fn icl_score(per_position: &[f64]) -> Option<(f64, usize, usize)> {
    let n = per_position.len() + 1;
    if n < 4 {
        return None;
    }
    let (early, late) = ((n / 10).max(1), n - 2);
    Some((per_position[late] - per_position[early], early, late))
}
