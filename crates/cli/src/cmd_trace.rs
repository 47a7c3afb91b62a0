//! `interplab trace`: causal tracing (ROME) of a factual prompt.

use clap::{Args, ValueEnum};
use interplab_lab::trace::{Config, Kind, Mode};

use crate::exec::{execute, ModelArgs, OutArgs};

/// How the subject is corrupted.
#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Noise on the subject's embeddings.
    Gaussian,
    /// Other subjects in its place.
    Resample,
}

/// Arguments of `interplab trace`.
#[derive(Args)]
pub struct TraceArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The factual prompt.
    #[arg(long, required_unless_present = "config")]
    prompt: Option<String>,
    /// The subject inside the prompt (its tokens are corrupted).
    #[arg(long, required_unless_present = "config")]
    subject: Option<String>,
    /// The answer token (one token; default: the clean run's top prediction).
    #[arg(long)]
    target: Option<String>,
    /// gaussian (noise on the subject's embeddings) or resample (other subjects).
    #[arg(long, value_enum, default_value = "gaussian")]
    mode: ModeArg,
    /// Noise samples (gaussian).
    #[arg(long, default_value_t = Config::default().samples)]
    samples: usize,
    /// Noise scale in embedding standard deviations (gaussian).
    #[arg(long, default_value_t = Config::default().noise)]
    noise: f64,
    /// Other subjects with the same token count, separated by '|' (resample; default: those of
    /// a built-in list of well-known subjects that have the subject's token count).
    #[arg(long)]
    alternatives: Option<String>,
    /// Layers restored together for MLP and attention traces.
    #[arg(long, default_value_t = Config::default().window)]
    window: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// Traces to run, comma-separated: hidden, mlp, attn.
    #[arg(long, default_value = "hidden,mlp,attn")]
    kinds: String,
    #[command(flatten)]
    out: OutArgs,
}

/// Trace, write the run directory and print what was found.
pub fn run(a: TraceArgs) -> anyhow::Result<()> {
    let kinds = Kind::parse_list(&a.kinds)?;
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        prompt: a.prompt.clone().unwrap_or_default(),
        subject: a.subject.clone().unwrap_or_default(),
        target: a.target.clone(),
        mode: match a.mode {
            ModeArg::Gaussian => Mode::Gaussian,
            ModeArg::Resample => Mode::Resample,
        },
        samples: a.samples,
        noise: a.noise,
        alternatives: a
            .alternatives
            .as_ref()
            .map(|s| s.split('|').map(str::to_string).collect()),
        window: a.window,
        seed: a.seed,
        kinds,
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    if let Some(tr) = cfg.kinds.first().and_then(|k| r.traces.get(k.name())) {
        println!(
            "answer {}: p(clean) {:.4}, p(corrupted) {:.4}, total effect {:.4}",
            r.answer_token,
            tr.clean_prob,
            tr.corrupted_prob,
            tr.total_effect()
        );
    }
    for (name, line) in &r.findings {
        println!("{name}: {line}");
    }
    println!("wrote {}", dir.display());
    Ok(())
}
