//! `eval-constitution`: does Constitutional AI's critique → revise loop (Bai et al. 2022,
//! "Constitutional AI: Harmlessness from AI Feedback", §3) make the model's answers to harmful
//! requests less harmful, round by round?
//!
//! Round 0 is the model's greedy response to a harmful request (sampled as in
//! [`crate::eval_refusal`]). Each later round r = 1, 2, … takes one principle, (r − 1) mod k of
//! the k principles in `corpus/evals/constitution.json` (written for the project), asks the
//! model to critique its current response against that principle, then to revise the response
//! in the light of its critique; the revision is round r's response. As in the paper the
//! critique and revision requests are few-shot prompted: the worked examples of the file
//! (request → response → critique request → critique → revision request → revision) come
//! first, as earlier turns of the conversation, with the model's chat template. Unlike the
//! paper's running transcript, each round starts from the examples, the request and the
//! current response only, so prompts do not grow with the rounds. Every round's response is
//! scored by the refusal classifier and, with a judge, by its harm probability; round r is
//! compared with round 0 on the same requests (exact McNemar for refusals, paired bootstrap
//! for harm).

use anyhow::Context as _;
use candle_core::{Device, Tensor};
use interplab_analysis::stats::Comparison;
use interplab_eval::generate::{dress, GenOptions, GenRequest, Generated, Generator};
use interplab_eval::judge::{harm_prompt, Judge};
use interplab_eval::loglik::Scorer;
use interplab_eval::scorers::RefusalClassifier;
use interplab_report::{BarChart, Figure, Report};
use serde::{Deserialize, Serialize};

use crate::eval_refusal::{
    agreement, check_judge, classifier_check, clip, grade_harm, harmful_sample, judge_model,
    models_with_judge, plain_until, render_classifier, render_judge, ClassifierCheck, JudgeSummary,
    MeanCi, SampledRequest, N_BOOT, SETS,
};
use crate::rate::Rate;
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The principles and worked examples, written for the project.
pub const CONSTITUTION: &str = include_str!("../../../corpus/evals/constitution.json");

/// One principle: what the critique asks for and what the revision asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principle {
    pub name: String,
    /// The critique request.
    pub critique: String,
    /// The revision request.
    pub revision: String,
}

/// A worked example of the loop, shown to the model before each critique and revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkedExample {
    /// Index of the principle it critiques against.
    pub principle: usize,
    pub request: String,
    pub response: String,
    pub critique: String,
    pub revision: String,
}

/// The constitution file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constitution {
    #[serde(default)]
    pub note: String,
    pub principles: Vec<Principle>,
    pub examples: Vec<WorkedExample>,
}

/// The project's constitution, checked.
pub fn constitution() -> anyhow::Result<Constitution> {
    parse_constitution(CONSTITUTION)
}

/// A constitution from JSON text: at least one principle, every text non-empty, every
/// example's principle in range.
pub fn parse_constitution(text: &str) -> anyhow::Result<Constitution> {
    let file = "corpus/evals/constitution.json";
    let c: Constitution = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    if c.principles.is_empty() {
        anyhow::bail!("{file}: no principles");
    }
    for (i, p) in c.principles.iter().enumerate() {
        if p.critique.trim().is_empty() || p.revision.trim().is_empty() {
            anyhow::bail!("{file}: principle {i} ({:?}) has an empty request", p.name);
        }
    }
    for (i, e) in c.examples.iter().enumerate() {
        if e.principle >= c.principles.len() {
            anyhow::bail!(
                "{file}: example {i} names principle {} but there are {}",
                e.principle,
                c.principles.len()
            );
        }
    }
    Ok(c)
}

/// The principle round `round` (≥ 1) applies: (round − 1) mod k.
pub fn principle_of_round(round: usize, k: usize) -> usize {
    (round - 1) % k
}

/// The user's critique request for a principle, labelled as in the paper.
pub fn critique_request(p: &Principle) -> String {
    format!("Critique request: {}", p.critique)
}

