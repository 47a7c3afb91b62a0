//! `interplab compose`: Q-, K- and V-composition scores between heads of different layers.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use clap::Args;
use interplab_analysis::composition::{
    composition_scores, random_baseline, CompositionKind, CompositionScores,
};
use interplab_report::{BarChart, Figure, Report};
use serde_json::json;

use crate::cmd_run::manifest;
use crate::rundir::RunDir;
use crate::ui::load_model;

/// Arguments of `interplab compose`.
#[derive(Args)]
pub struct ComposeArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
    /// Kinds, comma-separated: q, k, v.
    #[arg(long, default_value = "q,k,v")]
    kinds: String,
    /// Pairs to list per kind.
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    /// Random samples for the baseline.
    #[arg(long, default_value_t = 16)]
    baseline_samples: usize,
    /// Run directory (default runs/compose-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Compute the scores and write the run directory.
pub fn run(a: ComposeArgs) -> anyhow::Result<()> {
    // Parse before loading anything, so bad input writes nothing.
    let kinds = a
        .kinds
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|k| match k {
            "q" => Ok(CompositionKind::Q),
            "k" => Ok(CompositionKind::K),
            "v" => Ok(CompositionKind::V),
            other => Err(anyhow::anyhow!(
                "unknown composition kind {other:?} (q, k, v)"
            )),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let m = load_model(&a.model)?;
    let c = &m.model.cfg;
    let baseline = random_baseline(c.d_model, c.d_head, a.baseline_samples, 0)?;
    let dir = RunDir::create(a.out.as_deref(), "compose")?;
    dir.write_json(
        "manifest.json",
        &manifest(
            &m,
            "compose",
            json!({"kinds": a.kinds, "baseline_samples": a.baseline_samples}),
        )?,
    )?;
    let mut report = Report::new(format!("Head composition: {}", a.model));
    report.paragraph(format!(
        "Composition score ‖M1·M2‖_F/(‖M1‖_F‖M2‖_F) of an earlier head's OV circuit into a later \
         head's Q, K or V input (Elhage et al. 2021), computed through thin factors. Random \
         baseline (Gaussian factors of the same shapes, {} samples): {baseline:.4}.",
        a.baseline_samples
    ));
    let mut tensors = HashMap::new();
    let mut results = serde_json::Map::new();
    results.insert("random_baseline".into(), json!(baseline));
    for kind in kinds {
        let name = kind.name();
        let s = composition_scores(&m.model, kind)?;
        let top = s.top_k(a.top_k);
        println!(
            "{}-composition (random baseline {baseline:.4})",
            name.to_uppercase()
        );
        for (l1, h1, l2, h2, v) in top.iter().take(10) {
            println!("  {l1:>2}.{h1:<2} -> {l2:>2}.{h2:<2}  {v:.4}");
        }
        let fig = top_figure(&s, &top, baseline);
        dir.write_figure(&format!("compose_{name}"), &fig)?;
        report
            .heading(format!("{}-composition", name.to_uppercase()))
            .figure("strongest pairs", &fig);
        let flat: Vec<f32> = s.scores.iter().map(|&v| v as f32).collect();
        tensors.insert(
            name.to_string(),
            Tensor::from_vec(
                flat,
                (s.n_layers, s.n_heads, s.n_layers, s.n_heads),
                &Device::Cpu,
            )?,
        );
        results.insert(name.into(), json!({"top": top}));
    }
    dir.write_tensors("composition.safetensors", &tensors)?;
    dir.write_json("results.json", &serde_json::Value::Object(results))?;
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
}

fn top_figure(
    s: &CompositionScores,
    top: &[(usize, usize, usize, usize, f64)],
    baseline: f64,
) -> Figure {
    let mut labels: Vec<String> = vec!["random baseline".into()];
    let mut values = vec![baseline];
    for (l1, h1, l2, h2, v) in top {
        labels.push(format!("{l1}.{h1} → {l2}.{h2}"));
        values.push(*v);
    }
    Figure::Bar(BarChart {
        title: format!(
            "strongest {}-composition pairs",
            s.kind.name().to_uppercase()
        ),
        x_label: "earlier head → later head".into(),
        y_label: "composition score".into(),
        labels,
        values,
        horizontal: true,
        ..Default::default()
    })
}
