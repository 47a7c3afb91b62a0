//! `interplab toy superposition`: Toy Models of Superposition, trained and drawn — the paper's
//! first experiment (default), the geometry run (`--preset geometry`), and the
//! 2-features-into-1-dimension phase diagram (`--phase-diagram`).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use interplab_report::{
    BarChart, ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle,
};
use interplab_train::checkpoint;
use interplab_train::superposition::{
    best_restarts, classify_pair, geometry, log_space, longest_band, Geometry, PairPhase,
    SuperpositionConfig, ToyModel,
};
use serde_json::json;

use crate::rundir::RunDir;

/// Named configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// n = 20, m = 5, Iᵢ = 0.7ⁱ, S ∈ {0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999}.
    Paper,
    /// n = 200, m = 20, constant importance, 20 sparsities with 1/(1−S) log-spaced from 1 to
    /// --max-inv-density.
    Geometry,
}

/// Arguments of `interplab toy superposition`. Flags given explicitly override the preset.
#[derive(Args)]
pub struct SuperpositionArgs {
    /// Starting configuration.
    #[arg(long, value_enum, default_value = "paper")]
    preset: Preset,
    /// Features.
    #[arg(long)]
    n: Option<usize>,
    /// Hidden dimensions.
    #[arg(long)]
    m: Option<usize>,
    /// Importance of feature i is DECAY^i.
    #[arg(long)]
    importance_decay: Option<f64>,
    /// Geometry preset: the largest 1/(1−S) (feature probability 20^−t, t ∈ [0, 1], as in the
    /// paper's notebook, by default).
    #[arg(long, default_value_t = 20.0)]
    max_inv_density: f64,
    /// Sparsities (probability a feature is zero), one instance each.
    #[arg(long, value_delimiter = ',')]
    sparsities: Option<Vec<f64>>,
    /// The 2-features-into-1-dimension phase diagram: one instance per (relative importance of
    /// feature 2, feature density) on a log grid; n, m, sparsities and importances are set by it.
    #[arg(long, conflicts_with_all = ["n", "m", "importance_decay", "sparsities"])]
    phase_diagram: bool,
    /// Phase diagram: grid points per axis.
    #[arg(long, default_value_t = 20, requires = "phase_diagram")]
    grid: usize,
    /// Phase diagram: instances per cell, differing only in initialisation; the one with the
    /// lowest expected loss is classified (the model has local minima).
    #[arg(long, default_value_t = 4, requires = "phase_diagram")]
    restarts: usize,
    /// Phase diagram: relative importance range LO,HI (log-spaced).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.1,10",
        requires = "phase_diagram"
    )]
    importance_range: Vec<f64>,
    /// Phase diagram: feature density (1 − S) range LO,HI (log-spaced).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.01,1",
        requires = "phase_diagram"
    )]
    density_range: Vec<f64>,
    /// relu or linear output.
    #[arg(long, default_value = "relu")]
    variant: String,
    #[arg(long, default_value_t = 10_000)]
    steps: usize,
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save a checkpoint every this many steps.
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: usize,
    /// Continue from the run directory's checkpoint (needs --out).
    #[arg(long, requires = "out")]
    resume: bool,
    /// Run directory (default runs/toy-superposition-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A `LO,HI` range flag.
fn range(name: &str, v: &[f64], max: f64) -> anyhow::Result<(f64, f64)> {
    match v {
        [lo, hi] if *lo > 0.0 && lo < hi && *hi <= max => Ok((*lo, *hi)),
        _ => anyhow::bail!("--{name} takes LO,HI with 0 < LO < HI ≤ {max}"),
    }
}

/// The grid of the phase diagram: (relative importances, densities).
fn phase_grid(a: &SuperpositionArgs) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    if a.grid < 2 {
        anyhow::bail!("--grid must be at least 2");
    }
    let (ilo, ihi) = range("importance-range", &a.importance_range, f64::INFINITY)?;
    let (dlo, dhi) = range("density-range", &a.density_range, 1.0)?;
    Ok((log_space(ilo, ihi, a.grid), log_space(dlo, dhi, a.grid)))
}

