//! Activation inverter ("ML Chinese whispers", RESEARCH.md §9): from (part of) one layer's
//! activation at a position of a real model, guess the input token at that position, and see
//! how much of the input each layer still remembers.
//!
//! Pipeline: documents are tokenised (by the caller), split into train and test *by document*
//! with a seeded shuffle, run through the model once while the chosen hook of every layer is
//! cached ([`collect_activations`]), optionally cut to the first or a random subset of `dims`
//! features and a window of positions ([`Selection`]). Per layer a small network is trained
//! ([`Inverter`]): softmax regression (`hidden = 0`) or one ReLU hidden layer, on features
//! standardised with the training set's mean and standard deviation. The classes are the
//! tokens present in the corpus (train and test documents), not the whole vocabulary: a token
//! the corpus never shows cannot be a label.
//!
//! Forward and backward are written by hand (the matrix products are candle's, on the CPU
//! gemm; softmax cross-entropy is a slice loop), the optimiser is the fused in-place AdamW of
//! [`crate::optim`]. The minibatch order of epoch `e` of layer `l` comes from a generator seeded
//! with (seed, l, e), so a layer trains the same whether or not the run was resumed.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, WithDType};
use interplab_core::model::{HookName, HookedTransformer, Input, NameFilter, RunOptions};
use interplab_core::rng::SplitMix;
use interplab_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, AdamWConfig};

/// The default hook: the residual stream entering block `L`.
pub const DEFAULT_HOOK: &str = "blocks.{L}.hook_resid_pre";

/// What to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InverterConfig {
    /// Hook name with `{L}` for the layer, e.g. `blocks.{L}.hook_resid_pre`.
    pub hook: String,
    /// Layers to probe; for `hook_resid_pre`, `n_layers` names the final residual stream
    /// (`blocks.{n_layers-1}.hook_resid_post`).
    pub layers: Vec<usize>,
    /// Keep only this many features of the activation (all when `None`).
    pub dims: Option<usize>,
    /// Take the `dims` features at random (seeded) instead of the first ones.
    pub random_dims: bool,
    /// Keep only positions in `[start, end)` of each sequence.
    pub positions: Option<(usize, usize)>,
    /// Hidden ReLU units; 0 is softmax regression.
    pub hidden: usize,
    /// Passes over the training positions (at least; see `min_steps`).
    pub epochs: usize,
    /// Optimiser steps at least: a small corpus gets more epochs, so that it is not left
    /// undertrained by a count of epochs sized for a large one.
    pub min_steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of documents held out for testing.
    pub test_fraction: f64,
    pub seed: u64,
}

impl Default for InverterConfig {
    /// Softmax regression on the full residual stream entering each layer.
    fn default() -> Self {
        InverterConfig {
            hook: DEFAULT_HOOK.to_string(),
            layers: vec![0],
            dims: None,
            random_dims: false,
            positions: None,
            hidden: 0,
            epochs: 4,
            min_steps: 300,
            batch: 256,
            lr: 3e-3,
            weight_decay: 0.0,
            test_fraction: 0.2,
            seed: 0,
        }
    }
}

impl InverterConfig {
    /// Epochs actually run over `n_train` training positions: `epochs`, or more to reach
    /// `min_steps` steps.
    pub fn epochs_for(&self, n_train: usize) -> usize {
        let per_epoch = n_train.div_ceil(self.batch.max(1)).max(1);
        self.epochs.max(self.min_steps.div_ceil(per_epoch))
    }

    /// Check the numbers that do not need the model.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::Input("no layers to probe".into()));
        }
        if self.epochs == 0 || self.batch == 0 {
            return Err(Error::Input("epochs and batch must be positive".into()));
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return Err(Error::Input(format!(
                "test fraction {} is not in (0, 1)",
                self.test_fraction
            )));
        }
        if !(self.lr.is_finite()
            && self.lr > 0.0
            && self.weight_decay.is_finite()
            && self.weight_decay >= 0.0)
        {
            return Err(Error::Input(
                "the learning rate must be positive and weight decay non-negative".into(),
            ));
        }
        if self.dims == Some(0) {
            return Err(Error::Input("--dims must be positive".into()));
        }
        if let Some((a, b)) = self.positions {
            if a >= b {
                return Err(Error::Input(format!(
                    "the position window {a}..{b} is empty"
                )));
            }
        }
        if !self.hook.contains("{L}") {
            return Err(Error::Input(format!(
                "the hook {:?} has no {{L}} for the layer (e.g. {DEFAULT_HOOK})",
                self.hook
            )));
        }
        Ok(())
    }
}