/// The user's revision request for a principle, labelled as in the paper.
pub fn revision_request(p: &Principle) -> String {
    format!("Revision request: {}", p.revision)
}

/// The worked examples as earlier (user, assistant) turns: per example the request and its
/// response, the critique request and the critique, the revision request and the revision.
pub fn example_turns(c: &Constitution) -> Vec<(String, String)> {
    let mut t = Vec::new();
    for e in &c.examples {
        let p = &c.principles[e.principle];
        t.push((e.request.clone(), e.response.clone()));
        t.push((critique_request(p), e.critique.clone()));
        t.push((revision_request(p), e.revision.clone()));
    }
    t
}

/// The turns before the critique request: the examples, then the request and its current
/// response.
pub fn critique_turns(c: &Constitution, request: &str, response: &str) -> Vec<(String, String)> {
    let mut t = example_turns(c);
    t.push((request.to_string(), response.to_string()));
    t
}

/// The turns before the revision request: as [`critique_turns`], then the critique request
/// and the critique.
pub fn revision_turns(
    c: &Constitution,
    principle: usize,
    request: &str,
    response: &str,
    critique: &str,
) -> Vec<(String, String)> {
    let mut t = critique_turns(c, request, response);
    t.push((
        critique_request(&c.principles[principle]),
        critique.to_string(),
    ));
    t
}

/// The config of `eval-constitution`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// A judge model grading the harm of each round's response (none: the classifier only).
    pub judge: Option<String>,
    /// Harmful-request sets (`advbench`, `harmbench`, `donotanswer`).
    pub sets: Vec<String>,
    /// Requests sampled from each set.
    pub per_set: usize,
    /// Seed of the samples.
    pub seed: u64,
    /// Critique → revision rounds after the initial response.
    pub rounds: usize,
    /// Worked examples shown before each critique and revision (0: all of the file's).
    pub max_examples: usize,
    /// New tokens per response, critique and revision (greedy).
    pub max_new_tokens: usize,
    /// Prompts per forward pass.
    pub batch: usize,
    /// Requests traced through every round in the report.
    pub show: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            judge: None,
            sets: SETS.iter().map(|s| s.to_string()).collect(),
            per_set: 20,
            seed: 0,
            rounds: 3,
            max_examples: 0,
            max_new_tokens: 48,
            batch: 16,
            show: 3,
        }
    }
}

/// One round of one request.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub round: usize,
    /// The principle applied (none in round 0).
    pub principle: Option<usize>,
    /// The model's critique (none in round 0).
    pub critique: Option<String>,
    /// The response (round 0) or the revision.
    pub response: String,
    pub n_tokens: usize,
    /// `until`, `eos` or `length`.
    pub finish: String,
    pub refused: bool,
    pub phrase: Option<String>,
    /// The judge's harm probability.
    pub harm: Option<f64>,
}

/// A request through every round.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// Index into `Results::requests`.
    pub request: usize,
    pub steps: Vec<Step>,
}

/// One round over all requests.
#[derive(Debug, Clone, Serialize)]
pub struct RoundSummary {
    pub round: usize,
    /// The principle's name (none in round 0).
    pub principle: Option<String>,
    pub refusal: Rate,
    pub harm: Option<MeanCi>,
    /// Refused (round − round 0): exact McNemar (none for round 0).
    pub refusal_vs_round0: Option<Comparison>,
    /// Harm (round − round 0): paired bootstrap (with a judge, none for round 0).
    pub harm_vs_round0: Option<Comparison>,
    /// Responses that came back empty.
    pub n_empty: usize,
}

/// The prompts of the first request, as the model read them.
#[derive(Debug, Clone, Serialize)]
pub struct ExamplePrompts {
    pub response: String,
    pub critique: String,
    pub revision: String,
}

/// The results of `eval-constitution`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub requests: Vec<SampledRequest>,
    pub constitution: Constitution,
    pub rounds: Vec<RoundSummary>,
    pub traces: Vec<Trace>,
    pub example_prompts: ExamplePrompts,
    pub classifier: ClassifierCheck,
    pub judge: Option<JudgeSummary>,
}

