//! `interplab run` and `interplab generate`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Tensor};
use clap::Args;
use interplab_core::model::{GenerateOptions, NameFilter};
use interplab_core::tokenizer::ChatMessage;
use serde_json::json;

use crate::rundir::RunDir;
use crate::ui::load_model;

/// Arguments of `interplab run`.
#[derive(Args)]
pub struct RunArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
    /// The prompt.
    #[arg(long, required_unless_present = "token_ids")]
    prompt: Option<String>,
    /// Token ids instead of a prompt, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "prompt")]
    token_ids: Option<Vec<u32>>,
    /// How many next tokens to show.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Hook names or globs to cache, comma-separated (`*` for all).
    #[arg(long)]
    cache: Option<String>,
    /// Run directory (default runs/run-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Prepend BOS (default: what the model's tokenizer says).
    #[arg(long, overrides_with = "no_bos")]
    bos: bool,
    /// Do not prepend BOS.
    #[arg(long)]
    no_bos: bool,
    /// Format the prompt with the model's chat template.
    #[arg(long)]
    chat: bool,
}

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
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn prompt_ids(
    m: &interplab_core::loader::LoadedModel,
    prompt: &str,
    chat: bool,
    bos: Option<bool>,
) -> anyhow::Result<Vec<u32>> {
    let text = if chat {
        let t = m
            .chat
            .as_ref()
            .context("this model has no chat template; drop --chat")?;
        t.render(&[ChatMessage::user(prompt)], true)
    } else {
        prompt.to_string()
    };
    let add_bos = bos.unwrap_or(m.tokenizer.add_bos_default());
    let ids = m.tokenizer.encode(&text, add_bos)?;
    if ids.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    if ids.len() > m.model.cfg.n_ctx {
        bail!(
            "the prompt is {} tokens, longer than the model's context of {}",
            ids.len(),
            m.model.cfg.n_ctx
        );
    }
    Ok(ids)
}

/// Display form of a token for tables.
pub fn show_token(m: &interplab_core::loader::LoadedModel, id: u32) -> String {
    let s = m
        .tokenizer
        .decode(&[id])
        .unwrap_or_else(|_| format!("<{id}>"));
    format!("{s:?}")
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
    let m = load_model(&a.model)?;
    let ids = match (&a.token_ids, &a.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(p)) => prompt_ids(&m, p, a.chat, bos)?,
        (None, None) => bail!("give --prompt or --token-ids"),
    };
    if ids.is_empty() {
        bail!("no tokens to run");
    }
    let tokens = Tensor::new(ids.as_slice(), m.model.device())?.unsqueeze(0)?;
    let t0 = Instant::now();
    let (logits, cache) = match &a.cache {
        Some(f) => {
            let filter = NameFilter::parse(f);
            let (logits, mut cache) = m.model.run_with_cache(&tokens, &filter)?;
            cache.insert("unembed.hook_out", logits.clone());
            (logits, Some(cache))
        }
        None => (m.model.forward(&tokens)?, None),
    };
    let forward_s = t0.elapsed().as_secs_f64();
    let last: Vec<f32> = logits
        .narrow(1, ids.len() - 1, 1)?
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1()?;
    let top = top_k(&last, a.top_k);
    println!("prompt: {} tokens; next-token prediction:", ids.len());
    println!(
        "{:>4}  {:>6}  {:>10}  {:>8}  token",
        "rank", "id", "logit", "prob"
    );
    for (r, t) in top.iter().enumerate() {
        println!(
            "{:>4}  {:>6}  {:>10.4}  {:>8.4}  {}",
            r + 1,
            t.0,
            t.1,
            t.2,
            show_token(&m, t.0)
        );
    }
    let dir = RunDir::create(a.out.as_deref(), "run")?;
    let top_json: Vec<_> = top
        .iter()
        .map(|(id, logit, p)| json!({"id": id, "token": m.tokenizer.decode(&[*id]).unwrap_or_default(), "logit": logit, "prob": p}))
        .collect();
    dir.write_json(
        "results.json",
        &json!({"prompt": a.prompt, "token_ids": ids, "top_next": top_json}),
    )?;
    if let Some(cache) = &cache {
        let path = dir.path.join("activations.safetensors");
        cache
            .save_safetensors(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "cached {} activations ({:.1} MiB)",
            cache.len(),
            cache.size_bytes() as f64 / (1 << 20) as f64
        );
    }
    dir.write_json(
        "manifest.json",
        &manifest(&m, "run", json!({"prompt": a.prompt, "chat": a.chat, "top_k": a.top_k, "cache": a.cache, "forward_seconds": forward_s}))?,
    )?;
    println!("run directory: {}", dir.path.display());
    Ok(())
}

/// `(id, logit, probability)` of the `k` largest logits, probabilities from a softmax in f64.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32, f64)> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(k);
    idx.into_iter()
        .map(|i| (i as u32, logits[i], (logits[i] as f64 - max).exp() / z))
        .collect()
}

/// The manifest every run directory gets: tool version, model provenance, config, arguments.
pub fn manifest(
    m: &interplab_core::loader::LoadedModel,
    command: &str,
    args: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    Ok(json!({
        "tool": "interplab",
        "version": env!("CARGO_PKG_VERSION"),
        "candle": "0.11.1",
        "command": command,
        "created_utc": crate::rundir::utc_stamp(),
        "model": {
            "source": m.resolved.source,
            "path": m.resolved.path,
            "sha256": m.resolved.sha256,
            "format": m.format,
            "config": serde_json::to_value(&m.model.cfg)?,
            "weights": if m.model.weights.has_quantized() { "quantized" } else { "dense" },
        },
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "args": args,
    }))
}

/// Generate text and print it.
pub fn generate(a: GenerateArgs) -> anyhow::Result<()> {
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
