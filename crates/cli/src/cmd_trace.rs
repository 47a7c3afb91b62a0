//! `interplab trace`: causal tracing (ROME) of a factual prompt.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::Args;
use interplab_analysis::trace::{find_subject, Corruption, Trace, TraceKind, Tracer};
use interplab_report::{ColorScale, Figure, Heatmap, Report};
use serde_json::json;

use crate::cmd_run::{manifest, show_token};
use crate::rundir::RunDir;
use crate::ui::load_model;

/// Arguments of `interplab trace`.
#[derive(Args)]
pub struct TraceArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
    /// The factual prompt.
    #[arg(long)]
    prompt: String,
    /// The subject inside the prompt (its tokens are corrupted).
    #[arg(long)]
    subject: String,
    /// The answer token (one token; default: the clean run's top prediction).
    #[arg(long)]
    target: Option<String>,
    /// gaussian (noise on the subject's embeddings) or resample (other subjects).
    #[arg(long, default_value = "gaussian")]
    mode: String,
    /// Noise samples (gaussian).
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Noise scale in embedding standard deviations (gaussian).
    #[arg(long, default_value_t = 3.0)]
    noise: f64,
    /// Other subjects with the same token count, separated by '|' (resample; default: those of
    /// a built-in list of well-known subjects that have the subject's token count).
    #[arg(long)]
    alternatives: Option<String>,
    /// Layers restored together for MLP and attention traces.
    #[arg(long, default_value_t = 10)]
    window: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Traces to run, comma-separated: hidden, mlp, attn.
    #[arg(long, default_value = "hidden,mlp,attn")]
    kinds: String,
    /// Run directory (default runs/trace-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Well-known subjects for resample corruption when `--alternatives` is not given (those with the
/// subject's token count are used).
const BUILTIN_SUBJECTS: &[&str] = &[
    "The Eiffel Tower",
    "The Space Needle",
    "The Colosseum",
    "Big Ben",
    "The Great Wall of China",
    "Mount Everest",
    "The Statue of Liberty",
    "The Golden Gate Bridge",
    "The Taj Mahal",
    "The Sydney Opera House",
    "Buckingham Palace",
    "The Kremlin",
    "The Louvre",
    "Times Square",
    "Michael Jordan",
    "Lionel Messi",
    "Serena Williams",
    "Albert Einstein",
    "Barack Obama",
    "William Shakespeare",
    "Toyota",
    "Microsoft",
];

