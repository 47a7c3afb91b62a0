//! `interplab patch`: activation patching between a clean and a corrupted prompt.

use clap::{Args, ValueEnum};
use interplab_lab::patch::{Config, MetricName, Site};

use crate::exec::{execute, ModelArgs, OutArgs};

/// What is measured at the last position.
#[derive(Clone, Copy, ValueEnum)]
enum MetricArg {
    /// Normalised logit difference (0 = corrupted, 1 = clean); needs --answer and --wrong.
    LogitDiff,
    /// Probability of the answer; needs --answer.
    Prob,
    /// KL divergence to the clean run.
    Kl,
}

impl From<MetricArg> for MetricName {
    fn from(m: MetricArg) -> Self {
        match m {
            MetricArg::LogitDiff => MetricName::LogitDiff,
            MetricArg::Prob => MetricName::Prob,
            MetricArg::Kl => MetricName::Kl,
        }
    }
}

/// Arguments of `interplab patch`.
#[derive(Args)]
pub struct PatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The clean prompt.
    #[arg(long, required_unless_present = "config")]
    clean: Option<String>,
    /// The corrupted prompt (same number of tokens).
    #[arg(long, required_unless_present = "config")]
    corrupt: Option<String>,
    /// The answer token of the clean prompt (one token, e.g. " Mary").
    #[arg(long)]
    answer: Option<String>,
    /// The competing token (one token, e.g. " John"), for the logit difference.
    #[arg(long)]
    wrong: Option<String>,
    /// logit-diff (normalised: 0 = corrupted, 1 = clean), prob (of the answer), kl (to clean).
    #[arg(long, value_enum, default_value = "logit-diff")]
    metric: MetricArg,
    /// Sites, comma-separated: resid_pre, resid_mid, resid_post, attn_out, mlp_out (per
    /// position) and z, q, k, v, pattern (per head, all positions).
    #[arg(long, default_value = "resid_pre,attn_out,mlp_out,z")]
    sites: String,
    /// Prepend BOS (default: what the model's tokenizer says).
    #[arg(long, overrides_with = "no_bos")]
    bos: bool,
    /// Do not prepend BOS.
    #[arg(long)]
    no_bos: bool,
    /// Also patch residual / attention / MLP sites over all positions at once (one value per
    /// layer).
    #[arg(long)]
    all_positions: bool,
    /// Also patch this head (`LAYER.HEAD`) at each position, for the per-head sites chosen.
    #[arg(long)]
    head: Option<String>,
    /// Also run attribution patching (two forwards, one backward) for the same sites and report
    /// its agreement with activation patching.
    #[arg(long)]
    attribution: bool,
    #[command(flatten)]
    out: OutArgs,
}

/// Run the sweeps, write the run directory and print the largest effects.
pub fn run(a: PatchArgs) -> anyhow::Result<()> {
    let sites = Site::parse_list(&a.sites)?;
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        clean: a.clean.clone().unwrap_or_default(),
        corrupt: a.corrupt.clone().unwrap_or_default(),
        answer: a.answer.clone(),
        wrong: a.wrong.clone(),
        metric: a.metric.into(),
        sites,
        bos: match (a.bos, a.no_bos) {
            (_, true) => Some(false),
            (true, false) => Some(true),
            (false, false) => None,
        },
        all_positions: a.all_positions,
        head: a.head.clone(),
        attribution: a.attribution,
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!(
        "clean {:.4}  corrupted {:.4}  ({} tokens)",
        r.clean_raw,
        r.corrupted_raw,
        r.clean_tokens.len()
    );
    for t in &r.top_effects {
        println!("{}: largest effects", t.site);
        for (l, x, v) in &t.cells {
            println!("  layer {l:>2}  {} {x:<16} {v:+.4}", t.x_label);
        }
    }
    if cfg.attribution {
        println!("attribution patching vs activation patching:");
        for site in Site::ALL {
            let base = site.name();
            if let Some(at) = r.attribution.get(&format!("{base}_attribution")) {
                let ag = &at.agreement;
                println!(
                    "  {base:<10} correlation {:+.3}  top-10 overlap {:.0}%  sign agreement {:.0}%",
                    ag.correlation,
                    100.0 * ag.top_k_overlap,
                    100.0 * ag.sign_agreement
                );
            }
        }
    }
    println!("wrote {}", dir.display());
    Ok(())
}
