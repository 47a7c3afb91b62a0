//! `trace`: causal tracing (ROME) of a factual prompt: corrupt the subject's tokens, then
//! restore hidden states, MLP outputs or attention outputs one (token, layer) at a time.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use candle_core::{Device, Tensor};
use interplab_analysis::trace::{find_subject, Corruption, Trace, TraceKind, Tracer};
use interplab_report::{ColorScale, Figure, Heatmap, Report};
use serde::{Deserialize, Serialize};

use crate::tokens::show_token;
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// How the subject is corrupted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Gaussian noise on the subject's embeddings.
    #[default]
    Gaussian,
    /// Other subjects' tokens in its place.
    Resample,
}

/// Which states are restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The residual stream after each layer.
    Hidden,
    /// MLP outputs, a window of layers at a time.
    Mlp,
    /// Attention outputs, a window of layers at a time.
    Attn,
}

impl Kind {
    /// Every kind, in ROME's order.
    pub const ALL: [Kind; 3] = [Kind::Hidden, Kind::Mlp, Kind::Attn];

    fn trace_kind(self) -> TraceKind {
        match self {
            Kind::Hidden => TraceKind::Hidden,
            Kind::Mlp => TraceKind::Mlp,
            Kind::Attn => TraceKind::Attn,
        }
    }

    /// `hidden`, `mlp` or `attn`.
    pub fn name(self) -> &'static str {
        self.trace_kind().name()
    }

    /// A comma-separated list of kinds (empty entries are skipped).
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Kind>> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| {
                Kind::ALL
                    .into_iter()
                    .find(|k| k.name() == name)
                    .ok_or_else(|| {
                        anyhow::anyhow!("unknown trace kind {name:?} (hidden, mlp, attn)")
                    })
            })
            .collect()
    }
}

/// The config of `trace`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// The factual prompt.
    pub prompt: String,
    /// The subject inside the prompt (its tokens are corrupted).
    pub subject: String,
    /// The answer token (one token; `None`: the clean run's top prediction).
    pub target: Option<String>,
    /// How the subject is corrupted.
    pub mode: Mode,
    /// Noise samples (gaussian).
    pub samples: usize,
    /// Noise scale in embedding standard deviations (gaussian).
    pub noise: f64,
    /// Other subjects with the subject's token count (resample; `None`: those of a built-in
    /// list of well-known subjects that have the subject's token count).
    pub alternatives: Option<Vec<String>>,
    /// Layers restored together for MLP and attention traces.
    pub window: usize,
    /// Seed of the noise.
    pub seed: u64,
    /// Traces to run, in order.
    pub kinds: Vec<Kind>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            prompt: String::new(),
            subject: String::new(),
            target: None,
            mode: Mode::Gaussian,
            samples: 10,
            noise: 3.0,
            alternatives: None,
            window: 10,
            seed: 0,
            kinds: Kind::ALL.to_vec(),
        }
    }
}

/// The results of `trace`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// One trace per kind (`hidden`, `mlp`, `attn`).
    #[serde(flatten)]
    pub traces: BTreeMap<String, Trace>,
    /// The corruption used (for resample: the alternative subjects' tokens).
    pub corruption: Corruption,
    /// The answer token as text (for the terminal; its id is in each trace).
    #[serde(skip)]
    pub answer_token: String,
    /// Per kind, in order: `(kind, where the strongest restorations are, in words)` (for the
    /// terminal; also in the report).
    #[serde(skip)]
    pub findings: Vec<(String, String)>,
}

/// Well-known subjects for resample corruption when `alternatives` is not given (those with the
/// subject's token count are used).
const BUILTIN_SUBJECTS: &[&str] = &[
    "The Eiffel Tower",
    "The Space Needle",
    "The Colosseum",
    "Big Ben",
    "The Great Wall of China",
    "Mount Everest",
    "The Statue of Liberty",
    "The Golden Gate Bridge",
    "The Taj Mahal",
    "The Sydney Opera House",
    "Buckingham Palace",
    "The Kremlin",
    "The Louvre",
    "Times Square",
    "Michael Jordan",
    "Lionel Messi",
    "Serena Williams",
    "Albert Einstein",
    "Barack Obama",
    "William Shakespeare",
    "Toyota",
    "Microsoft",
];

