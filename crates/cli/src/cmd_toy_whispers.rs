//! `interplab toy whispers`: ML Chinese whispers — train a small network per layer to recover
//! the input token from that layer's activations of a real model, and show what it guesses.
//! The experiment is `interplab_lab::whispers`; this file parses flags and prints.

use clap::Args;
use interplab_lab::whispers::{Config, Results};
use interplab_train::inverter::DEFAULT_HOOK;

use crate::exec::OutArgs;

/// Arguments of `interplab toy whispers`.
#[derive(Args)]
pub struct WhispersArgs {
    /// Model: alias, path, pip:... or hf:... (with --config, the file names it).
    #[arg(default_value = "smollm2-135m", conflicts_with = "config")]
    model: String,
    /// Corpus: `sonnets` (shipped) or a text (blank-line separated) or JSONL file.
    #[arg(long, default_value = "sonnets")]
    corpus: String,
    /// Use only the first N documents of the corpus.
    #[arg(long)]
    max_docs: Option<usize>,
    /// Tokens per sequence; a longer document is cut into consecutive pieces.
    #[arg(long, default_value_t = Config::default().max_len)]
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
    #[arg(long, default_value_t = Config::default().hidden)]
    hidden: usize,
    /// Passes over the training positions (more if needed to reach --min-steps).
    #[arg(long, default_value_t = Config::default().epochs)]
    epochs: usize,
    /// Optimiser steps at least, whatever the corpus size.
    #[arg(long, default_value_t = Config::default().min_steps)]
    min_steps: usize,
    /// Positions per optimiser step.
    #[arg(long, default_value_t = Config::default().batch)]
    batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = Config::default().lr)]
    lr: f64,
    /// AdamW (decoupled) weight decay.
    #[arg(long, default_value_t = Config::default().weight_decay)]
    weight_decay: f64,
    /// Fraction of documents held out.
    #[arg(long, default_value_t = Config::default().test_fraction)]
    test_fraction: f64,
    /// Seed of the document split, the --random-dims choice, initialisation and batch order.
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// k of top-k accuracy and of the guesses shown.
    #[arg(long, default_value_t = Config::default().top_k)]
    top_k: usize,
    /// Held-out sequences shown as samples.
    #[arg(long, default_value_t = Config::default().samples)]
    samples: usize,
    /// Positions shown per sample.
    #[arg(long, default_value_t = Config::default().sample_len)]
    sample_len: usize,
    /// Continue from the run directory's checkpoint (needs --out): finished layers are kept.
    #[arg(long, requires = "out")]
    resume: bool,
    #[command(flatten)]
    out: OutArgs,
}

impl WhispersArgs {
    fn config(&self) -> Config {
        Config {
            model: self.model.clone(),
            corpus: self.corpus.clone(),
            max_docs: self.max_docs,
            max_len: self.max_len,
            hook: self.hook.clone(),
            layers: self.layers.clone(),
            dims: self.dims,
            random_dims: self.random_dims,
            positions: self.positions.clone(),
            hidden: self.hidden,
            epochs: self.epochs,
            min_steps: self.min_steps,
            batch: self.batch,
            lr: self.lr,
            weight_decay: self.weight_decay,
            test_fraction: self.test_fraction,
            seed: self.seed,
            top_k: self.top_k,
            samples: self.samples,
            sample_len: self.sample_len,
        }
    }
}

/// Train one inverter per layer, write the run directory and print the accuracies.
pub fn run(a: WhispersArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| a.config())?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(a.resume))?;
    print_table(&outcome.results, cfg.top_k);
    if !outcome.results.sample_text.is_empty() {
        println!("held-out sample, top-1 guesses per layer:");
        for (label, text) in &outcome.results.sample_text {
            println!("  {label:>5}   {text}");
        }
    }
    let phases = interplab_lab::manifest::read(&dir.join("manifest.json"))?.phases;
    let secs = |f: &dyn Fn(&str) -> bool| -> f64 {
        phases
            .iter()
            .filter(|p| f(&p.name))
            .map(|p| p.seconds)
            .sum()
    };
    let forward = secs(&|n| n == "forward");
    let work = secs(&|n| n == "forward" || n.starts_with("train layer"));
    println!("wall time {work:.1} s (model forward {forward:.1} s)");
    println!("wrote {}", dir.display());
    Ok(())
}

fn print_table(r: &Results, k: usize) {
    let b = &r.baselines;
    println!(
        "held-out accuracy ({} classes; chance: uniform {:.4} / {:.4}, most frequent {:.3} / {:.3})",
        b.classes, b.uniform_top1, b.uniform_topk, b.frequent_top1, b.frequent_topk
    );
    println!("  layer   top-1   top-{k}   top-1 seen   train top-1");
    for l in &r.layers {
        let name = if l.layer == r.n_layers && l.hook.ends_with("hook_resid_post") {
            format!("{} f", l.layer)
        } else {
            l.layer.to_string()
        };
        println!(
            "  {:>5}   {:.3}   {:.3}   {:>10.3}   {:>11.3}",
            name, l.test.top1, l.test.topk, l.test_seen.top1, l.train.top1
        );
    }
}
