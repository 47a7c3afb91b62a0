//! `toy-whispers`: ML Chinese whispers (RESEARCH.md §9) — train a small network per layer to
//! recover the input token from that layer's activations of a real model, and show what it
//! guesses.
//!
//! The training is `interplab_train::inverter`. Each layer's trained inverter is written as
//! `inverter_L<layer>.safetensors` (its weights, the standardisation and `classes`, the token id
//! of each output class). The run keeps `config.json` (what decides the numbers) and
//! `checkpoint.json` (the finished layers' results, saved after each layer) in its run
//! directory; a resumed run keeps the finished layers whose inverter file is there.

mod report;

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use candle_core::{Device, Tensor};
use interplab_core::atomic::write_atomic;
use interplab_core::corpus::load_corpus;
use interplab_train::checkpoint;
use interplab_train::inverter::{
    bucket_label, collect_activations, hook_name, split_documents, train_layer, Baselines,
    InverterConfig, LayerResult, Problem, BUCKETS, DEFAULT_HOOK,
};
use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Problems, Progress, RunWriter};

/// The config of `toy-whispers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// Corpus: `sonnets` (shipped) or a text (blank-line separated) or JSONL file.
    pub corpus: String,
    /// Use only the first N documents of the corpus.
    pub max_docs: Option<usize>,
    /// Tokens per sequence; a longer document is cut into consecutive pieces.
    pub max_len: usize,
    /// Hook to read, with `{L}` for the layer.
    pub hook: String,
    /// Layers (numbers, or `final` = n_layers, the final residual stream for hook_resid_pre).
    /// Default: every second layer and the final residual.
    pub layers: Option<Vec<String>>,
    /// Keep only K features of each activation (the first K, or K at random with
    /// `random_dims`).
    pub dims: Option<usize>,
    /// Choose the `dims` features at random (seeded).
    pub random_dims: bool,
    /// Keep only positions `A..B` (half-open) of each sequence.
    pub positions: Option<String>,
    /// Hidden ReLU units of the inverter; 0 is softmax regression.
    pub hidden: usize,
    /// Passes over the training positions (more if needed to reach `min_steps`).
    pub epochs: usize,
    /// Optimiser steps at least, whatever the corpus size.
    pub min_steps: usize,
    /// Positions per optimiser step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW (decoupled) weight decay.
    pub weight_decay: f64,
    /// Fraction of documents held out.
    pub test_fraction: f64,
    /// Seed of the document split, the `random_dims` choice, initialisation and batch order.
    pub seed: u64,
    /// k of top-k accuracy and of the guesses shown.
    pub top_k: usize,
    /// Held-out sequences shown as samples.
    pub samples: usize,
    /// Positions shown per sample.
    pub sample_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        let inv = InverterConfig::default();
        Config {
            model: "smollm2-135m".into(),
            corpus: "sonnets".into(),
            max_docs: None,
            max_len: 256,
            hook: DEFAULT_HOOK.into(),
            layers: None,
            dims: None,
            random_dims: false,
            positions: None,
            hidden: inv.hidden,
            epochs: inv.epochs,
            min_steps: inv.min_steps,
            batch: inv.batch,
            lr: inv.lr,
            weight_decay: inv.weight_decay,
            test_fraction: inv.test_fraction,
            seed: inv.seed,
            top_k: 5,
            samples: 3,
            sample_len: 12,
        }
    }
}

