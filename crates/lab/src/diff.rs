//! `diff`: per-token loss of two models that share a tokenizer on the same corpus, the tokens
//! where they differ most, and the two models' head scores side by side.

use anyhow::{bail, Context as _};
use candle_core::{Device, Tensor};
use interplab_analysis::diff::{diff_models, DiffResult};
use interplab_analysis::heads::{
    head_scores, random_token_pool, repeated_random_tokens, HeadKind, HeadScoreOptions,
};
use interplab_core::corpus::load_corpus;
use interplab_report::{BarChart, Figure, Report};
use serde::{Deserialize, Serialize};

use crate::tokens::show_token;
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The config of `diff`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model A: alias, path, pip:… or hf:….
    pub model_a: String,
    /// Model B (same tokenizer).
    pub model_b: String,
    /// `sonnets` or `code` (both shipped) or a text or JSONL file.
    pub corpus: String,
    /// Documents to use at most.
    pub max_docs: usize,
    /// Tokens per document at most.
    pub max_tokens: usize,
    /// Tokens to list.
    pub top: usize,
    /// Heads to list per kind (previous-token, duplicate-token, induction) for each model,
    /// scored on [`HEAD_SEQUENCES`] repeated random sequences; 0 skips head scoring.
    pub top_heads: usize,
}

/// Repeated random sequences (BOS, 50 tokens, the same 50 again) that head scores average over.
pub const HEAD_SEQUENCES: usize = 4;

impl Default for Config {
    fn default() -> Self {
        Config {
            model_a: String::new(),
            model_b: String::new(),
            corpus: "sonnets".into(),
            max_docs: 32,
            max_tokens: 128,
            top: 15,
            top_heads: 5,
        }
    }
}

/// One of the tokens where the models differ most, for tables.
#[derive(Debug, Clone)]
pub struct TopToken {
    /// Up to ten tokens before it, as text on one line.
    pub context: String,
    /// The token, quoted.
    pub token: String,
    /// Model A's loss, nats.
    pub loss_a: f64,
    /// Model B's loss, nats.
    pub loss_b: f64,
}

/// The results of `diff`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Mean losses, their difference and every token's losses.
    #[serde(flatten)]
    pub diff: DiffResult,
    /// The `top` tokens of largest |B − A|, largest first (for the terminal; the values are
    /// in `tokens`).
    #[serde(skip)]
    pub top: Vec<TopToken>,
    /// Each model's best heads per kind, side by side.
    pub heads: Vec<HeadPair>,
}

/// Rank `rank` (0 = best) of one head kind in both models.
#[derive(Debug, Clone, Serialize)]
pub struct HeadPair {
    /// `previous_token_head`, `duplicate_token_head` or `induction_head`.
    pub kind: &'static str,
    /// 0-based rank.
    pub rank: usize,
    /// Model A's head at this rank: (layer, head, score).
    pub a: (usize, usize, f64),
    /// Model B's head at this rank.
    pub b: (usize, usize, f64),
}

