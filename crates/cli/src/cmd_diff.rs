//! `interplab diff`: per-token loss of two models on the same corpus, and where they differ.

use clap::Args;
use interplab_lab::diff::{head_rows, top_rows, Config};

use crate::exec::{execute, OutArgs};

/// Arguments of `interplab diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// Model A: alias, path, pip:... or hf:...
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    model_a: Option<String>,
    /// Model B (same tokenizer).
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    model_b: Option<String>,
    /// `sonnets` or `code` (the shipped sonnets and Rust sources) or a text or JSONL file.
    #[arg(long, default_value = "sonnets")]
    corpus: String,
    /// Documents to use at most.
    #[arg(long, default_value_t = Config::default().max_docs)]
    max_docs: usize,
    /// Tokens per document at most.
    #[arg(long, default_value_t = Config::default().max_tokens)]
    max_tokens: usize,
    /// Tokens to list.
    #[arg(long, default_value_t = Config::default().top)]
    top: usize,
    /// Heads to list per kind for each model (0: no head scores).
    #[arg(long, default_value_t = Config::default().top_heads)]
    top_heads: usize,
    #[command(flatten)]
    out: OutArgs,
}

/// Compare the two models, write the run directory and print the largest differences.
pub fn run(a: DiffArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model_a: a.model_a.clone().unwrap_or_default(),
        model_b: a.model_b.clone().unwrap_or_default(),
        corpus: a.corpus.clone(),
        max_docs: a.max_docs,
        max_tokens: a.max_tokens,
        top: a.top,
        top_heads: a.top_heads,
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results.diff;
    println!(
        "A {}: {:.4} nats/token   B {}: {:.4}   B − A {:+.4} ± {:.4} ({} documents, {} tokens)",
        cfg.model_a,
        r.mean_loss_a,
        cfg.model_b,
        r.mean_loss_b,
        r.mean_diff,
        r.stderr,
        r.n_docs,
        r.tokens.len()
    );
    for row in top_rows(&out.results.top) {
        println!(
            "  …{:<60} {:<14} A {:>6}  B {:>6}  {}",
            row[0], row[1], row[2], row[3], row[4]
        );
    }
    if !out.results.heads.is_empty() {
        println!("  {:<22} {:>4}  {:>14}  {:>14}", "heads", "rank", "A", "B");
        for row in head_rows(&out.results.heads) {
            println!(
                "  {:<22} {:>4}  {:>6} {:>7}  {:>6} {:>7}",
                row[0], row[1], row[2], row[3], row[4], row[5]
            );
        }
    }
    println!("wrote {}", dir.display());
    Ok(())
}
