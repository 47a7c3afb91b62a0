//! `toy-induction`: attention-only transformers of 1–4 layers trained from scratch, watched for
//! induction heads forming (RESEARCH.md §3).
//!
//! Training lives in `interplab_train::induction`; every checkpoint is analysed here with
//! `interplab_analysis` (head scores from the cached patterns, composition scores from the
//! weights), so the train crate keeps depending on core only.
//!
//! Besides the [`Outcome`] (results, each depth's final weights as `weights_L<n>.safetensors`,
//! figures, report), a run keeps in its run directory `metrics.json` (per depth: loss per step
//! and the analysis of every checkpoint) and per depth `L<n>/checkpoint.json` (the whole
//! training state, for resuming), `L<n>/analysis.json` and `L<n>/weights/step_<step>.safetensors`.
//!
//! Threads: the model is too small to split, and on a busy 2-core machine 2 threads made the
//! §3 run 4–10× slower than 1 (rayon oversubscription). The numbers do not depend on the thread
//! count (checked: 1 and 2 threads give identical results and weights), so the CLI runs this
//! experiment on one thread unless `--threads` is given, and the library leaves it to the caller.

mod report;

use std::collections::BTreeMap;

use anyhow::Context as _;
use candle_core::{Device, Tensor};
use interplab_analysis::composition::{
    composition_scores, random_baseline, CompositionKind, CompositionScores,
};
use interplab_analysis::heads::{
    repeated_random_tokens, scores_from_cache, HeadKind, HeadScoreOptions,
};
use interplab_analysis::stats::next_token_losses;
use interplab_core::atomic::write_atomic;
use interplab_core::model::{HookName, HookedTransformer, Input, NameFilter, RunOptions};
use interplab_train::checkpoint;
use interplab_train::induction::{
    eval_batch, icl_score, steepest_drop, text_tokens, Data, DataConfig, InductionConfig, LossDrop,
    TrainState, Trainer,
};
use serde::{Deserialize, Serialize};

use crate::{Context, Existing, Experiment, Outcome, Problems, Progress, RunWriter};

/// A head counts as an induction head when its induction score reaches this fraction of the
/// score a perfect induction head gets on the scoring sequences. A head spreading its attention
/// evenly over the prefix scores about 0.06 of it (measured at initialisation); a head that puts
/// most of its attention on the token after the earlier copy scores above one half.
pub const INDUCTION_FRACTION: f64 = 0.5;

/// A head counts as a previous-token head when its previous-token score exceeds this multiple
/// of the score of uniform attention over the prefix.
pub const PREV_TOKEN_MULTIPLE: f64 = 2.0;

/// What the models train on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// Random tokens, a chunk repeated.
    #[default]
    Repeated,
    /// Byte-level text ([`Config::corpus`]).
    Corpus,
}

/// Normalisation before each attention layer and the unembedding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// LayerNorm.
    #[default]
    Layernorm,
    /// No normalisation.
    None,
}

/// The config of `toy-induction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Depths to train, one model each (1 to 4 layers).
    pub layers: Vec<usize>,
    /// Training data.
    pub data: DataKind,
    /// The text for `data = corpus`: `sonnets` (shipped) or a path to a text or JSONL file.
    pub corpus: String,
    /// Residual stream width.
    pub d_model: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Vocabulary size (text data needs 128: byte-level ASCII).
    pub vocab: usize,
    /// Longest repeated chunk (repeated data).
    pub seq_len: usize,
    /// Shortest repeated chunk: each training sequence draws its chunk length from
    /// `min_seq_len..=seq_len`, so the distance to the earlier copy varies (a fixed period lets
    /// a positional head fake induction).
    pub min_seq_len: usize,
    /// Copies of the chunk; the context is `seq_len × repeats` (repeated data).
    pub repeats: usize,
    /// Context length for text data.
    pub n_ctx: usize,
    /// Normalisation.
    pub norm: Norm,
    /// Training steps per depth.
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW (decoupled) weight decay.
    pub weight_decay: f64,
    /// Seed of initialisation and data.
    pub seed: u64,
    /// Analyse, snapshot the weights and save the training state every this many steps.
    pub checkpoint_every: usize,
    /// Sequences in the evaluation batch (head scores, in-context learning).
    pub eval_seqs: usize,
    /// Stop after this many steps of a depth as if interrupted (for testing resume): the run
    /// then ends with a [`Stopped`] error and its checkpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_after: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            layers: vec![1, 2],
            data: DataKind::Repeated,
            corpus: "sonnets".into(),
            d_model: 48,
            heads: 4,
            vocab: 128,
            seq_len: 16,
            min_seq_len: 8,
            repeats: 3,
            n_ctx: 128,
            norm: Norm::Layernorm,
            steps: 2000,
            batch: 32,
            lr: 1e-3,
            weight_decay: 1.0,
            seed: 0,
            checkpoint_every: 50,
            eval_seqs: 32,
            stop_after: None,
        }
    }
}