/// The hook name of `layer` for a template, checked against the model's hook points.
pub fn hook_name(model: &HookedTransformer, template: &str, layer: usize) -> Result<String> {
    let n = model.cfg.n_layers;
    let names = model.hook_names();
    if template.contains("attn.hook_pattern") || template.contains("attn.hook_attn_scores") {
        return Err(Error::Hook(format!(
            "{template}: attention patterns are not one vector per position"
        )));
    }
    let name = if layer == n && template == DEFAULT_HOOK {
        HookName::ResidPost(n - 1).to_string()
    } else if layer >= n {
        let extra = if template == DEFAULT_HOOK {
            format!("; {n} is the final residual stream")
        } else {
            String::new()
        };
        return Err(Error::Input(format!(
            "layer {layer} is out of range: the model has layers 0..{}{extra}",
            n - 1
        )));
    } else {
        template.replace("{L}", &layer.to_string())
    };
    if !names.contains(&name) {
        return Err(Error::Hook(format!(
            "`{name}` is not a hook point of this model (see `interplab info MODEL` for the list)"
        )));
    }
    Ok(name)
}

/// Split `n_docs` documents into (train, test) indices with a seeded shuffle; both non-empty.
pub fn split_documents(
    n_docs: usize,
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if n_docs < 2 {
        return Err(Error::Input(format!(
            "the corpus has {n_docs} document(s); at least 2 are needed to hold one out"
        )));
    }
    let mut idx: Vec<usize> = (0..n_docs).collect();
    SplitMix::new(seed ^ 0x5EED_D0C5).shuffle(&mut idx);
    let n_test = ((n_docs as f64 * test_fraction).round() as usize).clamp(1, n_docs - 1);
    let mut test = idx[..n_test].to_vec();
    let mut train = idx[n_test..].to_vec();
    test.sort_unstable();
    train.sort_unstable();
    Ok((train, test))
}

/// Which features and positions of an activation to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Feature indices into the flattened activation at one position.
    pub features: Vec<usize>,
    /// Position window `[start, end)`.
    pub positions: (usize, usize),
}

impl Selection {
    /// The features a config keeps out of `width`.
    pub fn new(cfg: &InverterConfig, width: usize) -> Result<Selection> {
        let features = match cfg.dims {
            None => (0..width).collect(),
            Some(k) if k > width => {
                return Err(Error::Input(format!(
                    "--dims {k} is more than the activation's {width} features"
                )))
            }
            Some(k) if cfg.random_dims => {
                let mut all: Vec<usize> = (0..width).collect();
                SplitMix::new(cfg.seed ^ 0xD1A5).shuffle(&mut all);
                let mut f = all[..k].to_vec();
                f.sort_unstable();
                f
            }
            Some(k) => (0..k).collect(),
        };
        Ok(Selection {
            features,
            positions: cfg.positions.unwrap_or((0, usize::MAX)),
        })
    }
}

/// The examples: one row per kept position of every sequence, the same rows for every layer.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    /// Input token at the position.
    pub token: Vec<u32>,
    /// Position within its sequence.
    pub pos: Vec<u32>,
    /// Index of its sequence.
    pub seq: Vec<u32>,
    /// Whether the sequence is held out.
    pub test: Vec<bool>,
    /// Per hook: `[rows, features]` row-major.
    pub acts: Vec<Vec<f32>>,
    /// Features per row.
    pub width: usize,
}

