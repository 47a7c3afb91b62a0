//! `memorise`: prompt each model with the first `k` tokens of known texts, decode the next `m`
//! greedily, and score verbatim recall ([`interplab_analysis::memorise`]); with two models,
//! does the smaller one's recall predict the larger one's; and, for the sequence the last model
//! recalls most clearly, which layers, positions and heads carry the recall (activation
//! patching from a prefix whose first half is replaced).
//!
//! The built-in texts (`texts = "builtin"`): `corpus/memorise.jsonl` (licences, famous
//! public-domain passages, widely copied code; written by `scripts/corpus/make_memorise_texts.py`),
//! the 154 sonnets, and a *control* set the models cannot have seen: windows of Interplab's own
//! Rust sources, written after the models were trained. Each text gives up to `windows`
//! sequences, window `w` starting at token `w·(k + m)`; at most `max_per_kind` sequences of each
//! kind, taking every text's first window before any second one.
//!
//! Each model tokenises every text itself, so two models with different tokenizers are
//! compared per text window (the same `k` and `m` in each one's tokens); the comparison uses
//! every kind but the control.

use anyhow::{bail, Context as _};
use interplab_analysis::memorise::{
    compare, continuation_losses, score, Comparison, Recall, NEAR_VERBATIM,
};
use interplab_analysis::patching::{HeadSite, Metric, PatchingSetup, PositionSite, Sweep};
use interplab_analysis::probe::wilson_interval;
use interplab_analysis::stats::{argmax, correlation_interval, mean_stderr, spearman};
use interplab_core::corpus::{code_corpus, load_corpus};
use interplab_core::loader::LoadedModel;
use interplab_core::model::GenerateOptions;
use interplab_report::{
    BarChart, ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle,
};
use serde::{Deserialize, Serialize};

use crate::tokens::show_token;
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The shipped texts (see the module doc).
pub const BUILTIN_TEXTS: &str = include_str!("../../../corpus/memorise.jsonl");

/// The config of `memorise`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// One or two models (alias, path, pip:… or hf:…); with two, the first is the small one
    /// whose recall should predict the second's.
    pub models: Vec<String>,
    /// `builtin` (see the module doc) or a JSONL file of `{"id", "text", "kind"?}` objects.
    pub texts: String,
    /// Prefix tokens given to the model.
    pub k: usize,
    /// Continuation tokens decoded greedily and scored.
    pub m: usize,
    /// Windows of `k + m` tokens taken from each text at most.
    pub windows: usize,
    /// Sequences of each kind at most.
    pub max_per_kind: usize,
    /// Control windows (Interplab's own sources) for `builtin`; 0 leaves them out.
    pub control: usize,
    /// Sequences decoded together.
    pub batch: usize,
    /// Patch the last model's most clearly recalled sequence.
    pub patch: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            models: Vec::new(),
            texts: "builtin".into(),
            k: 32,
            m: 32,
            windows: 3,
            max_per_kind: 40,
            control: 16,
            batch: 16,
            patch: true,
        }
    }
}

/// One model's recall of one sequence.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRecall {
    /// The greedy continuation scored against the target.
    #[serde(flatten)]
    pub recall: Recall,
    /// Mean next-token loss of the true continuation after the prefix (nats/token).
    pub target_loss: f64,
    /// The greedy continuation, decoded.
    pub generated: String,
}

/// One text window and every model's recall of it.
#[derive(Debug, Clone, Serialize)]
pub struct Sequence {
    /// `text id#window`.
    pub id: String,
    /// `licence`, `passage`, `code`, `sonnet`, `control`, or the file's kind.
    pub kind: String,
    /// The prefix and the true continuation, decoded from the first model's tokens.
    pub prefix: String,
    pub target: String,
    /// One entry per model, in the config's order.
    pub models: Vec<ModelRecall>,
}

/// One model's recall over the sequences of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    pub model: String,
    pub kind: String,
    pub n: usize,
    /// Continuations reproduced exactly.
    pub exact: usize,
    /// Continuations with similarity ≥ [`NEAR_VERBATIM`].
    pub near_verbatim: usize,
    /// `near_verbatim / n` and its Wilson 95% interval.
    pub near_verbatim_rate: f64,
    pub near_verbatim_ci: (f64, f64),
    /// Mean similarity (1 − edit distance / m) and its standard error.
    pub similarity: (f64, f64),
    /// Mean longest common prefix, tokens.
    pub lcp: f64,
    /// Mean target loss, nats/token.
    pub target_loss: f64,
}

