//! `interplab ablate`: rank heads by the loss increase when each is ablated over a corpus.

use clap::{Args, ValueEnum};
use interplab_lab::ablate::{Config, Method};

use crate::exec::{ModelArgs, OutArgs};

/// How a head's output is removed.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum MethodArg {
    Zero,
    Mean,
    Resample,
}

/// Arguments of `interplab ablate`.
#[derive(Args)]
pub struct AblateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// `sonnets` (shipped) or a text (documents separated by blank lines) or JSONL (`"text"`
    /// field) file.
    #[arg(long, default_value = "sonnets")]
    corpus: String,
    /// How heads are ablated.
    #[arg(long, value_enum, default_value_t = MethodArg::Zero)]
    method: MethodArg,
    /// Documents to use at most.
    #[arg(long, default_value_t = Config::default().max_docs)]
    max_docs: usize,
    /// Tokens per document at most.
    #[arg(long, default_value_t = Config::default().max_tokens)]
    max_tokens: usize,
    /// Seed of resample ablation.
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// Heads to list.
    #[arg(long, default_value_t = Config::default().top_k)]
    top_k: usize,
    #[command(flatten)]
    out: OutArgs,
}

/// Ablate every head and write the run directory.
pub fn run(a: AblateArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        corpus: a.corpus.clone(),
        method: match a.method {
            MethodArg::Zero => Method::Zero,
            MethodArg::Mean => Method::Mean,
            MethodArg::Resample => Method::Resample,
        },
        max_docs: a.max_docs,
        max_tokens: a.max_tokens,
        seed: a.seed,
        top_k: a.top_k,
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &outcome.results;
    println!(
        "clean loss {:.4} nats over {} documents, {} tokens ({} ablation)",
        r.result.clean_loss,
        r.result.n_docs,
        r.result.n_tokens,
        cfg.method.name()
    );
    println!("  head    Δloss     ±se      kind");
    for ((l, h, v, se), kind) in r.top.iter().zip(&r.top_kinds) {
        println!("  {:<6} {v:+.4}  {se:.4}   {kind}", format!("{l}.{h}"));
    }
    println!("wrote {}", dir.display());
    Ok(())
}
