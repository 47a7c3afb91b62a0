//! `patch`: activation patching (and optionally attribution patching) between a clean and a
//! corrupted prompt of the same token count, site by site.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use candle_core::{Device, Tensor};
use interplab_analysis::attribution::{agreement, attribution_sweeps, Agreement};
use interplab_analysis::patching::{HeadSite, Metric, PatchingSetup, PositionSite, Sweep};
use interplab_core::loader::LoadedModel;
use interplab_core::model::HookedTransformer;
use interplab_report::{ColorScale, Figure, Heatmap, Report};
use serde::{Deserialize, Serialize};

use crate::tokens::show_token;
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// What is measured at the last position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetricName {
    /// Normalised logit difference of `answer` over `wrong` (0 = corrupted, 1 = clean).
    #[default]
    LogitDiff,
    /// Probability of `answer`.
    Prob,
    /// KL divergence from the clean next-token distribution.
    Kl,
}

/// A site to patch: per (layer, position) for the residual, attention and MLP sites; per
/// (layer, head) over all positions for the head sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    ResidPre,
    ResidMid,
    ResidPost,
    AttnOut,
    MlpOut,
    Z,
    Q,
    K,
    V,
    Pattern,
}

/// One site of the analysis crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Swept {
    Position(PositionSite),
    Head(HeadSite),
}

impl Site {
    /// Every site: the position sites, then the head sites.
    pub const ALL: [Site; 10] = [
        Site::ResidPre,
        Site::ResidMid,
        Site::ResidPost,
        Site::AttnOut,
        Site::MlpOut,
        Site::Z,
        Site::Q,
        Site::K,
        Site::V,
        Site::Pattern,
    ];

    fn swept(self) -> Swept {
        match self {
            Site::ResidPre => Swept::Position(PositionSite::ResidPre),
            Site::ResidMid => Swept::Position(PositionSite::ResidMid),
            Site::ResidPost => Swept::Position(PositionSite::ResidPost),
            Site::AttnOut => Swept::Position(PositionSite::AttnOut),
            Site::MlpOut => Swept::Position(PositionSite::MlpOut),
            Site::Z => Swept::Head(HeadSite::Z),
            Site::Q => Swept::Head(HeadSite::Q),
            Site::K => Swept::Head(HeadSite::K),
            Site::V => Swept::Head(HeadSite::V),
            Site::Pattern => Swept::Head(HeadSite::Pattern),
        }
    }

    /// The short name used in files, results and the CLI (`resid_pre`, `z`, …).
    pub fn name(self) -> &'static str {
        match self.swept() {
            Swept::Position(p) => p.name(),
            Swept::Head(h) => h.name(),
        }
    }

    /// A comma-separated list of site names (empty entries are skipped).
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Site>> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| {
                Site::ALL
                    .into_iter()
                    .find(|site| site.name() == name)
                    .ok_or_else(|| anyhow::anyhow!("unknown site {name:?}"))
            })
            .collect()
    }
}

/// The config of `patch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// The clean prompt.
    pub clean: String,
    /// The corrupted prompt (same number of tokens).
    pub corrupt: String,
    /// The answer token of the clean prompt (one token, e.g. `" Mary"`).
    pub answer: Option<String>,
    /// The competing token (one token, e.g. `" John"`), for the logit difference.
    pub wrong: Option<String>,
    /// What is measured.
    pub metric: MetricName,
    /// The sites to sweep, in order.
    pub sites: Vec<Site>,
    /// Prepend BOS (`None`: what the model's tokenizer says).
    pub bos: Option<bool>,
    /// Also patch the position sites over all positions at once (one value per layer).
    pub all_positions: bool,
    /// Also patch this head (`LAYER.HEAD`) at each position, for the head sites chosen.
    pub head: Option<String>,
    /// Also run attribution patching for the same sites and report its agreement.
    pub attribution: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            clean: String::new(),
            corrupt: String::new(),
            answer: None,
            wrong: None,
            metric: MetricName::LogitDiff,
            sites: vec![Site::ResidPre, Site::AttnOut, Site::MlpOut, Site::Z],
            bos: None,
            all_positions: false,
            head: None,
            attribution: false,
        }
    }
}

/// An attribution sweep and its agreement with activation patching of the same site.
#[derive(Debug, Clone, Serialize)]
pub struct Attribution {
    /// `(a_clean − a_corrupt)·∂metric/∂a` at the corrupted run, per layer × position or head.
    pub sweep: Sweep,
    /// How well it predicts the activation-patching sweep.
    pub agreement: Agreement,
}

