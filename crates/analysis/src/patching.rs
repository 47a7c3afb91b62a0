//! Activation patching: run a corrupted prompt, restore one activation from the clean run, and
//! measure how much of the clean behaviour comes back.
//!
//! Conventions follow TransformerLens' `patching.py`: clean activations are patched *into the
//! corrupted run* ("denoising"); a sweep returns one metric value per (layer, position) for
//! residual, attention-output and MLP-output sites, and per (layer, head) for per-head sites
//! patched over all positions. Metrics, all at the last position:
//! - [`Metric::LogitDiff`]: normalised logit difference
//!   `(ld − ld_corrupted) / (ld_clean − ld_corrupted)` with `ld = logit[answer] − logit[wrong]`:
//!   0 = corrupted behaviour, 1 = clean behaviour;
//! - [`Metric::AnswerProb`]: the probability of the answer token;
//! - [`Metric::Kl`]: KL(clean ‖ patched) = Σ p_clean (log p_clean − log p_patched), in nats
//!   (0 = fully restored).
//!
//! What makes a sweep fast, each step exact:
//! 1. Layers below the patched one are not recomputed: the corrupted run's `resid_pre` enters at
//!    the patched layer (`start_at_layer`).
//! 2. Positions before the first patched position cannot change (causal attention): their keys
//!    and values come from the corrupted run's KV cache and only later positions are computed.
//! 3. A patch that writes a value equal (bit for bit) to the corrupted one changes nothing: its
//!    metric is the corrupted metric, with no forward at all. (In a clean/corrupted pair that
//!    differs in one token, every position before that token is such a patch.)
//! 4. All patches of one layer run as one batch, and only the last position is unembedded.
//!
//! [`patch_naive`] is the plain definition (a full corrupted forward with one hook) and the
//! tests hold the fast sweep to it.

use std::cell::RefCell;

use candle_core::{DType, Tensor};
use interplab_core::model::{
    log_softmax, ActivationCache, HookName, HookPoint, HookedTransformer, Hooks, KvCache,
    NameFilter,
};
use interplab_core::{Error, Result};
use serde::Serialize;

/// What is measured at the last position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Normalised logit difference between two single tokens.
    LogitDiff { answer: u32, wrong: u32 },
    /// Probability of the answer token.
    AnswerProb { answer: u32 },
    /// KL divergence from the clean next-token distribution.
    Kl,
}

/// Sites patched per (layer, position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionSite {
    ResidPre,
    ResidMid,
    ResidPost,
    AttnOut,
    MlpOut,
}

/// Sites patched per (layer, head), over all positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadSite {
    Z,
    Q,
    K,
    V,
    Pattern,
}

impl PositionSite {
    /// All position sites.
    pub const ALL: [PositionSite; 5] = [
        PositionSite::ResidPre,
        PositionSite::ResidMid,
        PositionSite::ResidPost,
        PositionSite::AttnOut,
        PositionSite::MlpOut,
    ];

    /// The short name used in files and the CLI (`resid_pre`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PositionSite::ResidPre => "resid_pre",
            PositionSite::ResidMid => "resid_mid",
            PositionSite::ResidPost => "resid_post",
            PositionSite::AttnOut => "attn_out",
            PositionSite::MlpOut => "mlp_out",
        }
    }

    /// The hook point of this site in block `layer`.
    pub fn hook(self, layer: usize) -> HookName {
        match self {
            PositionSite::ResidPre => HookName::ResidPre(layer),
            PositionSite::ResidMid => HookName::ResidMid(layer),
            PositionSite::ResidPost => HookName::ResidPost(layer),
            PositionSite::AttnOut => HookName::AttnOut(layer),
            PositionSite::MlpOut => HookName::MlpOut(layer),
        }
    }
}

impl HeadSite {
    /// All head sites.
    pub const ALL: [HeadSite; 5] = [
        HeadSite::Z,
        HeadSite::Q,
        HeadSite::K,
        HeadSite::V,
        HeadSite::Pattern,
    ];

