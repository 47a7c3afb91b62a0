//! `interplab eval`: a task scored exactly as lm-evaluation-harness scores it, over a grid of
//! prompt variants.

use clap::Args;
use interplab_lab::eval::Config;

use crate::exec::{execute, ModelArgs, OutArgs};

/// Arguments of `interplab eval`.
#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A built-in task (truthfulqa_mc1, hhh_alignment, bbq), a harness YAML task file, or an
    /// agenda study: framing, persona, refusal, password, sycophancy, sensitivity, constitution.
    #[arg(long, default_value_t = Config::default().task)]
    task: String,
    /// Shots, one variant each (comma-separated; default: the task's num_fewshot).
    #[arg(long, value_delimiter = ',')]
    pub num_fewshot: Vec<usize>,
    /// A system prompt, one variant each (repeat the flag for several).
    #[arg(long)]
    system: Vec<String>,
    /// Score with the chat template off and on (two variants per cell); `--chat-only` for on.
    #[arg(long)]
    chat: bool,
    /// Only with the chat template.
    #[arg(long, conflicts_with = "chat")]
    pub chat_only: bool,
    /// Score the first N items only (0: all).
    #[arg(long, default_value_t = Config::default().limit)]
    pub limit: usize,
    /// Continuations (or generations) per forward pass.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
    /// Put BOS in front (default: as the harness, for Gemma only).
    #[arg(long)]
    pub add_bos: Option<bool>,
    /// Seed of the sampler (generate_until tasks that sample).
    #[arg(long, default_value_t = Config::default().seed)]
    pub seed: u64,
    /// Agenda studies: a judge model grading the harm of each response.
    #[arg(long)]
    pub judge: Option<String>,
    /// Agenda studies: harmful requests sampled from each set (default: the study's).
    #[arg(long)]
    pub per_set: Option<usize>,
    /// Agenda studies: new tokens per generation (default: the study's).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// constitution: critique → revision rounds after the initial response.
    #[arg(long)]
    pub rounds: Option<usize>,
    #[command(flatten)]
    pub out: OutArgs,
}

/// Score the task (or run the agenda study it names), print the table, write the run directory.
pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    match a.task.as_str() {
        "framing" => return crate::eval_framing::run(&a),
        "persona" => return crate::eval_persona::run(&a),
        "password" => return crate::eval_password::run(&a),
        "sycophancy" => return crate::eval_sycophancy::run(&a),
        "sensitivity" => return crate::eval_sensitivity::run(&a),
        "refusal" => return crate::eval_refusal::run(&a),
        "constitution" => return crate::eval_constitution::run(&a),
        _ => {}
    }
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        task: a.task.clone(),
        num_fewshot: a.num_fewshot.clone(),
        system: a.system.clone(),
        chat: match (a.chat, a.chat_only) {
            (true, _) => vec![false, true],
            (_, true) => vec![true],
            _ => Vec::new(),
        },
        limit: a.limit,
        batch: a.batch,
        add_bos: a.add_bos,
        seed: a.seed,
        ..Default::default()
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!("{} on {} items:", r.task, r.n_items);
    for v in &r.variants {
        let scores: Vec<String> = v
            .aggregates
            .iter()
            .map(|a| format!("{} {:.4} ± {:.4}", a.metric, a.value, a.stderr))
            .collect();
        let mut label = format!("{}-shot", v.num_fewshot);
        if let Some(s) = &v.options.system {
            label.push_str(&format!(", system {s:?}"));
        }
        if v.options.chat {
            label.push_str(", chat");
        }
        println!("  {label:<28} {}", scores.join("  "));
    }
    for c in &r.comparisons {
        let x = &c.comparison;
        println!(
            "  variant {} − variant 1, {}: {:+.4} [{:+.4}, {:+.4}], p = {:.4} ({}), MDE {:.4}",
            c.variant + 1,
            c.metric,
            x.effect,
            x.ci.0,
            x.ci.1,
            x.p_value,
            x.test,
            x.mde
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}