impl Experiment for Config {
    const NAME: &'static str = "diff";
    const QUESTION: &'static str =
        "Where do two models sharing a tokenizer differ in per-token loss?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model_a.is_empty(), "model_a is empty")
            .check(!self.model_b.is_empty(), "model_b is empty")
            .check(!self.corpus.is_empty(), "corpus is empty")
            .positive("max_docs", self.max_docs)
            .check(
                self.max_tokens >= 2,
                format!(
                    "max_tokens must be at least 2 (one token has no next-token loss), got {}",
                    self.max_tokens
                ),
            );
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model_a.clone(), self.model_b.clone()]
    }
    fn quick() -> Self {
        // One model against itself: every difference is exactly zero, which a rerun must keep.
        Config {
            model_a: "smollm2-135m".into(),
            model_b: "smollm2-135m".into(),
            max_docs: 2,
            max_tokens: 32,
            top: 5,
            top_heads: 3,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `diff`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let (ma, mb) = (ctx.model_at(0)?, ctx.model_at(1)?);
    let texts =
        load_corpus(&cfg.corpus).with_context(|| format!("reading corpus {}", cfg.corpus))?;
    let bos = ma.tokenizer.add_bos_default();
    let cap = cfg
        .max_tokens
        .min(ma.model.cfg.n_ctx)
        .min(mb.model.cfg.n_ctx);
    let mut docs = Vec::new();
    for t in texts.iter().take(cfg.max_docs) {
        let mut ia = ma.tokenizer.encode(t, bos)?;
        let mut ib = mb.tokenizer.encode(t, bos)?;
        ia.truncate(cap);
        ib.truncate(cap);
        if ia != ib {
            bail!("the models do not share a tokenizer: they tokenise the corpus differently");
        }
        docs.push(ia);
    }
    // `diff_models` numbers only the documents with a next-token loss; drop the others here
    // so that its document indices are indices into `docs`.
    docs.retain(|d| d.len() >= 2);
    progress.phase("losses");
    let r = diff_models(&ma.model, &mb.model, &docs)?;
    let context = |doc: usize, pos: usize| -> String {
        let d = &docs[doc];
        let lo = pos.saturating_sub(10);
        ma.tokenizer
            .decode(&d[lo..pos])
            .unwrap_or_default()
            .replace('\n', " ")
    };
    let top: Vec<TopToken> = r
        .top_k(cfg.top)
        .into_iter()
        .map(|t| TopToken {
            context: context(t.doc, t.pos),
            token: show_token(ma, t.token),
            loss_a: t.loss_a,
            loss_b: t.loss_b,
        })
        .collect();
    let heads = if cfg.top_heads > 0 {
        progress.phase("head scores");
        head_pairs(ma, mb, cfg.top_heads)?
    } else {
        Vec::new()
    };
    let hist = histogram(&r);
    let mut report = Report::new(format!("Model diff: {} vs {}", cfg.model_a, cfg.model_b));
    report.key_values(&[
        ("corpus", cfg.corpus.clone()),
        (
            "documents / tokens",
            format!("{} / {}", r.n_docs, r.tokens.len()),
        ),
        ("mean loss A", format!("{:.4}", r.mean_loss_a)),
        ("mean loss B", format!("{:.4}", r.mean_loss_b)),
        (
            "B − A",
            format!(
                "{:+.4} ± {:.4} (standard error over documents)",
                r.mean_diff, r.stderr
            ),
        ),
    ]);
    report.figure("distribution of per-token differences", &hist);
    report.heading("Tokens where the models differ most").table(
        &["context", "token", "loss A", "loss B", "B − A"],
        top_rows(&top),
    );
    if !heads.is_empty() {
        report
            .heading("Head scores side by side")
            .paragraph(&format!(
                "TransformerLens' detector scores (mean attention on the detection pattern) on \
                 {HEAD_SEQUENCES} sequences of BOS, up to 50 random tokens and the same tokens \
                 again; heads are layer.head, scores in [0, 1]."
            ))
            .table(
                &["kind", "rank", "A head", "A score", "B head", "B score"],
                head_rows(&heads),
            );
    }
    let loss = |f: fn(&interplab_analysis::diff::TokenLoss) -> f64| {
        let v: Vec<f32> = r.tokens.iter().map(|t| f(t) as f32).collect();
        Tensor::from_vec(v, r.tokens.len(), &Device::Cpu)
    };
    let (loss_a, loss_b) = (loss(|t| t.loss_a)?, loss(|t| t.loss_b)?);
    let mut out = Outcome::new(
        Results {
            diff: r,
            top,
            heads,
        },
        report,
    );
    out.figure("loss_diff_histogram", hist);
    out.tensor("losses.safetensors", "loss_a", loss_a).tensor(
        "losses.safetensors",
        "loss_b",
        loss_b,
    );
    Ok(out)
}

/// Both models' `k` best heads of each kind, on the same repeated random sequences (drawn
/// from model A's tokenizer, which the models share).
/// The [`HEAD_SEQUENCES`] repeated random sequences (BOS if the model adds one, up to 50
/// tokens, the same again) that head scores are compared on, within `d_vocab` and `n_ctx`;
/// `None` when a tiny test model has too few tokens or too short a context.
pub(crate) fn head_sequences(
    m: &interplab_core::loader::LoadedModel,
    d_vocab: usize,
    n_ctx: usize,
) -> anyhow::Result<Option<Vec<Vec<u32>>>> {
    let pool = random_token_pool(&m.tokenizer, d_vocab, 50);
    let len = 50.min(pool.len()).min(n_ctx.saturating_sub(1) / 2);
    if len < 2 {
        return Ok(None);
    }
    let bos = m.tokenizer.encode("", true)?.first().copied();
    Ok(Some(repeated_random_tokens(
        &pool,
        len,
        HEAD_SEQUENCES,
        0,
        bos,
    )?))
}

fn head_pairs(
    ma: &interplab_core::loader::LoadedModel,
    mb: &interplab_core::loader::LoadedModel,
    k: usize,
) -> anyhow::Result<Vec<HeadPair>> {
    let d_vocab = ma.model.cfg.d_vocab.min(mb.model.cfg.d_vocab);
    let n_ctx = ma.model.cfg.n_ctx.min(mb.model.cfg.n_ctx);
    let Some(seqs) = head_sequences(ma, d_vocab, n_ctx)? else {
        return Ok(Vec::new());
    };
    let a = head_scores(
        &ma.model,
        &seqs,
        &HeadKind::ALL,
        HeadScoreOptions::default(),
    )?;
    let b = head_scores(
        &mb.model,
        &seqs,
        &HeadKind::ALL,
        HeadScoreOptions::default(),
    )?;
    let mut pairs = Vec::new();
    for (sa, sb) in a.iter().zip(&b) {
        for (rank, (ta, tb)) in sa.top_k(k).into_iter().zip(sb.top_k(k)).enumerate() {
            pairs.push(HeadPair {
                kind: sa.kind.name(),
                rank,
                a: ta,
                b: tb,
            });
        }
    }
    Ok(pairs)
}

/// The table rows of the head pairs: kind, rank, A head, A score, B head, B score.
pub fn head_rows(pairs: &[HeadPair]) -> Vec<Vec<String>> {
    pairs
        .iter()
        .map(|p| {
            vec![
                p.kind.to_string(),
                (p.rank + 1).to_string(),
                format!("{}.{}", p.a.0, p.a.1),
                format!("{:.3}", p.a.2),
                format!("{}.{}", p.b.0, p.b.1),
                format!("{:.3}", p.b.2),
            ]
        })
        .collect()
}

/// The table rows of the top tokens: context, token, loss A, loss B, B − A.
pub fn top_rows(top: &[TopToken]) -> Vec<Vec<String>> {
    top.iter()
        .map(|t| {
            vec![
                t.context.clone(),
                t.token.clone(),
                format!("{:.3}", t.loss_a),
                format!("{:.3}", t.loss_b),
                format!("{:+.3}", t.loss_b - t.loss_a),
            ]
        })
        .collect()
}

/// Histogram of per-token differences (30 bins).
fn histogram(r: &DiffResult) -> Figure {
    let diffs: Vec<f64> = r.tokens.iter().map(|t| t.diff()).collect();
    let (lo, hi) = diffs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    let bins = 30;
    let width = ((hi - lo) / bins as f64).max(1e-9);
    let mut counts = vec![0f64; bins];
    for x in &diffs {
        counts[(((x - lo) / width) as usize).min(bins - 1)] += 1.0;
    }
    Figure::Bar(BarChart {
        title: "per-token loss difference (B − A)".into(),
        x_label: "B − A (nats)".into(),
        y_label: "tokens".into(),
        labels: (0..bins)
            .map(|i| format!("{:.2}", lo + width * (i as f64 + 0.5)))
            .collect(),
        values: counts,
        ..Default::default()
    })
}
