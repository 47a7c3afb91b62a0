//! `interplab sae features`: feature cards for an SAE's latents (the `sae-features` experiment).

use std::path::PathBuf;

use clap::Args;

use crate::exec::{parse_count, ModelArgs, OutArgs};

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

pub fn run(a: FeaturesArgs) -> anyhow::Result<()> {
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