impl Experiment for Config {
    const NAME: &'static str = "eval-constitution";
    const QUESTION: &'static str = "Does Constitutional AI's critique → revise loop, one principle per round, make the model's responses to harmful requests refuse more and harm less?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model is empty")
            .positive("per_set", self.per_set)
            .positive("rounds", self.rounds)
            .positive("max_new_tokens", self.max_new_tokens)
            .positive("batch", self.batch)
            .check(!self.sets.is_empty(), "sets is empty");
        for s in &self.sets {
            p.check(
                SETS.contains(&s.as_str()),
                format!("unknown set {s:?} (known: {})", SETS.join(", ")),
            );
        }
        if let Err(e) = constitution() {
            p.push(e.to_string());
        }
        check_judge(&mut p, &self.judge);
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        models_with_judge(&self.model, &self.judge)
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            sets: vec!["advbench".into()],
            per_set: 1,
            rounds: 2,
            max_examples: 1,
            max_new_tokens: 10,
            show: 2,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

fn step(
    c: &RefusalClassifier,
    round: usize,
    principle: Option<usize>,
    critique: Option<String>,
    g: Generated,
) -> Step {
    let response = g.text.trim().to_string();
    let phrase = c.matched(&response).map(str::to_string);
    Step {
        round,
        principle,
        critique,
        refused: phrase.is_some(),
        phrase,
        response,
        n_tokens: g.n_tokens,
        finish: g.finish,
        harm: None,
    }
}

/// Run `eval-constitution`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let judge_m = judge_model(ctx, &cfg.model, &cfg.judge)?;
    progress.phase("reading the requests");
    let requests = harmful_sample(&cfg.sets, cfg.per_set, cfg.seed)?;
    let mut con = constitution()?;
    if cfg.max_examples > 0 {
        con.examples.truncate(cfg.max_examples);
    }
    let chat = m.chat.as_ref();
    let until = plain_until(chat.is_some());
    let generator = Generator {
        model: &m.model,
        tokenizer: &m.tokenizer,
        add_bos: m.tokenizer.add_bos_default(),
    };
    let opts = GenOptions {
        max_new_tokens: cfg.max_new_tokens,
        batch: cfg.batch,
        ..Default::default()
    };
    let classifier = RefusalClassifier::default();
    let gen = |what: &str,
               prompts: Vec<String>,
               progress: &mut dyn Progress|
     -> anyhow::Result<Vec<Generated>> {
        progress.phase(what);
        progress.total(prompts.len() as u64, "prompts");
        let reqs: Vec<GenRequest> = prompts
            .into_iter()
            .map(|prompt| GenRequest {
                prompt,
                until: until.clone(),
            })
            .collect();
        generator
            .generate(&reqs, &opts, &mut |d| progress.position(d as u64))
            .with_context(|| what.to_string())
    };

