//! `interplab heads`: previous-token, duplicate-token and induction scores for every head.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::bail;
use candle_core::{Device, Tensor};
use clap::Args;
use interplab_analysis::heads::{
    head_scores, random_token_pool, repeated_random_tokens, HeadKind, HeadScoreOptions, HeadScores,
};
use interplab_report::{ColorScale, Figure, Heatmap, Report};
use serde_json::json;

use crate::cmd_run::manifest;
use crate::rundir::RunDir;
use crate::ui::load_model;

/// Arguments of `interplab heads`.
#[derive(Args)]
pub struct HeadsArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
    /// Score on this text instead of repeated random tokens.
    #[arg(long)]
    text: Option<String>,
    /// Random tokens per half of each repeated sequence.
    #[arg(long, default_value_t = 50)]
    seq_len: usize,
    /// Number of repeated random sequences.
    #[arg(long, default_value_t = 4)]
    n_seq: usize,
    /// Seed of the random tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Ignore attention to the first position (BOS).
    #[arg(long)]
    exclude_bos: bool,
    /// Ignore attention from a position to itself.
    #[arg(long)]
    exclude_current_token: bool,
    /// Heads to list per score.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Run directory (default runs/heads-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Score every head and write the run directory.
pub fn run(a: HeadsArgs) -> anyhow::Result<()> {
    let m = load_model(&a.model)?;
    let bos = if m.tokenizer.add_bos_default() {
        m.tokenizer.encode("", true)?.first().copied()
    } else {
        None
    };
    let (seqs, source) = match &a.text {
        Some(t) => {
            let ids = m.tokenizer.encode(t, bos.is_some())?;
            if ids.len() < 2 {
                bail!("the text must have at least two tokens");
            }
            (vec![ids], "text".to_string())
        }
        None => {
            let pool = random_token_pool(&m.tokenizer, m.model.cfg.d_vocab, a.seq_len);
            let s = repeated_random_tokens(&pool, a.seq_len, a.n_seq, a.seed, bos)?;
            (
                s,
                format!(
                    "{} repeated random sequences of {} tokens",
                    a.n_seq, a.seq_len
                ),
            )
        }
    };
    let opts = HeadScoreOptions {
        exclude_bos: a.exclude_bos,
        exclude_current_token: a.exclude_current_token,
    };
    let scores = head_scores(&m.model, &seqs, &HeadKind::ALL, opts)?;
    let dir = RunDir::create(a.out.as_deref(), "heads")?;
    let args = json!({"text": a.text, "seq_len": a.seq_len, "n_seq": a.n_seq, "seed": a.seed,
                      "exclude_bos": a.exclude_bos, "exclude_current_token": a.exclude_current_token});
    dir.write_json("manifest.json", &manifest(&m, "heads", args)?)?;
    let mut report = Report::new(format!("Head detection: {}", a.model));
    report.paragraph(format!(
        "Scores on {source}. Definition: TransformerLens head_detector 'mul', score = Σ(A⊙D)/ΣA \
         per head, averaged over sequences (exclude_bos = {}, exclude_current_token = {}).",
        a.exclude_bos, a.exclude_current_token
    ));
    let mut tensors = HashMap::new();
    let mut results = serde_json::Map::new();
    for s in &scores {
        print_top(s, a.top_k);
        let fig = grid_figure(s);
        dir.write_figure(s.kind.name(), &fig)?;
        report
            .heading(s.kind.name())
            .figure(format!("{} score per head", s.kind.name()), &fig);
        report.table(
            &["rank", "head", "score"],
            s.top_k(a.top_k)
                .iter()
                .enumerate()
                .map(|(i, (l, h, v))| {
                    vec![(i + 1).to_string(), format!("{l}.{h}"), format!("{v:.4}")]
                })
                .collect(),
        );
        let flat: Vec<f32> = s.scores.iter().flatten().map(|&v| v as f32).collect();
        let (nl, nh) = (s.scores.len(), s.scores[0].len());
        tensors.insert(
            s.kind.name().to_string(),
            Tensor::from_vec(flat, (nl, nh), &Device::Cpu)?,
        );
        results.insert(
            s.kind.name().into(),
            json!({"scores": s.scores, "top": s.top_k(a.top_k)}),
        );
    }
    results.insert("sequences".into(), json!(seqs));
    dir.write_tensors("scores.safetensors", &tensors)?;
    dir.write_json("results.json", &serde_json::Value::Object(results))?;
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
}

fn print_top(s: &HeadScores, k: usize) {
    println!("{}", s.kind.name());
    for (i, (l, h, v)) in s.top_k(k).iter().enumerate() {
        println!("  {:>2}. {:>6}  {:.4}", i + 1, format!("{l}.{h}"), v);
    }
}

/// A layer × head heat map of one score.
pub fn grid_figure(s: &HeadScores) -> Figure {
    let nh = s.scores.first().map_or(0, |r| r.len());
    Figure::Heatmap(Heatmap {
        title: format!("{} score", s.kind.name()),
        x_label: "head".into(),
        y_label: "layer".into(),
        x_ticks: (0..nh).map(|h| h.to_string()).collect(),
        y_ticks: (0..s.scores.len()).map(|l| l.to_string()).collect(),
        values: s.scores.clone(),
        scale: ColorScale::Sequential,
        range: Some((0.0, 1.0)),
        colorbar_label: "score".into(),
    })
}
