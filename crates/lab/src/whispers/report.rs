//! The figures, prose and report of `toy-whispers`.

use interplab_core::loader::LoadedModel;
use interplab_report::{ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle};
use interplab_train::inverter::{
    bucket_label, Baselines, InverterConfig, LayerResult, BUCKETS, DEFAULT_HOOK,
};

use super::{Config, Results};
use crate::tokens::show_token;
use crate::Outcome;

/// What the report needs besides the results.
pub(super) struct Facts<'a> {
    pub cfg: &'a Config,
    pub inv: &'a InverterConfig,
    pub m: &'a LoadedModel,
    pub n_docs: usize,
    /// Epochs each layer trained for.
    pub epochs: usize,
    /// The document of each sequence.
    pub seq_doc: &'a [usize],
}

/// The true input tokens at the sample positions of sequence `s`.
fn truth_ids(r: &LayerResult, s: u32) -> Vec<u32> {
    r.samples
        .iter()
        .filter(|g| g.seq == s)
        .map(|g| g.token)
        .collect()
}

/// The layer's top-1 guess at each sampled position of held-out sequence `s`.
fn top1_ids(r: &LayerResult, s: u32) -> Vec<u32> {
    r.samples
        .iter()
        .filter(|g| g.seq == s)
        .filter_map(|g| g.top.first().map(|t| t.0))
        .collect()
}

fn accuracy_figure(results: &[LayerResult], b: &Baselines, k: usize) -> Figure {
    let series = |name: String, f: &dyn Fn(&LayerResult) -> f64| Series {
        name,
        points: results.iter().map(|r| (r.layer as f64, f(r))).collect(),
        style: SeriesStyle::LineAndMarkers,
    };
    Figure::Line(LinePlot {
        title: "inverting activations: held-out accuracy per layer".into(),
        x_label: "layer".into(),
        y_label: "accuracy".into(),
        series: vec![
            series("top-1".into(), &|r| r.test.top1),
            series(format!("top-{k}"), &|r| r.test.topk),
            series("top-1, seen tokens".into(), &|r| r.test_seen.top1),
        ],
        hlines: vec![
            (
                b.frequent_top1,
                format!("most frequent token {:.3}", b.frequent_top1),
            ),
            (
                b.frequent_topk,
                format!("{k} most frequent {:.3}", b.frequent_topk),
            ),
            (
                b.uniform_topk,
                format!("uniform top-{k} {:.4}", b.uniform_topk),
            ),
            (
                b.seen_fraction,
                format!("ceiling: seen tokens {:.3}", b.seen_fraction),
            ),
        ],
        ..Default::default()
    })
}

fn bucket_figure(results: &[LayerResult], layer_name: &dyn Fn(usize) -> String) -> Figure {
    let counts: Vec<usize> = (0..BUCKETS.len())
        .map(|i| results.first().map_or(0, |r| r.buckets[i].n))
        .collect();
    Figure::Heatmap(Heatmap {
        title: "held-out top-1 accuracy by position".into(),
        x_label: "position (held-out positions)".into(),
        y_label: "layer".into(),
        x_ticks: (0..BUCKETS.len())
            .map(|i| format!("{} ({})", bucket_label(i), counts[i]))
            .collect(),
        y_ticks: results.iter().map(|r| layer_name(r.layer)).collect(),
        values: results
            .iter()
            .map(|r| {
                r.buckets
                    .iter()
                    .map(|a| if a.n == 0 { f64::NAN } else { a.top1 })
                    .collect()
            })
            .collect(),
        scale: ColorScale::Sequential,
        range: Some((0.0, 1.0)),
        colorbar_label: "top-1 accuracy".into(),
    })
}

fn loss_figure(results: &[LayerResult], layer_name: &dyn Fn(usize) -> String) -> Figure {
    Figure::Line(LinePlot {
        title: "training loss per epoch".into(),
        x_label: "epoch".into(),
        y_label: "cross-entropy".into(),
        log_y: true,
        series: results
            .iter()
            .map(|r| Series {
                name: format!("layer {}", layer_name(r.layer)),
                points: r
                    .train_loss
                    .iter()
                    .enumerate()
                    .map(|(e, l)| ((e + 1) as f64, l.max(1e-6)))
                    .collect(),
                style: SeriesStyle::Line,
            })
            .collect(),
        ..Default::default()
    })
}

/// A percentage with enough digits for small values.
fn pct(v: f64) -> String {
    if v > 0.0 && v < 0.01 {
        format!("{:.3}%", 100.0 * v)
    } else {
        format!("{:.1}%", 100.0 * v)
    }
}

