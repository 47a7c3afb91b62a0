//! `interplab patch`: activation patching between a clean and a corrupted prompt.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::Args;
use interplab_analysis::attribution::{agreement, attribution_sweeps};
use interplab_analysis::patching::{HeadSite, Metric, PatchingSetup, PositionSite, Sweep};
use interplab_report::{ColorScale, Figure, Heatmap, Report};
use serde_json::json;

use crate::cmd_run::{manifest, show_token};
use crate::rundir::RunDir;
use crate::ui::load_model;

/// Arguments of `interplab patch`.
#[derive(Args)]
pub struct PatchArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
    /// The clean prompt.
    #[arg(long)]
    clean: String,
    /// The corrupted prompt (same number of tokens).
    #[arg(long)]
    corrupt: String,
    /// The answer token of the clean prompt (one token, e.g. " Mary").
    #[arg(long)]
    answer: Option<String>,
    /// The competing token (one token, e.g. " John"), for the logit difference.
    #[arg(long)]
    wrong: Option<String>,
    /// logit-diff (normalised: 0 = corrupted, 1 = clean), prob (of the answer), kl (to clean).
    #[arg(long, default_value = "logit-diff")]
    metric: String,
    /// Sites, comma-separated: resid_pre, resid_mid, resid_post, attn_out, mlp_out (per
    /// position) and z, q, k, v, pattern (per head, all positions).
    #[arg(long, default_value = "resid_pre,attn_out,mlp_out,z")]
    sites: String,
    /// Prepend BOS (default: what the model's tokenizer says).
    #[arg(long, overrides_with = "no_bos")]
    bos: bool,
    /// Do not prepend BOS.
    #[arg(long)]
    no_bos: bool,
    /// Also patch residual / attention / MLP sites over all positions at once (one value per
    /// layer).
    #[arg(long)]
    all_positions: bool,
    /// Also patch this head (`LAYER.HEAD`) at each position, for the per-head sites chosen.
    #[arg(long)]
    head: Option<String>,
    /// Also run attribution patching (two forwards, one backward) for the same sites and report
    /// its agreement with activation patching.
    #[arg(long)]
    attribution: bool,
    /// Run directory (default runs/patch-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A site to sweep.
#[derive(Clone, Copy)]
enum Site {
    Position(PositionSite),
    Head(HeadSite),
}

