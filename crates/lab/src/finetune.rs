//! `finetune`: full fine-tuning of a model on a corpus ([`interplab_train::finetune`]: fused
//! AdamW, checkpoints, bit-exact resume), then the model before against the model after:
//! per-token loss on held-out fine-tuning text and on general text, head-score grids,
//! attention-pattern distance per head, K-composition into the induction heads, and the
//! relative weight change of every head and MLP. The report answers the agenda's question:
//! were existing circuits reweighted, or were new ones built?
//!
//! Definitions:
//! - held-out text: every `held_out_every`-th document of the corpus (never trained on);
//!   general text: `general` (`builtin` = the licences, passages and code of
//!   `corpus/memorise.jsonl`, or a corpus name or file);
//! - a head *is* a previous-token / induction head when its score (TransformerLens' "mul"
//!   detector on repeated random tokens) is at least `head_threshold`; a *new* head is one that
//!   is after and was not before; a *reweighted* head is one that was before and whose score
//!   moved by at least 0.1;
//! - attention distance of a head: the total-variation distance ½·Σ_k |p_before − p_after| of
//!   its attention pattern, averaged over query positions of the held-out documents;
//! - weight change of a head: ‖ΔW‖_F / ‖W‖_F over its slices of W_Q, W_K, W_V (its KV group)
//!   and W_O together; of an MLP: over W_in, W_gate (if any) and W_out.