/// Run `model` over `seqs` (token ids) and gather the selected part of every hook in
/// `hooks`, one row per kept position. `test[s]` marks held-out sequences; `progress(done)`
/// is called after each sequence. The forward stops after the deepest hook.
pub fn collect_activations(
    model: &HookedTransformer,
    seqs: &[Vec<u32>],
    test: &[bool],
    hooks: &[String],
    cfg: &InverterConfig,
    progress: &mut dyn FnMut(usize),
) -> Result<Examples> {
    if seqs.iter().all(|s| s.is_empty()) {
        return Err(Error::Input("the corpus has no tokens".into()));
    }
    let n = model.cfg.n_layers;
    let deepest = hooks
        .iter()
        .map(|h| layer_of(h).map_or(n, |l| l + 1))
        .max()
        .unwrap_or(n);
    let opts = RunOptions {
        stop_at_layer: Some(deepest.min(n)),
        ..Default::default()
    };
    let filter = NameFilter::new(hooks);
    let mut ex = Examples {
        acts: vec![Vec::new(); hooks.len()],
        ..Default::default()
    };
    let mut sel: Option<Selection> = None;
    // Sequences run in batches, right-padded: under the causal mask a real token never sees
    // the padding after it, so its activations are those of the unpadded sequence.
    let order: Vec<usize> = (0..seqs.len()).filter(|&s| !seqs[s].is_empty()).collect();
    let mut done = seqs.len() - order.len();
    for group in order.chunks(FORWARD_BATCH) {
        let width_t = group.iter().map(|&s| seqs[s].len()).max().unwrap_or(0);
        let mut flat = Vec::with_capacity(group.len() * width_t);
        for &s in group {
            flat.extend_from_slice(&seqs[s]);
            flat.extend(std::iter::repeat_n(seqs[s][0], width_t - seqs[s].len()));
        }
        let t = Tensor::from_vec(flat, (group.len(), width_t), model.device())?;
        let (_, cache) = model.run(Input::Tokens(&t), &opts, None, Some(&filter))?;
        for (h, name) in hooks.iter().enumerate() {
            let a = cache.get(name)?;
            let dims = a.dims().to_vec();
            if dims.len() < 3 || dims[0] != group.len() || dims[1] != width_t {
                return Err(Error::Hook(format!(
                    "{name} has shape {dims:?}, not [batch, positions, ...]: not one vector per position"
                )));
            }
            let width: usize = dims[2..].iter().product();
            if sel.is_none() {
                sel = Some(Selection::new(cfg, width)?);
                ex.width = sel.as_ref().map_or(0, |s| s.features.len());
            }
            let sel = sel.as_ref().expect("set above");
            if sel.features.iter().any(|&f| f >= width) || (cfg.dims.is_none() && width != ex.width)
            {
                return Err(Error::Hook(format!(
                    "the hooks have different widths ({name} has {width})"
                )));
            }
            let a = a
                .reshape((group.len() * width_t, width))?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let (p0, p1) = sel.positions;
            for (b, &s) in group.iter().enumerate() {
                let ids = &seqs[s];
                for p in p0..p1.min(ids.len()) {
                    let row = &a[(b * width_t + p) * width..(b * width_t + p + 1) * width];
                    ex.acts[h].extend(sel.features.iter().map(|&f| row[f]));
                    if h == 0 {
                        ex.token.push(ids[p]);
                        ex.pos.push(p as u32);
                        ex.seq.push(s as u32);
                        ex.test.push(test.get(s).copied().unwrap_or(false));
                    }
                }
            }
        }
        done += group.len();
        progress(done);
    }
    if ex.token.is_empty() {
        return Err(Error::Input(
            "no positions left: the position window lies beyond every sequence".into(),
        ));
    }
    if !ex.test.iter().any(|&t| t) || ex.test.iter().all(|&t| t) {
        return Err(Error::Input(
            "the split left no training or no test positions (try more documents)".into(),
        ));
    }
    Ok(ex)
}

/// Sequences per forward call.
const FORWARD_BATCH: usize = 8;

/// The block index in a `blocks.L.*` name.
fn layer_of(name: &str) -> Option<usize> {
    HookName::parse(name)?.layer()
}

