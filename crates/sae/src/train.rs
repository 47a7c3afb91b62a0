//! Training one SAE or transcoder: the step of docs/sae.md §Training on flat f32 buffers, with
//! the fused AdamW of `interplab_train::optim`, and checkpoints that resume bit-exactly.
//!
//! The backward pass is written out by hand: every product with the latents goes through the
//! sparse codes (cost ∝ active latents), so a TopK step costs about one dense encoder product.

use std::path::Path;

use interplab_core::rng::SplitMix;
use interplab_train::optim::{AdamW, AdamWConfig};
use serde::{Deserialize, Serialize};

use rayon::prelude::*;

use crate::kernels::{self, codes_t_times, codes_times, gather_dots, product};
use crate::sae::{Architecture, Codes, Sae};

/// Hyper-parameters of a training run (the shape comes from [`TrainConfig::arch`] and sizes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub arch: Architecture,
    pub transcoder: bool,
    pub d_in: usize,
    pub d_sae: usize,
    /// Output width; 0 means `d_in`.
    pub d_out: usize,
    /// Active latents per row (`topk`) or per row on average over a batch (`batchtopk`).
    pub k: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Steps in the whole run (for the learning-rate decay).
    pub steps: u64,
    pub lr: f64,
    pub lr_warmup_steps: u64,
    /// The last this-many steps decay the learning rate linearly to 0.
    pub lr_decay_steps: u64,
    /// λ: the L1 coefficient (`relu`) or the L0 coefficient (`jumprelu`).
    pub sparsity_coefficient: f64,
    pub sparsity_warmup_steps: u64,
    /// A latent is dead (for AuxK) after this many training tokens without firing.
    pub dead_tokens: u64,
    /// AuxK's coefficient α.
    pub aux_alpha: f64,
    /// JumpReLU's kernel bandwidth ε.
    pub jumprelu_bandwidth: f64,
    /// JumpReLU's initial threshold.
    pub jumprelu_init_threshold: f64,
    /// Global gradient-norm clip (0: none).
    pub clip_grad: f64,
    /// BatchTopK's threshold moving-average factor β_θ (0.99: SAELens' `topk_threshold_lr` of
    /// 0.01; at 0.999 the threshold of a run of a few hundred steps stays near its first value).
    pub threshold_beta: f64,
    /// Decoder row norm at initialisation; 0 means the architecture's default (0.1 for
    /// `relu`, 1 otherwise).
    pub decoder_init_norm: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Seed of the initial weights.
    pub seed: u64,
    /// The dense products (the encoder's, and all five of a ReLU step while its codes are
    /// dense) with both operands rounded to bf16 and f32 sums, as PyTorch's bf16 autocast
    /// computes them; weights, sparse products, losses and the optimiser stay f32. Off: f32.
    pub bf16_products: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: Architecture::Topk,
            transcoder: false,
            d_in: 0,
            d_sae: 0,
            d_out: 0,
            k: 32,
            batch_size: 4096,
            steps: 1000,
            lr: 4e-4,
            lr_warmup_steps: 0,
            lr_decay_steps: 0,
            sparsity_coefficient: 5.0,
            sparsity_warmup_steps: 0,
            dead_tokens: 1_000_000,
            aux_alpha: 1.0 / 32.0,
            jumprelu_bandwidth: 0.05,
            jumprelu_init_threshold: 0.01,
            clip_grad: 1.0,
            threshold_beta: 0.99,
            decoder_init_norm: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            seed: 0,
            bf16_products: false,
        }
    }
}

impl TrainConfig {
    /// The output width.
    pub fn d_out(&self) -> usize {
        if self.d_out == 0 {
            self.d_in
        } else {
            self.d_out
        }
    }

    /// Every problem, in one error.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut p = Vec::new();
        if self.d_in == 0 || self.d_sae == 0 {
            p.push("d_in and d_sae must be positive".to_string());
        }
        if self.arch.uses_k() && (self.k == 0 || self.k > self.d_sae) {
            p.push(format!(
                "k = {} must be between 1 and the number of latents ({})",
                self.k, self.d_sae
            ));
        }
        if self.batch_size == 0 {
            p.push("batch_size must be positive".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            p.push(format!("lr must be positive, not {}", self.lr));
        }
        if !(self.sparsity_coefficient.is_finite() && self.sparsity_coefficient >= 0.0) {
            p.push("the sparsity coefficient must be finite and ≥ 0".into());
        }
        if !(self.jumprelu_bandwidth > 0.0 && self.jumprelu_init_threshold > 0.0) {
            p.push("JumpReLU bandwidth and initial threshold must be positive".into());
        }
        if !self.transcoder && self.d_out != 0 && self.d_out != self.d_in {
            p.push("an SAE's d_out must equal d_in (or be 0)".into());
        }
        if !p.is_empty() {
            anyhow::bail!("{}", p.join("; "));
        }
        Ok(())
    }

    fn decoder_norm(&self) -> f64 {
        if self.decoder_init_norm > 0.0 {
            self.decoder_init_norm
        } else if self.arch == Architecture::Relu {
            0.1
        } else {
            1.0
        }
    }

    /// The learning rate at step `t` (from 0).
    pub fn lr_at(&self, t: u64) -> f64 {
        let warm = if self.lr_warmup_steps > 0 {
            ((t + 1) as f64 / self.lr_warmup_steps as f64).min(1.0)
        } else {
            1.0
        };
        let decay = if self.lr_decay_steps > 0 && t + self.lr_decay_steps >= self.steps {
            // Linear from 1 at the first decay step to 1/decay at the last.
            (self.steps.saturating_sub(t) as f64 / self.lr_decay_steps as f64).min(1.0)
        } else {
            1.0
        };
        self.lr * warm * decay
    }

