//! `interplab toy whispers`: ML Chinese whispers — train a small network per layer to recover
//! the input token from that layer's activations of a real model, and show what it guesses.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use interplab_core::corpus::load_corpus;
use interplab_report::{ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle};
use interplab_train::checkpoint;
use interplab_train::inverter::{
    bucket_label, collect_activations, hook_name, split_documents, train_layer, Baselines,
    InverterConfig, LayerResult, Problem, BUCKETS, DEFAULT_HOOK,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cmd_run::manifest;
use crate::rundir::RunDir;
use crate::ui::load_model;

/// Arguments of `interplab toy whispers`.
#[derive(Args)]
pub struct WhispersArgs {
    /// Model: alias, path, pip:... or hf:...
    #[arg(default_value = "smollm2-135m")]
    model: String,
    /// Corpus: `sonnets` (shipped) or a text (blank-line separated) or JSONL file.
    #[arg(long, default_value = "sonnets")]
    corpus: String,
    /// Use only the first N documents of the corpus.
    #[arg(long)]
    max_docs: Option<usize>,
    /// Tokens per sequence; a longer document is cut into consecutive pieces.
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Hook to read, with {L} for the layer.
    #[arg(long, default_value = DEFAULT_HOOK)]
    hook: String,
    /// Layers, comma-separated; `final` (= n_layers) is the final residual stream for
    /// hook_resid_pre. Default: every second layer and the final residual.
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<String>>,
    /// Keep only K features of each activation (the first K, or K at random with --random-dims).
    #[arg(long)]
    dims: Option<usize>,
    /// Choose the --dims features at random (seeded).
    #[arg(long, requires = "dims")]
    random_dims: bool,
    /// Keep only positions A..B (half-open) of each sequence.
    #[arg(long)]
    positions: Option<String>,
    /// Hidden ReLU units of the inverter; 0 is softmax regression.
    #[arg(long, default_value_t = 0)]
    hidden: usize,
    /// Passes over the training positions (more if needed to reach --min-steps).
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Optimiser steps at least, whatever the corpus size.
    #[arg(long, default_value_t = 300)]
    min_steps: usize,
    /// Positions per optimiser step.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// AdamW (decoupled) weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Fraction of documents held out.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Seed of the document split, the --random-dims choice, initialisation and batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// k of top-k accuracy and of the guesses shown.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Held-out sequences shown as samples.
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Positions shown per sample.
    #[arg(long, default_value_t = 12)]
    sample_len: usize,
    /// Continue from the run directory's checkpoint (needs --out): finished layers are kept.
    #[arg(long, requires = "out")]
    resume: bool,
    /// Run directory (default runs/toy-whispers-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Everything that decides a run's numbers: a checkpoint is only resumed under the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunConfig {
    model: String,
    corpus: String,
    max_docs: Option<usize>,
    max_len: usize,
    top_k: usize,
    samples: usize,
    sample_len: usize,
    inverter: InverterConfig,
}

/// Finished layers, saved after each one.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    config: RunConfig,
    layers: Vec<LayerResult>,
}

fn parse_window(s: &str) -> anyhow::Result<(usize, usize)> {
    let (a, b) = s
        .split_once("..")
        .with_context(|| format!("--positions {s:?}: expected A..B"))?;
    let a: usize = a
        .trim()
        .parse()
        .with_context(|| format!("--positions {s:?}: bad start"))?;
    let b: usize = b
        .trim()
        .parse()
        .with_context(|| format!("--positions {s:?}: bad end"))?;
    Ok((a, b))
}

fn parse_layers(list: &[String], n_layers: usize) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for s in list {
        let s = s.trim();
        let l = if s == "final" {
            n_layers
        } else {
            s.parse()
                .with_context(|| format!("--layers: {s:?} is not a layer number"))?
        };
        if !out.contains(&l) {
            out.push(l);
        }
    }
    if out.is_empty() {
        bail!("--layers is empty");
    }
    Ok(out)
}

