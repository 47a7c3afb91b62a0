//! `interplab lens`: logit lens and direct logit attribution for a prompt.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use interplab_analysis::lens::{direct_logit_attribution, logit_lens, logit_lens_diff};
use interplab_report::{BarChart, ColorScale, Figure, Heatmap, Report};
use serde_json::json;

use crate::cmd_run::{manifest, show_token};
use crate::rundir::RunDir;
use crate::ui::load_model;

/// Arguments of `interplab lens`.
#[derive(Args)]
pub struct LensArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Token whose logit is attributed (one token; default: the model's top prediction).
    #[arg(long)]
    target: Option<String>,
    /// Attribute the logit difference target − contrast (one token).
    #[arg(long)]
    contrast: Option<String>,
    /// Position to read (negative counts from the end).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    position: i64,
    /// Tokens to show per layer.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Run directory (default runs/lens-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Decode every layer and attribute the target's logit.
pub fn run(a: LensArgs) -> anyhow::Result<()> {
    let m = load_model(&a.model)?;
    let tokens = m
        .tokenizer
        .encode(&a.prompt, m.tokenizer.add_bos_default())?;
    if tokens.is_empty() {
        bail!("the prompt is empty");
    }
    let n = tokens.len() as i64;
    let pos = if a.position < 0 {
        n + a.position
    } else {
        a.position
    };
    if pos < 0 || pos >= n {
        bail!("position {} is outside the prompt's {n} tokens", a.position);
    }
    let pos = pos as usize;
    let contrast = a
        .contrast
        .as_deref()
        .map(|s| m.tokenizer.single_token(s).context("--contrast"))
        .transpose()?;
    let target = match &a.target {
        Some(s) => m.tokenizer.single_token(s).context("--target")?,
        None => {
            let logits = m.model.forward(
                &candle_core::Tensor::new(tokens.as_slice(), m.model.device())?.unsqueeze(0)?,
            )?;
            logits.get(0)?.get(pos)?.argmax(0)?.to_scalar::<u32>()?
        }
    };
    let lens = logit_lens(&m.model, &tokens, pos, Some(target), a.top_k)?;
    let dla = direct_logit_attribution(&m.model, &tokens, pos, target, contrast)?;
    // The lens's logit (difference) per layer, the quantity DLA splits at the last layer.
    let lens_diff = logit_lens_diff(&m.model, &tokens, pos, target, contrast)?;
    println!(
        "logit lens at position {pos} ({}), target {}",
        show_token(&m, tokens[pos]),
        show_token(&m, target)
    );
    println!("  layer   p(target)  rank     logit   top tokens");
    for (l, ld) in lens.iter().zip(&lens_diff) {
        let top: Vec<String> = l
            .top
            .iter()
            .map(|(t, p)| format!("{} {:.2}", show_token(&m, *t), p))
            .collect();
        println!(
            "  {:<6} {:>9.4}  {:>5}  {:>+8.3}   {}",
            l.name,
            l.target_prob[pos],
            l.target_rank.unwrap_or(0),
            ld,
            top.join("  ")
        );
    }
    let what = match contrast {
        Some(c) => format!(
            "logit[{}] − logit[{}]",
            show_token(&m, target),
            show_token(&m, c)
        ),
        None => format!("logit[{}]", show_token(&m, target)),
    };
    println!(
        "direct logit attribution of {what}: total {:.4} (model {:.4})",
        dla.total, dla.logit
    );
    let mut comps = dla.components.clone();
    comps.sort_by(|x, y| y.1.abs().total_cmp(&x.1.abs()));
    for (c, v) in comps.iter().take(8) {
        println!("  {c:<10} {v:+.4}");
    }
    let dir = RunDir::create(a.out.as_deref(), "lens")?;
    let args = json!({"prompt": a.prompt, "target": a.target, "contrast": a.contrast, "position": a.position});
    dir.write_json("manifest.json", &manifest(&m, "lens", args)?)?;
    let labels: Vec<String> = tokens.iter().map(|&t| show_token(&m, t)).collect();
    let lens_fig = Figure::Heatmap(Heatmap {
        title: format!("logit lens: p({}) per layer", show_token(&m, target)),
        x_label: "position".into(),
        y_label: "layer (resid_post)".into(),
        x_ticks: labels,
        y_ticks: lens.iter().map(|l| l.name.clone()).collect(),
        values: lens.iter().map(|l| l.target_prob.clone()).collect(),
        scale: ColorScale::Sequential,
        range: Some((0.0, 1.0)),
        colorbar_label: "probability".into(),
    });
    let bars = Figure::Bar(BarChart {
        title: format!("direct logit attribution of {what}"),
        x_label: "component".into(),
        y_label: "contribution".into(),
        labels: dla.components.iter().map(|c| c.0.clone()).collect(),
        values: dla.components.iter().map(|c| c.1).collect(),
        ..Default::default()
    });
    dir.write_figure("logit_lens", &lens_fig)?;
    dir.write_figure("dla_components", &bars)?;
    let mut report = Report::new(format!(
        "Logit lens and direct logit attribution: {}",
        a.model
    ));
    report.key_values(&[
        ("prompt", a.prompt.clone()),
        ("position", pos.to_string()),
        ("attributed", what.clone()),
        ("sum of terms", format!("{:.4}", dla.total)),
        ("model", format!("{:.4}", dla.logit)),
    ]);
    report.figure(
        "probability of the target when each layer's residual is decoded",
        &lens_fig,
    );
    report.figure(
        "direct contribution of each component (scaled by ln_final's cached scale)",
        &bars,
    );
    if !dla.heads.is_empty() {
        let heads = Figure::Heatmap(Heatmap {
            title: format!("per-head direct logit attribution of {what}"),
            x_label: "head".into(),
            y_label: "layer".into(),
            x_ticks: (0..m.model.cfg.n_heads).map(|h| h.to_string()).collect(),
            y_ticks: (0..dla.heads.len()).map(|l| l.to_string()).collect(),
            values: dla.heads.clone(),
            scale: ColorScale::Diverging,
            range: None,
            colorbar_label: "contribution".into(),
        });
        dir.write_figure("dla_heads", &heads)?;
        report.figure("per head", &heads);
    }
    report.table(
        &["layer", "p(target)", "rank", "top tokens"],
        lens.iter()
            .map(|l| {
                vec![
                    l.name.clone(),
                    format!("{:.4}", l.target_prob[pos]),
                    l.target_rank.unwrap_or(0).to_string(),
                    l.top
                        .iter()
                        .map(|(t, p)| format!("{} {:.2}", show_token(&m, *t), p))
                        .collect::<Vec<_>>()
                        .join("  "),
                ]
            })
            .collect(),
    );
    let mut tensors = std::collections::HashMap::new();
    let probs: Vec<f32> = lens
        .iter()
        .flat_map(|l| l.target_prob.iter().map(|&v| v as f32))
        .collect();
    tensors.insert(
        "lens_target_prob".to_string(),
        candle_core::Tensor::from_vec(
            probs,
            (lens.len(), tokens.len()),
            &candle_core::Device::Cpu,
        )?,
    );
    tensors.insert(
        "lens_logit_diff".to_string(),
        candle_core::Tensor::from_vec(
            lens_diff.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
            lens_diff.len(),
            &candle_core::Device::Cpu,
        )?,
    );
    let comps: Vec<f32> = dla.components.iter().map(|c| c.1 as f32).collect();
    tensors.insert(
        "dla_components".to_string(),
        candle_core::Tensor::from_vec(comps, dla.components.len(), &candle_core::Device::Cpu)?,
    );
    if !dla.heads.is_empty() {
        let h: Vec<f32> = dla.heads.iter().flatten().map(|&v| v as f32).collect();
        tensors.insert(
            "dla_heads".to_string(),
            candle_core::Tensor::from_vec(
                h,
                (dla.heads.len(), m.model.cfg.n_heads),
                &candle_core::Device::Cpu,
            )?,
        );
    }
    dir.write_tensors("lens.safetensors", &tensors)?;
    dir.write_json("results.json", &json!({"tokens": tokens, "position": pos, "target": target, "contrast": contrast, "lens": lens, "lens_logit_diff": lens_diff, "dla": dla}))?;
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
}