/// The five largest effects of one sweep, for the terminal.
#[derive(Debug, Clone)]
pub struct TopEffects {
    /// The sweep's site name.
    pub site: String,
    /// `position` or `head`.
    pub x_label: String,
    /// `(layer, position or head label, value)`, largest |value| first.
    pub cells: Vec<(usize, String, f64)>,
}

/// The results of `patch`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Activation-patching sweeps by site: `resid_pre`, `z`, `attn_out_all_positions`,
    /// `z_23.3_by_position`, …
    #[serde(flatten)]
    pub sweeps: BTreeMap<String, Sweep>,
    /// Attribution sweeps by `<site>_attribution`.
    #[serde(flatten)]
    pub attribution: BTreeMap<String, Attribution>,
    /// The clean prompt's tokens.
    pub clean_tokens: Vec<u32>,
    /// The corrupted prompt's tokens.
    pub corrupted_tokens: Vec<u32>,
    /// The metric of the clean run, before normalisation.
    pub clean_raw: f64,
    /// The metric of the corrupted run, before normalisation.
    pub corrupted_raw: f64,
    /// The largest effects of the per-site and per-head-position sweeps, in sweep order (for
    /// the terminal; not in `results.json`, which has every value).
    #[serde(skip)]
    pub top_effects: Vec<TopEffects>,
}

/// `LAYER.HEAD`.
fn parse_head(spec: &str) -> Option<(usize, usize)> {
    let (l, h) = spec.split_once('.')?;
    Some((l.parse().ok()?, h.parse().ok()?))
}