    /// The sparsity coefficient at step `t`.
    pub fn sparsity_at(&self, t: u64) -> f64 {
        let warm = if self.sparsity_warmup_steps > 0 {
            ((t + 1) as f64 / self.sparsity_warmup_steps as f64).min(1.0)
        } else {
            1.0
        };
        self.sparsity_coefficient * warm
    }
}

/// What one step measured (on that batch, before the update).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StepStats {
    pub step: u64,
    pub loss: f64,
    pub mse: f64,
    pub sparsity: f64,
    pub aux: f64,
    /// Mean active latents per row.
    pub l0: f64,
    /// FVU of the batch against its own mean.
    pub fvu: f64,
    /// Fraction of latents dead (for AuxK's definition) before the step.
    pub dead: f64,
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

/// The whole training state: weights, optimiser moments, counters.
#[derive(Debug, Clone)]
pub struct Trainer {
    pub cfg: TrainConfig,
    /// The SAE being trained; for `jumprelu`, `threshold` mirrors `exp(log_threshold)`.
    pub sae: Sae,
    /// JumpReLU's trained parameter (empty otherwise).
    pub log_threshold: Vec<f32>,
    /// Moments for `W_enc`, `b_enc`, `W_dec`, `b_dec`, `log_threshold`.
    pub opt: Vec<AdamW>,
    /// Steps taken.
    pub t: u64,
    /// Per latent, steps since it last fired.
    pub since_fired: Vec<u64>,
    /// BatchTopK's running threshold (NaN before the first step).
    pub batch_threshold: f64,
}

/// Gradients of one step, in the parameters' layouts.
struct Grads {
    w_enc_t: Vec<f32>,
    b_enc: Vec<f32>,
    w_dec: Vec<f32>,
    b_dec: Vec<f32>,
    log_threshold: Vec<f32>,
}

impl Trainer {
    /// Fresh weights (docs/sae.md §Initialisation); `b_dec` is the geometric median of
    /// `init_targets` (`[n, d_out]` rows; the first 16,384 are used).
    pub fn new(cfg: TrainConfig, init_targets: &[f32]) -> anyhow::Result<Trainer> {
        cfg.validate()?;
        let (d_in, m, d_out) = (cfg.d_in, cfg.d_sae, cfg.d_out());
        let mut rng = SplitMix::new(cfg.seed ^ 0x5AE5_AE5A_E5AE_5AE5);
        let norm = cfg.decoder_norm();
        let mut w_dec = vec![0.0f32; m * d_out];
        for row in w_dec.chunks_exact_mut(d_out) {
            let v: Vec<f64> = (0..d_out).map(|_| rng.normal()).collect();
            let n = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
            for (o, a) in row.iter_mut().zip(&v) {
                *o = (a / n * norm) as f32;
            }
        }
        // W_enc = W_decᵀ, i.e. w_enc_t = W_dec when d_in = d_out; a transcoder with
        // d_in ≠ d_out draws its encoder the same way.
        let w_enc_t = if d_in == d_out {
            w_dec.clone()
        } else {
            let mut w = vec![0.0f32; m * d_in];
            for row in w.chunks_exact_mut(d_in) {
                let v: Vec<f64> = (0..d_in).map(|_| rng.normal()).collect();
                let n = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
                for (o, a) in row.iter_mut().zip(&v) {
                    *o = (a / n * norm) as f32;
                }
            }
            w
        };
        let rows = (init_targets.len() / d_out).min(16_384);
        let b_dec = if rows > 0 {
            geometric_median(&init_targets[..rows * d_out], d_out, 100, 1e-5)
        } else {
            vec![0.0; d_out]
        };
        let log_threshold = if cfg.arch == Architecture::Jumprelu {
            vec![cfg.jumprelu_init_threshold.ln() as f32; m]
        } else {
            Vec::new()
        };
        let sae = Sae {
            arch: cfg.arch,
            d_in,
            d_sae: m,
            d_out,
            k: cfg.k,
            transcoder: cfg.transcoder,
            apply_b_dec_to_input: !cfg.transcoder,
            w_enc_t,
            b_enc: vec![0.0; m],
            w_dec,
            b_dec,
            threshold: Vec::new(),
        };
        Trainer::from_weights(cfg, sae, log_threshold)
    }

    /// Start from given weights (the reference check starts both sides from one file).
    pub fn from_weights(
        cfg: TrainConfig,
        mut sae: Sae,
        log_threshold: Vec<f32>,
    ) -> anyhow::Result<Trainer> {
        cfg.validate()?;
        let adam = AdamWConfig {
            lr: cfg.lr,
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            eps: cfg.adam_eps,
            weight_decay: 0.0,
        };
        if cfg.arch == Architecture::Jumprelu {
            anyhow::ensure!(
                log_threshold.len() == sae.d_sae,
                "a JumpReLU SAE needs one log-threshold per latent"
            );
            sae.threshold = log_threshold.iter().map(|v| v.exp()).collect();
        }
        let opt = vec![
            AdamW::new(adam, sae.w_enc_t.len()),
            AdamW::new(adam, sae.b_enc.len()),
            AdamW::new(adam, sae.w_dec.len()),
            AdamW::new(adam, sae.b_dec.len()),
            AdamW::new(adam, log_threshold.len()),
        ];
        Ok(Trainer {
            since_fired: vec![0; sae.d_sae],
            sae,
            log_threshold,
            opt,
            t: 0,
            batch_threshold: f64::NAN,
            cfg,
        })
    }

