//! `compose`: Q-, K- and V-composition scores between heads of different layers (Elhage et al.
//! 2021), against a random baseline.

use candle_core::{Device, Tensor};
use interplab_analysis::composition::{
    composition_scores, random_baseline, CompositionKind, CompositionScores,
};
use interplab_report::{BarChart, Figure, Report};
use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Problems, Progress};

/// Which input of the later head the earlier head's output feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Into the query.
    Q,
    /// Into the key.
    K,
    /// Into the value.
    V,
}

impl Kind {
    /// The analysis' kind.
    pub fn composition(self) -> CompositionKind {
        match self {
            Kind::Q => CompositionKind::Q,
            Kind::K => CompositionKind::K,
            Kind::V => CompositionKind::V,
        }
    }
}

/// The config of `compose`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// Kinds to score, in order.
    pub kinds: Vec<Kind>,
    /// Pairs to list per kind.
    pub top_k: usize,
    /// Random samples for the baseline.
    pub baseline_samples: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            kinds: vec![Kind::Q, Kind::K, Kind::V],
            top_k: 20,
            baseline_samples: 16,
        }
    }
}

/// The strongest pairs of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindTop {
    /// (earlier layer, head, later layer, head, score), strongest first.
    pub top: Vec<(usize, usize, usize, usize, f64)>,
}

/// The results of `compose`: one entry per kind scored.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// K-composition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<KindTop>,
    /// Q-composition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<KindTop>,
    /// The score of random factors of the same shapes.
    pub random_baseline: f64,
    /// V-composition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v: Option<KindTop>,
}

impl Results {
    /// The pairs of `kind`, when it was scored.
    pub fn of(&self, kind: Kind) -> Option<&KindTop> {
        match kind {
            Kind::Q => self.q.as_ref(),
            Kind::K => self.k.as_ref(),
            Kind::V => self.v.as_ref(),
        }
    }
}

impl Experiment for Config {
    const NAME: &'static str = "compose";
    const QUESTION: &'static str =
        "Which earlier heads write into the query, key or value inputs of later heads (virtual \
         attention heads, induction circuits)?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model must be given")
            .check(
                !self.kinds.is_empty(),
                "kinds must name at least one of q, k, v",
            )
            .positive("top_k", self.top_k)
            .positive("baseline_samples", self.baseline_samples);
        for (i, k) in self.kinds.iter().enumerate() {
            p.check(
                !self.kinds[..i].contains(k),
                format!("kinds lists {} twice", k.composition().name()),
            );
        }
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            kinds: vec![Kind::K],
            top_k: 10,
            baseline_samples: 4,
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `compose`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let c = &m.model.cfg;
    progress.phase("baseline");
    let baseline = random_baseline(c.d_model, c.d_head, cfg.baseline_samples, 0)?;
    let mut report = Report::new(format!("Head composition: {}", cfg.model));
    report.paragraph(format!(
        "Composition score ‖M1·M2‖_F/(‖M1‖_F‖M2‖_F) of an earlier head's OV circuit into a later \
         head's Q, K or V input (Elhage et al. 2021), computed through thin factors. Random \
         baseline (Gaussian factors of the same shapes, {} samples): {baseline:.4}.",
        cfg.baseline_samples
    ));
    let mut results = Results {
        k: None,
        q: None,
        random_baseline: baseline,
        v: None,
    };
    let mut figures = Vec::new();
    let mut tensors = Vec::new();
    for &kind in &cfg.kinds {
        let name = kind.composition().name();
        progress.phase(&format!("{name}-composition"));
        let s = composition_scores(&m.model, kind.composition())?;
        let top = s.top_k(cfg.top_k);
        let fig = top_figure(&s, &top, baseline);
        report
            .heading(format!("{}-composition", name.to_uppercase()))
            .figure("strongest pairs", &fig);
        figures.push((format!("compose_{name}"), fig));
        let flat: Vec<f32> = s.scores.iter().map(|&v| v as f32).collect();
        let shape = (s.n_layers, s.n_heads, s.n_layers, s.n_heads);
        tensors.push((name, Tensor::from_vec(flat, shape, &Device::Cpu)?));
        let slot = match kind {
            Kind::Q => &mut results.q,
            Kind::K => &mut results.k,
            Kind::V => &mut results.v,
        };
        *slot = Some(KindTop { top });
    }
    let mut outcome = Outcome::new(results, report);
    for (name, fig) in figures {
        outcome.figure(name, fig);
    }
    for (name, t) in tensors {
        outcome.tensor("composition.safetensors", name, t);
    }
    Ok(outcome)
}

fn top_figure(
    s: &CompositionScores,
    top: &[(usize, usize, usize, usize, f64)],
    baseline: f64,
) -> Figure {
    let mut labels: Vec<String> = vec!["random baseline".into()];
    let mut values = vec![baseline];
    for (l1, h1, l2, h2, v) in top {
        labels.push(format!("{l1}.{h1} → {l2}.{h2}"));
        values.push(*v);
    }
    Figure::Bar(BarChart {
        title: format!(
            "strongest {}-composition pairs",
            s.kind.name().to_uppercase()
        ),
        x_label: "earlier head → later head".into(),
        y_label: "composition score".into(),
        labels,
        values,
        horizontal: true,
        ..Default::default()
    })
}
