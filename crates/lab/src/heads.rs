//! `heads`: previous-token, duplicate-token and induction scores for every head
//! (TransformerLens' head detector), on repeated random tokens or a given text.

use candle_core::{Device, Tensor};
use interplab_analysis::heads::{
    head_scores, random_token_pool, repeated_random_tokens, HeadKind, HeadScoreOptions, HeadScores,
};
use interplab_report::{ColorScale, Figure, Heatmap, Report};
use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The config of `heads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// Score on this text instead of repeated random tokens.
    pub text: Option<String>,
    /// Random tokens per half of each repeated sequence.
    pub seq_len: usize,
    /// Number of repeated random sequences.
    pub n_seq: usize,
    /// Seed of the random tokens.
    pub seed: u64,
    /// Ignore attention to the first position (BOS).
    pub exclude_bos: bool,
    /// Ignore attention from a position to itself.
    pub exclude_current_token: bool,
    /// Heads to list per score.
    pub top_k: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            text: None,
            seq_len: 50,
            n_seq: 4,
            seed: 0,
            exclude_bos: false,
            exclude_current_token: false,
            top_k: 10,
        }
    }
}

/// One kind's scores.
#[derive(Debug, Clone, Serialize)]
pub struct KindScores {
    /// `scores[layer][head]`.
    pub scores: Vec<Vec<f64>>,
    /// The `top_k` heads as (layer, head, score), best first.
    pub top: Vec<(usize, usize, f64)>,
}

/// The results of `heads`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Duplicate-token scores.
    pub duplicate_token_head: KindScores,
    /// Induction scores.
    pub induction_head: KindScores,
    /// Previous-token scores.
    pub previous_token_head: KindScores,
    /// The token sequences scored.
    pub sequences: Vec<Vec<u32>>,
}

impl Results {
    /// The scores of `kind`.
    pub fn of(&self, kind: HeadKind) -> &KindScores {
        match kind {
            HeadKind::PreviousToken => &self.previous_token_head,
            HeadKind::DuplicateToken => &self.duplicate_token_head,
            HeadKind::Induction => &self.induction_head,
        }
    }
}

impl Experiment for Config {
    const NAME: &'static str = "heads";
    const QUESTION: &'static str =
        "Which heads attend to the previous token, to earlier copies of the current token, or \
         to the token after an earlier copy (induction)?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model must be given")
            .positive("seq_len", self.seq_len)
            .positive("n_seq", self.n_seq)
            .positive("top_k", self.top_k)
            .check(
                self.text.as_deref().is_none_or(|t| !t.trim().is_empty()),
                "text is empty",
            );
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            seq_len: 12,
            n_seq: 2,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `heads`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let bos = if m.tokenizer.add_bos_default() {
        m.tokenizer.encode("", true)?.first().copied()
    } else {
        None
    };
    let (seqs, source) = match &cfg.text {
        Some(t) => {
            let ids = m.tokenizer.encode(t, bos.is_some())?;
            if ids.len() < 2 {
                anyhow::bail!("the text must have at least two tokens");
            }
            (vec![ids], "text".to_string())
        }
        None => {
            let pool = random_token_pool(&m.tokenizer, m.model.cfg.d_vocab, cfg.seq_len);
            let s = repeated_random_tokens(&pool, cfg.seq_len, cfg.n_seq, cfg.seed, bos)?;
            let what = format!(
                "{} repeated random sequences of {} tokens",
                cfg.n_seq, cfg.seq_len
            );
            (s, what)
        }
    };
    let opts = HeadScoreOptions {
        exclude_bos: cfg.exclude_bos,
        exclude_current_token: cfg.exclude_current_token,
    };
    progress.phase("score");
    let scores = head_scores(&m.model, &seqs, &HeadKind::ALL, opts)?;
    let mut report = Report::new(format!("Head detection: {}", cfg.model));
    report.paragraph(format!(
        "Scores on {source}. Definition: TransformerLens head_detector 'mul', score = Σ(A⊙D)/ΣA \
         per head, averaged over sequences (exclude_bos = {}, exclude_current_token = {}).",
        cfg.exclude_bos, cfg.exclude_current_token
    ));
    let mut figures = Vec::new();
    let mut tensors = Vec::new();
    for s in &scores {
        let fig = grid_figure(s);
        report
            .heading(s.kind.name())
            .figure(format!("{} score per head", s.kind.name()), &fig);
        report.table(
            &["rank", "head", "score"],
            s.top_k(cfg.top_k)
                .iter()
                .enumerate()
                .map(|(i, (l, h, v))| {
                    vec![(i + 1).to_string(), format!("{l}.{h}"), format!("{v:.4}")]
                })
                .collect(),
        );
        figures.push((s.kind.name(), fig));
        let flat: Vec<f32> = s.scores.iter().flatten().map(|&v| v as f32).collect();
        let (nl, nh) = (s.scores.len(), s.scores[0].len());
        let t = Tensor::from_vec(flat, (nl, nh), &Device::Cpu)?;
        tensors.push((s.kind.name(), t));
    }
    let kind = |k: HeadKind| -> KindScores {
        let s = scores
            .iter()
            .find(|s| s.kind == k)
            .expect("every kind scored");
        KindScores {
            scores: s.scores.clone(),
            top: s.top_k(cfg.top_k),
        }
    };
    let results = Results {
        duplicate_token_head: kind(HeadKind::DuplicateToken),
        induction_head: kind(HeadKind::Induction),
        previous_token_head: kind(HeadKind::PreviousToken),
        sequences: seqs,
    };
    let mut outcome = Outcome::new(results, report);
    for (name, fig) in figures {
        outcome.figure(name, fig);
    }
    for (name, t) in tensors {
        outcome.tensor("scores.safetensors", name, t);
    }
    Ok(outcome)
}

/// A layer × head heat map of one score.
pub fn grid_figure(s: &HeadScores) -> Figure {
    let nh = s.scores.first().map_or(0, |r| r.len());
    Figure::Heatmap(Heatmap {
        title: format!("{} score", s.kind.name()),
        x_label: "head".into(),
        y_label: "layer".into(),
        x_ticks: (0..nh).map(|h| h.to_string()).collect(),
        y_ticks: (0..s.scores.len()).map(|l| l.to_string()).collect(),
        values: s.scores.clone(),
        scale: ColorScale::Sequential,
        range: Some((0.0, 1.0)),
        colorbar_label: "score".into(),
    })
}
