//! `interplab diff`: per-token loss of two models on the same corpus, and where they differ.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::Args;
use interplab_analysis::diff::diff_models;
use interplab_core::corpus::load_corpus;
use interplab_report::{BarChart, Figure, Report};
use serde_json::json;

use crate::cmd_run::manifest;
use crate::rundir::RunDir;
use crate::ui::load_model;

/// Arguments of `interplab diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// Model A: alias, path, pip:... or hf:...
    model_a: String,
    /// Model B (same tokenizer).
    model_b: String,
    /// `sonnets` (shipped) or a text or JSONL file.
    #[arg(long, default_value = "sonnets")]
    corpus: String,
    /// Documents to use at most.
    #[arg(long, default_value_t = 32)]
    max_docs: usize,
    /// Tokens per document at most.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Tokens to list.
    #[arg(long, default_value_t = 15)]
    top: usize,
    /// Run directory (default runs/diff-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Compare the two models and write the run directory.
pub fn run(a: DiffArgs) -> anyhow::Result<()> {
    let texts = load_corpus(&a.corpus).with_context(|| format!("reading corpus {}", a.corpus))?;
    let ma = load_model(&a.model_a)?;
    let mb = load_model(&a.model_b)?;
    let bos = ma.tokenizer.add_bos_default();
    let mut docs = Vec::new();
    for t in texts.iter().take(a.max_docs) {
        let mut ia = ma.tokenizer.encode(t, bos)?;
        let mut ib = mb.tokenizer.encode(t, bos)?;
        let cap = a.max_tokens.min(ma.model.cfg.n_ctx).min(mb.model.cfg.n_ctx);
        ia.truncate(cap);
        ib.truncate(cap);
        if ia != ib {
            bail!("the models do not share a tokenizer: they tokenise the corpus differently");
        }
        docs.push(ia);
    }
    let r = diff_models(&ma.model, &mb.model, &docs)?;
    let show = |id: u32| {
        ma.tokenizer
            .decode(&[id])
            .unwrap_or_else(|_| format!("<{id}>"))
    };
    let context = |doc: usize, pos: usize| -> String {
        let d = &docs[doc];
        let lo = pos.saturating_sub(10);
        ma.tokenizer
            .decode(&d[lo..pos])
            .unwrap_or_default()
            .replace('\n', " ")
    };
    println!(
        "A {}: {:.4} nats/token   B {}: {:.4}   B − A {:+.4} ± {:.4} ({} documents, {} tokens)",
        a.model_a,
        r.mean_loss_a,
        a.model_b,
        r.mean_loss_b,
        r.mean_diff,
        r.stderr,
        r.n_docs,
        r.tokens.len()
    );
    let mut rows = Vec::new();
    for t in r.top_k(a.top) {
        let row = vec![
            context(t.doc, t.pos),
            format!("{:?}", show(t.token)),
            format!("{:.3}", t.loss_a),
            format!("{:.3}", t.loss_b),
            format!("{:+.3}", t.diff()),
        ];
        println!(
            "  …{:<60} {:<14} A {:>6}  B {:>6}  {}",
            row[0], row[1], row[2], row[3], row[4]
        );
        rows.push(row);
    }
    // Histogram of per-token differences.
    let diffs: Vec<f64> = r.tokens.iter().map(|t| t.diff()).collect();
    let (lo, hi) = diffs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    let bins = 30;
    let width = ((hi - lo) / bins as f64).max(1e-9);
    let mut counts = vec![0f64; bins];
    for x in &diffs {
        counts[(((x - lo) / width) as usize).min(bins - 1)] += 1.0;
    }
    let hist = Figure::Bar(BarChart {
        title: "per-token loss difference (B − A)".into(),
        x_label: "B − A (nats)".into(),
        y_label: "tokens".into(),
        labels: (0..bins)
            .map(|i| format!("{:.2}", lo + width * (i as f64 + 0.5)))
            .collect(),
        values: counts,
        ..Default::default()
    });
    let dir = RunDir::create(a.out.as_deref(), "diff")?;
    let mut man = manifest(
        &ma,
        "diff",
        json!({"model_b": a.model_b, "corpus": a.corpus, "max_docs": a.max_docs, "max_tokens": a.max_tokens}),
    )?;
    man["model_b"] = json!({"source": mb.resolved.source, "sha256": mb.resolved.sha256});
    dir.write_json("manifest.json", &man)?;
    dir.write_figure("loss_diff_histogram", &hist)?;
    let mut report = Report::new(format!("Model diff: {} vs {}", a.model_a, a.model_b));
    report.key_values(&[
        ("corpus", a.corpus.clone()),
        (
            "documents / tokens",
            format!("{} / {}", r.n_docs, r.tokens.len()),
        ),
        ("mean loss A", format!("{:.4}", r.mean_loss_a)),
        ("mean loss B", format!("{:.4}", r.mean_loss_b)),
        (
            "B − A",
            format!(
                "{:+.4} ± {:.4} (standard error over documents)",
                r.mean_diff, r.stderr
            ),
        ),
    ]);
    report.figure("distribution of per-token differences", &hist);
    report
        .heading("Tokens where the models differ most")
        .table(&["context", "token", "loss A", "loss B", "B − A"], rows);
    let mut tensors = HashMap::new();
    tensors.insert(
        "loss_a".to_string(),
        Tensor::from_vec(
            r.tokens.iter().map(|t| t.loss_a as f32).collect::<Vec<_>>(),
            r.tokens.len(),
            &Device::Cpu,
        )?,
    );
    tensors.insert(
        "loss_b".to_string(),
        Tensor::from_vec(
            r.tokens.iter().map(|t| t.loss_b as f32).collect::<Vec<_>>(),
            r.tokens.len(),
            &Device::Cpu,
        )?,
    );
    dir.write_tensors("losses.safetensors", &tensors)?;
    dir.write_json("results.json", &json!(r))?;
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
}
