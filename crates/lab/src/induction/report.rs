//! The figures and report of `toy-induction`.

use interplab_report::{ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle};
use interplab_train::induction::DataConfig;

use super::{CheckpointRecord, Config, DepthRun, Results, INDUCTION_FRACTION, PREV_TOKEN_MULTIPLE};
use crate::Outcome;

fn depth_name(n: usize) -> String {
    format!("{n} layer{}", if n > 1 { "s" } else { "" })
}

fn head_labels(nl: usize, nh: usize) -> Vec<String> {
    (0..nl)
        .flat_map(|l| (0..nh).map(move |h| format!("{l}.{h}")))
        .collect()
}

fn describe_data(d: &DataConfig) -> String {
    match d {
        DataConfig::Repeated {
            seq_len,
            min_seq_len,
            repeats,
        } => format!(
            "random tokens: a chunk of {min_seq_len}–{seq_len} tokens repeated to fill {} positions",
            seq_len * repeats
        ),
        DataConfig::Text { source } => format!("byte-level text of {source}"),
    }
}

/// Loss curves, smoothed, with each depth's steepest drop marked.
fn loss_figure(runs: &[DepthRun], r: &Results) -> Figure {
    let smooth = |v: &[f64], w: usize| -> Vec<(f64, f64)> {
        let stride = (v.len() / 400).max(1);
        (0..v.len())
            .step_by(stride)
            .map(|i| {
                let lo = i.saturating_sub(w - 1);
                let m = v[lo..=i].iter().sum::<f64>() / (i + 1 - lo) as f64;
                ((i + 1) as f64, m)
            })
            .collect()
    };
    Figure::Line(LinePlot {
        title: "training loss (20-step moving average); dashed: steepest drop".into(),
        x_label: "step".into(),
        y_label: "loss (nats)".into(),
        series: runs
            .iter()
            .map(|run| Series {
                name: depth_name(run.cfg.n_layers),
                points: smooth(&run.loss, 20),
                style: SeriesStyle::Line,
            })
            .collect(),
        vlines: r
            .depths
            .iter()
            .filter_map(|s| {
                s.loss_drop.map(|d| {
                    (
                        (d.start + d.end) as f64 / 2.0,
                        format!("L{} drop", s.layers),
                    )
                })
            })
            .collect(),
        ..Default::default()
    })
}

fn icl_figure(runs: &[DepthRun]) -> Figure {
    Figure::Line(LinePlot {
        title: "in-context-learning score (late − early token loss)".into(),
        x_label: "step".into(),
        y_label: "ICL score (nats)".into(),
        series: runs
            .iter()
            .map(|run| Series {
                name: depth_name(run.cfg.n_layers),
                points: run
                    .records
                    .iter()
                    .map(|r| (r.step as f64, r.icl_score))
                    .collect(),
                style: SeriesStyle::LineAndMarkers,
            })
            .collect(),
        hlines: vec![(0.0, "0".into())],
        ..Default::default()
    })
}

/// Head scores over checkpoints: one row per head, one column per checkpoint.
fn over_time(recs: &[CheckpointRecord], nl: usize, nh: usize, prev: bool, title: String) -> Figure {
    let stride = recs.len().div_ceil(40).max(1);
    let cols: Vec<&CheckpointRecord> = recs.iter().step_by(stride).collect();
    Figure::Heatmap(Heatmap {
        title,
        x_label: "step".into(),
        y_label: "head".into(),
        x_ticks: cols.iter().map(|r| r.step.to_string()).collect(),
        y_ticks: head_labels(nl, nh),
        values: (0..nl)
            .flat_map(|l| (0..nh).map(move |h| (l, h)))
            .map(|(l, h)| {
                cols.iter()
                    .map(|r| {
                        if prev {
                            r.previous_token[l][h]
                        } else {
                            r.induction[l][h]
                        }
                    })
                    .collect()
            })
            .collect(),
        scale: ColorScale::Sequential,
        range: Some((0.0, 1.0)),
        colorbar_label: if prev {
            "previous-token score".into()
        } else {
            "induction score".into()
        },
    })
}

fn heads_figure(runs: &[DepthRun]) -> Figure {
    Figure::Grid {
        title: "head scores over training (rows: layer.head)".into(),
        columns: 2,
        figures: runs
            .iter()
            .flat_map(|run| {
                let (nl, nh, recs) = (run.cfg.n_layers, run.cfg.n_heads, &run.records);
                [
                    over_time(
                        recs,
                        nl,
                        nh,
                        true,
                        format!("{}: previous-token", depth_name(nl)),
                    ),
                    over_time(
                        recs,
                        nl,
                        nh,
                        false,
                        format!("{}: induction", depth_name(nl)),
                    ),
                ]
            })
            .collect(),
    }
}

