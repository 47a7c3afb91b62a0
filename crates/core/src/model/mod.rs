//! The hooked transformer: one config-driven model for GPT-2, GPT-NeoX, Llama and Gemma 3,
//! exposing every activation under TransformerLens' hook names.

mod attend;
mod budget;
pub mod generate;
pub mod hook_name;
pub mod hooks;
mod ops;
pub mod process;
pub mod weights;

use candle_core::{DType, Device, Tensor, D};

pub use budget::{mem_available, CacheBudget};
pub use generate::GenerateOptions;
pub use hook_name::HookName;
pub use hooks::{glob_match, ActivationCache, Attachment, HookFn, HookPoint, Hooks, NameFilter};
pub use weights::{AttnWeights, BlockWeights, Matrix, MlpWeights, NormWeights, Weights};

use crate::config::{ModelConfig, NormKind, Positions};
use crate::{Error, Result};
use hooks::HookRuntime;

/// The final norm's hook points.
const LN_FINAL: (HookName, HookName) = (HookName::LnFinalScale, HookName::LnFinalNormalized);

/// Optional hook points that cost extra memory or compute, off by default (as in TransformerLens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookSettings {
    /// Per-head attention outputs `attn.hook_result` `[batch, pos, head, d_model]`.
    pub use_attn_result: bool,
    /// Per-head inputs `hook_q_input`, `hook_k_input`, `hook_v_input` `[batch, pos, head, d_model]`.
    pub use_split_qkv_input: bool,
    /// `hook_attn_in` `[batch, pos, d_model]`: the residual as attention reads it.
    pub use_attn_in: bool,
    /// `hook_mlp_in` `[batch, pos, d_model]`: the residual as the MLP reads it.
    pub use_hook_mlp_in: bool,
}

/// What a call starts from.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Token ids `[batch, pos]` (u32).
    Tokens(&'a Tensor),
    /// A residual stream `[batch, pos, d_model]` entering block `start_at_layer`.
    Resid(&'a Tensor),
}

/// Options of one forward call.
#[derive(Debug, Clone, Default)]
pub struct RunOptions<'a> {
    /// `[batch, pos]`, 1 for real tokens and 0 for padding (left or right).
    pub attention_mask: Option<&'a Tensor>,
    /// Start at this block; the input must then be [`Input::Resid`] (`blocks.L.hook_resid_pre`).
    pub start_at_layer: Option<usize>,
    /// Stop before this block and return its `hook_resid_pre` instead of logits. As in
    /// TransformerLens, `Some(n_layers)` returns the final residual stream (before `ln_final`)
    /// and skips the unembedding; `None` runs to the logits.
    pub stop_at_layer: Option<usize>,
}