/// Where the last model's recall of one sequence lives.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryTrace {
    /// The sequence patched.
    pub id: String,
    /// The model patched.
    pub model: String,
    /// Prefix positions replaced in the corrupted run (by the same positions of a control
    /// sequence).
    pub replaced: (usize, usize),
    /// The next token the model recalls (the target's first) and the corrupted run's top token.
    pub answer: String,
    pub wrong: String,
    /// Raw logit differences `logit(answer) − logit(wrong)` of the clean and corrupted runs.
    pub clean_logit_diff: f64,
    pub corrupted_logit_diff: f64,
    /// `hook_resid_pre` patched per (layer, position), normalised logit difference.
    pub resid_pre: Sweep,
    /// `hook_z` patched per (layer, head), over all positions.
    pub heads: Sweep,
    /// The prefix's tokens, for the position axis.
    pub tokens: Vec<String>,
    /// The five heads of largest restored logit difference: (layer, head, value).
    pub top_heads: Vec<(usize, usize, f64)>,
}

/// The results of `memorise`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub k: usize,
    pub m: usize,
    /// The models, in the config's order.
    pub models: Vec<String>,
    pub sequences: Vec<Sequence>,
    /// Per model, per kind.
    pub summary: Vec<KindSummary>,
    /// With two models: the first's recall against the second's, over every sequence but the
    /// controls.
    pub comparison: Option<Comparison>,
    /// With two models: Spearman correlation of the two models' target losses (same
    /// sequences), a finer measure than similarity, and its Fisher-z interval.
    pub loss_spearman: Option<(f64, (f64, f64))>,
    /// The patching study, when one of the last model's recalls survives no perturbation.
    pub trace: Option<MemoryTrace>,
}

impl Experiment for Config {
    const NAME: &'static str = "memorise";
    const QUESTION: &'static str =
        "Which known texts does a model reproduce verbatim from a short prefix, does a smaller \
         model's recall predict a larger one's, and where in the network is the recall?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(
            matches!(self.models.len(), 1 | 2),
            format!("give one or two models, got {}", self.models.len()),
        )
        .check(!self.texts.is_empty(), "texts is empty")
        .positive("k", self.k)
        .positive("m", self.m)
        .positive("windows", self.windows)
        .positive("max_per_kind", self.max_per_kind)
        .positive("batch", self.batch);
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        self.models.clone()
    }
    fn quick() -> Self {
        // One model, a few sequences of each kind, short windows.
        Config {
            models: vec!["smollm2-135m".into()],
            k: 16,
            m: 8,
            windows: 1,
            max_per_kind: 1,
            control: 1,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// A text to cut windows from.
pub(crate) struct Text {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) text: String,
}

/// The built-in texts or a JSONL file's.
fn load_texts(cfg: &Config) -> anyhow::Result<Vec<Text>> {
    if cfg.texts == "builtin" {
        let mut out = parse_text_objects(BUILTIN_TEXTS, "corpus/memorise.jsonl")?;
        for (i, s) in load_corpus("sonnets")?.into_iter().enumerate() {
            out.push(Text {
                id: format!("sonnet-{}", i + 1),
                kind: "sonnet".into(),
                text: s,
            });
        }
        return Ok(out);
    }
    let raw = std::fs::read_to_string(&cfg.texts)
        .with_context(|| format!("reading texts {}", cfg.texts))?;
    parse_text_objects(&raw, &cfg.texts)
}

/// `{"id", "text", "kind"?}` per line.
pub(crate) fn parse_text_objects(raw: &str, name: &str) -> anyhow::Result<Vec<Text>> {
    let mut out = Vec::new();
    for (i, line) in raw.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{name} line {}: not JSON", i + 1))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let text =
            field("text").with_context(|| format!("{name} line {}: no \"text\" string", i + 1))?;
        out.push(Text {
            id: field("id").unwrap_or_else(|| format!("line-{}", i + 1)),
            kind: field("kind").unwrap_or_else(|| "text".into()),
            text,
        });
    }
    if out.is_empty() {
        bail!("{name} holds no texts");
    }
    Ok(out)
}

/// A window of one text, as each model tokenises it.
struct Window {
    id: String,
    kind: String,
    /// Per model: the prompt (BOS if the model adds one, then `k` tokens) and the `m` target
    /// tokens.
    per_model: Vec<(Vec<u32>, Vec<u32>)>,
}

