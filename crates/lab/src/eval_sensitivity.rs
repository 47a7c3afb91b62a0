//! `eval-sensitivity`: how much does TruthfulQA MC1 accuracy (or another built-in task's: `task`)
//! move with the prompt's wording and the number of shots? The built-in task
//! ([`crate::eval::load_task`]) is re-templated
//! ([`interplab_eval::task::Task::with_doc_to_text`]: the shots and the question alike) and
//! scored exactly as lm-evaluation-harness scores it ([`interplab_eval::score_requests`]) in
//! every cell of templates × shots. The first cell (the first template at the first shot
//! count: the harness's own `Q: … A:` at 0 shots by default) is the baseline; every other cell
//! is paired against it on the same items (exact McNemar, paired-bootstrap interval, MDE).
//! The spread is the largest minus the smallest cell accuracy. Pooled accuracies (per
//! template, per shot count, overall) carry standard errors clustered by item, since one
//! question appears in several cells, and the overall one also clustered by template.

use std::collections::BTreeSet;

use interplab_analysis::stats::{clustered_stderr, mean_stderr, Comparison};
use interplab_core::config::Architecture;
use interplab_eval::builtin;
use interplab_eval::loglik::Scorer;
use interplab_eval::metrics::McItem;
use interplab_eval::score_requests;
use interplab_eval::task::PromptOptions;
use interplab_report::{BarChart, Figure, Report};
use serde::{Deserialize, Serialize};

use crate::eval::load_task;
use crate::rate::Rate;
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// A named `doc_to_text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplate {
    pub name: String,
    /// A template over the item's fields (`{{question}}`), or a field's name.
    pub doc_to_text: String,
}

/// The default template axis: the harness's, a spelled-out one, and the bare question.
pub fn default_templates() -> Vec<PromptTemplate> {
    let t = |name: &str, text: &str| PromptTemplate {
        name: name.into(),
        doc_to_text: text.into(),
    };
    vec![
        t("Q/A", "Q: {{question}}\nA:"),
        t("Question", "Question: {{question}}\nAnswer:"),
        t("bare", "{{question}}"),
    ]
}

/// The config of `eval-sensitivity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// A built-in task (`truthfulqa_mc1`, `hhh_alignment`, `bbq`); its items have a
    /// `question` field for the templates.
    pub task: String,
    /// The template axis; the first is the baseline's.
    pub templates: Vec<PromptTemplate>,
    /// The shots axis; the first is the baseline's.
    pub shots: Vec<usize>,
    /// The first `limit` items only (0: all).
    pub limit: usize,
    /// Continuations per forward pass.
    pub batch: usize,
    /// Put BOS in front (unset: for Gemma models only, as the harness).
    pub add_bos: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            task: "truthfulqa_mc1".into(),
            templates: default_templates(),
            shots: vec![0, 1, 2],
            limit: 0,
            batch: 16,
            add_bos: None,
        }
    }
}

/// One template × shots cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub template: String,
    pub shots: usize,
    /// acc with its Wilson 95% interval.
    pub acc: Rate,
    /// acc_norm with its Wilson 95% interval.
    pub acc_norm: Rate,
    /// The first item's prompt as the model read it.
    pub example_prompt: String,
    /// Per item: the likeliest choice is correct.
    pub correct: Vec<bool>,
}

/// A cell against the baseline cell.
#[derive(Debug, Clone, Serialize)]
pub struct CellComparison {
    pub cell: usize,
    /// acc(cell) − acc(baseline).
    pub comparison: Comparison,
}

/// A pooled accuracy with its standard errors.
#[derive(Debug, Clone, Serialize)]
pub struct Pooled {
    pub name: String,
    pub n: usize,
    pub acc: f64,
    /// As if every (cell, item) were independent.
    pub naive_se: f64,
    /// Clustered by item (one question in several cells).
    pub se_by_item: f64,
    /// Clustered by template (overall only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub se_by_template: Option<f64>,
}

/// The results of `eval-sensitivity`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The task scored (empty from [`summarise`] alone).
    pub task: String,
    pub n_items: usize,
    pub add_bos: bool,
    /// Template-major, then shots.
    pub cells: Vec<Cell>,
    /// Largest minus smallest cell accuracy, and the cells that give them.
    pub spread: f64,
    pub best: usize,
    pub worst: usize,
    pub comparisons: Vec<CellComparison>,
    pub per_template: Vec<Pooled>,
    pub per_shots: Vec<Pooled>,
    pub overall: Pooled,
}

