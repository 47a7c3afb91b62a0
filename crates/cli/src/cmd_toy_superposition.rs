//! `interplab toy superposition`: Toy Models of Superposition, trained and drawn — the paper's
//! first experiment (default), the geometry run (`--preset geometry`), and the
//! 2-features-into-1-dimension phase diagram (`--phase-diagram`).

use clap::{Args, ValueEnum};
use interplab_lab::superposition::{self as lab, Config, Results};

use crate::exec::OutArgs;

/// Named configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// n = 20, m = 5, Iᵢ = 0.7ⁱ, S ∈ {0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999}.
    Paper,
    /// n = 200, m = 20, constant importance, 20 sparsities with 1/(1−S) log-spaced from 1 to
    /// --max-inv-density.
    Geometry,
}

/// The output nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// x' = ReLU(WᵀWx + b).
    Relu,
    /// x' = WᵀWx + b.
    Linear,
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
    #[arg(long, default_value_t = Config::default().max_inv_density)]
    max_inv_density: f64,
    /// Sparsities (probability a feature is zero), one instance each.
    #[arg(long, value_delimiter = ',')]
    sparsities: Option<Vec<f64>>,
    /// The 2-features-into-1-dimension phase diagram: one instance per (relative importance of
    /// feature 2, feature density) on a log grid; n, m, sparsities and importances are set by it.
    #[arg(long, conflicts_with_all = ["n", "m", "importance_decay", "sparsities"])]
    phase_diagram: bool,
    /// Phase diagram: grid points per axis.
    #[arg(long, default_value_t = Config::default().grid, requires = "phase_diagram")]
    grid: usize,
    /// Phase diagram: instances per cell, differing only in initialisation; the one with the
    /// lowest expected loss is classified (the model has local minima).
    #[arg(long, default_value_t = Config::default().restarts, requires = "phase_diagram")]
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
    /// Output nonlinearity.
    #[arg(long, value_enum, default_value = "relu")]
    variant: Variant,
    #[arg(long, default_value_t = Config::default().steps)]
    steps: usize,
    #[arg(long, default_value_t = Config::default().batch)]
    batch: usize,
    #[arg(long, default_value_t = Config::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// Save a checkpoint every this many steps.
    #[arg(long, default_value_t = Config::default().checkpoint_every)]
    checkpoint_every: usize,
    /// Continue from the run directory's checkpoint (needs --out).
    #[arg(long, requires = "out")]
    resume: bool,
    #[command(flatten)]
    out: OutArgs,
}

/// Train and write the run directory.
pub fn run(a: SuperpositionArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        preset: match a.preset {
            Preset::Paper => lab::Preset::Paper,
            Preset::Geometry => lab::Preset::Geometry,
        },
        n: a.n,
        m: a.m,
        importance_decay: a.importance_decay,
        max_inv_density: a.max_inv_density,
        sparsities: a.sparsities.clone(),
        phase_diagram: a.phase_diagram,
        grid: a.grid,
        restarts: a.restarts,
        importance_range: a.importance_range.clone(),
        density_range: a.density_range.clone(),
        variant: match a.variant {
            Variant::Relu => lab::Variant::Relu,
            Variant::Linear => lab::Variant::Linear,
        },
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(a.resume))?;
    let secs = crate::cmd_toy::train_seconds(&dir);
    let instances = match &outcome.results {
        Results::Sparsities(r) => r.geometry.len(),
        Results::PhaseDiagram(r) => r.cells.len() * r.restarts,
    };
    println!(
        "trained {instances} instances × {} steps in {secs:.2} s",
        cfg.steps
    );
    match &outcome.results {
        Results::Sparsities(r) => {
            println!("  sparsity  1/(1-S)  represented   D*");
            for g in &r.geometry {
                let inv = 1.0 / (1.0 - g.sparsity);
                let (s, n, d) = (g.sparsity, g.represented, g.dims_per_feature);
                println!("  {s:>8.5}  {inv:>7.1}  {n:>11}  {d:.3}");
            }
            println!("{}", r.half_band_text);
        }
        Results::PhaseDiagram(r) => println!("phases: {}", serde_json::to_string(&r.counts)?),
    }
    println!("wrote {}", dir.display());
    Ok(())
}