impl Config {
    /// The sorted, distinct depths.
    pub fn depths(&self) -> Vec<usize> {
        let mut layers = self.layers.clone();
        layers.sort_unstable();
        layers.dedup();
        layers
    }

    /// The trainer's config for a model of `layers` layers.
    pub fn depth(&self, layers: usize) -> InductionConfig {
        let (data, n_ctx) = match self.data {
            DataKind::Repeated => (
                DataConfig::Repeated {
                    seq_len: self.seq_len,
                    min_seq_len: self.min_seq_len,
                    repeats: self.repeats,
                },
                self.seq_len * self.repeats,
            ),
            DataKind::Corpus => (
                DataConfig::Text {
                    source: self.corpus.clone(),
                },
                self.n_ctx,
            ),
        };
        InductionConfig {
            n_layers: layers,
            d_model: self.d_model,
            n_heads: self.heads,
            d_vocab: self.vocab,
            n_ctx,
            layer_norm: self.norm == Norm::Layernorm,
            data,
            steps: self.steps,
            batch: self.batch,
            lr: self.lr,
            weight_decay: self.weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            init_std: None,
            seed: self.seed,
        }
    }
}

/// A run stopped early by [`Config::stop_after`]; its checkpoints are in the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// The depth that was training.
    pub layers: usize,
    /// The step it stopped at.
    pub step: usize,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "L{}: stopped at step {} (resume with --resume)",
            self.layers, self.step
        )
    }
}

impl std::error::Error for Stopped {}

/// Composition scores of one kind, `[l1][h1][l2][h2]` flattened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Composition {
    /// Q-composition.
    pub q: Vec<f64>,
    /// K-composition.
    pub k: Vec<f64>,
    /// V-composition.
    pub v: Vec<f64>,
}

impl Composition {
    /// The K-composition scores in the analysis crate's type, for its look-ups.
    pub fn k_scores(&self, n_layers: usize, n_heads: usize) -> CompositionScores {
        CompositionScores {
            kind: CompositionKind::K,
            n_layers,
            n_heads,
            scores: self.k.clone(),
        }
    }
}

/// The analysis of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Training steps done.
    pub step: usize,
    /// Mean training loss over the steps since the previous checkpoint.
    pub train_loss: Option<f64>,
    /// Mean next-token loss on the evaluation batch.
    pub eval_loss: f64,
    /// Mean loss per position on the evaluation batch (`[p]` predicts token p + 1).
    pub loss_by_position: Vec<f64>,
    /// Loss at the late position minus loss at the early one.
    pub icl_score: f64,
    /// Previous-token score per `[layer][head]`.
    pub previous_token: Vec<Vec<f64>>,
    /// Induction score per `[layer][head]`.
    pub induction: Vec<Vec<f64>>,
    /// Duplicate-token score per `[layer][head]`.
    pub duplicate_token: Vec<Vec<f64>>,
    /// Composition scores (models of two or more layers).
    pub composition: Option<Composition>,
}

/// What a depth's run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthSummary {
    /// Depth.
    pub layers: usize,
    /// Mean training loss of the last 50 steps.
    pub final_loss: f64,
    /// Evaluation loss at the end.
    pub final_eval_loss: f64,
    /// ICL score at the end.
    pub final_icl_score: f64,
    /// Where the loss fell fastest.
    pub loss_drop: Option<LossDrop>,
    /// Best head by induction score at the end: (layer, head, score).
    pub best_induction_head: (usize, usize, f64),
    /// Its score as a fraction of a perfect induction head's.
    pub best_induction_fraction: f64,
    /// Whether it passed [`INDUCTION_FRACTION`].
    pub formed_induction_head: bool,
    /// First checkpoint at which some head passed the threshold.
    pub induction_step: Option<usize>,
    /// The induction head's strongest K-composition partner: (layer, head, score).
    pub k_partner: Option<(usize, usize, f64)>,
    /// That partner's previous-token score.
    pub k_partner_prev_token: Option<f64>,
    /// ... as a fraction of a perfect previous-token head's.
    pub k_partner_prev_fraction: Option<f64>,
    /// Whether that partner is a previous-token head (over PREV_TOKEN_MULTIPLE × uniform).
    pub k_partner_is_previous_token_head: Option<bool>,
}