/// The finding in words, with numbers.
fn summary(
    results: &[LayerResult],
    b: &Baselines,
    k: usize,
    show: &dyn Fn(u32) -> String,
    layer_name: &dyn Fn(usize) -> String,
) -> String {
    let (Some(first), Some(last)) = (results.first(), results.last()) else {
        return String::new();
    };
    let mut s = format!(
        "At layer {} the inverter recovers the input token at {} of held-out positions (top-{k} {}; \
         {} of the positions whose token occurs in the training documents). Chance is {} for a \
         uniform guess over the {} classes and {} for always answering the most frequent token {} \
         (top-{k}: {} and {}), so layer {} is {:.0}× above the better of the two chance levels. ",
        layer_name(first.layer),
        pct(first.test.top1),
        pct(first.test.topk),
        pct(first.test_seen.top1),
        pct(b.uniform_top1),
        b.classes,
        pct(b.frequent_top1),
        b.frequent_tokens.first().map_or("?".into(), |&t| show(t)),
        pct(b.uniform_topk),
        pct(b.frequent_topk),
        layer_name(first.layer),
        first.test.top1 / b.frequent_top1.max(b.uniform_top1),
    );
    if results.len() > 1 {
        let min = results
            .iter()
            .min_by(|x, y| x.test.top1.total_cmp(&y.test.top1))
            .expect("non-empty");
        let rises = results
            .windows(2)
            .filter(|w| w[1].test.top1 > w[0].test.top1)
            .count();
        let trend = if last.test.top1 < first.test.top1 {
            "falls"
        } else {
            "does not fall"
        };
        let path: Vec<String> = results
            .iter()
            .map(|r| format!("{} {}", layer_name(r.layer), pct(r.test.top1)))
            .collect();
        s.push_str(&format!(
            "With depth the accuracy {trend}: from {} at layer {} to {} at layer {} \
             (lowest {} at layer {}; it rises between consecutive probed layers {rises} of {} times). \
             Per layer: {}. The deepest layer is still {:.1}× the better chance level.",
            pct(first.test.top1),
            layer_name(first.layer),
            pct(last.test.top1),
            layer_name(last.layer),
            pct(min.test.top1),
            layer_name(min.layer),
            results.len() - 1,
            path.join(", "),
            last.test.top1 / b.frequent_top1.max(b.uniform_top1),
        ));
    }
    // Position 0 against the rest, at the deepest layer: the first token has no context.
    let first_pos = &last.buckets[0];
    let (n_rest, hits_rest) = last.buckets[1..].iter().fold((0usize, 0.0), |(n, h), a| {
        (n + a.n, h + a.top1 * a.n as f64)
    });
    if first_pos.n > 0 && n_rest > 0 {
        s.push_str(&format!(
            " By position, at layer {} the first position is recovered {} of the time \
             ({} positions) against {} at later positions.",
            layer_name(last.layer),
            pct(first_pos.top1),
            first_pos.n,
            pct(hits_rest / n_rest as f64)
        ));
    }
    s
}

fn setup(f: &Facts, r: &Results) -> Vec<(&'static str, String)> {
    let (cfg, b) = (f.cfg, &r.baselines);
    vec![
        ("model", cfg.model.clone()),
        ("corpus", format!("{} ({} documents)", cfg.corpus, f.n_docs)),
        ("hook", f.inv.hook.clone()),
        (
            "features",
            match cfg.dims {
                None => format!("all {}", r.features),
                Some(k) if cfg.random_dims => format!("{k} at random (seed {})", cfg.seed),
                Some(k) => format!("first {k}"),
            },
        ),
        (
            "positions",
            cfg.positions.clone().unwrap_or_else(|| "all".into()),
        ),
        (
            "inverter",
            if cfg.hidden == 0 {
                "softmax regression".into()
            } else {
                format!("MLP, {} ReLU hidden units", cfg.hidden)
            },
        ),
        (
            "training",
            format!(
                "{} epochs ({} steps), batch {}, AdamW lr {}, weight decay {}, seed {}",
                f.epochs,
                f.epochs * r.n_train.div_ceil(cfg.batch),
                cfg.batch,
                cfg.lr,
                cfg.weight_decay,
                cfg.seed
            ),
        ),
        (
            "split",
            format!(
                "by document: {} train ({} positions), {} held out ({} positions)",
                r.train_documents.len(),
                r.n_train,
                r.test_documents.len(),
                r.n_test
            ),
        ),
        (
            "classes",
            format!(
                "{} — the tokens present in the corpus, not the model's {} vocabulary",
                b.classes, f.m.model.cfg.d_vocab
            ),
        ),
    ]
}

