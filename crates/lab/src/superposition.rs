//! `toy-superposition`: Toy Models of Superposition (Elhage et al. 2022), trained and drawn —
//! the paper's first experiment (the default), the geometry run (`preset = "geometry"`), and
//! the 2-features-into-1-dimension phase diagram (`phase_diagram = true`).
//!
//! Every instance's trained `W` and `b` go to `weights.safetensors`; with a run directory the
//! trainer checkpoints into it (`checkpoint.json`) and can resume from there.

use candle_core::Tensor;
use interplab_report::{
    BarChart, ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle,
};
use interplab_train::checkpoint;
use interplab_train::superposition::{
    best_restarts, classify_pair, geometry, log_space, longest_band, Geometry, PairPhase,
    SuperpositionConfig, ToyModel, LANES,
};
use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Problems, Progress};

/// Named starting configurations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// n = 20, m = 5, Iᵢ = 0.7ⁱ, S ∈ {0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999}.
    #[default]
    Paper,
    /// n = 200, m = 20, constant importance, 20 sparsities with 1/(1−S) log-spaced from 1 to
    /// `max_inv_density`.
    Geometry,
}

/// The model's output nonlinearity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// `x' = ReLU(Wᵀ W x + b)`.
    #[default]
    Relu,
    /// `x' = Wᵀ W x + b`.
    Linear,
}

impl Variant {
    /// The name the report shows.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Relu => "relu",
            Variant::Linear => "linear",
        }
    }
}

/// The config of `toy-superposition`. Fields given explicitly override the preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Starting configuration.
    pub preset: Preset,
    /// Features (default: the preset's).
    pub n: Option<usize>,
    /// Hidden dimensions (default: the preset's).
    pub m: Option<usize>,
    /// Importance of feature i is `importance_decay^i` (default: the preset's).
    pub importance_decay: Option<f64>,
    /// Geometry preset: the largest 1/(1−S) (feature probability 20^−t, t ∈ [0, 1], as in the
    /// paper's notebook, by default).
    pub max_inv_density: f64,
    /// Sparsities (probability a feature is zero), one instance each (default: the preset's).
    pub sparsities: Option<Vec<f64>>,
    /// The 2-features-into-1-dimension phase diagram: one instance per (relative importance
    /// of feature 2, feature density) on a log grid; n, m, sparsities and importances are set
    /// by it.
    pub phase_diagram: bool,
    /// Phase diagram: grid points per axis.
    pub grid: usize,
    /// Phase diagram: instances per cell, differing only in initialisation; the one with the
    /// lowest expected loss is classified (the model has local minima).
    pub restarts: usize,
    /// Phase diagram: relative importance range `[LO, HI]` (log-spaced).
    pub importance_range: Vec<f64>,
    /// Phase diagram: feature density (1 − S) range `[LO, HI]` (log-spaced).
    pub density_range: Vec<f64>,
    /// ReLU or linear output.
    pub variant: Variant,
    /// Training steps.
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Seeds the initialisation and the data.
    pub seed: u64,
    /// Save a checkpoint every this many steps (with a run directory).
    pub checkpoint_every: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            preset: Preset::Paper,
            n: None,
            m: None,
            importance_decay: None,
            max_inv_density: 20.0,
            sparsities: None,
            phase_diagram: false,
            grid: 20,
            restarts: 4,
            importance_range: vec![0.1, 10.0],
            density_range: vec![0.01, 1.0],
            variant: Variant::Relu,
            steps: 10_000,
            batch: 1024,
            lr: 1e-3,
            seed: 0,
            checkpoint_every: 1000,
        }
    }
}

/// Checks a `[LO, HI]` range: `0 < LO < HI ≤ max`.
fn check_range(p: &mut Problems, name: &str, v: &[f64], max: f64) {
    let ok = matches!(v, [lo, hi] if *lo > 0.0 && lo < hi && *hi <= max);
    p.check(
        ok,
        format!("{name} takes [LO, HI] with 0 < LO < HI ≤ {max}, got {v:?}"),
    );
}

