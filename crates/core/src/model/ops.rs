//! The model's numerical building blocks. Every op here has a correct gradient: the fused ones
//! are our own kernels (with backward passes), never candle-nn's fused softmax, norms or rope,
//! which drop gradients.

use candle_core::{Device, Tensor};

use crate::config::Activation;
use crate::kernels;
use crate::Result;

/// RMSNorm as TransformerLens: `scale = sqrt(mean(x²) + eps)`, returns `(x / scale · w, scale)`.
pub fn rms_norm(x: &Tensor, w: Option<&Tensor>, eps: f64) -> Result<(Tensor, Tensor)> {
    Ok(kernels::rms_norm(x, w, eps)?)
}

/// LayerNorm as TransformerLens: centre, `scale = sqrt(mean(x²) + eps)`, returns
/// `((x - mean) / scale · w + b, scale)`.
pub fn layer_norm(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    Ok(kernels::layer_norm(x, w, b, eps)?)
}

/// Softmax over the last dimension; rows may hold `-inf` (masked) entries.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    Ok(kernels::softmax_last_dim(x)?)
}

/// `act(x)`.
pub fn act(x: &Tensor, a: Activation) -> Result<Tensor> {
    Ok(match a {
        Activation::Gelu => kernels::gelu_erf(x)?,
        Activation::GeluNew => kernels::gelu_tanh(x)?,
        Activation::Relu => x.relu()?,
        Activation::Silu => kernels::silu(x)?,
    })
}

/// `act(gate) · up` for gated MLPs, fused where a kernel exists.
pub fn act_mul(gate: &Tensor, up: &Tensor, a: Activation) -> Result<Tensor> {
    Ok(match a {
        Activation::Silu => kernels::silu_mul(gate, up)?,
        Activation::GeluNew => kernels::gelu_tanh_mul(gate, up)?,
        _ => (act(gate, a)? * up)?,
    })
}

/// Cosine and sine tables `[batch, pos, 1, dim/2]` for rotary embeddings at the given positions,
/// computed in f32 the way Hugging Face does (`inv_freq = 1 / base^(2i/dim)`, angle = pos · inv_freq).
pub fn rotary_tables(
    positions: &[u32],
    batch: usize,
    pos: usize,
    dim: usize,
    base: f64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / (base as f32).powf((2 * i) as f32 / dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in &inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let shape = (batch, pos, 1, half);
    Ok((
        Tensor::from_vec(cos, shape, device)?,
        Tensor::from_vec(sin, shape, device)?,
    ))
}

/// Rotate-half rotary embedding on the first `dim` features of each head of `x` `[b, p, n, d_head]`
/// (one fused pass, [`kernels::rope`]).
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor, dim: usize) -> Result<Tensor> {
    Ok(kernels::rope(x, cos, sin, dim)?)
}
