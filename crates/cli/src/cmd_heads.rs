//! `interplab heads`: previous-token, duplicate-token and induction scores for every head.

use clap::Args;
use interplab_analysis::heads::HeadKind;
use interplab_lab::heads::Config;

use crate::exec::{ModelArgs, OutArgs};

/// Arguments of `interplab heads`.
#[derive(Args)]
pub struct HeadsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Score on this text instead of repeated random tokens.
    #[arg(long)]
    text: Option<String>,
    /// Random tokens per half of each repeated sequence.
    #[arg(long, default_value_t = Config::default().seq_len)]
    seq_len: usize,
    /// Number of repeated random sequences.
    #[arg(long, default_value_t = Config::default().n_seq)]
    n_seq: usize,
    /// Seed of the random tokens.
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// Ignore attention to the first position (BOS).
    #[arg(long)]
    exclude_bos: bool,
    /// Ignore attention from a position to itself.
    #[arg(long)]
    exclude_current_token: bool,
    /// Heads to list per score.
    #[arg(long, default_value_t = Config::default().top_k)]
    top_k: usize,
    #[command(flatten)]
    out: OutArgs,
}

/// Score every head and write the run directory.
pub fn run(a: HeadsArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        text: a.text.clone(),
        seq_len: a.seq_len,
        n_seq: a.n_seq,
        seed: a.seed,
        exclude_bos: a.exclude_bos,
        exclude_current_token: a.exclude_current_token,
        top_k: a.top_k,
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(false))?;
    for kind in HeadKind::ALL {
        println!("{}", kind.name());
        for (i, (l, h, v)) in outcome.results.of(kind).top.iter().enumerate() {
            println!("  {:>2}. {:>6}  {:.4}", i + 1, format!("{l}.{h}"), v);
        }
    }
    println!("wrote {}", dir.display());
    Ok(())
}
