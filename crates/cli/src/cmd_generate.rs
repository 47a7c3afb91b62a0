//! `interplab generate`: text from a prompt, printed (not an experiment: no run directory).

use std::time::Instant;

use clap::Args;
use interplab_core::model::GenerateOptions;
use interplab_lab::prompt::prompt_ids;

use interplab_core::loader::WeightStorage;

use crate::ui::{load_model_with, weight_storage};

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
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f64,
    /// Nucleus sampling threshold, in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f64,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Generate text and print it.
pub fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let mut opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        stop_ids: Vec::new(),
    };
    opts.validate()?;
    // Decode from the blocks where that gives the dense model's weights (Q4_1, Q8_0: 2-3x
    // faster at batch 1, see docs/performance.md), dense f32 for the rest; with
    // --quantized-weights everything stays as blocks (least memory); --dtype bf16 decodes
    // with the bf16 products.
    let m = if weight_storage() == WeightStorage::Bf16 {
        load_model_with(&a.model, WeightStorage::Bf16)?
    } else {
        let mut m = load_model_with(&a.model, WeightStorage::Quantized)?;
        if weight_storage() != WeightStorage::Quantized {
            m.model.weights.dense_where_inexact()?;
        }
        m
    };
    let ids = prompt_ids(&m, &a.prompt, a.chat, None)?;
    opts.stop_ids = m.tokenizer.eos_ids().to_vec();
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
