//! Grokking: modular addition learnt by a one-layer transformer (Power et al. 2022), set up as
//! in Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability".
//!
//! Task: inputs `a b =` (tokens `a`, `b` < p and `=` = p), target `(a + b) mod p`; a seeded
//! shuffle of the p² pairs, the first `frac_train` of them for training, the rest for test.
//!
//! Model: TransformerLens' `HookedTransformer` with `n_layers = 1`, `n_ctx = 3`,
//! `d_vocab = p + 1`, `d_vocab_out = p`, `normalization_type = None`, `act_fn = "relu"`,
//! biases fixed at zero (the paper freezes them), attention scaled by 1/√d_head with a causal
//! mask, no final norm; loss the mean cross-entropy of the last position's logits (in f64).
//! Parameters carry TransformerLens' names and shapes (`embed.W_E` `[p+1, d_model]`,
//! `blocks.0.attn.W_Q` `[n_heads, d_model, d_head]`, `blocks.0.attn.W_O`
//! `[n_heads, d_head, d_model]`, `blocks.0.mlp.W_in` `[d_model, d_mlp]`, `unembed.W_U`
//! `[d_model, p]`, ...) and are initialised like TransformerLens: normal with std
//! 0.8/√d_model. Full-batch AdamW (PyTorch semantics).
//!
//! Speed: the loss reads only the last position, and with one layer and three fixed positions
//! every per-token quantity of positions 0 and 1 (keys, values, their images through W_O, W_in
//! and W_U) depends on one token only, and position 2 is always `=`. So each epoch first builds
//! small tables over the p tokens (`Tables`) and then, per example, only mixes table rows with
//! the attention pattern, applies the ReLU, and multiplies by `W_out·W_U`. Backward runs the
//! same chain in reverse; gradients reach the weights through the tables. `forward_reference`
//! is the plain three-position transformer, kept to prove the two agree.

use interplab_core::rng::SplitMix;
use interplab_core::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

use crate::linalg::matmul;
use crate::optim::{AdamW, AdamWConfig};

/// What to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrokkingConfig {
    /// The modulus (a prime in the paper).
    pub p: usize,
    /// Fraction of the p² pairs used for training.
    pub frac_train: f64,
    pub d_model: usize,
    pub n_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Full-batch epochs.
    pub epochs: usize,
    /// Log metrics every this many epochs (and at the last).
    pub log_every: usize,
    /// Seeds the initialisation and the train/test split.
    pub seed: u64,
}

impl Default for GrokkingConfig {
    /// Nanda et al. 2023: p = 113, 30% train, d_model 128, 4 heads of 32, d_mlp 512, AdamW
    /// lr 1e-3, wd 1, betas (0.9, 0.98).
    fn default() -> Self {
        GrokkingConfig {
            p: 113,
            frac_train: 0.3,
            d_model: 128,
            n_heads: 4,
            d_head: 32,
            d_mlp: 512,
            lr: 1e-3,
            weight_decay: 1.0,
            beta1: 0.9,
            beta2: 0.98,
            epochs: 20_000,
            log_every: 100,
            seed: 0,
        }
    }
}

impl GrokkingConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Input(m.to_string()));
        if self.p < 3 {
            return bad("p must be at least 3");
        }
        if self.d_model == 0 || self.n_heads == 0 || self.d_head == 0 || self.d_mlp == 0 {
            return bad("d_model, n_heads, d_head and d_mlp must be positive");
        }
        if !(self.frac_train > 0.0 && self.frac_train < 1.0) {
            return bad("frac_train must be in (0, 1)");
        }
        if self.train_size() == 0 || self.train_size() == self.p * self.p {
            return bad("frac_train leaves the train or the test set empty");
        }
        if self.log_every == 0 {
            return bad("log_every must be positive");
        }
        Ok(())
    }

    /// Number of training pairs: ⌊frac_train · p²⌋.
    pub fn train_size(&self) -> usize {
        (self.frac_train * (self.p * self.p) as f64) as usize
    }
}

/// One parameter: TransformerLens name, shape, offset in the flat buffer.
#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Offsets of the weights in the flat parameter buffer.
#[derive(Debug, Clone, Copy)]
struct Layout {
    w_e: usize,
    w_pos: usize,
    w_q: usize,
    w_k: usize,
    w_v: usize,
    w_o: usize,
    w_in: usize,
    w_out: usize,
    w_u: usize,
    total: usize,
}

/// Parameters in buffer order, with TransformerLens names and shapes.
pub fn param_infos(c: &GrokkingConfig) -> Vec<ParamInfo> {
    let (d, h, dh, f, p) = (c.d_model, c.n_heads, c.d_head, c.d_mlp, c.p);
    let list: [(&'static str, Vec<usize>); 9] = [
        ("embed.W_E", vec![p + 1, d]),
        ("pos_embed.W_pos", vec![3, d]),
        ("blocks.0.attn.W_Q", vec![h, d, dh]),
        ("blocks.0.attn.W_K", vec![h, d, dh]),
        ("blocks.0.attn.W_V", vec![h, d, dh]),
        ("blocks.0.attn.W_O", vec![h, dh, d]),
        ("blocks.0.mlp.W_in", vec![d, f]),
        ("blocks.0.mlp.W_out", vec![f, d]),
        ("unembed.W_U", vec![d, p]),
    ];
    let mut offset = 0;
    list.into_iter()
        .map(|(name, shape)| {
            let info = ParamInfo {
                name,
                shape,
                offset,
            };
            offset += info.len();
            info
        })
        .collect()
}

impl Layout {
    fn new(c: &GrokkingConfig) -> Layout {
        let i = param_infos(c);
        Layout {
            w_e: i[0].offset,
            w_pos: i[1].offset,
            w_q: i[2].offset,
            w_k: i[3].offset,
            w_v: i[4].offset,
            w_o: i[5].offset,
            w_in: i[6].offset,
            w_out: i[7].offset,
            w_u: i[8].offset,
            total: i[8].offset + i[8].len(),
        }
    }
}

/// Input pairs `(a, b)`.
pub type Pairs = Vec<(u32, u32)>;

/// The seeded train/test split: all pairs `(a, b)`, shuffled, the first `train_size` for
/// training.
pub fn split(c: &GrokkingConfig) -> (Pairs, Pairs) {
    let p = c.p as u32;
    let mut pairs: Vec<(u32, u32)> = (0..p).flat_map(|a| (0..p).map(move |b| (a, b))).collect();
    SplitMix::new(c.seed ^ 0x5EED_5711).shuffle(&mut pairs);
    let test = pairs.split_off(c.train_size());
    (pairs, test)
}

/// Metrics logged during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub epoch: usize,
    /// Mean cross-entropy and accuracy on the training pairs (before this epoch's update).
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    /// Key frequencies of the neuron clusters at this epoch (see [`Analysis`]).
    pub key_freqs: Vec<usize>,
    /// `‖W_E‖²` per frequency (index 0 the constant), see [`embedding_fourier_norms`].
    pub fourier_norms: Vec<f64>,
}