/// The configuration the flags describe.
fn config(a: &SuperpositionArgs) -> anyhow::Result<SuperpositionConfig> {
    let relu = match a.variant.as_str() {
        "relu" => true,
        "linear" => false,
        other => anyhow::bail!("unknown variant {other:?} (relu, linear)"),
    };
    let mut cfg = if a.phase_diagram {
        let (ratios, densities) = phase_grid(a)?;
        SuperpositionConfig::phase_diagram(&densities, &ratios, a.restarts)
    } else {
        match a.preset {
            Preset::Paper => SuperpositionConfig::default(),
            Preset::Geometry => {
                if !(a.max_inv_density >= 1.0 && a.max_inv_density.is_finite()) {
                    anyhow::bail!("--max-inv-density must be ≥ 1");
                }
                SuperpositionConfig::geometry(20, a.max_inv_density)
            }
        }
    };
    cfg.n = a.n.unwrap_or(cfg.n);
    cfg.m = a.m.unwrap_or(cfg.m);
    cfg.importance_decay = a.importance_decay.unwrap_or(cfg.importance_decay);
    if let Some(s) = &a.sparsities {
        cfg.sparsities = s.clone();
    }
    cfg.relu = relu;
    cfg.steps = a.steps;
    cfg.batch = a.batch;
    cfg.lr = a.lr;
    cfg.seed = a.seed;
    Ok(cfg)
}

/// Train and write the run directory.
pub fn run(a: SuperpositionArgs) -> anyhow::Result<()> {
    let cfg = config(&a)?;
    // Validate before creating the run directory.
    let fresh = ToyModel::new(cfg.clone())?;
    let dir = RunDir::create(a.out.as_deref(), "toy-superposition")?;
    let ckpt = dir.path.join("checkpoint.json");
    let mut model = if a.resume && ckpt.exists() {
        let m: ToyModel = checkpoint::load(&ckpt)?;
        if m.cfg != cfg {
            anyhow::bail!(
                "{} was written with a different configuration",
                ckpt.display()
            );
        }
        eprintln!("resuming from step {}", m.step);
        m
    } else {
        fresh
    };
    let bar = ProgressBar::new(a.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  loss {msg}  {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t0 = Instant::now();
    let every = a.checkpoint_every.max(1);
    while model.step < a.steps {
        let chunk = every - model.step % every;
        model.train(chunk, &mut |step, loss| {
            if step % 100 == 0 {
                bar.set_position(step as u64);
                bar.set_message(format!("{loss:.5}"));
            }
        });
        checkpoint::save(&ckpt, &model)?;
    }
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "trained {} instances × {} steps in {secs:.2} s",
        model.instances.len(),
        a.steps
    );
    dir.write_json("manifest.json", &json!({"tool": "interplab", "version": env!("CARGO_PKG_VERSION"), "command": "toy superposition",
        "created_utc": crate::rundir::utc_stamp(), "config": cfg, "threads": std::env::var("RAYON_NUM_THREADS").ok()}))?;
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
                .step_by((a.steps / 500).max(1))
                .map(|(i, l)| ((i + 1) as f64, *l))
                .collect(),
            style: SeriesStyle::Line,
        }],
        ..Default::default()
    });
    dir.write_figure("loss", &loss)?;
    let mut report = Report::new(if a.phase_diagram {
        "Toy Models of Superposition: 2 features in 1 dimension"
    } else {
        "Toy Models of Superposition"
    });
    report.key_values(&[
        ("features n / dims m", format!("{} / {}", cfg.n, cfg.m)),
        (
            "importance",
            if a.phase_diagram {
                "feature 1: 1, feature 2: the grid's relative importance".into()
            } else {
                format!("{}^i", cfg.importance_decay)
            },
        ),
        ("output", a.variant.clone()),
        (
            "steps / batch / lr",
            format!("{} / {} / {}", a.steps, a.batch, a.lr),
        ),
        ("wall time (training)", format!("{secs:.2} s")),
    ]);
    if a.phase_diagram {
        phase_outputs(&a, &model, &dir, &mut report, secs)?;
    } else {
        sparsity_outputs(&a, &model, &dir, &mut report, secs)?;
    }
    report.figure("loss", &loss);
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
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