    /// Latents dead before this step (AuxK's definition).
    fn dead_mask(&self) -> Vec<bool> {
        let b = self.cfg.batch_size as u64;
        self.since_fired
            .iter()
            .map(|&s| s > 0 && s * b >= self.cfg.dead_tokens)
            .collect()
    }

    /// The backward pass through sparse codes (every architecture; cost ∝ active latents).
    fn sparse_pass(&self, pre: Vec<f32>, xc: &[f32], y: &[f32], lam: f64) -> Pass {
        let cfg = &self.cfg;
        let sae = &self.sae;
        let (d_in, m, d_out) = (sae.d_in, sae.d_sae, sae.d_out);
        let n = xc.len() / d_in;
        let inv_n = 1.0 / n as f32;
        let theta: Vec<f32> = sae.threshold.clone();
        let codes = match cfg.arch {
            Architecture::Relu => kernels::activate_rows(&pre, m, kernels::relu_row),
            Architecture::Topk => {
                kernels::activate_rows(&pre, m, |r, o| kernels::topk_row(r, cfg.k, o))
            }
            Architecture::Jumprelu => {
                kernels::activate_rows(&pre, m, |r, o| kernels::jump_row(r, &theta, o))
            }
            Architecture::Batchtopk => batch_topk(&pre, m, cfg.k * n),
        };
        let y_hat = kernels::decode(&codes, &sae.w_dec, &sae.b_dec, m, d_out);
        let mut err = vec![0.0f32; n * d_out]; // ŷ − y
        for ((e, a), b) in err.iter_mut().zip(&y_hat).zip(y) {
            *e = a - b;
        }
        let mse = sum_f64(&err, |e| (e as f64) * (e as f64)) / n as f64;
        let fvu = mse * n as f64 / total_variance(y, d_out).max(f64::MIN_POSITIVE);

        let mut g = Grads {
            w_enc_t: vec![0.0; m * d_in],
            b_enc: vec![0.0; m],
            w_dec: vec![0.0; m * d_out],
            b_dec: vec![0.0; d_out],
            log_threshold: vec![0.0; self.log_threshold.len()],
        };
        // d mse / d ŷ.
        let g_y: Vec<f32> = err.iter().map(|e| 2.0 * e * inv_n).collect();
        for row in g_y.chunks_exact(d_out) {
            for (a, b) in g.b_dec.iter_mut().zip(row) {
                *a += b;
            }
        }
        codes_t_times(&codes, &g_y, m, d_out, &mut g.w_dec);
        let mut g_f = gather_dots(&codes, &g_y, &sae.w_dec, m, d_out);

        // Sparsity terms.
        let mut sparsity = 0.0f64;
        match cfg.arch {
            Architecture::Relu => {
                let norms = sae.decoder_norms();
                let mut col_sum = vec![0.0f64; m];
                for (k, (&i, &v)) in codes.idx.iter().zip(&codes.val).enumerate() {
                    let i = i as usize;
                    sparsity += v as f64 * norms[i] as f64;
                    col_sum[i] += v as f64;
                    g_f[k] += (lam as f32) * inv_n * norms[i];
                }
                sparsity *= lam / n as f64;
                for i in 0..m {
                    if col_sum[i] != 0.0 && norms[i] > 0.0 {
                        let c = (lam * col_sum[i] / n as f64 / norms[i] as f64) as f32;
                        let row = &sae.w_dec[i * d_out..(i + 1) * d_out];
                        for (a, w) in g.w_dec[i * d_out..(i + 1) * d_out].iter_mut().zip(row) {
                            *a += c * w;
                        }
                    }
                }
            }
            Architecture::Jumprelu => {
                let eps = cfg.jumprelu_bandwidth as f32;
                // Entries within the kernel's window of their threshold.
                let near = kernels::activate_rows(&pre, m, |r, o| {
                    for (i, (&v, &t)) in r.iter().zip(&theta).enumerate() {
                        if ((v - t) / eps).abs() < 0.5 {
                            o.push((i as u32, v));
                        }
                    }
                });
                let g_out = gather_dots(&near, &g_y, &sae.w_dec, m, d_out);
                let mut g_theta = vec![0.0f64; m];
                for (k, &i) in near.idx.iter().enumerate() {
                    let i = i as usize;
                    let t = theta[i] as f64;
                    g_theta[i] += g_out[k] as f64 * (-t / eps as f64);
                    g_theta[i] += lam / n as f64 * (-1.0 / eps as f64);
                }
                for i in 0..m {
                    g.log_threshold[i] = (g_theta[i] * theta[i] as f64) as f32;
                }
                sparsity = lam * codes.nnz() as f64 / n as f64;
            }
            Architecture::Topk | Architecture::Batchtopk => {}
        }

        // AuxK.
        let dead = self.dead_mask();
        let n_dead = dead.iter().filter(|&&d| d).count();
        let mut aux = 0.0f64;
        let mut aux_codes = Codes::from_rows(vec![Vec::new(); n]);
        let mut g_a = Vec::new();
        if cfg.arch.uses_k() && n_dead > 0 && cfg.aux_alpha > 0.0 {
            let half = (d_in / 2).max(1);
            let k_aux = half.min(n_dead);
            let scale = cfg.aux_alpha * (n_dead as f64 / half as f64).min(1.0);
            aux_codes = kernels::activate_rows(&pre, m, |r, o| {
                for i in kernels::topk_indices(r, k_aux, |i| dead[i]) {
                    if r[i as usize] > 0.0 {
                        o.push((i, r[i as usize]));
                    }
                }
            });
            // ê − e with e = y − ŷ (no gradient): ê + err.
            let mut diff = vec![0.0f32; n * d_out];
            codes_times(&aux_codes, &sae.w_dec, m, d_out, &mut diff);
            for (a, e) in diff.iter_mut().zip(&err) {
                *a += e;
            }
            aux = scale * diff.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / n as f64;
            let c = (2.0 * scale / n as f64) as f32;
            let g_e: Vec<f32> = diff.iter().map(|v| c * v).collect();
            codes_t_times(&aux_codes, &g_e, m, d_out, &mut g.w_dec);
            g_a = gather_dots(&aux_codes, &g_e, &sae.w_dec, m, d_out);
        }

        // Gradient at the pre-activations: the main codes and the AuxK codes, row by row.
        let mut rows: Vec<Vec<(u32, f32)>> = Vec::with_capacity(n);
        for b in 0..n {
            let mut r = Vec::new();
            for k in codes.ptr[b]..codes.ptr[b + 1] {
                r.push((codes.idx[k], g_f[k]));
            }
            for k in aux_codes.ptr[b]..aux_codes.ptr[b + 1] {
                r.push((aux_codes.idx[k], g_a[k]));
            }
            rows.push(r);
        }
        let g_pre = Codes::from_rows(rows);
        for (&i, &v) in g_pre.idx.iter().zip(&g_pre.val) {
            g.b_enc[i as usize] += v;
        }
        codes_t_times(&g_pre, xc, m, d_in, &mut g.w_enc_t);
        // Bookkeeping that reads this step's forward.
        let l0 = codes.nnz() as f64 / n as f64;
        let mut fired = vec![false; m];
        for &i in &codes.idx {
            fired[i as usize] = true;
        }
        let batch_min = codes.val.iter().copied().fold(f32::INFINITY, f32::min);

        Pass {
            g,
            mse,
            fvu,
            sparsity,
            aux,
            l0,
            fired,
            batch_min,
            n_dead,
        }
    }