/// The guesses on held-out sequences: per sequence, the top-1 guesses spelled out and a table
/// of every layer's top 3.
fn guesses(
    report: &mut Report,
    f: &Facts,
    results: &[LayerResult],
    show: &dyn Fn(u32) -> String,
    one_line: &dyn Fn(&[u32]) -> String,
    layer_name: &dyn Fn(usize) -> String,
) {
    report.heading("Guesses on held-out text");
    report.paragraph(format!(
        "The first {} positions of {} held-out sequences: the true input token heads each \
         column, each cell holds the inverter's top 3 guesses with their probabilities \
         (✓: the top guess is right).",
        f.cfg.sample_len, f.cfg.samples
    ));
    let mut sample_seqs: Vec<u32> = results
        .first()
        .map(|r| r.samples.iter().map(|g| g.seq).collect())
        .unwrap_or_default();
    sample_seqs.dedup();
    for &s in &sample_seqs {
        let first = &results[0];
        let truth: Vec<String> = first
            .samples
            .iter()
            .filter(|g| g.seq == s)
            .map(|g| show(g.token))
            .collect();
        let mut headers = vec!["layer".to_string()];
        headers.extend(truth.iter().cloned());
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                let mut row = vec![layer_name(r.layer)];
                row.extend(r.samples.iter().filter(|g| g.seq == s).map(|g| {
                    let ok = g.top.first().is_some_and(|t| t.0 == g.token);
                    let cells: Vec<String> = g
                        .top
                        .iter()
                        .take(3)
                        .map(|(t, p)| format!("{} {:.2}", show(*t), p))
                        .collect();
                    format!("{}{}", if ok { "✓ " } else { "" }, cells.join(" · "))
                }));
                row
            })
            .collect();
        let h: Vec<&str> = headers.iter().map(|s| s.as_str()).collect();
        let mut text = format!(
            "sequence {s} (document {}), top-1 guesses spelled out (⏎: newline)\n{:>10}  {}",
            f.seq_doc[s as usize],
            "input",
            one_line(&truth_ids(first, s))
        );
        for r in results {
            text.push_str(&format!(
                "\n{:>10}  {}",
                layer_name(r.layer),
                one_line(&top1_ids(r, s))
            ));
        }
        report.pre(text);
        report.table(&h, rows);
    }
}

/// Figures, report and the terminal's sample text around `results`.
pub(super) fn outcome(f: &Facts, mut results: Results) -> Outcome<Results> {
    let (m, k) = (f.m, f.cfg.top_k);
    let n_layers = results.n_layers;
    let show = |t: u32| show_token(m, t);
    let one_line = |ids: &[u32]| {
        m.tokenizer
            .decode(ids)
            .unwrap_or_default()
            .replace('\n', "⏎")
    };
    let default_hook = f.inv.hook == DEFAULT_HOOK;
    let layer_name = |l: usize| {
        if l == n_layers && default_hook {
            format!("{l} (final)")
        } else {
            l.to_string()
        }
    };
    let layers = &results.layers;
    // The first sample, as text: what each layer's top guesses spell.
    if let Some(s) = layers
        .first()
        .and_then(|r| r.samples.first())
        .map(|g| g.seq)
    {
        let mut lines = vec![("input".to_string(), one_line(&truth_ids(&layers[0], s)))];
        lines.extend(
            layers
                .iter()
                .map(|r| (r.layer.to_string(), one_line(&top1_ids(r, s)))),
        );
        results.sample_text = lines;
    }
    let layers = &results.layers;
    let b = &results.baselines;
    let acc_fig = accuracy_figure(layers, b, k);
    let heat = bucket_figure(layers, &layer_name);
    let loss_fig = loss_figure(layers, &layer_name);

    let mut report = Report::new(format!("ML Chinese whispers: {}", f.cfg.model));
    report.key_values(&setup(f, &results));
    report.paragraph(summary(layers, b, k, &show, &layer_name));
    report.figure(
        "held-out accuracy per layer, with chance levels (dashed)",
        &acc_fig,
    );
    report.figure(
        "held-out top-1 accuracy per layer and position bucket (grey: no positions)",
        &heat,
    );
    report.table(
        &[
            "layer",
            "hook",
            "top-1",
            &format!("top-{k}"),
            "top-1 (token seen in training)",
            "train top-1",
            "final train loss",
        ],
        layers
            .iter()
            .map(|r| {
                vec![
                    layer_name(r.layer),
                    r.hook.clone(),
                    format!("{:.3}", r.test.top1),
                    format!("{:.3}", r.test.topk),
                    format!("{:.3}", r.test_seen.top1),
                    format!("{:.3}", r.train.top1),
                    format!("{:.4}", r.train_loss.last().copied().unwrap_or(f64::NAN)),
                ]
            })
            .collect(),
    );
    guesses(&mut report, f, layers, &show, &one_line, &layer_name);
    report.figure("training loss", &loss_fig);
    let mut outcome = Outcome::new(results, report);
    outcome
        .figure("accuracy_by_layer", acc_fig)
        .figure("accuracy_by_position", heat)
        .figure("train_loss", loss_fig);
    outcome
}