/// The label set: the tokens present in the corpus, sorted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classes {
    pub tokens: Vec<u32>,
}

impl Classes {
    /// The distinct tokens of `tokens`.
    pub fn from_tokens(tokens: &[u32]) -> Classes {
        let mut t = tokens.to_vec();
        t.sort_unstable();
        t.dedup();
        Classes { tokens: t }
    }

    /// The class index of a token.
    pub fn index(&self, token: u32) -> Option<usize> {
        self.tokens.binary_search(&token).ok()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// A softmax regression or one-hidden-layer ReLU network from `d` features to `c` classes,
/// with all parameters in one buffer: `[W1 (d×h) | b1 (h) | W2 (h×c) | b2 (c)]`, or
/// `[W (d×c) | b (c)]` when `h = 0`. Inputs are standardised with `mean` and `std`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inverter {
    pub d: usize,
    pub hidden: usize,
    pub classes: usize,
    pub params: Vec<f32>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Shapes of the parameter blocks, in buffer order.
fn shapes(d: usize, h: usize, c: usize) -> Vec<(usize, usize)> {
    if h == 0 {
        vec![(d, c), (1, c)]
    } else {
        vec![(d, h), (1, h), (h, c), (1, c)]
    }
}

impl Inverter {
    /// Initialised weights: softmax regression starts at zero (its loss is convex); the hidden
    /// layer uses He-normal, the output layer normal with std 1/√h.
    pub fn new(d: usize, hidden: usize, classes: usize, seed: u64) -> Inverter {
        let mut rng = SplitMix::new(seed ^ 0x1417_E47E);
        let mut params = Vec::new();
        for (i, (r, c)) in shapes(d, hidden, classes).into_iter().enumerate() {
            let std = match (hidden, i) {
                (0, _) | (_, 1) | (_, 3) => 0.0,
                (_, 0) => (2.0 / d as f64).sqrt(),
                _ => 1.0 / (hidden as f64).sqrt(),
            };
            params.extend((0..r * c).map(|_| (rng.normal() * std) as f32));
        }
        Inverter {
            d,
            hidden,
            classes,
            params,
            mean: vec![0.0; d],
            std: vec![1.0; d],
        }
    }

    /// Standardised rows `idx` of `x` (`[rows, d]`), as a `[idx.len(), d]` buffer.
    fn gather(&self, x: &[f32], idx: &[usize]) -> Vec<f32> {
        let d = self.d;
        let mut out = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            let row = &x[i * d..(i + 1) * d];
            out.extend(
                row.iter()
                    .zip(&self.mean)
                    .zip(&self.std)
                    .map(|((v, m), s)| (v - m) / s),
            );
        }
        out
    }

    /// The parameters as named tensors, for safetensors: `W` `[d, classes]` and `b`
    /// `[classes]` for softmax regression, else `W1` `[d, hidden]`, `b1`, `W2`
    /// `[hidden, classes]`, `b2`; and the standardisation `mean` and `std` `[d]`.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let names: &[&str] = if self.hidden == 0 {
            &["W", "b"]
        } else {
            &["W1", "b1", "W2", "b2"]
        };
        let p = params_as_tensors(&self.params, self.d, self.hidden, self.classes)?;
        let mut out = Vec::new();
        for (name, t) in names.iter().zip(p) {
            let t = if name.starts_with('b') {
                t.flatten_all()?
            } else {
                t
            };
            out.push((name.to_string(), t));
        }
        out.push((
            "mean".into(),
            Tensor::new(self.mean.as_slice(), &Device::Cpu)?,
        ));
        out.push((
            "std".into(),
            Tensor::new(self.std.as_slice(), &Device::Cpu)?,
        ));
        Ok(out)
    }

    /// Class probabilities of rows `idx` of `x`, `[idx.len(), classes]`.
    pub fn probabilities(&self, x: &[f32], idx: &[usize]) -> Result<Vec<f32>> {
        let xb = self.gather(x, idx);
        let xt = Tensor::from_vec(xb, (idx.len(), self.d), &Device::Cpu)?;
        let p = params_as_tensors(&self.params, self.d, self.hidden, self.classes)?;
        let (logits, _) = forward(&xt, &p)?;
        let mut l = logits.flatten_all()?.to_vec1::<f32>()?;
        for row in l.chunks_exact_mut(self.classes) {
            softmax_in_place(row);
        }
        Ok(l)
    }
}