/// The model, its optimiser and its history: everything a checkpoint holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grokking {
    pub cfg: GrokkingConfig,
    params: Vec<f32>,
    opt: AdamW,
    /// Epochs trained.
    pub epoch: usize,
    pub history: Vec<LogEntry>,
}

/// Outputs of a forward pass over a batch of pairs.
struct Forward {
    /// Attention pattern of the last position, `[N, n_heads, 3]`.
    pattern: Vec<f32>,
    /// MLP pre-activation, `[N, d_mlp]`.
    pre: Buf,
    /// ReLU(pre), `[N, d_mlp]`.
    post: Buf,
    /// Last-position logits, `[N, p]`.
    logits: Buf,
}

/// Per-token tables of one parameter state. `B = 2p + 1` input rows: `a` at position 0
/// (rows `0..p`), `b` at position 1 (rows `p..2p`), `=` at position 2 (row `2p`); `R = n_heads·B`.
struct Tables {
    /// Residual input per row, `[B, d_model]`.
    x: Vec<f32>,
    /// Keys and values per head, `[n_heads, B, d_head]`.
    k: Vec<f32>,
    v: Vec<f32>,
    /// The query of position 2 per head, `[n_heads, d_head]`.
    q: Vec<f32>,
    /// Scaled attention scores q·k/√d_head, `[n_heads, B]`.
    s: Vec<f32>,
    /// Value rows through W_O, `[R, d_model]`.
    vo: Buf,
    /// `vo · W_in`, `[R, d_mlp]`.
    t: Buf,
    /// `vo · W_U`, `[R, p]`.
    u: Buf,
    /// `x[=] · W_in`, `[d_mlp]`; `x[=] · W_U`, `[p]`.
    c_in: Vec<f32>,
    c_u: Vec<f32>,
    /// `W_out · W_U`, `[d_mlp, p]`.
    m: Vec<f32>,
}

/// Mean loss and accuracy of a batch.
#[derive(Debug, Clone)]
pub struct Eval {
    pub loss: f64,
    pub acc: f64,
}

impl Grokking {
    /// A freshly initialised model (TransformerLens' init: N(0, (0.8/√d_model)²) for every
    /// weight).
    pub fn new(cfg: GrokkingConfig) -> Result<Grokking> {
        cfg.validate()?;
        let lay = Layout::new(&cfg);
        let std = 0.8 / (cfg.d_model as f64).sqrt();
        let mut rng = SplitMix::new(cfg.seed ^ 0x1217_0000_0000_0001);
        let params = (0..lay.total)
            .map(|_| (rng.normal() * std) as f32)
            .collect();
        let opt = AdamW::new(
            AdamWConfig {
                lr: cfg.lr,
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: 1e-8,
                weight_decay: cfg.weight_decay,
            },
            lay.total,
        );
        Ok(Grokking {
            cfg,
            params,
            opt,
            epoch: 0,
            history: Vec::new(),
        })
    }

    /// The flat parameter buffer (order of [`param_infos`]).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// One parameter by TransformerLens name.
    pub fn param(&self, name: &str) -> Option<&[f32]> {
        let info = param_infos(&self.cfg)
            .into_iter()
            .find(|i| i.name == name)?;
        Some(&self.params[info.offset..info.offset + info.len()])
    }