impl Config {
    /// The phase diagram's grid: (relative importances, densities). Assumes a valid config.
    fn phase_grid(&self) -> (Vec<f64>, Vec<f64>) {
        let (i, d) = (&self.importance_range, &self.density_range);
        (
            log_space(i[0], i[1], self.grid),
            log_space(d[0], d[1], self.grid),
        )
    }

    /// The trainer's configuration. Assumes a valid config.
    pub fn train_config(&self) -> SuperpositionConfig {
        let mut c = if self.phase_diagram {
            let (ratios, densities) = self.phase_grid();
            SuperpositionConfig::phase_diagram(&densities, &ratios, self.restarts)
        } else {
            match self.preset {
                Preset::Paper => SuperpositionConfig::default(),
                Preset::Geometry => SuperpositionConfig::geometry(20, self.max_inv_density),
            }
        };
        c.n = self.n.unwrap_or(c.n);
        c.m = self.m.unwrap_or(c.m);
        c.importance_decay = self.importance_decay.unwrap_or(c.importance_decay);
        if let Some(s) = &self.sparsities {
            c.sparsities = s.clone();
        }
        c.relu = self.variant == Variant::Relu;
        c.steps = self.steps;
        c.batch = self.batch;
        c.lr = self.lr;
        c.seed = self.seed;
        c
    }
}

/// One instance's geometry as `results.json` has it (`wtw` left out for n > 50).
#[derive(Debug, Clone, Serialize)]
pub struct InstanceGeometry {
    /// D* = m / ‖W‖²_F.
    pub dims_per_feature: f64,
    /// Per-feature Dᵢ.
    pub feature_dims: Vec<f64>,
    /// ‖Wᵢ‖ per feature.
    pub norms: Vec<f64>,
    /// Features with ‖Wᵢ‖ > 0.5.
    pub represented: usize,
    /// The instance's sparsity S.
    pub sparsity: f64,
    /// Σⱼ≠ᵢ(Ŵᵢ·Wⱼ)² per feature.
    pub superposition: Vec<f64>,
    /// WᵀW, `[n][n]` (only for n ≤ 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wtw: Option<Vec<Vec<f64>>>,
}

/// The longest run of consecutive sparsities with D* within 0.5 ± 0.05.
#[derive(Debug, Clone, Serialize)]
pub struct HalfBand {
    /// Sparsities in it.
    pub count: usize,
    /// Index of its first sparsity.
    pub first_index: usize,
    /// 1/(1−S) at its first sparsity.
    pub from_inv_density: f64,
    /// Its first sparsity.
    pub from_sparsity: f64,
    /// Index of its last sparsity.
    pub last_index: usize,
    /// 1/(1−S) at its last sparsity.
    pub to_inv_density: f64,
    /// Its last sparsity.
    pub to_sparsity: f64,
}

/// Results of a run over sparsities.
#[derive(Debug, Clone, Serialize)]
pub struct SparsityResults {
    /// D* per instance.
    pub dims_per_feature: Vec<f64>,
    /// The last step's mean loss over instances.
    pub final_loss: Option<f64>,
    /// Every instance's geometry.
    pub geometry: Vec<InstanceGeometry>,
    /// Where D* sticks at 1/2.
    pub half_band: Option<HalfBand>,
    /// The same in words.
    pub half_band_text: String,
    /// Steps trained.
    pub steps: usize,
}

/// How many cells of the phase diagram fell into each phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseCounts {
    /// Feature 2 has the dimension alone.
    pub dedicated: usize,
    /// Feature 2 is not represented.
    pub not_represented: usize,
    /// Neither of the above nor antipodal.
    pub other: usize,
    /// Both features, antipodal.
    pub superposition: usize,
}

