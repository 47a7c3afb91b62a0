//! `ioi`: indirect-object identification: generated prompt pairs, the clean logit difference
//! (IO − S), and per-head z patching to find candidate name-mover heads.

use candle_core::{Device, Tensor};
use interplab_analysis::ioi::{analyse, generate, IoiPrompt, IoiResult};
use interplab_report::{BarChart, ColorScale, Figure, Heatmap, Report};
use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The config of `ioi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// Prompt pairs to generate.
    pub n_prompts: usize,
    /// Seed of the generator.
    pub seed: u64,
    /// Patch every head's z (false: behaviour only).
    pub patching: bool,
    /// Heads to list.
    pub top_k: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            n_prompts: 16,
            seed: 0,
            patching: true,
            top_k: 10,
        }
    }
}

/// The results of `ioi`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The generated prompt pairs.
    pub prompts: Vec<IoiPrompt>,
    /// Behaviour and per-head patching.
    pub result: IoiResult,
    /// Every head as `(layer, head, value)` by patching value, highest first (empty without
    /// patching; for the terminal, the values are in `result.head_patching`).
    #[serde(skip)]
    pub ranked_heads: Vec<(usize, usize, f64)>,
}

impl Experiment for Config {
    const NAME: &'static str = "ioi";
    const QUESTION: &'static str =
        "Does the model solve indirect-object identification, and which heads move the name?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model is empty")
            .positive("n_prompts", self.n_prompts);
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        // Per-head patching over 270 heads takes minutes; the quick run measures behaviour.
        Config {
            model: "smollm2-135m".into(),
            n_prompts: 4,
            patching: false,
            top_k: 5,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `ioi`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let bos = m.tokenizer.add_bos_default();
    let prompts = generate(&m.tokenizer, cfg.n_prompts, cfg.seed)?;
    progress.phase(if cfg.patching {
        "logit differences and head patching"
    } else {
        "logit differences"
    });
    let r = analyse(&m.model, &m.tokenizer, &prompts, bos, cfg.patching)?;
    let mut report = Report::new(format!("Indirect-object identification: {}", cfg.model));
    report.key_values(&[
        ("prompts", prompts.len().to_string()),
        (
            "mean logit difference (IO − S)",
            format!("{:.3} ± {:.3}", r.mean_logit_diff, r.stderr),
        ),
        ("accuracy", format!("{:.0}%", 100.0 * r.accuracy)),
    ]);
    report.paragraph(
        "Corrupted prompts replace the subject's second mention by the indirect object. Per-head \
         patching restores each head's z (all positions) from the clean run into the corrupted \
         one; the value is the normalised logit difference averaged over prompts (0 = corrupted, \
         1 = clean). Candidate name movers score high, negative name movers low.",
    );
    let mut figures = Vec::new();
    let mut tensors = Vec::new();
    let mut ranked: Vec<(usize, usize, f64)> = r
        .head_patching
        .iter()
        .enumerate()
        .flat_map(|(l, row)| row.iter().enumerate().map(move |(h, &v)| (l, h, v)))
        .collect();
    ranked.sort_by(|x, y| y.2.total_cmp(&x.2));
    if !r.head_patching.is_empty() {
        let nh = m.model.cfg.n_heads;
        let fig = Figure::Heatmap(Heatmap {
            title: "per-head z patching, mean over prompts".into(),
            x_label: "head".into(),
            y_label: "layer".into(),
            x_ticks: (0..nh).map(|h| h.to_string()).collect(),
            y_ticks: (0..r.head_patching.len()).map(|l| l.to_string()).collect(),
            values: r.head_patching.clone(),
            scale: ColorScale::Diverging,
            range: None,
            colorbar_label: "normalised logit difference".into(),
        });
        report.heading("Heads").figure("per-head z patching", &fig);
        figures.push(("head_patching", fig));
        let top = &ranked[..cfg.top_k.min(ranked.len())];
        let bars = Figure::Bar(BarChart {
            title: "top heads".into(),
            x_label: "head".into(),
            y_label: "normalised logit difference".into(),
            labels: top.iter().map(|(l, h, _)| format!("{l}.{h}")).collect(),
            values: top.iter().map(|t| t.2).collect(),
            ..Default::default()
        });
        report.figure("heads ranked", &bars);
        figures.push(("top_heads", bars));
        let flat: Vec<f32> = r
            .head_patching
            .iter()
            .flatten()
            .map(|&v| v as f32)
            .collect();
        let z = Tensor::from_vec(flat, (r.head_patching.len(), nh), &Device::Cpu)?;
        tensors.push(("head_patching_z", z));
    }
    let ld: Vec<f32> = r.logit_diffs.iter().map(|&v| v as f32).collect();
    tensors.push((
        "logit_diffs",
        Tensor::from_vec(ld, r.logit_diffs.len(), &Device::Cpu)?,
    ));
    report.heading("Prompts").table(
        &["order", "clean prompt", "IO", "S", "logit diff"],
        prompts
            .iter()
            .zip(&r.logit_diffs)
            .map(|(p, l)| {
                vec![
                    p.order.clone(),
                    p.clean.clone(),
                    p.io.clone(),
                    p.s.clone(),
                    format!("{l:+.3}"),
                ]
            })
            .collect(),
    );
    let mut out = Outcome::new(
        Results {
            prompts,
            result: r,
            ranked_heads: ranked,
        },
        report,
    );
    for (name, fig) in figures {
        out.figure(name, fig);
    }
    for (name, t) in tensors {
        out.tensor("ioi.safetensors", name, t);
    }
    Ok(out)
}