/// Run the sweeps and write the run directory.
pub fn run(a: PatchArgs) -> anyhow::Result<()> {
    let m = load_model(&a.model)?;
    let bos = if a.no_bos {
        false
    } else {
        a.bos || m.tokenizer.add_bos_default()
    };
    let clean = m.tokenizer.encode(&a.clean, bos)?;
    let corrupt = m.tokenizer.encode(&a.corrupt, bos)?;
    if clean.len() != corrupt.len() {
        bail!(
            "the clean prompt is {} tokens and the corrupted one {}: patching needs equal lengths",
            clean.len(),
            corrupt.len()
        );
    }
    let metric = match a.metric.as_str() {
        "logit-diff" => {
            let (Some(ans), Some(wr)) = (&a.answer, &a.wrong) else {
                bail!("--metric logit-diff needs --answer and --wrong");
            };
            Metric::LogitDiff {
                answer: m.tokenizer.single_token(ans).context("--answer")?,
                wrong: m.tokenizer.single_token(wr).context("--wrong")?,
            }
        }
        "prob" => {
            let Some(ans) = &a.answer else {
                bail!("--metric prob needs --answer")
            };
            Metric::AnswerProb {
                answer: m.tokenizer.single_token(ans).context("--answer")?,
            }
        }
        "kl" => Metric::Kl,
        other => bail!("unknown metric {other:?} (logit-diff, prob, kl)"),
    };
    // Parse the sites before any work, so bad input writes nothing.
    let sites = a
        .sites
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|site| {
            if let Some(p) = PositionSite::ALL.iter().find(|p| p.name() == site) {
                Ok(Site::Position(*p))
            } else if let Some(h) = HeadSite::ALL.iter().find(|h| h.name() == site) {
                Ok(Site::Head(*h))
            } else {
                Err(anyhow::anyhow!("unknown site {site:?}"))
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let setup = PatchingSetup::new(&m.model, &clean, &corrupt, metric)?;
    let labels: Vec<String> = clean
        .iter()
        .zip(&corrupt)
        .map(|(&c, &x)| {
            if c == x {
                show_token(&m, c)
            } else {
                format!("{}/{}", show_token(&m, c), show_token(&m, x))
            }
        })
        .collect();
    // Check --head before any work or output.
    let head = match &a.head {
        Some(spec) => Some(parse_head(spec, &m.model)?),
        None => None,
    };
    let dir = RunDir::create(a.out.as_deref(), "patch")?;
    let args = json!({"clean": a.clean, "corrupt": a.corrupt, "answer": a.answer, "wrong": a.wrong,
                      "metric": a.metric, "sites": a.sites, "bos": bos});
    dir.write_json("manifest.json", &manifest(&m, "patch", args)?)?;
    let mut report = Report::new(format!("Activation patching: {}", a.model));
    report.key_values(&[
        ("clean", a.clean.clone()),
        ("corrupted", a.corrupt.clone()),
        ("metric", format!("{metric:?}")),
        ("clean metric (raw)", format!("{:.4}", setup.clean_raw)),
        (
            "corrupted metric (raw)",
            format!("{:.4}", setup.corrupted_raw),
        ),
    ]);
    report.paragraph(
        "Clean activations are patched into the corrupted run, one site at a time. For the \
         logit difference, 0 is the corrupted behaviour and 1 the clean one.",
    );
    println!(
        "clean {:.4}  corrupted {:.4}  ({} tokens)",
        setup.clean_raw,
        setup.corrupted_raw,
        clean.len()
    );
    let mut tensors = HashMap::new();
    let mut results = serde_json::Map::new();
    let mut done: Vec<(String, Sweep, Vec<String>, &str)> = Vec::new();
    for s in &sites {
        let (site, sweep, x_ticks, x_label) = match *s {
            Site::Position(ps) => (
                ps.name(),
                setup.sweep_positions(ps)?,
                labels.clone(),
                "position",
            ),
            Site::Head(hs) => {
                let n = hs.n_heads(&m.model);
                (
                    hs.name(),
                    setup.sweep_heads(hs)?,
                    (0..n).map(|h| h.to_string()).collect(),
                    "head",
                )
            }
        };
        print_top(&sweep, &x_ticks, x_label);
        let fig = sweep_figure(&sweep, x_ticks, x_label, metric);
        dir.write_figure(&format!("patch_{site}"), &fig)?;
        report
            .heading(site)
            .figure(format!("{site} patched per layer × {x_label}"), &fig);
        let (nl, nx) = (sweep.values.len(), sweep.values[0].len());
        let flat: Vec<f32> = sweep.values.iter().flatten().map(|&v| v as f32).collect();
        tensors.insert(
            site.to_string(),
            Tensor::from_vec(flat, (nl, nx), &Device::Cpu)?,
        );
        results.insert(site.into(), json!(sweep));
        done.push((
            site.to_string(),
            sweep,
            x_ticks_for(&labels, &m, site),
            x_label,
        ));
    }
    if a.all_positions {
        for ps in PositionSite::ALL
            .iter()
            .filter(|p| done.iter().any(|d| d.0 == p.name()))
        {
            let sweep = setup.sweep_layers(*ps)?;
            let fig = sweep_figure(&sweep, vec!["all positions".into()], "", metric);
            dir.write_figure(&format!("patch_{}", sweep.site), &fig)?;
            report
                .heading(&sweep.site)
                .figure(format!("{} patched over all positions", ps.name()), &fig);
            results.insert(sweep.site.clone(), json!(sweep));
        }
    }
    if let Some((l, h)) = head {
        let sites: Vec<HeadSite> = HeadSite::ALL
            .iter()
            .copied()
            .filter(|s| done.iter().any(|d| d.0 == s.name()))
            .collect();
        if sites.is_empty() {
            bail!("--head needs a per-head site in --sites (z, q, k, v, pattern)");
        }
        for hs in sites {
            let sweep = setup.sweep_head_positions(hs, l, h)?;
            print_top(&sweep, &labels, "position");
            let fig = sweep_figure(&sweep, labels.clone(), "position", metric);
            dir.write_figure(&format!("patch_{}", sweep.site), &fig)?;
            report.heading(&sweep.site).figure(
                format!("head {l}.{h}'s {} patched at each position", hs.name()),
                &fig,
            );
            results.insert(sweep.site.clone(), json!(sweep));
        }
    }
    if a.attribution {
        let ps: Vec<PositionSite> = PositionSite::ALL
            .iter()
            .copied()
            .filter(|p| done.iter().any(|d| d.0 == p.name()))
            .collect();
        let hs: Vec<HeadSite> = HeadSite::ALL
            .iter()
            .copied()
            .filter(|h| *h != HeadSite::Pattern && done.iter().any(|d| d.0 == h.name()))
            .collect();
        let attr = attribution_sweeps(&setup, &ps, &hs)?;
        let mut rows = Vec::new();
        println!("attribution patching vs activation patching:");
        for at in &attr {
            let base = at.site.trim_end_matches("_attribution");
            let (_, act, ticks, x_label) =
                done.iter().find(|d| d.0 == base).expect("site was swept");
            let ag = agreement(act, at, setup.corrupted_value(), 10);
            println!(
                "  {base:<10} correlation {:+.3}  top-10 overlap {:.0}%  sign agreement {:.0}%",
                ag.correlation,
                100.0 * ag.top_k_overlap,
                100.0 * ag.sign_agreement
            );
            rows.push(vec![
                base.to_string(),
                format!("{:+.3}", ag.correlation),
                format!("{:.0}%", 100.0 * ag.top_k_overlap),
                format!("{:.0}%", 100.0 * ag.sign_agreement),
            ]);
            let fig = sweep_figure(at, ticks.clone(), x_label, metric);
            dir.write_figure(&format!("attribution_{base}"), &fig)?;
            report
                .heading(format!("{base}: attribution patching"))
                .figure(
                    "(a_clean − a_corrupt)·∂metric/∂a at the corrupted run",
                    &fig,
                );
            let (nl, nx) = (at.values.len(), at.values[0].len());
            let flat: Vec<f32> = at.values.iter().flatten().map(|&v| v as f32).collect();
            tensors.insert(
                at.site.clone(),
                Tensor::from_vec(flat, (nl, nx), &Device::Cpu)?,
            );
            results.insert(at.site.clone(), json!({"sweep": at, "agreement": ag}));
        }
        report.heading("attribution vs activation patching").table(
            &[
                "site",
                "correlation",
                "top-10 overlap",
                "sign agreement (|effect| ≥ 0.05)",
            ],
            rows,
        );
    }
    results.insert("clean_tokens".into(), json!(clean));
    results.insert("corrupted_tokens".into(), json!(corrupt));
    results.insert("clean_raw".into(), json!(setup.clean_raw));
    results.insert("corrupted_raw".into(), json!(setup.corrupted_raw));
    dir.write_tensors("patching.safetensors", &tensors)?;
    dir.write_json("results.json", &serde_json::Value::Object(results))
        .context("writing results")?;
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
}

fn x_ticks_for(
    labels: &[String],
    m: &interplab_core::loader::LoadedModel,
    site: &str,
) -> Vec<String> {
    match HeadSite::ALL.iter().find(|h| h.name() == site) {
        Some(h) => (0..h.n_heads(&m.model)).map(|i| i.to_string()).collect(),
        None => labels.to_vec(),
    }
}

fn print_top(s: &Sweep, x: &[String], x_label: &str) {
    let mut all: Vec<(usize, usize, f64)> = s
        .values
        .iter()
        .enumerate()
        .flat_map(|(l, r)| r.iter().enumerate().map(move |(i, &v)| (l, i, v)))
        .collect();
    all.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
    println!("{}: largest effects", s.site);
    for (l, i, v) in all.iter().take(5) {
        println!("  layer {l:>2}  {x_label} {:<16} {v:+.4}", x[*i]);
    }
}

/// Layers × positions (or heads) heat map; signed metrics use a diverging scale centred at 0.
fn sweep_figure(s: &Sweep, x_ticks: Vec<String>, x_label: &str, metric: Metric) -> Figure {
    let (scale, label) = match metric {
        Metric::LogitDiff { .. } => (ColorScale::Diverging, "normalised logit difference"),
        Metric::AnswerProb { .. } => (ColorScale::Sequential, "p(answer)"),
        Metric::Kl => (ColorScale::Sequential, "KL(clean ‖ patched), nats"),
    };
    Figure::Heatmap(Heatmap {
        title: format!("patching {}", s.site),
        x_label: x_label.into(),
        y_label: "layer".into(),
        x_ticks,
        y_ticks: (0..s.values.len()).map(|l| l.to_string()).collect(),
        values: s.values.clone(),
        scale,
        range: None,
        colorbar_label: label.into(),
    })
}

/// `LAYER.HEAD`, both in range for `model` (query heads; K/V sites map them to their group).
fn parse_head(
    spec: &str,
    model: &interplab_core::model::HookedTransformer,
) -> anyhow::Result<(usize, usize)> {
    let (l, h) = spec
        .split_once('.')
        .and_then(|(l, h)| Some((l.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--head {spec:?} is not LAYER.HEAD"))?;
    if l >= model.cfg.n_layers {
        bail!(
            "--head {spec}: layer index {l} out of range (the model has {} layers)",
            model.cfg.n_layers
        );
    }
    if h >= model.cfg.n_heads {
        bail!(
            "--head {spec}: head index {h} out of range (the model has {} heads)",
            model.cfg.n_heads
        );
    }
    Ok((l, h))
}
