//! `sae-train`: sparse autoencoders (or transcoders) trained on a model's activations over a
//! corpus, then evaluated on held-out documents — FVU, L0, dead and dense latents, shrinkage,
//! CE loss recovered against zero and mean ablation, KL — with the L0–FVU frontier when
//! several are trained at once.
//!
//! One harvest feeds every SAE of the config: each training batch, drawn from one shuffle
//! buffer of fixed capacity, goes to every SAE in turn, so a sweep over `k` or the L1
//! coefficient costs one pass of the model. With `normalise = "expected-norm"` activations
//! are scaled to mean norm √d_in (estimated on the first `norm_tokens` rows harvested) for
//! training, and the scale is folded into the saved weights, which therefore read raw
//! activations. Each SAE is written in SAELens' layout under `saes/<name>/` in the run
//! directory. Definitions: docs/sae.md.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use interplab_core::corpus::{held_out_split, load_corpus};
use interplab_core::rng::SplitMix;
use interplab_report::{Figure, LinePlot, Report, Series, SeriesStyle};
use interplab_sae::evaluate::{downstream, reconstruction, Evaluation};
use interplab_sae::metrics::Metrics;
use interplab_sae::saelens::{save, SaveInfo};
use interplab_sae::store::{
    expected_norm_scale, hook_layer, interleave, pack_sequences, split_rows, usable_tokens,
    HarvestSpec, Harvester, ShardMeta, ShardReader, ShardWriter, ShuffleBuffer,
};
use interplab_sae::{Architecture, Sae, TrainConfig, Trainer};
use serde::{Deserialize, Serialize};

use crate::finetune::Stopped;
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// One SAE of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Variant {
    /// `relu`, `topk`, `batchtopk` or `jumprelu`.
    pub arch: String,
    /// Active latents per token (`topk`) or per token on average over a batch (`batchtopk`).
    pub k: usize,
    /// The L1 coefficient (`relu`) or L0 coefficient (`jumprelu`).
    pub coefficient: f64,
}

impl Default for Variant {
    fn default() -> Self {
        Variant {
            arch: "topk".into(),
            k: 32,
            coefficient: 5.0,
        }
    }
}

impl Variant {
    /// A short name: `topk-k32`, `relu-l1-5`, `jumprelu-l0-0.01`.
    pub fn name(&self) -> String {
        match self.arch.as_str() {
            "topk" | "batchtopk" => format!("{}-k{}", self.arch, self.k),
            "relu" => format!("relu-l1-{}", self.coefficient),
            other => format!("{other}-l0-{}", self.coefficient),
        }
    }
}

impl Variant {
    /// Every architecture of `arch` with each of its sizes: `topk`/`batchtopk` with each `k`,
    /// `relu`/`jumprelu` with each coefficient (the CLI's `--arch … --k … --l1 …`).
    pub fn grid(arch: &[String], k: &[usize], coefficient: &[f64]) -> Vec<Variant> {
        let mut out = Vec::new();
        for a in arch {
            match a.as_str() {
                "topk" | "batchtopk" => out.extend(k.iter().map(|&k| Variant {
                    arch: a.clone(),
                    k,
                    coefficient: 0.0,
                })),
                _ => out.extend(coefficient.iter().map(|&c| Variant {
                    arch: a.clone(),
                    k: 0,
                    coefficient: c,
                })),
            }
        }
        out
    }
}

/// A transcoder's hooks at the block of `hook`: it reads `blocks.L.ln2.hook_normalized` (the
/// MLP's input) and predicts `blocks.L.hook_mlp_out`.
pub fn transcoder_hooks(hook: &str) -> anyhow::Result<(String, String)> {
    let l = hook_layer(hook)
        .with_context(|| format!("a transcoder needs a block hook (blocks.L.…), got `{hook}`"))?;
    Ok((
        format!("blocks.{l}.ln2.hook_normalized"),
        format!("blocks.{l}.hook_mlp_out"),
    ))
}

/// How activations are scaled for training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalise {
    /// Raw activations.
    None,
    /// Scaled so that the mean norm is √d (per side for transcoders).
    ExpectedNorm,
}

