//! The sparse autoencoder (or transcoder) itself: parameters, encoding and decoding.
//!
//! Definitions (docs/sae.md): `pre = (x − b_dec)·W_enc + b_enc` (a transcoder does not subtract
//! `b_dec`), `f = act(pre)`, `x̂ = f·W_dec + b_dec`. The encoder is kept transposed in memory
//! (`w_enc_t`, `[d_sae, d_in]`, one row per latent) so that training can touch one latent's
//! weights as one contiguous row; SAELens' `W_enc [d_in, d_sae]` is produced on saving.

use serde::{Deserialize, Serialize};

/// The activation function and its sparsity mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// ReLU with an L1 penalty weighted by decoder norms.
    Relu,
    /// The `k` largest pre-activations per row, then ReLU; AuxK for dead latents.
    Topk,
    /// ReLU, then the `k·B` largest over a batch; a threshold at inference.
    Batchtopk,
    /// `pre · H(pre − θ)` with a learned threshold per latent; an L0 penalty.
    Jumprelu,
}

impl Architecture {
    /// Parse `relu`, `topk`, `batchtopk` or `jumprelu`.
    pub fn parse(s: &str) -> anyhow::Result<Architecture> {
        Ok(match s {
            "relu" | "standard" => Architecture::Relu,
            "topk" => Architecture::Topk,
            "batchtopk" => Architecture::Batchtopk,
            "jumprelu" => Architecture::Jumprelu,
            _ => anyhow::bail!(
                "unknown SAE architecture {s:?} (expected relu, topk, batchtopk or jumprelu)"
            ),
        })
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Relu => "relu",
            Architecture::Topk => "topk",
            Architecture::Batchtopk => "batchtopk",
            Architecture::Jumprelu => "jumprelu",
        }
    }

    /// Whether training keeps decoder rows at unit norm.
    pub fn unit_norm_decoder(self) -> bool {
        !matches!(self, Architecture::Relu)
    }

    /// Whether the architecture uses `k`.
    pub fn uses_k(self) -> bool {
        matches!(self, Architecture::Topk | Architecture::Batchtopk)
    }
}

/// A sparse autoencoder or transcoder with its weights (f32, CPU).
#[derive(Debug, Clone, PartialEq)]
pub struct Sae {
    pub arch: Architecture,
    /// Input width.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Output width (`d_in` for an SAE).
    pub d_out: usize,
    /// Active latents per row for `topk` (and the batch average for `batchtopk` in training).
    pub k: usize,
    /// A transcoder reads one hook and predicts another.
    pub transcoder: bool,
    /// Whether the encoder reads `x − b_dec` (SAEs trained here) or `x` (transcoders, and
    /// SAEs loaded from SAELens with `apply_b_dec_to_input: false`).
    pub apply_b_dec_to_input: bool,
    /// The encoder transposed: `[d_sae, d_in]`, row `i` is latent `i`'s encoder direction.
    pub w_enc_t: Vec<f32>,
    /// `[d_sae]`.
    pub b_enc: Vec<f32>,
    /// `[d_sae, d_out]`, row `i` is latent `i`'s decoder direction.
    pub w_dec: Vec<f32>,
    /// `[d_out]`.
    pub b_dec: Vec<f32>,
    /// `[d_sae]` thresholds for `jumprelu` and `batchtopk` at inference (empty otherwise).
    pub threshold: Vec<f32>,
}

/// Sparse codes of a batch, row by row (CSR): row `b`'s active latents are
/// `idx[ptr[b]..ptr[b+1]]` with values `val[..]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Codes {
    pub ptr: Vec<usize>,
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
}

impl Codes {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.ptr.len().saturating_sub(1)
    }
    /// Nonzero entries.
    pub fn nnz(&self) -> usize {
        self.idx.len()
    }
    /// Row `b` as (latent, value) pairs.
    pub fn row(&self, b: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let r = self.ptr[b]..self.ptr[b + 1];
        self.idx[r.clone()]
            .iter()
            .zip(&self.val[r])
            .map(|(&i, &v)| (i as usize, v))
    }
    /// Build from per-row lists.
    pub fn from_rows(rows: Vec<Vec<(u32, f32)>>) -> Codes {
        let mut c = Codes {
            ptr: Vec::with_capacity(rows.len() + 1),
            ..Default::default()
        };
        c.ptr.push(0);
        for r in rows {
            for (i, v) in r {
                c.idx.push(i);
                c.val.push(v);
            }
            c.ptr.push(c.idx.len());
        }
        c
    }
    /// Dense `[rows, d_sae]`.
    pub fn to_dense(&self, d_sae: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.rows() * d_sae];
        for b in 0..self.rows() {
            for (i, v) in self.row(b) {
                out[b * d_sae + i] += v;
            }
        }
        out
    }
}