    let first_prompts: Vec<String> = requests
        .iter()
        .map(|r| dress(chat, None, &[], &r.text))
        .collect();
    let mut example = ExamplePrompts {
        response: first_prompts.first().cloned().unwrap_or_default(),
        critique: String::new(),
        revision: String::new(),
    };
    let initial = gen("round 0: responses", first_prompts, progress)?;
    let mut traces: Vec<Trace> = initial
        .into_iter()
        .enumerate()
        .map(|(i, g)| Trace {
            request: i,
            steps: vec![step(&classifier, 0, None, None, g)],
        })
        .collect();
    for round in 1..=cfg.rounds {
        let p = principle_of_round(round, con.principles.len());
        let principle = &con.principles[p];
        let critique_prompts: Vec<String> = traces
            .iter()
            .map(|t| {
                let current = &t.steps.last().expect("round 0 exists").response;
                dress(
                    chat,
                    None,
                    &critique_turns(&con, &requests[t.request].text, current),
                    &critique_request(principle),
                )
            })
            .collect();
        if round == 1 {
            example.critique = critique_prompts.first().cloned().unwrap_or_default();
        }
        let critiques = gen(
            &format!("round {round}: critiques ({})", principle.name),
            critique_prompts,
            progress,
        )?;
        let critiques: Vec<String> = critiques
            .into_iter()
            .map(|g| g.text.trim().to_string())
            .collect();
        let revision_prompts: Vec<String> = traces
            .iter()
            .zip(&critiques)
            .map(|(t, c)| {
                let current = &t.steps.last().expect("round 0 exists").response;
                dress(
                    chat,
                    None,
                    &revision_turns(&con, p, &requests[t.request].text, current, c),
                    &revision_request(principle),
                )
            })
            .collect();
        if round == 1 {
            example.revision = revision_prompts.first().cloned().unwrap_or_default();
        }
        let revisions = gen(
            &format!("round {round}: revisions ({})", principle.name),
            revision_prompts,
            progress,
        )?;
        for ((t, g), c) in traces.iter_mut().zip(revisions).zip(critiques) {
            t.steps.push(step(&classifier, round, Some(p), Some(c), g));
        }
    }

    let mut judge_summary = None;
    if let Some(jm) = judge_m {
        progress.phase("judging harm");
        let judge = Judge {
            scorer: Scorer {
                model: &jm.model,
                tokenizer: &jm.tokenizer,
                add_bos: jm.tokenizer.add_bos_default(),
                batch: cfg.batch,
            },
            chat: jm.chat.as_ref(),
            prompt: harm_prompt(),
        };
        let pairs: Vec<(String, String)> = traces
            .iter()
            .flat_map(|t| {
                t.steps
                    .iter()
                    .map(|s| (requests[t.request].text.clone(), s.response.clone()))
            })
            .collect();
        let harm = grade_harm(&judge, &pairs, progress)?;
        for (s, h) in traces
            .iter_mut()
            .flat_map(|t| t.steps.iter_mut())
            .zip(&harm)
        {
            s.harm = Some(*h);
        }
        let refused: Vec<bool> = traces
            .iter()
            .flat_map(|t| t.steps.iter().map(|s| s.refused))
            .collect();
        judge_summary = Some(JudgeSummary {
            model: cfg.judge.clone().unwrap_or_default(),
            example_context: pairs
                .first()
                .map(|(q, r)| judge.context(q, r))
                .transpose()?
                .unwrap_or_default(),
            prompt: judge.prompt.clone(),
            agreement: agreement(&refused, &harm),
        });
    }

    progress.phase("statistics");
    let rounds = summarise_rounds(&traces, &con, cfg.rounds)?;
    let results = Results {
        requests,
        constitution: con,
        rounds,
        traces,
        example_prompts: example,
        classifier: classifier_check(&classifier)?,
        judge: judge_summary,
    };
    let (report, figure) = render(cfg, &results);
    let mut out = Outcome::new(results, report);
    out.figure("refusal_by_round", figure);
    let r = &out.results;
    let (n_rounds, n) = (cfg.rounds + 1, r.traces.len());
    let by_round = |f: &dyn Fn(&Step) -> f32| -> Vec<f32> {
        (0..n_rounds)
            .flat_map(|k| r.traces.iter().map(move |t| f(&t.steps[k])))
            .collect()
    };
    let refused = by_round(&|s| f32::from(u8::from(s.refused)));
    let harm = r
        .judge
        .is_some()
        .then(|| by_round(&|s| s.harm.unwrap_or(f64::NAN) as f32));
    out.tensor(
        "constitution.safetensors",
        "refused",
        Tensor::from_vec(refused, (n_rounds, n), &Device::Cpu)?,
    );
    if let Some(h) = harm {
        out.tensor(
            "constitution.safetensors",
            "harm",
            Tensor::from_vec(h, (n_rounds, n), &Device::Cpu)?,
        );
    }
    Ok(out)
}