/// The config of `sae-train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// A corpus spec for `load_corpus` (`docs-and-plays`, a file).
    pub corpus: String,
    /// The hook the SAE reads.
    pub hook: String,
    /// For a transcoder: the hook it predicts (e.g. `blocks.8.hook_mlp_out` with
    /// `hook = blocks.8.ln2.hook_normalized`).
    pub hook_out: Option<String>,
    /// The SAEs trained on one harvest.
    pub saes: Vec<Variant>,
    /// Latents per SAE.
    pub latents: usize,
    /// Training tokens (rows) seen by each SAE.
    pub tokens: u64,
    /// Tokens per sequence.
    pub context: usize,
    /// Sequences per forward pass.
    pub batch_sequences: usize,
    /// Rows per training step.
    pub batch_size: usize,
    /// Shuffle-buffer capacity in rows (bounds the memory of the store).
    pub buffer_tokens: usize,
    /// Leave special-token positions out.
    pub exclude_special: bool,
    pub normalise: Normalise,
    /// Rows the normalisation scale is estimated on.
    pub norm_tokens: usize,
    pub lr: f64,
    /// Steps of linear learning-rate warm-up.
    pub lr_warmup_steps: u64,
    /// The last fraction of steps over which the learning rate decays linearly to 0.
    pub lr_decay_fraction: f64,
    /// The first fraction of steps over which the sparsity coefficient warms up from 0.
    pub sparsity_warmup_fraction: f64,
    /// A latent is dead for AuxK after this many tokens without firing.
    pub dead_tokens: u64,
    /// Every `held_out_every`-th document is held out for evaluation.
    pub held_out_every: usize,
    /// Held-out tokens for the reconstruction metrics.
    pub eval_tokens: u64,
    /// Held-out tokens for CE recovered and KL (each costs a forward pass per SAE, plus two).
    pub ce_tokens: u64,
    /// Write the harvested rows here as safetensors shards (a new folder).
    pub save_activations: Option<PathBuf>,
    /// Train from shards written earlier instead of running the model.
    pub activations: Option<PathBuf>,
    /// Steps between logged training statistics.
    pub log_every: u64,
    /// Steps between checkpoints in the run directory (0: none); `--resume` continues from
    /// the last one bit for bit.
    pub checkpoint_every: u64,
    /// Stop after this many steps as if interrupted (for testing resume).
    pub stop_after: Option<u64>,
    pub seed: u64,
    /// The SAEs' dense products with bf16 inputs and f32 sums (mixed precision, as PyTorch's
    /// bf16 autocast; weights, sparse products and AdamW stay f32). Off: f32 products.
    pub bf16_products: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            corpus: "docs-and-plays".into(),
            hook: "blocks.15.hook_resid_post".into(),
            hook_out: None,
            saes: vec![Variant::default()],
            latents: 4608,
            tokens: 5_000_000,
            context: 128,
            batch_sequences: 32,
            batch_size: 4096,
            buffer_tokens: 1 << 17,
            exclude_special: true,
            normalise: Normalise::ExpectedNorm,
            norm_tokens: 16_384,
            lr: 4e-4,
            lr_warmup_steps: 0,
            lr_decay_fraction: 0.2,
            sparsity_warmup_fraction: 0.05,
            dead_tokens: 1_000_000,
            held_out_every: 20,
            eval_tokens: 65_536,
            ce_tokens: 8_192,
            save_activations: None,
            activations: None,
            log_every: 10,
            checkpoint_every: 200,
            stop_after: None,
            seed: 0,
            bf16_products: false,
        }
    }
}

/// What was learned about one SAE.
#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    pub name: String,
    pub variant: Variant,
    /// Where it was saved, relative to the run directory.
    pub dir: String,
    /// Held-out evaluation.
    pub eval: Evaluation,
    /// BatchTopK's inference threshold (on raw activations).
    pub threshold: Option<f64>,
    /// (step, loss, L0, FVU) every `log_every` steps, on the training batch.
    pub curve: Vec<(u64, f64, f64, f64)>,
}

/// The results of `sae-train`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub hook: String,
    pub hook_out: Option<String>,
    pub d_in: usize,
    pub d_out: usize,
    pub latents: usize,
    /// Training rows per SAE.
    pub tokens: u64,
    pub steps: u64,
    /// Normalisation factors of input and target (1 for `none`).
    pub scale_in: f64,
    pub scale_out: f64,
    /// Usable tokens in the corpus' training part (when harvested).
    pub corpus_tokens: u64,
    pub saes: Vec<Trained>,
}