impl Experiment for Config {
    const NAME: &'static str = "eval-sensitivity";
    const QUESTION: &'static str =
        "How much does a multiple-choice task's accuracy (TruthfulQA MC1 by default) change with the prompt template and the number of shots?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model is empty")
            .check(!self.templates.is_empty(), "no templates")
            .check(!self.shots.is_empty(), "no shot counts")
            .positive("batch", self.batch);
        p.check(
            builtin::NAMES.contains(&self.task.as_str()),
            format!(
                "task {:?} is not a built-in task ({})",
                self.task,
                builtin::NAMES.join(", ")
            ),
        );
        let names: BTreeSet<&str> = self.templates.iter().map(|t| t.name.as_str()).collect();
        p.check(names.len() == self.templates.len(), "template names repeat");
        for t in &self.templates {
            p.check(
                !t.doc_to_text.trim().is_empty(),
                format!("template {:?} is empty", t.name),
            );
        }
        let shots: BTreeSet<usize> = self.shots.iter().copied().collect();
        p.check(shots.len() == self.shots.len(), "shot counts repeat");
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            // BBQ, not the default TruthfulQA: BIG-bench's sdist is gone from PyPI (see
            // [`crate::eval::TRUTHFULQA_MC`]), and the tour must run where the data can be
            // fetched.
            task: "bbq".into(),
            shots: vec![0, 1],
            limit: 6,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `eval-sensitivity`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    progress.phase("reading the task");
    let task = load_task(&cfg.task)?;
    let add_bos = cfg
        .add_bos
        .unwrap_or(m.model.cfg.architecture == Architecture::Gemma3);
    let scorer = Scorer {
        model: &m.model,
        tokenizer: &m.tokenizer,
        add_bos,
        batch: cfg.batch,
    };
    let limit = (cfg.limit > 0).then_some(cfg.limit);
    let metrics = vec!["acc".to_string(), "acc_norm".to_string()];
    // Every cell's prompts first, so a bad template fails before any scoring.
    let mut grid = Vec::new();
    for t in &cfg.templates {
        let retemplated = task.with_doc_to_text(&t.doc_to_text)?;
        for &n in &cfg.shots {
            let options = PromptOptions {
                num_fewshot: Some(n),
                ..Default::default()
            };
            grid.push((
                t.name.clone(),
                n,
                retemplated.requests(&options, None, limit)?,
            ));
        }
    }
    let n_cells = grid.len();
    let mut cells = Vec::new();
    for (k, (template, shots, requests)) in grid.into_iter().enumerate() {
        progress.phase(&format!(
            "cell {} of {n_cells}: {template}, {shots}-shot",
            k + 1
        ));
        progress.total(requests.len() as u64, "items");
        let items = score_requests(&scorer, &requests, &metrics, &mut |d| {
            progress.position(d as u64)
        })?;
        cells.push(cell(
            template,
            shots,
            requests
                .first()
                .map(|r| r.context.clone())
                .unwrap_or_default(),
            &items,
        ));
    }
    let results = Results {
        task: cfg.task.clone(),
        ..summarise(cells, add_bos)?
    };
    let (report, figure) = render(cfg, &results);
    let mut out = Outcome::new(results, report);
    out.figure("accuracy", figure);
    Ok(out)
}

fn cell(template: String, shots: usize, example_prompt: String, items: &[McItem]) -> Cell {
    let correct: Vec<bool> = items.iter().map(|i| i.acc > 0.5).collect();
    Cell {
        template,
        shots,
        acc: Rate::count(correct.iter().copied()),
        acc_norm: Rate::count(items.iter().map(|i| i.acc_norm > 0.5)),
        example_prompt,
        correct,
    }
}