/// One cell of the phase diagram: its best restart.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The output bias (f32 weights widened to f64, as results.json has always had them).
    pub b: Vec<f64>,
    /// Feature density 1 − S.
    pub density: f64,
    /// What happened to feature 2.
    pub phase: PairPhase,
    /// Importance of feature 2 relative to feature 1.
    pub relative_importance: f64,
    /// Which restart had the lowest expected loss.
    pub restart: usize,
    /// `W`, `[m, n]` row-major (widened like `b`).
    pub w: Vec<f64>,
}

/// The classification thresholds.
#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    /// Cosine below which two features are antipodal.
    pub antipodal_cosine: f64,
    /// ‖Wᵢ‖ above which a feature is represented.
    pub represented_norm: f64,
}

/// Results of the phase diagram.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResults {
    /// Every cell, density-major.
    pub cells: Vec<Cell>,
    /// Cells per phase.
    pub counts: PhaseCounts,
    /// The density axis.
    pub densities: Vec<f64>,
    /// The last step's mean loss over instances.
    pub final_loss: Option<f64>,
    /// The relative-importance axis.
    pub relative_importances: Vec<f64>,
    /// Restarts per cell.
    pub restarts: usize,
    /// See [`Thresholds`].
    pub thresholds: Thresholds,
}

/// The results of `toy-superposition`: over sparsities, or the phase diagram.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Results {
    /// A run over sparsities (the presets).
    Sparsities(SparsityResults),
    /// The phase diagram.
    PhaseDiagram(PhaseResults),
}

