//! `interplab compose`: Q-, K- and V-composition scores between heads of different layers.

use clap::Args;
use interplab_lab::compose::{Config, Kind};

use crate::exec::{ModelArgs, OutArgs};

/// Arguments of `interplab compose`.
#[derive(Args)]
pub struct ComposeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Kinds, comma-separated: q, k, v.
    #[arg(long, default_value = "q,k,v", value_delimiter = ',', value_parser = parse_kind)]
    kinds: Vec<Kind>,
    /// Pairs to list per kind.
    #[arg(long, default_value_t = Config::default().top_k)]
    top_k: usize,
    /// Random samples for the baseline.
    #[arg(long, default_value_t = Config::default().baseline_samples)]
    baseline_samples: usize,
    #[command(flatten)]
    out: OutArgs,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    match s.trim() {
        "q" => Ok(Kind::Q),
        "k" => Ok(Kind::K),
        "v" => Ok(Kind::V),
        other => Err(format!("unknown composition kind {other:?} (q, k, v)")),
    }
}

/// Compute the scores and write the run directory.
pub fn run(a: ComposeArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        kinds: a.kinds.clone(),
        top_k: a.top_k,
        baseline_samples: a.baseline_samples,
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &outcome.results;
    for &kind in &cfg.kinds {
        let Some(k) = r.of(kind) else { continue };
        println!(
            "{}-composition (random baseline {:.4})",
            kind.composition().name().to_uppercase(),
            r.random_baseline
        );
        for (l1, h1, l2, h2, v) in k.top.iter().take(10) {
            println!("  {l1:>2}.{h1:<2} -> {l2:>2}.{h2:<2}  {v:.4}");
        }
    }
    println!("wrote {}", dir.display());
    Ok(())
}