impl Experiment for Config {
    const NAME: &'static str = "sae-train";
    const QUESTION: &'static str =
        "How well does a sparse dictionary of latents reconstruct the model's activations at a \
         hook — variance explained, active latents per token, and next-token loss recovered when \
         the reconstruction replaces the activation?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model must be given")
            .check(!self.hook.is_empty(), "hook must be given")
            .check(!self.saes.is_empty(), "at least one SAE must be given")
            .positive("latents", self.latents)
            .positive("batch_size", self.batch_size)
            .positive("batch_sequences", self.batch_sequences)
            .positive("held_out_every", self.held_out_every)
            .check(self.context >= 2, "context must be at least 2 tokens")
            .check(
                self.tokens >= self.batch_size as u64,
                "tokens must hold at least one batch",
            )
            .check(
                self.buffer_tokens >= 2 * self.batch_size,
                format!(
                    "buffer_tokens ({}) must hold at least two batches ({})",
                    self.buffer_tokens,
                    2 * self.batch_size
                ),
            )
            .check(self.lr.is_finite() && self.lr > 0.0, "lr must be positive")
            .range("lr_decay_fraction", self.lr_decay_fraction, 0.0, 1.0)
            .range(
                "sparsity_warmup_fraction",
                self.sparsity_warmup_fraction,
                0.0,
                1.0,
            )
            .check(
                !(self.activations.is_some() && self.save_activations.is_some()),
                "give activations (read shards) or save_activations (write them), not both",
            );
        for v in &self.saes {
            match Architecture::parse(&v.arch) {
                Err(e) => {
                    p.check(false, e.to_string());
                }
                Ok(a) => {
                    p.check(
                        !a.uses_k() || (v.k >= 1 && v.k <= self.latents),
                        format!(
                            "k = {} must be between 1 and the number of latents ({})",
                            v.k, self.latents
                        ),
                    )
                    .check(
                        v.coefficient.is_finite() && v.coefficient >= 0.0,
                        format!("{}: the coefficient must be ≥ 0", v.name()),
                    );
                }
            }
        }
        if self.hook_out.is_some() {
            p.check(
                !self.saes.iter().any(|v| v.arch == "topk"),
                "SAELens' layout has no TopK transcoder; train a transcoder as relu, batchtopk or jumprelu",
            );
        }
        let names: std::collections::BTreeSet<String> =
            self.saes.iter().map(Variant::name).collect();
        p.check(
            names.len() == self.saes.len(),
            "two SAEs of the config have the same name",
        );
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            hook: "blocks.3.hook_resid_post".into(),
            saes: vec![
                Variant {
                    arch: "topk".into(),
                    k: 16,
                    coefficient: 0.0,
                },
                Variant {
                    arch: "relu".into(),
                    k: 0,
                    coefficient: 5.0,
                },
            ],
            latents: 1152,
            tokens: 32_768,
            batch_size: 1024,
            buffer_tokens: 8192,
            batch_sequences: 16,
            context: 64,
            eval_tokens: 4096,
            ce_tokens: 1024,
            lr: 1e-3,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// The sequences of the corpus: training part (shuffled by `seed`) and held-out part.
pub fn corpus_sequences(
    m: &interplab_core::loader::LoadedModel,
    corpus: &str,
    context: usize,
    held_out_every: usize,
    seed: u64,
) -> anyhow::Result<(Vec<Vec<u32>>, Vec<Vec<u32>>)> {
    let docs = load_corpus(corpus).with_context(|| format!("reading corpus {corpus}"))?;
    let (train, held) = held_out_split(docs, held_out_every);
    let mut train = pack_sequences(m, &train, context)?;
    let held = held_in_mixed_order(pack_sequences(m, &held, context)?);
    SplitMix::new(seed ^ 0x5E0_5E0).shuffle(&mut train);
    Ok((train, held))
}

/// Held-out sequences in one fixed shuffled order (the same for every seed), so that the first
/// N tokens evaluated mix the corpus' parts instead of being its first documents (the plays).
fn held_in_mixed_order(mut held: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
    SplitMix::new(0x4E1D_0000_5AE5).shuffle(&mut held);
    held
}

/// The held-out sequences of the corpus only (as [`corpus_sequences`] gives them).
pub fn held_out_sequences(
    m: &interplab_core::loader::LoadedModel,
    corpus: &str,
    context: usize,
    held_out_every: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let docs = load_corpus(corpus).with_context(|| format!("reading corpus {corpus}"))?;
    let (_, held) = held_out_split(docs, held_out_every);
    Ok(held_in_mixed_order(pack_sequences(m, &held, context)?))
}

/// Sequences from the front of `seqs` holding at least `tokens` usable tokens (all if fewer).
pub(crate) fn take_tokens(
    m: &interplab_core::loader::LoadedModel,
    seqs: &[Vec<u32>],
    tokens: u64,
    exclude_special: bool,
) -> Vec<Vec<u32>> {
    let mut n = 0u64;
    let mut out = Vec::new();
    for s in seqs {
        if n >= tokens {
            break;
        }
        n += usable_tokens(m, std::slice::from_ref(s), exclude_special);
        out.push(s.clone());
    }
    out
}

/// Where training rows come from.
enum Source<'a> {
    Model {
        harvester: Harvester<'a>,
        seqs: Vec<Vec<u32>>,
        next: usize,
        writer: Option<ShardWriter>,
    },
    Shards(ShardReader),
}