    /// Replace one parameter (e.g. with TransformerLens' weights).
    pub fn set_param(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let info = param_infos(&self.cfg)
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| Error::Input(format!("no parameter named {name:?}")))?;
        if values.len() != info.len() {
            return Err(Error::Input(format!(
                "{name}: {} values for shape {:?}",
                values.len(),
                info.shape
            )));
        }
        self.params[info.offset..info.offset + info.len()].copy_from_slice(values);
        Ok(())
    }

    /// Train up to `epochs` more epochs (at most `cfg.epochs` in all), logging every
    /// `log_every` epochs and at the last; `progress(epochs_done, entry)` is called after each
    /// epoch, with the log entry when one was written, and stops training (after that epoch's
    /// update) by returning true.
    pub fn train(
        &mut self,
        epochs: usize,
        progress: &mut dyn FnMut(usize, Option<&LogEntry>) -> bool,
    ) -> Result<()> {
        let (train, test) = split(&self.cfg);
        let end = (self.epoch + epochs).min(self.cfg.epochs);
        while self.epoch < end {
            let mut grad = Buf::zeros(self.params.len());
            let ev = self.loss_and_grad(&train, &mut grad);
            let log_now =
                self.epoch.is_multiple_of(self.cfg.log_every) || self.epoch + 1 == self.cfg.epochs;
            let entry = if log_now {
                // Metrics of the parameters this epoch's loss was computed with.
                let e = self.log_entry(self.epoch, &ev, &test);
                self.history.push(e);
                self.history.last()
            } else {
                None
            };
            let stop = progress(self.epoch + 1, entry);
            self.opt.step(&mut self.params, &grad);
            self.epoch += 1;
            if stop {
                break;
            }
        }
        Ok(())
    }

    /// One full-batch AdamW step on `pairs`; returns the loss and accuracy before the update.
    pub fn step(&mut self, pairs: &[(u32, u32)]) -> Eval {
        let mut grad = vec![0.0f32; self.params.len()];
        let ev = self.loss_and_grad(pairs, &mut grad);
        self.opt.step(&mut self.params, &grad);
        ev
    }

    /// Loss and accuracy of `pairs`.
    pub fn evaluate(&self, pairs: &[(u32, u32)]) -> Eval {
        let tab = self.tables();
        let fw = self.forward(&tab, pairs);
        let (loss, acc, _) = cross_entropy(&fw.logits, pairs, self.cfg.p, false);
        Eval { loss, acc }
    }

    /// Last-position logits of `pairs`, `[N, p]`.
    pub fn logits(&self, pairs: &[(u32, u32)]) -> Vec<f32> {
        self.forward(&self.tables(), pairs).logits.to_vec()
    }

    /// Mean cross-entropy of `pairs`, its gradient added into `grad` (flat, the order of
    /// [`param_infos`]).
    pub fn loss_and_grad(&self, pairs: &[(u32, u32)], grad: &mut [f32]) -> Eval {
        let tab = self.tables();
        let fw = self.forward(&tab, pairs);
        let (loss, acc, g) = cross_entropy(&fw.logits, pairs, self.cfg.p, true);
        self.backward(&tab, pairs, &fw, &g, grad);
        Eval { loss, acc }
    }

    fn log_entry(&self, epoch: usize, train_ev: &Eval, test: &[(u32, u32)]) -> LogEntry {
        let test_ev = self.evaluate(test);
        let an = self.analyse();
        LogEntry {
            epoch,
            train_loss: train_ev.loss,
            train_acc: train_ev.acc,
            test_loss: test_ev.loss,
            test_acc: test_ev.acc,
            key_freqs: an.key_freqs,
            fourier_norms: embedding_fourier_norms(self),
        }
    }

    /// Neuron clusters and key frequencies on the current weights.
    pub fn analyse(&self) -> Analysis {
        analyse(self)
    }

    /// Restricted and excluded loss of the current weights for the given key frequencies
    /// (Nanda et al. 2023, §5.1; the paper takes the final model's key frequencies and
    /// evaluates every checkpoint with them): restricted keeps only the logits' components
    /// along cos/sin 2πk(a+b−c)/p for k in `key_freqs` (fitted over the whole (a, b, c) grid)
    /// and evaluates all p² pairs; excluded subtracts those components and evaluates the
    /// training pairs.
    pub fn progress_measures(&self, key_freqs: &[usize]) -> ProgressMeasures {
        let p = self.cfg.p;
        let (train, _) = split(&self.cfg);
        let grid: Vec<(u32, u32)> = (0..p as u32)
            .flat_map(|a| (0..p as u32).map(move |b| (a, b)))
            .collect();
        let logits = self.forward(&self.tables(), &grid).logits;
        let proj = key_frequency_components(&logits, p, key_freqs);
        let (restricted_loss, _, _) = cross_entropy(&proj, &grid, p, false);
        let (lg, pr) = (&logits, &proj);
        let train_rows: Vec<f32> = train
            .iter()
            .flat_map(|&(a, b)| {
                let r = a as usize * p + b as usize;
                (0..p).map(move |cc| lg[r * p + cc] - pr[r * p + cc])
            })
            .collect();
        let (excluded_loss, _, _) = cross_entropy(&train_rows, &train, p, false);
        ProgressMeasures {
            restricted_loss,
            excluded_loss,
        }
    }

    /// Replace all weights (a snapshot taken with [`Grokking::params`]).
    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        if params.len() != self.params.len() {
            return Err(Error::Input(format!(
                "snapshot has {} weights, the model {}",
                params.len(),
                self.params.len()
            )));
        }
        self.params.copy_from_slice(params);
        Ok(())
    }

    fn tables(&self) -> Tables {
        let c = &self.cfg;
        let l = Layout::new(c);
        let (d, nh, dh, f, p) = (c.d_model, c.n_heads, c.d_head, c.d_mlp, c.p);
        let b = 2 * p + 1;
        let w = &self.params;
        let w_e = &w[l.w_e..l.w_e + (p + 1) * d];
        let w_pos = &w[l.w_pos..l.w_pos + 3 * d];
        let mut x = vec![0.0f32; b * d];
        for (r, row) in x.chunks_mut(d).enumerate() {
            let (tok, pos) = row_token(r, p);
            for (i, v) in row.iter_mut().enumerate() {
                *v = w_e[tok * d + i] + w_pos[pos * d + i];
            }
        }
        let x_eq = &x[2 * p * d..];
        let mut k = vec![0.0f32; nh * b * dh];
        let mut v = vec![0.0f32; nh * b * dh];
        let mut q = vec![0.0f32; nh * dh];
        let mut s = vec![0.0f32; nh * b];
        let mut vo = Buf::zeros(nh * b * d);
        let scale = 1.0 / (dh as f32).sqrt();
        for h in 0..nh {
            let wq = &w[l.w_q + h * d * dh..l.w_q + (h + 1) * d * dh];
            let wk = &w[l.w_k + h * d * dh..l.w_k + (h + 1) * d * dh];
            let wv = &w[l.w_v + h * d * dh..l.w_v + (h + 1) * d * dh];
            let wo = &w[l.w_o + h * dh * d..l.w_o + (h + 1) * dh * d];
            let kh = &mut k[h * b * dh..(h + 1) * b * dh];
            matmul(kh, &x, wk, b, d, dh, false, false, false);
            let vh = &mut v[h * b * dh..(h + 1) * b * dh];
            matmul(vh, &x, wv, b, d, dh, false, false, false);
            let qh = &mut q[h * dh..(h + 1) * dh];
            matmul(qh, x_eq, wq, 1, d, dh, false, false, false);
            for r in 0..b {
                s[h * b + r] = dot(&kh[r * dh..(r + 1) * dh], qh) * scale;
            }
            matmul(
                &mut vo[h * b * d..(h + 1) * b * d],
                vh,
                wo,
                b,
                dh,
                d,
                false,
                false,
                false,
            );
        }
        let w_in = &w[l.w_in..l.w_in + d * f];
        let w_out = &w[l.w_out..l.w_out + f * d];
        let w_u = &w[l.w_u..l.w_u + d * p];
        let rows = nh * b;
        let mut t = Buf::zeros(rows * f);
        matmul(&mut t, &vo, w_in, rows, d, f, false, false, false);
        let mut u = Buf::zeros(rows * p);
        matmul(&mut u, &vo, w_u, rows, d, p, false, false, false);
        let mut c_in = vec![0.0f32; f];
        matmul(&mut c_in, x_eq, w_in, 1, d, f, false, false, false);
        let mut c_u = vec![0.0f32; p];
        matmul(&mut c_u, x_eq, w_u, 1, d, p, false, false, false);
        let mut m = vec![0.0f32; f * p];
        matmul(&mut m, w_out, w_u, f, d, p, false, false, false);
        Tables {
            x,
            k,
            v,
            q,
            s,
            vo,
            t,
            u,
            c_in,
            c_u,
            m,
        }
    }

    /// Table rows read by example `(a, b)` for head `h`: positions 0, 1, 2.
    fn rows(&self, h: usize, a: u32, b: u32) -> [usize; 3] {
        let p = self.cfg.p;
        let base = h * (2 * p + 1);
        [base + a as usize, base + p + b as usize, base + 2 * p]
    }

    fn forward(&self, tab: &Tables, pairs: &[(u32, u32)]) -> Forward {
        let c = &self.cfg;
        let (nh, f, p) = (c.n_heads, c.d_mlp, c.p);
        let n = pairs.len();
        let mut pattern = vec![0.0f32; n * nh * 3];
        let mut pre = Buf::zeros(n * f);
        let mut logits = Buf::zeros(n * p);
        let mut post = Buf::zeros(n * f);
        pattern
            .par_chunks_mut(nh * 3)
            .zip(pre.par_chunks_mut(f))
            .zip(post.par_chunks_mut(f))
            .zip(logits.par_chunks_mut(p))
            .zip(pairs.par_iter())
            .for_each_init(
                || Vec::with_capacity(3 * nh),
                |terms, ((((pat, pre), post), lg), &(ea, eb))| {
                    terms.clear();
                    for h in 0..nh {
                        let rows = self.rows(h, ea, eb);
                        let sc = rows.map(|r| tab.s[r]);
                        let mx = sc[0].max(sc[1]).max(sc[2]);
                        let e = sc.map(|x| (x - mx).exp());
                        let z = e[0] + e[1] + e[2];
                        for j in 0..3 {
                            pat[h * 3 + j] = e[j] / z;
                            terms.push((e[j] / z, rows[j]));
                        }
                    }
                    mix(pre, Some(post), &tab.c_in, &tab.t, terms);
                    mix(lg, None, &tab.c_u, &tab.u, terms);
                },
            );
        matmul(&mut logits, &post, &tab.m, n, f, p, false, false, true);
        Forward {
            pattern,
            pre,
            post,
            logits,
        }
    }

    fn backward(
        &self,
        tab: &Tables,
        pairs: &[(u32, u32)],
        fw: &Forward,
        g: &[f32],
        grad: &mut [f32],
    ) {
        let c = &self.cfg;
        let l = Layout::new(c);
        let (d, nh, dh, f, p) = (c.d_model, c.n_heads, c.d_head, c.d_mlp, c.p);
        let n = pairs.len();
        let b = 2 * p + 1;
        let rows_n = nh * b;
        let w = &self.params;

        // logits = post·M + c_u + Σ pattern·U[row]
        let mut d_m = vec![0.0f32; f * p];
        matmul(&mut d_m, &fw.post, g, f, n, p, true, false, false);
        let mut d_pre = Buf::zeros(n * f);
        matmul(&mut d_pre, g, &tab.m, n, p, f, false, true, false);
        d_pre
            .par_chunks_mut(f)
            .zip(fw.pre.par_chunks(f))
            .for_each(|(dx, x)| {
                for (d, &x) in dx.iter_mut().zip(x) {
                    *d = if x > 0.0 { *d } else { 0.0 };
                }
            });
        let ones = vec![1.0f32; n];
        let mut d_c_in = vec![0.0f32; f];
        matmul(&mut d_c_in, &ones, &d_pre, 1, n, f, false, false, false);
        let mut d_c_u = vec![0.0f32; p];
        matmul(&mut d_c_u, &ones, g, 1, n, p, false, false, false);

        // Attention pattern: d pattern[n,h,j] = d_pre·T[row] + g·U[row]; softmax backward
        // gives d score.
        let mut d_score = vec![0.0f32; n * nh * 3];
        d_score
            .par_chunks_mut(nh * 3)
            .enumerate()
            .for_each(|(i, ds)| {
                let (ea, eb) = pairs[i];
                let dpre = &d_pre[i * f..(i + 1) * f];
                let gi = &g[i * p..(i + 1) * p];
                for h in 0..nh {
                    let rows = self.rows(h, ea, eb);
                    let pat = &fw.pattern[i * nh * 3 + h * 3..i * nh * 3 + h * 3 + 3];
                    let mut dp = [0.0f32; 3];
                    for j in 0..3 {
                        dp[j] = dot(dpre, &tab.t[rows[j] * f..(rows[j] + 1) * f])
                            + dot(gi, &tab.u[rows[j] * p..(rows[j] + 1) * p]);
                    }
                    let mean = pat[0] * dp[0] + pat[1] * dp[1] + pat[2] * dp[2];
                    for j in 0..3 {
                        ds[h * 3 + j] = pat[j] * (dp[j] - mean);
                    }
                }
            });

        // Table gradients, one row per task: examples grouped by the token each row reads.
        let mut by_a: Vec<Vec<u32>> = vec![Vec::new(); p];
        let mut by_b: Vec<Vec<u32>> = vec![Vec::new(); p];
        for (i, &(ea, eb)) in pairs.iter().enumerate() {
            by_a[ea as usize].push(i as u32);
            by_b[eb as usize].push(i as u32);
        }
        let all: Vec<u32> = (0..n as u32).collect();
        let mut d_t = Buf::zeros(rows_n * f);
        let mut d_u = Buf::zeros(rows_n * p);
        let mut d_s = vec![0.0f32; rows_n];
        d_t.par_chunks_mut(f)
            .zip(d_u.par_chunks_mut(p))
            .zip(d_s.par_iter_mut())
            .enumerate()
            .for_each(|(r, ((dt, du), dsr))| {
                let (h, rr) = (r / b, r % b);
                let (j, members) = if rr < p {
                    (0, &by_a[rr])
                } else if rr < 2 * p {
                    (1, &by_b[rr - p])
                } else {
                    (2, &all)
                };
                for &i in members {
                    let i = i as usize;
                    let pj = fw.pattern[i * nh * 3 + h * 3 + j];
                    axpy(dt, pj, &d_pre[i * f..(i + 1) * f]);
                    axpy(du, pj, &g[i * p..(i + 1) * p]);
                    *dsr += d_score[i * nh * 3 + h * 3 + j];
                }
            });

        let mut gw = Grads::new(grad, &l);
        let w_in = &w[l.w_in..l.w_in + d * f];
        let w_out = &w[l.w_out..l.w_out + f * d];
        let w_u = &w[l.w_u..l.w_u + d * p];
        // M = W_out·W_U
        matmul(gw.w_out(), &d_m, w_u, f, p, d, false, true, true);
        matmul(gw.w_u(), w_out, &d_m, d, f, p, true, false, true);
        // T = VO·W_in, c_in = x[=]·W_in; U = VO·W_U, c_u = x[=]·W_U
        let x_eq = &tab.x[2 * p * d..];
        matmul(gw.w_in(), &tab.vo, &d_t, d, rows_n, f, true, false, true);
        matmul(gw.w_in(), x_eq, &d_c_in, d, 1, f, true, false, true);
        matmul(gw.w_u(), &tab.vo, &d_u, d, rows_n, p, true, false, true);
        matmul(gw.w_u(), x_eq, &d_c_u, d, 1, p, true, false, true);
        let mut d_vo = Buf::zeros(rows_n * d);
        matmul(&mut d_vo, &d_t, w_in, rows_n, f, d, false, true, false);
        matmul(&mut d_vo, &d_u, w_u, rows_n, p, d, false, true, true);
        let mut d_x = vec![0.0f32; b * d];
        {
            let dx_eq = &mut d_x[2 * p * d..];
            matmul(dx_eq, &d_c_in, w_in, 1, f, d, false, true, true);
            matmul(dx_eq, &d_c_u, w_u, 1, p, d, false, true, true);
        }
        let scale = 1.0 / (dh as f32).sqrt();
        for h in 0..nh {
            let hs = h * d * dh..(h + 1) * d * dh;
            let wq = &w[l.w_q..][hs.clone()];
            let wk = &w[l.w_k..][hs.clone()];
            let wv = &w[l.w_v..][hs.clone()];
            let wo = &w[l.w_o..][h * dh * d..(h + 1) * dh * d];
            let kh = &tab.k[h * b * dh..(h + 1) * b * dh];
            let vh = &tab.v[h * b * dh..(h + 1) * b * dh];
            let qh = &tab.q[h * dh..(h + 1) * dh];
            let d_vo_h = &d_vo[h * b * d..(h + 1) * b * d];
            // VO_h = V_h·W_O[h]
            matmul(gw.w_o(h, dh * d), vh, d_vo_h, dh, b, d, true, false, true);
            let mut d_vh = vec![0.0f32; b * dh];
            matmul(&mut d_vh, d_vo_h, wo, b, d, dh, false, true, false);
            // V_h = X·W_V[h]
            matmul(
                gw.w_v(h, d * dh),
                &tab.x,
                &d_vh,
                d,
                b,
                dh,
                true,
                false,
                true,
            );
            matmul(&mut d_x, &d_vh, wv, b, dh, d, false, true, true);
            // S_h[r] = q_h·K_h[r]/√d_head
            let ds_h = &d_s[h * b..(h + 1) * b];
            let mut d_q = vec![0.0f32; dh];
            let mut d_kh = vec![0.0f32; b * dh];
            for r in 0..b {
                axpy(&mut d_q, ds_h[r] * scale, &kh[r * dh..(r + 1) * dh]);
                axpy(&mut d_kh[r * dh..(r + 1) * dh], ds_h[r] * scale, qh);
            }
            matmul(
                gw.w_k(h, d * dh),
                &tab.x,
                &d_kh,
                d,
                b,
                dh,
                true,
                false,
                true,
            );
            matmul(&mut d_x, &d_kh, wk, b, dh, d, false, true, true);
            // q_h = x[=]·W_Q[h]
            matmul(gw.w_q(h, d * dh), x_eq, &d_q, d, 1, dh, true, false, true);
            matmul(&mut d_x[2 * p * d..], &d_q, wq, 1, dh, d, false, true, true);
        }
        // x rows = W_E[token] + W_pos[position]
        let (d_we, d_wpos) = gw.embeddings(p, d);
        for r in 0..b {
            let (tok, pos) = row_token(r, p);
            let dx = &d_x[r * d..(r + 1) * d];
            axpy(&mut d_we[tok * d..(tok + 1) * d], 1.0, dx);
            axpy(&mut d_wpos[pos * d..(pos + 1) * d], 1.0, dx);
        }
    }

    /// The plain transformer forward, all three positions, no tables (for tests): the
    /// last-position logits `[N, p]`.
    pub fn forward_reference(&self, pairs: &[(u32, u32)]) -> Vec<f32> {
        let c = &self.cfg;
        let l = Layout::new(c);
        let (d, nh, dh, f, p) = (c.d_model, c.n_heads, c.d_head, c.d_mlp, c.p);
        let w = &self.params;
        let mut out = Vec::with_capacity(pairs.len() * p);
        for &(ea, eb) in pairs {
            let toks = [ea as usize, eb as usize, p];
            let resid: Vec<Vec<f64>> = (0..3)
                .map(|pos| {
                    (0..d)
                        .map(|i| (w[l.w_e + toks[pos] * d + i] + w[l.w_pos + pos * d + i]) as f64)
                        .collect()
                })
                .collect();
            let proj = |x: &[f64], off: usize, rows: usize, cols: usize| -> Vec<f64> {
                (0..cols)
                    .map(|j| (0..rows).map(|i| x[i] * w[off + i * cols + j] as f64).sum())
                    .collect()
            };
            let mut mid = resid[2].clone();
            for h in 0..nh {
                let q = proj(&resid[2], l.w_q + h * d * dh, d, dh);
                let ks: Vec<Vec<f64>> = (0..3)
                    .map(|j| proj(&resid[j], l.w_k + h * d * dh, d, dh))
                    .collect();
                let vs: Vec<Vec<f64>> = (0..3)
                    .map(|j| proj(&resid[j], l.w_v + h * d * dh, d, dh))
                    .collect();
                let sc: Vec<f64> = ks
                    .iter()
                    .map(|k| k.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>() / (dh as f64).sqrt())
                    .collect();
                let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                let zv: Vec<f64> = (0..dh)
                    .map(|i| (0..3).map(|j| e[j] / z * vs[j][i]).sum())
                    .collect();
                let o = proj(&zv, l.w_o + h * dh * d, dh, d);
                for i in 0..d {
                    mid[i] += o[i];
                }
            }
            let post: Vec<f64> = proj(&mid, l.w_in, d, f)
                .into_iter()
                .map(|x| x.max(0.0))
                .collect();
            let mlp = proj(&post, l.w_out, f, d);
            let fin: Vec<f64> = mid.iter().zip(&mlp).map(|(a, b)| a + b).collect();
            out.extend(proj(&fin, l.w_u, d, p).into_iter().map(|x| x as f32));
        }
        out
    }
}

