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
//! - [`generate`]: batched generation cut at stop strings (`generate_until`).
//! - [`genscore`]: `generate_until` scoring as the harness: filter pipelines, `exact_match`.
//! - [`scorers`]: exact / includes / regex / numeric scorers of generated text, the refusal
//!   classifier with its known-answer set, the secret-leak detector, a yes/no reader.
//! - [`judge`]: yes/no answers read by log-likelihood, and model-graded scoring by a judge.
//! - [`data`]: the agenda's packaged data sets (source strings and parsers).

pub mod builtin;
pub mod data;
pub mod generate;
pub mod genscore;
pub mod judge;
pub mod loglik;
pub mod metrics;
pub mod pyrandom;
pub mod scorers;
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

/// Scores multiple-choice (or log-likelihood) requests, returned in order; `on_item` is called
/// with the number of items done. `acc_mutual_info` among `metrics` adds the unconditional
/// pass (each choice after the prefix token alone).
pub fn score_requests(
    scorer: &Scorer,
    requests: &[Request],
    metrics: &[String],
    on_item: &mut dyn FnMut(usize),
) -> Result<Vec<McItem>> {
    let mutual = metrics.iter().any(|m| m == "acc_mutual_info");
    let encode = |r: &Request, context: &str| {
        loglik::encode(scorer.tokenizer, context, &r.continuations, scorer.add_bos)
            .map_err(|e| Error::Input(format!("item {}: {}", r.doc, strip(e))))
    };
    let encs = requests
        .iter()
        .map(|r| encode(r, &r.context))
        .collect::<Result<Vec<_>>>()?;
    let shown: Vec<&[String]> = requests
        .iter()
        .map(|r| r.continuations.as_slice())
        .collect();
    let scored = scorer.score_encoded(&encs, &shown, on_item)?;
    let unconditional = if mutual {
        let encs = requests
            .iter()
            .map(|r| encode(r, ""))
            .collect::<Result<Vec<_>>>()?;
        Some(scorer.score_encoded(&encs, &shown, &mut |_| {})?)
    } else {
        None
    };
    Ok(requests
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let mut item = metrics::mc_item(
                r.doc,
                &r.choices,
                &r.gold,
                &scored[k],
                unconditional.as_ref().map(|u| u[k].as_slice()),
            );
            item.context = r.context.clone();
            item.choices = r.choices.clone();
            item
        })
        .collect())
}

/// Generates for `generate_until` requests and scores them as the harness
/// ([`genscore`]): the task's stop strings, filter pipelines and metrics; `opts` carries the
/// token budget, sampling and batch. Returned in request order.
pub fn score_generations(
    generator: &generate::Generator,
    task: &task::Task,
    requests: &[Request],
    opts: &generate::GenOptions,
    on_item: &mut dyn FnMut(usize),
) -> Result<Vec<genscore::GenItem>> {
    let pipelines = genscore::pipelines(task.file.filter_list.as_deref())?;
    let metrics = genscore::gen_metrics(task.file.metric_list.as_deref())?;
    let until = task.until();
    let gen_requests: Vec<generate::GenRequest> = requests
        .iter()
        .map(|r| generate::GenRequest {
            prompt: r.context.clone(),
            until: until.clone(),
        })
        .collect();
    let generated = generator.generate(&gen_requests, opts, on_item)?;
    Ok(requests
        .iter()
        .zip(&generated)
        .map(|(r, g)| genscore::gen_item(r.doc, g, &r.target, &pipelines, &metrics))
        .collect())
}

/// The `metric,pipeline` keys a `generate_until` task reports, in order.
pub fn generation_metric_keys(task: &task::Task) -> Result<Vec<String>> {
    let pipelines = genscore::pipelines(task.file.filter_list.as_deref())?;
    let metrics = genscore::gen_metrics(task.file.metric_list.as_deref())?;
    Ok(pipelines
        .iter()
        .flat_map(|p| {
            metrics
                .iter()
                .map(move |m| format!("{},{}", m.name, p.name))
        })
        .collect())
}

/// [`generate::GenOptions`] from the task's `generation_kwargs` (greedy unless `do_sample`).
pub fn generation_options(task: &task::Task, seed: u64, batch: usize) -> generate::GenOptions {
    let g = task.generation();
    generate::GenOptions {
        max_new_tokens: g.max_gen_toks,
        temperature: if g.do_sample { g.temperature } else { 0.0 },
        top_p: g.top_p.unwrap_or(1.0),
        seed,
        batch,
    }
}

fn strip(e: Error) -> String {
    match e {
        Error::Input(m) => m,
        other => other.to_string(),
    }
}
