//! `lens`: the logit lens (every layer's residual decoded) and direct logit attribution of a
//! target token's logit (or a logit difference) for one prompt.

use std::collections::BTreeMap;

use anyhow::Context as _;
use candle_core::{Device, Tensor};
use interplab_analysis::lens::{
    direct_logit_attribution, logit_lens, logit_lens_diff, DirectLogitAttribution, LensLayer,
};
use interplab_report::{BarChart, ColorScale, Figure, Heatmap, Report};
use serde::{Deserialize, Serialize};

use crate::tokens::show_token;
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The config of `lens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// The prompt.
    pub prompt: String,
    /// Token whose logit is attributed (one token; `None`: the model's top prediction).
    pub target: Option<String>,
    /// Attribute the logit difference target − contrast (one token).
    pub contrast: Option<String>,
    /// Position to read (negative counts from the end).
    pub position: i64,
    /// Tokens to show per layer.
    pub top_k: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            prompt: String::new(),
            target: None,
            contrast: None,
            position: -1,
            top_k: 5,
        }
    }
}

/// The results of `lens`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The contrast token id, when a logit difference is attributed.
    pub contrast: Option<u32>,
    /// Direct logit attribution at `position`.
    pub dla: DirectLogitAttribution,
    /// The logit lens, one entry per decoded residual (embed, then each layer).
    pub lens: Vec<LensLayer>,
    /// The lens's logit (difference) per entry of `lens`: what DLA splits at the last layer.
    pub lens_logit_diff: Vec<f64>,
    /// The position read.
    pub position: usize,
    /// The target token id.
    pub target: u32,
    /// Every token id shown here (prompt, target, contrast, lens top tokens), as displayed
    /// (quoted and escaped).
    pub token_text: BTreeMap<u32, String>,
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
}

impl Results {
    /// The displayed form of token `id`.
    pub fn show(&self, id: u32) -> String {
        self.token_text
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("<{id}>"))
    }

    /// `logit[target]` or `logit[target] − logit[contrast]`.
    pub fn attributed(&self) -> String {
        match self.contrast {
            Some(c) => format!(
                "logit[{}] − logit[{}]",
                self.show(self.target),
                self.show(c)
            ),
            None => format!("logit[{}]", self.show(self.target)),
        }
    }
}

impl Experiment for Config {
    const NAME: &'static str = "lens";
    const QUESTION: &'static str =
        "At which layer does the model's prediction form, and which heads and MLPs write the \
         answer's logit directly?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model must be given")
            .check(!self.prompt.is_empty(), "prompt must be given")
            .check(
                self.target.as_deref() != Some(""),
                "target is empty (omit it for the top prediction)",
            )
            .check(self.contrast.as_deref() != Some(""), "contrast is empty")
            .positive("top_k", self.top_k);
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            prompt: "The Eiffel Tower is in".into(),
            target: Some(" Paris".into()),
            contrast: Some(" London".into()),
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `lens`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let tokens = m
        .tokenizer
        .encode(&cfg.prompt, m.tokenizer.add_bos_default())?;
    if tokens.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    let n = tokens.len() as i64;
    let pos = if cfg.position < 0 {
        n + cfg.position
    } else {
        cfg.position
    };
    if pos < 0 || pos >= n {
        anyhow::bail!(
            "position {} is outside the prompt's {n} tokens",
            cfg.position
        );
    }
    let pos = pos as usize;
    let contrast = cfg
        .contrast
        .as_deref()
        .map(|s| m.tokenizer.single_token(s).context("contrast"))
        .transpose()?;
    progress.phase("lens");
    let target = match &cfg.target {
        Some(s) => m.tokenizer.single_token(s).context("target")?,
        None => {
            let logits = m
                .model
                .forward(&Tensor::new(tokens.as_slice(), m.model.device())?.unsqueeze(0)?)?;
            logits.get(0)?.get(pos)?.argmax(0)?.to_scalar::<u32>()?
        }
    };
    let lens = logit_lens(&m.model, &tokens, pos, Some(target), cfg.top_k)?;
    progress.phase("attribution");
    let dla = direct_logit_attribution(&m.model, &tokens, pos, target, contrast)?;
    let lens_diff = logit_lens_diff(&m.model, &tokens, pos, target, contrast)?;
    let mut token_text = BTreeMap::new();
    let shown = tokens
        .iter()
        .chain(std::iter::once(&target))
        .chain(contrast.iter())
        .chain(lens.iter().flat_map(|l| l.top.iter().map(|(t, _)| t)));
    for &id in shown {
        token_text.entry(id).or_insert_with(|| show_token(m, id));
    }
    let results = Results {
        contrast,
        dla,
        lens,
        lens_logit_diff: lens_diff,
        position: pos,
        target,
        token_text,
        tokens,
    };
    outcome(cfg, m.model.cfg.n_heads, results)
}

/// The figures, report and tensors of finished results.
fn outcome(cfg: &Config, n_heads: usize, r: Results) -> anyhow::Result<Outcome<Results>> {
    let (lens, dla, pos, what) = (&r.lens, &r.dla, r.position, r.attributed());
    let labels: Vec<String> = r.tokens.iter().map(|&t| r.show(t)).collect();
    let lens_fig = Figure::Heatmap(Heatmap {
        title: format!("logit lens: p({}) per layer", r.show(r.target)),
        x_label: "position".into(),
        y_label: "layer (resid_post)".into(),
        x_ticks: labels,
        y_ticks: lens.iter().map(|l| l.name.clone()).collect(),
        values: lens.iter().map(|l| l.target_prob.clone()).collect(),
        scale: ColorScale::Sequential,
        range: Some((0.0, 1.0)),
        colorbar_label: "probability".into(),
    });
    let bars = Figure::Bar(BarChart {
        title: format!("direct logit attribution of {what}"),
        x_label: "component".into(),
        y_label: "contribution".into(),
        labels: dla.components.iter().map(|c| c.0.clone()).collect(),
        values: dla.components.iter().map(|c| c.1).collect(),
        ..Default::default()
    });
    let mut report = Report::new(format!(
        "Logit lens and direct logit attribution: {}",
        cfg.model
    ));
    report.key_values(&[
        ("prompt", cfg.prompt.clone()),
        ("position", pos.to_string()),
        ("attributed", what.clone()),
        ("sum of terms", format!("{:.4}", dla.total)),
        ("model", format!("{:.4}", dla.logit)),
    ]);
    report.figure(
        "probability of the target when each layer's residual is decoded",
        &lens_fig,
    );
    report.figure(
        "direct contribution of each component (scaled by ln_final's cached scale)",
        &bars,
    );
    let heads_fig = (!dla.heads.is_empty()).then(|| {
        Figure::Heatmap(Heatmap {
            title: format!("per-head direct logit attribution of {what}"),
            x_label: "head".into(),
            y_label: "layer".into(),
            x_ticks: (0..n_heads).map(|h| h.to_string()).collect(),
            y_ticks: (0..dla.heads.len()).map(|l| l.to_string()).collect(),
            values: dla.heads.clone(),
            scale: ColorScale::Diverging,
            range: None,
            colorbar_label: "contribution".into(),
        })
    });
    if let Some(f) = &heads_fig {
        report.figure("per head", f);
    }
    report.table(
        &["layer", "p(target)", "rank", "top tokens"],
        lens.iter()
            .map(|l| {
                vec![
                    l.name.clone(),
                    format!("{:.4}", l.target_prob[pos]),
                    l.target_rank.unwrap_or(0).to_string(),
                    top_tokens(&r, l),
                ]
            })
            .collect(),
    );
    let probs: Vec<f32> = lens
        .iter()
        .flat_map(|l| l.target_prob.iter().map(|&v| v as f32))
        .collect();
    let probs = Tensor::from_vec(probs, (lens.len(), r.tokens.len()), &Device::Cpu)?;
    let diff: Vec<f32> = r.lens_logit_diff.iter().map(|&v| v as f32).collect();
    let diff = Tensor::from_vec(diff, r.lens_logit_diff.len(), &Device::Cpu)?;
    let comps: Vec<f32> = dla.components.iter().map(|c| c.1 as f32).collect();
    let comps = Tensor::from_vec(comps, dla.components.len(), &Device::Cpu)?;
    let heads = match dla.heads.is_empty() {
        true => None,
        false => {
            let h: Vec<f32> = dla.heads.iter().flatten().map(|&v| v as f32).collect();
            Some(Tensor::from_vec(
                h,
                (dla.heads.len(), n_heads),
                &Device::Cpu,
            )?)
        }
    };
    let mut outcome = Outcome::new(r, report);
    outcome
        .figure("logit_lens", lens_fig)
        .figure("dla_components", bars)
        .tensor("lens.safetensors", "lens_target_prob", probs)
        .tensor("lens.safetensors", "lens_logit_diff", diff)
        .tensor("lens.safetensors", "dla_components", comps);
    if let Some(f) = heads_fig {
        outcome.figure("dla_heads", f);
    }
    if let Some(h) = heads {
        outcome.tensor("lens.safetensors", "dla_heads", h);
    }
    Ok(outcome)
}

/// A lens entry's top tokens with probabilities, as the tables show them.
pub fn top_tokens(r: &Results, l: &LensLayer) -> String {
    l.top
        .iter()
        .map(|(t, p)| format!("{} {:.2}", r.show(*t), p))
        .collect::<Vec<_>>()
        .join("  ")
}