/// Views of a flat buffer as the parameter tensors (copies; the buffer stays the master).
fn params_as_tensors<T: WithDType>(
    params: &[T],
    d: usize,
    h: usize,
    c: usize,
) -> Result<Vec<Tensor>> {
    let mut off = 0;
    let mut out = Vec::new();
    for (r, k) in shapes(d, h, c) {
        out.push(Tensor::from_slice(
            &params[off..off + r * k],
            (r, k),
            &Device::Cpu,
        )?);
        off += r * k;
    }
    Ok(out)
}

/// Logits `[b, c]` and the hidden activations (when there is a hidden layer).
fn forward(x: &Tensor, p: &[Tensor]) -> Result<(Tensor, Option<Tensor>)> {
    if p.len() == 2 {
        Ok((x.matmul(&p[0])?.broadcast_add(&p[1])?, None))
    } else {
        let h = x.matmul(&p[0])?.broadcast_add(&p[1])?.relu()?;
        Ok((h.matmul(&p[2])?.broadcast_add(&p[3])?, Some(h)))
    }
}

/// The float types the inverter computes in: f32 to train, f64 for gradient checks.
pub trait Real: WithDType {
    fn exp(self) -> Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// Softmax of one row, in place, in the row's own precision.
fn softmax_in_place<T: Real>(row: &mut [T]) {
    let max = row
        .iter()
        .copied()
        .fold(row[0], |m, v| if v > m { v } else { m });
    let mut sum = T::from_f64(0.0);
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = T::from_f64(1.0) / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Mean cross-entropy of standardised inputs `x` (`[b, d]`, dtype `T`) with class labels `y`,
/// and its gradient with respect to the flat parameter buffer. Written by hand:
/// `∂L/∂logits = (softmax − onehot)/b`, then back through the (ReLU) layers.
pub fn loss_and_grad<T: Real>(
    params: &[T],
    d: usize,
    hidden: usize,
    classes: usize,
    x: &[T],
    y: &[u32],
) -> Result<(f64, Vec<T>)> {
    let b = y.len();
    if x.len() != b * d {
        return Err(Error::Input(format!(
            "{} inputs for {b} labels of width {d}",
            x.len()
        )));
    }
    let p = params_as_tensors(params, d, hidden, classes)?;
    let xt = Tensor::from_slice(x, (b, d), &Device::Cpu)?;
    let (logits, h) = forward(&xt, &p)?;
    let mut g = logits.flatten_all()?.to_vec1::<T>()?;
    let mut loss = 0.0;
    let inv_b = 1.0 / b as f64;
    for (row, &yi) in g.chunks_exact_mut(classes).zip(y) {
        let yi = yi as usize;
        if yi >= classes {
            return Err(Error::Input(format!("label {yi} of {classes} classes")));
        }
        softmax_in_place(row);
        loss -= row[yi].to_f64().max(f64::MIN_POSITIVE).ln();
        row[yi] -= T::from_f64(1.0);
        let scale = T::from_f64(inv_b);
        for v in row.iter_mut() {
            *v *= scale;
        }
    }
    let dlogits = Tensor::from_vec(g, (b, classes), &Device::Cpu)?;
    let db_out = dlogits.sum(0)?;
    let mut grads: Vec<Tensor> = match &h {
        None => vec![xt.t()?.matmul(&dlogits)?, db_out],
        Some(h) => {
            let dw2 = h.t()?.matmul(&dlogits)?;
            let mask = h.gt(0.0)?.to_dtype(h.dtype())?;
            let dh = dlogits.matmul(&p[2].t()?)?.mul(&mask)?;
            vec![xt.t()?.matmul(&dh)?, dh.sum(0)?, dw2, db_out]
        }
    };
    let mut flat = Vec::with_capacity(params.len());
    for t in grads.drain(..) {
        flat.extend(t.flatten_all()?.to_vec1::<T>()?);
    }
    Ok((loss * inv_b, flat))
}

/// Accuracy of one group of test positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub n: usize,
    pub top1: f64,
    pub topk: f64,
}

/// A guess at one held-out position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guess {
    pub seq: u32,
    pub pos: u32,
    pub token: u32,
    /// The top-k tokens with their probabilities.
    pub top: Vec<(u32, f32)>,
}