use anyhow::{bail, Context as _};
use candle_core::{DType, Tensor};
use interplab_analysis::composition::{composition_scores, CompositionKind};
use interplab_analysis::diff::diff_models;
use interplab_analysis::heads::{head_scores, HeadKind, HeadScoreOptions};
use interplab_core::corpus::load_corpus;
use interplab_core::model::{HookedTransformer, NameFilter};
use interplab_report::{ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle};
use interplab_train::finetune::{FinetuneConfig, Finetuner};
use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The config of `finetune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// The fine-tuning corpus: `sonnets`, `code` or a text or JSONL file.
    pub corpus: String,
    /// Every this-many-th document is held out.
    pub held_out_every: usize,
    /// General text for the side effect (see the module doc).
    pub general: String,
    /// Optimisation.
    pub train: FinetuneConfig,
    /// Save a checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Stop after this many steps as if interrupted (for testing resume).
    pub stop_after: Option<usize>,
    /// Tokens per document in the before/after comparison.
    pub eval_tokens: usize,
    /// Documents of each evaluation text at most.
    pub eval_docs: usize,
    /// Score at which a head counts as a previous-token or induction head.
    pub head_threshold: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            corpus: "sonnets".into(),
            held_out_every: 10,
            general: "builtin".into(),
            train: FinetuneConfig::default(),
            checkpoint_every: 50,
            stop_after: None,
            eval_tokens: 128,
            eval_docs: 16,
            head_threshold: 0.4,
        }
    }
}

/// A run stopped early by [`Config::stop_after`]; its checkpoint is in the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub step: usize,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped at step {} (resume with --resume)", self.step)
    }
}

impl std::error::Error for Stopped {}

/// Mean loss before and after, nats/token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LossPair {
    pub before: f64,
    pub after: f64,
    /// Standard error of the per-document difference.
    pub stderr: f64,
    pub tokens: usize,
}

/// One head kind's scores before and after.
#[derive(Debug, Clone, Serialize)]
pub struct HeadChange {
    /// `previous_token_head`, `duplicate_token_head`, `induction_head`.
    pub kind: &'static str,
    /// `[layer][head]`.
    pub before: Vec<Vec<f64>>,
    pub after: Vec<Vec<f64>>,
    /// Heads at or above the threshold after but not before: (layer, head, before, after).
    pub new_heads: Vec<(usize, usize, f64, f64)>,
    /// Heads at or above the threshold before whose score moved by at least 0.1.
    pub reweighted: Vec<(usize, usize, f64, f64)>,
    /// Heads at or above the threshold before and after.
    pub kept: usize,
    /// Heads at or above the threshold before but not after.
    pub lost: Vec<(usize, usize, f64, f64)>,
}

/// An induction head's strongest K-composition partner, before and after.
#[derive(Debug, Clone, Serialize)]
pub struct Composition {
    /// The induction head (after fine-tuning).
    pub head: (usize, usize),
    /// Its strongest earlier partner and the score, in each model.
    pub before: Option<(usize, usize, f64)>,
    pub after: Option<(usize, usize, f64)>,
}

/// The results of `finetune`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Training loss of every step.
    pub loss_history: Vec<f64>,
    /// Tokens in the training stream.
    pub train_tokens: usize,
    /// Held-out fine-tuning text and general text.
    pub held_out: LossPair,
    pub general: LossPair,
    pub heads: Vec<HeadChange>,
    /// `[layer][head]` attention total-variation distance.
    pub attention_distance: Vec<Vec<f64>>,
    /// `[layer][head]` relative weight change.
    pub head_weight_change: Vec<Vec<f64>>,
    /// Per layer, the MLP's relative weight change.
    pub mlp_weight_change: Vec<f64>,
    /// The three best induction heads after, with their K-composition partners.
    pub composition: Vec<Composition>,
    /// The answer, in one sentence.
    pub verdict: String,
}

impl Experiment for Config {
    const NAME: &'static str = "finetune";
    const QUESTION: &'static str =
        "When a model is fine-tuned, are its existing circuits reweighted or are new ones built?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model must be given")
            .check(
                self.held_out_every >= 2,
                "held_out_every must be at least 2",
            )
            .positive("checkpoint_every", self.checkpoint_every)
            .check(self.eval_tokens >= 2, "eval_tokens must be at least 2")
            .positive("eval_docs", self.eval_docs)
            .range("head_threshold", self.head_threshold, 0.0, 1.0);
        if let Err(e) = self.train.validate() {
            p.push(e.to_string());
        }
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            train: FinetuneConfig {
                steps: 4,
                batch: 2,
                seq_len: 32,
                warmup: 2,
                lr: 1e-4,
                ..Default::default()
            },
            checkpoint_every: 4,
            eval_tokens: 32,
            eval_docs: 2,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// The general texts named by `spec`.
fn general_texts(spec: &str) -> anyhow::Result<Vec<String>> {
    if spec == "builtin" {
        let texts = crate::memorise::parse_text_objects(
            crate::memorise::BUILTIN_TEXTS,
            "corpus/memorise.jsonl",
        )?;
        return Ok(texts.into_iter().map(|t| t.text).collect());
    }
    load_corpus(spec).with_context(|| format!("reading general text {spec}"))
}

/// Run `finetune`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let base = &m.model;
    let wd = ctx.workdir()?;
    let docs =
        load_corpus(&cfg.corpus).with_context(|| format!("reading corpus {}", cfg.corpus))?;
    let bos = m.tokenizer.add_bos_default();
    let sep = m.tokenizer.eos_id().or(m.tokenizer.bos_id());
    let mut stream = Vec::new();
    let mut held: Vec<Vec<u32>> = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let t = m.tokenizer.encode(d, bos)?;
        if i % cfg.held_out_every == cfg.held_out_every - 1 {
            held.push(t);
        } else {
            stream.extend_from_slice(&t);
            stream.extend(sep);
        }
    }
    if stream.len() < cfg.train.seq_len {
        bail!(
            "the training part of {} has {} tokens, fewer than one sequence of {}",
            cfg.corpus,
            stream.len(),
            cfg.train.seq_len
        );
    }
    let ckpt = wd.path.join("checkpoint.safetensors");
    let mut tuner = if wd.resume && ckpt.exists() {
        let t = Finetuner::resume(base, cfg.train.clone(), &ckpt)?;
        progress.note(&format!("resuming from step {}", t.step));
        t
    } else {
        Finetuner::new(base, cfg.train.clone())?
    };
    progress.phase("fine-tuning");
    progress.total(cfg.train.steps as u64, "steps");
    let limit = cfg.stop_after.unwrap_or(usize::MAX);
    while tuner.step < cfg.train.steps {
        if tuner.step >= limit {
            tuner.save(&ckpt)?;
            return Err(Stopped { step: tuner.step }.into());
        }
        let l = tuner.train_step(&stream)?;
        progress.position(tuner.step as u64);
        progress.message(&format!("loss {l:.4}"));
        if tuner.step % cfg.checkpoint_every == 0 || tuner.step == cfg.train.steps {
            tuner.save(&ckpt)?;
        }
    }
    let after = &tuner.model;
    progress.phase("losses before and after");
    let cut = |mut t: Vec<u32>| {
        t.truncate(cfg.eval_tokens.min(base.cfg.n_ctx));
        t
    };
    let held: Vec<Vec<u32>> = held.into_iter().take(cfg.eval_docs).map(cut).collect();
    let general: Vec<Vec<u32>> = general_texts(&cfg.general)?
        .iter()
        .take(cfg.eval_docs)
        .map(|d| m.tokenizer.encode(d, bos).map(cut))
        .collect::<Result<_, _>>()?;
    let pair = |docs: &[Vec<u32>]| -> anyhow::Result<LossPair> {
        let docs: Vec<Vec<u32>> = docs.iter().filter(|d| d.len() >= 2).cloned().collect();
        if docs.is_empty() {
            bail!("no evaluation document has two tokens");
        }
        let r = diff_models(base, after, &docs)?;
        Ok(LossPair {
            before: r.mean_loss_a,
            after: r.mean_loss_b,
            stderr: r.stderr,
            tokens: r.tokens.len(),
        })
    };
    let held_out = pair(&held)?;
    let general_loss = pair(&general)?;
    progress.phase("head scores");
    let heads = head_changes(m, base, after, cfg.head_threshold)?;
    progress.phase("attention distances");
    let attention_distance = attention_distances(base, after, &held)?;
    progress.phase("weight changes");
    let (head_weight_change, mlp_weight_change) = weight_changes(base, after)?;
    progress.phase("composition");
    let induction = heads.iter().find(|h| h.kind == "induction_head");
    let composition = match induction {
        Some(h) => induction_composition(base, after, &h.after)?,
        None => Vec::new(),
    };
    let verdict = verdict(&heads);
    let results = Results {
        loss_history: tuner.loss_history.clone(),
        train_tokens: stream.len(),
        held_out,
        general: general_loss,
        heads,
        attention_distance,
        head_weight_change,
        mlp_weight_change,
        composition,
        verdict,
    };
    Ok(outcome(cfg, results))
}

/// Head scores of both models on the same repeated random sequences.
fn head_changes(
    m: &interplab_core::loader::LoadedModel,
    before: &HookedTransformer,
    after: &HookedTransformer,
    threshold: f64,
) -> anyhow::Result<Vec<HeadChange>> {
    let Some(seqs) = crate::diff::head_sequences(m, before.cfg.d_vocab, before.cfg.n_ctx)? else {
        return Ok(Vec::new());
    };
    let a = head_scores(before, &seqs, &HeadKind::ALL, HeadScoreOptions::default())?;
    let b = head_scores(after, &seqs, &HeadKind::ALL, HeadScoreOptions::default())?;
    let mut out = Vec::new();
    for (sa, sb) in a.iter().zip(&b) {
        let (mut new_heads, mut reweighted, mut lost, mut kept) = (vec![], vec![], vec![], 0);
        for (l, (ra, rb)) in sa.scores.iter().zip(&sb.scores).enumerate() {
            for (h, (&x, &y)) in ra.iter().zip(rb).enumerate() {
                match (x >= threshold, y >= threshold) {
                    (false, true) => new_heads.push((l, h, x, y)),
                    (true, true) => {
                        kept += 1;
                        if (y - x).abs() >= 0.1 {
                            reweighted.push((l, h, x, y));
                        }
                    }
                    (true, false) => lost.push((l, h, x, y)),
                    (false, false) => {}
                }
            }
        }
        out.push(HeadChange {
            kind: sa.kind.name(),
            before: sa.scores.clone(),
            after: sb.scores.clone(),
            new_heads,
            reweighted,
            kept,
            lost,
        });
    }
    Ok(out)
}

/// `[layer][head]` mean total-variation distance between the two models' patterns.
fn attention_distances(
    before: &HookedTransformer,
    after: &HookedTransformer,
    docs: &[Vec<u32>],
) -> anyhow::Result<Vec<Vec<f64>>> {
    let (nl, nh) = (before.cfg.n_layers, before.cfg.n_heads);
    let names: Vec<String> = (0..nl)
        .map(|l| format!("blocks.{l}.attn.hook_pattern"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let filter = NameFilter::new(&refs);
    let mut sum = vec![vec![0.0f64; nh]; nl];
    let mut rows = 0usize;
    for d in docs.iter().filter(|d| d.len() >= 2) {
        let t = Tensor::new(d.as_slice(), before.device())?.unsqueeze(0)?;
        let (_, ca) = before.run_with_cache(&t, &filter)?;
        let (_, cb) = after.run_with_cache(&t, &filter)?;
        for (l, name) in names.iter().enumerate() {
            // [1, heads, q, k]
            let pa: Vec<Vec<Vec<f32>>> =
                ca.get(name)?.squeeze(0)?.to_dtype(DType::F32)?.to_vec3()?;
            let pb: Vec<Vec<Vec<f32>>> =
                cb.get(name)?.squeeze(0)?.to_dtype(DType::F32)?.to_vec3()?;
            for h in 0..nh {
                for (qa, qb) in pa[h].iter().zip(&pb[h]) {
                    let tv: f64 = qa
                        .iter()
                        .zip(qb)
                        .map(|(&x, &y)| (x as f64 - y as f64).abs())
                        .sum::<f64>();
                    sum[l][h] += tv / 2.0;
                }
            }
        }
        rows += d.len();
    }
    let rows = rows.max(1) as f64;
    Ok(sum
        .into_iter()
        .map(|r| r.into_iter().map(|s| s / rows).collect())
        .collect())
}

/// ‖ΔW‖_F / ‖W‖_F per head (its Q, K, V, O slices) and per MLP.
fn weight_changes(
    before: &HookedTransformer,
    after: &HookedTransformer,
) -> anyhow::Result<(Vec<Vec<f64>>, Vec<f64>)> {
    let c = &before.cfg;
    let (nl, nh, dh) = (c.n_layers, c.n_heads, c.d_head);
    let group = nh / c.n_kv_heads.max(1);
    let wa: std::collections::BTreeMap<String, Tensor> =
        before.weights.named()?.into_iter().collect();
    let wb: std::collections::BTreeMap<String, Tensor> =
        after.weights.named()?.into_iter().collect();
    let mat = |w: &std::collections::BTreeMap<String, Tensor>,
               n: &str|
     -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(w.get(n)
            .with_context(|| format!("no parameter {n}"))?
            .to_dtype(DType::F32)?
            .to_vec2()?)
    };
    // (Σ‖Δ‖², Σ‖W‖²) over a column range of a [rows, cols] matrix, or a row range.
    let cols = |a: &[Vec<f32>], b: &[Vec<f32>], r: std::ops::Range<usize>| {
        let (mut d, mut n) = (0.0f64, 0.0f64);
        for (ra, rb) in a.iter().zip(b) {
            for j in r.clone() {
                d += (rb[j] as f64 - ra[j] as f64).powi(2);
                n += (ra[j] as f64).powi(2);
            }
        }
        (d, n)
    };
    let rows = |a: &[Vec<f32>], b: &[Vec<f32>], r: std::ops::Range<usize>| {
        let (mut d, mut n) = (0.0f64, 0.0f64);
        for i in r {
            for (x, y) in a[i].iter().zip(&b[i]) {
                d += (*y as f64 - *x as f64).powi(2);
                n += (*x as f64).powi(2);
            }
        }
        (d, n)
    };
    let mut heads = vec![vec![0.0; nh]; nl];
    let mut mlps = vec![0.0; nl];
    for l in 0..nl {
        let p = format!("blocks.{l}");
        let q = mat(&wa, &format!("{p}.attn.W_Q"))?;
        let q2 = mat(&wb, &format!("{p}.attn.W_Q"))?;
        let k = mat(&wa, &format!("{p}.attn.W_K"))?;
        let k2 = mat(&wb, &format!("{p}.attn.W_K"))?;
        let v = mat(&wa, &format!("{p}.attn.W_V"))?;
        let v2 = mat(&wb, &format!("{p}.attn.W_V"))?;
        let o = mat(&wa, &format!("{p}.attn.W_O"))?;
        let o2 = mat(&wb, &format!("{p}.attn.W_O"))?;
        for (h, change) in heads[l].iter_mut().enumerate() {
            let g = h / group.max(1);
            let parts = [
                cols(&q, &q2, h * dh..(h + 1) * dh),
                cols(&k, &k2, g * dh..(g + 1) * dh),
                cols(&v, &v2, g * dh..(g + 1) * dh),
                rows(&o, &o2, h * dh..(h + 1) * dh),
            ];
            let (d, n): (f64, f64) = parts.iter().fold((0.0, 0.0), |s, x| (s.0 + x.0, s.1 + x.1));
            *change = (d / n.max(1e-30)).sqrt();
        }
        let (mut d, mut n) = (0.0, 0.0);
        for name in ["W_in", "W_gate", "W_out"] {
            let key = format!("{p}.mlp.{name}");
            if !wa.contains_key(&key) {
                continue;
            }
            let a = mat(&wa, &key)?;
            let b = mat(&wb, &key)?;
            let (x, y) = rows(&a, &b, 0..a.len());
            d += x;
            n += y;
        }
        mlps[l] = (d / f64::max(n, 1e-30)).sqrt();
    }
    Ok((heads, mlps))
}

/// For the three best induction heads after, the strongest K-composition partner in each model.
fn induction_composition(
    before: &HookedTransformer,
    after: &HookedTransformer,
    scores_after: &[Vec<f64>],
) -> anyhow::Result<Vec<Composition>> {
    let mut all: Vec<(usize, usize, f64)> = scores_after
        .iter()
        .enumerate()
        .flat_map(|(l, r)| r.iter().enumerate().map(move |(h, &s)| (l, h, s)))
        .filter(|&(l, _, _)| l > 0)
        .collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2));
    all.truncate(3);
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let ca = composition_scores(before, CompositionKind::K)?;
    let cb = composition_scores(after, CompositionKind::K)?;
    Ok(all
        .into_iter()
        .map(|(l, h, _)| Composition {
            head: (l, h),
            before: ca.strongest_partner(l, h),
            after: cb.strongest_partner(l, h),
        })
        .collect())
}

/// One sentence: new heads built, existing ones reweighted, or neither.
fn verdict(heads: &[HeadChange]) -> String {
    let pick = |k: &str| heads.iter().find(|h| h.kind == k);
    let mut parts = Vec::new();
    for (k, name) in [
        ("previous_token_head", "previous-token"),
        ("induction_head", "induction"),
    ] {
        if let Some(h) = pick(k) {
            parts.push(format!(
                "{name} heads: {} new, {} reweighted (|Δscore| ≥ 0.1), {} kept, {} lost",
                h.new_heads.len(),
                h.reweighted.len(),
                h.kept,
                h.lost.len()
            ));
        }
    }
    let new: usize = heads
        .iter()
        .filter(|h| h.kind != "duplicate_token_head")
        .map(|h| h.new_heads.len())
        .sum();
    let rew: usize = heads
        .iter()
        .filter(|h| h.kind != "duplicate_token_head")
        .map(|h| h.reweighted.len())
        .sum();
    let answer = match (new > 0, rew > 0) {
        (true, _) => "new circuits were built (heads that were not previous-token or induction heads became them)",
        (false, true) => "existing circuits were reweighted (the same heads' scores changed; no new ones)",
        (false, false) => "neither: the previous-token and induction heads stayed as they were",
    };
    format!("{answer}. {}.", parts.join("; "))
}

fn grid(title: &str, values: &[Vec<f64>], label: &str, scale: ColorScale) -> Figure {
    Figure::Heatmap(Heatmap {
        title: title.into(),
        x_label: "head".into(),
        y_label: "layer".into(),
        x_ticks: (0..values.first().map_or(0, Vec::len))
            .map(|h| h.to_string())
            .collect(),
        y_ticks: (0..values.len()).map(|l| l.to_string()).collect(),
        values: values.to_vec(),
        scale,
        range: None,
        colorbar_label: label.into(),
    })
}

fn outcome(cfg: &Config, r: Results) -> Outcome<Results> {
    let mut report = Report::new(format!("Fine-tuning {} on {}", cfg.model, cfg.corpus));
    report.paragraph(r.verdict.clone());
    report.key_values(&[
        (
            "training",
            format!(
                "{} steps × {} sequences × {} tokens, lr {} (warm-up {}), weight decay {}; {} tokens \
                 in the training stream",
                cfg.train.steps,
                cfg.train.batch,
                cfg.train.seq_len,
                cfg.train.lr,
                cfg.train.warmup,
                cfg.train.weight_decay,
                r.train_tokens
            ),
        ),
        (
            "held-out fine-tuning text (nats/token)",
            format!(
                "{:.4} → {:.4} (Δ ± se {:+.4} ± {:.4}, {} tokens)",
                r.held_out.before,
                r.held_out.after,
                r.held_out.after - r.held_out.before,
                r.held_out.stderr,
                r.held_out.tokens
            ),
        ),
        (
            "general text (nats/token)",
            format!(
                "{:.4} → {:.4} (Δ ± se {:+.4} ± {:.4}, {} tokens)",
                r.general.before,
                r.general.after,
                r.general.after - r.general.before,
                r.general.stderr,
                r.general.tokens
            ),
        ),
    ]);
    let mut figs: Vec<(String, Figure)> = vec![(
        "training_loss".into(),
        Figure::Line(LinePlot {
            title: "training loss".into(),
            x_label: "step".into(),
            y_label: "next-token loss (nats)".into(),
            series: vec![Series {
                name: "loss".into(),
                points: r
                    .loss_history
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| (i as f64 + 1.0, l))
                    .collect(),
                style: SeriesStyle::Line,
            }],
            ..Default::default()
        }),
    )];
    for h in &r.heads {
        if h.kind == "duplicate_token_head" {
            continue;
        }
        let delta: Vec<Vec<f64>> = h
            .after
            .iter()
            .zip(&h.before)
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y).collect())
            .collect();
        figs.push((
            format!("{}_before", h.kind),
            grid(
                &format!("{} score before", h.kind),
                &h.before,
                "score",
                ColorScale::Sequential,
            ),
        ));
        figs.push((
            format!("{}_change", h.kind),
            grid(
                &format!("{} score after − before", h.kind),
                &delta,
                "Δ score",
                ColorScale::Diverging,
            ),
        ));
        let rows: Vec<Vec<String>> = h
            .new_heads
            .iter()
            .map(|x| (x, "new"))
            .chain(h.reweighted.iter().map(|x| (x, "reweighted")))
            .chain(h.lost.iter().map(|x| (x, "lost")))
            .map(|((l, hd, b, a), what)| {
                vec![
                    format!("L{l}H{hd}"),
                    what.to_string(),
                    format!("{b:.3}"),
                    format!("{a:.3}"),
                ]
            })
            .collect();
        if !rows.is_empty() {
            report.heading(format!("{} heads that changed", h.kind));
            report.table(&["head", "change", "score before", "score after"], rows);
        }
    }
    if !r.composition.is_empty() {
        report.heading("K-composition into the best induction heads (after)");
        let show = |p: &Option<(usize, usize, f64)>| {
            p.map_or("–".into(), |(l, h, s)| format!("L{l}H{h} ({s:.3})"))
        };
        report.table(
            &["induction head", "strongest partner before", "after"],
            r.composition
                .iter()
                .map(|c| {
                    vec![
                        format!("L{}H{}", c.head.0, c.head.1),
                        show(&c.before),
                        show(&c.after),
                    ]
                })
                .collect(),
        );
    }
    figs.push((
        "attention_distance".into(),
        grid(
            "attention-pattern distance per head (total variation)",
            &r.attention_distance,
            "mean TV distance",
            ColorScale::Sequential,
        ),
    ));
    figs.push((
        "weight_change".into(),
        grid(
            "relative weight change per head ‖ΔW‖/‖W‖",
            &r.head_weight_change,
            "‖ΔW‖_F / ‖W‖_F",
            ColorScale::Sequential,
        ),
    ));
    figs.push((
        "mlp_weight_change".into(),
        Figure::Line(LinePlot {
            title: "relative weight change per MLP".into(),
            x_label: "layer".into(),
            y_label: "‖ΔW‖_F / ‖W‖_F".into(),
            series: vec![Series {
                name: "MLP".into(),
                points: r
                    .mlp_weight_change
                    .iter()
                    .enumerate()
                    .map(|(l, &v)| (l as f64, v))
                    .collect(),
                style: SeriesStyle::LineAndMarkers,
            }],
            ..Default::default()
        }),
    ));
    for (name, f) in &figs {
        report.figure(name.replace('_', " "), f);
    }
    let mut out = Outcome::new(r, report);
    for (name, f) in figs {
        out.figure(name, f);
    }
    out
}
