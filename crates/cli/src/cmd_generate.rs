//! `interplab generate`: text from a prompt, printed (not an experiment: no run directory).

use std::time::Instant;

use clap::Args;
use interplab_core::model::GenerateOptions;
use interplab_lab::prompt::prompt_ids;
use interplab_lab::Problems;

use crate::ui::load_model;

/// Arguments of `interplab generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Format the prompt with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling threshold, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Generate text and print it.
pub fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let mut p = Problems::new("generate");
    p.check(
        a.top_p > 0.0 && a.top_p <= 1.0,
        format!("top_p must be in (0, 1], got {}", a.top_p),
    )
    .check(
        a.temperature >= 0.0 && a.temperature.is_finite(),
        format!("temperature must be 0 or more, got {}", a.temperature),
    )
    .finish()?;
    let m = load_model(&a.model)?;
    let ids = prompt_ids(&m, &a.prompt, a.chat, None)?;
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        stop_ids: m.tokenizer.eos_ids().to_vec(),
    };
    let t0 = Instant::now();
    let out = m.model.generate(&ids, &opts, None)?;
    let secs = t0.elapsed().as_secs_f64();
    let shown: Vec<u32> = out
        .iter()
        .copied()
        .filter(|t| !opts.stop_ids.contains(t))
        .collect();
    println!("{}", m.tokenizer.decode(&shown)?);
    eprintln!(
        "({} tokens in {:.2} s, {:.1} tokens/s)",
        out.len(),
        secs,
        out.len() as f64 / secs
    );
    Ok(())
}