/// The spread, the comparisons with the baseline (cell 0) and the pooled accuracies.
pub fn summarise(cells: Vec<Cell>, add_bos: bool) -> anyhow::Result<Results> {
    anyhow::ensure!(!cells.is_empty(), "eval-sensitivity: no cells");
    let n_items = cells[0].correct.len();
    anyhow::ensure!(
        cells.iter().all(|c| c.correct.len() == n_items),
        "eval-sensitivity: cells scored different numbers of items"
    );
    let by_acc = |a: &usize, b: &usize| cells[*a].acc.rate.total_cmp(&cells[*b].acc.rate);
    let best = (0..cells.len()).max_by(by_acc).unwrap_or(0);
    let worst = (0..cells.len()).min_by(by_acc).unwrap_or(0);
    let mut comparisons = Vec::new();
    for k in 1..cells.len() {
        comparisons.push(CellComparison {
            cell: k,
            comparison: Comparison::binary(
                &cells[k].correct,
                &cells[0].correct,
                10_000,
                0.95,
                k as u64,
            )?,
        });
    }
    let pooled = |name: String, chosen: &[&Cell], with_template: bool| -> anyhow::Result<Pooled> {
        let mut values = Vec::new();
        let mut items = Vec::new();
        let mut templates = Vec::new();
        for c in chosen {
            for (i, &ok) in c.correct.iter().enumerate() {
                values.push(f64::from(u8::from(ok)));
                items.push(i);
                templates.push(c.template.clone());
            }
        }
        let (acc, naive_se) = mean_stderr(&values);
        Ok(Pooled {
            name,
            n: values.len(),
            acc,
            naive_se,
            se_by_item: clustered_stderr(&values, &items)?,
            se_by_template: if with_template {
                Some(clustered_stderr(&values, &templates)?)
            } else {
                None
            },
        })
    };
    let mut templates: Vec<String> = Vec::new();
    let mut shots: Vec<usize> = Vec::new();
    for c in &cells {
        if !templates.contains(&c.template) {
            templates.push(c.template.clone());
        }
        if !shots.contains(&c.shots) {
            shots.push(c.shots);
        }
    }
    let per_template = templates
        .iter()
        .map(|t| {
            let chosen: Vec<&Cell> = cells.iter().filter(|c| &c.template == t).collect();
            pooled(t.clone(), &chosen, false)
        })
        .collect::<anyhow::Result<_>>()?;
    let per_shots = shots
        .iter()
        .map(|&n| {
            let chosen: Vec<&Cell> = cells.iter().filter(|c| c.shots == n).collect();
            pooled(format!("{n}-shot"), &chosen, false)
        })
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Cell> = cells.iter().collect();
    let overall = pooled("all cells".into(), &all, true)?;
    Ok(Results {
        task: String::new(),
        n_items,
        add_bos,
        spread: cells[best].acc.rate - cells[worst].acc.rate,
        best,
        worst,
        comparisons,
        per_template,
        per_shots,
        overall,
        cells,
    })
}

/// The task's name for people.
pub fn task_title(task: &str) -> &str {
    match task {
        "truthfulqa_mc1" => "TruthfulQA MC1",
        "hhh_alignment" => "HHH alignment",
        "bbq" => "BBQ",
        other => other,
    }
}

fn cell_label(c: &Cell) -> String {
    format!("{}, {}-shot", c.template, c.shots)
}