impl Sae {
    /// Check the buffers' lengths against the sizes.
    pub fn check(&self) -> anyhow::Result<()> {
        let want = [
            ("W_enc", self.w_enc_t.len(), self.d_sae * self.d_in),
            ("b_enc", self.b_enc.len(), self.d_sae),
            ("W_dec", self.w_dec.len(), self.d_sae * self.d_out),
            ("b_dec", self.b_dec.len(), self.d_out),
        ];
        for (name, got, want) in want {
            anyhow::ensure!(
                got == want,
                "SAE tensor {name} has {got} values, expected {want}"
            );
        }
        let needs_threshold = matches!(self.arch, Architecture::Jumprelu | Architecture::Batchtopk);
        anyhow::ensure!(
            !needs_threshold || self.threshold.len() == self.d_sae,
            "a {} SAE needs a threshold for each of its {} latents",
            self.arch.name(),
            self.d_sae
        );
        anyhow::ensure!(
            !self.arch.uses_k() || (self.k >= 1 && self.k <= self.d_sae),
            "k = {} must be between 1 and the number of latents ({})",
            self.k,
            self.d_sae
        );
        anyhow::ensure!(
            !self.apply_b_dec_to_input || self.d_out == self.d_in,
            "an encoder that subtracts b_dec needs d_out = d_in"
        );
        anyhow::ensure!(
            self.transcoder || self.d_out == self.d_in,
            "an SAE's output width ({}) must equal its input width ({})",
            self.d_out,
            self.d_in
        );
        Ok(())
    }

    /// Pre-activations `[n, d_sae]` of `n` rows `x` `[n, d_in]`.
    pub fn pre_acts(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() / self.d_in;
        let input = self.centred(x);
        let mut pre = vec![0.0f32; n * self.d_sae];
        crate::kernels::matmul(
            &mut pre,
            &input,
            &self.w_enc_t,
            n,
            self.d_in,
            self.d_sae,
            false,
            true,
            false,
        );
        crate::kernels::add_bias_rows(&mut pre, &self.b_enc);
        pre
    }

    /// `x − b_dec` when `apply_b_dec_to_input`, else `x`.
    pub(crate) fn centred(&self, x: &[f32]) -> Vec<f32> {
        if !self.apply_b_dec_to_input {
            x.to_vec()
        } else {
            let mut v = x.to_vec();
            for row in v.chunks_exact_mut(self.d_in) {
                for (a, b) in row.iter_mut().zip(&self.b_dec) {
                    *a -= b;
                }
            }
            v
        }
    }

    /// The inference-time codes of rows `x` `[n, d_in]` (`batchtopk` uses its threshold).
    pub fn encode(&self, x: &[f32]) -> Codes {
        let pre = self.pre_acts(x);
        self.activate(&pre)
    }

    /// The inference-time activation of pre-activations `[n, d_sae]`.
    pub fn activate(&self, pre: &[f32]) -> Codes {
        crate::kernels::activate_rows(pre, self.d_sae, |row, out| match self.arch {
            Architecture::Relu => crate::kernels::relu_row(row, out),
            Architecture::Topk => crate::kernels::topk_row(row, self.k, out),
            Architecture::Batchtopk | Architecture::Jumprelu => {
                crate::kernels::jump_row(row, &self.threshold, out)
            }
        })
    }

    /// Reconstructions `[n, d_out]` of codes.
    pub fn decode(&self, codes: &Codes) -> Vec<f32> {
        crate::kernels::decode(codes, &self.w_dec, &self.b_dec, self.d_sae, self.d_out)
    }

    /// Encode then decode.
    pub fn forward(&self, x: &[f32]) -> (Codes, Vec<f32>) {
        let c = self.encode(x);
        let y = self.decode(&c);
        (c, y)
    }

    /// The Euclidean norm of each decoder row.
    pub fn decoder_norms(&self) -> Vec<f32> {
        self.w_dec
            .chunks_exact(self.d_out)
            .map(|r| {
                r.iter()
                    .map(|v| (*v as f64) * (*v as f64))
                    .sum::<f64>()
                    .sqrt() as f32
            })
            .collect()
    }

    /// The encoder as SAELens stores it, `[d_in, d_sae]`.
    pub fn w_enc(&self) -> Vec<f32> {
        crate::kernels::transpose(&self.w_enc_t, self.d_sae, self.d_in)
    }

    /// Fold input and output scales into the weights: an SAE trained on `s_in·x` predicting
    /// `s_out·y` becomes one that reads raw `x` and predicts raw `y` with the same latents.
    pub fn fold_scales(&mut self, s_in: f32, s_out: f32) {
        for v in &mut self.w_enc_t {
            *v *= s_in;
        }
        // pre = (s_in·x − b_dec)·W_enc + b_enc = (x − b_dec/s_in)·(s_in·W_enc) + b_enc, and for
        // an SAE s_in = s_out, so b_dec/s_out below serves both sides.
        for v in &mut self.w_dec {
            *v /= s_out;
        }
        for v in &mut self.b_dec {
            *v /= s_out;
        }
    }
}
