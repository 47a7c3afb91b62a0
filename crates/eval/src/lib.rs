//! Interplab evals: behaviour measured the way lm-evaluation-harness measures it, on the
//! hooked runtime. Errors are [`interplab_core::Error`]; nothing here prints.
//!
//! Where things live:
//! - [`task`]: the harness's YAML task format (the subset read), data files, prompts with
//!   few-shot examples drawn as the harness draws them.
//! - [`template`]: the Jinja subset the task files use.
//! - [`pyrandom`]: Python's `random.Random(seed).sample`, bit for bit (few-shot draws).
//! - [`loglik`]: the harness's tokenisation of context and continuation, and log-likelihood
//!   scoring with the context run once.
//! - [`builtin`]: built-in tasks over packaged data (TruthfulQA MC1 from BIG-bench).
//! - [`metrics`]: per-item `acc`, `acc_norm`, `acc_mutual_info`, `exact_match` and their means
//!   with standard errors.

pub mod builtin;
pub mod loglik;
pub mod metrics;
pub mod pyrandom;
pub mod task;
pub mod template;

use interplab_core::{Error, Result};

use loglik::Scorer;
use metrics::McItem;
use task::{OutputType, Request};

/// The metrics a task reports: its `metric_list`, or the harness's defaults for its output
/// type (`acc`, `acc_norm` for multiple choice; `perplexity`, `acc` for log-likelihood).
pub fn task_metrics(task: &task::Task) -> Vec<String> {
    match &task.file.metric_list {
        Some(list) => list.iter().map(|m| m.metric.clone()).collect(),
        None => match task.file.output_type {
            OutputType::MultipleChoice => vec!["acc".into(), "acc_norm".into()],
            OutputType::Loglikelihood => vec!["perplexity".into(), "acc".into()],
            OutputType::GenerateUntil => vec!["exact_match".into()],
        },
    }
}

/// Scores multiple-choice (or log-likelihood) requests in order; `on_item` is called after
/// each with the number done. `acc_mutual_info` among `metrics` adds the unconditional pass.
pub fn score_requests(
    scorer: &Scorer,
    requests: &[Request],
    metrics: &[String],
    on_item: &mut dyn FnMut(usize),
) -> Result<Vec<McItem>> {
    let mutual = metrics.iter().any(|m| m == "acc_mutual_info");
    let mut items = Vec::with_capacity(requests.len());
    for (k, r) in requests.iter().enumerate() {
        let at = |e: Error| Error::Input(format!("item {}: {}", r.doc, strip(e)));
        let scored = scorer.score(&r.context, &r.continuations).map_err(at)?;
        let unconditional = if mutual {
            Some(scorer.score("", &r.continuations).map_err(at)?)
        } else {
            None
        };
        items.push(metrics::mc_item(
            r.doc,
            &r.choices,
            &r.gold,
            &scored,
            unconditional.as_deref(),
        ));
        on_item(k + 1);
    }
    Ok(items)
}

fn strip(e: Error) -> String {
    match e {
        Error::Input(m) => m,
        other => other.to_string(),
    }
}
