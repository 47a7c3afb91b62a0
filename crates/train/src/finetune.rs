//! Full fine-tuning of a loaded model on a token stream: next-token cross-entropy, the fused
//! AdamW of [`crate::optim_var`], a linear learning-rate warm-up, binary checkpoints and
//! bit-exact resume.
//!
//! The token stream is packed into consecutive blocks of `seq_len` tokens (as transformers'
//! `run_clm` groups texts); batch `t` is `batch` blocks drawn from a SplitMix stream seeded by
//! `(seed, t)` only, so a resumed run sees exactly the batches an uninterrupted one would. A checkpoint is one safetensors file holding every parameter
//! (`param.NAME`) and both Adam moments (`m.NAME`, `v.NAME`) in f32, with the step, the loss
//! history and the config as JSON in its metadata; it is written to a temporary name and
//! renamed, so an interruption leaves the previous checkpoint whole.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use interplab_core::model::{next_token_loss, HookedTransformer, Input, RunOptions};
use interplab_core::rng::SplitMix;
use interplab_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, AdamWConfig};
use crate::optim_var::{VarAdamW, VarAdamWState};

/// How to fine-tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Optimiser steps in all.
    pub steps: usize,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Peak learning rate (reached after `warmup` steps, then constant).
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the batch offsets.
    pub seed: u64,
    /// Products with bf16 inputs and f32 sums in the forward and backward of the block
    /// matrices and the unembedding (mixed precision, as PyTorch's bf16 autocast; weights,
    /// gradients and AdamW stay f32). Off: every product in f32.
    pub bf16_products: bool,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            steps: 200,
            batch: 8,
            seq_len: 128,
            lr: 5e-5,
            warmup: 20,
            weight_decay: 0.0,
            seed: 0,
            bf16_products: false,
        }
    }
}

impl FinetuneConfig {
    /// Every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut p = Vec::new();
        if self.steps == 0 {
            p.push("steps must be at least 1".to_string());
        }
        if self.batch == 0 {
            p.push("batch must be at least 1".to_string());
        }
        if self.seq_len < 2 {
            p.push(format!("seq_len must be at least 2, got {}", self.seq_len));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            p.push(format!("lr must be a positive number, got {}", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            p.push(format!(
                "weight_decay must be finite and at least 0, got {}",
                self.weight_decay
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(Error::Input(format!("fine-tuning: {}", p.join("; "))))
        }
    }

    /// The learning rate of step `t` (0-based): linear warm-up to `lr`, then `lr`.
    pub fn lr_at(&self, t: usize) -> f64 {
        if self.warmup == 0 {
            self.lr
        } else {
            self.lr * ((t + 1) as f64 / self.warmup as f64).min(1.0)
        }
    }

    fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            weight_decay: self.weight_decay,
            ..Default::default()
        }
    }
}

/// A model in fine-tuning: its own copy of the weights, trainable.
pub struct Finetuner {
    pub cfg: FinetuneConfig,
    /// The model being trained (weights share storage with the optimiser's Vars).
    pub model: HookedTransformer,
    opt: VarAdamW,
    /// Steps taken.
    pub step: usize,
    /// Training loss of every step taken.
    pub loss_history: Vec<f64>,
}

/// What a checkpoint's metadata holds besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    cfg: FinetuneConfig,
    step: usize,
    loss_history: Vec<f64>,
    names: Vec<String>,
}

impl Finetuner {
    /// Start from `base`'s weights (copied: `base` is left as it is).
    pub fn new(base: &HookedTransformer, cfg: FinetuneConfig) -> Result<Finetuner> {
        cfg.validate()?;
        let mut model = base.clone();
        model.bf16_products = cfg.bf16_products;
        let vars = model.weights.make_trainable()?;
        let opt = VarAdamW::new(vars, cfg.adamw());
        Ok(Finetuner {
            cfg,
            model,
            opt,
            step: 0,
            loss_history: Vec::new(),
        })
    }