/// The results of `toy-induction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// One summary per depth, shallowest first.
    pub depths: Vec<DepthSummary>,
    /// The induction score of a perfect induction head on the scoring sequences.
    pub perfect_induction_score: f64,
    /// The previous-token score of a perfect previous-token head on them.
    pub perfect_previous_token_score: f64,
    /// [`INDUCTION_FRACTION`].
    pub induction_fraction_threshold: f64,
    /// The previous-token score of uniform attention over the prefix.
    pub uniform_previous_token_score: f64,
    /// [`PREV_TOKEN_MULTIPLE`].
    pub previous_token_multiple: f64,
    /// Mean K-composition of random matrices of these shapes.
    pub composition_random_baseline: f64,
    /// The (early, late) positions of the ICL score.
    pub icl_positions: Option<(usize, usize)>,
}

impl Experiment for Config {
    const NAME: &'static str = "toy-induction";
    const QUESTION: &'static str =
        "When do induction heads form, and which earlier head do they compose with?";
    type Results = Results;

    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(
            !self.layers.is_empty() && self.layers.iter().all(|l| (1..=4).contains(l)),
            format!(
                "layers takes depths from 1 to 4 (--layers 1,2,3,4), got {:?}",
                self.layers
            ),
        );
        p.positive("steps", self.steps)
            .positive("eval_seqs", self.eval_seqs)
            .positive("checkpoint_every", self.checkpoint_every);
        if let Err(e) = self.depth(1).validate() {
            p.push(e.to_string());
        }
        p.finish()
    }

    fn models(&self) -> Vec<String> {
        Vec::new()
    }

    fn quick() -> Self {
        Config {
            d_model: 16,
            batch: 4,
            seq_len: 6,
            min_seq_len: 4,
            steps: 40,
            checkpoint_every: 10,
            eval_seqs: 4,
            ..Default::default()
        }
    }

    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Scoring sequences and the scores a perfect head of each kind gets on them.
pub struct Scoring {
    /// Repeated random-token sequences the head scores are measured on.
    pub sequences: Vec<Vec<u32>>,
    tokens: Tensor,
    /// For text data: held-out windows for the loss; else the scoring sequences serve.
    loss_sequences: Option<(Vec<Vec<u32>>, Tensor)>,
    /// Induction score of a perfect induction head.
    pub perfect_induction: f64,
    /// Previous-token score of a perfect previous-token head.
    pub perfect_prev: f64,
    /// Previous-token score of a head attending uniformly over its prefix.
    pub uniform_prev: f64,
}

fn to_tensor(seqs: &[Vec<u32>]) -> anyhow::Result<Tensor> {
    let flat: Vec<u32> = seqs.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(
        flat,
        (seqs.len(), seqs[0].len()),
        &Device::Cpu,
    )?)
}

/// The previous-token score of a head attending uniformly over positions 0..=q at each q of
/// an `n`-token sequence: (1/n) Σ_{q=1}^{n-1} 1/(q+1).
pub fn uniform_prev_score(n: usize) -> f64 {
    (1..n).map(|q| 1.0 / (q + 1) as f64).sum::<f64>() / n as f64
}

/// The score a head attending only to its targets gets under TransformerLens' definition
/// (rows without a target still count in the denominator).
pub fn perfect_score(kind: HeadKind, seqs: &[Vec<u32>]) -> f64 {
    let mut total = 0.0;
    for s in seqs {
        let n = s.len();
        let d = kind.detection_pattern(s);
        let rows = (0..n)
            .filter(|q| d[q * n..(q + 1) * n].iter().any(|&x| x != 0.0))
            .count();
        total += rows as f64 / n as f64;
    }
    total / seqs.len() as f64
}