/// A zeroed f32 buffer recycled through a pool when dropped: every epoch needs the same dozen
/// multi-megabyte arrays, and fresh ones from the OS cost a page fault and a page zeroing each
/// (10% of an epoch in a profile).
struct Buf(Vec<f32>);

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// Buffers smaller than this are not worth pooling; at most `POOL_MAX` are kept.
const POOL_MIN: usize = 1 << 15;
const POOL_MAX: usize = 32;

impl Buf {
    fn zeros(len: usize) -> Buf {
        let mut v = if len >= POOL_MIN {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            let best = (0..pool.len())
                .filter(|&i| pool[i].capacity() >= len)
                .min_by_key(|&i| pool[i].capacity());
            best.map(|i| pool.swap_remove(i)).unwrap_or_default()
        } else {
            Vec::new()
        };
        v.clear();
        v.resize(len, 0.0);
        Buf(v)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if self.0.capacity() >= POOL_MIN {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL_MAX {
                pool.push(std::mem::take(&mut self.0));
            }
        }
    }
}

impl std::ops::Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

/// The (token, position) of table row `r` (see [`Tables`]): `a` at position 0 for rows `0..p`,
/// `b` at position 1 for rows `p..2p`, `=` (token p) at position 2 for row `2p`.
fn row_token(r: usize, p: usize) -> (usize, usize) {
    if r < p {
        (r, 0)
    } else if r < 2 * p {
        (r - p, 1)
    } else {
        (p, 2)
    }
}

