//! The hooked transformer's parameters, in compute layout, with TransformerLens names.
//!
//! Matrices are stored `[in, out]` so a forward is `x @ W` on contiguous memory:
//! `W_Q` is `[d_model, n_heads * d_head]` (TransformerLens' `[n_heads, d_model, d_head]` is
//! [`AttnWeights::w_q_heads`]), `W_O` is `[n_heads * d_head, d_model]`, `W_in`/`W_gate` are
//! `[d_model, d_mlp]`, `W_out` is `[d_mlp, d_model]`, `W_U` is `[d_model, d_vocab]`.
//!
//! The block matrices are [`Matrix`]es: dense f32, or (loaded from GGUF with
//! [`crate::loader::WeightStorage::Quantized`]) GGML blocks dequantised at each use.

use std::sync::Arc;

use candle_core::{DType, Tensor, Var};

use crate::bf16::PackedBf16;
use crate::config::ModelConfig;
use crate::gguf::QuantizedMatrix;
use crate::Result;

/// Input rows up to which a quantised matrix is multiplied straight from its blocks: a decode
/// step of up to 16 sequences. Beyond it, dequantising once and a gemm are faster.
pub const FEW_ROWS: usize = 16;

/// `x @ Wᵀ` straight from the blocks of `q` (`[out, in]`) when `x` `[n, in]` is a decode
/// step's input: at most [`FEW_ROWS`] rows of f32 on the CPU that need no gradient.
/// `None` when it is not (the caller dequantises).
pub(crate) fn few_rows_from_blocks(q: &QuantizedMatrix, x: &Tensor) -> Result<Option<Tensor>> {
    let (n, _) = x.dims2()?;
    // Only the block types whose row kernel multiplies the dense weights exactly: candle's
    // 8-bit-activation kernels (K-quants) moved Gemma 3's logits by 1.2, too much to be
    // the same model.
    let exact = crate::qmatmul::exact_rows(q.ggml_dtype());
    if !exact || n > FEW_ROWS || x.dtype() != DType::F32 || !x.device().is_cpu() || x.track_op() {
        return Ok(None);
    }
    let values: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let y = q.matmul_rows(&values, n)?;
    Ok(Some(Tensor::from_vec(y, (n, q.dims().0), x.device())?))
}

/// The rounded weights of `p` as an f32 tensor `[in, out]` on the CPU.
fn bf16_tensor(p: &PackedBf16) -> Result<Tensor> {
    let (k, n) = p.dims();
    Ok(Tensor::from_vec(
        p.unpack(),
        (k, n),
        &candle_core::Device::Cpu,
    )?)
}

/// `x @ W` for bf16 weights: through [`PackedBf16::matmul`] when `x` is f32 on the CPU and
/// needs no gradient; otherwise (gradients, other dtypes) through the rounded weights in f32.
pub(crate) fn bf16_matmul(p: &PackedBf16, x: &Tensor) -> Result<Tensor> {
    let (n, _) = x.dims2()?;
    if x.dtype() != DType::F32 || !x.device().is_cpu() || x.track_op() {
        return Ok(x.matmul(&bf16_tensor(p)?.to_device(x.device())?)?);
    }
    let (storage, layout) = x.storage_and_layout();
    let y = match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
            p.matmul(&v[a..b], n)?
        }
        _ => {
            drop(storage);
            let values: Vec<f32> = x.flatten_all()?.to_vec1()?;
            p.matmul(&values, n)?
        }
    };
    Ok(Tensor::from_vec(y, (n, p.dims().1), x.device())?)
}

/// `x @ W` for each of several bf16 matrices that read the same rows (q, k and v; gate and
/// up): the rows rounded once ([`PackedBf16::matmul_shared`]). `None` where [`bf16_matmul`]
/// would not take the packed product (gradients, other dtypes, strided input).
pub(crate) fn bf16_matmul_shared(ps: &[&PackedBf16], x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    let (n, k) = x.dims2()?;
    if x.dtype() != DType::F32 || !x.device().is_cpu() || x.track_op() {
        return Ok(None);
    }
    let (storage, layout) = x.storage_and_layout();
    let ys = match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
            PackedBf16::matmul_shared(ps, crate::bf16::View::row_major(&v[a..b], n, k))?
        }
        _ => return Ok(None),
    };
    drop(storage);
    ys.into_iter()
        .zip(ps)
        .map(|(y, p)| Ok(Tensor::from_vec(y, (n, p.dims().1), x.device())?))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A weight matrix in compute layout `[in, out]`.
