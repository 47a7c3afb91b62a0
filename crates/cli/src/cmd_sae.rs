//! `interplab sae train|eval|features`: sparse autoencoders and transcoders on a model's
//! activations (the `sae-train`, `sae-eval` and `sae-features` experiments).

pub mod eval;
pub mod features;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use interplab_lab::sae_train::{transcoder_hooks, Config as TrainCfg, Normalise, Variant};

use crate::exec::{parse_count, ModelArgs, OutArgs};
use eval::print_table;

/// Arguments of `interplab sae`.
#[derive(Args)]
pub struct SaeArgs {
    #[command(subcommand)]
    command: SaeCommand,
}

/// The SAE commands.
#[derive(Subcommand)]
pub enum SaeCommand {
    /// Train SAEs (or a transcoder) on activations over a corpus, evaluate on held-out text.
    Train(TrainArgs),
    /// Evaluate saved SAEs (SAELens layout) on held-out text: FVU, L0, CE recovered, KL.
    Eval(eval::EvalArgs),
    /// Feature cards: top contexts, quantile samples, logit effects, nearest latents.
    Features(features::FeaturesArgs),
}

/// Arguments of `interplab sae train`.
#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Hook read (with --transcoder: any hook of the layer; the transcoder reads
    /// `blocks.L.ln2.hook_normalized` and predicts `blocks.L.hook_mlp_out`).
    #[arg(long, default_value_t = TrainCfg::default().hook)]
    hook: String,
    /// Train transcoders (MLP input → MLP output) instead of SAEs.
    #[arg(long)]
    transcoder: bool,
    /// Architectures, comma-separated: relu, topk, batchtopk, jumprelu.
    #[arg(long, value_delimiter = ',', default_value = "topk")]
    arch: Vec<String>,
    /// K of topk/batchtopk; several (comma-separated) train one SAE each.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    k: Vec<usize>,
    /// Sparsity coefficients of relu (L1) and jumprelu (L0); one SAE each.
    #[arg(long = "l1", value_delimiter = ',', default_value = "5")]
    coefficient: Vec<f64>,
    /// Latents per SAE.
    #[arg(long, default_value_t = TrainCfg::default().latents)]
    latents: usize,
    /// Training tokens (5M, 500k, …).
    #[arg(long, value_parser = parse_count, default_value = "5M")]
    tokens: u64,
    /// Corpus: docs-and-plays, or a text or JSONL file.
    #[arg(long, default_value_t = TrainCfg::default().corpus)]
    corpus: String,
    /// Rows per training step.
    #[arg(long, default_value_t = TrainCfg::default().batch_size)]
    batch_size: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = TrainCfg::default().context)]
    context: usize,
    /// Shuffle-buffer capacity in rows (bounds the store's memory).
    #[arg(long, value_parser = parse_count, default_value = "131072")]
    buffer: u64,
    /// Learning rate.
    #[arg(long, default_value_t = TrainCfg::default().lr)]
    lr: f64,
    /// Train on raw activations instead of scaling them to mean norm √d.
    #[arg(long)]
    no_normalise: bool,
    /// Keep BOS / end-of-text positions.
    #[arg(long)]
    keep_special: bool,
    /// Held-out tokens for FVU, L0, dead and dense latents.
    #[arg(long, value_parser = parse_count, default_value = "65536")]
    eval_tokens: u64,
    /// Held-out tokens for CE recovered and KL.
    #[arg(long, value_parser = parse_count, default_value = "8192")]
    ce_tokens: u64,
    /// Also write the harvested activations as safetensors shards into this new folder.
    #[arg(long)]
    save_activations: Option<PathBuf>,
    /// Train from shards written by --save-activations instead of running the model.
    #[arg(long)]
    activations: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint every this many steps (0: never).
    #[arg(long, default_value_t = TrainCfg::default().checkpoint_every)]
    checkpoint_every: u64,
    /// Continue an interrupted run in --out from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps as if interrupted (for testing --resume).
    #[arg(long)]
    stop_after: Option<u64>,
    /// The SAEs' dense products in bf16 with f32 sums (mixed precision; weights and
    /// optimiser state stay f32). Fast on CPUs with AMX. `--dtype bf16` is the model's.
    #[arg(long)]
    bf16_products: bool,
    #[command(flatten)]
    out: OutArgs,
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let (hook, hook_out) = if a.transcoder {
        let (i, o) = transcoder_hooks(&a.hook)?;
        (i, Some(o))
    } else {
        (a.hook.clone(), None)
    };
    let cfg = a.out.config_or(|| TrainCfg {
        model: a.model.source(),
        corpus: a.corpus.clone(),
        hook,
        hook_out,
        saes: Variant::grid(&a.arch, &a.k, &a.coefficient),
        latents: a.latents,
        tokens: a.tokens,
        context: a.context,
        batch_size: a.batch_size,
        buffer_tokens: a.buffer as usize,
        lr: a.lr,
        normalise: if a.no_normalise {
            Normalise::None
        } else {
            Normalise::ExpectedNorm
        },
        exclude_special: !a.keep_special,
        eval_tokens: a.eval_tokens,
        ce_tokens: a.ce_tokens,
        save_activations: a.save_activations.clone(),
        activations: a.activations.clone(),
        checkpoint_every: a.checkpoint_every,
        stop_after: a.stop_after,
        seed: a.seed,
        bf16_products: a.bf16_products,
        ..Default::default()
    })?;
    let (outcome, dir) = match crate::exec::execute(&cfg, &a.out, a.out.existing(a.resume)) {
        Err(e)
            if e.downcast_ref::<interplab_lab::finetune::Stopped>()
                .is_some() =>
        {
            eprintln!("{e}");
            return Ok(());
        }
        r => r?,
    };
    let r = &outcome.results;
    println!(
        "{} latents on `{}`{}: {} tokens, {} steps",
        r.latents,
        r.hook,
        r.hook_out
            .as_ref()
            .map(|o| format!(" → `{o}`"))
            .unwrap_or_default(),
        r.tokens,
        r.steps
    );
    print_table(r.saes.iter().map(|s| (s.name.as_str(), &s.eval)));
    println!("wrote {}", dir.display());
    Ok(())
}

/// Run one SAE command.
pub fn run(a: SaeArgs) -> anyhow::Result<()> {
    match a.command {
        SaeCommand::Train(a) => train(a),
        SaeCommand::Eval(a) => eval::run(a),
        SaeCommand::Features(a) => features::run(a),
    }
}
