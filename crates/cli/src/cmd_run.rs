//! `interplab run`: one prompt, the top next tokens, cached activations, a run directory.

use clap::Args;
use interplab_lab::prompt::{Config, ACTIVATIONS};

use crate::exec::{ModelArgs, OutArgs};

/// Arguments of `interplab run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long, required_unless_present_any = ["token_ids", "config"])]
    prompt: Option<String>,
    /// Token ids instead of a prompt, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "prompt")]
    token_ids: Option<Vec<u32>>,
    /// How many next tokens to show.
    #[arg(long, default_value_t = Config::default().top_k)]
    top_k: usize,
    /// Hook names or globs to cache, comma-separated (`*` for all).
    #[arg(long)]
    cache: Option<String>,
    /// The most bytes the cache may hold (default: the memory available, MemAvailable).
    #[arg(long)]
    max_cache_bytes: Option<u64>,
    /// Prepend BOS (default: what the model's tokenizer says).
    #[arg(long, overrides_with = "no_bos")]
    bos: bool,
    /// Do not prepend BOS.
    #[arg(long)]
    no_bos: bool,
    /// Format the prompt with the model's chat template.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    out: OutArgs,
}

/// Run one prompt, print the top next tokens and write a run directory.
pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let bos = if a.bos {
        Some(true)
    } else if a.no_bos {
        Some(false)
    } else {
        None
    };
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        prompt: a.prompt.clone(),
        token_ids: a.token_ids.clone(),
        top_k: a.top_k,
        cache: a.cache.clone(),
        bos,
        chat: a.chat,
        max_cache_bytes: a.max_cache_bytes,
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &outcome.results;
    println!(
        "prompt: {} tokens; next-token prediction:",
        r.token_ids.len()
    );
    println!(
        "{:>4}  {:>6}  {:>10}  {:>8}  token",
        "rank", "id", "logit", "prob"
    );
    for (i, t) in r.top_next.iter().enumerate() {
        println!(
            "{:>4}  {:>6}  {:>10.4}  {:>8.4}  {:?}",
            i + 1,
            t.id,
            t.logit,
            t.prob,
            t.token
        );
    }
    if let Some(cache) = outcome.tensors.get(ACTIVATIONS) {
        let bytes: usize = cache
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        println!(
            "cached {} activations ({:.1} MiB)",
            cache.len(),
            bytes as f64 / (1 << 20) as f64
        );
    }
    println!("run directory: {}", dir.display());
    Ok(())
}