/// Mutable views of the gradient buffer by parameter.
struct Grads<'a> {
    g: &'a mut [f32],
    l: Layout,
}

impl<'a> Grads<'a> {
    fn new(g: &'a mut [f32], l: &Layout) -> Grads<'a> {
        assert_eq!(g.len(), l.total, "gradient buffer has the wrong length");
        Grads { g, l: *l }
    }
    fn w_in(&mut self) -> &mut [f32] {
        &mut self.g[self.l.w_in..self.l.w_out]
    }
    fn w_out(&mut self) -> &mut [f32] {
        &mut self.g[self.l.w_out..self.l.w_u]
    }
    fn w_u(&mut self) -> &mut [f32] {
        &mut self.g[self.l.w_u..self.l.total]
    }
    fn w_q(&mut self, h: usize, len: usize) -> &mut [f32] {
        &mut self.g[self.l.w_q + h * len..self.l.w_q + (h + 1) * len]
    }
    fn w_k(&mut self, h: usize, len: usize) -> &mut [f32] {
        &mut self.g[self.l.w_k + h * len..self.l.w_k + (h + 1) * len]
    }
    fn w_v(&mut self, h: usize, len: usize) -> &mut [f32] {
        &mut self.g[self.l.w_v + h * len..self.l.w_v + (h + 1) * len]
    }
    fn w_o(&mut self, h: usize, len: usize) -> &mut [f32] {
        &mut self.g[self.l.w_o + h * len..self.l.w_o + (h + 1) * len]
    }
    fn embeddings(&mut self, p: usize, d: usize) -> (&mut [f32], &mut [f32]) {
        let (we, rest) = self.g[self.l.w_e..].split_at_mut((p + 1) * d);
        (we, &mut rest[..3 * d])
    }
}

/// `out = base + Σ c·table[row]` over `terms` (rows of width `out.len()`), and `relu = max(out,
/// 0)` when given; one pass over `out` in register-sized blocks instead of one pass per term.
fn mix(
    out: &mut [f32],
    mut relu: Option<&mut [f32]>,
    base: &[f32],
    table: &[f32],
    terms: &[(f32, usize)],
) {
    const BLK: usize = 32;
    let w = out.len();
    let mut start = 0;
    while start < w {
        let len = BLK.min(w - start);
        let mut acc = [0.0f32; BLK];
        acc[..len].copy_from_slice(&base[start..start + len]);
        for &(c, r) in terms {
            let row = &table[r * w + start..r * w + start + len];
            if len == BLK {
                for i in 0..BLK {
                    acc[i] += c * row[i];
                }
            } else {
                for i in 0..len {
                    acc[i] += c * row[i];
                }
            }
        }
        out[start..start + len].copy_from_slice(&acc[..len]);
        if let Some(rl) = relu.as_deref_mut() {
            for i in 0..len {
                rl[start + i] = acc[i].max(0.0);
            }
        }
        start += len;
    }
}

/// Dot product with eight independent accumulators (so the compiler can keep them in one
/// vector register; a single running f32 sum cannot be reordered).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// Mean cross-entropy (f64 log-softmax) and accuracy of `logits` `[N, p]` against
/// `(a + b) mod p`; with `want_grad` also d loss / d logits (f32).
fn cross_entropy(
    logits: &[f32],
    pairs: &[(u32, u32)],
    p: usize,
    want_grad: bool,
) -> (f64, f64, Buf) {
    let n = pairs.len();
    let mut g = Buf::zeros(if want_grad { n * p } else { 0 });
    let per: Vec<(f64, bool)> = if want_grad {
        logits
            .par_chunks(p)
            .zip(g.par_chunks_mut(p))
            .zip(pairs.par_iter())
            .map(|((lg, gr), &(a, b))| row_ce(lg, (a as usize + b as usize) % p, Some(gr), n))
            .collect()
    } else {
        logits
            .par_chunks(p)
            .zip(pairs.par_iter())
            .map(|(lg, &(a, b))| row_ce(lg, (a as usize + b as usize) % p, None, n))
            .collect()
    };
    let loss = per.iter().map(|x| x.0).sum::<f64>() / n as f64;
    let acc = per.iter().filter(|x| x.1).count() as f64 / n as f64;
    (loss, acc, g)
}

/// −log softmax(row)[target] in f64, whether the argmax is the target, and the gradient of the
/// batch mean written into `grad`.
fn row_ce(row: &[f32], target: usize, grad: Option<&mut [f32]>, n: usize) -> (f64, bool) {
    let (mut argmax, mut mx) = (0, f32::MIN);
    for (i, &x) in row.iter().enumerate() {
        if x > mx {
            (argmax, mx) = (i, x);
        }
    }
    let mx = mx as f64;
    let z: f64 = match grad {
        // One exp per logit: keep exp(x − max) in the gradient buffer, then normalise.
        Some(gr) => {
            let mut z = 0.0f64;
            for (gv, &x) in gr.iter_mut().zip(row) {
                let e = (x as f64 - mx).exp();
                z += e;
                *gv = e as f32;
            }
            // (softmax − one-hot)/n in f64: near convergence softmax[target] ≈ 1 and an f32
            // subtraction would cancel.
            let inv_n = 1.0 / n as f64;
            for (i, gv) in gr.iter_mut().enumerate() {
                let t = if i == target { 1.0 } else { 0.0 };
                *gv = ((*gv as f64 / z - t) * inv_n) as f32;
            }
            z
        }
        None => row.iter().map(|&x| (x as f64 - mx).exp()).sum(),
    };
    (mx + z.ln() - row[target] as f64, argmax == target)
}

/// The orthonormal Fourier basis over `0..p` (p odd): row 0 constant, rows `2k−1`, `2k` the
/// cosine and sine of frequency `k` for `k = 1..=(p−1)/2`. `[p, p]` row-major, f64.
pub fn fourier_basis(p: usize) -> Vec<f64> {
    let mut b = vec![0.0f64; p * p];
    b[..p].fill(1.0 / (p as f64).sqrt());
    for k in 1..=(p - 1) / 2 {
        for t in 0..p {
            let th = 2.0 * std::f64::consts::PI * (k * t) as f64 / p as f64;
            b[(2 * k - 1) * p + t] = th.cos() * (2.0 / p as f64).sqrt();
            b[(2 * k) * p + t] = th.sin() * (2.0 / p as f64).sqrt();
        }
    }
    b
}

/// The embedding's Fourier spectrum: for each frequency k (0 = the constant), the squared norm
/// of `W_E`'s token rows `0..p` projected on the cosine and sine of frequency k (Nanda et al.
/// 2023, Fig. 3). Length `(p − 1)/2 + 1`; the values sum to ‖W_E[0..p]‖²_F.
pub fn embedding_fourier_norms(model: &Grokking) -> Vec<f64> {
    let c = &model.cfg;
    let (p, d) = (c.p, c.d_model);
    let w_e = model.param("embed.W_E").expect("W_E exists");
    let basis = fourier_basis(p);
    let comp = |row: usize| -> f64 {
        (0..d)
            .map(|i| {
                let s: f64 = (0..p)
                    .map(|t| basis[row * p + t] * w_e[t * d + i] as f64)
                    .sum();
                s * s
            })
            .sum()
    };
    let mut out = vec![comp(0)];
    for k in 1..=(p - 1) / 2 {
        out.push(comp(2 * k - 1) + comp(2 * k));
    }
    out
}

/// What the neurons and logits say about the algorithm, on the current weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Analysis {
    /// Per neuron: its dominant frequency and the fraction of its pre-activation's variance
    /// (over all p² inputs) that frequency explains — the 2-D Fourier terms built from the
    /// constant and frequency k in a and in b, excluding the constant term.
    pub neuron_freq: Vec<usize>,
    pub neuron_fve: Vec<f64>,
    /// Frequencies that are the dominant one, with fraction explained ≥
    /// [`CLUSTER_FVE`], for at least [`KEY_FREQ_MIN_SHARE`] of the neurons.
    pub key_freqs: Vec<usize>,
}

