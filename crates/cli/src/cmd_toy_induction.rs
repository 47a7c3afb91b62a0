//! `interplab toy induction`: attention-only transformers of 1–4 layers trained from scratch,
//! watched for induction heads forming (RESEARCH.md §3).
//!
//! Training lives in `interplab_train::induction`; every checkpoint is analysed here with
//! `interplab_analysis` (head scores from the cached patterns, composition scores from the
//! weights), so the train crate keeps depending on core only.
//!
//! Run directory: `manifest.json`, `metrics.json` (per depth: loss per step and the analysis of
//! every checkpoint), `results.json` (per depth: the loss drop, the induction head and its
//! K-composition partner), figures, `report.html`, and per depth `L<n>/checkpoint.json` (the
//! whole training state, for `--resume`), `L<n>/analysis.json` and
//! `L<n>/weights/step_<step>.safetensors`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use interplab_analysis::composition::{
    composition_scores, random_baseline, CompositionKind, CompositionScores,
};
use interplab_analysis::heads::{
    repeated_random_tokens, scores_from_cache, HeadKind, HeadScoreOptions,
};
use interplab_analysis::stats::next_token_losses;
use interplab_core::model::{HookedTransformer, Input, NameFilter, RunOptions};
use interplab_report::{ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle};
use interplab_train::checkpoint;
use interplab_train::induction::{
    eval_batch, icl_score, steepest_drop, text_tokens, Data, DataConfig, InductionConfig, LossDrop,
    TrainState, Trainer,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::rundir::RunDir;

/// A head counts as an induction head when its induction score reaches this fraction of the
/// score a perfect induction head gets on the scoring sequences. A head spreading its attention
/// evenly over the prefix scores about 0.06 of it (measured at initialisation); a head that puts
/// most of its attention on the token after the earlier copy scores above one half.
pub const INDUCTION_FRACTION: f64 = 0.5;

/// A head counts as a previous-token head when its previous-token score exceeds this multiple
/// of the score of uniform attention over the prefix.
pub const PREV_TOKEN_MULTIPLE: f64 = 2.0;

/// Arguments of `interplab toy induction`.
#[derive(Args)]
pub struct InductionArgs {
    /// Depths to train, one model each (1 to 4 layers).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    layers: Vec<usize>,
    /// Training data: `repeated` (random tokens repeated) or `corpus` (byte-level text).
    #[arg(long, default_value = "repeated")]
    data: String,
    /// The text for `--data corpus`: `sonnets` (shipped) or a path to a text or JSONL file.
    #[arg(long, default_value = "sonnets")]
    corpus: String,
    #[arg(long, default_value_t = 48)]
    d_model: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Vocabulary size (text data needs 128: byte-level ASCII).
    #[arg(long, default_value_t = 128)]
    vocab: usize,
    /// Longest repeated chunk (repeated data).
    #[arg(long, default_value_t = 16)]
    seq_len: usize,
    /// Shortest repeated chunk: each training sequence draws its chunk length from
    /// MIN..=seq_len, so the distance to the earlier copy varies (a fixed period lets a
    /// positional head fake induction).
    #[arg(long, default_value_t = 8)]
    min_seq_len: usize,
    /// Copies of the chunk; the context is seq_len × repeats (repeated data).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Context length for text data.
    #[arg(long, default_value_t = 128)]
    n_ctx: usize,
    /// Normalisation before each attention layer and the unembedding: layernorm or none.
    #[arg(long, default_value = "layernorm")]
    norm: String,
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 1.0)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Analyse, snapshot the weights and save the training state every this many steps.
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Sequences in the evaluation batch (head scores, in-context learning).
    #[arg(long, default_value_t = 32)]
    eval_seqs: usize,
    /// Continue from the run directory's checkpoints (needs --out).
    #[arg(long, requires = "out")]
    resume: bool,
    /// Stop after this many steps as if interrupted (for testing --resume).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// Run directory (default runs/toy-induction-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Composition scores of one kind, `[l1][h1][l2][h2]` flattened.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Composition {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
}