fn render(cfg: &Config, r: &Results) -> (Report, Figure) {
    let mut report = Report::new(format!(
        "Prompt sensitivity on {}: {}",
        task_title(&cfg.task),
        cfg.model
    ));
    report.key_values(&[
        ("items", r.n_items.to_string()),
        (
            "cells",
            format!(
                "{} templates × {} shot counts",
                cfg.templates.len(),
                cfg.shots.len()
            ),
        ),
        ("baseline", cell_label(&r.cells[0])),
        ("BOS in front", r.add_bos.to_string()),
        (
            "spread (max − min acc)",
            format!(
                "{:.3} ({} − {})",
                r.spread,
                cell_label(&r.cells[r.best]),
                cell_label(&r.cells[r.worst])
            ),
        ),
    ]);
    report.paragraph(
        "Each choice is scored as lm-evaluation-harness scores a multiple-choice task such as \
         TruthfulQA MC1 (summed log-likelihood of \" \" + choice after the prompt); acc: the \
         likeliest choice is the right one; acc_norm: the same per character. Each template rewrites the shots and the \
         question alike; shots are drawn as the harness draws them (seed 1234, the item itself \
         left out). Cell accuracies carry Wilson 95% intervals.",
    );
    report.heading("Templates");
    report.table(
        &["template", "doc_to_text"],
        cfg.templates
            .iter()
            .map(|t| vec![t.name.clone(), format!("{:?}", t.doc_to_text)])
            .collect(),
    );
    report.heading("Accuracy per cell");
    report.table(
        &[
            "template",
            "shots",
            "acc [95% Wilson]",
            "acc_norm [95% Wilson]",
        ],
        r.cells
            .iter()
            .map(|c| {
                vec![
                    c.template.clone(),
                    c.shots.to_string(),
                    c.acc.show(),
                    c.acc_norm.show(),
                ]
            })
            .collect(),
    );
    let figure = Figure::Bar(BarChart {
        title: format!(
            "{} acc per template and shots (± 1 s.e.)",
            task_title(&cfg.task)
        ),
        x_label: "template, shots".into(),
        y_label: "acc".into(),
        labels: r
            .cells
            .iter()
            .map(|c| format!("{} {}s", c.template, c.shots))
            .collect(),
        values: r.cells.iter().map(|c| c.acc.rate).collect(),
        errors: Some(
            r.cells
                .iter()
                .map(|c| (c.acc.rate * (1.0 - c.acc.rate) / c.acc.n.max(1) as f64).sqrt())
                .collect(),
        ),
        ..Default::default()
    });
    report.figure("accuracy per cell", &figure);
    report.heading("Every cell against the baseline");
    report.paragraph(format!(
        "Each cell against {} on the same items: the difference of accuracies with a 95% \
         paired-bootstrap interval; p is exact McNemar's on the items where the two disagree \
         (binary outcomes on the same items); MDE is the smallest difference this many items \
         detect at α = 0.05 with power 0.8. With {} comparisons, a Bonferroni threshold is \
         p < {:.4}.",
        cell_label(&r.cells[0]),
        r.comparisons.len(),
        0.05 / r.comparisons.len().max(1) as f64
    ));
    report.table(
        &["cell", "Δ acc [95% CI]", "p", "MDE", "test"],
        r.comparisons
            .iter()
            .map(|c| {
                let x = &c.comparison;
                vec![
                    cell_label(&r.cells[c.cell]),
                    format!("{:+.3} [{:+.3}, {:+.3}]", x.effect, x.ci.0, x.ci.1),
                    format!("{:.4}", x.p_value),
                    format!("{:.3}", x.mde),
                    x.test.clone(),
                ]
            })
            .collect(),
    );
    report.heading("Pooled accuracy");
    report.paragraph(
        "Cells pooled: the naive s.e. treats every (cell, item) as independent; the clustered \
         s.e. (CR1) groups the same question across cells, and, overall, the cells of one \
         template (few clusters: a rough guide).",
    );
    let mut rows = Vec::new();
    for p in r
        .per_template
        .iter()
        .chain(&r.per_shots)
        .chain([&r.overall])
    {
        rows.push(vec![
            p.name.clone(),
            p.n.to_string(),
            format!("{:.3}", p.acc),
            format!("{:.3}", p.naive_se),
            format!("{:.3}", p.se_by_item),
            p.se_by_template.map_or("–".into(), |s| format!("{s:.3}")),
        ]);
    }
    report.table(
        &[
            "pooled over",
            "n",
            "acc",
            "naive s.e.",
            "s.e. by item",
            "s.e. by template",
        ],
        rows,
    );
    report.heading("Example prompts");
    for c in &r.cells {
        report.paragraph(cell_label(c));
        report.pre(&c.example_prompt);
    }
    (report, figure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(template: &str, shots: usize, correct: &[bool]) -> Cell {
        Cell {
            template: template.into(),
            shots,
            acc: Rate::count(correct.iter().copied()),
            acc_norm: Rate::count(correct.iter().copied()),
            example_prompt: String::new(),
            correct: correct.to_vec(),
        }
    }

    #[test]
    fn spread_pairs_and_pools() {
        let (t, f) = (true, false);
        let cells = vec![
            c("a", 0, &[t, t, f, f]),
            c("a", 1, &[t, t, t, f]),
            c("b", 0, &[f, f, f, f]),
            c("b", 1, &[t, t, t, t]),
        ];
        let r = summarise(cells, false).unwrap();
        assert_eq!((r.best, r.worst), (3, 2));
        assert!((r.spread - 1.0).abs() < 1e-12);
        assert_eq!(r.comparisons.len(), 3);
        // Cell 2 against cell 0: two items only the baseline gets, none the other way.
        let x = &r.comparisons[1].comparison;
        assert!((x.effect + 0.5).abs() < 1e-12);
        assert!((x.p_value - 0.5).abs() < 1e-12);
        assert!((r.per_template[0].acc - 5.0 / 8.0).abs() < 1e-12);
        assert!((r.per_shots[1].acc - 7.0 / 8.0).abs() < 1e-12);
        assert_eq!(r.overall.n, 16);
        assert!((r.overall.acc - 0.5625).abs() < 1e-12);
        assert!(r.overall.se_by_template.is_some());
        assert!(r.per_template[0].se_by_template.is_none());
    }

    #[test]
    fn mismatched_cells_are_refused() {
        let cells = vec![c("a", 0, &[true]), c("a", 1, &[true, false])];
        assert!(summarise(cells, false).is_err());
    }

    #[test]
    fn the_default_axis_has_three_templates_and_three_shot_counts() {
        let cfg = Config {
            model: "m".into(),
            ..Default::default()
        };
        cfg.validate().unwrap();
        assert_eq!((cfg.templates.len(), cfg.shots.len()), (3, 3));
        let bad = Config {
            shots: vec![0, 0],
            templates: vec![
                default_templates()[0].clone(),
                default_templates()[0].clone(),
            ],
            ..cfg
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.contains("template names repeat") && e.contains("shot counts repeat"),
            "{e}"
        );
    }
}