/// Figures and results of a run over sparsities.
fn sparsity_outputs(
    a: &SuperpositionArgs,
    model: &ToyModel,
    dir: &RunDir,
    report: &mut Report,
    secs: f64,
) -> anyhow::Result<()> {
    let (n, m) = (model.cfg.n, model.cfg.m);
    let geo: Vec<Geometry> = model.instances.iter().map(|i| geometry(n, m, i)).collect();
    let dstar: Vec<f64> = geo.iter().map(|g| g.dims_per_feature).collect();
    let band = longest_band(&dstar, 0.45, 0.55);
    println!("  sparsity  1/(1-S)  represented   D*");
    for g in &geo {
        println!(
            "  {:>8.5}  {:>7.1}  {:>11}  {:.3}",
            g.sparsity,
            1.0 / (1.0 - g.sparsity),
            g.represented,
            g.dims_per_feature
        );
    }
    let inv = |s: f64| 1.0 / (1.0 - s);
    let band_json = band.map(|(i, j)| {
        json!({"first_index": i, "last_index": j, "count": j - i + 1,
               "from_sparsity": geo[i].sparsity, "to_sparsity": geo[j].sparsity,
               "from_inv_density": inv(geo[i].sparsity), "to_inv_density": inv(geo[j].sparsity)})
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
    println!("{band_text}");
    // WᵀW and the norm bars are drawn per feature: too many cells beyond a few dozen features.
    let small = n <= 50;
    let mut figs: Vec<(&str, Figure)> = Vec::new();
    if small {
        figs.push((
            "wtw",
            Figure::Grid {
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
            },
        ));
        figs.push((
            "feature_norms",
            Figure::Grid {
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
            },
        ));
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
    for (name, f) in &figs {
        dir.write_figure(name, f)?;
    }
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
    let geo_json: Vec<serde_json::Value> = geo
        .iter()
        .map(|g| {
            let mut v = serde_json::to_value(g).unwrap_or_default();
            if !small {
                if let Some(o) = v.as_object_mut() {
                    o.remove("wtw");
                }
            }
            v
        })
        .collect();
    dir.write_json(
        "results.json",
        &json!({"geometry": geo_json, "dims_per_feature": dstar, "half_band": band_json,
                "half_band_text": band_text, "wall_s": secs,
                "final_loss": model.loss_history.last(), "steps": a.steps}),
    )?;
    Ok(())
}

/// Figures and results of the phase diagram.
fn phase_outputs(
    a: &SuperpositionArgs,
    model: &ToyModel,
    dir: &RunDir,
    report: &mut Report,
    secs: f64,
) -> anyhow::Result<()> {
    let (ratios, densities) = phase_grid(a)?;
    let nr = ratios.len();
    let best = best_restarts(model, a.restarts);
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
    let counts = json!({"not_represented": count(PairPhase::NotRepresented),
        "superposition": count(PairPhase::Superposition), "dedicated": count(PairPhase::Dedicated),
        "other": count(PairPhase::Other)});
    println!("phases: {counts}");
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
    dir.write_figure("phase_diagram", &heat)?;
    dir.write_figure("phase_scatter", &scatter)?;
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
    let cells: Vec<serde_json::Value> = best
        .iter()
        .zip(&phases)
        .enumerate()
        .map(|(i, (&k, p))| {
            let inst = &model.instances[k];
            json!({"relative_importance": ratios[i % nr], "density": densities[i / nr],
                   "phase": p, "restart": k % a.restarts.max(1), "w": inst.w(), "b": inst.b()})
        })
        .collect();
    dir.write_json(
        "results.json",
        &json!({"relative_importances": ratios, "densities": densities, "counts": counts,
                "cells": cells, "wall_s": secs, "final_loss": model.loss_history.last(),
                "restarts": a.restarts,
                "thresholds": {"represented_norm": 0.5, "antipodal_cosine": -0.9}}),
    )?;
    Ok(())
}