#[derive(Debug, Clone)]
pub enum Matrix {
    Dense(Tensor),
    /// GGML blocks `[out, in]`, dequantised to f32 by [`Matrix::tensor`] on every call: the
    /// values are those a dense load gives, for 0.6 bytes per weight (Q4_1) instead of 4, at
    /// the cost of dequantising each layer once per forward.
    Quantized(Arc<QuantizedMatrix>),
    /// Rounded to bf16 and packed for [`crate::bf16`]'s products (the opt-in
    /// [`crate::loader::WeightStorage::Bf16`]): inputs that need no gradient are rounded to
    /// bf16 too and multiplied with f32 sums; any other use sees the rounded weights in f32.
    Bf16(Arc<PackedBf16>),
}

impl Matrix {
    /// The matrix as an f32 tensor `[in, out]` (a transposed view when dequantised).
    pub fn tensor(&self) -> Result<Tensor> {
        match self {
            Matrix::Dense(t) => Ok(t.clone()),
            Matrix::Quantized(q) => q.dequantize_transposed(),
            Matrix::Bf16(p) => bf16_tensor(p),
        }
    }

    /// `x @ W` for `x` `[n, in]`. Quantised blocks with at most [`FEW_ROWS`] rows of f32 input
    /// that needs no gradient (a decode step) are read straight from the blocks
    /// ([`QuantizedMatrix::matmul_rows`]); otherwise the matrix is dequantised and multiplied.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Matrix::Dense(t) => Ok(x.matmul(t)?),
            Matrix::Quantized(q) => match few_rows_from_blocks(q, x)? {
                Some(y) => Ok(y),
                None => Ok(x.matmul(&q.dequantize_transposed()?)?),
            },
            Matrix::Bf16(p) => bf16_matmul(p, x),
        }
    }

    /// The dense tensor, dequantising (once, contiguous `[in, out]`) if needed; for code that
    /// rewrites weights (processing, training, dtype changes).
    pub fn dense_mut(&mut self) -> Result<&mut Tensor> {
        match self {
            Matrix::Quantized(q) => *self = Matrix::Dense(q.dequantize()?.t()?.contiguous()?),
            Matrix::Bf16(p) => *self = Matrix::Dense(bf16_tensor(p)?),
            Matrix::Dense(_) => {}
        }
        match self {
            Matrix::Dense(t) => Ok(t),
            _ => Err(crate::Error::Unsupported(
                "a quantised matrix stayed quantised".into(),
            )),
        }
    }

    /// `[in, out]`.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Matrix::Dense(t) => t.dims().to_vec(),
            Matrix::Quantized(q) => {
                let (out, inp) = q.dims();
                vec![inp, out]
            }
            Matrix::Bf16(p) => {
                let (inp, out) = p.dims();
                vec![inp, out]
            }
        }
    }

    /// The dtype a use sees (f32 for quantised blocks).
    pub fn dtype(&self) -> DType {
        match self {
            Matrix::Dense(t) => t.dtype(),
            Matrix::Quantized(_) | Matrix::Bf16(_) => DType::F32,
        }
    }

    /// Bytes held in memory.
    pub fn size_bytes(&self) -> usize {
        match self {
            Matrix::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Matrix::Quantized(q) => q.size_bytes(),
            Matrix::Bf16(p) => p.size_bytes(),
        }
    }
}

impl From<Tensor> for Matrix {
    fn from(t: Tensor) -> Self {
        Matrix::Dense(t)
    }
}

/// A norm's weight and bias (absent when folded away or not used).
#[derive(Debug, Clone, Default)]
pub struct NormWeights {
    pub w: Option<Tensor>,
    pub b: Option<Tensor>,
}