    /// Continue from a checkpoint written by [`Self::save`] for a model of `base`'s shape; the
    /// checkpoint's config must equal `cfg` except for `steps`, which may grow.
    pub fn resume(base: &HookedTransformer, cfg: FinetuneConfig, path: &Path) -> Result<Finetuner> {
        cfg.validate()?;
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| Error::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors checkpoint: {e}")))?;
        let meta: Meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("finetune"))
            .ok_or_else(|| bad("no fine-tuning state in its metadata".into()))
            .and_then(|s| {
                serde_json::from_str(s).map_err(|e| bad(format!("fine-tuning state: {e}")))
            })?;
        let same = FinetuneConfig {
            steps: meta.cfg.steps,
            ..cfg.clone()
        };
        if same != meta.cfg {
            return Err(Error::Input(format!(
                "{}: the checkpoint was written with another config ({:?}); resume with the same \
                 one",
                path.display(),
                meta.cfg
            )));
        }
        if meta.step > cfg.steps || meta.loss_history.len() != meta.step {
            return Err(bad(format!(
                "checkpoint at step {} with {} losses, for {} steps",
                meta.step,
                meta.loss_history.len(),
                cfg.steps
            )));
        }
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors checkpoint: {e}")))?;
        let read = |name: &str, n: usize| -> Result<Vec<f32>> {
            let v = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor {name}")))?;
            if v.dtype() != safetensors::Dtype::F32 || v.data().len() != 4 * n {
                return Err(bad(format!("tensor {name} has the wrong type or size")));
            }
            Ok(v.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let mut model = base.clone();
        let mut names = meta.names.iter();
        let mut err = None;
        model.weights.visit_mut(&mut |name, t| {
            if err.is_some() {
                return Ok(());
            }
            if names.next().map(String::as_str) != Some(name) {
                err = Some(bad(format!(
                    "parameter {name} is not where the checkpoint has it"
                )));
                return Ok(());
            }
            match read(&format!("param.{name}"), t.elem_count()) {
                Ok(v) => *t = Tensor::from_vec(v, t.dims(), t.device())?,
                Err(e) => err = Some(e),
            }
            Ok(())
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        model.bf16_products = cfg.bf16_products;
        let vars = model.weights.make_trainable()?;
        let mut states = Vec::with_capacity(vars.len());
        for (name, var) in &vars {
            let n = var.elem_count();
            states.push((
                name.clone(),
                AdamW {
                    cfg: cfg.adamw(),
                    t: meta.step as u64,
                    m: read(&format!("m.{name}"), n)?,
                    v: read(&format!("v.{name}"), n)?,
                },
            ));
        }
        let opt = VarAdamW::from_state(vars, VarAdamWState { states })?;
        Ok(Finetuner {
            cfg,
            model,
            opt,
            step: meta.step,
            loss_history: meta.loss_history,
        })
    }

    /// Write the whole state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let state = self.opt.state();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut names = Vec::new();
        for ((name, var), (_, s)) in self.opt.vars().iter().zip(&state.states) {
            let dims = var.dims().to_vec();
            let p: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            tensors.push((format!("param.{name}"), dims.clone(), le(&p)));
            tensors.push((format!("m.{name}"), dims.clone(), le(&s.m)));
            tensors.push((format!("v.{name}"), dims, le(&s.v)));
            names.push(name.clone());
        }
        let meta = Meta {
            cfg: self.cfg.clone(),
            step: self.step,
            loss_history: self.loss_history.clone(),
            names,
        };
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, d, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, d.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Input(format!("checkpoint tensor {n}: {e}")))
            })
            .collect::<Result<_>>()?;
        let info: HashMap<String, String> = [(
            "finetune".to_string(),
            serde_json::to_string(&meta).map_err(|e| Error::Input(e.to_string()))?,
        )]
        .into();
        let bytes = safetensors::serialize(views, Some(info))
            .map_err(|e| Error::Input(format!("serialising checkpoint: {e}")))?;
        interplab_core::atomic::write_atomic(path, &bytes)
    }

    /// The batch of step `t` from `stream` as `[batch, seq_len]` token ids.
    pub fn batch(&self, stream: &[u32], t: usize) -> Result<Tensor> {
        let c = &self.cfg;
        if stream.len() < c.seq_len {
            return Err(Error::Input(format!(
                "the training text has {} tokens, fewer than one sequence of {}",
                stream.len(),
                c.seq_len
            )));
        }
        let blocks = (stream.len() / c.seq_len) as u64;
        // The generator's state is a hash of (seed, t): seeding with `seed ^ t·γ` (γ the
        // splitmix increment) would make batch t + 1 repeat 31 of batch t's 32 rows.
        let key = c.seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ t as u64;
        let mut rng = SplitMix(SplitMix(key).next_u64());
        let mut ids = Vec::with_capacity(c.batch * c.seq_len);
        for _ in 0..c.batch {
            let o = (rng.next_u64() % blocks) as usize * c.seq_len;
            ids.extend_from_slice(&stream[o..o + c.seq_len]);
        }
        Ok(Tensor::from_vec(
            ids,
            (c.batch, c.seq_len),
            self.model.device(),
        )?)
    }

    /// One step on the batch of the current step: loss, backward, AdamW at the step's learning
    /// rate. Returns the loss before the update; a non-finite loss is an error.
    pub fn train_step(&mut self, stream: &[u32]) -> Result<f64> {
        let tokens = self.batch(stream, self.step)?;
        let (logits, _) =
            self.model
                .run(Input::Tokens(&tokens), &RunOptions::default(), None, None)?;
        let loss = next_token_loss(&logits, &tokens)?;
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !l.is_finite() {
            return Err(Error::Input(format!(
                "loss became {l} at step {}: lower the learning rate",
                self.step
            )));
        }
        let grads = loss.backward()?;
        self.opt.set_lr(self.cfg.lr_at(self.step));
        self.opt.step(&grads)?;
        self.loss_history.push(l);
        self.step += 1;
        Ok(l)
    }
}