/// The analysis of one checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointRecord {
    step: usize,
    /// Mean training loss over the steps since the previous checkpoint.
    train_loss: Option<f64>,
    /// Mean next-token loss on the evaluation batch.
    eval_loss: f64,
    /// Mean loss per position on the evaluation batch (`[p]` predicts token p + 1).
    loss_by_position: Vec<f64>,
    /// Loss at the late position minus loss at the early one.
    icl_score: f64,
    previous_token: Vec<Vec<f64>>,
    induction: Vec<Vec<f64>>,
    duplicate_token: Vec<Vec<f64>>,
    composition: Option<Composition>,
}

/// What a depth's run found.
#[derive(Debug, Clone, Serialize)]
struct DepthSummary {
    layers: usize,
    final_loss: f64,
    final_eval_loss: f64,
    final_icl_score: f64,
    loss_drop: Option<LossDrop>,
    /// Best head by induction score at the end: (layer, head, score).
    best_induction_head: (usize, usize, f64),
    /// Its score as a fraction of a perfect induction head's.
    best_induction_fraction: f64,
    formed_induction_head: bool,
    /// First checkpoint at which some head passed the threshold.
    induction_step: Option<usize>,
    /// The induction head's strongest K-composition partner: (layer, head, score).
    k_partner: Option<(usize, usize, f64)>,
    /// That partner's previous-token score, and as a fraction of a perfect one.
    k_partner_prev_token: Option<f64>,
    k_partner_prev_fraction: Option<f64>,
    /// Whether that partner is a previous-token head (over PREV_TOKEN_MULTIPLE × uniform).
    k_partner_is_previous_token_head: Option<bool>,
    wall_s: f64,
}

