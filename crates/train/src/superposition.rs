//! Toy Models of Superposition (Elhage et al. 2022): `n` features squeezed into `m < n`
//! dimensions, `h = W x`, `x' = ReLU(Wᵀ h + b)` (or the linear `x' = Wᵀ h + b`), many
//! instances (one per sparsity) trained side by side.
//!
//! Data: feature `i` is 0 with probability `S` (the instance's sparsity), else uniform on
//! [0, 1). Loss of an instance: the importance-weighted squared error averaged over the batch and
//! the features, `mean_{b,i} I_i (x_i − x'_i)²` (the paper's notebook); instances add. AdamW
//! (PyTorch semantics, no weight decay by default), `W` initialised Xavier-normal
//! (std √(2/(m+n))), `b` zero.
//!
//! Forward and backward are written by hand over flat f32 buffers (a `[m, n]` matrix and a
//! bias per instance): the model is tiny, so framework overhead would dominate; instances train
//! in parallel. The data of step `t` of instance `k` is drawn from a generator seeded with
//! (seed, k, t), so a run is reproducible whatever the thread count.

use interplab_core::rng::SplitMix;
use interplab_core::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, AdamWConfig};

/// What to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuperpositionConfig {
    /// Features.
    pub n: usize,
    /// Hidden dimensions.
    pub m: usize,
    /// Importance of feature i is `importance_decay^i`.
    pub importance_decay: f64,
    /// One instance per sparsity S (probability that a feature is zero).
    pub sparsities: Vec<f64>,
    /// ReLU output (true) or linear output (false).
    pub relu: bool,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for SuperpositionConfig {
    /// The paper's first experiment: n = 20, m = 5, I_i = 0.7^i, seven sparsities, 10k steps.
    fn default() -> Self {
        SuperpositionConfig {
            n: 20,
            m: 5,
            importance_decay: 0.7,
            sparsities: vec![0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999],
            relu: true,
            steps: 10_000,
            batch: 1024,
            lr: 1e-3,
            seed: 0,
        }
    }
}

/// One trained instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub sparsity: f64,
    /// `W` as `[m, n]`, row-major: column `i` is feature i's direction `W_i`.
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    opt: AdamW,
}

/// The batched model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToyModel {
    pub cfg: SuperpositionConfig,
    pub instances: Vec<Instance>,
    /// Steps taken.
    pub step: usize,
    /// Mean loss over instances, per step.
    pub loss_history: Vec<f64>,
}

impl ToyModel {
    /// A freshly initialised model.
    pub fn new(cfg: SuperpositionConfig) -> Result<ToyModel> {
        if cfg.n == 0 || cfg.m == 0 || cfg.batch == 0 || cfg.sparsities.is_empty() {
            return Err(Error::Input(
                "n, m, batch and the sparsity list must be non-empty".into(),
            ));
        }
        if cfg.sparsities.iter().any(|s| !(0.0..1.0).contains(s)) {
            return Err(Error::Input("sparsities must be in [0, 1)".into()));
        }
        let std = (2.0 / (cfg.m + cfg.n) as f64).sqrt();
        let opt = AdamWConfig {
            lr: cfg.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let instances = cfg
            .sparsities
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let mut rng = SplitMix::new(cfg.seed ^ (0xA11C_E000 + k as u64));
                Instance {
                    sparsity: s,
                    w: (0..cfg.m * cfg.n)
                        .map(|_| (rng.normal() * std) as f32)
                        .collect(),
                    b: vec![0.0; cfg.n],
                    opt: AdamW::new(opt, cfg.m * cfg.n + cfg.n),
                }
            })
            .collect();
        Ok(ToyModel {
            cfg,
            instances,
            step: 0,
            loss_history: Vec::new(),
        })
    }

    /// Train `steps` more steps (up to `cfg.steps` in all), calling `progress(step, loss)`
    /// after each.
    pub fn train(&mut self, steps: usize, progress: &mut dyn FnMut(usize, f64)) {
        let cfg = self.cfg.clone();
        let importance: Vec<f32> = (0..cfg.n)
            .map(|i| cfg.importance_decay.powi(i as i32) as f32)
            .collect();
        let end = (self.step + steps).min(cfg.steps);
        while self.step < end {
            let t = self.step as u64;
            let losses: Vec<f64> = self
                .instances
                .par_iter_mut()
                .enumerate()
                .map(|(k, inst)| step_instance(&cfg, &importance, inst, k as u64, t))
                .collect();
            let loss = losses.iter().sum::<f64>() / losses.len() as f64;
            self.loss_history.push(loss);
            self.step += 1;
            progress(self.step, loss);
        }
    }
}

/// One AdamW step of one instance; returns its loss.
fn step_instance(
    cfg: &SuperpositionConfig,
    imp: &[f32],
    inst: &mut Instance,
    k: u64,
    t: u64,
) -> f64 {
    let (n, m, bsz) = (cfg.n, cfg.m, cfg.batch);
    let (loss, mut grad) = loss_and_grad(
        cfg.relu,
        n,
        m,
        &inst.w,
        &inst.b,
        imp,
        &batch(cfg, inst.sparsity, k, t),
    );
    let _ = bsz;
    let mut params: Vec<f32> = inst.w.iter().chain(&inst.b).copied().collect();
    inst.opt.step(&mut params, &grad);
    inst.w.copy_from_slice(&params[..m * n]);
    inst.b.copy_from_slice(&params[m * n..]);
    grad.clear();
    loss
}