/// The trained inverter of one layer, measured on the held-out documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerResult {
    pub layer: usize,
    pub hook: String,
    /// Mean training loss per epoch.
    pub train_loss: Vec<f64>,
    /// Accuracy on the training positions.
    pub train: Accuracy,
    /// Accuracy on every held-out position.
    pub test: Accuracy,
    /// Accuracy on held-out positions whose token occurs in the training documents.
    pub test_seen: Accuracy,
    /// Held-out accuracy per position bucket ([`BUCKETS`]).
    pub buckets: Vec<Accuracy>,
    /// Guesses at the sample positions.
    pub samples: Vec<Guess>,
}

/// Position buckets `[lo, hi)`: single positions 0..3, then powers of two.
pub const BUCKETS: [(u32, u32); 9] = [
    (0, 1),
    (1, 2),
    (2, 4),
    (4, 8),
    (8, 16),
    (16, 32),
    (32, 64),
    (64, 128),
    (128, u32::MAX),
];

/// A bucket's label, e.g. `4–7`.
pub fn bucket_label(i: usize) -> String {
    let (lo, hi) = BUCKETS[i];
    if hi == u32::MAX {
        format!("{lo}+")
    } else if hi == lo + 1 {
        lo.to_string()
    } else {
        format!("{lo}–{}", hi - 1)
    }
}

/// Chance levels on the held-out positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    /// Classes (tokens present in the corpus).
    pub classes: usize,
    /// Uniform guessing: 1/C and k/C.
    pub uniform_top1: f64,
    pub uniform_topk: f64,
    /// Always answering the most frequent training token(s).
    pub frequent_top1: f64,
    pub frequent_topk: f64,
    /// The k most frequent training tokens.
    pub frequent_tokens: Vec<u32>,
    /// Share of held-out positions whose token occurs in the training documents (the ceiling).
    pub seen_fraction: f64,
}

/// The prepared problem: labels, split and the sample positions, shared by every layer.
#[derive(Debug, Clone)]
pub struct Problem {
    pub classes: Classes,
    pub labels: Vec<u32>,
    pub train: Vec<usize>,
    pub test: Vec<usize>,
    /// Held-out rows whose token occurs in training.
    pub test_seen: Vec<usize>,
    /// Rows shown as samples.
    pub sample_rows: Vec<usize>,
    pub baselines: Baselines,
    pub top_k: usize,
}

