//! `interplab lens`: logit lens and direct logit attribution for a prompt.

use clap::Args;
use interplab_lab::lens::{top_tokens, Config};

use crate::exec::{ModelArgs, OutArgs};

/// Arguments of `interplab lens`.
#[derive(Args)]
pub struct LensArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long, required_unless_present = "config")]
    prompt: Option<String>,
    /// Token whose logit is attributed (one token; default: the model's top prediction).
    #[arg(long)]
    target: Option<String>,
    /// Attribute the logit difference target − contrast (one token).
    #[arg(long)]
    contrast: Option<String>,
    /// Position to read (negative counts from the end).
    #[arg(long, default_value_t = Config::default().position, allow_hyphen_values = true)]
    position: i64,
    /// Tokens to show per layer.
    #[arg(long, default_value_t = Config::default().top_k)]
    top_k: usize,
    #[command(flatten)]
    out: OutArgs,
}

/// Decode every layer and attribute the target's logit.
pub fn run(a: LensArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        prompt: a.prompt.clone().unwrap_or_default(),
        target: a.target.clone(),
        contrast: a.contrast.clone(),
        position: a.position,
        top_k: a.top_k,
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &outcome.results;
    let pos = r.position;
    println!(
        "logit lens at position {pos} ({}), target {}",
        r.show(r.tokens[pos]),
        r.show(r.target)
    );
    println!("  layer   p(target)  rank     logit   top tokens");
    for (l, ld) in r.lens.iter().zip(&r.lens_logit_diff) {
        println!(
            "  {:<6} {:>9.4}  {:>5}  {:>+8.3}   {}",
            l.name,
            l.target_prob[pos],
            l.target_rank.unwrap_or(0),
            ld,
            top_tokens(r, l)
        );
    }
    println!(
        "direct logit attribution of {}: total {:.4} (model {:.4})",
        r.attributed(),
        r.dla.total,
        r.dla.logit
    );
    let mut comps = r.dla.components.clone();
    comps.sort_by(|x, y| y.1.abs().total_cmp(&x.1.abs()));
    for (c, v) in comps.iter().take(8) {
        println!("  {c:<10} {v:+.4}");
    }
    println!("wrote {}", dir.display());
    Ok(())
}