/// Cut every text into windows for every model; a text with fewer than `k + m` tokens in any
/// model is an error (the control set only keeps long enough sources).
fn windows(cfg: &Config, models: &[&LoadedModel], texts: &[Text]) -> anyhow::Result<Vec<Window>> {
    let span = cfg.k + cfg.m;
    let tokens = |m: &LoadedModel, s: &str| m.tokenizer.encode(s, false);
    let mut per_text: Vec<Vec<Window>> = Vec::new();
    let mut short = Vec::new();
    for t in texts {
        let toks: Vec<Vec<u32>> = models
            .iter()
            .map(|m| tokens(m, &t.text))
            .collect::<Result<_, _>>()?;
        let n = toks.iter().map(Vec::len).min().unwrap_or(0);
        if n < span {
            short.push(format!("{:?} ({n})", t.id));
        } else {
            per_text.push(window_list(cfg, models, &t.id, &t.kind, &toks));
        }
    }
    if !short.is_empty() {
        bail!(
            "{} text(s) have fewer tokens than k + m = {} + {} = {span}: {}; shorten k or m, or \
             drop those texts",
            short.len(),
            cfg.k,
            cfg.m,
            short.join(", ")
        );
    }
    let control: Vec<Vec<Window>> = if cfg.texts == "builtin" && cfg.control > 0 {
        let mut c = Vec::new();
        for (i, doc) in code_corpus().iter().enumerate() {
            let toks: Vec<Vec<u32>> = models
                .iter()
                .map(|m| tokens(m, doc))
                .collect::<Result<_, _>>()?;
            if toks.iter().all(|t| t.len() >= span) {
                let mut w =
                    window_list(cfg, models, &format!("interplab-src-{i}"), "control", &toks);
                w.truncate(1);
                c.push(w);
            }
            if c.len() == cfg.control {
                break;
            }
        }
        c
    } else {
        Vec::new()
    };
    // Round robin over window index, then cap per kind.
    let mut out: Vec<Window> = Vec::new();
    let mut count = std::collections::BTreeMap::<String, usize>::new();
    let mut lists: Vec<std::collections::VecDeque<Window>> = per_text
        .into_iter()
        .chain(control)
        .map(Into::into)
        .collect();
    while lists.iter().any(|l| !l.is_empty()) {
        for l in lists.iter_mut() {
            if let Some(w) = l.pop_front() {
                let c = count.entry(w.kind.clone()).or_default();
                if *c < cfg.max_per_kind {
                    *c += 1;
                    out.push(w);
                }
            }
        }
    }
    Ok(out)
}

fn window_list(
    cfg: &Config,
    models: &[&LoadedModel],
    id: &str,
    kind: &str,
    toks: &[Vec<u32>],
) -> Vec<Window> {
    let span = cfg.k + cfg.m;
    let n = toks.iter().map(Vec::len).min().unwrap_or(0) / span;
    (0..n.min(cfg.windows))
        .map(|w| Window {
            id: format!("{id}#{w}"),
            kind: kind.into(),
            per_model: models
                .iter()
                .zip(toks)
                .map(|(m, t)| {
                    let s = &t[w * span..(w + 1) * span];
                    let mut prompt = Vec::with_capacity(cfg.k + 1);
                    if m.tokenizer.add_bos_default() {
                        prompt.extend(m.tokenizer.bos_id());
                    }
                    prompt.extend_from_slice(&s[..cfg.k]);
                    (prompt, s[cfg.k..].to_vec())
                })
                .collect(),
        })
        .collect()
}

