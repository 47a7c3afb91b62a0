//! `interplab ioi`: indirect-object identification prompts, logit difference, name-mover heads.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use clap::Args;
use interplab_analysis::ioi::{analyse, generate};
use interplab_report::{BarChart, ColorScale, Figure, Heatmap, Report};
use serde_json::json;

use crate::cmd_run::manifest;
use crate::rundir::RunDir;
use crate::ui::load_model;

/// Arguments of `interplab ioi`.
#[derive(Args)]
pub struct IoiArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
    /// Prompt pairs to generate.
    #[arg(long, default_value_t = 16)]
    n_prompts: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip per-head patching (behaviour only).
    #[arg(long)]
    no_patching: bool,
    /// Heads to list.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Run directory (default runs/ioi-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Generate prompts, measure, rank heads, write the run directory.
pub fn run(a: IoiArgs) -> anyhow::Result<()> {
    if a.n_prompts == 0 {
        anyhow::bail!("--n-prompts must be at least 1");
    }
    let m = load_model(&a.model)?;
    let bos = m.tokenizer.add_bos_default();
    let prompts = generate(&m.tokenizer, a.n_prompts, a.seed)?;
    let r = analyse(&m.model, &m.tokenizer, &prompts, bos, !a.no_patching)?;
    println!(
        "IOI on {} prompts: mean logit difference {:.3} ± {:.3}, accuracy {:.0}%",
        prompts.len(),
        r.mean_logit_diff,
        r.stderr,
        100.0 * r.accuracy
    );
    let dir = RunDir::create(a.out.as_deref(), "ioi")?;
    let args = json!({"n_prompts": a.n_prompts, "seed": a.seed, "patching": !a.no_patching});
    dir.write_json("manifest.json", &manifest(&m, "ioi", args)?)?;
    let mut report = Report::new(format!("Indirect-object identification: {}", a.model));
    report.key_values(&[
        ("prompts", prompts.len().to_string()),
        (
            "mean logit difference (IO − S)",
            format!("{:.3} ± {:.3}", r.mean_logit_diff, r.stderr),
        ),
        ("accuracy", format!("{:.0}%", 100.0 * r.accuracy)),
    ]);
    report.paragraph(
        "Corrupted prompts replace the subject's second mention by the indirect object. Per-head \
         patching restores each head's z (all positions) from the clean run into the corrupted \
         one; the value is the normalised logit difference averaged over prompts (0 = corrupted, \
         1 = clean). Candidate name movers score high, negative name movers low.",
    );
    let mut tensors = HashMap::new();
    if !r.head_patching.is_empty() {
        let nh = m.model.cfg.n_heads;
        let mut all: Vec<(usize, usize, f64)> = r
            .head_patching
            .iter()
            .enumerate()
            .flat_map(|(l, row)| row.iter().enumerate().map(move |(h, &v)| (l, h, v)))
            .collect();
        all.sort_by(|x, y| y.2.total_cmp(&x.2));
        println!("heads whose z restores the most (candidate name movers):");
        for (l, h, v) in all.iter().take(a.top_k) {
            println!("  {l:>2}.{h:<2} {v:+.4}");
        }
        println!("most negative (candidate negative name movers):");
        for (l, h, v) in all.iter().rev().take(3) {
            println!("  {l:>2}.{h:<2} {v:+.4}");
        }
        let fig = Figure::Heatmap(Heatmap {
            title: "per-head z patching, mean over prompts".into(),
            x_label: "head".into(),
            y_label: "layer".into(),
            x_ticks: (0..nh).map(|h| h.to_string()).collect(),
            y_ticks: (0..r.head_patching.len()).map(|l| l.to_string()).collect(),
            values: r.head_patching.clone(),
            scale: ColorScale::Diverging,
            range: None,
            colorbar_label: "normalised logit difference".into(),
        });
        dir.write_figure("head_patching", &fig)?;
        report.heading("Heads").figure("per-head z patching", &fig);
        let top: Vec<&(usize, usize, f64)> = all.iter().take(a.top_k).collect();
        let bars = Figure::Bar(BarChart {
            title: "top heads".into(),
            x_label: "head".into(),
            y_label: "normalised logit difference".into(),
            labels: top.iter().map(|(l, h, _)| format!("{l}.{h}")).collect(),
            values: top.iter().map(|t| t.2).collect(),
            ..Default::default()
        });
        dir.write_figure("top_heads", &bars)?;
        report.figure("heads ranked", &bars);
        let flat: Vec<f32> = r
            .head_patching
            .iter()
            .flatten()
            .map(|&v| v as f32)
            .collect();
        tensors.insert(
            "head_patching_z".to_string(),
            Tensor::from_vec(flat, (r.head_patching.len(), nh), &Device::Cpu)?,
        );
    }
    let ld = Tensor::from_vec(
        r.logit_diffs.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        r.logit_diffs.len(),
        &Device::Cpu,
    )?;
    tensors.insert("logit_diffs".to_string(), ld);
    report.heading("Prompts").table(
        &["order", "clean prompt", "IO", "S", "logit diff"],
        prompts
            .iter()
            .zip(&r.logit_diffs)
            .map(|(p, l)| {
                vec![
                    p.order.clone(),
                    p.clean.clone(),
                    p.io.clone(),
                    p.s.clone(),
                    format!("{l:+.3}"),
                ]
            })
            .collect(),
    );
    dir.write_tensors("ioi.safetensors", &tensors)?;
    dir.write_json("results.json", &json!({"prompts": prompts, "result": r}))?;
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
}