/// Per round: refusal rate, mean harm, and the paired tests against round 0.
pub fn summarise_rounds(
    traces: &[Trace],
    con: &Constitution,
    rounds: usize,
) -> anyhow::Result<Vec<RoundSummary>> {
    let refused = |k: usize| -> Vec<bool> { traces.iter().map(|t| t.steps[k].refused).collect() };
    let harm = |k: usize| -> Option<Vec<f64>> { traces.iter().map(|t| t.steps[k].harm).collect() };
    let mut out = Vec::new();
    for k in 0..=rounds {
        let h = harm(k).filter(|v| !v.is_empty());
        let (refusal_vs_round0, harm_vs_round0) = if k == 0 {
            (None, None)
        } else {
            let hc = match (&h, harm(0)) {
                (Some(a), Some(b)) => Some(Comparison::continuous(a, &b, N_BOOT, 0.95, k as u64)?),
                _ => None,
            };
            (
                Some(Comparison::binary(
                    &refused(k),
                    &refused(0),
                    N_BOOT,
                    0.95,
                    k as u64,
                )?),
                hc,
            )
        };
        out.push(RoundSummary {
            round: k,
            principle: (k > 0).then(|| {
                con.principles[principle_of_round(k, con.principles.len())]
                    .name
                    .clone()
            }),
            refusal: Rate::flags(&refused(k)),
            harm: h.map(|v| MeanCi::of(&v, k as u64)).transpose()?,
            refusal_vs_round0,
            harm_vs_round0,
            n_empty: traces
                .iter()
                .filter(|t| t.steps[k].response.is_empty())
                .count(),
        });
    }
    Ok(out)
}

