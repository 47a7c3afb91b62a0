//! `interplab sae eval`: saved SAEs evaluated on held-out text (the `sae-eval` experiment).

use std::path::PathBuf;

use clap::Args;

use crate::exec::{parse_count, ModelArgs, OutArgs};

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

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
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

/// One line per SAE: the held-out metrics.
pub fn print_table<'a>(
    rows: impl Iterator<Item = (&'a str, &'a interplab_sae::evaluate::Evaluation)>,
) {
    println!(
        "  {:<22} {:>7} {:>7} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>8}",
        "SAE", "L0", "FVU", "FVU-out", "shrink", "dead", "dense", "CE-rec 0", "CE-rec μ", "KL"
    );
    let mut out_rows = Vec::new();
    for (name, e) in rows {
        let (m, d) = (&e.metrics, &e.downstream);
        println!(
            "  {:<22} {:>7.2} {:>7.4} {:>8} {:>7.3} {:>6.2}% {:>6.2}% {:>9.3} {:>9.3} {:>8.4}",
            name,
            m.l0,
            m.fvu,
            m.fvu_without_outliers
                .map_or("—".to_string(), |v| format!("{v:.4}")),
            m.shrinkage,
            100.0 * m.dead,
            100.0 * m.dense,
            d.ce_recovered_zero,
            d.ce_recovered_mean,
            d.kl_sae
        );
        out_rows.push(m.outlier_rows);
    }
    if let Some(n) = out_rows.first() {
        println!("  FVU-out: FVU without the {n} rows whose norm exceeds 10× the median");
    }
}
