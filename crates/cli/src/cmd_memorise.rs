//! `interplab memorise`: verbatim recall of known texts, small model against large.

use clap::Args;
use interplab_lab::memorise::{summary_rows, Config};

use crate::exec::{execute, OutArgs};

/// Arguments of `interplab memorise`.
#[derive(Args)]
pub struct MemoriseArgs {
    /// One or two models (alias, path, pip:... or hf:...); with two, the first is the small
    /// one whose recall should predict the second's.
    #[arg(required_unless_present = "config", conflicts_with = "config", num_args = 1..=2)]
    models: Vec<String>,
    /// `builtin` (licences, famous passages, widely copied code, the sonnets, and controls) or
    /// a JSONL file of {"id", "text", "kind"?} objects.
    #[arg(long, default_value_t = Config::default().texts)]
    texts: String,
    /// Prefix tokens given to the model.
    #[arg(long, default_value_t = Config::default().k)]
    k: usize,
    /// Continuation tokens decoded greedily and scored.
    #[arg(long, default_value_t = Config::default().m)]
    m: usize,
    /// Windows of k + m tokens per text at most.
    #[arg(long, default_value_t = Config::default().windows)]
    windows: usize,
    /// Sequences of each kind at most.
    #[arg(long, default_value_t = Config::default().max_per_kind)]
    max_per_kind: usize,
    /// Control windows from Interplab's own sources (builtin texts only).
    #[arg(long, default_value_t = Config::default().control)]
    control: usize,
    /// Sequences decoded together.
    #[arg(long, default_value_t = Config::default().batch)]
    batch: usize,
    /// Skip the patching study of the clearest recall.
    #[arg(long)]
    no_patch: bool,
    #[command(flatten)]
    out: OutArgs,
}

/// Decode, score, compare, patch; print the per-kind table.
pub fn run(a: MemoriseArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        models: a.models.clone(),
        texts: a.texts.clone(),
        k: a.k,
        m: a.m,
        windows: a.windows,
        max_per_kind: a.max_per_kind,
        control: a.control,
        batch: a.batch,
        patch: !a.no_patch,
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!(
        "{} sequences, k = {} prefix tokens, m = {} decoded",
        r.sequences.len(),
        r.k,
        r.m
    );
    println!(
        "  {:<22} {:<9} {:>5} {:>6}  {:<22} {:>10}",
        "model", "kind", "n", "exact", "near-verbatim [95% CI]", "similarity"
    );
    for row in summary_rows(r) {
        println!(
            "  {:<22} {:<9} {:>5} {:>6}  {:<22} {:>10}",
            row[0], row[1], row[2], row[3], row[4], row[5]
        );
    }
    if let Some(c) = &r.comparison {
        println!(
            "small ⇒ large: precision {:.2} [{:.2}, {:.2}], recall {:.2} [{:.2}, {:.2}]; \
             Spearman ρ of similarities {:.3} [{:.3}, {:.3}] over {} sequences",
            c.precision,
            c.precision_ci.0,
            c.precision_ci.1,
            c.recall,
            c.recall_ci.0,
            c.recall_ci.1,
            c.spearman,
            c.spearman_ci.0,
            c.spearman_ci.1,
            c.n
        );
    }
    if let Some(t) = &r.trace {
        let heads: Vec<String> = t
            .top_heads
            .iter()
            .map(|(l, h, v)| format!("L{l}H{h} {v:.2}"))
            .collect();
        println!(
            "patching {} in {}: answer {} vs {}; heads restoring most: {}",
            t.id,
            t.model,
            t.answer,
            t.wrong,
            heads.join(", ")
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}