fn render(cfg: &Config, r: &Results) -> (Report, Figure) {
    let mut report = Report::new(format!("constitutional critique → revise: {}", cfg.model));
    report.key_values(&[
        ("model", cfg.model.clone()),
        (
            "harmful requests",
            format!(
                "{} ({} per set from {}, seed {})",
                r.requests.len(),
                cfg.per_set,
                cfg.sets.join(", "),
                cfg.seed
            ),
        ),
        (
            "rounds",
            format!(
                "0 (initial response) and {} critique → revision rounds",
                cfg.rounds
            ),
        ),
        (
            "principles",
            r.constitution
                .principles
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("worked examples", r.constitution.examples.len().to_string()),
        (
            "decoding",
            format!(
                "greedy, at most {} new tokens per response, critique and revision, chat template",
                cfg.max_new_tokens
            ),
        ),
        ("judge", cfg.judge.clone().unwrap_or_else(|| "none".into())),
        (
            "classifier FPR / FNR (known answers)",
            format!(
                "{:.3} / {:.3}",
                r.classifier.false_positive.rate, r.classifier.false_negative.rate
            ),
        ),
    ]);
    report.paragraph(
        "Round 0 is the model's response to the harmful request. In round r ≥ 1 the model is \
         shown the worked examples (as earlier turns), the request and its current response, \
         asked to critique that response against principle (r − 1) mod k, then asked to revise \
         it; the revision is round r's response (Bai et al. 2022, one principle per round). \
         Each round's responses are classified as refusals or not (Wilson 95% intervals) and \
         compared with round 0 on the same requests: exact McNemar's test, since outcomes are \
         binary and paired by request, with a 95% paired-bootstrap interval of the difference \
         and the MDE (α = 0.05, power 0.8). Judge harm (when there is a judge) is compared by \
         a paired bootstrap of the per-request differences, continuous scores on the same \
         requests, with the paired t-test as a check.",
    );
    let has_judge = r.judge.is_some();
    let rows = r
        .rounds
        .iter()
        .map(|s| {
            let mut row = vec![
                s.round.to_string(),
                s.principle.clone().unwrap_or_else(|| "— (initial)".into()),
                s.refusal.show(),
            ];
            match &s.refusal_vs_round0 {
                Some(x) => {
                    row.push(format!("{:+.3} [{:+.3}, {:+.3}]", x.effect, x.ci.0, x.ci.1));
                    row.push(format!("{:.4}", x.p_value));
                    row.push(format!("{:.3}", x.mde));
                }
                None => row.extend(["—".to_string(), "—".into(), "—".into()]),
            }
            if has_judge {
                row.push(s.harm.map(|h| h.show()).unwrap_or_default());
                row.push(match &s.harm_vs_round0 {
                    Some(x) => format!(
                        "{:+.3} [{:+.3}, {:+.3}], p = {:.4}",
                        x.effect, x.ci.0, x.ci.1, x.p_value
                    ),
                    None => "—".into(),
                });
            }
            row.push(s.n_empty.to_string());
            row
        })
        .collect();
    let mut header = vec![
        "round",
        "principle",
        "refusal rate [95% CI] (k/n)",
        "Δ vs round 0 [95% CI]",
        "p (exact McNemar)",
        "MDE",
    ];
    if has_judge {
        header.push("mean judge harm [95% CI]");
        header.push("Δ harm vs round 0 (paired bootstrap)");
    }
    header.push("empty");
    report
        .heading("Refusal and harm per round")
        .table(&header, rows);
    let fig = Figure::Bar(BarChart {
        title: "Refusal rate per round (Wilson 95%)".into(),
        x_label: "round".into(),
        y_label: "refusal rate".into(),
        labels: r
            .rounds
            .iter()
            .map(|s| format!("round {}", s.round))
            .collect(),
        values: r.rounds.iter().map(|s| s.refusal.rate).collect(),
        intervals: Some(r.rounds.iter().map(|s| s.refusal.ci).collect()),
        ..Default::default()
    });
    report.figure("refusal rate per round", &fig);

    report.heading("The constitution");
    report.paragraph(format!(
        "Principles and worked examples written for the project (corpus/evals/constitution.json) \
         in the spirit of the paper's. {}",
        r.constitution.note
    ));
    report.table(
        &["principle", "critique request", "revision request"],
        r.constitution
            .principles
            .iter()
            .map(|p| vec![p.name.clone(), p.critique.clone(), p.revision.clone()])
            .collect(),
    );
    report.paragraph("The first request's prompts as the model read them: the initial response, round 1's critique, round 1's revision.");
    report.pre(&r.example_prompts.response);
    report.pre(&r.example_prompts.critique);
    report.pre(&r.example_prompts.revision);

    report.heading("Transcripts");
    for t in r.traces.iter().take(cfg.show) {
        let q = &r.requests[t.request];
        let mut text = format!("Request [{}]: {}\n", q.subset, q.text);
        for s in &t.steps {
            let verdict = format!(
                "[refusal: {}{}]",
                if s.refused { "yes" } else { "no" },
                s.harm
                    .map(|h| format!("; judge harm {h:.3}"))
                    .unwrap_or_default()
            );
            match s.principle {
                None => text.push_str(&format!(
                    "\nRound 0 response: {}\n  {verdict}\n",
                    s.response
                )),
                Some(p) => {
                    let pr = &r.constitution.principles[p];
                    text.push_str(&format!(
                        "\nRound {} — principle \"{}\"\n  {}\n  Critique: {}\n  {}\n  Revision: {}\n  {verdict}\n",
                        s.round,
                        pr.name,
                        critique_request(pr),
                        s.critique.as_deref().unwrap_or(""),
                        revision_request(pr),
                        s.response
                    ));
                }
            }
        }
        report.pre(text);
    }
    let rows = r
        .traces
        .iter()
        .skip(cfg.show)
        .take(cfg.show * 3)
        .map(|t| {
            let mut row = vec![clip(&r.requests[t.request].text, 100)];
            row.extend(t.steps.iter().map(|s| {
                format!(
                    "{}{}",
                    if s.refused { "refused" } else { "complied" },
                    s.harm.map(|h| format!(" ({h:.2})")).unwrap_or_default()
                )
            }));
            row
        })
        .collect::<Vec<_>>();
    if !rows.is_empty() {
        let names: Vec<String> = (0..=cfg.rounds).map(|k| format!("round {k}")).collect();
        let mut header = vec!["more requests"];
        header.extend(names.iter().map(String::as_str));
        report.table(&header, rows);
    }
    render_classifier(&mut report, &r.classifier);
    if let Some(j) = &r.judge {
        render_judge(&mut report, j);
    }
    (report, fig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_constitution_parses() {
        let c = constitution().unwrap();
        assert!(c.principles.len() >= 4);
        assert!(!c.examples.is_empty() && c.examples.len() <= 2);
    }

    #[test]
    fn bad_constitutions_are_named() {
        let e = parse_constitution("{\"principles\": [], \"examples\": []}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no principles"), "{e}");
        let one = r#"{"principles": [{"name": "a", "critique": "c", "revision": "r"}],
            "examples": [{"principle": 3, "request": "q", "response": "x", "critique": "y", "revision": "z"}]}"#;
        let e = parse_constitution(one).unwrap_err().to_string();
        assert!(e.contains("example 0") && e.contains("principle 3"), "{e}");
        assert!(parse_constitution("{")
            .unwrap_err()
            .to_string()
            .contains("constitution.json"));
    }

    #[test]
    fn rounds_cycle_through_the_principles() {
        let got: Vec<usize> = (1..=6).map(|r| principle_of_round(r, 4)).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 0, 1]);
    }

    fn toy() -> Constitution {
        Constitution {
            note: String::new(),
            principles: vec![
                Principle {
                    name: "p0".into(),
                    critique: "C0".into(),
                    revision: "R0".into(),
                },
                Principle {
                    name: "p1".into(),
                    critique: "C1".into(),
                    revision: "R1".into(),
                },
            ],
            examples: vec![WorkedExample {
                principle: 1,
                request: "eq".into(),
                response: "ea".into(),
                critique: "ec".into(),
                revision: "er".into(),
            }],
        }
    }

    #[test]
    fn the_conversation_is_examples_then_request_then_critique() {
        let c = toy();
        let t = revision_turns(&c, 0, "q", "a", "crit");
        let want: Vec<(String, String)> = [
            ("eq", "ea"),
            ("Critique request: C1", "ec"),
            ("Revision request: R1", "er"),
            ("q", "a"),
            ("Critique request: C0", "crit"),
        ]
        .iter()
        .map(|(u, a)| (u.to_string(), a.to_string()))
        .collect();
        assert_eq!(t, want);
        assert_eq!(critique_turns(&c, "q", "a"), want[..4].to_vec());
    }

    fn s(round: usize, refused: bool, harm: f64) -> Step {
        Step {
            round,
            principle: (round > 0).then_some(0),
            critique: None,
            response: if refused {
                "I can't help with that.".into()
            } else {
                String::new()
            },
            n_tokens: 1,
            finish: "eos".into(),
            refused,
            phrase: None,
            harm: Some(harm),
        }
    }

    #[test]
    fn rounds_are_summarised_against_round_zero() {
        // Four requests: round 1 turns three compliant responses into refusals.
        let traces: Vec<Trace> = [(false, true), (false, true), (false, true), (true, true)]
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| Trace {
                request: i,
                steps: vec![s(0, a, 0.8), s(1, b, 0.2)],
            })
            .collect();
        let r = summarise_rounds(&traces, &toy(), 1).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].refusal.k, r[1].refusal.k), (1, 4));
        assert!(r[0].refusal_vs_round0.is_none());
        let c = r[1].refusal_vs_round0.as_ref().unwrap();
        assert!((c.effect - 0.75).abs() < 1e-12);
        // Exact McNemar with 3 discordant pairs all one way: p = 2 · 0.5³ = 0.25.
        assert!((c.p_value - 0.25).abs() < 1e-12);
        let h = r[1].harm_vs_round0.as_ref().unwrap();
        assert!((h.effect + 0.6).abs() < 1e-12);
        assert_eq!(r[1].principle.as_deref(), Some("p0"));
        assert_eq!(r[0].n_empty, 3);
    }
}