impl Source<'_> {
    /// Sequences (or shards) consumed.
    fn position(&self) -> usize {
        match self {
            Source::Model { next, .. } => *next,
            Source::Shards(r) => r.position(),
        }
    }

    fn seek(&mut self, n: usize) {
        match self {
            Source::Model { next, .. } => *next = n,
            Source::Shards(r) => r.seek(n),
        }
    }

    /// The next rows (side by side for transcoders), or `None` when exhausted.
    fn next(&mut self, want_rows: usize) -> anyhow::Result<Option<Vec<f32>>> {
        match self {
            Source::Model {
                harvester,
                seqs,
                next,
                writer,
            } => {
                if *next >= seqs.len() {
                    return Ok(None);
                }
                let per_seq = seqs[0].len();
                let n = (want_rows / per_seq).clamp(1, harvester.batch_sequences() * 4);
                let end = (*next + n).min(seqs.len());
                let rows = harvester.harvest(&seqs[*next..end], *next)?;
                *next = end;
                let out = interleave(&rows.x, &rows.y, harvester.d_in, harvester.d_out);
                if let Some(w) = writer {
                    w.write(&out)?;
                }
                Ok(Some(out))
            }
            Source::Shards(r) => r.next_shard(),
        }
    }
}

/// Run `sae-train`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let wd = ctx.workdir()?;
    let spec = HarvestSpec {
        hook: cfg.hook.clone(),
        hook_out: cfg.hook_out.clone(),
        exclude_special: cfg.exclude_special,
        batch_sequences: cfg.batch_sequences,
    };
    // The hooks first: a wrong name fails before the corpus is read.
    let probe = Harvester::new(m, spec.clone())?;
    let (d_in, d_out) = (probe.d_in, probe.d_out);
    progress.phase("tokenising");
    let (train_seqs, held_seqs) =
        corpus_sequences(m, &cfg.corpus, cfg.context, cfg.held_out_every, cfg.seed)?;
    let width = if cfg.hook_out.is_some() {
        d_in + d_out
    } else {
        d_in
    };
    // Memory: the buffer, the SAEs with their Adam moments, one harvest chunk.
    let per_sae = 4 * (cfg.latents * (d_in + d_out) + cfg.latents + d_out) * 4;
    let need = (cfg.buffer_tokens * width * 4 + cfg.saes.len() * per_sae) as u64;
    if let Some(avail) = interplab_core::model::mem_available() {
        if need > avail {
            bail!(
                "the shuffle buffer and {} SAEs need {:.1} GB but {:.1} GB are available; lower buffer_tokens or latents",
                cfg.saes.len(),
                need as f64 / 1e9,
                avail as f64 / 1e9
            );
        }
    }
    let corpus_tokens = usable_tokens(m, &train_seqs, cfg.exclude_special);
    let mut source = match &cfg.activations {
        Some(dir) => {
            let r = ShardReader::open(dir)?;
            anyhow::ensure!(
                r.meta.hook == cfg.hook && r.meta.hook_out == cfg.hook_out,
                "{} holds activations of `{}`, not `{}`",
                dir.display(),
                r.meta.hook,
                cfg.hook
            );
            anyhow::ensure!(
                r.meta.rows >= cfg.tokens,
                "{} holds {} rows, fewer than the {} tokens asked for",
                dir.display(),
                r.meta.rows,
                cfg.tokens
            );
            Source::Shards(r)
        }
        None => {
            if corpus_tokens < cfg.tokens {
                bail!(
                    "corpus {} has {corpus_tokens} usable tokens in its training part (every {}th document held out), fewer than the {} asked for",
                    cfg.corpus,
                    cfg.held_out_every,
                    cfg.tokens
                );
            }
            let writer = match &cfg.save_activations {
                Some(dir) => Some(ShardWriter::create(
                    dir,
                    ShardMeta {
                        hook: cfg.hook.clone(),
                        hook_out: cfg.hook_out.clone(),
                        d_in,
                        d_out,
                        width,
                        rows: 0,
                        shards: 0,
                        model: cfg.model.clone(),
                    },
                )?),
                None => None,
            };
            Source::Model {
                seqs: take_tokens(
                    m,
                    &train_seqs,
                    cfg.tokens + cfg.buffer_tokens as u64 / 2,
                    cfg.exclude_special,
                ),
                harvester: Harvester::new(m, spec.clone())?,
                next: 0,
                writer,
            }
        }
    };
    let out_dir = wd.path.join("saes");
    for v in &cfg.saes {
        let d = out_dir.join(v.name());
        if d.exists() {
            bail!("{} exists; a run never overwrites an SAE", d.display());
        }
    }

    let steps = cfg.tokens / cfg.batch_size as u64;
    let chunk_rows = (cfg.batch_sequences * cfg.context).max(cfg.batch_size);
    let ckpt_dir = wd.path.join("checkpoint");
    let resuming = wd.resume && ckpt_dir.join("store.safetensors").exists();
    if resuming && cfg.save_activations.is_some() {
        bail!("a run that writes activation shards cannot resume; start it again, or train from the shards with `activations`");
    }
    let mut st = if resuming {
        let st = LoopState::load(&ckpt_dir, width, cfg.buffer_tokens)?;
        source.seek(st.position);
        progress.note(&format!("resuming from step {}", st.step));
        st
    } else {
        // Fill the buffer, estimate the scales, initialise.
        progress.phase("harvesting");
        let mut buffer = ShuffleBuffer::new(width, cfg.buffer_tokens, cfg.seed);
        let mut pending: Vec<f32> = Vec::new();
        let mut harvested = 0u64;
        let mut exhausted = false;
        while buffer.free() > 0 && !exhausted {
            match source.next(chunk_rows)? {
                Some(rows) => {
                    harvested += (rows.len() / width) as u64;
                    let take = (buffer.free() * width).min(rows.len());
                    buffer.push(&rows[..take])?;
                    pending.extend_from_slice(&rows[take..]);
                }
                None => exhausted = true,
            }
            progress.message(&format!(
                "buffer {} / {} rows",
                buffer.len(),
                cfg.buffer_tokens
            ));
        }
        let est = &buffer.rows()[..cfg.norm_tokens.min(buffer.len()) * width];
        let (s_in, s_out) = match cfg.normalise {
            Normalise::None => (1.0, 1.0),
            Normalise::ExpectedNorm => {
                let a = expected_norm_scale(est, width, 0..d_in);
                let b = if cfg.hook_out.is_some() {
                    expected_norm_scale(est, width, d_in..width)
                } else {
                    a
                };
                (a, b)
            }
        };
        // The training mean of the replaced activation (raw), for mean ablation.
        let mean_raw = column_mean(
            buffer.rows(),
            width,
            if cfg.hook_out.is_some() {
                d_in..width
            } else {
                0..d_in
            },
        );
        buffer.scale(d_in, s_in as f32, s_out as f32);
        scale_rows(&mut pending, width, d_in, s_in as f32, s_out as f32);
        let init_rows = &buffer.rows()[..buffer.len().min(16_384) * width];
        let init_targets: Vec<f32> = if cfg.hook_out.is_some() {
            split_rows(init_rows, d_in, width - d_in).1
        } else {
            init_rows.to_vec()
        };
        let trainers: Vec<Trainer> = cfg
            .saes
            .iter()
            .map(|v| Trainer::new(train_config(cfg, v, d_in, d_out, steps)?, &init_targets))
            .collect::<anyhow::Result<_>>()?;
        LoopState {
            step: 0,
            position: source.position(),
            harvested,
            exhausted,
            s_in,
            s_out,
            mean_raw,
            curves: vec![Vec::new(); trainers.len()],
            buffer,
            pending,
            trainers,
        }
    };
    let (s_in, s_out) = (st.s_in, st.s_out);

    progress.phase("training");
    progress.total(steps, "steps");
    for step in st.step..steps {
        let stop = cfg.stop_after == Some(step);
        if stop || (cfg.checkpoint_every > 0 && step > st.step && step % cfg.checkpoint_every == 0)
        {
            st.step = step;
            st.position = source.position();
            st.save(&ckpt_dir)?;
            if stop {
                return Err(Stopped {
                    step: step as usize,
                }
                .into());
            }
        }
        // Refill from pending rows first, then from the source, to keep the buffer mixed.
        while st.buffer.wants() && !(st.exhausted && st.pending.is_empty()) {
            if st.pending.is_empty() {
                match source.next(chunk_rows)? {
                    Some(mut rows) => {
                        st.harvested += (rows.len() / width) as u64;
                        scale_rows(&mut rows, width, d_in, s_in as f32, s_out as f32);
                        st.pending = rows;
                    }
                    None => st.exhausted = true,
                }
            }
            let take = (st.buffer.free() * width).min(st.pending.len());
            st.buffer.push(&st.pending[..take])?;
            st.pending.drain(..take);
        }
        let batch = st.buffer.draw(cfg.batch_size);
        if batch.len() < cfg.batch_size * width {
            bail!(
                "the activations ran out after {} rows, at step {step} of {steps}",
                st.harvested
            );
        }
        let (x, y) = if cfg.hook_out.is_some() {
            let (x, y) = split_rows(&batch, d_in, d_out);
            (x, Some(y))
        } else {
            (batch, None)
        };
        let mut msg = String::new();
        for (i, tr) in st.trainers.iter_mut().enumerate() {
            let s = tr.step(&x, y.as_deref());
            if step % cfg.log_every == 0 || step + 1 == steps {
                st.curves[i].push((step, s.loss, s.l0, s.fvu));
            }
            if i == 0 {
                msg = format!("L0 {:.1}  FVU {:.3}", s.l0, s.fvu);
            }
        }
        progress.position(step + 1);
        progress.message(&msg);
    }
    let LoopState {
        trainers,
        curves,
        mean_raw,
        ..
    } = st;
    // The SAEs are saved below; the checkpoint (with its buffer) is no longer needed.
    if ckpt_dir.exists() {
        std::fs::remove_dir_all(&ckpt_dir)?;
    }
    if let Source::Model {
        writer: Some(w), ..
    } = source
    {
        w.finish()?;
    }

    // Save, then evaluate on held-out text.
    let saes: Vec<Sae> = trainers
        .iter()
        .map(|t| t.inference_sae(Some((s_in as f32, s_out as f32))))
        .collect();
    for (v, sae) in cfg.saes.iter().zip(&saes) {
        let info = SaveInfo {
            model_name: Some(cfg.model.clone()),
            hook_name: Some(cfg.hook.clone()),
            hook_name_out: cfg.hook_out.clone(),
            interplab: Some(serde_json::json!({
                "variant": v,
                "tokens": cfg.tokens,
                "normalise": cfg.normalise,
                "scale_in": s_in,
                "scale_out": s_out,
                "corpus": cfg.corpus,
                "mean_activation": mean_raw,
            })),
        };
        save(sae, &out_dir.join(v.name()), &info)?;
    }
    progress.phase("evaluating");
    let refs: Vec<&Sae> = saes.iter().collect();
    let eval_seqs = take_tokens(m, &held_seqs, cfg.eval_tokens, cfg.exclude_special);
    let ce_seqs = take_tokens(m, &held_seqs, cfg.ce_tokens, false);
    if eval_seqs.is_empty() || ce_seqs.is_empty() {
        bail!(
            "corpus {} holds no held-out sequence of {} tokens",
            cfg.corpus,
            cfg.context
        );
    }
    let (metrics, _) = reconstruction(m, &refs, &spec, &eval_seqs)?;
    progress.message("CE loss with the SAEs spliced in");
    let ds = downstream(m, &refs, &spec, &ce_seqs, &mean_raw, 8)?;
    let trained: Vec<Trained> = cfg
        .saes
        .iter()
        .zip(metrics)
        .zip(ds)
        .zip(curves)
        .zip(&saes)
        .map(|((((v, metrics), downstream), curve), sae)| Trained {
            name: v.name(),
            variant: v.clone(),
            dir: format!("saes/{}", v.name()),
            eval: Evaluation {
                metrics,
                downstream,
            },
            threshold: (sae.arch == Architecture::Batchtopk)
                .then(|| sae.threshold.first().copied().unwrap_or(0.0) as f64),
            curve,
        })
        .collect();
    let results = Results {
        hook: cfg.hook.clone(),
        hook_out: cfg.hook_out.clone(),
        d_in,
        d_out,
        latents: cfg.latents,
        tokens: steps * cfg.batch_size as u64,
        steps,
        scale_in: s_in,
        scale_out: s_out,
        corpus_tokens,
        saes: trained,
    };
    let mut outcome = Outcome::new(results.clone(), Report::new("sae-train"));
    let (report, figures) = render(&results, cfg);
    outcome.report = report;
    for (name, f) in figures {
        outcome.figure(name, f);
    }
    Ok(outcome)
}