/// Run `memorise`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let models: Vec<&LoadedModel> = (0..cfg.models.len())
        .map(|i| ctx.model_at(i))
        .collect::<anyhow::Result<_>>()?;
    for (name, m) in cfg.models.iter().zip(&models) {
        let need = cfg.k + cfg.m + 1;
        if need > m.model.cfg.n_ctx {
            bail!(
                "k + m + 1 = {need} tokens exceed {name}'s context of {}",
                m.model.cfg.n_ctx
            );
        }
    }
    progress.phase("texts");
    let texts = load_texts(cfg)?;
    let wins = windows(cfg, &models, &texts)?;
    let mut per_model: Vec<Vec<ModelRecall>> = Vec::new();
    for (mi, m) in models.iter().enumerate() {
        progress.phase(&format!("decode {}", cfg.models[mi]));
        progress.total(wins.len() as u64, "sequences");
        let opts = GenerateOptions {
            max_new_tokens: cfg.m,
            ..Default::default()
        };
        let mut recalls = Vec::with_capacity(wins.len());
        for (ci, chunk) in wins.chunks(cfg.batch).enumerate() {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|w| w.per_model[mi].0.clone()).collect();
            let full: Vec<Vec<u32>> = chunk
                .iter()
                .map(|w| [w.per_model[mi].0.clone(), w.per_model[mi].1.clone()].concat())
                .collect();
            let generated = m.model.generate_batch(&prompts, &opts, None)?;
            let losses = continuation_losses(&m.model, &full, prompts[0].len(), 4)?;
            for ((w, g), loss) in chunk.iter().zip(generated).zip(losses) {
                recalls.push(ModelRecall {
                    recall: score(&w.per_model[mi].1, &g),
                    target_loss: loss,
                    generated: m.tokenizer.decode(&g)?,
                });
            }
            progress.position(((ci + 1) * cfg.batch).min(wins.len()) as u64);
        }
        per_model.push(recalls);
    }
    let first = models[0];
    let sequences: Vec<Sequence> = wins
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let (p, t) = &w.per_model[0];
            let p = &p[p.len() - cfg.k..];
            Ok(Sequence {
                id: w.id.clone(),
                kind: w.kind.clone(),
                prefix: first.tokenizer.decode(p)?,
                target: first.tokenizer.decode(t)?,
                models: per_model.iter().map(|r| r[i].clone()).collect(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let summary = summarise(&cfg.models, &sequences);
    let not_control: Vec<&Sequence> = sequences.iter().filter(|s| s.kind != "control").collect();
    let (comparison, loss_spearman) = if models.len() == 2 {
        let a: Vec<Recall> = not_control.iter().map(|s| s.models[0].recall).collect();
        let b: Vec<Recall> = not_control.iter().map(|s| s.models[1].recall).collect();
        let la: Vec<f64> = not_control
            .iter()
            .map(|s| s.models[0].target_loss)
            .collect();
        let lb: Vec<f64> = not_control
            .iter()
            .map(|s| s.models[1].target_loss)
            .collect();
        let rho = spearman(&la, &lb);
        (
            Some(compare(&a, &b)),
            Some((rho, correlation_interval(rho, la.len()))),
        )
    } else {
        (None, None)
    };
    let trace = if cfg.patch {
        progress.phase("patching");
        trace_memory(cfg, models[models.len() - 1], &wins, &sequences)?
    } else {
        None
    };
    let results = Results {
        k: cfg.k,
        m: cfg.m,
        models: cfg.models.clone(),
        sequences,
        summary,
        comparison,
        loss_spearman,
        trace,
    };
    Ok(outcome(cfg, results))
}

/// Per model and kind, in order of first appearance.
fn summarise(models: &[String], seqs: &[Sequence]) -> Vec<KindSummary> {
    let mut kinds: Vec<String> = Vec::new();
    for s in seqs {
        if !kinds.contains(&s.kind) {
            kinds.push(s.kind.clone());
        }
    }
    let mut out = Vec::new();
    for (mi, model) in models.iter().enumerate() {
        for kind in &kinds {
            let r: Vec<&ModelRecall> = seqs
                .iter()
                .filter(|s| &s.kind == kind)
                .map(|s| &s.models[mi])
                .collect();
            let n = r.len();
            let near = r.iter().filter(|x| x.recall.near_verbatim).count();
            let sims: Vec<f64> = r.iter().map(|x| x.recall.similarity).collect();
            out.push(KindSummary {
                model: model.clone(),
                kind: kind.clone(),
                n,
                exact: r.iter().filter(|x| x.recall.exact).count(),
                near_verbatim: near,
                near_verbatim_rate: near as f64 / n as f64,
                near_verbatim_ci: wilson_interval(near, n),
                similarity: mean_stderr(&sims),
                lcp: r.iter().map(|x| x.recall.lcp as f64).sum::<f64>() / n as f64,
                target_loss: r.iter().map(|x| x.target_loss).sum::<f64>() / n as f64,
            });
        }
    }
    out
}

/// Candidates tried for the patching study (the last model's longest recalled prefixes).
const TRACE_CANDIDATES: usize = 8;

/// Patch the last model's clearest recall: clean = the prefix; corrupted = the prefix with its
/// first half (after BOS) replaced by a control sequence's tokens at the same positions (or,
/// without controls, the least recalled sequence's). Among up to [`TRACE_CANDIDATES`]
/// sequences whose first target token the model recalls and the corruption changes, the one of
/// largest clean − corrupted logit difference is patched.
fn trace_memory(
    cfg: &Config,
    m: &LoadedModel,
    wins: &[Window],
    seqs: &[Sequence],
) -> anyhow::Result<Option<MemoryTrace>> {
    let mi = cfg.models.len() - 1;
    let donor = seqs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == "control")
        .chain(seqs.iter().enumerate())
        .min_by(|a, b| {
            (a.1.kind != "control").cmp(&(b.1.kind != "control")).then(
                a.1.models[mi]
                    .recall
                    .similarity
                    .total_cmp(&b.1.models[mi].recall.similarity),
            )
        })
        .map(|(i, _)| i);
    let Some(donor) = donor else { return Ok(None) };
    let mut order: Vec<usize> = (0..seqs.len())
        .filter(|&i| seqs[i].kind != "control" && i != donor && seqs[i].models[mi].recall.lcp >= 1)
        .collect();
    order.sort_by(|&a, &b| {
        seqs[b].models[mi]
            .recall
            .lcp
            .cmp(&seqs[a].models[mi].recall.lcp)
    });
    order.truncate(TRACE_CANDIDATES);
    let bos = usize::from(m.tokenizer.add_bos_default());
    let replaced = (bos, bos + cfg.k / 2);
    // Choose with plain forwards (two per candidate); only the chosen pair is cached for
    // patching.
    let mut best: Option<(usize, Vec<u32>, u32, u32, f64)> = None;
    for i in order {
        let clean = wins[i].per_model[mi].0.clone();
        let answer = wins[i].per_model[mi].1[0];
        let mut corrupted = clean.clone();
        corrupted[replaced.0..replaced.1]
            .copy_from_slice(&wins[donor].per_model[mi].0[replaced.0..replaced.1]);
        let lc = last_logits(&m.model, &clean)?;
        let lx = last_logits(&m.model, &corrupted)?;
        // The corrupted run's top token is the contrast; a corruption that keeps the answer on
        // top does not break the recall, so the sequence is no use here.
        let wrong = argmax(&lx);
        if wrong == answer {
            continue;
        }
        let (a, w) = (answer as usize, wrong as usize);
        let gap = (lc[a] - lc[w]) as f64 - (lx[a] - lx[w]) as f64;
        if gap > 0.0 && best.as_ref().is_none_or(|b| gap > b.4) {
            best = Some((i, corrupted, answer, wrong, gap));
        }
    }
    let Some((i, corrupted, answer, wrong, _)) = best else {
        return Ok(None);
    };
    let setup = PatchingSetup::new(
        &m.model,
        &wins[i].per_model[mi].0,
        &corrupted,
        Metric::LogitDiff { answer, wrong },
    )?;
    let resid_pre = setup.sweep_positions(PositionSite::ResidPre)?;
    let heads = setup.sweep_heads(HeadSite::Z)?;
    let mut all: Vec<(usize, usize, f64)> = heads
        .values
        .iter()
        .enumerate()
        .flat_map(|(l, r)| r.iter().enumerate().map(move |(h, &v)| (l, h, v)))
        .collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2));
    all.truncate(5);
    Ok(Some(MemoryTrace {
        id: seqs[i].id.clone(),
        model: cfg.models[mi].clone(),
        replaced,
        answer: show_token(m, answer),
        wrong: show_token(m, wrong),
        clean_logit_diff: setup.clean_raw,
        corrupted_logit_diff: setup.corrupted_raw,
        resid_pre,
        heads,
        tokens: setup.clean.iter().map(|&t| show_token(m, t)).collect(),
        top_heads: all,
    }))
}