/// K-composition at the end of training, one panel per depth of two or more layers.
fn composition_panels(runs: &[DepthRun]) -> Vec<Figure> {
    runs.iter()
        .filter_map(|run| {
            let (nl, nh) = (run.cfg.n_layers, run.cfg.n_heads);
            let k = run.records.last()?.composition.as_ref()?.k_scores(nl, nh);
            let earlier = head_labels(nl - 1, nh);
            let later: Vec<String> = head_labels(nl, nh).split_off(nh);
            Some(Figure::Heatmap(Heatmap {
                title: format!("{nl} layers: K-composition at step {}", run.cfg.steps),
                x_label: "later head (reads with its key)".into(),
                y_label: "earlier head (writes with its OV)".into(),
                x_ticks: later,
                y_ticks: earlier,
                values: (0..nl - 1)
                    .flat_map(|l1| (0..nh).map(move |h1| (l1, h1)))
                    .map(|(l1, h1)| {
                        (1..nl)
                            .flat_map(|l2| (0..nh).map(move |h2| (l2, h2)))
                            .map(|(l2, h2)| if l2 > l1 { k.get(l1, h1, l2, h2) } else { 0.0 })
                            .collect()
                    })
                    .collect(),
                scale: ColorScale::Sequential,
                range: None,
                colorbar_label: "K-composition".into(),
            }))
        })
        .collect()
}

fn summary_table(report: &mut Report, r: &Results) {
    let dash = || "–".to_string();
    report.table(
        &[
            "layers",
            "final loss",
            "ICL score",
            "steepest drop (steps)",
            "best induction head",
            "score (% of perfect)",
            "formed at step",
            "K-partner",
            "partner prev-token score",
        ],
        r.depths
            .iter()
            .map(|s| {
                vec![
                    s.layers.to_string(),
                    format!("{:.3}", s.final_loss),
                    format!("{:.3}", s.final_icl_score),
                    s.loss_drop
                        .map(|d| format!("{}–{}", d.start, d.end))
                        .unwrap_or_else(dash),
                    format!("L{}H{}", s.best_induction_head.0, s.best_induction_head.1),
                    format!(
                        "{:.2} ({:.0}%)",
                        s.best_induction_head.2,
                        100.0 * s.best_induction_fraction
                    ),
                    s.induction_step
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "never".into()),
                    s.k_partner
                        .map(|(l, h, k)| format!("L{l}H{h} ({k:.3})"))
                        .unwrap_or_else(dash),
                    s.k_partner_prev_token
                        .map(|p| format!("{p:.2}"))
                        .unwrap_or_else(dash),
                ]
            })
            .collect(),
    );
}

/// Figures and report around `results`.
pub(super) fn outcome(cfg: &Config, runs: &[DepthRun], results: Results) -> Outcome<Results> {
    let loss_fig = loss_figure(runs, &results);
    let icl_fig = icl_figure(runs);
    let heads_fig = heads_figure(runs);
    let comp = composition_panels(runs);
    let has_comp = !comp.is_empty();
    let comp_fig = Figure::Grid {
        title: format!(
            "K-composition (random {:.3})",
            results.composition_random_baseline
        ),
        columns: 2,
        figures: comp,
    };

    let mut report = Report::new("Induction heads in attention-only transformers");
    let c0 = &runs[0].cfg;
    let depths: Vec<String> = runs.iter().map(|r| r.cfg.n_layers.to_string()).collect();
    report.key_values(&[
        ("depths", depths.join(", ")),
        (
            "model",
            format!(
                "d_model {}, {} heads, vocab {}, context {}, {}",
                c0.d_model,
                c0.n_heads,
                c0.d_vocab,
                c0.n_ctx,
                if c0.layer_norm { "LayerNorm" } else { "no norm" }
            ),
        ),
        ("data", describe_data(&c0.data)),
        (
            "training",
            format!(
                "{} steps, batch {}, AdamW lr {} wd {}, seed {}",
                c0.steps, c0.batch, c0.lr, c0.weight_decay, c0.seed
            ),
        ),
        (
            "head scores",
            format!(
                "TransformerLens definitions on {} repeated random-token sequences; a perfect induction head scores {:.3}, a perfect previous-token head {:.3}; a head counts as an induction head above {:.0}% of perfect, as a previous-token head above {PREV_TOKEN_MULTIPLE} × the {:.3} of uniform attention",
                cfg.eval_seqs,
                results.perfect_induction_score,
                results.perfect_previous_token_score,
                100.0 * INDUCTION_FRACTION,
                results.uniform_previous_token_score
            ),
        ),
    ]);
    for s in &results.depths {
        let drop = match s.loss_drop {
            Some(d) => format!(
                "The loss fell fastest between steps {} and {} (from {:.2} to {:.2}).",
                d.start, d.end, d.before, d.after
            ),
            None => "Too few steps to locate a drop.".into(),
        };
        report.paragraph(format!(
            "{}: {}. {drop} Final training loss {:.3}, ICL score {:.3} nats.",
            depth_name(s.layers),
            s.describe(),
            s.final_loss,
            s.final_icl_score
        ));
    }
    summary_table(&mut report, &results);
    report.figure(
        "training loss; the dashed lines mark each depth's steepest drop",
        &loss_fig,
    );
    let icl_words = match results.icl_positions {
        Some((e, l)) => format!(
            "in-context-learning score: loss of the prediction at position {l} minus that at position {e}"
        ),
        None => "in-context-learning score".into(),
    };
    report.figure(icl_words, &icl_fig);
    report.figure(
        "previous-token and induction scores of every head at every checkpoint",
        &heads_fig,
    );
    if has_comp {
        report.figure(
            "K-composition of every earlier head into every later head at the end of training",
            &comp_fig,
        );
    }
    let mut outcome = Outcome::new(results, report);
    outcome
        .figure("loss", loss_fig)
        .figure("icl", icl_fig)
        .figure("head_scores", heads_fig);
    if has_comp {
        outcome.figure("k_composition", comp_fig);
    }
    outcome
}