    /// The short name used in files and the CLI (`z`, `q`, ...).
    pub fn name(self) -> &'static str {
        match self {
            HeadSite::Z => "z",
            HeadSite::Q => "q",
            HeadSite::K => "k",
            HeadSite::V => "v",
            HeadSite::Pattern => "pattern",
        }
    }

    /// The hook point of this site in block `layer`.
    pub fn hook(self, layer: usize) -> HookName {
        match self {
            HeadSite::Z => HookName::AttnZ(layer),
            HeadSite::Q => HookName::AttnQ(layer),
            HeadSite::K => HookName::AttnK(layer),
            HeadSite::V => HookName::AttnV(layer),
            HeadSite::Pattern => HookName::AttnPattern(layer),
        }
    }

    /// Heads this site has per layer: keys and values have `n_kv_heads` (grouped-query
    /// attention), the others `n_heads`.
    pub fn n_heads(self, model: &HookedTransformer) -> usize {
        match self {
            HeadSite::K | HeadSite::V => model.cfg.n_kv_heads,
            _ => model.cfg.n_heads,
        }
    }
}

/// Which part of a hook's activation one patch replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// One position, every feature (`[batch, pos, ...]` activations).
    Position(usize),
    /// One head, every position (`[batch, pos, head, d]`, or `[batch, head, q, k]` patterns).
    Head(usize),
    /// One head at one position (the query position for patterns).
    HeadAt(usize, usize),
    /// The whole activation: every position (and head).
    All,
}

/// A sweep's result: `values[layer][position or head]`.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub site: String,
    pub values: Vec<Vec<f64>>,
    /// Forwards actually run (batches count once per item); the rest were exact skips.
    pub patched_forwards: usize,
}

/// The clean and corrupted runs a sweep patches between, prepared once.
pub struct PatchingSetup<'m> {
    model: &'m HookedTransformer,
    pub clean: Vec<u32>,
    pub corrupted: Vec<u32>,
    pub metric: Metric,
    clean_cache: ActivationCache,
    corrupted_cache: ActivationCache,
    corrupted_kv: KvCache,
    clean_log_probs: Vec<f32>,
    /// Metric of the clean and corrupted runs, un-normalised (raw logit difference for
    /// [`Metric::LogitDiff`]).
    pub clean_raw: f64,
    pub corrupted_raw: f64,
}

impl<'m> PatchingSetup<'m> {
    /// Run both prompts once, caching every activation a sweep can patch. The prompts must have
    /// the same number of tokens; metric tokens must be in the vocabulary.
    pub fn new(
        model: &'m HookedTransformer,
        clean: &[u32],
        corrupted: &[u32],
        metric: Metric,
    ) -> Result<Self> {
        if clean.len() != corrupted.len() {
            return Err(Error::Input(format!(
                "clean and corrupted prompts must have the same number of tokens ({} vs {})",
                clean.len(),
                corrupted.len()
            )));
        }
        if clean.is_empty() {
            return Err(Error::Input("empty prompt".into()));
        }
        let v = model.cfg.d_vocab as u32;
        match metric {
            Metric::LogitDiff { answer, wrong } if answer >= v || wrong >= v => {
                return Err(Error::Input("metric token out of the vocabulary".into()))
            }
            Metric::AnswerProb { answer } if answer >= v => {
                return Err(Error::Input("metric token out of the vocabulary".into()))
            }
            _ => {}
        }
        let dev = model.device();
        let n = clean.len();
        let filter = patchable_filter();
        let ct = Tensor::from_vec(clean.to_vec(), (1, n), dev)?;
        let (clean_logits, clean_cache) = model.run(
            interplab_core::model::Input::Tokens(&ct),
            &Default::default(),
            None,
            Some(&filter),
        )?;
        // The corrupted run records its activations through hooks and fills a KV cache.
        let xt = Tensor::from_vec(corrupted.to_vec(), (1, n), dev)?;
        let store: RefCell<ActivationCache> = RefCell::new(ActivationCache::new());
        let mut corrupted_kv = KvCache::default();
        let corrupted_logits = {
            let mut hooks = Hooks::new();
            hooks.add(filter, |x: &Tensor, p: HookPoint| {
                store.borrow_mut().insert(p.name, x.clone());
                Ok(None)
            });
            model.forward_with_kv(&xt, &mut corrupted_kv, None, Some(&mut hooks))?
        };
        let last =
            |l: &Tensor| -> Result<Tensor> { Ok(l.get(0)?.get(n - 1)?.to_dtype(DType::F32)?) };
        let clean_last = last(&clean_logits)?;
        let corr_last = last(&corrupted_logits)?;
        let clean_log_probs: Vec<f32> = log_softmax(&clean_last.unsqueeze(0)?)?
            .squeeze(0)?
            .to_vec1()?;
        let mut s = PatchingSetup {
            model,
            clean: clean.to_vec(),
            corrupted: corrupted.to_vec(),
            metric,
            clean_cache,
            corrupted_cache: store.into_inner(),
            corrupted_kv,
            clean_log_probs,
            clean_raw: 0.0,
            corrupted_raw: 0.0,
        };
        s.clean_raw = s.raw_metrics(&clean_last.unsqueeze(0)?)?[0];
        s.corrupted_raw = s.raw_metrics(&corr_last.unsqueeze(0)?)?[0];
        if let Metric::LogitDiff { .. } = metric {
            if (s.clean_raw - s.corrupted_raw).abs() < 1e-9 {
                return Err(Error::Input(
                    "clean and corrupted logit differences are equal: the normalised metric is undefined".into(),
                ));
            }
        }
        Ok(s)
    }

