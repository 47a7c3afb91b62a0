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
    /// `[W | b]`: `W` as `[m, n]` row-major (column `i` is feature i's direction `Wᵢ`), then
    /// the bias `[n]`. One buffer, so the optimiser updates it in place.
    params: Vec<f32>,
    /// Features `n` (the bias length).
    n: usize,
    opt: AdamW,
}

impl Instance {
    /// `W`, `[m, n]` row-major.
    pub fn w(&self) -> &[f32] {
        &self.params[..self.params.len() - self.n]
    }

    /// The output bias `b`, `[n]`.
    pub fn b(&self) -> &[f32] {
        &self.params[self.params.len() - self.n..]
    }
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
                    params: (0..cfg.m * cfg.n)
                        .map(|_| (rng.normal() * std) as f32)
                        .chain(std::iter::repeat_n(0.0, cfg.n))
                        .collect(),
                    n: cfg.n,
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
    let x = batch(cfg, inst.sparsity, k, t);
    let (loss, grad) = loss_and_grad(cfg.relu, cfg.n, cfg.m, inst.w(), inst.b(), imp, &x);
    inst.opt.step(&mut inst.params, &grad);
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

/// Samples processed side by side in SIMD lanes.
const LANES: usize = 8;
type Lanes = [f32; LANES];

/// `acc + a · x`, lane by lane.
#[inline(always)]
fn fma(acc: Lanes, a: f32, x: &Lanes) -> Lanes {
    let mut o = acc;
    for (o, x) in o.iter_mut().zip(x) {
        *o += a * x;
    }
    o
}

/// Loss and gradient (`[W (m×n) | b (n)]`) of one instance on one batch.
///
/// Vectorised across samples: `LANES` samples share each arithmetic instruction (no
/// floating-point reassociation needed), and the per-parameter sums over samples are reduced
/// once per batch. A batch that is not a multiple of `LANES` has its tail padded with zero
/// samples whose gradient contribution is masked out.
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
    let zero: Lanes = [0.0; LANES];
    let mut gw_l = vec![zero; m * n];
    let mut gb_l = vec![zero; n];
    let mut loss_l = zero;
    let (mut xt, mut h, mut d, mut dh) =
        (vec![zero; n], vec![zero; m], vec![zero; n], vec![zero; m]);
    for start in (0..bsz).step_by(LANES) {
        let live = (bsz - start).min(LANES);
        let mut mask = zero;
        mask[..live].fill(1.0);
        // Transpose LANES samples: xt[j][l].
        for (j, xj) in xt.iter_mut().enumerate() {
            for (l, v) in xj.iter_mut().enumerate() {
                *v = if l < live {
                    x[(start + l) * n + j]
                } else {
                    0.0
                };
            }
        }
        // h[k] = Σ_j W[k][j] x[j]
        for (k, hk) in h.iter_mut().enumerate() {
            let mut acc = zero;
            for (xj, &wkj) in xt.iter().zip(&w[k * n..(k + 1) * n]) {
                acc = fma(acc, wkj, xj);
            }
            *hk = acc;
        }
        // y[j] = b[j] + Σ_k W[k][j] h[k]; d = ∂loss/∂y
        for j in 0..n {
            let mut yj = [b[j]; LANES];
            for (k, hk) in h.iter().enumerate() {
                let wkj = w[k * n + j];
                for l in 0..LANES {
                    yj[l] += wkj * hk[l];
                }
            }
            let (ij, xj) = (imp[j], &xt[j]);
            let dj = &mut d[j];
            for l in 0..LANES {
                let out = if relu { yj[l].max(0.0) } else { yj[l] };
                let e = (out - xj[l]) * mask[l];
                loss_l[l] += ij * e * e;
                dj[l] = if !relu || yj[l] > 0.0 {
                    scale * ij * e
                } else {
                    0.0
                };
            }
            for l in 0..LANES {
                gb_l[j][l] += dj[l];
            }
        }
        // dh[k] = Σ_j W[k][j] d[j]; gW[k][j] += h[k] d[j] + dh[k] x[j]
        for (k, dhk) in dh.iter_mut().enumerate() {
            let mut acc = zero;
            for (dj, &wkj) in d.iter().zip(&w[k * n..(k + 1) * n]) {
                acc = fma(acc, wkj, dj);
            }
            *dhk = acc;
        }
        for k in 0..m {
            let (hk, dhk) = (h[k], dh[k]);
            for ((g, dj), xj) in gw_l[k * n..(k + 1) * n].iter_mut().zip(&d).zip(&xt) {
                let mut o = *g;
                for l in 0..LANES {
                    o[l] += hk[l] * dj[l] + dhk[l] * xj[l];
                }
                *g = o;
            }
        }
    }
    let mut grad: Vec<f32> = gw_l.iter().map(|g| g.iter().sum()).collect();
    grad.extend(gb_l.iter().map(|g| g.iter().sum::<f32>()));
    let loss: f64 = loss_l.iter().map(|&v| v as f64).sum();
    (loss / (bsz * n) as f64, grad)
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
    let col = |i: usize| -> Vec<f64> { (0..m).map(|k| inst.w()[k * n + i] as f64).collect() };
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