impl Experiment for Config {
    const NAME: &'static str = "trace";
    const QUESTION: &'static str =
        "Which hidden states carry a fact about the subject to the answer (ROME's causal tracing)?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model is empty")
            .check(!self.prompt.trim().is_empty(), "the prompt is empty")
            .check(!self.subject.trim().is_empty(), "the subject is empty")
            .positive("samples", self.samples)
            .positive("window", self.window)
            .check(
                self.noise.is_finite() && self.noise >= 0.0,
                format!("noise must be a finite number ≥ 0, got {}", self.noise),
            );
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            prompt: "The Eiffel Tower is in".into(),
            subject: "The Eiffel Tower".into(),
            samples: 1,
            kinds: vec![Kind::Hidden],
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `trace`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let bos = m.tokenizer.add_bos_default();
    let tokens = m.tokenizer.encode(&cfg.prompt, bos)?;
    if tokens.is_empty() {
        bail!("the prompt is empty");
    }
    // The subject as it appears in the prompt: at the start, or after a space (`lead`).
    let (span, lead) = ["", " "]
        .iter()
        .find_map(|lead| {
            m.tokenizer
                .encode(&format!("{lead}{}", cfg.subject), false)
                .ok()
                .and_then(|ids| find_subject(&tokens, &ids).ok())
                .map(|span| (span, *lead))
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the subject {:?} does not occur in the prompt's tokens",
                cfg.subject
            )
        })?;
    let target = match &cfg.target {
        Some(s) => Some(m.tokenizer.single_token(s).context("target")?),
        None => None,
    };
    let corruption = match cfg.mode {
        Mode::Gaussian => Corruption::Gaussian {
            scale: cfg.noise,
            samples: cfg.samples,
            seed: cfg.seed,
        },
        Mode::Resample => {
            // Encoded as the subject appears in the prompt (with or without a leading space).
            let encode = |s: &str| m.tokenizer.encode(&format!("{lead}{}", s.trim()), false);
            let alternatives = match &cfg.alternatives {
                Some(alts) => alts
                    .iter()
                    .map(|s| encode(s))
                    .collect::<Result<Vec<_>, _>>()?,
                None => {
                    let n = span.1 - span.0;
                    let mut found = Vec::new();
                    for s in BUILTIN_SUBJECTS {
                        let ids = encode(s)?;
                        if ids.len() == n && ids.as_slice() != &tokens[span.0..span.1] {
                            found.push(ids);
                        }
                    }
                    if found.is_empty() {
                        bail!(
                            "no built-in subject has {n} tokens like {:?}; give alternatives",
                            cfg.subject
                        );
                    }
                    found
                }
            };
            Corruption::Resample { alternatives }
        }
    };
    progress.phase("clean and corrupted runs");
    let tracer = Tracer::new(&m.model, &tokens, span, target, &corruption)?;
    let answer_token = show_token(m, tracer.answer());
    let labels: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let s = show_token(m, t);
            if i >= span.0 && i < span.1 {
                format!("{s}*")
            } else {
                s
            }
        })
        .collect();
    let mut report = Report::new(format!("Causal tracing: {}", cfg.model));
    let mut out = Outcome::new(
        Results {
            traces: BTreeMap::new(),
            corruption: corruption.clone(),
            answer_token: answer_token.clone(),
            findings: Vec::new(),
        },
        Report::new(""),
    );
    for kind in &cfg.kinds {
        let name = kind.name();
        progress.phase(&format!("trace {name}"));
        let tr = tracer.trace(kind.trace_kind(), cfg.window)?;
        if out.results.findings.is_empty() {
            report.key_values(&[
                ("prompt", cfg.prompt.clone()),
                ("subject (marked *)", cfg.subject.clone()),
                ("answer", answer_token.clone()),
                ("p(answer), clean", format!("{:.4}", tr.clean_prob)),
                ("p(answer), corrupted", format!("{:.4}", tr.corrupted_prob)),
                ("corruption", format!("{corruption:?}")),
            ]);
        }
        let line = describe(&tr, &labels);
        let fig = Figure::Heatmap(Heatmap {
            title: match kind {
                Kind::Hidden => "restoring single hidden states".to_string(),
                Kind::Mlp => format!("restoring MLP outputs ({}-layer windows)", cfg.window),
                Kind::Attn => {
                    format!("restoring attention outputs ({}-layer windows)", cfg.window)
                }
            },
            x_label: if *kind == Kind::Hidden {
                "layer".into()
            } else {
                "layer (centre of window)".into()
            },
            y_label: "token".into(),
            x_ticks: (0..m.model.cfg.n_layers).map(|l| l.to_string()).collect(),
            y_ticks: labels.clone(),
            values: tr.prob.clone(),
            scale: ColorScale::Sequential,
            range: None,
            colorbar_label: format!("p({answer_token})"),
        });
        report.heading(name).figure(&line, &fig);
        out.figure(format!("trace_{name}"), fig);
        let flat: Vec<f32> = tr.prob.iter().flatten().map(|&v| v as f32).collect();
        let grid = Tensor::from_vec(flat, (tr.prob.len(), tr.prob[0].len()), &Device::Cpu)?;
        out.tensor("trace.safetensors", name, grid);
        out.results.traces.insert(name.into(), tr);
        out.results.findings.push((name.into(), line));
    }
    let summary: Vec<String> = out
        .results
        .findings
        .iter()
        .map(|(name, line)| format!("{name}: {line}"))
        .collect();
    report
        .heading("What was found")
        .paragraph(summary.join(" "));
    out.report = report;
    Ok(out)
}

/// Where the strongest restorations are, in words: the best early-middle site (first half of
/// the layers) on the subject, the last subject token's best, and the best late site.
fn describe(tr: &Trace, labels: &[String]) -> String {
    let nl = tr.prob[0].len();
    let n = tr.prob.len();
    let total = tr.total_effect().max(1e-12);
    let best = |toks: std::ops::Range<usize>, layers: std::ops::Range<usize>| {
        let mut b = (0, 0, f64::MIN);
        for t in toks {
            for l in layers.clone() {
                let e = tr.indirect_effect(t, l);
                if e > b.2 {
                    b = (t, l, e);
                }
            }
        }
        b
    };
    let (st, sl, se) = best(tr.subject.0..tr.subject.1, 0..nl / 2);
    let (_, ll, le) = best(tr.subject.1 - 1..tr.subject.1, 0..nl / 2);
    let (lt, lll, lte) = best(tr.subject.1..n, nl / 2..nl);
    format!(
        "early-middle subject site {} at layer {sl} recovers {:.0}% of the total effect; the last \
         subject token {} recovers at most {:.0}% (layer {ll}); late site {} at layer {lll}: {:.0}%.",
        labels[st],
        100.0 * se / total,
        labels[tr.subject.1 - 1],
        100.0 * le / total,
        labels[lt],
        100.0 * lte / total
    )
}