/// The last position's logits of one sequence.
fn last_logits(
    model: &interplab_core::model::HookedTransformer,
    ids: &[u32],
) -> anyhow::Result<Vec<f32>> {
    let n = ids.len();
    let t = candle_core::Tensor::from_vec(ids.to_vec(), (1, n), model.device())?;
    Ok(model
        .forward(&t)?
        .get(0)?
        .get(n - 1)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?)
}

/// Figures and report.
fn outcome(cfg: &Config, r: Results) -> Outcome<Results> {
    let mut report = Report::new(format!("Memorisation: {}", cfg.models.join(" vs ")));
    report.paragraph(format!(
        "Each model reads the first k = {} tokens of a known text and decodes the next m = {} \
         greedily. Exact: the continuation reproduced token for token. Near-verbatim: \
         similarity = 1 − edit distance / m ≥ {NEAR_VERBATIM} (at most one edit in ten tokens). \
         The control windows are Interplab's own sources, which no model can have seen: their \
         rate is the floor set by predictable text.",
        cfg.k, cfg.m
    ));
    let rows: Vec<Vec<String>> = r
        .summary
        .iter()
        .map(|s| {
            vec![
                s.model.clone(),
                s.kind.clone(),
                s.n.to_string(),
                s.exact.to_string(),
                format!(
                    "{:.2} [{:.2}, {:.2}]",
                    s.near_verbatim_rate, s.near_verbatim_ci.0, s.near_verbatim_ci.1
                ),
                format!("{:.3} ± {:.3}", s.similarity.0, s.similarity.1),
                format!("{:.1}", s.lcp),
                format!("{:.3}", s.target_loss),
            ]
        })
        .collect();
    report.heading("Recall by kind");
    report.table(
        &[
            "model",
            "kind",
            "sequences",
            "exact",
            "near-verbatim rate [95% CI]",
            "similarity ± se",
            "mean prefix match",
            "target loss (nats/token)",
        ],
        rows,
    );
    let mut out_figures: Vec<(String, Figure)> = Vec::new();
    out_figures.push((
        "recall_by_kind".into(),
        Figure::Bar(BarChart {
            title: "similarity of the greedy continuation by kind (mean ± 1 se)".into(),
            x_label: "model · kind".into(),
            y_label: "1 − edit distance / m".into(),
            labels: r
                .summary
                .iter()
                .map(|s| format!("{} · {}", short_name(&s.model), s.kind))
                .collect(),
            values: r.summary.iter().map(|s| s.similarity.0).collect(),
            errors: Some(
                r.summary
                    .iter()
                    .map(|s| {
                        if s.similarity.1.is_finite() {
                            s.similarity.1
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            ),
            horizontal: true,
            ..Default::default()
        }),
    ));
    if let Some(c) = &r.comparison {
        report.heading(format!("Does {} predict {}?", r.models[0], r.models[1]));
        report.key_values(&[
            ("sequences (controls excluded)", c.n.to_string()),
            (
                "Pearson r of similarities",
                format!(
                    "{:.3} [{:.3}, {:.3}]",
                    c.pearson, c.pearson_ci.0, c.pearson_ci.1
                ),
            ),
            (
                "Spearman ρ of similarities",
                format!(
                    "{:.3} [{:.3}, {:.3}]",
                    c.spearman, c.spearman_ci.0, c.spearman_ci.1
                ),
            ),
            (
                "Spearman ρ of target losses",
                r.loss_spearman
                    .map(|(rho, ci)| format!("{rho:.3} [{:.3}, {:.3}]", ci.0, ci.1))
                    .unwrap_or_default(),
            ),
            (
                "both / small only / large only / neither",
                format!(
                    "{} / {} / {} / {}",
                    c.both, c.small_only, c.large_only, c.neither
                ),
            ),
            (
                "precision P(large | small)",
                format!(
                    "{:.2} [{:.2}, {:.2}]",
                    c.precision, c.precision_ci.0, c.precision_ci.1
                ),
            ),
            (
                "recall P(small | large)",
                format!(
                    "{:.2} [{:.2}, {:.2}]",
                    c.recall, c.recall_ci.0, c.recall_ci.1
                ),
            ),
        ]);
        let points = |kind: Option<&str>| -> Vec<(f64, f64)> {
            r.sequences
                .iter()
                .filter(|s| kind.is_none_or(|k| s.kind == k))
                .map(|s| (s.models[0].recall.similarity, s.models[1].recall.similarity))
                .collect()
        };
        let mut kinds: Vec<&str> = Vec::new();
        for s in &r.sequences {
            if !kinds.contains(&s.kind.as_str()) {
                kinds.push(&s.kind);
            }
        }
        out_figures.push((
            "small_vs_large".into(),
            Figure::Line(LinePlot {
                title: "similarity of the greedy continuation, per sequence".into(),
                x_label: format!("{} similarity", short_name(&r.models[0])),
                y_label: format!("{} similarity", short_name(&r.models[1])),
                series: kinds
                    .iter()
                    .map(|k| Series {
                        name: k.to_string(),
                        points: points(Some(k)),
                        style: SeriesStyle::Markers,
                    })
                    .collect(),
                vlines: vec![(NEAR_VERBATIM, "near-verbatim".into())],
                hlines: vec![(NEAR_VERBATIM, "near-verbatim".into())],
                ..Default::default()
            }),
        ));
    }
    if let Some(t) = &r.trace {
        report.heading(format!("Where {} keeps {}", t.model, t.id));
        report.paragraph(format!(
            "Clean: the prefix; corrupted: prefix positions {}..{} replaced by a control \
             sequence's tokens. Metric: logit({}) − logit({}) at the last position (the first \
             recalled token against the corrupted run's choice), normalised to 0 = corrupted, \
             1 = clean. Clean {:.2}, corrupted {:.2}.",
            t.replaced.0,
            t.replaced.1,
            t.answer,
            t.wrong,
            t.clean_logit_diff,
            t.corrupted_logit_diff
        ));
        report.table(
            &["head", "restored (normalised logit difference)"],
            t.top_heads
                .iter()
                .map(|(l, h, v)| vec![format!("L{l}H{h}"), format!("{v:.3}")])
                .collect(),
        );
        out_figures.push((
            "trace_resid_pre".into(),
            Figure::Heatmap(Heatmap {
                title: format!("patching resid_pre, {}", t.id),
                x_label: "position".into(),
                y_label: "layer".into(),
                x_ticks: t.tokens.clone(),
                y_ticks: (0..t.resid_pre.values.len())
                    .map(|l| l.to_string())
                    .collect(),
                values: t.resid_pre.values.clone(),
                scale: ColorScale::Diverging,
                range: None,
                colorbar_label: "normalised logit difference".into(),
            }),
        ));
        out_figures.push((
            "trace_heads".into(),
            Figure::Heatmap(Heatmap {
                title: format!("patching each head's z, {}", t.id),
                x_label: "head".into(),
                y_label: "layer".into(),
                x_ticks: (0..t.heads.values.first().map_or(0, Vec::len))
                    .map(|h| h.to_string())
                    .collect(),
                y_ticks: (0..t.heads.values.len()).map(|l| l.to_string()).collect(),
                values: t.heads.values.clone(),
                scale: ColorScale::Diverging,
                range: None,
                colorbar_label: "normalised logit difference".into(),
            }),
        ));
    } else if cfg.patch {
        report.paragraph(
            "No patching study: no recalled sequence's first token was changed by the \
             perturbation of its prefix.",
        );
    }
    for (name, fig) in &out_figures {
        report.figure(name.replace('_', " "), fig);
    }
    report.heading("Sequences");
    let mut rows = Vec::new();
    for s in &r.sequences {
        for (mi, mr) in s.models.iter().enumerate() {
            rows.push(vec![
                s.id.clone(),
                s.kind.clone(),
                short_name(&r.models[mi]).to_string(),
                format!("{:.2}", mr.recall.similarity),
                mr.recall.lcp.to_string(),
                one_line(&s.target),
                one_line(&mr.generated),
            ]);
        }
    }
    report.table(
        &[
            "sequence",
            "kind",
            "model",
            "similarity",
            "prefix match",
            "target",
            "generated",
        ],
        rows,
    );
    let mut out = Outcome::new(r, report);
    for (name, fig) in out_figures {
        out.figure(name, fig);
    }
    out
}

fn short_name(model: &str) -> &str {
    model.rsplit('/').next().unwrap_or(model)
}

fn one_line(s: &str) -> String {
    s.replace('\n', "⏎")
}

/// Rows of the per-kind table, for the terminal.
pub fn summary_rows(r: &Results) -> Vec<Vec<String>> {
    r.summary
        .iter()
        .map(|s| {
            vec![
                short_name(&s.model).to_string(),
                s.kind.clone(),
                s.n.to_string(),
                s.exact.to_string(),
                format!(
                    "{:.2} [{:.2}, {:.2}]",
                    s.near_verbatim_rate, s.near_verbatim_ci.0, s.near_verbatim_ci.1
                ),
                format!("{:.3}", s.similarity.0),
            ]
        })
        .collect()
}