impl Problem {
    /// Labels, split, baselines and `samples` held-out sequences' first `sample_len` positions.
    pub fn new(ex: &Examples, top_k: usize, samples: usize, sample_len: usize) -> Problem {
        let classes = Classes::from_tokens(&ex.token);
        let labels: Vec<u32> = ex
            .token
            .iter()
            .map(|&t| classes.index(t).expect("every token is a class") as u32)
            .collect();
        let train: Vec<usize> = (0..labels.len()).filter(|&i| !ex.test[i]).collect();
        let test: Vec<usize> = (0..labels.len()).filter(|&i| ex.test[i]).collect();
        let mut count = vec![0usize; classes.len()];
        for &i in &train {
            count[labels[i] as usize] += 1;
        }
        let test_seen: Vec<usize> = test
            .iter()
            .copied()
            .filter(|&i| count[labels[i] as usize] > 0)
            .collect();
        let mut order: Vec<usize> = (0..classes.len()).collect();
        order.sort_by(|&a, &b| count[b].cmp(&count[a]).then(a.cmp(&b)));
        let frequent: Vec<usize> = order.into_iter().take(top_k).collect();
        let hits = |k: usize| {
            test.iter()
                .filter(|&&i| frequent[..k.min(frequent.len())].contains(&(labels[i] as usize)))
                .count() as f64
                / test.len() as f64
        };
        let c = classes.len() as f64;
        let baselines = Baselines {
            classes: classes.len(),
            uniform_top1: 1.0 / c,
            uniform_topk: (top_k as f64 / c).min(1.0),
            frequent_top1: hits(1),
            frequent_topk: hits(top_k),
            frequent_tokens: frequent.iter().map(|&k| classes.tokens[k]).collect(),
            seen_fraction: test_seen.len() as f64 / test.len() as f64,
        };
        let mut seqs: Vec<u32> = test.iter().map(|&i| ex.seq[i]).collect();
        seqs.dedup();
        let chosen: Vec<u32> = seqs.into_iter().take(samples).collect();
        let mut per_seq: HashMap<u32, usize> = HashMap::new();
        let sample_rows = test
            .iter()
            .copied()
            .filter(|&i| {
                if !chosen.contains(&ex.seq[i]) {
                    return false;
                }
                let n = per_seq.entry(ex.seq[i]).or_insert(0);
                *n += 1;
                *n <= sample_len
            })
            .collect();
        Problem {
            classes,
            labels,
            train,
            test,
            test_seen,
            sample_rows,
            baselines,
            top_k,
        }
    }
}

/// Train the inverter of layer `layer` on hook `h` of `ex`, calling `progress(epoch, loss)`
/// after each epoch, and measure it.
pub fn train_layer(
    cfg: &InverterConfig,
    ex: &Examples,
    h: usize,
    layer: usize,
    hook: &str,
    prob: &Problem,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<(Inverter, LayerResult)> {
    let d = ex.width;
    let x = &ex.acts[h];
    let mut inv = Inverter::new(d, cfg.hidden, prob.classes.len(), cfg.seed ^ layer as u64);
    // Standardise with the training rows' statistics (f64 sums).
    let (mut s, mut s2) = (vec![0.0f64; d], vec![0.0f64; d]);
    for &i in &prob.train {
        for (j, &v) in x[i * d..(i + 1) * d].iter().enumerate() {
            s[j] += v as f64;
            s2[j] += v as f64 * v as f64;
        }
    }
    let n = prob.train.len() as f64;
    for j in 0..d {
        let m = s[j] / n;
        let var = (s2[j] / n - m * m).max(0.0);
        inv.mean[j] = m as f32;
        inv.std[j] = if var > 1e-12 { var.sqrt() as f32 } else { 1.0 };
    }
    let mut opt = AdamW::new(
        AdamWConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
        inv.params.len(),
    );
    let mut losses = Vec::new();
    let mut order = prob.train.clone();
    for epoch in 0..cfg.epochs_for(prob.train.len()) {
        let mut rng = SplitMix::new(
            cfg.seed
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add((layer as u64) << 32)
                .wrapping_add(epoch as u64),
        );
        rng.shuffle(&mut order);
        let (mut total, mut count) = (0.0, 0usize);
        for idx in order.chunks(cfg.batch) {
            let xb = inv.gather(x, idx);
            let yb: Vec<u32> = idx.iter().map(|&i| prob.labels[i]).collect();
            let (loss, g) = loss_and_grad(&inv.params, d, inv.hidden, inv.classes, &xb, &yb)?;
            opt.step(&mut inv.params, &g);
            total += loss * idx.len() as f64;
            count += idx.len();
        }
        let mean = total / count as f64;
        losses.push(mean);
        progress(epoch + 1, mean);
    }
    // Top-k of every train and test row.
    let k = prob.top_k.min(prob.classes.len());
    let ranked = |rows: &[usize]| -> Result<Vec<Vec<(u32, f32)>>> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(1024) {
            let p = inv.probabilities(x, chunk)?;
            for row in p.chunks_exact(inv.classes) {
                out.push(top_k(row, k));
            }
        }
        Ok(out)
    };
    let acc = |rows: &[usize], top: &[Vec<(u32, f32)>]| -> Accuracy {
        let (mut h1, mut hk) = (0usize, 0usize);
        for (&i, t) in rows.iter().zip(top) {
            let y = prob.labels[i];
            h1 += usize::from(t.first().is_some_and(|g| g.0 == y));
            hk += usize::from(t.iter().any(|g| g.0 == y));
        }
        let n = rows.len().max(1) as f64;
        Accuracy {
            n: rows.len(),
            top1: h1 as f64 / n,
            topk: hk as f64 / n,
        }
    };
    let train_top = ranked(&prob.train)?;
    let test_top = ranked(&prob.test)?;
    let by_row: HashMap<usize, usize> =
        prob.test.iter().enumerate().map(|(j, &i)| (i, j)).collect();
    let subset = |rows: &[usize]| -> Vec<Vec<(u32, f32)>> {
        rows.iter().map(|i| test_top[by_row[i]].clone()).collect()
    };
    let buckets = BUCKETS
        .iter()
        .map(|&(lo, hi)| {
            let rows: Vec<usize> = prob
                .test
                .iter()
                .copied()
                .filter(|&i| ex.pos[i] >= lo && ex.pos[i] < hi)
                .collect();
            acc(&rows, &subset(&rows))
        })
        .collect();
    let samples = prob
        .sample_rows
        .iter()
        .map(|&i| Guess {
            seq: ex.seq[i],
            pos: ex.pos[i],
            token: ex.token[i],
            top: test_top[by_row[&i]]
                .iter()
                .map(|&(c, p)| (prob.classes.tokens[c as usize], p))
                .collect(),
        })
        .collect();
    let result = LayerResult {
        layer,
        hook: hook.to_string(),
        train_loss: losses,
        train: acc(&prob.train, &train_top),
        test: acc(&prob.test, &test_top),
        test_seen: acc(&prob.test_seen, &subset(&prob.test_seen)),
        buckets,
        samples,
    };
    Ok((inv, result))
}

