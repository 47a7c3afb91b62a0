//! Fused in-place AdamW.
//!
//! PyTorch's `torch.optim.AdamW` (decoupled weight decay, Loshchilov & Hutter 2019), one pass
//! over each parameter updating it and both moments together, with `t` the step (from 1):
//!
//! ```text
//! p ← p − lr·wd·p
//! m ← β1·m + (1 − β1)·g
//! v ← β2·v + (1 − β2)·g²
//! p ← p − lr · (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε)
//! ```
//!
//! The loop is plain slice arithmetic the compiler vectorises; candle's `AdamW` is a chain of
//! unfused tensor ops (DESIGN.md).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Elements per parallel task of [`AdamW::step`] (slices shorter than two run on the caller).
const PAR_CHUNK: usize = 1 << 15;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults.
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW state for one flat parameter buffer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Steps taken.
    pub t: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl AdamW {
    /// Zero moments for `n` parameters.
    pub fn new(cfg: AdamWConfig, n: usize) -> AdamW {
        AdamW {
            cfg,
            t: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// One step: update `params` in place from `grads` (same length as the state).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        assert_eq!(params.len(), self.m.len(), "parameter count changed");
        assert_eq!(grads.len(), self.m.len(), "gradient count differs");
        self.t += 1;
        let c = &self.cfg;
        let decay = (1.0 - c.lr * c.weight_decay) as f32;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        // p -= lr · m̂ / (√v̂ + ε) with m̂ = m / bc1, v̂ = v / bc2.
        let step = (c.lr / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        let eps = c.eps as f32;
        let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                *p *= decay;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= step * *m / (v.sqrt() * inv_sqrt_bc2 + eps);
            }
        };
        // Each element is updated on its own, so splitting the slices changes no result.
        if params.len() >= 2 * PAR_CHUNK {
            params
                .par_chunks_mut(PAR_CHUNK)
                .zip(grads.par_chunks(PAR_CHUNK))
                .zip(self.m.par_chunks_mut(PAR_CHUNK))
                .zip(self.v.par_chunks_mut(PAR_CHUNK))
                .for_each(|(((p, g), m), v)| update(p, g, m, v));
        } else {
            update(params, grads, &mut self.m, &mut self.v);
        }
    }
}
