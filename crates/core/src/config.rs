//! The architecture-neutral model config, in the spirit of TransformerLens'
//! `HookedTransformerConfig`: one struct that drives one model type for every architecture.

use serde::{Deserialize, Serialize};

/// The architecture family a model was loaded from (kept for reports and weight naming).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// GPT-2 (learned positions, LayerNorm, gelu_new, biases).
    Gpt2,
    /// GPT-NeoX / Pythia (partial rotary, parallel attention and MLP, LayerNorm).
    GptNeox,
    /// The Llama family, SmolLM2 included (RMSNorm, rotary, gated SiLU MLP, grouped-query attention).
    Llama,
    /// Gemma 3 (QK-norm, pre and post norms, sliding-window and global layers, embedding scale).
    Gemma3,
    /// Qwen2 (the Llama layout with Q, K and V biases, grouped-query attention, rotate-half
    /// rotary embeddings in llama.cpp's GGUF too, untied or tied embeddings as the file says).
    Qwen2,
    /// A model Interplab built or trained itself.
    Custom,
}

/// Which normalisation a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormKind {
    /// Centred, scaled by the standard deviation, then `w`, `b`.
    LayerNorm,
    /// Scaled by the root mean square, then `w`.
    RmsNorm,
    /// No normalisation (toy models).
    None,
}

/// The MLP non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU (erf).
    Gelu,
    /// Tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluNew,
    /// ReLU.
    Relu,
    /// SiLU (swish).
    Silu,
}

/// How positions enter the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// A learned `W_pos` added to the embedding.
    Learned,
    /// Rotary embeddings on the first `dim` dimensions of each head (rotate-half / NeoX style).
    /// `local_base` is the base of sliding-window layers when it differs (Gemma 3).
    Rotary {
        dim: usize,
        base: f64,
        local_base: Option<f64>,
    },
    /// No positional information (toy models).
    None,
}

/// Everything the hooked transformer needs to know about a model's shape and computation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads; equal to `n_heads` unless grouped-query attention.
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub d_vocab: usize,
    /// Maximum context length.
    pub n_ctx: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub positions: Positions,
    pub act: Activation,
    /// `act(x W_gate) * (x W_in)` instead of `act(x W_in)`.
    pub gated_mlp: bool,
    /// Attention and MLP both read `resid_pre` (GPT-NeoX, GPT-J).
    pub parallel_attn_mlp: bool,
    /// No MLP at all.
    pub attn_only: bool,
    /// RMSNorm on each head's queries and keys before rotary (Gemma 3).
    pub qk_norm: bool,
    /// Norms on the outputs of attention and MLP before they join the residual (Gemma 2/3).
    pub post_norms: bool,
    /// Per layer: `Some(w)` for sliding-window attention over the last `w` positions, `None` for global.
    pub layer_windows: Vec<Option<usize>>,
    /// Multiplier applied to the token embedding (Gemma: sqrt(d_model)).
    pub embed_scale: Option<f64>,
    /// Attention scores are divided by this (sqrt(d_head), or sqrt(query_pre_attn_scalar)).
    pub attn_scale: f64,
    /// `tanh(x / c) * c` on attention scores.
    pub attn_logit_softcap: Option<f64>,
    /// `tanh(x / c) * c` on the final logits.
    pub final_logit_softcap: Option<f64>,
    /// The unembedding is the transposed token embedding.
    pub tied_embeddings: bool,
    /// BOS token id to prepend by default, if the model wants one.
    pub default_prepend_bos: bool,
}

impl ModelConfig {
    /// An attention-only transformer as toy models use: `Custom` architecture, no MLPs, no
    /// norms, learned positions, untied embeddings, scores scaled by √d_head, no BOS. Adjust
    /// the rest with struct update syntax.
    pub fn attention_only(
        d_model: usize,
        n_layers: usize,
        n_heads: usize,
        d_head: usize,
        d_vocab: usize,
        n_ctx: usize,
    ) -> Self {
        ModelConfig {
            architecture: Architecture::Custom,
            d_model,
            n_layers,
            n_heads,
            n_kv_heads: n_heads,
            d_head,
            d_mlp: 0,
            d_vocab,
            n_ctx,
            norm: NormKind::None,
            norm_eps: 1e-5,
            positions: Positions::Learned,
            act: Activation::Relu,
            gated_mlp: false,
            parallel_attn_mlp: false,
            attn_only: true,
            qk_norm: false,
            post_norms: false,
            layer_windows: vec![None; n_layers],
            embed_scale: None,
            attn_scale: (d_head as f64).sqrt(),
            attn_logit_softcap: None,
            final_logit_softcap: None,
            tied_embeddings: false,
            default_prepend_bos: false,
        }
    }

    /// Heads sharing each key/value head.
    pub fn kv_repeat(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Check internal consistency; loaders call this so a malformed config fails early and clearly.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Unsupported(m));
        if self.d_model == 0 || self.n_heads == 0 || self.d_head == 0 || self.d_vocab == 0 {
            return bad("config has a zero dimension".into());
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.layer_windows.len() != self.n_layers {
            return bad(format!(
                "{} layer window entries for {} layers",
                self.layer_windows.len(),
                self.n_layers
            ));
        }
        if let Positions::Rotary { dim, .. } = self.positions {
            if dim == 0 || dim > self.d_head || dim % 2 != 0 {
                return bad(format!(
                    "rotary dim {dim} must be even and at most d_head {}",
                    self.d_head
                ));
            }
        }
        Ok(())
    }
}