/// One attention layer.
#[derive(Debug, Clone)]
pub struct AttnWeights {
    pub w_q: Matrix,
    pub w_k: Matrix,
    pub w_v: Matrix,
    pub w_o: Matrix,
    pub b_q: Option<Tensor>,
    pub b_k: Option<Tensor>,
    pub b_v: Option<Tensor>,
    pub b_o: Option<Tensor>,
    /// RMSNorm over `d_head` applied to queries (QK-norm).
    pub q_norm: Option<NormWeights>,
    /// RMSNorm over `d_head` applied to keys (QK-norm).
    pub k_norm: Option<NormWeights>,
}

impl AttnWeights {
    /// `W_Q` as TransformerLens shapes it: `[n_heads, d_model, d_head]`.
    pub fn w_q_heads(&self, n_heads: usize) -> Result<Tensor> {
        Ok(split_heads_in(&self.w_q.tensor()?, n_heads)?)
    }

    /// `W_K` as `[n_kv_heads, d_model, d_head]`.
    pub fn w_k_heads(&self, n_kv_heads: usize) -> Result<Tensor> {
        Ok(split_heads_in(&self.w_k.tensor()?, n_kv_heads)?)
    }

    /// `W_V` as `[n_kv_heads, d_model, d_head]`.
    pub fn w_v_heads(&self, n_kv_heads: usize) -> Result<Tensor> {
        Ok(split_heads_in(&self.w_v.tensor()?, n_kv_heads)?)
    }

    /// `W_O` as `[n_heads, d_head, d_model]`.
    pub fn w_o_heads(&self, n_heads: usize) -> Result<Tensor> {
        let w_o = self.w_o.tensor()?;
        let (hd, d) = w_o.dims2()?;
        Ok(w_o.reshape((n_heads, hd / n_heads, d))?)
    }
}

fn split_heads_in(w: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let (d, hd) = w.dims2()?;
    w.reshape((d, n, hd / n))?.transpose(0, 1)?.contiguous()
}

/// One MLP.
#[derive(Debug, Clone)]
pub struct MlpWeights {
    pub w_in: Matrix,
    pub b_in: Option<Tensor>,
    /// Present for gated MLPs: `act(x W_gate) * (x W_in)`.
    pub w_gate: Option<Matrix>,
    pub b_gate: Option<Tensor>,
    pub w_out: Matrix,
    pub b_out: Option<Tensor>,
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct BlockWeights {
    pub ln1: NormWeights,
    pub attn: AttnWeights,
    /// Norm on the attention output before it joins the residual (Gemma).
    pub ln1_post: Option<NormWeights>,
    pub ln2: NormWeights,
    pub mlp: Option<MlpWeights>,
    /// Norm on the MLP output before it joins the residual (Gemma).
    pub ln2_post: Option<NormWeights>,
}

/// All parameters of a model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embedding `[d_vocab, d_model]`.
    pub w_e: Tensor,
    /// Learned positions `[n_ctx, d_model]`.
    pub w_pos: Option<Tensor>,
    pub blocks: Vec<BlockWeights>,
    pub ln_final: NormWeights,
    /// Unembedding `[d_model, d_vocab]`; `None` means tied: `W_E` transposed.
    pub w_u: Option<Tensor>,
    pub b_u: Option<Tensor>,
    /// The unembedding's GGML blocks (see [`UnembedBlocks`]); `None` unless loaded from GGUF
    /// with [`crate::loader::WeightStorage::Quantized`].
    pub unembed_blocks: Option<UnembedBlocks>,
    /// The unembedding rounded to bf16 (see [`UnembedBf16`]); `None` unless loaded with
    /// [`crate::loader::WeightStorage::Bf16`].
    pub unembed_bf16: Option<UnembedBf16>,
}