    /// The model the setup belongs to.
    pub fn model(&self) -> &HookedTransformer {
        self.model
    }

    /// The clean run's activations (every patchable hook).
    pub fn clean_cache(&self) -> &ActivationCache {
        &self.clean_cache
    }

    /// The corrupted run's activations (every patchable hook).
    pub fn corrupted_cache(&self) -> &ActivationCache {
        &self.corrupted_cache
    }

    /// Raw metric per row of last-position logits `[rows, vocab]`.
    fn raw_metrics(&self, logits: &Tensor) -> Result<Vec<f64>> {
        let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        Ok(rows
            .iter()
            .map(|r| match self.metric {
                Metric::LogitDiff { answer, wrong } => {
                    r[answer as usize] as f64 - r[wrong as usize] as f64
                }
                Metric::AnswerProb { answer } => {
                    let lse = log_sum_exp(r);
                    (r[answer as usize] as f64 - lse).exp()
                }
                Metric::Kl => {
                    let lse = log_sum_exp(r);
                    self.clean_log_probs
                        .iter()
                        .zip(r)
                        .map(|(&lc, &x)| {
                            let lc = lc as f64;
                            lc.exp() * (lc - (x as f64 - lse))
                        })
                        .sum()
                }
            })
            .collect())
    }

    /// The reported value of a raw metric (normalised for logit differences).
    pub fn normalise(&self, raw: f64) -> f64 {
        match self.metric {
            Metric::LogitDiff { .. } => {
                (raw - self.corrupted_raw) / (self.clean_raw - self.corrupted_raw)
            }
            _ => raw,
        }
    }

    /// The metric of the unpatched corrupted run, as reported.
    pub fn corrupted_value(&self) -> f64 {
        self.normalise(self.corrupted_raw)
    }

    /// Patch each (layer, position) of a residual / attention-output / MLP-output site.
    pub fn sweep_positions(&self, site: PositionSite) -> Result<Sweep> {
        let n = self.clean.len();
        let regions: Vec<Region> = (0..n).map(Region::Position).collect();
        let mut values = Vec::new();
        let mut forwards = 0;
        for l in 0..self.model.cfg.n_layers {
            let (v, f) = self.patch_layer(&site.hook(l).to_string(), l, &regions)?;
            values.push(v);
            forwards += f;
        }
        Ok(Sweep {
            site: site.name().into(),
            values,
            patched_forwards: forwards,
        })
    }

    /// Patch each layer of a position site over all positions at once: `values[layer][0]`.
    pub fn sweep_layers(&self, site: PositionSite) -> Result<Sweep> {
        let mut values = Vec::new();
        let mut forwards = 0;
        for l in 0..self.model.cfg.n_layers {
            let (v, f) = self.patch_layer(&site.hook(l).to_string(), l, &[Region::All])?;
            values.push(v);
            forwards += f;
        }
        Ok(Sweep {
            site: format!("{}_all_positions", site.name()),
            values,
            patched_forwards: forwards,
        })
    }

    /// Patch one head of one layer at each position: `values[0][position]`.
    pub fn sweep_head_positions(&self, site: HeadSite, layer: usize, head: usize) -> Result<Sweep> {
        if layer >= self.model.cfg.n_layers {
            return Err(Error::Input(format!(
                "layer index {layer} out of range (0..{})",
                self.model.cfg.n_layers
            )));
        }
        check_index(head, site.n_heads(self.model), "head")?;
        let regions: Vec<Region> = (0..self.clean.len())
            .map(|p| Region::HeadAt(head, p))
            .collect();
        let (v, f) = self.patch_layer(&site.hook(layer).to_string(), layer, &regions)?;
        Ok(Sweep {
            site: format!("{}_{layer}.{head}_by_position", site.name()),
            values: vec![v],
            patched_forwards: f,
        })
    }