/// `A..B` as a half-open position window.
pub fn parse_window(s: &str) -> anyhow::Result<(usize, usize)> {
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

/// Layer numbers from `list` (`final` = `n_layers`), in order, without repeats.
pub fn parse_layers(list: &[String], n_layers: usize) -> anyhow::Result<Vec<usize>> {
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

impl Config {
    /// The inverter's config for `layers` (the position window parsed).
    pub fn inverter(&self, layers: Vec<usize>) -> anyhow::Result<InverterConfig> {
        Ok(InverterConfig {
            hook: self.hook.clone(),
            layers,
            dims: self.dims,
            random_dims: self.random_dims,
            positions: self.positions.as_deref().map(parse_window).transpose()?,
            hidden: self.hidden,
            epochs: self.epochs,
            min_steps: self.min_steps,
            batch: self.batch,
            lr: self.lr,
            weight_decay: self.weight_decay,
            test_fraction: self.test_fraction,
            seed: self.seed,
        })
    }
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

/// The results of `toy-whispers`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// One trained inverter's measurements per probed layer, shallowest first.
    pub layers: Vec<LayerResult>,
    /// Chance levels.
    pub baselines: Baselines,
    /// The token ids of the classes.
    pub classes: Vec<u32>,
    /// Training positions.
    pub n_train: usize,
    /// Held-out positions.
    pub n_test: usize,
    /// Indices of the training documents.
    pub train_documents: Vec<usize>,
    /// Indices of the held-out documents.
    pub test_documents: Vec<usize>,
    /// Labels of the position buckets.
    pub position_buckets: Vec<String>,
    /// Features per activation.
    pub features: usize,
    /// The model's layer count (not in results.json).
    #[serde(skip)]
    pub n_layers: usize,
    /// The first held-out sample spelled out: (`input` or the layer, its top-1 guesses), for
    /// a terminal (not in results.json).
    #[serde(skip)]
    pub sample_text: Vec<(String, String)>,
}

impl Experiment for Config {
    const NAME: &'static str = "toy-whispers";
    const QUESTION: &'static str = "How much of the input can be recovered from each layer of a real model (ML Chinese whispers)?";
    type Results = Results;

    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "no model given");
        p.positive("max_len", self.max_len)
            .positive("top_k", self.top_k);
        if let Some(n) = self.max_docs {
            p.check(
                n >= 2,
                format!("max_docs must be at least 2 (one is held out), got {n}"),
            );
        }
        p.check(
            !self.random_dims || self.dims.is_some(),
            "random_dims needs dims",
        );
        if let Some(l) = &self.layers {
            // Syntax only: `final` and the range need the model.
            if let Err(e) = parse_layers(l, usize::MAX) {
                p.push(format!("{e:#}"));
            }
        }
        match self.inverter(vec![0]) {
            Ok(inv) => {
                if let Err(e) = inv.validate() {
                    p.push(e.to_string());
                }
            }
            Err(e) => {
                p.push(format!("{e:#}"));
            }
        }
        p.finish()
    }

    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }

    fn quick() -> Self {
        Config {
            max_docs: Some(6),
            layers: Some(vec!["0".into(), "1".into()]),
            dims: Some(64),
            epochs: 2,
            hidden: 8,
            positions: Some("0..40".into()),
            samples: 1,
            ..Default::default()
        }
    }

    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// The tensor file of layer `layer`'s inverter.
fn inverter_file(layer: usize) -> String {
    format!("inverter_L{layer}.safetensors")
}