/// Trace and write the run directory.
pub fn run(a: TraceArgs) -> anyhow::Result<()> {
    let m = load_model(&a.model)?;
    let bos = m.tokenizer.add_bos_default();
    let tokens = m.tokenizer.encode(&a.prompt, bos)?;
    if tokens.is_empty() || a.prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    // The subject as it appears in the prompt: at the start, or after a space (`lead`).
    let (span, lead) = ["", " "]
        .iter()
        .find_map(|lead| {
            m.tokenizer
                .encode(&format!("{lead}{}", a.subject), false)
                .ok()
                .and_then(|ids| find_subject(&tokens, &ids).ok())
                .map(|span| (span, *lead))
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the subject {:?} does not occur in the prompt's tokens",
                a.subject
            )
        })?;
    let target = match &a.target {
        Some(s) => Some(m.tokenizer.single_token(s).context("--target")?),
        None => None,
    };
    let corruption = match a.mode.as_str() {
        "gaussian" => Corruption::Gaussian {
            scale: a.noise,
            samples: a.samples,
            seed: a.seed,
        },
        "resample" => {
            // Encoded as the subject appears in the prompt (with or without a leading space).
            let encode = |s: &str| m.tokenizer.encode(&format!("{lead}{}", s.trim()), false);
            let alternatives = match &a.alternatives {
                Some(alts) => alts.split('|').map(encode).collect::<Result<Vec<_>, _>>()?,
                None => {
                    let n = span.1 - span.0;
                    let mut found = Vec::new();
                    for s in BUILTIN_SUBJECTS {
                        let ids = encode(s)?;
                        if ids.len() == n && ids.as_slice() != &tokens[span.0..span.1] {
                            found.push(ids);
                        }
                    }
                    if found.is_empty() {
                        bail!(
                            "no built-in subject has {n} tokens like {:?}; give --alternatives",
                            a.subject
                        );
                    }
                    found
                }
            };
            Corruption::Resample { alternatives }
        }
        other => bail!("unknown mode {other:?} (gaussian, resample)"),
    };
    let tracer = Tracer::new(&m.model, &tokens, span, target, &corruption)?;
    let labels: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let s = show_token(&m, t);
            if i >= span.0 && i < span.1 {
                format!("{s}*")
            } else {
                s
            }
        })
        .collect();
    let dir = RunDir::create(a.out.as_deref(), "trace")?;
    let args = json!({"prompt": a.prompt, "subject": a.subject, "target": a.target, "mode": a.mode,
                      "samples": a.samples, "noise": a.noise, "alternatives": a.alternatives,
                      "window": a.window, "seed": a.seed});
    dir.write_json("manifest.json", &manifest(&m, "trace", args)?)?;
    let mut report = Report::new(format!("Causal tracing: {}", a.model));
    let mut results = serde_json::Map::new();
    let mut tensors = HashMap::new();
    let mut summary = Vec::new();
    for name in a.kinds.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(kind) = TraceKind::ALL.iter().copied().find(|k| k.name() == name) else {
            bail!("unknown trace kind {name:?} (hidden, mlp, attn)");
        };
        let tr = tracer.trace(kind, a.window)?;
        if summary.is_empty() {
            println!(
                "answer {}: p(clean) {:.4}, p(corrupted) {:.4}, total effect {:.4}",
                show_token(&m, tr.answer),
                tr.clean_prob,
                tr.corrupted_prob,
                tr.total_effect()
            );
            report.key_values(&[
                ("prompt", a.prompt.clone()),
                ("subject (marked *)", a.subject.clone()),
                ("answer", show_token(&m, tr.answer)),
                ("p(answer), clean", format!("{:.4}", tr.clean_prob)),
                ("p(answer), corrupted", format!("{:.4}", tr.corrupted_prob)),
                ("corruption", format!("{corruption:?}")),
            ]);
        }
        let line = describe(&tr, &labels);
        println!("{name}: {line}");
        summary.push(format!("{name}: {line}"));
        let fig = Figure::Heatmap(Heatmap {
            title: match kind {
                TraceKind::Hidden => "restoring single hidden states".to_string(),
                TraceKind::Mlp => format!("restoring MLP outputs ({}-layer windows)", a.window),
                TraceKind::Attn => {
                    format!("restoring attention outputs ({}-layer windows)", a.window)
                }
            },
            x_label: if kind == TraceKind::Hidden {
                "layer".into()
            } else {
                "layer (centre of window)".into()
            },
            y_label: "token".into(),
            x_ticks: (0..m.model.cfg.n_layers).map(|l| l.to_string()).collect(),
            y_ticks: labels.clone(),
            values: tr.prob.clone(),
            scale: ColorScale::Sequential,
            range: None,
            colorbar_label: format!("p({})", show_token(&m, tr.answer)),
        });
        dir.write_figure(&format!("trace_{name}"), &fig)?;
        report.heading(name).figure(&line, &fig);
        let flat: Vec<f32> = tr.prob.iter().flatten().map(|&v| v as f32).collect();
        tensors.insert(
            name.to_string(),
            Tensor::from_vec(flat, (tr.prob.len(), tr.prob[0].len()), &Device::Cpu)?,
        );
        results.insert(name.into(), json!(tr));
    }
    report
        .heading("What was found")
        .paragraph(summary.join(" "));
    dir.write_tensors("trace.safetensors", &tensors)?;
    // The corruption used (for resample: the alternative subjects' tokens).
    results.insert("corruption".into(), json!(corruption));
    dir.write_json("results.json", &serde_json::Value::Object(results))?;
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
}

/// Where the strongest restorations are, in words: the best early-middle site (first half of
/// the layers) on the subject, the last subject token's best, and the best late site.
fn describe(tr: &Trace, labels: &[String]) -> String {
    let nl = tr.prob[0].len();
    let n = tr.prob.len();
    let total = tr.total_effect().max(1e-12);
    let best = |toks: std::ops::Range<usize>, layers: std::ops::Range<usize>| {
        let mut b = (0, 0, f64::MIN);
        for t in toks {
            for l in layers.clone() {
                let e = tr.indirect_effect(t, l);
                if e > b.2 {
                    b = (t, l, e);
                }
            }
        }
        b
    };
    let (st, sl, se) = best(tr.subject.0..tr.subject.1, 0..nl / 2);
    let (_, ll, le) = best(tr.subject.1 - 1..tr.subject.1, 0..nl / 2);
    let (lt, lll, lte) = best(tr.subject.1..n, nl / 2..nl);
    format!(
        "early-middle subject site {} at layer {sl} recovers {:.0}% of the total effect; the last \
         subject token {} recovers at most {:.0}% (layer {ll}); late site {} at layer {lll}: {:.0}%.",
        labels[st],
        100.0 * se / total,
        labels[tr.subject.1 - 1],
        100.0 * le / total,
        labels[lt],
        100.0 * lte / total
    )
}