/// The trainer config of one SAE of the run.
fn train_config(
    cfg: &Config,
    v: &Variant,
    d_in: usize,
    d_out: usize,
    steps: u64,
) -> anyhow::Result<TrainConfig> {
    Ok(TrainConfig {
        arch: Architecture::parse(&v.arch)?,
        transcoder: cfg.hook_out.is_some(),
        d_in,
        d_sae: cfg.latents,
        d_out,
        k: v.k,
        batch_size: cfg.batch_size,
        steps,
        lr: cfg.lr,
        lr_warmup_steps: cfg.lr_warmup_steps,
        lr_decay_steps: (steps as f64 * cfg.lr_decay_fraction) as u64,
        sparsity_coefficient: v.coefficient,
        sparsity_warmup_steps: (steps as f64 * cfg.sparsity_warmup_fraction) as u64,
        dead_tokens: cfg.dead_tokens,
        seed: cfg.seed,
        bf16_products: cfg.bf16_products,
        ..Default::default()
    })
}

/// Everything the training loop carries from step to step: what a checkpoint holds.
struct LoopState {
    /// The next step to run.
    step: u64,
    /// Sequences (or shards) consumed from the source.
    position: usize,
    harvested: u64,
    exhausted: bool,
    s_in: f64,
    s_out: f64,
    mean_raw: Vec<f32>,
    curves: Vec<Vec<(u64, f64, f64, f64)>>,
    buffer: ShuffleBuffer,
    pending: Vec<f32>,
    trainers: Vec<Trainer>,
}