/// The scoring sequences of a run (`n` of them) and the reference scores on them.
pub fn scoring(cfg: &InductionConfig, data: &Data, n: usize) -> anyhow::Result<Scoring> {
    // Head scores use repeated random tokens: for repeated data, the training format with the
    // full chunk length; for text, distinct tokens drawn from the bytes the text contains (an
    // unseen byte's embedding is only weight-decayed noise), a chunk repeated twice, with the
    // analysis crate's generator.
    let sequences = match data {
        Data::Repeated {
            seq_len, repeats, ..
        } => {
            let rep = Data::Repeated {
                seq_len: *seq_len,
                min_seq_len: *seq_len,
                repeats: *repeats,
            };
            let c = InductionConfig {
                n_ctx: seq_len * repeats,
                ..cfg.clone()
            };
            eval_batch(&c, &rep, n)
        }
        Data::Text { train, .. } => {
            let mut seen = [false; 128];
            for &t in train {
                seen[t as usize % 128] = true;
            }
            let pool: Vec<u32> = (0..128u32).filter(|&t| seen[t as usize]).collect();
            let seq_len = (cfg.n_ctx / 2).min(pool.len());
            if seq_len < 2 {
                anyhow::bail!("the text holds too few distinct bytes to score heads");
            }
            repeated_random_tokens(&pool, seq_len, n, cfg.seed ^ 0x5C0E, None)?
        }
    };
    let len = sequences[0].len();
    let loss_sequences = match data {
        Data::Text { .. } => {
            let s = eval_batch(cfg, data, n);
            let t = to_tensor(&s)?;
            Some((s, t))
        }
        Data::Repeated { .. } => None,
    };
    Ok(Scoring {
        tokens: to_tensor(&sequences)?,
        perfect_induction: perfect_score(HeadKind::Induction, &sequences),
        perfect_prev: perfect_score(HeadKind::PreviousToken, &sequences),
        uniform_prev: uniform_prev_score(len),
        sequences,
        loss_sequences,
    })
}

/// Mean loss per position over sequences, from a forward on `tokens`.
fn loss_by_position(
    model: &HookedTransformer,
    logits: Option<Tensor>,
    seqs: &[Vec<u32>],
    tokens: &Tensor,
) -> anyhow::Result<Vec<f64>> {
    let logits = match logits {
        Some(l) => l,
        None => model.forward(tokens)?,
    };
    let mut sum = vec![0.0; seqs[0].len() - 1];
    for (b, s) in seqs.iter().enumerate() {
        let l = next_token_losses(&logits.narrow(0, b, 1)?, s)?;
        for (acc, x) in sum.iter_mut().zip(&l[0]) {
            *acc += x;
        }
    }
    Ok(sum.into_iter().map(|x| x / seqs.len() as f64).collect())
}

/// Analyse a model at a checkpoint: head scores, losses by position, composition scores.
pub fn analyse(
    model: &HookedTransformer,
    sc: &Scoring,
    step: usize,
    train_loss: Option<f64>,
) -> anyhow::Result<CheckpointRecord> {
    let c = &model.cfg;
    let filter = NameFilter::new(&[HookName::AttnPattern(0).every_layer()]);
    let (logits, cache) = model.run(
        Input::Tokens(&sc.tokens),
        &RunOptions::default(),
        None,
        Some(&filter),
    )?;
    let kinds = [
        HeadKind::PreviousToken,
        HeadKind::Induction,
        HeadKind::DuplicateToken,
    ];
    let scores = scores_from_cache(
        &cache,
        c.n_layers,
        c.n_heads,
        &sc.sequences,
        &kinds,
        HeadScoreOptions::default(),
    )?;
    let per_pos = match &sc.loss_sequences {
        Some((s, t)) => loss_by_position(model, None, s, t)?,
        None => loss_by_position(model, Some(logits), &sc.sequences, &sc.tokens)?,
    };
    let eval_loss = per_pos.iter().sum::<f64>() / per_pos.len() as f64;
    let (icl, _, _) = icl_score(&per_pos).context("context too short for an ICL score")?;
    let composition = if c.n_layers >= 2 {
        let get = |k| -> anyhow::Result<Vec<f64>> { Ok(composition_scores(model, k)?.scores) };
        Some(Composition {
            q: get(CompositionKind::Q)?,
            k: get(CompositionKind::K)?,
            v: get(CompositionKind::V)?,
        })
    } else {
        None
    };
    let mut it = scores.into_iter().map(|s| s.scores);
    Ok(CheckpointRecord {
        step,
        train_loss,
        eval_loss,
        loss_by_position: per_pos,
        icl_score: icl,
        previous_token: it.next().unwrap_or_default(),
        induction: it.next().unwrap_or_default(),
        duplicate_token: it.next().unwrap_or_default(),
        composition,
    })
}

