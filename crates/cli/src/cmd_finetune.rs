//! `interplab finetune`: full fine-tuning with checkpoints and resume, then before vs after.

use clap::Args;
use interplab_lab::finetune::{Config, Stopped};
use interplab_train::finetune::FinetuneConfig;

use crate::exec::{ModelArgs, OutArgs};

/// Arguments of `interplab finetune`.
#[derive(Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Fine-tuning corpus: sonnets, code, or a text or JSONL file.
    #[arg(long, default_value_t = Config::default().corpus)]
    corpus: String,
    /// General text for the side effect: builtin (licences, passages, code) or a corpus.
    #[arg(long, default_value_t = Config::default().general)]
    general: String,
    /// Optimiser steps.
    #[arg(long, default_value_t = FinetuneConfig::default().steps)]
    steps: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = FinetuneConfig::default().batch)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = FinetuneConfig::default().seq_len)]
    seq_len: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = FinetuneConfig::default().lr)]
    lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = FinetuneConfig::default().warmup)]
    warmup: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = FinetuneConfig::default().weight_decay)]
    weight_decay: f64,
    /// Seed of the batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Multiply in bf16 with f32 sums, forward and backward (mixed precision; weights and
    /// optimiser state stay f32). Fast on CPUs with AMX.
    #[arg(long)]
    bf16_products: bool,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = Config::default().checkpoint_every)]
    checkpoint_every: usize,
    /// Continue an interrupted run in --out from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps as if interrupted (for testing --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    #[command(flatten)]
    out: OutArgs,
}

/// Fine-tune, compare, print the answer.
pub fn run(a: FinetuneArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        corpus: a.corpus.clone(),
        general: a.general.clone(),
        train: FinetuneConfig {
            steps: a.steps,
            batch: a.batch,
            seq_len: a.seq_len,
            lr: a.lr,
            warmup: a.warmup,
            weight_decay: a.weight_decay,
            seed: a.seed,
            bf16_products: a.bf16_products,
        },
        checkpoint_every: a.checkpoint_every,
        stop_after: a.stop_after,
        ..Default::default()
    })?;
    let (out, dir) = match crate::exec::execute(&cfg, &a.out, a.out.existing(a.resume)) {
        Err(e) if e.downcast_ref::<Stopped>().is_some() => {
            eprintln!("{e}");
            return Ok(());
        }
        r => r?,
    };
    let r = &out.results;
    println!(
        "held-out {}: {:.4} → {:.4} nats/token; general text: {:.4} → {:.4}",
        cfg.corpus, r.held_out.before, r.held_out.after, r.general.before, r.general.after
    );
    println!("{}", r.verdict);
    println!("wrote {}", dir.display());
    Ok(())
}