impl Experiment for Config {
    const NAME: &'static str = "toy-superposition";
    const QUESTION: &'static str =
        "When do toy models store more features than dimensions (Toy Models of Superposition)?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        if self.phase_diagram {
            p.check(
                self.n.is_none()
                    && self.m.is_none()
                    && self.importance_decay.is_none()
                    && self.sparsities.is_none(),
                "phase_diagram sets n, m, importance_decay and sparsities itself",
            );
            p.check(
                self.grid >= 2,
                format!("grid must be at least 2, got {}", self.grid),
            );
            p.positive("restarts", self.restarts);
            check_range(
                &mut p,
                "importance_range",
                &self.importance_range,
                f64::INFINITY,
            );
            check_range(&mut p, "density_range", &self.density_range, 1.0);
        } else if self.preset == Preset::Geometry {
            p.check(
                self.max_inv_density >= 1.0 && self.max_inv_density.is_finite(),
                format!("max_inv_density must be ≥ 1, got {}", self.max_inv_density),
            );
        }
        if let Some(n) = self.n {
            p.positive("n", n);
        }
        if let Some(m) = self.m {
            p.positive("m", m);
        }
        if let Some(d) = self.importance_decay {
            p.check(
                d.is_finite() && d >= 0.0,
                format!("importance_decay must be finite and ≥ 0, got {d}"),
            );
        }
        if let Some(s) = &self.sparsities {
            p.check(!s.is_empty(), "sparsities must not be empty");
            for v in s.iter().filter(|v| !(0.0..1.0).contains(*v)) {
                p.push(format!("sparsities must be in [0, 1), got {v}"));
            }
        }
        p.positive("batch", self.batch);
        p.check(
            self.lr > 0.0 && self.lr.is_finite(),
            format!("lr must be positive, got {}", self.lr),
        );
        p.positive("checkpoint_every", self.checkpoint_every);
        let n = self.n.unwrap_or(match (self.phase_diagram, self.preset) {
            (true, _) => 2,
            (false, Preset::Paper) => 20,
            (false, Preset::Geometry) => 200,
        });
        p.check(
            n.saturating_mul(self.batch.div_ceil(LANES) * LANES) <= u32::MAX as usize,
            "batch × n is too large",
        );
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        Vec::new()
    }
    fn quick() -> Self {
        Config {
            steps: 300,
            ..Config::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Train, checkpointing into the run directory when there is one (and resuming from its
/// checkpoint when asked).
fn train(ctx: &Context, cfg: &Config, progress: &mut dyn Progress) -> anyhow::Result<ToyModel> {
    let tc = cfg.train_config();
    let fresh = ToyModel::new(tc.clone())?;
    let ckpt = ctx.workdir.as_ref().map(|w| w.path.join("checkpoint.json"));
    let resume = ctx.workdir.as_ref().is_some_and(|w| w.resume);
    let mut model = match &ckpt {
        Some(path) if resume && path.exists() => {
            let m: ToyModel = checkpoint::load(path)?;
            if m.cfg != tc {
                anyhow::bail!(
                    "{} was written with a different configuration",
                    path.display()
                );
            }
            progress.note(&format!("resuming from step {}", m.step));
            m
        }
        _ => fresh,
    };
    progress.phase("train");
    progress.total(cfg.steps as u64, "steps");
    progress.position(model.step as u64);
    let every = cfg.checkpoint_every.max(1);
    while model.step < cfg.steps {
        let chunk = every - model.step % every;
        model.train(chunk, &mut |step, loss| {
            if step % 100 == 0 {
                progress.position(step as u64);
                progress.message(&format!("loss {loss:.5}"));
            }
        });
        if let Some(path) = &ckpt {
            checkpoint::save(path, &model)?;
        }
    }
    progress.position(model.step as u64);
    Ok(model)
}

/// Every instance's `W` (`[instances, m, n]`), `b` (`[instances, n]`), sparsity and
/// importances, as tensors.
fn weights(ctx: &Context, model: &ToyModel, out: &mut Outcome<Results>) -> anyhow::Result<()> {
    let (k, n, m) = (model.instances.len(), model.cfg.n, model.cfg.m);
    let w: Vec<f32> = model
        .instances
        .iter()
        .flat_map(|i| i.w().to_vec())
        .collect();
    let b: Vec<f32> = model
        .instances
        .iter()
        .flat_map(|i| i.b().to_vec())
        .collect();
    let s: Vec<f64> = model.instances.iter().map(|i| i.sparsity).collect();
    let imp: Vec<f64> = (0..k).flat_map(|i| model.cfg.importance(i)).collect();
    let file = "weights.safetensors";
    out.tensor(file, "W", Tensor::from_vec(w, (k, m, n), &ctx.device)?)
        .tensor(file, "b", Tensor::from_vec(b, (k, n), &ctx.device)?)
        .tensor(file, "sparsity", Tensor::from_vec(s, k, &ctx.device)?)
        .tensor(
            file,
            "importance",
            Tensor::from_vec(imp, (k, n), &ctx.device)?,
        );
    Ok(())
}

/// Run `toy-superposition`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let model = train(ctx, cfg, progress)?;
    progress.phase("analyse");
    let loss = Figure::Line(LinePlot {
        title: "training loss (mean over instances)".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        log_y: true,
        series: vec![Series {
            name: "loss".into(),
            points: model
                .loss_history
                .iter()
                .enumerate()
                .step_by((cfg.steps / 500).max(1))
                .map(|(i, l)| ((i + 1) as f64, *l))
                .collect(),
            style: SeriesStyle::Line,
        }],
        ..Default::default()
    });
    let mut report = Report::new(if cfg.phase_diagram {
        "Toy Models of Superposition: 2 features in 1 dimension"
    } else {
        "Toy Models of Superposition"
    });
    let tc = &model.cfg;
    report.key_values(&[
        ("features n / dims m", format!("{} / {}", tc.n, tc.m)),
        (
            "importance",
            if cfg.phase_diagram {
                "feature 1: 1, feature 2: the grid's relative importance".into()
            } else {
                format!("{}^i", tc.importance_decay)
            },
        ),
        ("output", cfg.variant.name().to_string()),
        (
            "steps / batch / lr",
            format!("{} / {} / {}", cfg.steps, cfg.batch, cfg.lr),
        ),
    ]);
    let mut figures = vec![("loss".to_string(), loss.clone())];
    let results = if cfg.phase_diagram {
        Results::PhaseDiagram(phase_outputs(cfg, &model, &mut report, &mut figures))
    } else {
        Results::Sparsities(sparsity_outputs(cfg, &model, &mut report, &mut figures))
    };
    report.figure("loss", &loss);
    let mut out = Outcome::new(results, report);
    out.figures = figures;
    weights(ctx, &model, &mut out)?;
    Ok(out)
}

/// The reference fractions of the paper's geometry figure.
const FRACTIONS: [(f64, &str); 6] = [
    (1.0, "1"),
    (0.75, "3/4"),
    (2.0 / 3.0, "2/3"),
    (0.5, "1/2"),
    (0.4, "2/5"),
    (0.375, "3/8"),
];

fn inv_density(s: f64) -> f64 {
    1.0 / (1.0 - s)
}

/// WᵀW per instance and the per-feature norm bars (drawn only for n ≤ 50).
fn feature_figures(n: usize, geo: &[Geometry]) -> [(&'static str, Figure); 2] {
    let wtw = Figure::Grid {
        title: "WᵀW per instance".into(),
        columns: 4,
        figures: geo
            .iter()
            .map(|g| {
                Figure::Heatmap(Heatmap {
                    title: format!("S = {}", g.sparsity),
                    x_label: "feature".into(),
                    y_label: "feature".into(),
                    x_ticks: (0..n).map(|i| i.to_string()).collect(),
                    y_ticks: (0..n).map(|i| i.to_string()).collect(),
                    values: g.wtw.clone(),
                    scale: ColorScale::Diverging,
                    range: Some((-1.0, 1.0)),
                    colorbar_label: "Wᵢ·Wⱼ".into(),
                })
            })
            .collect(),
    };
    let norms = Figure::Grid {
        title: "‖Wᵢ‖ per feature, coloured by superposition Σⱼ≠ᵢ(Ŵᵢ·Wⱼ)²".into(),
        columns: 4,
        figures: geo
            .iter()
            .map(|g| {
                Figure::Bar(BarChart {
                    title: format!("S = {}", g.sparsity),
                    x_label: "feature".into(),
                    y_label: "‖Wᵢ‖".into(),
                    labels: (0..n).map(|i| i.to_string()).collect(),
                    values: g.norms.clone(),
                    colors: Some(g.superposition.iter().map(|v| v.min(1.0)).collect()),
                    color_label: "superposition (clipped at 1)".into(),
                    horizontal: true,
                    ..Default::default()
                })
            })
            .collect(),
    };
    [("wtw", wtw), ("feature_norms", norms)]
}

/// Figures, report and results of a run over sparsities.
fn sparsity_outputs(
    cfg: &Config,
    model: &ToyModel,
    report: &mut Report,
    figures: &mut Vec<(String, Figure)>,
) -> SparsityResults {
    let (n, m) = (model.cfg.n, model.cfg.m);
    let geo: Vec<Geometry> = model.instances.iter().map(|i| geometry(n, m, i)).collect();
    let dstar: Vec<f64> = geo.iter().map(|g| g.dims_per_feature).collect();
    let band = longest_band(&dstar, 0.45, 0.55);
    let inv = inv_density;
    let half_band = band.map(|(i, j)| HalfBand {
        count: j - i + 1,
        first_index: i,
        from_inv_density: inv(geo[i].sparsity),
        from_sparsity: geo[i].sparsity,
        last_index: j,
        to_inv_density: inv(geo[j].sparsity),
        to_sparsity: geo[j].sparsity,
    });
    let band_text = match band {
        Some((i, j)) => format!(
            "D* lies within 0.5 ± 0.05 over {} consecutive sparsities, S = {:.4} … {:.4} \
             (1/(1−S) = {:.1} … {:.1})",
            j - i + 1,
            geo[i].sparsity,
            geo[j].sparsity,
            inv(geo[i].sparsity),
            inv(geo[j].sparsity)
        ),
        None => "D* is never within 0.5 ± 0.05".into(),
    };
    // WᵀW and the norm bars are drawn per feature: too many cells beyond a few dozen features.
    let small = n <= 50;
    let mut figs: Vec<(&str, Figure)> = Vec::new();
    if small {
        figs.extend(feature_figures(n, &geo));
    }
    let series = vec![
        Series {
            name: "Dᵢ (‖Wᵢ‖ > 0.5)".into(),
            points: geo
                .iter()
                .flat_map(|g| {
                    g.feature_dims
                        .iter()
                        .zip(&g.norms)
                        .filter(|(_, n)| **n > 0.5)
                        .map(move |(d, _)| (inv(g.sparsity), *d))
                })
                .collect(),
            style: SeriesStyle::Markers,
        },
        Series {
            name: "D* = m/‖W‖²_F".into(),
            points: geo
                .iter()
                .map(|g| (inv(g.sparsity), g.dims_per_feature))
                .collect(),
            style: SeriesStyle::LineAndMarkers,
        },
    ];
    figs.push((
        "dims_per_feature",
        Figure::Line(LinePlot {
            title: format!("dimensions per feature (n = {n}, m = {m})"),
            x_label: "1/(1−S)".into(),
            y_label: "dimensions per feature".into(),
            log_x: true,
            series,
            hlines: FRACTIONS.iter().map(|(v, l)| (*v, l.to_string())).collect(),
            ..Default::default()
        }),
    ));
    report.table(
        &["sparsity S", "1/(1−S)", "represented (‖Wᵢ‖ > 0.5)", "D*"],
        geo.iter()
            .map(|g| {
                vec![
                    format!("{:.5}", g.sparsity),
                    format!("{:.1}", inv(g.sparsity)),
                    g.represented.to_string(),
                    format!("{:.3}", g.dims_per_feature),
                ]
            })
            .collect(),
    );
    report.paragraph(format!("{band_text}."));
    if !small {
        report.paragraph(format!(
            "WᵀW and the per-feature norm bars are not drawn for n = {n} (too many cells); \
             results.json has every instance's norms, superposition and Dᵢ."
        ));
    }
    for (name, f) in &figs {
        let caption = match *name {
            "wtw" => "WᵀW (blue negative, red positive)",
            "feature_norms" => "feature norms coloured by superposition",
            _ => {
                "dimensions per feature against 1/(1−S): D* (line) and each represented \
                  feature's Dᵢ (dots), with the paper's reference fractions"
            }
        };
        report.figure(caption, f);
    }
    figures.extend(figs.into_iter().map(|(name, f)| (name.to_string(), f)));
    SparsityResults {
        dims_per_feature: dstar,
        final_loss: model.loss_history.last().copied(),
        geometry: geo
            .into_iter()
            .map(|g| InstanceGeometry {
                dims_per_feature: g.dims_per_feature,
                feature_dims: g.feature_dims,
                norms: g.norms,
                represented: g.represented,
                sparsity: g.sparsity,
                superposition: g.superposition,
                wtw: small.then_some(g.wtw),
            })
            .collect(),
        half_band,
        half_band_text: band_text,
        steps: cfg.steps,
    }
}

/// Figures, report and results of the phase diagram.
fn phase_outputs(
    cfg: &Config,
    model: &ToyModel,
    report: &mut Report,
    figures: &mut Vec<(String, Figure)>,
) -> PhaseResults {
    let (ratios, densities) = cfg.phase_grid();
    let nr = ratios.len();
    let best = best_restarts(model, cfg.restarts);
    let phases: Vec<PairPhase> = best
        .iter()
        .map(|&k| classify_pair(model.cfg.m, &model.instances[k]))
        .collect();
    let code = |p: PairPhase| match p {
        PairPhase::NotRepresented => 0.0,
        PairPhase::Superposition => 1.0,
        PairPhase::Dedicated => 2.0,
        PairPhase::Other => f64::NAN,
    };
    // Rows: densest at the top.
    let values: Vec<Vec<f64>> = (0..densities.len())
        .rev()
        .map(|di| (0..nr).map(|ri| code(phases[di * nr + ri])).collect())
        .collect();
    let count = |p: PairPhase| phases.iter().filter(|&&q| q == p).count();
    let counts = PhaseCounts {
        dedicated: count(PairPhase::Dedicated),
        not_represented: count(PairPhase::NotRepresented),
        other: count(PairPhase::Other),
        superposition: count(PairPhase::Superposition),
    };
    let heat = Figure::Heatmap(Heatmap {
        title: "what happens to feature 2 (2 features, 1 dimension)".into(),
        x_label: "relative importance of feature 2".into(),
        y_label: "feature density 1−S".into(),
        x_ticks: ratios.iter().map(|r| format!("{r:.2}")).collect(),
        y_ticks: densities.iter().rev().map(|d| format!("{d:.3}")).collect(),
        values,
        scale: ColorScale::Sequential,
        range: Some((0.0, 2.0)),
        colorbar_label: "0 not represented · 1 superposition · 2 dedicated (grey: other)".into(),
    });
    let names = [
        (PairPhase::NotRepresented, "not represented"),
        (PairPhase::Superposition, "superposition"),
        (PairPhase::Dedicated, "dedicated dimension"),
        (PairPhase::Other, "other"),
    ];
    let scatter = Figure::Line(LinePlot {
        title: "phase of feature 2".into(),
        x_label: "relative importance of feature 2".into(),
        y_label: "feature density 1−S".into(),
        log_x: true,
        log_y: true,
        series: names
            .iter()
            .filter(|(p, _)| count(*p) > 0)
            .map(|(p, name)| Series {
                name: name.to_string(),
                points: phases
                    .iter()
                    .enumerate()
                    .filter(|(_, q)| *q == p)
                    .map(|(i, _)| (ratios[i % nr], densities[i / nr]))
                    .collect(),
                style: SeriesStyle::Markers,
            })
            .collect(),
        ..Default::default()
    });
    report.paragraph(
        "Feature i is represented when ‖Wᵢ‖ > 0.5. Feature 2 is 'not represented' when \
         ‖W₂‖ ≤ 0.5; 'dedicated' when ‖W₂‖ > 0.5 and ‖W₁‖ ≤ 0.5 (it has the dimension alone); \
         'superposition' when both are represented and antipodal (cosine < −0.9); 'other' \
         otherwise. Each cell trains several restarts (different initialisations) and classifies \
         the one with the lowest expected loss (computed by quadrature over the data \
         distribution): single runs can stop in a local minimum with feature 2 small and on \
         feature 1's side.",
    );
    report.figure("phase diagram: relative importance × density", &heat);
    report.figure("the same, one marker per instance", &scatter);
    figures.push(("phase_diagram".into(), heat));
    figures.push(("phase_scatter".into(), scatter));
    let cells = best
        .iter()
        .zip(&phases)
        .enumerate()
        .map(|(i, (&k, &phase))| {
            let inst = &model.instances[k];
            Cell {
                b: inst.b().iter().map(|&v| f64::from(v)).collect(),
                density: densities[i / nr],
                phase,
                relative_importance: ratios[i % nr],
                restart: k % cfg.restarts.max(1),
                w: inst.w().iter().map(|&v| f64::from(v)).collect(),
            }
        })
        .collect();
    PhaseResults {
        cells,
        counts,
        densities,
        final_loss: model.loss_history.last().copied(),
        relative_importances: ratios,
        restarts: cfg.restarts,
        thresholds: Thresholds {
            antipodal_cosine: -0.9,
            represented_norm: 0.5,
        },
    }
}