    /// One training step on `x` (`[B, d_in]`) with targets `y` (`[B, d_out]`; `None`: `x`).
    pub fn step(&mut self, x: &[f32], y: Option<&[f32]>) -> StepStats {
        let sae = &self.sae;
        let (d_in, m, d_out) = (sae.d_in, sae.d_sae, sae.d_out);
        let n = x.len() / d_in;
        let y = y.unwrap_or(x);
        assert_eq!(y.len(), n * d_out, "targets do not match the inputs");
        let lam = self.cfg.sparsity_at(self.t);

        // Forward.
        let xc = sae.centred(x);
        let bf16 = self.cfg.bf16_products;
        let mut pre = kernels::product(&xc, &sae.w_enc_t, n, d_in, m, false, true, bf16);
        let relu_dense = if self.cfg.arch == Architecture::Relu {
            // One pass: the bias, the ReLU (both of ReLU's paths read only the positive
            // entries), and the count that picks the path.
            let positive = relu_with_bias(&mut pre, &sae.b_enc);
            positive as f64 / pre.len().max(1) as f64 > kernels::DENSE_ABOVE
        } else {
            kernels::add_bias_rows(&mut pre, &sae.b_enc);
            false
        };
        let Pass {
            mut g,
            mse,
            fvu,
            sparsity,
            aux,
            l0,
            fired,
            batch_min,
            n_dead,
        } = if relu_dense {
            let n_dead = self.dead_mask().iter().filter(|&&d| d).count();
            relu_dense_pass(sae, pre, &xc, y, lam, n_dead, bf16)
        } else {
            self.sparse_pass(pre, &xc, y, lam)
        };
        let cfg = self.cfg.clone();
        let sae = &self.sae;
        if sae.apply_b_dec_to_input {
            // pre = (x − b_dec)·W_enc + b_enc: ∂/∂b_dec = −W_enc · Σ_b g_pre[b].
            for i in 0..m {
                let gi = g.b_enc[i];
                if gi != 0.0 {
                    let row = &sae.w_enc_t[i * d_in..(i + 1) * d_in];
                    for (a, w) in g.b_dec.iter_mut().zip(row) {
                        *a -= gi * w;
                    }
                }
            }
        }

        // Unit-norm decoder rows: drop the gradient's component along each row.
        if cfg.arch.unit_norm_decoder() {
            remove_parallel(&mut g.w_dec, &sae.w_dec, d_out);
        }
        let grad_norm = [&g.w_enc_t, &g.b_enc, &g.w_dec, &g.b_dec, &g.log_threshold]
            .iter()
            .map(|v| sum_f64(v, |x| (x as f64) * (x as f64)))
            .sum::<f64>()
            .sqrt();
        if cfg.clip_grad > 0.0 {
            // As the reference trainer: scale by clip/‖g‖ when ‖g‖ > clip (no ε).
            let coef = cfg.clip_grad / grad_norm;
            if grad_norm > cfg.clip_grad {
                for v in [
                    &mut g.w_enc_t,
                    &mut g.b_enc,
                    &mut g.w_dec,
                    &mut g.b_dec,
                    &mut g.log_threshold,
                ] {
                    v.par_chunks_mut(1 << 16).for_each(|c| {
                        for a in c {
                            *a *= coef as f32;
                        }
                    });
                }
            }
        }

        // Update.
        let lr = cfg.lr_at(self.t);
        for o in &mut self.opt {
            o.cfg.lr = lr;
        }
        let sae = &mut self.sae;
        self.opt[0].step(&mut sae.w_enc_t, &g.w_enc_t);
        self.opt[1].step(&mut sae.b_enc, &g.b_enc);
        self.opt[2].step(&mut sae.w_dec, &g.w_dec);
        self.opt[3].step(&mut sae.b_dec, &g.b_dec);
        if !self.log_threshold.is_empty() {
            self.opt[4].step(&mut self.log_threshold, &g.log_threshold);
            sae.threshold = self.log_threshold.iter().map(|v| v.exp()).collect();
        }
        if cfg.arch.unit_norm_decoder() {
            normalise_rows(&mut sae.w_dec, d_out);
        }
        if cfg.arch == Architecture::Batchtopk && batch_min.is_finite() {
            let m_b = batch_min as f64;
            self.batch_threshold = if self.batch_threshold.is_nan() {
                m_b
            } else {
                cfg.threshold_beta * self.batch_threshold + (1.0 - cfg.threshold_beta) * m_b
            };
        }
        for (s, f) in self.since_fired.iter_mut().zip(&fired) {
            *s = if *f { 0 } else { *s + 1 };
        }
        let stats = StepStats {
            step: self.t,
            loss: mse + sparsity + aux,
            mse,
            sparsity,
            aux,
            l0,
            fvu,
            dead: n_dead as f64 / m as f64,
            lr,
            grad_norm,
        };
        self.t += 1;
        stats
    }