/// Nanda et al.'s progress measures, see [`Grokking::progress_measures`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ProgressMeasures {
    pub restricted_loss: f64,
    pub excluded_loss: f64,
}

/// A neuron joins its frequency's cluster when that frequency explains at least this fraction
/// of its variance.
pub const CLUSTER_FVE: f64 = 0.85;
/// A frequency is key when its cluster holds at least this share of the neurons.
pub const KEY_FREQ_MIN_SHARE: f64 = 0.02;

fn analyse(model: &Grokking) -> Analysis {
    let c = &model.cfg;
    let (p, f) = (c.p, c.d_mlp);
    let grid: Vec<(u32, u32)> = (0..p as u32)
        .flat_map(|a| (0..p as u32).map(move |b| (a, b)))
        .collect();
    let tab = model.tables();
    let fw = model.forward(&tab, &grid);
    let basis: Vec<f32> = fourier_basis(p).iter().map(|&x| x as f32).collect();

    // Neuron clusters: 2-D Fourier transform of each neuron's pre-activation over (a, b).
    // Step 1: over b, for each a: Y[a] (p×f) = B · pre[a] (p×f).
    let mut y = Buf::zeros(p * p * f);
    y.par_chunks_mut(p * f)
        .zip(fw.pre.par_chunks(p * f))
        .for_each(|(ya, pa)| matmul(ya, &basis, pa, p, p, f, false, false, false));
    // Step 2: over a: Z (p × p·f) = B · Y (p × p·f); Z[u][v][i] with u the a-frequency row.
    let mut z = Buf::zeros(p * p * f);
    matmul(&mut z, &basis, &y, p, p, p * f, false, false, false);
    let n_freq = (p - 1) / 2;
    // Squared coefficients summed per neuron, rows (u, v) walked in memory order.
    let sq_sum = |cells: &mut dyn Iterator<Item = (usize, usize)>| -> Vec<f64> {
        let mut acc = vec![0.0f64; f];
        for (u, v) in cells {
            for (a, &x) in acc.iter_mut().zip(&z[(u * p + v) * f..(u * p + v + 1) * f]) {
                *a += (x as f64) * (x as f64);
            }
        }
        acc
    };
    let total = sq_sum(&mut (1..p * p).map(|uv| (uv / p, uv % p)));
    let per_freq: Vec<Vec<f64>> = (1..=n_freq)
        .into_par_iter()
        .map(|k| {
            let idx = [0, 2 * k - 1, 2 * k];
            sq_sum(
                &mut idx
                    .iter()
                    .flat_map(|&u| idx.iter().map(move |&v| (u, v)))
                    .filter(|&(u, v)| u != 0 || v != 0),
            )
        })
        .collect();
    let (neuron_freq, neuron_fve): (Vec<usize>, Vec<f64>) = (0..f)
        .map(|i| {
            let mut best = (0, 0.0);
            for k in 1..=n_freq {
                let fve = if total[i] > 0.0 {
                    per_freq[k - 1][i] / total[i]
                } else {
                    0.0
                };
                if fve > best.1 {
                    best = (k, fve);
                }
            }
            best
        })
        .unzip();
    let mut counts = vec![0usize; n_freq + 1];
    for (&k, &fve) in neuron_freq.iter().zip(&neuron_fve) {
        if fve >= CLUSTER_FVE {
            counts[k] += 1;
        }
    }
    let min_count = ((KEY_FREQ_MIN_SHARE * f as f64).ceil() as usize).max(1);
    let key_freqs: Vec<usize> = (1..=n_freq).filter(|&k| counts[k] >= min_count).collect();

    Analysis {
        neuron_freq,
        neuron_fve,
        key_freqs,
    }
}