/// Scoring sequences and the scores a perfect head of each kind gets on them.
struct Scoring {
    sequences: Vec<Vec<u32>>,
    tokens: Tensor,
    /// For text data: held-out windows for the loss; else the scoring sequences serve.
    loss_sequences: Option<(Vec<Vec<u32>>, Tensor)>,
    perfect_induction: f64,
    perfect_prev: f64,
    /// Previous-token score of a head attending uniformly over its prefix.
    uniform_prev: f64,
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
fn uniform_prev_score(n: usize) -> f64 {
    (1..n).map(|q| 1.0 / (q + 1) as f64).sum::<f64>() / n as f64
}

/// The score a head attending only to its targets gets under TransformerLens' definition
/// (rows without a target still count in the denominator).
fn perfect_score(kind: HeadKind, seqs: &[Vec<u32>]) -> f64 {
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

fn scoring(cfg: &InductionConfig, data: &Data, n: usize) -> anyhow::Result<Scoring> {
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

/// Analyse the model at a checkpoint.
fn analyse(
    model: &HookedTransformer,
    sc: &Scoring,
    step: usize,
    train_loss: Option<f64>,
) -> anyhow::Result<CheckpointRecord> {
    let c = &model.cfg;
    let filter = NameFilter::new(&["blocks.*.attn.hook_pattern"]);
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

/// K-composition scores of a checkpoint in the analysis crate's type, for its look-ups.
fn k_scores(c: &Composition, n_layers: usize, n_heads: usize) -> CompositionScores {
    CompositionScores {
        kind: CompositionKind::K,
        n_layers,
        n_heads,
        scores: c.k.clone(),
    }
}

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

fn config_for(a: &InductionArgs, layers: usize) -> anyhow::Result<InductionConfig> {
    let (data, n_ctx) = match a.data.as_str() {
        "repeated" => (
            DataConfig::Repeated {
                seq_len: a.seq_len,
                min_seq_len: a.min_seq_len,
                repeats: a.repeats,
            },
            a.seq_len * a.repeats,
        ),
        "corpus" => (
            DataConfig::Text {
                source: a.corpus.clone(),
            },
            a.n_ctx,
        ),
        other => anyhow::bail!("unknown --data {other:?} (repeated, corpus)"),
    };
    let cfg = InductionConfig {
        n_layers: layers,
        d_model: a.d_model,
        n_heads: a.heads,
        d_vocab: a.vocab,
        n_ctx,
        layer_norm: match a.norm.as_str() {
            "layernorm" => true,
            "none" => false,
            other => anyhow::bail!("unknown --norm {other:?} (layernorm, none)"),
        },
        data,
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        weight_decay: a.weight_decay,
        beta1: 0.9,
        beta2: 0.999,
        init_std: None,
        seed: a.seed,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Train and write the run directory.
pub fn run(a: InductionArgs) -> anyhow::Result<()> {
    if a.layers.is_empty() || a.layers.iter().any(|&l| !(1..=4).contains(&l)) {
        anyhow::bail!("--layers takes depths from 1 to 4, e.g. --layers 1,2,3,4");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Without --threads: one thread. The model is too small to split; at 2 threads the
        // §3 run took 10× longer than at 1 on a busy 2-core machine (rayon oversubscription).
        std::env::set_var("RAYON_NUM_THREADS", "1");
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build_global();
    }
    let mut layers = a.layers.clone();
    layers.sort_unstable();
    layers.dedup();
    if a.steps == 0 {
        anyhow::bail!("--steps must be positive");
    }
    if a.eval_seqs == 0 {
        anyhow::bail!("--eval-seqs must be positive");
    }
    let configs: Vec<InductionConfig> = layers
        .iter()
        .map(|&l| config_for(&a, l))
        .collect::<anyhow::Result<_>>()?;
    let text = match a.data.as_str() {
        "corpus" => {
            let docs = interplab_core::corpus::load_corpus(&a.corpus)
                .with_context(|| format!("loading corpus {}", a.corpus))?;
            Some(text_tokens(&docs))
        }
        _ => None,
    };
    let data = Data::new(&configs[0], text)?;
    let dir = RunDir::create(a.out.as_deref(), "toy-induction")?;
    dir.write_json(
        "manifest.json",
        &json!({"tool": "interplab", "version": env!("CARGO_PKG_VERSION"), "command": "toy induction",
            "created_utc": crate::rundir::utc_stamp(), "configs": configs,
            "checkpoint_every": a.checkpoint_every, "eval_seqs": a.eval_seqs,
            "threads": std::env::var("RAYON_NUM_THREADS").ok()}),
    )?;
    let every = a.checkpoint_every.max(1);
    let mut runs: Vec<(InductionConfig, Vec<f64>, Vec<CheckpointRecord>, f64)> = Vec::new();
    let mut stopped = false;
    for cfg in &configs {
        let sub = RunDir::create(Some(&dir.path.join(format!("L{}", cfg.n_layers))), "")?;
        let wdir = RunDir::create(Some(&sub.path.join("weights")), "")?;
        let ckpt = sub.path.join("checkpoint.json");
        let analysis = sub.path.join("analysis.json");
        let sc = scoring(cfg, &data, a.eval_seqs)?;
        let (mut tr, mut records, prior_s) = if a.resume && ckpt.exists() {
            let st: TrainState = checkpoint::load(&ckpt)?;
            if st.cfg != *cfg {
                anyhow::bail!(
                    "{} was written with a different configuration",
                    ckpt.display()
                );
            }
            let (mut recs, secs): (Vec<CheckpointRecord>, f64) = checkpoint::load(&analysis)?;
            recs.retain(|r| r.step <= st.step);
            let tr = Trainer::from_state(st)?;
            eprintln!("L{}: resuming from step {}", cfg.n_layers, tr.step);
            (tr, recs, secs)
        } else {
            (Trainer::new(cfg.clone())?, Vec::new(), 0.0)
        };
        let snapshot = |tr: &Trainer| -> anyhow::Result<()> {
            let weights: HashMap<String, Tensor> = tr.model.weights.named()?.into_iter().collect();
            wdir.write_tensors(&format!("step_{:06}.safetensors", tr.step), &weights)?;
            Ok(())
        };
        if records.is_empty() {
            records.push(analyse(&tr.model, &sc, 0, None)?);
            snapshot(&tr)?;
        }
        let bar = ProgressBar::new(cfg.steps as u64);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "L{} {{bar:40}} {{pos}}/{{len}} steps  loss {{msg}}  {{elapsed}}",
                cfg.n_layers
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(tr.step as u64);
        let t0 = Instant::now();
        while tr.step < cfg.steps {
            let limit = a.stop_after.unwrap_or(usize::MAX);
            if tr.step >= limit {
                stopped = true;
                break;
            }
            let chunk = (every - tr.step % every).min(limit - tr.step);
            let from = tr.step;
            tr.train(&data, chunk, &mut |step, loss| {
                if step % 10 == 0 {
                    bar.set_position(step as u64);
                    bar.set_message(format!("{loss:.4}"));
                }
            })?;
            let recent = &tr.loss_history[from..];
            let mean = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
            records.push(analyse(&tr.model, &sc, tr.step, Some(mean))?);
            snapshot(&tr)?;
            let secs = prior_s + t0.elapsed().as_secs_f64();
            // The records first: a checkpoint never refers to records that were not saved.
            checkpoint::save(&analysis, &(&records, secs))?;
            checkpoint::save(&ckpt, &tr.state()?)?;
        }
        bar.finish_and_clear();
        let secs = prior_s + t0.elapsed().as_secs_f64();
        if stopped {
            eprintln!(
                "L{}: stopped at step {} (resume with --resume)",
                cfg.n_layers, tr.step
            );
            break;
        }
        runs.push((cfg.clone(), tr.loss_history.clone(), records, secs));
        let s = summarise(runs.last().unwrap(), &sc);
        println!(
            "L{}: final loss {:.3}, {} ({:.1} s)",
            s.layers,
            s.final_loss,
            describe(&s),
            s.wall_s
        );
    }
    if stopped {
        return Ok(());
    }
    let sc0 = scoring(&configs[0], &data, a.eval_seqs)?;
    let summaries: Vec<DepthSummary> = runs.iter().map(|r| summarise(r, &sc0)).collect();
    write_outputs(&a, &dir, &runs, &summaries, &sc0)?;
    println!("wrote {}", dir.path.display());
    Ok(())
}

fn summarise(
    run: &(InductionConfig, Vec<f64>, Vec<CheckpointRecord>, f64),
    sc: &Scoring,
) -> DepthSummary {
    let (perfect_ind, perfect_prev) = (sc.perfect_induction, sc.perfect_prev);
    let (cfg, loss, recs, secs) = run;
    let last = recs.last().expect("at least the initial checkpoint");
    let best = best_head(&last.induction);
    let frac = best.2 / perfect_ind;
    let induction_step = recs
        .iter()
        .find(|r| best_head(&r.induction).2 / perfect_ind >= INDUCTION_FRACTION)
        .map(|r| r.step);
    let (nl, nh) = (cfg.n_layers, cfg.n_heads);
    let k_partner = match &last.composition {
        Some(c) if best.0 >= 1 => k_scores(c, nl, nh).strongest_partner(best.0, best.1),
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
        wall_s: *secs,
    }
}

/// One sentence on what a depth formed.
fn describe(s: &DepthSummary) -> String {
    let (l, h, score) = s.best_induction_head;
    if !s.formed_induction_head {
        return format!(
            "no induction head (best: L{l}H{h} with induction score {score:.2}, {:.0}% of a perfect head's)",
            100.0 * s.best_induction_fraction
        );
    }
    let mut t = format!(
        "induction head L{l}H{h} (score {score:.2}, {:.0}% of a perfect head's) from step {}",
        100.0 * s.best_induction_fraction,
        s.induction_step.unwrap_or(0)
    );
    if let (Some((pl, ph, ks)), Some(p), Some(pf), Some(is_prev)) = (
        s.k_partner,
        s.k_partner_prev_token,
        s.k_partner_prev_fraction,
        s.k_partner_is_previous_token_head,
    ) {
        t += &format!(
            "; its strongest K-composition partner is L{pl}H{ph} (K-composition {ks:.3}), {} with previous-token score {p:.2} ({:.0}% of a perfect head's)",
            if is_prev { "a previous-token head" } else { "not a previous-token head" },
            100.0 * pf
        );
    }
    t
}

fn head_labels(nl: usize, nh: usize) -> Vec<String> {
    (0..nl)
        .flat_map(|l| (0..nh).map(move |h| format!("{l}.{h}")))
        .collect()
}

fn write_outputs(
    a: &InductionArgs,
    dir: &RunDir,
    runs: &[(InductionConfig, Vec<f64>, Vec<CheckpointRecord>, f64)],
    summaries: &[DepthSummary],
    sc: &Scoring,
) -> anyhow::Result<()> {
    let metrics: serde_json::Map<String, serde_json::Value> = runs
        .iter()
        .map(|(c, loss, recs, _)| {
            (
                format!("L{}", c.n_layers),
                json!({"loss": loss, "checkpoints": recs}),
            )
        })
        .collect();
    dir.write_json("metrics.json", &serde_json::Value::Object(metrics))?;
    let d_head = a.d_model / a.heads;
    let baseline = random_baseline(a.d_model, d_head, 100, a.seed)?;
    let icl_pos = icl_score(&runs[0].2[0].loss_by_position).map(|(_, e, l)| (e, l));
    dir.write_json(
        "results.json",
        &json!({"depths": summaries, "perfect_induction_score": sc.perfect_induction,
            "perfect_previous_token_score": sc.perfect_prev, "induction_fraction_threshold": INDUCTION_FRACTION,
            "uniform_previous_token_score": sc.uniform_prev, "previous_token_multiple": PREV_TOKEN_MULTIPLE,
            "composition_random_baseline": baseline, "icl_positions": icl_pos}),
    )?;

    // Loss curves, smoothed, with each depth's steepest drop marked.
    let smooth = |v: &[f64], w: usize| -> Vec<(f64, f64)> {
        let stride = (v.len() / 400).max(1);
        (0..v.len())
            .step_by(stride)
            .map(|i| {
                let lo = i.saturating_sub(w - 1);
                let m = v[lo..=i].iter().sum::<f64>() / (i + 1 - lo) as f64;
                ((i + 1) as f64, m)
            })
            .collect()
    };
    let loss_fig = Figure::Line(LinePlot {
        title: "training loss (20-step moving average); dashed: steepest drop".into(),
        x_label: "step".into(),
        y_label: "loss (nats)".into(),
        series: runs
            .iter()
            .map(|(c, loss, _, _)| Series {
                name: format!(
                    "{} layer{}",
                    c.n_layers,
                    if c.n_layers > 1 { "s" } else { "" }
                ),
                points: smooth(loss, 20),
                style: SeriesStyle::Line,
            })
            .collect(),
        vlines: summaries
            .iter()
            .filter_map(|s| {
                s.loss_drop.map(|d| {
                    (
                        (d.start + d.end) as f64 / 2.0,
                        format!("L{} drop", s.layers),
                    )
                })
            })
            .collect(),
        ..Default::default()
    });
    let icl_fig = Figure::Line(LinePlot {
        title: "in-context-learning score (late − early token loss)".into(),
        x_label: "step".into(),
        y_label: "ICL score (nats)".into(),
        series: runs
            .iter()
            .map(|(c, _, recs, _)| Series {
                name: format!(
                    "{} layer{}",
                    c.n_layers,
                    if c.n_layers > 1 { "s" } else { "" }
                ),
                points: recs.iter().map(|r| (r.step as f64, r.icl_score)).collect(),
                style: SeriesStyle::LineAndMarkers,
            })
            .collect(),
        hlines: vec![(0.0, "0".into())],
        ..Default::default()
    });
    // Head scores over checkpoints: one row per head, one column per checkpoint.
    let over_time = |recs: &[CheckpointRecord], nl: usize, nh: usize, prev: bool, title: String| {
        let stride = recs.len().div_ceil(40).max(1);
        let cols: Vec<&CheckpointRecord> = recs.iter().step_by(stride).collect();
        Figure::Heatmap(Heatmap {
            title,
            x_label: "step".into(),
            y_label: "head".into(),
            x_ticks: cols.iter().map(|r| r.step.to_string()).collect(),
            y_ticks: head_labels(nl, nh),
            values: (0..nl)
                .flat_map(|l| (0..nh).map(move |h| (l, h)))
                .map(|(l, h)| {
                    cols.iter()
                        .map(|r| {
                            if prev {
                                r.previous_token[l][h]
                            } else {
                                r.induction[l][h]
                            }
                        })
                        .collect()
                })
                .collect(),
            scale: ColorScale::Sequential,
            range: Some((0.0, 1.0)),
            colorbar_label: if prev {
                "previous-token score".into()
            } else {
                "induction score".into()
            },
        })
    };
    let heads_fig = Figure::Grid {
        title: "head scores over training (rows: layer.head)".into(),
        columns: 2,
        figures: runs
            .iter()
            .flat_map(|(c, _, recs, _)| {
                [
                    over_time(
                        recs,
                        c.n_layers,
                        c.n_heads,
                        true,
                        format!("{}: previous-token", depth_name(c.n_layers)),
                    ),
                    over_time(
                        recs,
                        c.n_layers,
                        c.n_heads,
                        false,
                        format!("{}: induction", depth_name(c.n_layers)),
                    ),
                ]
            })
            .collect(),
    };
    let comp: Vec<Figure> = runs
        .iter()
        .filter_map(|(c, _, recs, _)| {
            let (nl, nh) = (c.n_layers, c.n_heads);
            let k = k_scores(recs.last()?.composition.as_ref()?, nl, nh);
            let earlier = head_labels(nl - 1, nh);
            let later: Vec<String> = head_labels(nl, nh).split_off(nh);
            Some(Figure::Heatmap(Heatmap {
                title: format!("{nl} layers: K-composition at step {}", c.steps),
                x_label: "later head (reads with its key)".into(),
                y_label: "earlier head (writes with its OV)".into(),
                x_ticks: later,
                y_ticks: earlier,
                values: (0..nl - 1)
                    .flat_map(|l1| (0..nh).map(move |h1| (l1, h1)))
                    .map(|(l1, h1)| {
                        (1..nl)
                            .flat_map(|l2| (0..nh).map(move |h2| (l2, h2)))
                            .map(|(l2, h2)| if l2 > l1 { k.get(l1, h1, l2, h2) } else { 0.0 })
                            .collect()
                    })
                    .collect(),
                scale: ColorScale::Sequential,
                range: None,
                colorbar_label: "K-composition".into(),
            }))
        })
        .collect();
    let comp_fig = Figure::Grid {
        title: format!("K-composition (random {baseline:.3})"),
        columns: 2,
        figures: comp,
    };
    dir.write_figure("loss", &loss_fig)?;
    dir.write_figure("icl", &icl_fig)?;
    dir.write_figure("head_scores", &heads_fig)?;
    let has_comp = matches!(&comp_fig, Figure::Grid { figures, .. } if !figures.is_empty());
    if has_comp {
        dir.write_figure("k_composition", &comp_fig)?;
    }

    let mut report = Report::new("Induction heads in attention-only transformers");
    let c0 = &runs[0].0;
    report.key_values(&[
        ("depths", layers_list(runs)),
        (
            "model",
            format!(
                "d_model {}, {} heads, vocab {}, context {}, {}",
                c0.d_model,
                c0.n_heads,
                c0.d_vocab,
                c0.n_ctx,
                if c0.layer_norm { "LayerNorm" } else { "no norm" }
            ),
        ),
        ("data", describe_data(&c0.data)),
        (
            "training",
            format!(
                "{} steps, batch {}, AdamW lr {} wd {}, seed {}",
                c0.steps, c0.batch, c0.lr, c0.weight_decay, c0.seed
            ),
        ),
        (
            "head scores",
            format!(
                "TransformerLens definitions on {} repeated random-token sequences; a perfect induction head scores {:.3}, a perfect previous-token head {:.3}; a head counts as an induction head above {:.0}% of perfect, as a previous-token head above {PREV_TOKEN_MULTIPLE} × the {:.3} of uniform attention",
                a.eval_seqs, sc.perfect_induction, sc.perfect_prev, 100.0 * INDUCTION_FRACTION, sc.uniform_prev
            ),
        ),
    ]);
    for s in summaries {
        let drop = match s.loss_drop {
            Some(d) => format!(
                "The loss fell fastest between steps {} and {} (from {:.2} to {:.2}).",
                d.start, d.end, d.before, d.after
            ),
            None => "Too few steps to locate a drop.".into(),
        };
        report.paragraph(format!(
            "{} layer{}: {}. {drop} Final training loss {:.3}, ICL score {:.3} nats.",
            s.layers,
            if s.layers > 1 { "s" } else { "" },
            describe(s),
            s.final_loss,
            s.final_icl_score
        ));
    }
    report.table(
        &[
            "layers",
            "final loss",
            "ICL score",
            "steepest drop (steps)",
            "best induction head",
            "score (% of perfect)",
            "formed at step",
            "K-partner",
            "partner prev-token score",
            "wall s",
        ],
        summaries
            .iter()
            .map(|s| {
                vec![
                    s.layers.to_string(),
                    format!("{:.3}", s.final_loss),
                    format!("{:.3}", s.final_icl_score),
                    s.loss_drop
                        .map(|d| format!("{}–{}", d.start, d.end))
                        .unwrap_or_else(|| "–".into()),
                    format!("L{}H{}", s.best_induction_head.0, s.best_induction_head.1),
                    format!(
                        "{:.2} ({:.0}%)",
                        s.best_induction_head.2,
                        100.0 * s.best_induction_fraction
                    ),
                    s.induction_step
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "never".into()),
                    s.k_partner
                        .map(|(l, h, k)| format!("L{l}H{h} ({k:.3})"))
                        .unwrap_or_else(|| "–".into()),
                    s.k_partner_prev_token
                        .map(|p| format!("{p:.2}"))
                        .unwrap_or_else(|| "–".into()),
                    format!("{:.1}", s.wall_s),
                ]
            })
            .collect(),
    );
    report.figure(
        "training loss; the dashed lines mark each depth's steepest drop",
        &loss_fig,
    );
    let icl_words = match icl_pos {
        Some((e, l)) => format!(
            "in-context-learning score: loss of the prediction at position {l} minus that at position {e}"
        ),
        None => "in-context-learning score".into(),
    };
    report.figure(icl_words, &icl_fig);
    report.figure(
        "previous-token and induction scores of every head at every checkpoint",
        &heads_fig,
    );
    if has_comp {
        report.figure(
            "K-composition of every earlier head into every later head at the end of training",
            &comp_fig,
        );
    }
    dir.write_report(&report)?;
    Ok(())
}

fn depth_name(n: usize) -> String {
    format!("{n} layer{}", if n > 1 { "s" } else { "" })
}

fn layers_list(runs: &[(InductionConfig, Vec<f64>, Vec<CheckpointRecord>, f64)]) -> String {
    runs.iter()
        .map(|r| r.0.n_layers.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_data(d: &DataConfig) -> String {
    match d {
        DataConfig::Repeated {
            seq_len,
            min_seq_len,
            repeats,
        } => format!(
            "random tokens: a chunk of {min_seq_len}–{seq_len} tokens repeated to fill {} positions",
            seq_len * repeats
        ),
        DataConfig::Text { source } => format!("byte-level text of {source}"),
    }
}