    /// The SAE for inference: for `batchtopk`, a threshold on every latent (the running
    /// estimate); scales folded when `scales` is given (`s_in`, `s_out`).
    pub fn inference_sae(&self, scales: Option<(f32, f32)>) -> Sae {
        let mut sae = self.sae.clone();
        if sae.arch == Architecture::Batchtopk {
            let t = if self.batch_threshold.is_nan() {
                0.0
            } else {
                self.batch_threshold as f32
            };
            sae.threshold = vec![t; sae.d_sae];
        }
        if let Some((s_in, s_out)) = scales {
            sae.fold_scales(s_in, s_out);
        }
        sae
    }

    /// Save the whole state to `path` atomically.
    pub fn save_checkpoint(&self, path: &Path, extra: &serde_json::Value) -> anyhow::Result<()> {
        let mut tensors: Vec<(String, Vec<f32>)> = vec![
            ("W_enc_t".into(), self.sae.w_enc_t.clone()),
            ("b_enc".into(), self.sae.b_enc.clone()),
            ("W_dec".into(), self.sae.w_dec.clone()),
            ("b_dec".into(), self.sae.b_dec.clone()),
            ("log_threshold".into(), self.log_threshold.clone()),
        ];
        for (i, o) in self.opt.iter().enumerate() {
            tensors.push((format!("adam{i}.m"), o.m.clone()));
            tensors.push((format!("adam{i}.v"), o.v.clone()));
        }
        let state = serde_json::json!({
            "cfg": self.cfg,
            "t": self.t,
            "adam_t": self.opt.iter().map(|o| o.t).collect::<Vec<_>>(),
            "since_fired": self.since_fired,
            "batch_threshold": if self.batch_threshold.is_nan() { None } else { Some(self.batch_threshold) },
            "extra": extra,
        });
        crate::io::write_f32_safetensors(path, &tensors, &[("state", state.to_string())])
    }