impl Experiment for Config {
    const NAME: &'static str = "patch";
    const QUESTION: &'static str =
        "Which activations carry the difference between a clean and a corrupted prompt?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model is empty");
        if self.metric == MetricName::LogitDiff {
            p.check(
                self.answer.is_some() && self.wrong.is_some(),
                "metric logit-diff needs answer and wrong",
            );
        }
        if self.metric == MetricName::Prob {
            p.check(self.answer.is_some(), "metric prob needs answer");
        }
        // The analysis refuses it too, but only after the sweeps: say so before any work.
        p.check(
            !(self.attribution && self.metric == MetricName::Kl),
            "attribution patching of metric kl is not supported (its gradient at the \
             corrupted run is not a patch estimate); use logit-diff or prob",
        );
        if let Some(spec) = &self.head {
            p.check(
                parse_head(spec).is_some(),
                format!("head {spec:?} is not LAYER.HEAD"),
            );
            p.check(
                self.sites
                    .iter()
                    .any(|s| matches!(s.swept(), Swept::Head(_))),
                "head needs a per-head site in sites (z, q, k, v, pattern)",
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
            clean: "When Mary and John went to the store, John gave a drink to".into(),
            corrupt: "When Mary and John went to the store, Mary gave a drink to".into(),
            answer: Some(" Mary".into()),
            wrong: Some(" John".into()),
            sites: vec![Site::AttnOut],
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `patch`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let bos = cfg.bos.unwrap_or_else(|| m.tokenizer.add_bos_default());
    let clean = m.tokenizer.encode(&cfg.clean, bos)?;
    let corrupt = m.tokenizer.encode(&cfg.corrupt, bos)?;
    if clean.len() != corrupt.len() {
        bail!(
            "the clean prompt is {} tokens and the corrupted one {}: patching needs equal lengths",
            clean.len(),
            corrupt.len()
        );
    }
    let token = |t: &Option<String>, what: &str| -> anyhow::Result<u32> {
        let t = t.as_deref().with_context(|| format!("no {what} token"))?;
        m.tokenizer.single_token(t).context(what.to_string())
    };
    let metric = match cfg.metric {
        MetricName::LogitDiff => Metric::LogitDiff {
            answer: token(&cfg.answer, "answer")?,
            wrong: token(&cfg.wrong, "wrong")?,
        },
        MetricName::Prob => Metric::AnswerProb {
            answer: token(&cfg.answer, "answer")?,
        },
        MetricName::Kl => Metric::Kl,
    };
    let head = match &cfg.head {
        Some(spec) => Some(head_in_range(spec, &m.model)?),
        None => None,
    };
    progress.phase("clean and corrupted runs");
    let setup = PatchingSetup::new(&m.model, &clean, &corrupt, metric)?;
    let labels = position_labels(m, &clean, &corrupt);
    let mut report = Report::new(format!("Activation patching: {}", cfg.model));
    report.key_values(&[
        ("clean", cfg.clean.clone()),
        ("corrupted", cfg.corrupt.clone()),
        ("metric", format!("{metric:?}")),
        ("clean metric (raw)", format!("{:.4}", setup.clean_raw)),
        (
            "corrupted metric (raw)",
            format!("{:.4}", setup.corrupted_raw),
        ),
    ]);
    report.paragraph(
        "Clean activations are patched into the corrupted run, one site at a time. For the \
         logit difference, 0 is the corrupted behaviour and 1 the clean one.",
    );
    let mut out = Outcome::new(
        Results {
            sweeps: BTreeMap::new(),
            attribution: BTreeMap::new(),
            clean_tokens: clean.clone(),
            corrupted_tokens: corrupt.clone(),
            clean_raw: setup.clean_raw,
            corrupted_raw: setup.corrupted_raw,
            top_effects: Vec::new(),
        },
        Report::new(""),
    );
    progress.phase("sweeps");
    progress.total(cfg.sites.len() as u64, "sites");
    // The sites swept, with their x axis (ticks and label).
    let mut done: Vec<(Site, Vec<String>, &str)> = Vec::new();
    for (i, &site) in cfg.sites.iter().enumerate() {
        let (sweep, x_ticks, x_label) = match site.swept() {
            Swept::Position(ps) => (setup.sweep_positions(ps)?, labels.clone(), "position"),
            Swept::Head(hs) => {
                let ticks = (0..hs.n_heads(&m.model)).map(|h| h.to_string()).collect();
                (setup.sweep_heads(hs)?, ticks, "head")
            }
        };
        let name = site.name();
        out.results
            .top_effects
            .push(top_effects(&sweep, &x_ticks, x_label));
        let fig = sweep_figure(&sweep, x_ticks.clone(), x_label, metric);
        report
            .heading(name)
            .figure(format!("{name} patched per layer × {x_label}"), &fig);
        out.figure(format!("patch_{name}"), fig);
        out.tensor("patching.safetensors", name, grid(&sweep)?);
        out.results.sweeps.insert(name.into(), sweep);
        done.push((site, x_ticks, x_label));
        progress.position(i as u64 + 1);
    }
    let swept = |s: Site| done.iter().any(|d| d.0 == s);
    if cfg.all_positions {
        progress.phase("all positions");
        for site in Site::ALL.into_iter().filter(|&s| swept(s)) {
            let Swept::Position(ps) = site.swept() else {
                continue;
            };
            let sweep = setup.sweep_layers(ps)?;
            let fig = sweep_figure(&sweep, vec!["all positions".into()], "", metric);
            report
                .heading(&sweep.site)
                .figure(format!("{} patched over all positions", ps.name()), &fig);
            out.figure(format!("patch_{}", sweep.site), fig);
            out.results.sweeps.insert(sweep.site.clone(), sweep);
        }
    }
    if let Some((l, h)) = head {
        progress.phase("one head by position");
        for site in Site::ALL.into_iter().filter(|&s| swept(s)) {
            let Swept::Head(hs) = site.swept() else {
                continue;
            };
            let sweep = setup.sweep_head_positions(hs, l, h)?;
            out.results
                .top_effects
                .push(top_effects(&sweep, &labels, "position"));
            let fig = sweep_figure(&sweep, labels.clone(), "position", metric);
            report.heading(&sweep.site).figure(
                format!("head {l}.{h}'s {} patched at each position", hs.name()),
                &fig,
            );
            out.figure(format!("patch_{}", sweep.site), fig);
            out.results.sweeps.insert(sweep.site.clone(), sweep);
        }
    }
    if cfg.attribution {
        progress.phase("attribution");
        let mut ps = Vec::new();
        let mut hs = Vec::new();
        for site in Site::ALL.into_iter().filter(|&s| swept(s)) {
            match site.swept() {
                Swept::Position(p) => ps.push(p),
                Swept::Head(HeadSite::Pattern) => {}
                Swept::Head(h) => hs.push(h),
            }
        }
        let mut rows = Vec::new();
        for at in attribution_sweeps(&setup, &ps, &hs)? {
            let base = at.site.trim_end_matches("_attribution").to_string();
            let (_, ticks, x_label) = done
                .iter()
                .find(|d| d.0.name() == base)
                .expect("site was swept");
            let ag = agreement(&out.results.sweeps[&base], &at, setup.corrupted_value(), 10);
            rows.push(vec![
                base.clone(),
                format!("{:+.3}", ag.correlation),
                format!("{:.0}%", 100.0 * ag.top_k_overlap),
                format!("{:.0}%", 100.0 * ag.sign_agreement),
            ]);
            let fig = sweep_figure(&at, ticks.clone(), x_label, metric);
            report
                .heading(format!("{base}: attribution patching"))
                .figure(
                    "(a_clean − a_corrupt)·∂metric/∂a at the corrupted run",
                    &fig,
                );
            out.figure(format!("attribution_{base}"), fig);
            out.tensor("patching.safetensors", at.site.clone(), grid(&at)?);
            out.results.attribution.insert(
                at.site.clone(),
                Attribution {
                    sweep: at,
                    agreement: ag,
                },
            );
        }
        report.heading("attribution vs activation patching").table(
            &[
                "site",
                "correlation",
                "top-10 overlap",
                "sign agreement (|effect| ≥ 0.05)",
            ],
            rows,
        );
    }
    out.report = report;
    Ok(out)
}

/// One label per position: the token, or `clean/corrupted` where the prompts differ.
fn position_labels(m: &LoadedModel, clean: &[u32], corrupt: &[u32]) -> Vec<String> {
    clean
        .iter()
        .zip(corrupt)
        .map(|(&c, &x)| {
            if c == x {
                show_token(m, c)
            } else {
                format!("{}/{}", show_token(m, c), show_token(m, x))
            }
        })
        .collect()
}

/// A sweep's values as an f32 `[layers, positions or heads]` tensor.
fn grid(s: &Sweep) -> anyhow::Result<Tensor> {
    let (nl, nx) = (s.values.len(), s.values[0].len());
    let flat: Vec<f32> = s.values.iter().flatten().map(|&v| v as f32).collect();
    Ok(Tensor::from_vec(flat, (nl, nx), &Device::Cpu)?)
}

/// The five cells of largest |value|.
fn top_effects(s: &Sweep, x: &[String], x_label: &str) -> TopEffects {
    let mut all: Vec<(usize, usize, f64)> = s
        .values
        .iter()
        .enumerate()
        .flat_map(|(l, r)| r.iter().enumerate().map(move |(i, &v)| (l, i, v)))
        .collect();
    all.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
    TopEffects {
        site: s.site.clone(),
        x_label: x_label.into(),
        cells: all
            .iter()
            .take(5)
            .map(|&(l, i, v)| (l, x[i].clone(), v))
            .collect(),
    }
}

/// Layers × positions (or heads) heat map; signed metrics use a diverging scale centred at 0.
fn sweep_figure(s: &Sweep, x_ticks: Vec<String>, x_label: &str, metric: Metric) -> Figure {
    let (scale, label) = match metric {
        Metric::LogitDiff { .. } => (ColorScale::Diverging, "normalised logit difference"),
        Metric::AnswerProb { .. } => (ColorScale::Sequential, "p(answer)"),
        Metric::Kl => (ColorScale::Sequential, "KL(clean ‖ patched), nats"),
    };
    Figure::Heatmap(Heatmap {
        title: format!("patching {}", s.site),
        x_label: x_label.into(),
        y_label: "layer".into(),
        x_ticks,
        y_ticks: (0..s.values.len()).map(|l| l.to_string()).collect(),
        values: s.values.clone(),
        scale,
        range: None,
        colorbar_label: label.into(),
    })
}

/// `LAYER.HEAD`, both in range for `model` (query heads; K/V sites map them to their group).
fn head_in_range(spec: &str, model: &HookedTransformer) -> anyhow::Result<(usize, usize)> {
    let (l, h) = parse_head(spec).with_context(|| format!("head {spec:?} is not LAYER.HEAD"))?;
    if l >= model.cfg.n_layers {
        bail!(
            "head {spec}: layer index {l} out of range (the model has {} layers)",
            model.cfg.n_layers
        );
    }
    if h >= model.cfg.n_heads {
        bail!(
            "head {spec}: head index {h} out of range (the model has {} heads)",
            model.cfg.n_heads
        );
    }
    Ok((l, h))
}