/// Train one inverter per layer and write the run directory.
pub fn run(a: WhispersArgs) -> anyhow::Result<()> {
    if a.max_len == 0 || a.top_k == 0 {
        bail!("--max-len and --top-k must be positive");
    }
    let positions = a.positions.as_deref().map(parse_window).transpose()?;
    let mut inv = InverterConfig {
        hook: a.hook.clone(),
        layers: vec![0],
        dims: a.dims,
        random_dims: a.random_dims,
        positions,
        hidden: a.hidden,
        epochs: a.epochs,
        min_steps: a.min_steps,
        batch: a.batch,
        lr: a.lr,
        weight_decay: a.weight_decay,
        test_fraction: a.test_fraction,
        seed: a.seed,
    };
    inv.validate()?;
    let mut docs = load_corpus(&a.corpus).with_context(|| format!("corpus {}", a.corpus))?;
    if let Some(n) = a.max_docs {
        docs.truncate(n);
    }
    let (train_docs, test_docs) = split_documents(docs.len(), a.test_fraction, a.seed)?;
    let m = load_model(&a.model)?;
    let n_layers = m.model.cfg.n_layers;
    inv.layers = match &a.layers {
        Some(l) => parse_layers(l, n_layers)?,
        None => (0..n_layers).step_by(2).chain([n_layers]).collect(),
    };
    let hooks: Vec<String> = inv
        .layers
        .iter()
        .map(|&l| hook_name(&m.model, &inv.hook, l))
        .collect::<interplab_core::Result<_>>()?;
    // Tokenise; a document longer than max_len becomes consecutive pieces.
    let add_bos = m.tokenizer.add_bos_default();
    let mut seqs: Vec<Vec<u32>> = Vec::new();
    let mut seq_test: Vec<bool> = Vec::new();
    let mut seq_doc: Vec<usize> = Vec::new();
    for (d, text) in docs.iter().enumerate() {
        let ids = m.tokenizer.encode(text, add_bos)?;
        for piece in ids.chunks(a.max_len) {
            seqs.push(piece.to_vec());
            seq_test.push(test_docs.binary_search(&d).is_ok());
            seq_doc.push(d);
        }
    }
    let cfg = RunConfig {
        model: a.model.clone(),
        corpus: a.corpus.clone(),
        max_docs: a.max_docs,
        max_len: a.max_len,
        top_k: a.top_k,
        samples: a.samples,
        sample_len: a.sample_len,
        inverter: inv.clone(),
    };
    let ckpt = a.out.as_ref().map(|o| o.join("checkpoint.json"));
    let mut state = if let Some(ckpt) = ckpt.as_ref().filter(|c| a.resume && c.exists()) {
        let s: State = checkpoint::load(ckpt)?;
        if s.config != cfg {
            bail!(
                "{} was written with a different configuration",
                ckpt.display()
            );
        }
        eprintln!(
            "resuming: {} of {} layers done",
            s.layers.len(),
            hooks.len()
        );
        s
    } else {
        State {
            config: cfg.clone(),
            layers: Vec::new(),
        }
    };
    let t0 = Instant::now();
    // Activations of the layers still to train (one layer when all are done: the labels and
    // split are needed for the report).
    let todo: Vec<usize> = (0..hooks.len())
        .filter(|&i| !state.layers.iter().any(|r| r.layer == inv.layers[i]))
        .collect();
    let run_hooks: Vec<String> = if todo.is_empty() {
        vec![hooks[0].clone()]
    } else {
        todo.iter().map(|&i| hooks[i].clone()).collect()
    };
    let bar = ProgressBar::new(seqs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} sequences through the model  {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ex = collect_activations(&m.model, &seqs, &seq_test, &run_hooks, &inv, &mut |n| {
        bar.set_position(n as u64)
    })?;
    bar.finish_and_clear();
    let collect_s = t0.elapsed().as_secs_f64();
    // Created only now, so that bad input (found above) leaves no directory behind.
    let dir = RunDir::create(a.out.as_deref(), "toy-whispers")?;
    let ckpt = dir.path.join("checkpoint.json");
    let prob = Problem::new(&ex, a.top_k, a.samples, a.sample_len);
    let b = &prob.baselines;
    eprintln!(
        "{} train / {} held-out positions ({} / {} documents), {} features, {} classes \
         (the tokens present in the corpus)",
        prob.train.len(),
        prob.test.len(),
        train_docs.len(),
        test_docs.len(),
        ex.width,
        b.classes
    );
    let epochs = inv.epochs_for(prob.train.len());
    let bar = ProgressBar::new((todo.len() * epochs) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} epochs  {msg}  {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for (h, &i) in todo.iter().enumerate() {
        let layer = inv.layers[i];
        let (_, r) = train_layer(&inv, &ex, h, layer, &hooks[i], &prob, &mut |e, loss| {
            bar.inc(1);
            bar.set_message(format!("layer {layer} epoch {e} loss {loss:.4}"));
        })?;
        bar.println(format!(
            "  layer {layer:>2}  top-1 {:.3}  top-{} {:.3}  ({:.1} s)",
            r.test.top1, a.top_k, r.test.topk, r.wall_s
        ));
        state.layers.push(r);
        checkpoint::save(&ckpt, &state)?;
    }
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    state.layers.sort_by_key(|r| r.layer);
    let results = &state.layers;
    print_table(results, b, a.top_k, n_layers);
    // The first sample, as text: what each layer's top guesses spell.
    let one_line = |ids: &[u32]| {
        m.tokenizer
            .decode(ids)
            .unwrap_or_default()
            .replace('\n', "⏎")
    };
    if let Some(s) = results
        .first()
        .and_then(|r| r.samples.first())
        .map(|g| g.seq)
    {
        let truth = truth_ids(&results[0], s);
        println!("held-out sample, top-1 guesses per layer:");
        println!("  {:>5}   {}", "input", one_line(&truth));
        for r in results {
            println!("  {:>5}   {}", r.layer, one_line(&top1_ids(r, s)));
        }
    }
    println!("wall time {secs:.1} s (model forward {collect_s:.1} s)");

    let show = |t: u32| crate::cmd_run::show_token(&m, t);
    let layer_name = |l: usize| {
        if l == n_layers && inv.hook == DEFAULT_HOOK {
            format!("{l} (final)")
        } else {
            l.to_string()
        }
    };
    let acc_fig = accuracy_figure(results, b, a.top_k);
    let heat = bucket_figure(results, &layer_name);
    let loss_fig = Figure::Line(LinePlot {
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
    });
    dir.write_figure("accuracy_by_layer", &acc_fig)?;
    dir.write_figure("accuracy_by_position", &heat)?;
    dir.write_figure("train_loss", &loss_fig)?;

    let mut report = Report::new(format!("ML Chinese whispers: {}", a.model));
    report.key_values(&[
        ("model", a.model.clone()),
        ("corpus", format!("{} ({} documents)", a.corpus, docs.len())),
        ("hook", inv.hook.clone()),
        (
            "features",
            match a.dims {
                None => format!("all {}", ex.width),
                Some(k) if a.random_dims => format!("{k} at random (seed {})", a.seed),
                Some(k) => format!("first {k}"),
            },
        ),
        (
            "positions",
            a.positions.clone().unwrap_or_else(|| "all".into()),
        ),
        (
            "inverter",
            if a.hidden == 0 {
                "softmax regression".into()
            } else {
                format!("MLP, {} ReLU hidden units", a.hidden)
            },
        ),
        (
            "training",
            format!(
                "{epochs} epochs ({} steps), batch {}, AdamW lr {}, weight decay {}, seed {}",
                epochs * prob.train.len().div_ceil(a.batch),
                a.batch,
                a.lr,
                a.weight_decay,
                a.seed
            ),
        ),
        (
            "split",
            format!(
                "by document: {} train ({} positions), {} held out ({} positions)",
                train_docs.len(),
                prob.train.len(),
                test_docs.len(),
                prob.test.len()
            ),
        ),
        (
            "classes",
            format!(
                "{} — the tokens present in the corpus, not the model's {} vocabulary",
                b.classes, m.model.cfg.d_vocab
            ),
        ),
        ("wall time", format!("{secs:.1} s")),
    ]);
    report.paragraph(summary(results, b, a.top_k, &show, &layer_name));
    report.figure(
        "held-out accuracy per layer, with chance levels (dashed)",
        &acc_fig,
    );
    report.figure(
        "held-out top-1 accuracy per layer and position bucket (grey: no positions)",
        &heat,
    );
    let k = a.top_k;
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
        results
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
    report.heading("Guesses on held-out text");
    report.paragraph(format!(
        "The first {} positions of {} held-out sequences: the true input token heads each \
         column, each cell holds the inverter's top 3 guesses with their probabilities \
         (✓: the top guess is right).",
        a.sample_len, a.samples
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
            seq_doc[s as usize],
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
    report.figure("training loss", &loss_fig);

    let args = json!({"corpus": a.corpus, "max_docs": a.max_docs, "max_len": a.max_len,
        "top_k": a.top_k, "samples": a.samples, "sample_len": a.sample_len, "resume": a.resume});
    let mut man = manifest(&m, "toy whispers", args)?;
    man["config"] = serde_json::to_value(&cfg)?;
    dir.write_json("manifest.json", &man)?;
    dir.write_json("config.json", &serde_json::to_value(&cfg)?)?;
    let bucket_labels: Vec<String> = (0..BUCKETS.len()).map(bucket_label).collect();
    dir.write_json(
        "results.json",
        &json!({
            "layers": results,
            "baselines": b,
            "classes": prob.classes.tokens,
            "n_train": prob.train.len(),
            "n_test": prob.test.len(),
            "train_documents": train_docs,
            "test_documents": test_docs,
            "position_buckets": bucket_labels,
            "features": ex.width,
            "wall_s": secs,
            "forward_s": collect_s,
        }),
    )?;
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
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

fn print_table(results: &[LayerResult], b: &Baselines, k: usize, n_layers: usize) {
    println!(
        "held-out accuracy ({} classes; chance: uniform {:.4} / {:.4}, most frequent {:.3} / {:.3})",
        b.classes, b.uniform_top1, b.uniform_topk, b.frequent_top1, b.frequent_topk
    );
    println!("  layer   top-1   top-{k}   top-1 seen   train top-1");
    for r in results {
        let name = if r.layer == n_layers && r.hook.ends_with("hook_resid_post") {
            format!("{} f", r.layer)
        } else {
            r.layer.to_string()
        };
        println!(
            "  {:>5}   {:.3}   {:.3}   {:>10.3}   {:>11.3}",
            name, r.test.top1, r.test.topk, r.test_seen.top1, r.train.top1
        );
    }
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
    let pct = |v: f64| {
        if v > 0.0 && v < 0.01 {
            format!("{:.3}%", 100.0 * v)
        } else {
            format!("{:.1}%", 100.0 * v)
        }
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