/// The batch of step `t` for instance `k`: `[batch, n]` row-major.
pub fn batch(cfg: &SuperpositionConfig, sparsity: f64, k: u64, t: u64) -> Vec<f32> {
    let mut rng = SplitMix::new(
        cfg.seed
            .wrapping_mul(0x9E37_79B9)
            .wrapping_add(k << 40)
            .wrapping_add(t),
    );
    // One u64 per feature: the low 32 bits decide zero or not, the high 24 give the value.
    let keep = ((1.0 - sparsity) * 4_294_967_296.0) as u64;
    (0..cfg.batch * cfg.n)
        .map(|_| {
            let r = rng.next_u64();
            if (r & 0xFFFF_FFFF) < keep {
                (r >> 40) as f32 / 16_777_216.0
            } else {
                0.0
            }
        })
        .collect()
}

/// Loss and gradient (`[W (m×n) | b (n)]`) of one instance on one batch.
pub fn loss_and_grad(
    relu: bool,
    n: usize,
    m: usize,
    w: &[f32],
    b: &[f32],
    imp: &[f32],
    x: &[f32],
) -> (f64, Vec<f32>) {
    let bsz = x.len() / n;
    let scale = 2.0 / (bsz * n) as f32;
    let mut gw = vec![0f32; m * n];
    let mut gb = vec![0f32; n];
    let mut loss = 0f64;
    let (mut h, mut y, mut d, mut dh) =
        (vec![0f32; m], vec![0f32; n], vec![0f32; n], vec![0f32; m]);
    for xs in x.chunks_exact(n) {
        // h = W x, skipping zero features (most of them when sparse).
        h.iter_mut().for_each(|v| *v = 0.0);
        for (j, &xj) in xs.iter().enumerate() {
            if xj != 0.0 {
                for k in 0..m {
                    h[k] += w[k * n + j] * xj;
                }
            }
        }
        // y = Wᵀ h + b
        y.copy_from_slice(b);
        for k in 0..m {
            let hk = h[k];
            for (yj, wkj) in y.iter_mut().zip(&w[k * n..(k + 1) * n]) {
                *yj += wkj * hk;
            }
        }
        let mut l = 0f32;
        for j in 0..n {
            let out = if relu { y[j].max(0.0) } else { y[j] };
            let e = out - xs[j];
            l += imp[j] * e * e;
            d[j] = if !relu || y[j] > 0.0 {
                scale * imp[j] * e
            } else {
                0.0
            };
        }
        loss += l as f64;
        for (g, dj) in gb.iter_mut().zip(&d) {
            *g += dj;
        }
        // dh = W d; gW += h ⊗ d + dh ⊗ x
        for k in 0..m {
            let row = &w[k * n..(k + 1) * n];
            dh[k] = row.iter().zip(&d).map(|(a, b)| a * b).sum();
        }
        for k in 0..m {
            let (hk, dhk) = (h[k], dh[k]);
            let g = &mut gw[k * n..(k + 1) * n];
            for j in 0..n {
                g[j] += hk * d[j] + dhk * xs[j];
            }
        }
    }
    gw.extend_from_slice(&gb);
    (loss / (bsz * n) as f64, gw)
}

/// Geometry of one trained instance.
#[derive(Debug, Clone, Serialize)]
pub struct Geometry {
    pub sparsity: f64,
    /// ‖W_i‖ per feature.
    pub norms: Vec<f64>,
    /// Σ_{j≠i} (Ŵ_i · W_j)² per feature.
    pub superposition: Vec<f64>,
    /// Features with ‖W_i‖ > 0.5.
    pub represented: usize,
    /// Dimensions per feature D* = m / ‖W‖²_F.
    pub dims_per_feature: f64,
    /// Per-feature D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)² (0 for a zero column).
    pub feature_dims: Vec<f64>,
    /// WᵀW, `[n][n]`.
    pub wtw: Vec<Vec<f64>>,
}

/// Measure an instance's geometry.
pub fn geometry(n: usize, m: usize, inst: &Instance) -> Geometry {
    let col = |i: usize| -> Vec<f64> { (0..m).map(|k| inst.w[k * n + i] as f64).collect() };
    let cols: Vec<Vec<f64>> = (0..n).map(col).collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let wtw: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| dot(&cols[i], &cols[j])).collect())
        .collect();
    let norms: Vec<f64> = (0..n).map(|i| wtw[i][i].sqrt()).collect();
    let mut superposition = Vec::new();
    let mut feature_dims = Vec::new();
    for i in 0..n {
        if norms[i] < 1e-12 {
            superposition.push(0.0);
            feature_dims.push(0.0);
            continue;
        }
        let proj: Vec<f64> = (0..n).map(|j| (wtw[i][j] / norms[i]).powi(2)).collect();
        superposition.push(
            proj.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, v)| v)
                .sum(),
        );
        feature_dims.push(wtw[i][i] / proj.iter().sum::<f64>());
    }
    let frob2: f64 = (0..n).map(|i| wtw[i][i]).sum();
    Geometry {
        sparsity: inst.sparsity,
        represented: norms.iter().filter(|&&v| v > 0.5).count(),
        dims_per_feature: m as f64 / frob2,
        norms,
        superposition,
        feature_dims,
        wtw,
    }
}