/// The `k` largest entries of `row` as (index, value), largest first (ties: lower index).
fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &v) in row.iter().enumerate() {
        if best.len() == k && best.last().is_some_and(|b| v <= b.1) {
            continue;
        }
        let at = best.partition_point(|b| b.1 >= v);
        best.insert(at, (i as u32, v));
        best.truncate(k);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        assert_eq!(
            top_k(&[0.1, 0.5, 0.2, 0.5, 0.0], 3),
            vec![(1, 0.5), (3, 0.5), (2, 0.2)]
        );
        assert_eq!(top_k(&[0.3], 5), vec![(0, 0.3)]);
    }

    #[test]
    fn split_is_seeded_disjoint_and_covers() {
        let (tr, te) = split_documents(10, 0.2, 3).unwrap();
        assert_eq!(te.len(), 2);
        let mut all: Vec<usize> = tr.iter().chain(&te).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(split_documents(10, 0.2, 3).unwrap(), (tr, te));
        assert!(split_documents(1, 0.2, 0).is_err());
    }

    #[test]
    fn selection_first_or_seeded_random_dims() {
        let mut cfg = InverterConfig {
            dims: Some(4),
            ..Default::default()
        };
        assert_eq!(Selection::new(&cfg, 10).unwrap().features, vec![0, 1, 2, 3]);
        cfg.random_dims = true;
        let f = Selection::new(&cfg, 10).unwrap().features;
        assert_eq!(f.len(), 4);
        assert!(f.windows(2).all(|w| w[0] < w[1]) && f[3] < 10);
        assert_eq!(Selection::new(&cfg, 10).unwrap().features, f);
        cfg.seed = 1;
        assert_ne!(Selection::new(&cfg, 10).unwrap().features, f);
        cfg.dims = Some(11);
        assert!(Selection::new(&cfg, 10).is_err());
    }

    #[test]
    fn bucket_labels() {
        assert_eq!(bucket_label(0), "0");
        assert_eq!(bucket_label(2), "2–3");
        assert_eq!(bucket_label(8), "128+");
    }
}