/// The best head by score: (layer, head, score).
fn best_head(scores: &[Vec<f64>]) -> (usize, usize, f64) {
    let mut best = (0, 0, f64::MIN);
    for (l, row) in scores.iter().enumerate() {
        for (h, &s) in row.iter().enumerate() {
            if s > best.2 {
                best = (l, h, s);
            }
        }
    }
    best
}

/// One trained depth: its config, loss per step and checkpoint analyses.
pub struct DepthRun {
    /// The trainer's config.
    pub cfg: InductionConfig,
    /// Training loss per step.
    pub loss: Vec<f64>,
    /// The analysis of every checkpoint, step 0 first.
    pub records: Vec<CheckpointRecord>,
}

fn summarise(run: &DepthRun, sc: &Scoring) -> DepthSummary {
    let (perfect_ind, perfect_prev) = (sc.perfect_induction, sc.perfect_prev);
    let (cfg, loss, recs) = (&run.cfg, &run.loss, &run.records);
    let last = recs.last().expect("at least the initial checkpoint");
    let best = best_head(&last.induction);
    let frac = best.2 / perfect_ind;
    let induction_step = recs
        .iter()
        .find(|r| best_head(&r.induction).2 / perfect_ind >= INDUCTION_FRACTION)
        .map(|r| r.step);
    let (nl, nh) = (cfg.n_layers, cfg.n_heads);
    let k_partner = match &last.composition {
        Some(c) if best.0 >= 1 => c.k_scores(nl, nh).strongest_partner(best.0, best.1),
        _ => None,
    };
    let prev = k_partner.map(|(l, h, _)| last.previous_token[l][h]);
    let tail = loss.len().clamp(1, 50);
    DepthSummary {
        layers: nl,
        final_loss: loss[loss.len().saturating_sub(tail)..].iter().sum::<f64>() / tail as f64,
        final_eval_loss: last.eval_loss,
        final_icl_score: last.icl_score,
        loss_drop: steepest_drop(loss, (cfg.steps / 40).max(5)),
        best_induction_head: best,
        best_induction_fraction: frac,
        formed_induction_head: frac >= INDUCTION_FRACTION,
        induction_step,
        k_partner,
        k_partner_prev_token: prev,
        k_partner_prev_fraction: prev.map(|p| p / perfect_prev),
        k_partner_is_previous_token_head: prev.map(|p| p > PREV_TOKEN_MULTIPLE * sc.uniform_prev),
    }
}

impl DepthSummary {
    /// One sentence on what this depth formed.
    pub fn describe(&self) -> String {
        let (l, h, score) = self.best_induction_head;
        if !self.formed_induction_head {
            return format!(
                "no induction head (best: L{l}H{h} with induction score {score:.2}, {:.0}% of a perfect head's)",
                100.0 * self.best_induction_fraction
            );
        }
        let mut t = format!(
            "induction head L{l}H{h} (score {score:.2}, {:.0}% of a perfect head's) from step {}",
            100.0 * self.best_induction_fraction,
            self.induction_step.unwrap_or(0)
        );
        if let (Some((pl, ph, ks)), Some(p), Some(pf), Some(is_prev)) = (
            self.k_partner,
            self.k_partner_prev_token,
            self.k_partner_prev_fraction,
            self.k_partner_is_previous_token_head,
        ) {
            t += &format!(
                "; its strongest K-composition partner is L{pl}H{ph} (K-composition {ks:.3}), {} with previous-token score {p:.2} ({:.0}% of a perfect head's)",
                if is_prev { "a previous-token head" } else { "not a previous-token head" },
                100.0 * pf
            );
        }
        t
    }
}

