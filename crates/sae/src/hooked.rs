//! SAEs spliced into a model as hook points (SAELens' `HookedSAETransformer` with
//! `use_error_term = True`), and steering along a latent's decoder direction.
//!
//! [`SaeAttachment`] at host `H` runs, in order:
//! - `H.sae.hook_sae_input`: the host activation `x`;
//! - `H.sae.hook_sae_acts_pre`: `(x − b_dec)·W_enc + b_enc` (`b_dec` subtracted when the SAE
//!   says so);
//! - `H.sae.hook_sae_acts_post`: the codes — the architecture's activation applied to the
//!   (possibly hooked) pre-activations: `relu(pre)·mask`, the mask being TopK's top k, JumpReLU's
//!   or BatchTopK's `pre > θ`, or all ones for ReLU (the mask is a constant, so gradients flow
//!   through the kept entries, as in attribution);
//! - `H.sae.hook_sae_recons`: `codes·W_dec + b_dec`;
//! - `H.sae.hook_sae_error`: `x − x̂_clean`, the clean SAE's error (no hook applied);
//! - `H.sae.hook_sae_output`: `recons + error`, which replaces the host activation.
//!
//! Without interventions `recons = x̂_clean`, so the output equals `x` up to rounding; ablating
//! or patching a latent changes the model by exactly that latent's decoder contribution. A
//! transcoder cannot attach (its output belongs at another hook).

use std::sync::Arc;

use candle_core::{DType, Tensor};
use interplab_core::model::{Attachment, HookedTransformer};

use crate::{Architecture, Sae};

/// The SAE's points, relative to the host, in firing order.
pub const POINTS: [&str; 6] = [
    "sae.hook_sae_input",
    "sae.hook_sae_acts_pre",
    "sae.hook_sae_acts_post",
    "sae.hook_sae_recons",
    "sae.hook_sae_error",
    "sae.hook_sae_output",
];

/// An SAE attached at a hook point.
#[derive(Debug)]
pub struct SaeAttachment {
    host: String,
    sae: Sae,
    w_enc: Tensor,
    b_enc: Tensor,
    w_dec: Tensor,
    b_dec: Tensor,
}

type CoreResult<T> = interplab_core::Result<T>;

fn core_err(e: impl std::fmt::Display) -> interplab_core::Error {
    interplab_core::Error::Hook(e.to_string())
}

impl SaeAttachment {
    /// `sae` at `host` (f32 tensors on the CPU).
    pub fn new(host: &str, sae: Sae) -> anyhow::Result<SaeAttachment> {
        anyhow::ensure!(
            !sae.transcoder,
            "a transcoder reads one hook and writes another; only SAEs attach at a hook point"
        );
        let dev = candle_core::Device::Cpu;
        let w_enc = Tensor::from_vec(sae.w_enc(), (sae.d_in, sae.d_sae), &dev)?;
        let b_enc = Tensor::from_vec(sae.b_enc.clone(), sae.d_sae, &dev)?;
        let w_dec = Tensor::from_vec(sae.w_dec.clone(), (sae.d_sae, sae.d_out), &dev)?;
        let b_dec = Tensor::from_vec(sae.b_dec.clone(), sae.d_out, &dev)?;
        Ok(SaeAttachment {
            host: host.to_string(),
            sae,
            w_enc,
            b_enc,
            w_dec,
            b_dec,
        })
    }

    /// The SAE.
    pub fn sae(&self) -> &Sae {
        &self.sae
    }

    /// `[rows, d]` view of `[..., d]`.
    fn rows(t: &Tensor, d: usize) -> CoreResult<Tensor> {
        Ok(t.reshape(((), d))?)
    }

    fn encode_pre(&self, x: &Tensor) -> CoreResult<Tensor> {
        let xc = if self.sae.apply_b_dec_to_input {
            x.broadcast_sub(&self.b_dec)?
        } else {
            x.clone()
        };
        Ok(xc.matmul(&self.w_enc)?.broadcast_add(&self.b_enc)?)
    }

    /// The codes from pre-activations `[rows, d_sae]`.
    fn activate(&self, pre: &Tensor) -> CoreResult<Tensor> {
        let relu = pre.relu()?;
        if self.sae.arch == Architecture::Relu {
            return Ok(relu);
        }
        let v: Vec<f32> = pre.flatten_all()?.to_vec1()?;
        let codes = self.sae.activate(&v);
        let mut mask = vec![0.0f32; v.len()];
        let m = self.sae.d_sae;
        for b in 0..codes.rows() {
            for (i, _) in codes.row(b) {
                mask[b * m + i] = 1.0;
            }
        }
        let mask = Tensor::from_vec(mask, pre.dims(), pre.device())?;
        Ok((relu * mask)?)
    }
}

impl Attachment for SaeAttachment {
    fn host(&self) -> &str {
        &self.host
    }

    fn points(&self) -> Vec<String> {
        POINTS.iter().map(|s| s.to_string()).collect()
    }

    fn forward(
        &self,
        x: &Tensor,
        fire: &mut dyn FnMut(&str, Tensor) -> CoreResult<Tensor>,
    ) -> CoreResult<Tensor> {
        let shape = x.dims().to_vec();
        let d = *shape
            .last()
            .ok_or_else(|| core_err("a scalar activation"))?;
        if d != self.sae.d_in {
            return Err(core_err(format!(
                "the SAE at `{}` reads {} dimensions but the activation has {d}",
                self.host, self.sae.d_in
            )));
        }
        let dtype = x.dtype();
        let xf = Self::rows(&x.to_dtype(DType::F32)?, d)?;
        let xin = fire(POINTS[0], xf.clone())?;
        let pre = fire(POINTS[1], self.encode_pre(&xin)?)?;
        let acts = fire(POINTS[2], self.activate(&pre)?)?;
        let recons = fire(
            POINTS[3],
            acts.matmul(&self.w_dec)?.broadcast_add(&self.b_dec)?,
        )?;
        // The clean SAE's reconstruction, without any hook.
        let clean = {
            let v: Vec<f32> = xf.flatten_all()?.to_vec1()?;
            let (_, rec) = self.sae.forward(&v);
            Tensor::from_vec(rec, xf.dims(), xf.device())?
        };
        let error = fire(POINTS[4], (&xf - &clean)?)?;
        let out = fire(POINTS[5], (recons + error)?)?;
        Ok(out.reshape(shape)?.to_dtype(dtype)?)
    }
}

/// Attach `sae` to `model` at `host`; its points are then `host.sae.hook_sae_*`.
pub fn attach(model: &mut HookedTransformer, host: &str, sae: Sae) -> anyhow::Result<()> {
    let a = SaeAttachment::new(host, sae)?;
    model.attach(Arc::new(a))?;
    Ok(())
}

/// A latent's decoder direction `W_dec[latent]` (unit length when `normalise`), for steering:
/// add `coefficient · direction` at the SAE's hook.
pub fn decoder_direction(sae: &Sae, latent: usize, normalise: bool) -> anyhow::Result<Vec<f32>> {
    anyhow::ensure!(
        latent < sae.d_sae,
        "latent {latent} does not exist: the SAE has {} latents",
        sae.d_sae
    );
    let mut v = sae.w_dec[latent * sae.d_out..(latent + 1) * sae.d_out].to_vec();
    if normalise {
        let n = v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt() as f32;
        if n > 0.0 {
            v.iter_mut().for_each(|a| *a /= n);
        }
    }
    Ok(v)
}