/// The unembedding `[d_model, d_vocab]` packed as bf16 for [`crate::bf16`]'s products, used
/// (as [`UnembedBlocks`] are) only while the tensor it was packed from is still the model's
/// unembedding.
#[derive(Debug, Clone)]
pub struct UnembedBf16 {
    pub packed: Arc<PackedBf16>,
    /// The id of the tensor (`W_U`, or `W_E` when tied) it was packed from.
    pub source: candle_core::TensorId,
}

/// The GGML blocks `[d_vocab, d_model]` of the unembedding (the tied `token_embd`, or
/// `output.weight`), kept so a decode step reads them (SmolLM2: 30 MB of Q8_0) instead of the
/// dense matrix (113 MB). They are used only while the dense tensor they were loaded beside is
/// still the model's unembedding: any rewrite of `W_U`/`W_E` (processing, training) makes a
/// new tensor, and the blocks are ignored from then on.
#[derive(Debug, Clone)]
pub struct UnembedBlocks {
    pub blocks: Arc<QuantizedMatrix>,
    /// The id of the tensor (`W_U`, or `W_E` when tied) the blocks equal.
    pub source: candle_core::TensorId,
}

impl Weights {
    /// Visit every parameter with its TransformerLens-style name (compute layout, see module doc).
    pub fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        fn opt(
            f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
            name: &str,
            t: &mut Option<Tensor>,
        ) -> Result<()> {
            match t {
                Some(t) => f(name, t),
                None => Ok(()),
            }
        }
        fn norm(
            f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
            prefix: &str,
            n: &mut NormWeights,
        ) -> Result<()> {
            opt(f, &format!("{prefix}.w"), &mut n.w)?;
            opt(f, &format!("{prefix}.b"), &mut n.b)
        }
        f("embed.W_E", &mut self.w_e)?;
        opt(f, "pos_embed.W_pos", &mut self.w_pos)?;
        for (l, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("blocks.{l}");
            norm(f, &format!("{p}.ln1"), &mut b.ln1)?;
            let a = &mut b.attn;
            f(&format!("{p}.attn.W_Q"), a.w_q.dense_mut()?)?;
            f(&format!("{p}.attn.W_K"), a.w_k.dense_mut()?)?;
            f(&format!("{p}.attn.W_V"), a.w_v.dense_mut()?)?;
            f(&format!("{p}.attn.W_O"), a.w_o.dense_mut()?)?;
            opt(f, &format!("{p}.attn.b_Q"), &mut a.b_q)?;
            opt(f, &format!("{p}.attn.b_K"), &mut a.b_k)?;
            opt(f, &format!("{p}.attn.b_V"), &mut a.b_v)?;
            opt(f, &format!("{p}.attn.b_O"), &mut a.b_o)?;
            if let Some(n) = a.q_norm.as_mut() {
                norm(f, &format!("{p}.attn.q_norm"), n)?;
            }
            if let Some(n) = a.k_norm.as_mut() {
                norm(f, &format!("{p}.attn.k_norm"), n)?;
            }
            if let Some(n) = b.ln1_post.as_mut() {
                norm(f, &format!("{p}.ln1_post"), n)?;
            }
            norm(f, &format!("{p}.ln2"), &mut b.ln2)?;
            if let Some(m) = b.mlp.as_mut() {
                f(&format!("{p}.mlp.W_in"), m.w_in.dense_mut()?)?;
                opt(f, &format!("{p}.mlp.b_in"), &mut m.b_in)?;
                if let Some(g) = m.w_gate.as_mut() {
                    f(&format!("{p}.mlp.W_gate"), g.dense_mut()?)?;
                }
                opt(f, &format!("{p}.mlp.b_gate"), &mut m.b_gate)?;
                f(&format!("{p}.mlp.W_out"), m.w_out.dense_mut()?)?;
                opt(f, &format!("{p}.mlp.b_out"), &mut m.b_out)?;
            }
            if let Some(n) = b.ln2_post.as_mut() {
                norm(f, &format!("{p}.ln2_post"), n)?;
            }
        }
        norm(f, "ln_final", &mut self.ln_final)?;
        opt(f, "unembed.W_U", &mut self.w_u)?;
        opt(f, "unembed.b_U", &mut self.b_u)?;
        Ok(())
    }

    /// Makes dense every block matrix whose blocks a decode step cannot multiply exactly
    /// (everything but Q4_1, Q8_0 and Q5_0: see [`crate::qmatmul`]); the exact ones stay as blocks.
    /// For generation: a decode step then reads Q4_1/Q8_0/Q5_0 blocks and the dense f32 of the
    /// rest, rather than dequantising a K-quant matrix on every token.
    pub fn dense_where_inexact(&mut self) -> Result<()> {
        for b in &mut self.blocks {
            let a = &mut b.attn;
            let mut ms = vec![&mut a.w_q, &mut a.w_k, &mut a.w_v, &mut a.w_o];
            if let Some(m) = &mut b.mlp {
                ms.extend([&mut m.w_in, &mut m.w_out]);
                ms.extend(m.w_gate.as_mut());
            }
            for m in ms {
                if let Matrix::Quantized(q) = m {
                    if !crate::qmatmul::exact_rows(q.ggml_dtype()) {
                        m.dense_mut()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether any block matrix is held quantised ([`Matrix::Quantized`]).
    pub fn has_quantized(&self) -> bool {
        self.any_matrix(|m| matches!(m, Matrix::Quantized(_)))
    }

    /// Whether any block matrix is held as bf16 ([`crate::loader::WeightStorage::Bf16`]).
    pub fn has_bf16(&self) -> bool {
        self.any_matrix(|m| matches!(m, Matrix::Bf16(_)))
    }

    fn any_matrix(&self, f: impl Fn(&Matrix) -> bool) -> bool {
        self.blocks.iter().any(|b| {
            let a = &b.attn;
            let mut ms = vec![&a.w_q, &a.w_k, &a.w_v, &a.w_o];
            if let Some(m) = &b.mlp {
                ms.extend([&m.w_in, &m.w_out]);
                ms.extend(m.w_gate.as_ref());
            }
            ms.into_iter().any(&f)
        })
    }

    /// A copy with element `index` (row-major) of the parameter `name` moved by `delta`, for
    /// finite differences. The parameter must be f64.
    pub fn with_element_moved(&self, name: &str, index: usize, delta: f64) -> Result<Weights> {
        let mut w = self.clone();
        let mut found = false;
        w.visit_mut(&mut |n, t| {
            if n == name {
                let mut v: Vec<f64> = t.flatten_all()?.to_vec1()?;
                let x = v
                    .get_mut(index)
                    .ok_or_else(|| crate::Error::Input(format!("{name} has no element {index}")))?;
                *x += delta;
                *t = Tensor::from_vec(v, t.dims(), t.device())?;
                found = true;
            }
            Ok(())
        })?;
        if !found {
            return Err(crate::Error::Input(format!("no parameter named {name}")));
        }
        Ok(w)
    }

    /// Every parameter with its name.
    pub fn named(&self) -> Result<Vec<(String, Tensor)>> {
        let mut me = self.clone();
        let mut out = Vec::new();
        me.visit_mut(&mut |n, t| {
            out.push((n.to_string(), t.clone()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Replace every parameter by a trainable [`Var`] (the tensors then share the Vars' storage)
    /// and return the Vars with their names, for optimisers and gradient checks.
    pub fn make_trainable(&mut self) -> Result<Vec<(String, Var)>> {
        let mut vars = Vec::new();
        self.visit_mut(&mut |n, t| {
            let v = Var::from_tensor(t)?;
            *t = v.as_tensor().clone();
            vars.push((n.to_string(), v));
            Ok(())
        })?;
        Ok(vars)
    }

    /// The unembedding's bf16 copy, if held and still packed from the unembedding.
    pub fn unembed_bf16(&self) -> Option<&PackedBf16> {
        let u = self.unembed_bf16.as_ref()?;
        let current = self.w_u.as_ref().unwrap_or(&self.w_e).id();
        (u.source == current).then_some(&*u.packed)
    }

    /// Round every block matrix and the unembedding to bf16 and pack them
    /// ([`crate::loader::WeightStorage::Bf16`]); embeddings, norms and biases stay f32.
    pub fn pack_bf16(&mut self) -> Result<()> {
        fn pack(m: &mut Matrix) -> Result<()> {
            let t = m.dense_mut()?;
            let (k, n) = t.dims2()?;
            let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
            *m = Matrix::Bf16(Arc::new(PackedBf16::pack(&v, k, n)?));
            Ok(())
        }
        for b in &mut self.blocks {
            let a = &mut b.attn;
            for m in [&mut a.w_q, &mut a.w_k, &mut a.w_v, &mut a.w_o] {
                pack(m)?;
            }
            if let Some(mlp) = &mut b.mlp {
                pack(&mut mlp.w_in)?;
                pack(&mut mlp.w_out)?;
                if let Some(g) = &mut mlp.w_gate {
                    pack(g)?;
                }
            }
        }
        let u = self.unembed()?;
        let (k, n) = u.dims2()?;
        let v: Vec<f32> = u.flatten_all()?.to_vec1()?;
        self.unembed_bf16 = Some(UnembedBf16 {
            packed: Arc::new(PackedBf16::pack(&v, k, n)?),
            source: self.w_u.as_ref().unwrap_or(&self.w_e).id(),
        });
        Ok(())
    }

    /// The unembedding's blocks, if held and still equal to the unembedding.
    pub fn unembed_blocks(&self) -> Option<&QuantizedMatrix> {
        let u = self.unembed_blocks.as_ref()?;
        let current = self.w_u.as_ref().unwrap_or(&self.w_e).id();
        (u.source == current).then_some(&*u.blocks)
    }

    /// The unembedding matrix `[d_model, d_vocab]` (a transposed view of `W_E` when tied).
    pub fn unembed(&self) -> Result<Tensor> {
        match &self.w_u {
            Some(w) => Ok(w.clone()),
            None => Ok(self.w_e.t()?),
        }
    }

    /// Check every shape against the config.
    pub fn check_shapes(&self, cfg: &ModelConfig) -> Result<()> {
        let bad = |what: &str, got: &[usize], want: &[usize]| {
            Err(crate::Error::Unsupported(format!(
                "weight {what} has shape {got:?}, config wants {want:?}"
            )))
        };
        let check = |what: &str, got: &[usize], want: &[usize]| -> Result<()> {
            if got != want {
                return bad(what, got, want);
            }
            Ok(())
        };
        let (d, h, kv, dh, m) = (
            cfg.d_model,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.d_head,
            cfg.d_mlp,
        );
        check("embed.W_E", self.w_e.dims(), &[cfg.d_vocab, d])?;
        if self.blocks.len() != cfg.n_layers {
            return Err(crate::Error::Unsupported(format!(
                "{} blocks for {} layers",
                self.blocks.len(),
                cfg.n_layers
            )));
        }
        for (l, b) in self.blocks.iter().enumerate() {
            check(
                &format!("blocks.{l}.attn.W_Q"),
                &b.attn.w_q.dims(),
                &[d, h * dh],
            )?;
            check(
                &format!("blocks.{l}.attn.W_K"),
                &b.attn.w_k.dims(),
                &[d, kv * dh],
            )?;
            check(
                &format!("blocks.{l}.attn.W_V"),
                &b.attn.w_v.dims(),
                &[d, kv * dh],
            )?;
            check(
                &format!("blocks.{l}.attn.W_O"),
                &b.attn.w_o.dims(),
                &[h * dh, d],
            )?;
            if let Some(mlp) = &b.mlp {
                check(&format!("blocks.{l}.mlp.W_in"), &mlp.w_in.dims(), &[d, m])?;
                check(&format!("blocks.{l}.mlp.W_out"), &mlp.w_out.dims(), &[m, d])?;
                if let Some(g) = &mlp.w_gate {
                    check(&format!("blocks.{l}.mlp.W_gate"), &g.dims(), &[d, m])?;
                }
            }
        }
        if let Some(w) = &self.w_u {
            check("unembed.W_U", w.dims(), &[d, cfg.d_vocab])?;
        }
        Ok(())
    }
}