/// Run `toy-whispers`: one inverter per layer, trained and measured on held-out documents.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    progress.phase("tokenise");
    let m = ctx.model()?;
    let wd = ctx.workdir()?;
    let mut docs = load_corpus(&cfg.corpus).with_context(|| format!("corpus {}", cfg.corpus))?;
    if let Some(n) = cfg.max_docs {
        docs.truncate(n);
    }
    let (train_docs, test_docs) = split_documents(docs.len(), cfg.test_fraction, cfg.seed)?;
    let n_layers = m.model.cfg.n_layers;
    let layers = match &cfg.layers {
        Some(l) => parse_layers(l, n_layers)?,
        None => (0..n_layers).step_by(2).chain([n_layers]).collect(),
    };
    let inv = cfg.inverter(layers)?;
    inv.validate()?;
    let hooks: Vec<String> = inv
        .layers
        .iter()
        .map(|&l| hook_name(&m.model, &inv.hook, l))
        .collect::<interplab_core::Result<_>>()?;
    // Tokenise; a document longer than max_len becomes consecutive pieces.
    let add_bos = m.tokenizer.add_bos_default();
    let (mut seqs, mut seq_test, mut seq_doc) = (Vec::new(), Vec::new(), Vec::new());
    for (d, text) in docs.iter().enumerate() {
        let ids = m.tokenizer.encode(text, add_bos)?;
        for piece in ids.chunks(cfg.max_len) {
            seqs.push(piece.to_vec());
            seq_test.push(test_docs.binary_search(&d).is_ok());
            seq_doc.push(d);
        }
    }
    let run_cfg = RunConfig {
        model: cfg.model.clone(),
        corpus: cfg.corpus.clone(),
        max_docs: cfg.max_docs,
        max_len: cfg.max_len,
        top_k: cfg.top_k,
        samples: cfg.samples,
        sample_len: cfg.sample_len,
        inverter: inv.clone(),
    };
    let ckpt = wd.path.join("checkpoint.json");
    let mut state = if wd.resume && ckpt.exists() {
        let mut s: State = checkpoint::load(&ckpt)?;
        if s.config != run_cfg {
            bail!(
                "{} was written with a different configuration",
                ckpt.display()
            );
        }
        // A layer counts as done when its inverter's weights were written too.
        s.layers
            .retain(|r| wd.path.join(inverter_file(r.layer)).is_file());
        progress.note(&format!(
            "resuming: {} of {} layers done",
            s.layers.len(),
            hooks.len()
        ));
        s
    } else {
        State {
            config: run_cfg.clone(),
            layers: Vec::new(),
        }
    };
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
    progress.phase("forward");
    progress.total(seqs.len() as u64, "sequences");
    let ex = collect_activations(&m.model, &seqs, &seq_test, &run_hooks, &inv, &mut |n| {
        progress.position(n as u64)
    })?;
    // Written only now, so that bad input (found above) leaves an empty run directory, which
    // the caller removes.
    let mut text = serde_json::to_string_pretty(&run_cfg)?;
    text.push('\n');
    write_atomic(&wd.path.join("config.json"), text.as_bytes())?;
    let prob = Problem::new(&ex, cfg.top_k, cfg.samples, cfg.sample_len);
    let b = &prob.baselines;
    progress.note(&format!(
        "{} train / {} held-out positions ({} / {} documents), {} features, {} classes \
         (the tokens present in the corpus)",
        prob.train.len(),
        prob.test.len(),
        train_docs.len(),
        test_docs.len(),
        ex.width,
        b.classes
    ));
    let epochs = inv.epochs_for(prob.train.len());
    let classes = Tensor::new(prob.classes.tokens.as_slice(), &Device::Cpu)?;
    let files = RunWriter::create(Some(&wd.path), "", crate::Existing::Force)?;
    for (h, &i) in todo.iter().enumerate() {
        let layer = inv.layers[i];
        progress.phase(&format!("train layer {layer}"));
        progress.total(epochs as u64, "epochs");
        let (trained, r) = train_layer(&inv, &ex, h, layer, &hooks[i], &prob, &mut |e, loss| {
            progress.position(e as u64);
            progress.message(&format!("layer {layer} epoch {e} loss {loss:.4}"));
        })?;
        progress.note(&format!(
            "  layer {layer:>2}  top-1 {:.3}  top-{} {:.3}",
            r.test.top1, cfg.top_k, r.test.topk
        ));
        let mut tensors: BTreeMap<String, Tensor> = trained.tensors()?.into_iter().collect();
        tensors.insert("classes".into(), classes.clone());
        // The weights first: a checkpoint never lists a layer whose inverter is missing.
        files.write_tensors(&inverter_file(layer), &tensors)?;
        state.layers.push(r);
        checkpoint::save(&ckpt, &state)?;
    }
    progress.phase("report");
    state.layers.sort_by_key(|r| r.layer);
    let results = Results {
        n_train: prob.train.len(),
        n_test: prob.test.len(),
        baselines: prob.baselines.clone(),
        classes: prob.classes.tokens.clone(),
        train_documents: train_docs.clone(),
        test_documents: test_docs.clone(),
        position_buckets: (0..BUCKETS.len()).map(bucket_label).collect(),
        features: ex.width,
        n_layers,
        sample_text: Vec::new(),
        layers: state.layers,
    };
    let facts = report::Facts {
        cfg,
        inv: &inv,
        m,
        n_docs: docs.len(),
        epochs,
        seq_doc: &seq_doc,
    };
    let mut outcome = report::outcome(&facts, results);
    for r in outcome.results.layers.clone() {
        let file = inverter_file(r.layer);
        let path = wd.path.join(&file);
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .with_context(|| format!("reading {}", path.display()))?;
        for (name, t) in tensors {
            outcome.tensor(&file, name, t);
        }
    }
    Ok(outcome)
}