/// Keys and values of earlier positions, for generation.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer: rotated keys and values `[batch, n_kv_heads, pos, d_head]`.
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Attention mask over every position seen so far `[batch, pos]`.
    mask: Option<Vec<Vec<u8>>>,
    len: usize,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The cache of rows `rows` of this one (a row may repeat), padding masks included: the
    /// contexts of several prompts run once as a batch, then each continuation reads its own
    /// prompt's row.
    pub fn select(&self, rows: &[usize]) -> Result<KvCache> {
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<u32>>(),
            rows.len(),
            &candle_core::Device::Cpu,
        )?;
        let layers = self
            .layers
            .iter()
            .map(|slot| -> Result<Option<(Tensor, Tensor)>> {
                let Some((k, v)) = slot else { return Ok(None) };
                let b = k.dim(0)?;
                if let Some(bad) = rows.iter().find(|&&r| r >= b) {
                    return Err(Error::Input(format!(
                        "row {bad} selected from a cache of batch {b}"
                    )));
                }
                let idx = idx.to_device(k.device())?;
                Ok(Some((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?)))
            })
            .collect::<Result<Vec<_>>>()?;
        let mask = self
            .mask
            .as_ref()
            .map(|m| rows.iter().map(|&r| m[r].clone()).collect());
        Ok(KvCache {
            layers,
            mask,
            len: self.len,
        })
    }

    /// The first `len` positions of the cache for a batch of `batch`: a batch-1 cache is
    /// repeated (the shared prefix of a patching sweep), a batch-`batch` cache is cut. Padding
    /// masks are not carried over.
    pub fn prefix(&self, len: usize, batch: usize) -> Result<KvCache> {
        if len > self.len {
            return Err(Error::Input(format!(
                "prefix of {len} positions from a cache of {}",
                self.len
            )));
        }
        let layers = self
            .layers
            .iter()
            .map(|slot| -> Result<Option<(Tensor, Tensor)>> {
                let Some((k, v)) = slot else { return Ok(None) };
                let b = k.dim(0)?;
                if b != 1 && b != batch {
                    return Err(Error::Input(format!(
                        "prefix for batch {batch} from a cache of batch {b}"
                    )));
                }
                let cut = |t: &Tensor| -> Result<Tensor> {
                    let t = t.narrow(2, 0, len)?;
                    let t = if b == 1 {
                        t.repeat((batch, 1, 1, 1))?
                    } else {
                        t
                    };
                    Ok(t.contiguous()?)
                };
                Ok(Some((cut(k)?, cut(v)?)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            mask: None,
            len,
        })
    }
}

/// The hooked transformer.
#[derive(Debug, Clone)]
pub struct HookedTransformer {
    pub cfg: ModelConfig,
    pub weights: Weights,
    pub settings: HookSettings,
    /// Multiply the dense f32 block matrices and the unembedding with bf16 inputs and f32
    /// sums, forward and backward ([`crate::bf16::linear`]): mixed-precision training, as
    /// PyTorch's bf16 autocast. Off unless set (fine-tuning's `bf16_products`).
    pub bf16_products: bool,
    device: Device,
    /// Modules spliced in at hook points (SAEs), each with hook points of its own.
    attachments: Vec<std::sync::Arc<dyn hooks::Attachment>>,
}

/// Per-call geometry: positions and attention biases.
struct Geometry {
    batch: usize,
    /// Query positions in this call.
    q_len: usize,
    /// Key positions (past + this call).
    k_len: usize,
    /// Position ids `[batch, q_len]` (u32) for positional embeddings.
    positions: Vec<u32>,
    /// Additive attention bias for global layers, `[batch or 1, 1, q_len, k_len]`.
    bias_global: Tensor,
    /// Additive bias per sliding window size.
    bias_window: Vec<(usize, Tensor)>,
}

impl HookedTransformer {
    /// Build from a config and weights, checking shapes.
    pub fn new(cfg: ModelConfig, weights: Weights, device: Device) -> Result<Self> {
        cfg.validate()?;
        weights.check_shapes(&cfg)?;
        Ok(HookedTransformer {
            cfg,
            weights,
            settings: HookSettings::default(),
            bf16_products: false,
            device,
            attachments: Vec::new(),
        })
    }

    /// Splice `a` in at its host hook point; its points join [`Self::hook_names`]. An error
    /// when the host is not a hook point of this model, or a point name is taken.
    pub fn attach(&mut self, a: std::sync::Arc<dyn hooks::Attachment>) -> Result<()> {
        let names = self.hook_names();
        let host = a.host().to_string();
        if !names.contains(&host) {
            return Err(crate::Error::Hook(format!(
                "cannot attach at `{host}`: not a hook point of this model"
            )));
        }
        for p in a.points() {
            let n = format!("{host}.{p}");
            if names.contains(&n) {
                return Err(crate::Error::Hook(format!("`{n}` is already a hook point")));
            }
        }
        self.attachments.push(a);
        Ok(())
    }

    /// Remove every attachment.
    pub fn detach_all(&mut self) {
        self.attachments.clear();
    }

    /// The attachments, in the order attached.
    pub fn attachments(&self) -> &[std::sync::Arc<dyn hooks::Attachment>] {
        &self.attachments
    }

    /// The dtype of the weights (f32 normally; f64 for gradient checks).
    pub fn dtype(&self) -> DType {
        self.weights.w_e.dtype()
    }

    /// A copy with every weight converted to `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let mut m = self.clone();
        m.weights.visit_mut(&mut |_, t| {
            *t = t.to_dtype(dtype)?;
            Ok(())
        })?;
        Ok(m)
    }

    /// Gradients of a scalar `metric` of the logits with respect to the activations at every
    /// hook point `filter` selects, from one differentiable forward and one backward (a zero
    /// `Var` is added at each point). Returns the metric, the activations and their gradients.
    pub fn hook_gradients(
        &self,
        input: Input,
        opts: &RunOptions,
        filter: &NameFilter,
        metric: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, ActivationCache, ActivationCache)> {
        use std::cell::RefCell;
        let probes: RefCell<Vec<(String, candle_core::Var)>> = RefCell::new(Vec::new());
        let mut hooks = Hooks::new();
        hooks.add(filter.clone(), |x: &Tensor, p: HookPoint| {
            let v = candle_core::Var::zeros(x.dims(), x.dtype(), x.device())?;
            let out = x.add(v.as_tensor())?;
            probes.borrow_mut().push((p.name.to_string(), v));
            Ok(Some(out))
        });
        let (logits, cache) = self.run(input, opts, Some(&mut hooks), Some(filter))?;
        drop(hooks);
        let value = metric(&logits)?;
        if value.elem_count() != 1 {
            return Err(Error::Input(format!(
                "the metric must be a scalar, got shape {:?}",
                value.dims()
            )));
        }
        let grads = value.backward()?;
        let mut out = ActivationCache::new();
        for (name, v) in probes.into_inner() {
            let g = match grads.get(v.as_tensor()) {
                Some(g) => g.clone(),
                // The metric does not depend on this activation.
                None => v.as_tensor().zeros_like()?,
            };
            out.insert(name, g);
        }
        Ok((value, cache, out))
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every hook point name this model exposes with its current settings, in forward order
    /// (from the one table in [`hook_name`]; the forward emits exactly these).
    /// An attachment's points follow its host's name.
    pub fn hook_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in self.hook_points() {
            let n = h.to_string();
            let atts: Vec<_> = self.attachments.iter().filter(|a| a.host() == n).collect();
            out.push(n.clone());
            for a in atts {
                out.extend(a.points().into_iter().map(|p| format!("{n}.{p}")));
            }
        }
        out
    }

    /// Every hook point this model exposes with its current settings, in forward order.
    pub fn hook_points(&self) -> Vec<HookName> {
        HookName::all(&self.cfg, &self.settings)
    }

    /// The hook points a forward over `tokens` actually passes, with every point cached, in
    /// order of first emission (points a forward passes more than once, such as `ln1` with
    /// split q/k/v inputs, appear once). The tests check it against [`Self::hook_points`].
    pub fn emitted_hook_points(&self, tokens: &Tensor) -> Result<Vec<HookName>> {
        let names = self.hook_names();
        let mut rt = HookRuntime::new(&names, None, Some(&NameFilter::all()))?;
        rt.emitted = Some(Vec::new());
        self.run_inner(Input::Tokens(tokens), &RunOptions::default(), &mut rt, None)?;
        let mut seen = std::collections::HashSet::new();
        Ok(rt
            .emitted
            .unwrap_or_default()
            .into_iter()
            .filter(|h| seen.insert(*h))
            .collect())
    }

    /// Logits `[batch, pos, d_vocab]` for token ids `[batch, pos]`.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let mut rt = HookRuntime::none();
        self.run_inner(Input::Tokens(tokens), &RunOptions::default(), &mut rt, None)
    }

    /// Logits and the activations selected by `filter` (names or globs). A cache that would
    /// not fit in the available memory is refused before any work (see
    /// [`HookedTransformer::run_with_cache_within`] for another budget).
    pub fn run_with_cache(
        &self,
        tokens: &Tensor,
        filter: &NameFilter,
    ) -> Result<(Tensor, ActivationCache)> {
        self.run_with_cache_within(tokens, filter, CacheBudget::Available)
    }

    /// Logits with hooks that may read or replace activations.
    pub fn run_with_hooks(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        Ok(self
            .run(
                Input::Tokens(tokens),
                &RunOptions::default(),
                Some(hooks),
                None,
            )?
            .0)
    }

    /// The general call: any input, options, hooks and cache. Returns logits, or the residual
    /// stream before `stop_at_layer` when that is set, and the cache.
    pub fn run(
        &self,
        input: Input,
        opts: &RunOptions,
        hooks: Option<&mut Hooks>,
        cache: Option<&NameFilter>,
    ) -> Result<(Tensor, ActivationCache)> {
        let names = self.hook_names();
        let mut rt = HookRuntime::new(&names, hooks, cache)?.with_attachments(&self.attachments);
        let out = self.run_inner(input, opts, &mut rt, None)?;
        Ok((out, rt.cache))
    }

    /// Forward over new tokens `[batch, new]` given earlier positions in `kv`, which it extends;
    /// returns logits for the new positions. `attention_mask` covers only the new tokens.
    pub fn forward_with_kv(
        &self,
        tokens: &Tensor,
        kv: &mut KvCache,
        attention_mask: Option<&Tensor>,
        hooks: Option<&mut Hooks>,
    ) -> Result<Tensor> {
        let names = self.hook_names();
        let mut rt = HookRuntime::new(&names, hooks, None)?.with_attachments(&self.attachments);
        let opts = RunOptions {
            attention_mask,
            ..Default::default()
        };
        self.run_inner(Input::Tokens(tokens), &opts, &mut rt, Some(kv))
    }

    /// [`Self::forward_with_kv`] without the unembedding: the final residual stream (before
    /// `ln_final`) of the new positions, for callers that need logits at a few positions
    /// only ([`Self::unembed_resid`]).
    /// `attention_mask` covers only the new tokens, as there.
    pub fn resid_with_kv(
        &self,
        tokens: &Tensor,
        kv: &mut KvCache,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let names = self.hook_names();
        let mut rt = HookRuntime::new(&names, None, None)?;
        let opts = RunOptions {
            attention_mask,
            stop_at_layer: Some(self.cfg.n_layers),
            ..Default::default()
        };
        self.run_inner(Input::Tokens(tokens), &opts, &mut rt, Some(kv))
    }

    /// Run a residual stream of new positions `[batch, new, d_model]` (after the `kv.len()`
    /// positions held in `kv`) from block `start_at_layer` through the last block, and return
    /// the final residual stream (before `ln_final`). `kv` must hold keys and values for every
    /// block from `start_at_layer` on; it is extended. Patching sweeps use this to recompute only
    /// what a patch can change.
    pub fn run_resid_with_kv(
        &self,
        resid: &Tensor,
        start_at_layer: usize,
        kv: &mut KvCache,
        hooks: Option<&mut Hooks>,
    ) -> Result<Tensor> {
        let names = self.hook_names();
        let mut rt = HookRuntime::new(&names, hooks, None)?.with_attachments(&self.attachments);
        let opts = RunOptions {
            start_at_layer: Some(start_at_layer),
            stop_at_layer: Some(self.cfg.n_layers),
            ..Default::default()
        };
        if kv.len > 0 && kv.layers.len() == self.cfg.n_layers {
            for l in start_at_layer..self.cfg.n_layers {
                if kv.layers[l].is_none() {
                    return Err(Error::Input(format!(
                        "the KV cache has no entry for block {l}"
                    )));
                }
            }
        }
        self.run_inner(Input::Resid(resid), &opts, &mut rt, Some(kv))
    }

    /// `ln_final` and the unembedding applied to a residual stream `[..., d_model]`, without
    /// hooks: the logits the model would produce from that residual.
    pub fn unembed_resid(&self, resid: &Tensor) -> Result<Tensor> {
        let mut rt = HookRuntime::new(&[], None, None)?;
        let dims = resid.dims().to_vec();
        let d = self.cfg.d_model;
        let rows = resid.elem_count() / d;
        let x = resid.reshape((1, rows, d))?;
        let x = self.norm(&self.weights.ln_final, &x, LN_FINAL, &mut rt)?;
        let mut logits = self.unembed_rows(&x.reshape((rows, d))?)?;
        if let Some(bu) = &self.weights.b_u {
            logits = logits.broadcast_add(bu)?;
        }
        if let Some(cap) = self.cfg.final_logit_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        let mut out = dims;
        *out.last_mut().unwrap() = self.cfg.d_vocab;
        Ok(logits.reshape(out)?)
    }

    /// `x @ W_U` for `x` `[n, d_model]` (bias and softcap are the caller's): from the
    /// unembedding's blocks for a decode step, as [`Matrix::matmul`] does for block matrices.
    fn unembed_rows(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(q) = self.weights.unembed_blocks() {
            if let Some(y) = weights::few_rows_from_blocks(q, x)? {
                return Ok(y);
            }
        }
        if let Some(p) = self.weights.unembed_bf16() {
            return weights::bf16_matmul(p, x);
        }
        let w_u = self.weights.unembed()?;
        if self.bf16_products && w_u.dtype() == DType::F32 {
            return crate::bf16::linear(x, &w_u);
        }
        Ok(x.matmul(&w_u)?)
    }

    /// `x @ W` for a block matrix: [`Matrix::matmul`], or [`crate::bf16::linear`] when
    /// [`Self::bf16_products`] is on and the matrix is dense f32.
    fn product(&self, w: &Matrix, x: &Tensor) -> Result<Tensor> {
        match w {
            Matrix::Dense(t) if self.bf16_products && t.dtype() == DType::F32 => {
                crate::bf16::linear(x, t)
            }
            _ => w.matmul(x),
        }
    }

    /// [`Self::product`] of several matrices with the same rows `x` (q, k, v; gate, up): bf16
    /// weights round the rows once for all of them.
    fn products(&self, ws: &[&Matrix], x: &Tensor) -> Result<Vec<Tensor>> {
        let packed: Option<Vec<&crate::bf16::PackedBf16>> = ws
            .iter()
            .map(|w| match w {
                Matrix::Bf16(p) => Some(&**p),
                _ => None,
            })
            .collect();
        if let Some(packed) = packed {
            if let Some(ys) = weights::bf16_matmul_shared(&packed, x)? {
                return Ok(ys);
            }
        }
        ws.iter().map(|w| self.product(w, x)).collect()
    }

    fn check_tokens(&self, tokens: &Tensor) -> Result<(usize, usize)> {
        let (b, p) = tokens.dims2().map_err(|_| {
            Error::Input(format!(
                "tokens must be [batch, pos], got {:?}",
                tokens.dims()
            ))
        })?;
        if p == 0 || b == 0 {
            return Err(Error::Input("empty token batch".into()));
        }
        let ids: Vec<u32> = tokens.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= self.cfg.d_vocab) {
            return Err(Error::Input(format!(
                "token id {bad} is out of the vocabulary (size {})",
                self.cfg.d_vocab
            )));
        }
        Ok((b, p))
    }

    fn geometry(
        &self,
        batch: usize,
        q_len: usize,
        mask: Option<&Tensor>,
        kv: Option<&mut KvCache>,
    ) -> Result<Geometry> {
        let past = kv.as_ref().map_or(0, |k| k.len);
        let k_len = past + q_len;
        if k_len > self.cfg.n_ctx {
            return Err(Error::Input(format!(
                "{k_len} positions exceed the model's context length {}",
                self.cfg.n_ctx
            )));
        }
        let new_mask: Option<Vec<Vec<u8>>> = match mask {
            None => None,
            Some(m) => {
                let dims = m.dims().to_vec();
                if dims != [batch, q_len] {
                    return Err(Error::Input(format!(
                        "attention mask has shape {dims:?}, tokens are [{batch}, {q_len}]"
                    )));
                }
                let rows: Vec<Vec<f32>> = m.to_dtype(DType::F32)?.to_vec2()?;
                Some(
                    rows.into_iter()
                        .map(|r| r.into_iter().map(|x| (x != 0.0) as u8).collect())
                        .collect(),
                )
            }
        };
        // The full mask over past and new positions (None = all real).
        let full_mask: Option<Vec<Vec<u8>>> = match kv {
            Some(kv) => {
                if kv.mask.is_none() && new_mask.is_some() {
                    kv.mask = Some(vec![vec![1u8; past]; batch]);
                }
                if let Some(m) = kv.mask.as_mut() {
                    if m.len() != batch {
                        return Err(Error::Input("batch size changed between calls".into()));
                    }
                    for (row, b) in m.iter_mut().zip(0..batch) {
                        match &new_mask {
                            Some(n) => row.extend_from_slice(&n[b]),
                            None => row.extend(std::iter::repeat_n(1u8, q_len)),
                        }
                    }
                }
                kv.mask.clone()
            }
            None => new_mask,
        };
        let mut positions = Vec::with_capacity(batch * q_len);
        for b in 0..batch {
            match &full_mask {
                None => positions.extend((past..k_len).map(|p| p as u32)),
                Some(m) => {
                    // Position of a real token = number of real tokens before it; pads get 0.
                    let mut count = 0u32;
                    let mut pos = Vec::with_capacity(k_len);
                    for &x in &m[b] {
                        pos.push(if x == 1 { count } else { 0 });
                        count += x as u32;
                    }
                    positions.extend_from_slice(&pos[past..]);
                }
            }
        }
        let bias = |window: Option<usize>| -> Result<Tensor> {
            let rows = if full_mask.is_some() { batch } else { 1 };
            let mut v = vec![0f32; rows * q_len * k_len];
            for b in 0..rows {
                for i in 0..q_len {
                    let qi = past + i;
                    for j in 0..k_len {
                        let mut ok = j <= qi;
                        if let Some(w) = window {
                            ok &= qi - j.min(qi) < w;
                        }
                        if let Some(m) = &full_mask {
                            ok &= m[b][j] == 1;
                        }
                        // A padding query would see nothing; let it see itself so no row is all -inf.
                        if !ok && j != qi {
                            v[(b * q_len + i) * k_len + j] = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            Ok(Tensor::from_vec(v, (rows, 1, q_len, k_len), &self.device)?
                .to_dtype(self.dtype())?)
        };
        let bias_global = bias(None)?;
        let mut bias_window = Vec::new();
        for w in self.cfg.layer_windows.iter().flatten() {
            if *w < k_len && !bias_window.iter().any(|(x, _)| x == w) {
                bias_window.push((*w, bias(Some(*w))?));
            }
        }
        Ok(Geometry {
            batch,
            q_len,
            k_len,
            positions,
            bias_global,
            bias_window,
        })
    }

    fn run_inner(
        &self,
        input: Input,
        opts: &RunOptions,
        rt: &mut HookRuntime,
        mut kv: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let start = opts.start_at_layer.unwrap_or(0);
        let stop = opts.stop_at_layer.unwrap_or(c.n_layers);
        if start > c.n_layers || stop > c.n_layers || start > stop {
            return Err(Error::Input(format!(
                "start_at_layer {start} / stop_at_layer {stop} out of range for {} layers",
                c.n_layers
            )));
        }
        let (batch, q_len) = match input {
            Input::Tokens(t) => self.check_tokens(t)?,
            Input::Resid(r) => {
                let (b, p, d) = r.dims3().map_err(|_| {
                    Error::Input(format!(
                        "residual must be [batch, pos, d_model], got {:?}",
                        r.dims()
                    ))
                })?;
                if d != c.d_model {
                    return Err(Error::Input(format!(
                        "residual width {d} != d_model {}",
                        c.d_model
                    )));
                }
                (b, p)
            }
        };
        let geo = self.geometry(batch, q_len, opts.attention_mask, kv.as_deref_mut())?;
        if let Some(kv) = kv.as_deref_mut() {
            if kv.layers.is_empty() {
                kv.layers = vec![None; c.n_layers];
            }
        }
        let mut x = match input {
            Input::Tokens(tokens) => {
                if start != 0 {
                    return Err(Error::Input(
                        "start_at_layer needs a residual stream input, not tokens".into(),
                    ));
                }
                self.embed(tokens, &geo, rt)?
            }
            Input::Resid(r) => {
                if start == 0 && opts.start_at_layer.is_none() {
                    return Err(Error::Input("a residual input needs start_at_layer".into()));
                }
                r.clone()
            }
        };
        for l in start..stop {
            let cache = kv.as_deref_mut().map(|k| &mut k.layers[l]);
            x = self.block(l, x, &geo, rt, cache)?;
        }
        if let Some(kv) = kv {
            kv.len = geo.k_len;
        }
        if opts.stop_at_layer.is_some() {
            return Ok(x);
        }
        let x = self.norm(&self.weights.ln_final, &x, LN_FINAL, rt)?;
        let (b, p, d) = x.dims3()?;
        let mut logits = self.unembed_rows(&x.reshape((b * p, d))?)?;
        if let Some(bu) = &self.weights.b_u {
            logits = logits.broadcast_add(bu)?;
        }
        if let Some(cap) = c.final_logit_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        let logits = logits.reshape((b, p, c.d_vocab))?;
        rt.point(HookName::UnembedOut, logits)
    }

    fn embed(&self, tokens: &Tensor, geo: &Geometry, rt: &mut HookRuntime) -> Result<Tensor> {
        let c = &self.cfg;
        let ids = tokens.to_dtype(DType::U32)?.flatten_all()?;
        let mut e = self.weights.w_e.index_select(&ids, 0)?;
        if let Some(s) = c.embed_scale {
            e = (e * s)?;
        }
        let e = e.reshape((geo.batch, geo.q_len, c.d_model))?;
        let mut x = rt.point(HookName::Embed, e)?;
        if let Some(w_pos) = &self.weights.w_pos {
            let pos = Tensor::from_slice(&geo.positions, geo.positions.len(), &self.device)?;
            let pe = w_pos
                .index_select(&pos, 0)?
                .reshape((geo.batch, geo.q_len, c.d_model))?;
            let pe = rt.point(HookName::PosEmbed, pe)?;
            x = (x + pe)?;
        }
        Ok(x)
    }

    /// A norm with its `hook_scale` and `hook_normalized`; as in TransformerLens,
    /// `hook_normalized` is `(x - mean) / scale` (LayerNorm) or `x / scale` (RMSNorm), before `w`, `b`.
    fn norm(
        &self,
        n: &NormWeights,
        x: &Tensor,
        (scale_hook, normalized_hook): (HookName, HookName),
        rt: &mut HookRuntime,
    ) -> Result<Tensor> {
        let eps = self.cfg.norm_eps;
        if self.cfg.norm == NormKind::None {
            return Ok(x.clone());
        }
        // Only split the weight off when someone looks at the normalised value.
        let hooked = rt.wants(normalized_hook);
        let (w, b) = if hooked {
            (None, None)
        } else {
            (n.w.as_ref(), n.b.as_ref())
        };
        let (normed, scale) = match self.cfg.norm {
            NormKind::LayerNorm => ops::layer_norm(x, w, b, eps)?,
            _ => ops::rms_norm(x, w, eps)?,
        };
        let normed = if rt.hooked(scale_hook) {
            // A hook may replace the scale: normalise by whatever it returns.
            let scale = rt.point(scale_hook, scale)?;
            let centred = match self.cfg.norm {
                NormKind::LayerNorm => x.broadcast_sub(&x.mean_keepdim(candle_core::D::Minus1)?)?,
                _ => x.clone(),
            };
            let mut out = centred.broadcast_div(&scale)?;
            if let Some(w) = w {
                out = out.broadcast_mul(w)?;
            }
            if let Some(b) = b {
                out = out.broadcast_add(b)?;
            }
            out
        } else {
            rt.point(scale_hook, scale)?;
            normed
        };
        if !hooked {
            return Ok(normed);
        }
        let mut out = rt.point(normalized_hook, normed)?;
        if let Some(w) = &n.w {
            out = out.broadcast_mul(w)?;
        }
        if let Some(b) = &n.b {
            out = out.broadcast_add(b)?;
        }
        Ok(out)
    }

    /// A norm outside the hooked ones (post-norms, QK-norm): RMSNorm or LayerNorm by config.
    fn plain_norm(&self, n: &NormWeights, x: &Tensor) -> Result<Tensor> {
        let eps = self.cfg.norm_eps;
        Ok(match self.cfg.norm {
            NormKind::LayerNorm => ops::layer_norm(x, n.w.as_ref(), n.b.as_ref(), eps)?.0,
            _ => ops::rms_norm(x, n.w.as_ref(), eps)?.0,
        })
    }

    fn block(
        &self,
        l: usize,
        x: Tensor,
        geo: &Geometry,
        rt: &mut HookRuntime,
        kv: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let bw = &self.weights.blocks[l];
        let resid_pre = rt.point(HookName::ResidPre(l), x)?;
        let mut attn_out = self.attention(l, &resid_pre, geo, rt, kv)?;
        if let Some(n) = &bw.ln1_post {
            attn_out = self.plain_norm(n, &attn_out)?;
        }
        let attn_out = rt.point(HookName::AttnOut(l), attn_out)?;
        if c.attn_only {
            let resid_post = (resid_pre + attn_out)?;
            return rt.point(HookName::ResidPost(l), resid_post);
        }
        let (mlp_src, resid_mid) = if c.parallel_attn_mlp {
            (resid_pre.clone(), None)
        } else {
            let mid = (&resid_pre + &attn_out)?;
            let mid = rt.point(HookName::ResidMid(l), mid)?;
            (mid.clone(), Some(mid))
        };
        let mlp_in = if self.settings.use_hook_mlp_in {
            rt.point(HookName::MlpIn(l), mlp_src)?
        } else {
            mlp_src
        };
        let n2 = self.norm(
            &bw.ln2,
            &mlp_in,
            (HookName::Ln2Scale(l), HookName::Ln2Normalized(l)),
            rt,
        )?;
        let mut mlp_out = self.mlp(l, &n2, rt)?;
        if let Some(n) = &bw.ln2_post {
            mlp_out = self.plain_norm(n, &mlp_out)?;
        }
        let mlp_out = rt.point(HookName::MlpOut(l), mlp_out)?;
        let resid_post = match resid_mid {
            Some(mid) => (mid + mlp_out)?,
            None => ((resid_pre + attn_out)? + mlp_out)?,
        };
        rt.point(HookName::ResidPost(l), resid_post)
    }

    fn attention(
        &self,
        l: usize,
        resid_pre: &Tensor,
        geo: &Geometry,
        rt: &mut HookRuntime,
        kv: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let a = &self.weights.blocks[l].attn;
        let (b, p, d) = resid_pre.dims3()?;
        let (h, kvh, dh) = (c.n_heads, c.n_kv_heads, c.d_head);
        let ln1 = (HookName::Ln1Scale(l), HookName::Ln1Normalized(l));

        let (q, k, v) = if self.settings.use_split_qkv_input {
            // Each head gets its own copy of the residual, normalised separately (TransformerLens).
            let mut proj =
                |input: HookName, n: usize, w: &Matrix, bias: &Option<Tensor>| -> Result<Tensor> {
                    let inp = resid_pre
                        .unsqueeze(2)?
                        .broadcast_as((b, p, n, d))?
                        .contiguous()?;
                    let inp = rt.point(input, inp)?;
                    let normed = self.norm(&self.weights.blocks[l].ln1, &inp, ln1, rt)?;
                    // [b, p, n, d] x [n, d, dh] -> [b, p, n, dh]
                    let w_heads = w
                        .tensor()?
                        .reshape((d, n, dh))?
                        .transpose(0, 1)?
                        .contiguous()?;
                    let x = normed
                        .permute((2, 0, 1, 3))?
                        .contiguous()?
                        .reshape((n, b * p, d))?;
                    let y = x
                        .matmul(&w_heads)?
                        .reshape((n, b, p, dh))?
                        .permute((1, 2, 0, 3))?;
                    let mut y = y.contiguous()?;
                    if let Some(bias) = bias {
                        y = y.broadcast_add(&bias.reshape((n, dh))?)?;
                    }
                    Ok(y)
                };
            let q = proj(HookName::QInput(l), h, &a.w_q, &a.b_q)?;
            let k = proj(HookName::KInput(l), kvh, &a.w_k, &a.b_k)?;
            let v = proj(HookName::VInput(l), kvh, &a.w_v, &a.b_v)?;
            (q, k, v)
        } else {
            let attn_in = if self.settings.use_attn_in {
                rt.point(HookName::AttnIn(l), resid_pre.clone())?
            } else {
                resid_pre.clone()
            };
            let n1 = self.norm(&self.weights.blocks[l].ln1, &attn_in, ln1, rt)?;
            let x2 = n1.reshape((b * p, d))?;
            let ys = self.products(&[&a.w_q, &a.w_k, &a.w_v], &x2)?;
            let shaped = |y: &Tensor, bias: &Option<Tensor>, n: usize| -> Result<Tensor> {
                let y = match bias {
                    Some(bias) => y.broadcast_add(bias)?,
                    None => y.clone(),
                };
                Ok(y.reshape((b, p, n, dh))?)
            };
            (
                shaped(&ys[0], &a.b_q, h)?,
                shaped(&ys[1], &a.b_k, kvh)?,
                shaped(&ys[2], &a.b_v, kvh)?,
            )
        };
        let q = rt.point(HookName::AttnQ(l), q)?;
        let k = rt.point(HookName::AttnK(l), k)?;
        let v = rt.point(HookName::AttnV(l), v)?;
        let (mut q, mut k) = (q, k);
        if let Some(n) = &a.q_norm {
            q = ops::rms_norm(&q, n.w.as_ref(), c.norm_eps)?.0;
        }
        if let Some(n) = &a.k_norm {
            k = ops::rms_norm(&k, n.w.as_ref(), c.norm_eps)?.0;
        }
        let window = c.layer_windows[l];
        if let Positions::Rotary {
            dim,
            base,
            local_base,
        } = c.positions
        {
            let base = match (window, local_base) {
                (Some(_), Some(lb)) => lb,
                _ => base,
            };
            let (cos, sin) = ops::rotary_tables(&geo.positions, b, p, dim, base, &self.device)?;
            let (cos, sin) = (cos.to_dtype(q.dtype())?, sin.to_dtype(q.dtype())?);
            q = ops::apply_rotary(&q, &cos, &sin, dim)?;
            k = ops::apply_rotary(&k, &cos, &sin, dim)?;
            q = rt.point(HookName::AttnRotQ(l), q)?;
            k = rt.point(HookName::AttnRotK(l), k)?;
        }
        let bias = match window {
            Some(w) => geo
                .bias_window
                .iter()
                .find(|(x, _)| *x == w)
                .map(|(_, t)| t)
                .unwrap_or(&geo.bias_global),
            None => &geo.bias_global,
        };
        // Scores and pattern that nothing changes (at most cached) come from the fused
        // attention, formed only when cached or recorded.
        let (scores_at, pattern_at) = (HookName::AttnScores(l), HookName::AttnPattern(l));
        let fused = if kv.is_none() && rt.passive(scores_at) && rt.passive(pattern_at) {
            let keep = !(rt.silent(scores_at) && rt.silent(pattern_at));
            attend::fused(&q, &k, &v, bias, c.attn_scale, c.attn_logit_softcap, keep)?
        } else {
            None
        };
        let z = match fused {
            Some(attend::Attended { z, kept }) => {
                if let Some((scores, pattern)) = kept {
                    rt.point(scores_at, scores)?;
                    rt.point(pattern_at, pattern)?;
                }
                z
            }
            None => self.attention_composed(l, q, k, v, bias, geo, rt, kv)?,
        };
        let z = rt.point(HookName::AttnZ(l), z)?;
        let out = if self.settings.use_attn_result {
            // [b, p, h, dh] x [h, dh, d] -> [b, p, h, d]
            let w_o = a.w_o.tensor()?.reshape((h, dh, d))?;
            let zh = z
                .permute((2, 0, 1, 3))?
                .contiguous()?
                .reshape((h, b * p, dh))?;
            let result = zh
                .matmul(&w_o)?
                .reshape((h, b, p, d))?
                .permute((1, 2, 0, 3))?
                .contiguous()?;
            let result = rt.point(HookName::AttnResult(l), result)?;
            result.sum(2)?
        } else {
            self.product(&a.w_o, &z.reshape((b * p, h * dh))?)?
                .reshape((b, p, d))?
        };
        Ok(match &a.b_o {
            Some(bo) => out.broadcast_add(bo)?,
            None => out,
        })
    }

    /// Attention's core as composed tensor ops, forming the scores and the pattern (for their
    /// hook points, gradients and the KV cache): `z` `[b, p, h, dh]` from q `[b, p, h, dh]` and
    /// k, v `[b, kl, kvh, dh]` after rotation.
    #[allow(clippy::too_many_arguments)]
    fn attention_composed(
        &self,
        l: usize,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        bias: &Tensor,
        geo: &Geometry,
        rt: &mut HookRuntime,
        kv: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, p, h, dh) = q.dims4()?;
        let kvh = c.n_kv_heads;
        // [b, p, n, dh] -> [b, n, p, dh]
        let q = q.transpose(1, 2)?.contiguous()?;
        let mut k = k.transpose(1, 2)?.contiguous()?;
        let mut v = v.transpose(1, 2)?.contiguous()?;
        if let Some(slot) = kv {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let kl = geo.k_len;
        let rep = h / kvh;
        // Grouped-query attention without copying keys: query heads of one kv group side by side.
        let qg = q.reshape((b, kvh, rep * p, dh))?;
        let scores = qg.matmul(&k.transpose(2, 3)?)?.reshape((b, h, p, kl))?;
        let mut scores = (scores / c.attn_scale)?;
        if let Some(cap) = c.attn_logit_softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let scores = scores.broadcast_add(bias)?;
        let scores = rt.point(HookName::AttnScores(l), scores)?;
        let pattern = ops::softmax_last_dim(&scores)?;
        let pattern = rt.point(HookName::AttnPattern(l), pattern)?;
        let z = pattern
            .reshape((b, kvh, rep * p, kl))?
            .matmul(&v)?
            .reshape((b, h, p, dh))?
            .transpose(1, 2)?
            .contiguous()?;
        Ok(z)
    }

    fn mlp(&self, l: usize, x: &Tensor, rt: &mut HookRuntime) -> Result<Tensor> {
        let c = &self.cfg;
        let m = self.weights.blocks[l]
            .mlp
            .as_ref()
            .ok_or_else(|| Error::Unsupported(format!("block {l} has no MLP weights")))?;
        let (b, p, d) = x.dims3()?;
        let x2 = x.reshape((b * p, d))?;
        let shaped = |y: Tensor, bias: &Option<Tensor>| -> Result<Tensor> {
            let y = match bias {
                Some(bias) => y.broadcast_add(bias)?,
                None => y,
            };
            Ok(y.reshape((b, p, c.d_mlp))?)
        };
        let post = match &m.w_gate {
            Some(wg) => {
                let [gate, up]: [Tensor; 2] = self
                    .products(&[wg, &m.w_in], &x2)?
                    .try_into()
                    .map_err(|_| Error::Unsupported("gated MLP products".into()))?;
                let pre = rt.point(HookName::MlpPre(l), shaped(gate, &m.b_gate)?)?;
                let pre_linear = rt.point(HookName::MlpPreLinear(l), shaped(up, &m.b_in)?)?;
                ops::act_mul(&pre, &pre_linear, c.act)?
            }
            None => {
                let pre = shaped(self.product(&m.w_in, &x2)?, &m.b_in)?;
                let pre = rt.point(HookName::MlpPre(l), pre)?;
                ops::act(&pre, c.act)?
            }
        };
        let post = rt.point(HookName::MlpPost(l), post)?;
        let mut out = self.product(&m.w_out, &post.reshape((b * p, c.d_mlp))?)?;
        if let Some(bo) = &m.b_out {
            out = out.broadcast_add(bo)?;
        }
        Ok(out.reshape((b, p, d))?)
    }
}

/// Log-softmax over the vocabulary in f32 (f64 accumulation happens in metrics, not here).
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?)
}

/// Mean next-token cross-entropy of `logits` `[b, p, v]` against `tokens` `[b, p]` shifted by
/// one (positions 0..p-1 predict 1..p), as TransformerLens' `lm_cross_entropy_loss`:
/// differentiable, through the fused [`crate::kernels::cross_entropy_rows`] (the last position
/// of each sequence has no target).
pub fn next_token_loss(logits: &Tensor, tokens: &Tensor) -> Result<Tensor> {
    let (b, p, v) = logits.dims3()?;
    if p < 2 || tokens.dims2()? != (b, p) {
        return Err(Error::Input(format!(
            "next-token loss: logits [{b}, {p}, {v}] against tokens {:?} (needs two positions \
             and one token per position)",
            tokens.dims()
        )));
    }
    let ids = tokens.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let targets: Vec<u32> = ids
        .iter()
        .flat_map(|row| row[1..].iter().copied().chain([crate::kernels::NO_TARGET]))
        .collect();
    let targets = Tensor::from_vec(targets, b * p, logits.device())?;
    let rows = crate::kernels::cross_entropy_rows(&logits.reshape((b * p, v))?, &targets)?;
    Ok((rows.sum_all()? / (b * (p - 1)) as f64)?)
}
