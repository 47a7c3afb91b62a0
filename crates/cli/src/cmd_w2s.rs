//! `interplab w2s`: weak-to-strong generalisation with linear heads on frozen features.

use clap::Args;
use interplab_lab::w2s::{task_rows, Config, TASK_HEADERS};

use crate::exec::{execute, OutArgs};

/// Arguments of `interplab w2s`.
#[derive(Args)]
pub struct W2sArgs {
    /// The weak model (its head supervises): alias, path, pip:... or hf:...
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    weak: Option<String>,
    /// The strong model (its heads learn).
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    strong: Option<String>,
    /// Tasks, comma-separated: truth, sycophancy, toxicity.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "truth,sycophancy,toxicity"
    )]
    tasks: Vec<String>,
    /// Layer of the weak model's features (default: two thirds of the way).
    #[arg(long)]
    weak_layer: Option<usize>,
    /// Layer of the strong model's features (default: two thirds of the way).
    #[arg(long)]
    strong_layer: Option<usize>,
    /// Seeds (splits) per task.
    #[arg(long, default_value_t = Config::default().seeds)]
    seeds: usize,
    /// Examples per task at most (0: all).
    #[arg(long, default_value_t = 0)]
    max_examples: usize,
    /// Final α of the confidence loss.
    #[arg(long, default_value_t = Config::default().head.alpha_max)]
    alpha_max: f64,
    /// L2 penalty of every head (standardised features).
    #[arg(long, default_value_t = Config::default().head.l2)]
    l2: f64,
    /// Full-batch Adam steps of every head.
    #[arg(long, default_value_t = Config::default().head.steps)]
    steps: usize,
    #[command(flatten)]
    out: OutArgs,
}

/// Extract features, train every head for every seed, print the table.
pub fn run(a: W2sArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| {
        let mut c = Config {
            weak: a.weak.clone().unwrap_or_default(),
            strong: a.strong.clone().unwrap_or_default(),
            tasks: a.tasks.clone(),
            weak_layer: a.weak_layer,
            strong_layer: a.strong_layer,
            seeds: a.seeds,
            max_examples: a.max_examples,
            ..Default::default()
        };
        c.head.alpha_max = a.alpha_max;
        c.head.l2 = a.l2;
        c.head.steps = a.steps;
        c
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!(
        "weak {} at {}, strong {} at {}",
        cfg.weak, r.weak_hook, cfg.strong, r.strong_hook
    );
    println!("  {}", TASK_HEADERS.join(" | "));
    for row in task_rows(r) {
        println!("  {}", row.join(" | "));
    }
    println!("wrote {}", dir.display());
    Ok(())
}