impl LoopState {
    /// Write `dir` whole: into `dir.tmp`, then swapped in for the previous checkpoint.
    fn save(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        let tmp = dir.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let state = serde_json::json!({
            "step": self.step,
            "position": self.position,
            "harvested": self.harvested,
            "exhausted": self.exhausted,
            "s_in": self.s_in,
            "s_out": self.s_out,
            "rng": self.buffer.rng_state(),
            "curves": self.curves,
            "saes": self.trainers.len(),
        });
        interplab_sae::io::write_shaped(
            &tmp.join("store.safetensors"),
            &[
                (
                    "buffer".into(),
                    vec![self.buffer.rows().len()],
                    self.buffer.rows(),
                ),
                ("pending".into(), vec![self.pending.len()], &self.pending),
                ("mean_raw".into(), vec![self.mean_raw.len()], &self.mean_raw),
            ],
            &[("state", state.to_string())],
        )?;
        for (i, t) in self.trainers.iter().enumerate() {
            t.save_checkpoint(
                &tmp.join(format!("sae_{i}.safetensors")),
                &serde_json::Value::Null,
            )?;
        }
        let old = dir.with_extension("old");
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        if dir.exists() {
            std::fs::rename(dir, &old)?;
        }
        std::fs::rename(&tmp, dir)?;
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        Ok(())
    }