    /// Patch each (layer, head) of a per-head site over all positions.
    pub fn sweep_heads(&self, site: HeadSite) -> Result<Sweep> {
        let regions: Vec<Region> = (0..site.n_heads(self.model)).map(Region::Head).collect();
        let mut values = Vec::new();
        let mut forwards = 0;
        for l in 0..self.model.cfg.n_layers {
            let (v, f) = self.patch_layer(&site.hook(l).to_string(), l, &regions)?;
            values.push(v);
            forwards += f;
        }
        Ok(Sweep {
            site: site.name().into(),
            values,
            patched_forwards: forwards,
        })
    }

    /// Patch `regions` of hook `name` (in block `layer`) one at a time, batched; returns the
    /// metric per region and the number of patched forwards run.
    pub fn patch_layer(
        &self,
        name: &str,
        layer: usize,
        regions: &[Region],
    ) -> Result<(Vec<f64>, usize)> {
        let clean = self.clean_cache.get(name)?;
        let corr = self.corrupted_cache.get(name)?;
        let (pos_axis, head_axis) = axes(name);
        let n = self.clean.len();
        // Exact skips, and the first position any remaining patch touches.
        let mut todo = Vec::new();
        let mut out = vec![self.corrupted_value(); regions.len()];
        let mut first = n;
        for (i, r) in regions.iter().enumerate() {
            let has_heads = clean.rank() == 4;
            let (a, b, f) = match *r {
                Region::Position(p) => {
                    check_index(p, clean.dim(pos_axis)?, "position")?;
                    (
                        clean.narrow(pos_axis, p, 1)?,
                        corr.narrow(pos_axis, p, 1)?,
                        p,
                    )
                }
                Region::Head(_) | Region::HeadAt(..) if !has_heads => {
                    return Err(Error::Input(format!("{name} has no head axis")));
                }
                Region::Head(h) => {
                    check_index(h, clean.dim(head_axis)?, "head")?;
                    let a = clean.narrow(head_axis, h, 1)?;
                    let b = corr.narrow(head_axis, h, 1)?;
                    // The first position where this head differs.
                    let f = first_difference(&a, &b, pos_axis)?.unwrap_or(n);
                    (a, b, f)
                }
                Region::HeadAt(h, p) => {
                    check_index(h, clean.dim(head_axis)?, "head")?;
                    check_index(p, clean.dim(pos_axis)?, "position")?;
                    let a = clean.narrow(head_axis, h, 1)?.narrow(pos_axis, p, 1)?;
                    let b = corr.narrow(head_axis, h, 1)?.narrow(pos_axis, p, 1)?;
                    (a, b, p)
                }
                Region::All => {
                    let f = first_difference(clean, corr, pos_axis)?.unwrap_or(n);
                    (clean.clone(), corr.clone(), f)
                }
            };
            if bitwise_equal(&a, &b)? {
                continue;
            }
            first = first.min(f);
            todo.push(i);
        }
        if todo.is_empty() {
            return Ok((out, 0));
        }
        let batch = todo.len();
        let q = n - first;
        // Positions [first, n) of the corrupted residual entering `layer`, once per patch.
        let resid = self
            .corrupted_cache
            .get(&HookName::ResidPre(layer).to_string())?
            .narrow(1, first, q)?
            .repeat((batch, 1, 1))?;
        let mut kv = if first > 0 {
            self.corrupted_kv.prefix(first, batch)?
        } else {
            KvCache::default()
        };
        // The replacement: where the mask is set, the clean activation.
        let clean_new = clean.narrow(pos_axis, first, clean.dim(pos_axis)? - first)?;
        let mask = region_mask(clean_new.dims(), pos_axis, head_axis, first, regions, &todo)?;
        let mask = Tensor::from_vec(mask, batch_shape(batch, clean_new.dims()), clean.device())?;
        let mut hooks = Hooks::new();
        hooks.add(NameFilter::new(&[name]), |x: &Tensor, _| {
            let c = clean_new.broadcast_as(x.dims())?;
            Ok(Some(mask.where_cond(&c, x)?))
        });
        let fin = self
            .model
            .run_resid_with_kv(&resid, layer, &mut kv, Some(&mut hooks))?;
        let last = fin.narrow(1, q - 1, 1)?.squeeze(1)?;
        let logits = self.model.unembed_resid(&last)?;
        for (j, raw) in self.raw_metrics(&logits)?.into_iter().enumerate() {
            out[todo[j]] = self.normalise(raw);
        }
        Ok((out, batch))
    }
}

