//! `interplab sae train|eval|features`: sparse autoencoders and transcoders on a model's
//! activations (the `sae-train`, `sae-eval` and `sae-features` experiments).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use interplab_lab::sae_train::{Config as TrainCfg, Normalise, Variant};

use crate::exec::{ModelArgs, OutArgs};

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
    Eval(EvalArgs),
    /// Feature cards: top contexts, quantile samples, logit effects, nearest latents.
    Features(FeaturesArgs),
}

/// A token count: `5000000`, `5M`, `500k`.
fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G' | 'b' | 'B') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a count (e.g. 5000000, 5M, 500k)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("`{s}` is not a count"));
    }
    Ok((v * mult).round() as u64)
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
    #[command(flatten)]
    out: OutArgs,
}

/// The SAEs the flags ask for: each architecture with each of its K or coefficients.
fn variants(arch: &[String], k: &[usize], coef: &[f64]) -> Vec<Variant> {
    let mut out = Vec::new();
    for a in arch {
        match a.as_str() {
            "topk" | "batchtopk" => out.extend(k.iter().map(|&k| Variant {
                arch: a.clone(),
                k,
                coefficient: 0.0,
            })),
            _ => out.extend(coef.iter().map(|&c| Variant {
                arch: a.clone(),
                k: 0,
                coefficient: c,
            })),
        }
    }
    out
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let (hook, hook_out) = if a.transcoder {
        let l = interplab_sae::store::hook_layer(&a.hook).ok_or_else(|| {
            anyhow::anyhow!(
                "--transcoder needs a block hook (blocks.L.…), got `{}`",
                a.hook
            )
        })?;
        (
            format!("blocks.{l}.ln2.hook_normalized"),
            Some(format!("blocks.{l}.hook_mlp_out")),
        )
    } else {
        (a.hook.clone(), None)
    };
    let cfg = a.out.config_or(|| TrainCfg {
        model: a.model.source(),
        corpus: a.corpus.clone(),
        hook,
        hook_out,
        saes: variants(&a.arch, &a.k, &a.coefficient),
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

/// One line per SAE: the held-out metrics.
pub fn print_table<'a>(
    rows: impl Iterator<Item = (&'a str, &'a interplab_sae::evaluate::Evaluation)>,
) {
    println!(
        "  {:<22} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>8}",
        "SAE", "L0", "FVU", "shrink", "dead", "dense", "CE-rec 0", "CE-rec μ", "KL"
    );
    for (name, e) in rows {
        let (m, d) = (&e.metrics, &e.downstream);
        println!(
            "  {:<22} {:>7.2} {:>7.4} {:>7.3} {:>6.2}% {:>6.2}% {:>9.3} {:>9.3} {:>8.4}",
            name,
            m.l0,
            m.fvu,
            m.shrinkage,
            100.0 * m.dead,
            100.0 * m.dense,
            d.ce_recovered_zero,
            d.ce_recovered_mean,
            d.kl_sae
        );
    }
}

/// Arguments of `interplab sae eval`.
#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// SAE folders in SAELens' layout (cfg.json + sae_weights.safetensors).
    #[arg(long, value_delimiter = ',', required_unless_present = "config")]
    sae: Vec<PathBuf>,
    /// Corpus whose held-out documents are evaluated.
    #[arg(long, default_value_t = interplab_lab::sae_eval::Config::default().corpus)]
    corpus: String,
    /// Held-out tokens for FVU, L0, dead and dense latents.
    #[arg(long, value_parser = parse_count, default_value = "65536")]
    eval_tokens: u64,
    /// Held-out tokens for CE recovered and KL.
    #[arg(long, value_parser = parse_count, default_value = "8192")]
    ce_tokens: u64,
    /// Tokens per sequence (as in training, to read the same held-out tokens).
    #[arg(long, default_value_t = interplab_lab::sae_eval::Config::default().context)]
    context: usize,
    #[command(flatten)]
    out: OutArgs,
}

fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| interplab_lab::sae_eval::Config {
        model: a.model.source(),
        saes: a.sae.clone(),
        corpus: a.corpus.clone(),
        eval_tokens: a.eval_tokens,
        ce_tokens: a.ce_tokens,
        context: a.context,
        ..Default::default()
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &outcome.results;
    print_table(r.saes.iter().map(|s| (s.path.as_str(), &s.eval)));
    println!("wrote {}", dir.display());
    Ok(())
}

/// Arguments of `interplab sae features`.
#[derive(Args)]
pub struct FeaturesArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The SAE folder (SAELens layout).
    #[arg(long, required_unless_present = "config")]
    sae: Option<PathBuf>,
    /// Latents to make cards for (default: --cards latents spread over the density range).
    #[arg(long, value_delimiter = ',')]
    latents: Vec<usize>,
    /// Cards when --latents is not given.
    #[arg(long, default_value_t = interplab_lab::sae_features::Config::default().cards)]
    cards: usize,
    /// Held-out tokens read.
    #[arg(long, value_parser = parse_count, default_value = "131072")]
    tokens: u64,
    /// Corpus whose held-out documents are read.
    #[arg(long, default_value_t = interplab_lab::sae_features::Config::default().corpus)]
    corpus: String,
    #[command(flatten)]
    out: OutArgs,
}

fn features(a: FeaturesArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| interplab_lab::sae_features::Config {
        model: a.model.source(),
        sae: a.sae.clone().unwrap_or_default(),
        latents: a.latents.clone(),
        cards: a.cards,
        tokens: a.tokens,
        corpus: a.corpus.clone(),
        ..Default::default()
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &outcome.results;
    println!(
        "{} held-out tokens read; {} of {} latents fired; {} cards",
        r.tokens,
        r.alive,
        r.d_sae,
        r.cards.len()
    );
    for c in &r.cards {
        let top: Vec<String> = c.top_logits.iter().take(5).map(|t| t.0.clone()).collect();
        println!(
            "  latent {:>5}  density {:.2e}  max {:>7.3}  top logits {}",
            c.latent,
            c.density,
            c.max_activation,
            top.join(" ")
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}

/// Run one SAE command.
pub fn run(a: SaeArgs) -> anyhow::Result<()> {
    match a.command {
        SaeCommand::Train(a) => train(a),
        SaeCommand::Eval(a) => eval(a),
        SaeCommand::Features(a) => features(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_with_suffixes() {
        assert_eq!(parse_count("5M"), Ok(5_000_000));
        assert_eq!(parse_count("500k"), Ok(500_000));
        assert_eq!(parse_count("1.5m"), Ok(1_500_000));
        assert_eq!(parse_count("4096"), Ok(4096));
        assert!(parse_count("lots").is_err());
    }

    #[test]
    fn flags_make_one_sae_per_k_and_coefficient() {
        let v = variants(
            &["topk".into(), "relu".into()],
            &[16, 32, 64],
            &[1.0, 3.0, 10.0],
        );
        let names: Vec<String> = v.iter().map(Variant::name).collect();
        assert_eq!(
            names,
            [
                "topk-k16",
                "topk-k32",
                "topk-k64",
                "relu-l1-1",
                "relu-l1-3",
                "relu-l1-10"
            ]
        );
    }
}