    fn load(dir: &std::path::Path, width: usize, capacity: usize) -> anyhow::Result<LoopState> {
        let (mut t, meta) = interplab_sae::io::read_shaped(&dir.join("store.safetensors"))?;
        let state: serde_json::Value = serde_json::from_str(
            meta.get("state")
                .with_context(|| format!("{}: not a sae-train checkpoint", dir.display()))?,
        )?;
        let mut take = |n: &str| -> anyhow::Result<Vec<f32>> {
            Ok(t.remove(n)
                .with_context(|| format!("{}: checkpoint lacks `{n}`", dir.display()))?
                .data)
        };
        let buffer = ShuffleBuffer::restore(
            width,
            capacity,
            take("buffer")?,
            state["rng"].as_u64().context("checkpoint: rng")?,
        )?;
        let pending = take("pending")?;
        let mean_raw = take("mean_raw")?;
        let n: usize = serde_json::from_value(state["saes"].clone())?;
        let trainers = (0..n)
            .map(|i| Ok(Trainer::load_checkpoint(&dir.join(format!("sae_{i}.safetensors")))?.0))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(LoopState {
            step: serde_json::from_value(state["step"].clone())?,
            position: serde_json::from_value(state["position"].clone())?,
            harvested: serde_json::from_value(state["harvested"].clone())?,
            exhausted: serde_json::from_value(state["exhausted"].clone())?,
            s_in: serde_json::from_value(state["s_in"].clone())?,
            s_out: serde_json::from_value(state["s_out"].clone())?,
            mean_raw,
            curves: serde_json::from_value(state["curves"].clone())?,
            buffer,
            pending,
            trainers,
        })
    }
}

/// The mean of columns `cols` of rows `width` wide, accumulated in f64.
fn column_mean(rows: &[f32], width: usize, cols: std::ops::Range<usize>) -> Vec<f32> {
    let n = (rows.len() / width).max(1);
    let mut s = vec![0.0f64; cols.len()];
    for r in rows.chunks_exact(width) {
        for (a, &v) in s.iter_mut().zip(&r[cols.clone()]) {
            *a += v as f64;
        }
    }
    s.iter().map(|v| (v / n as f64) as f32).collect()
}

fn scale_rows(rows: &mut [f32], width: usize, d_in: usize, a: f32, b: f32) {
    for r in rows.chunks_exact_mut(width) {
        let (x, y) = r.split_at_mut(d_in);
        x.iter_mut().for_each(|v| *v *= a);
        y.iter_mut().for_each(|v| *v *= b);
    }
}