/// Train one depth (resuming from its checkpoint when asked), analysing and saving at every
/// checkpoint. Returns the run and the final model, or [`Stopped`].
fn train_depth(
    ctx: &Context,
    cfg: &Config,
    icfg: &InductionConfig,
    data: &Data,
    sc: &Scoring,
    progress: &mut dyn Progress,
) -> anyhow::Result<(DepthRun, HookedTransformer)> {
    let wd = ctx.workdir()?;
    let n = icfg.n_layers;
    let sub = wd.path.join(format!("L{n}"));
    let weights = RunWriter::create(Some(&sub.join("weights")), "", Existing::Force)?;
    let (ckpt, analysis) = (sub.join("checkpoint.json"), sub.join("analysis.json"));
    let (mut tr, mut records) = if wd.resume && ckpt.exists() {
        let st: TrainState = checkpoint::load(&ckpt)?;
        if st.cfg != *icfg {
            anyhow::bail!(
                "{} was written with a different configuration",
                ckpt.display()
            );
        }
        let mut recs: Vec<CheckpointRecord> = checkpoint::load(&analysis)?;
        recs.retain(|r| r.step <= st.step);
        let tr = Trainer::from_state(st)?;
        progress.note(&format!("L{n}: resuming from step {}", tr.step));
        (tr, recs)
    } else {
        (Trainer::new(icfg.clone())?, Vec::new())
    };
    let snapshot = |tr: &Trainer| -> anyhow::Result<()> {
        let named: BTreeMap<String, Tensor> = tr.model.weights.named()?.into_iter().collect();
        weights.write_tensors(&format!("step_{:06}.safetensors", tr.step), &named)?;
        Ok(())
    };
    if records.is_empty() {
        records.push(analyse(&tr.model, sc, 0, None)?);
        snapshot(&tr)?;
    }
    progress.total(icfg.steps as u64, "steps");
    progress.position(tr.step as u64);
    let every = cfg.checkpoint_every.max(1);
    let limit = cfg.stop_after.unwrap_or(usize::MAX);
    while tr.step < icfg.steps {
        if tr.step >= limit {
            return Err(Stopped {
                layers: n,
                step: tr.step,
            }
            .into());
        }
        let chunk = (every - tr.step % every).min(limit - tr.step);
        let from = tr.step;
        tr.train(data, chunk, &mut |step, loss| {
            if step % 10 == 0 {
                progress.position(step as u64);
                progress.message(&format!("L{n} loss {loss:.4}"));
            }
        })?;
        let recent = &tr.loss_history[from..];
        let mean = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
        records.push(analyse(&tr.model, sc, tr.step, Some(mean))?);
        snapshot(&tr)?;
        // The records first: a checkpoint never refers to records that were not saved.
        checkpoint::save(&analysis, &records)?;
        checkpoint::save(&ckpt, &tr.state()?)?;
    }
    let run = DepthRun {
        cfg: icfg.clone(),
        loss: tr.loss_history.clone(),
        records,
    };
    Ok((run, tr.model))
}

/// Run `toy-induction`: train every depth, analyse it, and compose the outcome.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let wd = ctx.workdir()?;
    let configs: Vec<InductionConfig> = cfg.depths().into_iter().map(|l| cfg.depth(l)).collect();
    let text = match cfg.data {
        DataKind::Corpus => {
            let docs = interplab_core::corpus::load_corpus(&cfg.corpus)
                .with_context(|| format!("loading corpus {}", cfg.corpus))?;
            Some(text_tokens(&docs))
        }
        DataKind::Repeated => None,
    };
    let data = Data::new(&configs[0], text)?;
    let sc = scoring(&configs[0], &data, cfg.eval_seqs)?;
    let mut runs = Vec::new();
    let mut weights = Vec::new();
    for icfg in &configs {
        progress.phase(&format!("train L{}", icfg.n_layers));
        let (run, model) = train_depth(ctx, cfg, icfg, &data, &sc, progress)?;
        runs.push(run);
        weights.push(model.weights.named()?);
    }
    progress.phase("report");
    let metrics: serde_json::Map<String, serde_json::Value> = runs
        .iter()
        .map(|r| {
            let v = serde_json::json!({"loss": r.loss, "checkpoints": r.records});
            (format!("L{}", r.cfg.n_layers), v)
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&metrics)?;
    text.push('\n');
    write_atomic(&wd.path.join("metrics.json"), text.as_bytes())?;
    let d_head = cfg.d_model / cfg.heads;
    let results = Results {
        depths: runs.iter().map(|r| summarise(r, &sc)).collect(),
        perfect_induction_score: sc.perfect_induction,
        perfect_previous_token_score: sc.perfect_prev,
        induction_fraction_threshold: INDUCTION_FRACTION,
        uniform_previous_token_score: sc.uniform_prev,
        previous_token_multiple: PREV_TOKEN_MULTIPLE,
        composition_random_baseline: random_baseline(cfg.d_model, d_head, 100, cfg.seed)?,
        icl_positions: icl_score(&runs[0].records[0].loss_by_position).map(|(_, e, l)| (e, l)),
    };
    let mut outcome = report::outcome(cfg, &runs, results);
    for (run, named) in runs.iter().zip(weights) {
        let file = format!("weights_L{}.safetensors", run.cfg.n_layers);
        for (name, t) in named {
            outcome.tensor(&file, name, t);
        }
    }
    Ok(outcome)
}