/// The part of the grid logits `[p², p]` (row `a·p + b`) along cos(2πk(a+b−c)/p) and
/// sin(2πk(a+b−c)/p) for each frequency in `freqs`, each coefficient fitted over the whole
/// (a, b, c) grid. These waves are orthogonal to each other and to constants over the grid.
pub fn key_frequency_components(logits: &[f32], p: usize, freqs: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0f32; p * p * p];
    let tau = 2.0 * std::f64::consts::PI / p as f64;
    for &k in freqs {
        // Σ_{a,b,c} L·cos(θ(s−c)) = Σ_{a,b} cos θs·Σ_c L cos θc + sin θs·Σ_c L sin θc.
        let cs: Vec<(f64, f64)> = (0..p)
            .map(|x| ((tau * (k * x) as f64).cos(), (tau * (k * x) as f64).sin()))
            .collect();
        let (mut acos, mut asin) = (0.0f64, 0.0f64);
        for a in 0..p {
            for b in 0..p {
                let row = &logits[(a * p + b) * p..(a * p + b + 1) * p];
                let (mut lc, mut ls) = (0.0f64, 0.0f64);
                for (cc, &x) in row.iter().enumerate() {
                    lc += x as f64 * cs[cc].0;
                    ls += x as f64 * cs[cc].1;
                }
                let (cs_s, sn_s) = cs[(a + b) % p];
                // cos θ(s−c) = cos θs cos θc + sin θs sin θc; sin θ(s−c) = sin θs cos θc − cos θs sin θc
                acos += cs_s * lc + sn_s * ls;
                asin += sn_s * lc - cs_s * ls;
            }
        }
        // Each wave has squared norm p³/2 over the grid.
        let norm = (p * p * p) as f64 / 2.0;
        let (acos, asin) = (acos / norm, asin / norm);
        for a in 0..p {
            for b in 0..p {
                let s = (a + b) % p;
                for cc in 0..p {
                    let d = (s + p - cc) % p;
                    out[(a * p + b) * p + cc] += (acos * cs[d].0 + asin * cs[d].1) as f32;
                }
            }
        }
    }
    out
}
