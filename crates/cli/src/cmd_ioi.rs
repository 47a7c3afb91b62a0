//! `interplab ioi`: indirect-object identification prompts, logit difference, name-mover heads.

use clap::Args;
use interplab_lab::ioi::Config;

use crate::exec::{execute, ModelArgs, OutArgs};

/// Arguments of `interplab ioi`.
#[derive(Args)]
pub struct IoiArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt pairs to generate.
    #[arg(long, default_value_t = Config::default().n_prompts)]
    n_prompts: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// Skip per-head patching (behaviour only).
    #[arg(long)]
    no_patching: bool,
    /// Heads to list.
    #[arg(long, default_value_t = Config::default().top_k)]
    top_k: usize,
    #[command(flatten)]
    out: OutArgs,
}

/// Generate prompts, measure, rank heads, write the run directory.
pub fn run(a: IoiArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        n_prompts: a.n_prompts,
        seed: a.seed,
        patching: !a.no_patching,
        top_k: a.top_k,
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results.result;
    println!(
        "IOI on {} prompts: mean logit difference {:.3} ± {:.3}, accuracy {:.0}%",
        out.results.prompts.len(),
        r.mean_logit_diff,
        r.stderr,
        100.0 * r.accuracy
    );
    let ranked = &out.results.ranked_heads;
    if !ranked.is_empty() {
        println!("heads whose z restores the most (candidate name movers):");
        for (l, h, v) in ranked.iter().take(cfg.top_k) {
            println!("  {l:>2}.{h:<2} {v:+.4}");
        }
        println!("most negative (candidate negative name movers):");
        for (l, h, v) in ranked.iter().rev().take(3) {
            println!("  {l:>2}.{h:<2} {v:+.4}");
        }
    }
    println!("wrote {}", dir.display());
    Ok(())
}