    /// Load a state written by [`Trainer::save_checkpoint`]; returns it with the `extra` value.
    pub fn load_checkpoint(path: &Path) -> anyhow::Result<(Trainer, serde_json::Value)> {
        let (tensors, meta) = crate::io::read_f32_safetensors(path)?;
        let state: serde_json::Value = serde_json::from_str(
            meta.get("state")
                .ok_or_else(|| anyhow::anyhow!("{}: not an SAE checkpoint", path.display()))?,
        )?;
        let cfg: TrainConfig = serde_json::from_value(state["cfg"].clone())?;
        let get = |name: &str| -> anyhow::Result<Vec<f32>> {
            tensors
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("{}: no tensor {name}", path.display()))
        };
        let sae = Sae {
            arch: cfg.arch,
            d_in: cfg.d_in,
            d_sae: cfg.d_sae,
            d_out: cfg.d_out(),
            k: cfg.k,
            transcoder: cfg.transcoder,
            apply_b_dec_to_input: !cfg.transcoder,
            w_enc_t: get("W_enc_t")?,
            b_enc: get("b_enc")?,
            w_dec: get("W_dec")?,
            b_dec: get("b_dec")?,
            threshold: Vec::new(),
        };
        let log_threshold = get("log_threshold")?;
        let mut tr = Trainer::from_weights(cfg, sae, log_threshold)?;
        tr.sae.check().or_else(|e| {
            if tr.cfg.arch == Architecture::Batchtopk {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        let adam_t: Vec<u64> = serde_json::from_value(state["adam_t"].clone())?;
        for (i, o) in tr.opt.iter_mut().enumerate() {
            o.m = get(&format!("adam{i}.m"))?;
            o.v = get(&format!("adam{i}.v"))?;
            o.t = adam_t[i];
        }
        tr.t = serde_json::from_value(state["t"].clone())?;
        tr.since_fired = serde_json::from_value(state["since_fired"].clone())?;
        tr.batch_threshold = state["batch_threshold"].as_f64().unwrap_or(f64::NAN);
        Ok((tr, state["extra"].clone()))
    }
}

/// What a forward and backward pass leaves for the update: the gradients (before the `b_dec`
/// term through the encoder input, projection and clipping) and the batch's measurements.
struct Pass {
    g: Grads,
    mse: f64,
    fvu: f64,
    sparsity: f64,
    aux: f64,
    l0: f64,
    fired: Vec<bool>,
    /// The smallest active value (BatchTopK's threshold estimate).
    batch_min: f32,
    n_dead: usize,
}

/// `m ← ReLU(m + bias)` row by row (`bias` one value per column); the positive entries counted.
/// Without branches: at initialisation each entry's sign is a coin toss, and a mispredicted
/// branch per entry made such a pass ~7× slower than its memory traffic.
fn relu_with_bias(m: &mut [f32], bias: &[f32]) -> usize {
    let w = bias.len();
    m.par_chunks_mut(w * 16)
        .map(|rows| {
            let mut positive = 0usize;
            for row in rows.chunks_exact_mut(w) {
                for (v, &b) in row.iter_mut().zip(bias) {
                    let x = *v + b;
                    positive += (x > 0.0) as usize;
                    *v = if x > 0.0 { x } else { 0.0 };
                }
            }
            positive
        })
        .sum()
}

/// The ReLU-L1 pass on dense matrices, for batches where more than [`kernels::DENSE_ABOVE`] of
/// the codes are active (early in training): five blocked matrix products and element-wise
/// passes, with no sparse bookkeeping. The same sums as [`Trainer::sparse_pass`] up to f32
/// rounding order (test: `relu_dense_and_sparse_passes_agree`); with `bf16`, the five products
/// round their operands to bf16 ([`kernels::product`]). `acts`: the pre-activations with the
/// bias added and the ReLU applied ([`relu_with_bias`]).
fn relu_dense_pass(
    sae: &Sae,
    acts: Vec<f32>,
    xc: &[f32],
    y: &[f32],
    lam: f64,
    n_dead: usize,
    bf16: bool,
) -> Pass {
    let (d_in, m, d_out) = (sae.d_in, sae.d_sae, sae.d_out);
    let n = xc.len() / d_in;
    let inv_n = 1.0 / n as f32;
    // Every pass over the n × m codes is written without branches (see `relu_with_bias`).
    let mut y_hat = product(&acts, &sae.w_dec, n, m, d_out, false, false, bf16);
    kernels::add_bias_rows(&mut y_hat, &sae.b_dec);
    let err: Vec<f32> = y_hat.iter().zip(y).map(|(a, b)| a - b).collect(); // ŷ − y
    let mse = sum_f64(&err, |e| (e as f64) * (e as f64)) / n as f64;
    let fvu = mse * n as f64 / total_variance(y, d_out).max(f64::MIN_POSITIVE);
    let g_y: Vec<f32> = err.iter().map(|e| 2.0 * e * inv_n).collect();

    let mut b_dec = vec![0.0f32; d_out];
    for row in g_y.chunks_exact(d_out) {
        for (a, b) in b_dec.iter_mut().zip(row) {
            *a += b;
        }
    }
    let mut g = Grads {
        w_enc_t: Vec::new(),
        b_enc: Vec::new(),
        w_dec: product(&acts, &g_y, m, n, d_out, true, false, bf16),
        b_dec,
        log_threshold: Vec::new(),
    };
    // ∂/∂acts = g_y · W_decᵀ, then the L1 term λ‖W_dec,i‖/n, both through the ReLU's mask.
    let mut g_pre = product(&g_y, &sae.w_dec, n, d_out, m, false, true, bf16);
    let norms = sae.decoder_norms();
    let l1: Vec<f32> = norms.iter().map(|&w| lam as f32 * inv_n * w).collect();
    // Per latent: Σ_b acts (f64), active count, Σ_b ∂/∂pre; per block of rows, then summed.
    // ... and the smallest active value (BatchTopK's statistic, kept for every architecture).
    let zero = || {
        (
            vec![0.0f64; m],
            vec![0u64; m],
            vec![0.0f32; m],
            f32::INFINITY,
        )
    };
    let (col_sum, col_count, g_b_enc, batch_min) = g_pre
        .par_chunks_mut(m * 64)
        .zip(acts.par_chunks(m * 64))
        .map(|(gb, ab)| {
            let (mut s, mut c, mut gs, mut least) = zero();
            for (gr, ar) in gb.chunks_exact_mut(m).zip(ab.chunks_exact(m)) {
                for i in 0..m {
                    // Adding 0 where the latent is off leaves every sum as it was.
                    let on = ar[i] > 0.0;
                    let g = if on { gr[i] + l1[i] } else { 0.0 };
                    gr[i] = g;
                    s[i] += if on { ar[i] as f64 } else { 0.0 };
                    c[i] += on as u64;
                    gs[i] += g;
                    least = least.min(if on { ar[i] } else { f32::INFINITY });
                }
            }
            (s, c, gs, least)
        })
        .reduce(
            zero,
            |(mut s, mut c, mut gs, least), (s2, c2, gs2, least2)| {
                for i in 0..m {
                    s[i] += s2[i];
                    c[i] += c2[i];
                    gs[i] += gs2[i];
                }
                (s, c, gs, least.min(least2))
            },
        );
    g.b_enc = g_b_enc;
    let sparsity = lam / n as f64
        * col_sum
            .iter()
            .zip(&norms)
            .map(|(s, &w)| s * w as f64)
            .sum::<f64>();
    for i in 0..m {
        if col_sum[i] != 0.0 && norms[i] > 0.0 {
            let c = (lam * col_sum[i] / n as f64 / norms[i] as f64) as f32;
            let row = &sae.w_dec[i * d_out..(i + 1) * d_out];
            for (a, w) in g.w_dec[i * d_out..(i + 1) * d_out].iter_mut().zip(row) {
                *a += c * w;
            }
        }
    }
    g.w_enc_t = product(&g_pre, xc, m, n, d_in, true, false, bf16);
    Pass {
        g,
        mse,
        fvu,
        sparsity,
        aux: 0.0,
        l0: col_count.iter().sum::<u64>() as f64 / n as f64,
        fired: col_count.iter().map(|&c| c > 0).collect(),
        batch_min,
        n_dead,
    }
}

/// BatchTopK's selection: ReLU, then the `keep` largest values over the whole batch (ties at
/// the cut kept in index order until `keep` is reached).
fn batch_topk(pre: &[f32], m: usize, keep: usize) -> Codes {
    let mut pos: Vec<f32> = pre.iter().copied().filter(|&v| v > 0.0).collect();
    if pos.len() <= keep {
        return kernels::activate_rows(pre, m, kernels::relu_row);
    }
    let cut_idx = pos.len() - keep;
    let (_, cut, _) = pos.select_nth_unstable_by(cut_idx, |a, b| a.total_cmp(b));
    let cut = *cut;
    let above = pre.iter().filter(|&&v| v > cut).count();
    let mut ties_left = keep - above;
    let mut rows = Vec::with_capacity(pre.len() / m);
    for row in pre.chunks_exact(m) {
        let mut r = Vec::new();
        for (i, &v) in row.iter().enumerate() {
            if v > cut
                || (v == cut && ties_left > 0 && {
                    ties_left -= 1;
                    true
                })
            {
                r.push((i as u32, v));
            }
        }
        rows.push(r);
    }
    Codes::from_rows(rows)
}

/// `Σ_i f(v_i)` in f64: blocks of 2¹⁶ values summed in parallel, each in eight interleaved
/// partial sums (a single running sum waits on each add), the block sums added in order — the
/// same bits whatever the number of threads.
fn sum_f64(v: &[f32], f: impl Fn(f32) -> f64 + Sync) -> f64 {
    let blocks: Vec<f64> = v
        .par_chunks(1 << 16)
        .map(|block| {
            let mut acc = [0f64; 8];
            let lanes = block.chunks_exact(8);
            let rest = lanes.remainder();
            for c in lanes {
                for (a, &x) in acc.iter_mut().zip(c) {
                    *a += f(x);
                }
            }
            for (a, &x) in acc.iter_mut().zip(rest) {
                *a += f(x);
            }
            acc.iter().sum::<f64>()
        })
        .collect();
    blocks.iter().sum()
}

/// `Σ_b ‖y_b − ȳ‖²` in f64.
pub fn total_variance(y: &[f32], d: usize) -> f64 {
    let n = y.len() / d;
    let mut mean = vec![0.0f64; d];
    for row in y.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    for m in &mut mean {
        *m /= n.max(1) as f64;
    }
    let per_row: Vec<f64> = y
        .par_chunks(d)
        .map(|row| {
            let mut acc = [0f64; 8];
            for (j, (&v, m)) in row.iter().zip(&mean).enumerate() {
                acc[j % 8] += (v as f64 - m).powi(2);
            }
            acc.iter().sum::<f64>()
        })
        .collect();
    per_row.iter().sum()
}

/// Remove from each gradient row its component along the (unit-norm) weight row.
fn remove_parallel(grad: &mut [f32], w: &[f32], d: usize) {
    for (g, r) in grad.chunks_exact_mut(d).zip(w.chunks_exact(d)) {
        let dot = kernels::dot(g, r);
        let nn = kernels::dot(r, r).max(1e-30);
        let c = dot / nn;
        for (a, b) in g.iter_mut().zip(r) {
            *a -= c * b;
        }
    }
}

/// Scale each row to unit Euclidean norm.
fn normalise_rows(w: &mut [f32], d: usize) {
    for r in w.chunks_exact_mut(d) {
        let n = kernels::dot(r, r).sqrt();
        if n > 0.0 {
            for a in r.iter_mut() {
                *a /= n;
            }
        }
    }
}

/// The geometric median of `n` rows of width `d` by Weiszfeld's iteration from the mean,
/// stopping after `max_iter` steps or when the step is below `tol` times the median's norm.
pub fn geometric_median(x: &[f32], d: usize, max_iter: usize, tol: f64) -> Vec<f32> {
    let n = x.len() / d;
    let mut z = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        for (a, &v) in z.iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    for a in &mut z {
        *a /= n.max(1) as f64;
    }
    for _ in 0..max_iter {
        let mut num = vec![0.0f64; d];
        let mut den = 0.0f64;
        for row in x.chunks_exact(d) {
            let dist = row
                .iter()
                .zip(&z)
                .map(|(&v, m)| (v as f64 - m).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-8);
            let w = 1.0 / dist;
            den += w;
            for (a, &v) in num.iter_mut().zip(row) {
                *a += w * v as f64;
            }
        }
        let next: Vec<f64> = num.iter().map(|a| a / den).collect();
        let step = next
            .iter()
            .zip(&z)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = next.iter().map(|a| a * a).sum::<f64>().sqrt();
        z = next;
        if step <= tol * norm.max(1e-12) {
            break;
        }
    }
    z.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest |p − q| and the largest |q| (the two slices of one length).
    fn worst_and_scale(p: &[f32], q: &[f32], what: &str) -> (f32, f32) {
        assert_eq!(p.len(), q.len(), "{what}");
        let worst = p.iter().zip(q).fold(0f32, |w, (u, v)| w.max((u - v).abs()));
        (worst, q.iter().fold(0f32, |s, v| s.max(v.abs())))
    }

    /// The dense ReLU pass and the sparse one compute the same gradients and measurements.
    #[test]
    fn relu_dense_and_sparse_passes_agree() {
        let (d, m, n) = (24usize, 96usize, 80usize);
        let mut rng = SplitMix::new(7);
        let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
        let cfg = TrainConfig {
            arch: Architecture::Relu,
            d_in: d,
            d_sae: m,
            batch_size: n,
            sparsity_coefficient: 3.0,
            ..Default::default()
        };
        let mut tr = Trainer::new(cfg, &x).unwrap();
        tr.sae.b_enc = (0..m).map(|i| (i as f32 * 0.37).sin() * 0.05).collect();
        let xc = tr.sae.centred(&x);
        let mut pre = product(&xc, &tr.sae.w_enc_t, n, d, m, false, true, false);
        let mut raw = pre.clone();
        kernels::add_bias_rows(&mut raw, &tr.sae.b_enc);
        let positive = relu_with_bias(&mut pre, &tr.sae.b_enc);
        assert_eq!(positive, raw.iter().filter(|&&v| v > 0.0).count());
        for (a, r) in pre.iter().zip(&raw) {
            assert_eq!(*a, r.max(0.0));
        }
        assert!(positive > n * m / 4 && positive < n * m * 3 / 4);
        let a = relu_dense_pass(&tr.sae, pre.clone(), &xc, &x, 3.0, 0, false);
        let b = tr.sparse_pass(pre, &xc, &x, 3.0);
        let close = |p: &[f32], q: &[f32], what: &str| {
            let (worst, scale) = worst_and_scale(p, q, what);
            assert!(
                worst <= 1e-5 * scale.max(1e-6),
                "{what}: {worst} of {scale}"
            );
        };
        close(&a.g.w_enc_t, &b.g.w_enc_t, "W_enc");
        close(&a.g.b_enc, &b.g.b_enc, "b_enc");
        close(&a.g.w_dec, &b.g.w_dec, "W_dec");
        close(&a.g.b_dec, &b.g.b_dec, "b_dec");
        for (u, v, what) in [
            (a.mse, b.mse, "mse"),
            (a.fvu, b.fvu, "fvu"),
            (a.sparsity, b.sparsity, "sparsity"),
            (a.l0, b.l0, "l0"),
        ] {
            assert!(
                (u - v).abs() <= 1e-6 * v.abs().max(1.0),
                "{what}: {u} vs {v}"
            );
        }
        assert_eq!(a.fired, b.fired);
        assert_eq!(a.batch_min, b.batch_min);
    }

    /// The dense ReLU pass with bf16 products against the same pass in f32, from the same
    /// pre-activations: every gradient within 1% of its largest entry, the measurements within
    /// 1%. bf16 keeps 8 significant bits (relative rounding ≤ 2⁻⁹ per operand); a product read
    /// with the wrong transpose or shape would be off by the size of the values themselves.
    #[test]
    fn relu_dense_pass_with_bf16_products_is_close_to_f32() {
        let (d, m, n) = (64usize, 160usize, 96usize);
        let mut rng = SplitMix::new(11);
        let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
        let cfg = TrainConfig {
            arch: Architecture::Relu,
            d_in: d,
            d_sae: m,
            batch_size: n,
            sparsity_coefficient: 3.0,
            ..Default::default()
        };
        let tr = Trainer::new(cfg, &x).unwrap();
        let xc = tr.sae.centred(&x);
        let pre = |bf16| {
            let mut p = product(&xc, &tr.sae.w_enc_t, n, d, m, false, true, bf16);
            relu_with_bias(&mut p, &tr.sae.b_enc);
            p
        };
        // The encoder product: each entry within 2⁻⁷ of Σ|x||w| (two roundings of 2⁻⁹ each).
        let (p32, p16) = (pre(false), pre(true));
        for r in 0..n {
            for i in 0..m {
                let bound: f32 = (0..d)
                    .map(|j| (xc[r * d + j] * tr.sae.w_enc_t[i * d + j]).abs())
                    .sum();
                let (u, v) = (p32[r * m + i], p16[r * m + i]);
                assert!((u - v).abs() <= bound / 128.0, "pre[{r}, {i}]: {u} vs {v}");
            }
        }
        assert_ne!(p32, p16);
        // The backward's products, from the same pre-activations (a bf16 encoder product moves
        // a few entries across 0, and the ReLU's mask with them).
        let a = relu_dense_pass(&tr.sae, p32.clone(), &xc, &x, 3.0, 0, false);
        let b = relu_dense_pass(&tr.sae, p32, &xc, &x, 3.0, 0, true);
        let close = |p: &[f32], q: &[f32], what: &str| {
            let (worst, scale) = worst_and_scale(p, q, what);
            assert!(scale > 0.0, "{what}: all zero");
            assert!(worst <= 1e-2 * scale, "{what}: {worst} of {scale}");
            // Rounding did happen: the passes are not bit-identical.
            assert!(worst > 0.0, "{what}: bf16 products equal the f32 ones");
        };
        close(&a.g.w_enc_t, &b.g.w_enc_t, "W_enc");
        close(&a.g.b_enc, &b.g.b_enc, "b_enc");
        close(&a.g.w_dec, &b.g.w_dec, "W_dec");
        close(&a.g.b_dec, &b.g.b_dec, "b_dec");
        for (u, v, what) in [
            (a.mse, b.mse, "mse"),
            (a.fvu, b.fvu, "fvu"),
            (a.sparsity, b.sparsity, "sparsity"),
            (a.l0, b.l0, "l0"),
        ] {
            assert!((u - v).abs() <= 1e-2 * u.abs(), "{what}: {u} vs {v}");
        }
    }
}