/// The L0–FVU frontier (one point per SAE, one series per architecture). FVU without outliers
/// when every SAE has it (raw FVU can measure a few massive rows only: docs/sae.md §Results),
/// else FVU; the axis says which.
pub fn frontier(saes: &[Trained]) -> Figure {
    let robust = saes
        .iter()
        .all(|s| s.eval.metrics.fvu_without_outliers.is_some());
    let mut series: Vec<Series> = Vec::new();
    for s in saes {
        let m = &s.eval.metrics;
        let fvu = if robust {
            m.fvu_without_outliers.unwrap_or(m.fvu)
        } else {
            m.fvu
        };
        let p = (m.l0, fvu);
        match series.iter_mut().find(|x| x.name == s.variant.arch) {
            Some(x) => x.points.push(p),
            None => series.push(Series {
                name: s.variant.arch.clone(),
                points: vec![p],
                style: SeriesStyle::LineAndMarkers,
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Figure::Line(LinePlot {
        title: "L0–FVU frontier (held-out tokens)".into(),
        x_label: "L0 (active latents per token)".into(),
        y_label: if robust {
            "FVU (rows with norm ≤ 10× the median)".into()
        } else {
            "FVU".into()
        },
        log_x: true,
        series,
        ..Default::default()
    })
}

fn render(r: &Results, cfg: &Config) -> (Report, Vec<(String, Figure)>) {
    let mut rep = Report::new(format!("SAEs on {} at {}", cfg.model, r.hook));
    rep.paragraph(format!(
        "{} SAE(s) of {} latents trained on {} rows ({} steps of {}) of `{}`{}, normalisation {:?} \
         (scale {:.4} folded into the saved weights); evaluated on held-out documents of {}.",
        r.saes.len(),
        r.latents,
        r.tokens,
        r.steps,
        cfg.batch_size,
        r.hook,
        r.hook_out
            .as_ref()
            .map(|o| format!(" predicting `{o}` (transcoder)"))
            .unwrap_or_default(),
        cfg.normalise,
        r.scale_in,
        cfg.corpus
    ));
    let rows = r
        .saes
        .iter()
        .map(|s| {
            let m: &Metrics = &s.eval.metrics;
            let d = &s.eval.downstream;
            vec![
                s.name.clone(),
                format!("{:.2}", m.l0),
                format!("{:.4}", m.fvu),
                fmt_fvu_without_outliers(m),
                format!("{:.4}", m.explained_variance),
                format!("{:.3}", m.shrinkage),
                format!("{:.2}%", 100.0 * m.dead),
                format!("{:.2}%", 100.0 * m.dense),
                format!("{:.4}", d.ce_clean),
                format!("{:.4}", d.ce_sae),
                format!("{:.3}", d.ce_recovered_zero),
                format!("{:.3}", d.ce_recovered_mean),
                format!("{:.4}", d.kl_sae),
            ]
        })
        .collect();
    rep.table(
        &[
            "SAE",
            "L0",
            "FVU",
            "FVU w/o outliers",
            "EV",
            "shrinkage",
            "dead",
            "dense",
            "CE clean",
            "CE SAE",
            "CE rec. (zero)",
            "CE rec. (mean)",
            "KL",
        ],
        rows,
    );
    if let Some(s) = r.saes.first() {
        rep.paragraph(format!(
            "Reconstruction metrics over {} held-out tokens (dead: no activation on any of them; \
             dense: active on more than 10%; FVU w/o outliers: FVU over the rows whose norm is at \
             most 10× the median, with the number of rows left out); CE over {} held-out positions, zero ablation CE {:.3}, \
             mean ablation CE {:.3}.",
            s.eval.metrics.tokens,
            s.eval.downstream.tokens,
            s.eval.downstream.ce_zero_ablation,
            s.eval.downstream.ce_mean_ablation
        ));
    }
    let mut figs = Vec::new();
    let f = frontier(&r.saes);
    rep.figure("Each SAE's L0 and FVU on held-out tokens.", &f);
    figs.push(("frontier".to_string(), f));
    let curves = Figure::Line(LinePlot {
        title: "Training FVU (per batch, normalised activations)".into(),
        x_label: "step".into(),
        y_label: "FVU".into(),
        log_y: true,
        series: r
            .saes
            .iter()
            .map(|s| Series {
                name: s.name.clone(),
                points: s
                    .curve
                    .iter()
                    .map(|c| (c.0 as f64, c.3.max(1e-6)))
                    .collect(),
                style: SeriesStyle::Line,
            })
            .collect(),
        ..Default::default()
    });
    rep.figure("FVU of each training batch before its update.", &curves);
    figs.push(("training".to_string(), curves));
    if let Some(s) = r.saes.first() {
        let m = &s.eval.metrics;
        let density = Figure::Line(LinePlot {
            title: format!("{}: latent firing frequency", s.name),
            x_label: "log10(firing frequency)".into(),
            y_label: "latents".into(),
            series: vec![Series {
                name: s.name.clone(),
                points: m
                    .log_density_edges
                    .iter()
                    .zip(&m.log_density_counts)
                    .map(|(&e, &c)| (e, c as f64))
                    .collect(),
                style: SeriesStyle::LineAndMarkers,
            }],
            ..Default::default()
        });
        rep.figure(
            "Log-density histogram of the first SAE (dead latents not shown).",
            &density,
        );
        figs.push(("density".to_string(), density));
    }
    (rep, figs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_makes_one_sae_per_k_and_coefficient() {
        let v = Variant::grid(
            &["topk".into(), "relu".into()],
            &[16, 32, 64],
            &[1.0, 3.0, 10.0],
        );
        let names: Vec<String> = v.iter().map(Variant::name).collect();
        let want = [
            "topk-k16",
            "topk-k32",
            "topk-k64",
            "relu-l1-1",
            "relu-l1-3",
            "relu-l1-10",
        ];
        assert_eq!(names, want);
    }

    #[test]
    fn a_transcoder_reads_the_mlp_input_and_predicts_its_output() {
        let (i, o) = transcoder_hooks("blocks.8.hook_resid_post").unwrap();
        assert_eq!(i, "blocks.8.ln2.hook_normalized");
        assert_eq!(o, "blocks.8.hook_mlp_out");
        assert!(transcoder_hooks("ln_final.hook_normalized").is_err());
    }
}

/// `fvu_without_outliers` and how many rows it leaves out, for report tables.
pub fn fmt_fvu_without_outliers(m: &Metrics) -> String {
    match m.fvu_without_outliers {
        Some(v) => format!("{v:.4} ({} rows out)", m.outlier_rows),
        None => format!("— ({} rows out)", m.outlier_rows),
    }
}
