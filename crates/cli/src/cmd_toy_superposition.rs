//! `interplab toy superposition`: Toy Models of Superposition, trained and drawn.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use interplab_report::{
    BarChart, ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle,
};
use interplab_train::checkpoint;
use interplab_train::superposition::{geometry, Geometry, SuperpositionConfig, ToyModel};
use serde_json::json;

use crate::rundir::RunDir;

/// Arguments of `interplab toy superposition`.
#[derive(Args)]
pub struct SuperpositionArgs {
    /// Features.
    #[arg(long, default_value_t = 20)]
    n: usize,
    /// Hidden dimensions.
    #[arg(long, default_value_t = 5)]
    m: usize,
    /// Importance of feature i is DECAY^i.
    #[arg(long, default_value_t = 0.7)]
    importance_decay: f64,
    /// Sparsities (probability a feature is zero), one instance each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,0.7,0.9,0.97,0.99,0.997,0.999"
    )]
    sparsities: Vec<f64>,
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

/// Train and write the run directory.
pub fn run(a: SuperpositionArgs) -> anyhow::Result<()> {
    let relu = match a.variant.as_str() {
        "relu" => true,
        "linear" => false,
        other => anyhow::bail!("unknown variant {other:?} (relu, linear)"),
    };
    let cfg = SuperpositionConfig {
        n: a.n,
        m: a.m,
        importance_decay: a.importance_decay,
        sparsities: a.sparsities.clone(),
        importances: Vec::new(),
        relu,
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
    };
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
        ToyModel::new(cfg.clone())?
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
    let geo: Vec<Geometry> = model
        .instances
        .iter()
        .map(|i| geometry(a.n, a.m, i))
        .collect();
    println!(
        "trained {} instances × {} steps in {secs:.2} s",
        geo.len(),
        a.steps
    );
    println!("  sparsity  1/(1-S)  represented   D*");
    for g in &geo {
        println!(
            "  {:>8}  {:>7.1}  {:>11}  {:.3}",
            g.sparsity,
            1.0 / (1.0 - g.sparsity),
            g.represented,
            g.dims_per_feature
        );
    }
    dir.write_json("manifest.json", &json!({"tool": "interplab", "version": env!("CARGO_PKG_VERSION"), "command": "toy superposition",
        "created_utc": crate::rundir::utc_stamp(), "config": cfg, "threads": std::env::var("RAYON_NUM_THREADS").ok()}))?;
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
                    x_ticks: (0..a.n).map(|i| i.to_string()).collect(),
                    y_ticks: (0..a.n).map(|i| i.to_string()).collect(),
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
                    labels: (0..a.n).map(|i| i.to_string()).collect(),
                    values: g.norms.clone(),
                    colors: Some(g.superposition.iter().map(|v| v.min(1.0)).collect()),
                    color_label: "superposition (clipped at 1)".into(),
                    horizontal: true,
                    ..Default::default()
                })
            })
            .collect(),
    };
    let mut series = vec![Series {
        name: "D* = m/‖W‖²_F".into(),
        points: geo
            .iter()
            .map(|g| (1.0 / (1.0 - g.sparsity), g.dims_per_feature))
            .collect(),
        style: SeriesStyle::LineAndMarkers,
    }];
    series.push(Series {
        name: "Dᵢ per feature".into(),
        points: geo
            .iter()
            .flat_map(|g| {
                g.feature_dims
                    .iter()
                    .zip(&g.norms)
                    .filter(|(_, n)| **n > 0.5)
                    .map(move |(d, _)| (1.0 / (1.0 - g.sparsity), *d))
            })
            .collect(),
        style: SeriesStyle::Markers,
    });
    let dims = Figure::Line(LinePlot {
        title: "dimensions per feature".into(),
        x_label: "1/(1−S)".into(),
        y_label: "dimensions per feature".into(),
        log_x: true,
        series,
        hlines: [
            (1.0, "1"),
            (0.75, "3/4"),
            (2.0 / 3.0, "2/3"),
            (0.5, "1/2"),
            (0.4, "2/5"),
            (0.375, "3/8"),
        ]
        .iter()
        .map(|(v, l)| (*v, l.to_string()))
        .collect(),
        ..Default::default()
    });
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
    for (name, f) in [
        ("wtw", &wtw),
        ("feature_norms", &norms),
        ("dims_per_feature", &dims),
        ("loss", &loss),
    ] {
        dir.write_figure(name, f)?;
    }
    let mut report = Report::new("Toy Models of Superposition");
    report.key_values(&[
        ("features n / dims m", format!("{} / {}", a.n, a.m)),
        ("importance", format!("{}^i", a.importance_decay)),
        ("output", a.variant.clone()),
        (
            "steps / batch / lr",
            format!("{} / {} / {}", a.steps, a.batch, a.lr),
        ),
        ("wall time", format!("{secs:.2} s")),
    ]);
    report.table(
        &["sparsity S", "1/(1−S)", "represented (‖Wᵢ‖ > 0.5)", "D*"],
        geo.iter()
            .map(|g| {
                vec![
                    g.sparsity.to_string(),
                    format!("{:.1}", 1.0 / (1.0 - g.sparsity)),
                    g.represented.to_string(),
                    format!("{:.3}", g.dims_per_feature),
                ]
            })
            .collect(),
    );
    report.figure("WᵀW (blue negative, red positive)", &wtw);
    report.figure("feature norms coloured by superposition", &norms);
    report.figure(
        "dimensions per feature against 1/(1−S), with the paper's reference fractions",
        &dims,
    );
    report.figure("loss", &loss);
    dir.write_json(
        "results.json",
        &json!({"geometry": geo, "wall_s": secs, "final_loss": model.loss_history.last()}),
    )?;
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
}