/// The plain definition, for checking the fast path: a full corrupted forward with one hook
/// that replaces `region` of `name` with the clean activation.
pub fn patch_naive(setup: &PatchingSetup, name: &str, region: Region) -> Result<f64> {
    let model = setup.model;
    let n = setup.corrupted.len();
    let clean = setup.clean_cache.get(name)?.clone();
    let (pos_axis, head_axis) = axes(name);
    let t = Tensor::from_vec(setup.corrupted.clone(), (1, n), model.device())?;
    let mut hooks = Hooks::new();
    hooks.add(NameFilter::new(&[name]), |x: &Tensor, _| {
        let mask = region_mask(x.dims(), pos_axis, head_axis, 0, &[region], &[0])?;
        let mask = Tensor::from_vec(mask, x.dims(), x.device())?;
        Ok(Some(mask.where_cond(&clean, x)?))
    });
    let logits = model.run_with_hooks(&t, &mut hooks)?;
    let last = logits.get(0)?.narrow(0, n - 1, 1)?;
    Ok(setup.normalise(setup.raw_metrics(&last)?[0]))
}

/// The position and head axes of hook `name`'s activation: `[batch, head, q, k]` for patterns,
/// `[batch, pos, head, ..]` otherwise.
fn axes(name: &str) -> (usize, usize) {
    match HookName::parse(name) {
        Some(HookName::AttnPattern(_)) => (2, 1),
        _ => (1, 2),
    }
}

/// Every hook a sweep may patch, plus the residual streams it restarts from.
fn patchable_filter() -> NameFilter {
    let sites: Vec<String> = PositionSite::ALL
        .iter()
        .map(|s| s.hook(0))
        .chain(HeadSite::ALL.iter().map(|s| s.hook(0)))
        .map(HookName::every_layer)
        .collect();
    NameFilter::new(&sites)
}

fn check_index(i: usize, n: usize, what: &str) -> Result<()> {
    if i >= n {
        return Err(Error::Input(format!(
            "{what} index {i} out of range (0..{n})"
        )));
    }
    Ok(())
}

fn bitwise_equal(a: &Tensor, b: &Tensor) -> Result<bool> {
    let a: Vec<f32> = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()))
}

/// The first index along `axis` where `a` and `b` differ, if any.
fn first_difference(a: &Tensor, b: &Tensor, axis: usize) -> Result<Option<usize>> {
    for i in 0..a.dim(axis)? {
        if !bitwise_equal(&a.narrow(axis, i, 1)?, &b.narrow(axis, i, 1)?)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn batch_shape(batch: usize, dims: &[usize]) -> Vec<usize> {
    let mut s = vec![batch];
    s.extend_from_slice(&dims[1..]);
    s
}

/// A u8 mask `[batch, ...]` (the activation's shape over positions `first..`), one batch item
/// per patch in `todo`, set where that patch writes.
fn region_mask(
    dims: &[usize],
    pos_axis: usize,
    head_axis: usize,
    first: usize,
    regions: &[Region],
    todo: &[usize],
) -> Result<Vec<u8>> {
    let per: usize = dims[1..].iter().product();
    let mut m = vec![0u8; per * todo.len()];
    // Strides of the per-item shape dims[1..].
    let shape = &dims[1..];
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let coord = |off: usize, axis: usize| (off / strides[axis]) % shape[axis];
    for (b, &ri) in todo.iter().enumerate() {
        let (pa, ha) = (pos_axis - 1, head_axis - 1);
        for (off, slot) in m[b * per..(b + 1) * per].iter_mut().enumerate() {
            let hit = match regions[ri] {
                Region::Position(p) => coord(off, pa) == p - first,
                Region::Head(h) => coord(off, ha) == h,
                Region::HeadAt(h, p) => coord(off, ha) == h && coord(off, pa) == p - first,
                Region::All => true,
            };
            if hit {
                *slot = 1;
            }
        }
    }
    Ok(m)
}

fn log_sum_exp(r: &[f32]) -> f64 {
    let m = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    m + r.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
}
