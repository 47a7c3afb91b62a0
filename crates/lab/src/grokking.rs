//! `toy-grokking`: modular addition learnt by a one-layer transformer (Nanda et al. 2023),
//! trained with full-batch AdamW, logged, snapshotted, analysed and drawn.
//!
//! With a run directory the trainer writes `checkpoint.json` (model, optimiser, history, and
//! the wall-clock seconds at each log entry — the only place timings are kept), `metrics.json`
//! (the log) and a weight snapshot every `snapshot_every` epochs
//! (`snapshot-epochNNNNNNN.safetensors`, TransformerLens names) into it, and resumes from the
//! checkpoint when asked. The progress measures are evaluated on the snapshots at the end
//! with the final key frequencies, as in the paper. The final weights go to
//! `weights.safetensors`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use candle_core::{Device, Tensor};
use interplab_core::atomic::{write_atomic, write_atomic_with};
use interplab_report::{
    BarChart, ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle,
};
use interplab_train::checkpoint;
use interplab_train::grokking::{
    param_infos, Analysis, Grokking, GrokkingConfig, LogEntry, ProgressMeasures, CLUSTER_FVE,
    KEY_FREQ_MIN_SHARE,
};
use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The config of `toy-grokking`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The modulus (odd: the Fourier analysis pairs cosines and sines).
    pub p: usize,
    /// Fraction of the p² pairs used for training.
    pub frac_train: f64,
    /// Residual stream width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Width of each head.
    pub d_head: usize,
    /// MLP width.
    pub d_mlp: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// Full-batch epochs.
    pub epochs: usize,
    /// Log metrics (test loss, Fourier spectrum, key frequencies) every this many epochs.
    pub log_every: usize,
    /// Seeds the initialisation and the train/test split.
    pub seed: u64,
    /// Stop at the first logged epoch whose test accuracy reaches this (e.g. 0.99).
    pub stop_at_test_acc: Option<f64>,
    /// Snapshot the weights every this many epochs, for the progress measures.
    pub snapshot_every: usize,
    /// Save a checkpoint every this many epochs (with a run directory).
    pub checkpoint_every: usize,
}

impl Default for Config {
    /// Nanda et al. 2023 (see [`GrokkingConfig::default`]), 20,000 epochs.
    fn default() -> Self {
        let g = GrokkingConfig::default();
        Config {
            p: g.p,
            frac_train: g.frac_train,
            d_model: g.d_model,
            n_heads: g.n_heads,
            d_head: g.d_head,
            d_mlp: g.d_mlp,
            lr: g.lr,
            weight_decay: g.weight_decay,
            beta1: g.beta1,
            beta2: g.beta2,
            epochs: g.epochs,
            log_every: g.log_every,
            seed: g.seed,
            stop_at_test_acc: None,
            snapshot_every: 250,
            checkpoint_every: 1000,
        }
    }
}

impl Config {
    /// The trainer's configuration.
    pub fn train_config(&self) -> GrokkingConfig {
        GrokkingConfig {
            p: self.p,
            frac_train: self.frac_train,
            d_model: self.d_model,
            n_heads: self.n_heads,
            d_head: self.d_head,
            d_mlp: self.d_mlp,
            lr: self.lr,
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            epochs: self.epochs,
            log_every: self.log_every,
            seed: self.seed,
        }
    }
}

/// Epochs marking the phases of Nanda et al. 2023, read off the logged metrics.
#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    /// First logged epoch with test accuracy ≥ 50%: the generalising circuit takes over
    /// (cleanup under way).
    pub test_acc_50: Option<usize>,
    /// First logged epoch with test accuracy ≥ 95%.
    pub test_acc_95: Option<usize>,
    /// First logged epoch with test accuracy ≥ 99%.
    pub test_acc_99: Option<usize>,
    /// First logged epoch with 100% training accuracy: memorisation is done.
    pub train_acc_100: Option<usize>,
}

impl Phases {
    /// The phases of a training history.
    pub fn of(h: &[LogEntry]) -> Phases {
        let first = |f: &dyn Fn(&LogEntry) -> bool| h.iter().find(|e| f(e)).map(|e| e.epoch);
        Phases {
            test_acc_50: first(&|e| e.test_acc >= 0.5),
            test_acc_95: first(&|e| e.test_acc >= 0.95),
            test_acc_99: first(&|e| e.test_acc >= 0.99),
            train_acc_100: first(&|e| e.train_acc >= 1.0),
        }
    }
}

/// The progress measures at one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressPoint {
    /// The snapshot's epoch.
    pub epoch: usize,
    /// Loss with the final key frequencies removed from the logits (training pairs).
    pub excluded_loss: f64,
    /// Loss with only the final key frequencies kept (all pairs).
    pub restricted_loss: f64,
}

/// The results of `toy-grokking`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Epochs trained.
    pub epochs: usize,
    /// The last log entry.
    #[serde(rename = "final")]
    pub last: LogEntry,
    /// Key frequencies of the final model.
    pub key_freqs: Vec<usize>,
    /// Per neuron: its dominant frequency.
    pub neuron_freq: Vec<usize>,
    /// Per neuron: the fraction of its variance that frequency explains.
    pub neuron_fve: Vec<f64>,
    /// Neurons per frequency (index 0 the constant) explained ≥ `CLUSTER_FVE` by it.
    pub neurons_per_frequency: Vec<usize>,
    /// See [`Phases`].
    pub phases: Phases,
    /// Restricted and excluded loss on every snapshot.
    pub progress_measures: Vec<ProgressPoint>,
}

impl Experiment for Config {
    const NAME: &'static str = "toy-grokking";
    const QUESTION: &'static str = "How does a transformer grok modular addition (memorise, then a Fourier circuit, then cleanup)?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(self.p >= 3, format!("p must be at least 3, got {}", self.p));
        p.check(
            !self.p.is_multiple_of(2),
            format!(
                "p must be odd (the Fourier analysis pairs cosines and sines), got {}",
                self.p
            ),
        );
        let frac_ok = self.frac_train > 0.0 && self.frac_train < 1.0;
        p.check(
            frac_ok,
            format!("frac_train must be in (0, 1), got {}", self.frac_train),
        );
        let train = self.train_config().train_size();
        p.check(
            !frac_ok || (train > 0 && train < self.p * self.p),
            "frac_train leaves the train or the test set empty",
        );
        p.positive("d_model", self.d_model)
            .positive("n_heads", self.n_heads)
            .positive("d_head", self.d_head)
            .positive("d_mlp", self.d_mlp)
            .positive("epochs", self.epochs)
            .positive("log_every", self.log_every)
            .positive("snapshot_every", self.snapshot_every)
            .positive("checkpoint_every", self.checkpoint_every);
        p.check(
            self.lr > 0.0 && self.lr.is_finite(),
            format!("lr must be positive, got {}", self.lr),
        );
        p.check(
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            format!("weight_decay must be ≥ 0, got {}", self.weight_decay),
        );
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            p.check(
                (0.0..1.0).contains(&b),
                format!("{name} must be in [0, 1), got {b}"),
            );
        }
        if let Some(t) = self.stop_at_test_acc {
            p.range("stop_at_test_acc", t, 0.0, 1.0);
        }
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        Vec::new()
    }
    fn quick() -> Self {
        Config {
            p: 13,
            d_model: 16,
            n_heads: 2,
            d_head: 8,
            d_mlp: 32,
            epochs: 90,
            log_every: 20,
            snapshot_every: 30,
            checkpoint_every: 30,
            ..Config::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// What a checkpoint holds: the model (weights, optimiser, history) and the wall-clock
/// seconds at each log entry.
#[derive(Serialize, Deserialize)]
struct State {
    model: Grokking,
    seconds: Vec<f64>,
}

/// The flat weights at one epoch.
type Snapshot = (usize, Vec<f32>);

/// The snapshot file of `epoch`.
pub fn snapshot_name(epoch: usize) -> String {
    format!("snapshot-epoch{epoch:07}.safetensors")
}

/// Flat weights (the order of [`param_infos`]) as tensors by TransformerLens name.
fn param_tensors(
    cfg: &GrokkingConfig,
    params: &[f32],
    device: &Device,
) -> anyhow::Result<HashMap<String, Tensor>> {
    param_infos(cfg)
        .into_iter()
        .map(|i| {
            let v = params[i.offset..i.offset + i.len()].to_vec();
            Ok((i.name.to_string(), Tensor::from_vec(v, i.shape, device)?))
        })
        .collect()
}

/// The flat weights of a snapshot file.
fn read_snapshot(path: &Path, cfg: &GrokkingConfig) -> anyhow::Result<Vec<f32>> {
    let t = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for i in param_infos(cfg) {
        let w = t
            .get(i.name)
            .with_context(|| format!("{}: no tensor {}", path.display(), i.name))?;
        if w.dims() != i.shape.as_slice() {
            anyhow::bail!(
                "{}: {} has shape {:?}, expected {:?}",
                path.display(),
                i.name,
                w.dims(),
                i.shape
            );
        }
        out.extend(w.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// The snapshots in `dir` up to `epoch`, sorted by epoch.
fn read_snapshots(dir: &Path, cfg: &GrokkingConfig, epoch: usize) -> anyhow::Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().to_string();
        let Some(e) = name
            .strip_prefix("snapshot-epoch")
            .and_then(|r| r.strip_suffix(".safetensors"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if e <= epoch {
            out.push((e, read_snapshot(&dir.join(&name), cfg)?));
        }
    }
    out.sort_by_key(|(e, _)| *e);
    Ok(out)
}

/// Train, checkpointing and snapshotting into the run directory when there is one; returns
/// the state and every snapshot up to its epoch.
fn train(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<(State, Vec<Snapshot>)> {
    let tc = cfg.train_config();
    let fresh = Grokking::new(tc.clone())?;
    let dir = ctx.workdir.as_ref().map(|w| w.path.as_path());
    let ckpt = dir.map(|d| d.join("checkpoint.json"));
    let resume = ctx.workdir.as_ref().is_some_and(|w| w.resume);
    let (mut state, mut snapshots) = match (dir, &ckpt) {
        (Some(dir), Some(path)) if resume && path.exists() => {
            let mut s: State = checkpoint::load(path)?;
            // `epochs` may change on resume (train longer); nothing else may.
            let same = GrokkingConfig {
                epochs: tc.epochs,
                ..s.model.cfg.clone()
            };
            if same != tc {
                anyhow::bail!(
                    "{} was written with a different configuration",
                    path.display()
                );
            }
            s.model.cfg.epochs = tc.epochs;
            progress.note(&format!("resuming from epoch {}", s.model.epoch));
            let snaps = read_snapshots(dir, &tc, s.model.epoch)?;
            (s, snaps)
        }
        _ => (
            State {
                model: fresh,
                seconds: Vec::new(),
            },
            Vec::new(),
        ),
    };
    let mut snapshot = |model: &Grokking| -> anyhow::Result<()> {
        if let Some(dir) = dir {
            let path = dir.join(snapshot_name(model.epoch));
            let t = param_tensors(&model.cfg, model.params(), &Device::Cpu)?;
            write_atomic_with(&path, |tmp| {
                candle_core::safetensors::save(&t, tmp).map_err(Into::into)
            })
            .with_context(|| format!("writing {}", path.display()))?;
        }
        snapshots.retain(|(e, _)| *e != model.epoch);
        snapshots.push((model.epoch, model.params().to_vec()));
        Ok(())
    };
    progress.phase("train");
    progress.total(cfg.epochs as u64, "epochs");
    progress.position(state.model.epoch as u64);
    let offset = state.seconds.last().copied().unwrap_or(0.0);
    let t0 = Instant::now();
    let (every, snap_every) = (cfg.checkpoint_every.max(1), cfg.snapshot_every.max(1));
    let mut stopped = false;
    if state.model.epoch == 0 {
        snapshot(&state.model)?;
    }
    while state.model.epoch < cfg.epochs && !stopped {
        let e = state.model.epoch;
        let chunk = (every - e % every).min(snap_every - e % snap_every);
        let seconds = &mut state.seconds;
        state.model.train(chunk, &mut |epoch, entry| {
            if epoch.is_multiple_of(10) {
                progress.position(epoch as u64);
            }
            let Some(e) = entry else { return false };
            seconds.push(offset + t0.elapsed().as_secs_f64());
            progress.message(&format!(
                "train {:.2e} test {:.2e} acc {:.1}%",
                e.train_loss,
                e.test_loss,
                100.0 * e.test_acc
            ));
            stopped = cfg.stop_at_test_acc.is_some_and(|t| e.test_acc >= t);
            stopped
        })?;
        let end = stopped || state.model.epoch == cfg.epochs;
        if state.model.epoch.is_multiple_of(snap_every) || end {
            snapshot(&state.model)?;
        }
        if let Some(path) = &ckpt {
            if state.model.epoch.is_multiple_of(every) || end {
                checkpoint::save(path, &state)?;
            }
        }
    }
    progress.position(state.model.epoch as u64);
    if let Some(dir) = dir {
        let path = dir.join("metrics.json");
        let mut text = serde_json::to_string_pretty(&state.model.history)?;
        text.push('\n');
        write_atomic(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    snapshots.sort_by_key(|(e, _)| *e);
    Ok((state, snapshots))
}

/// Run `toy-grokking`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let (state, snaps) = train(ctx, cfg, progress)?;
    progress.phase("analyse");
    let model = &state.model;
    let last = model
        .history
        .last()
        .context("no epoch was trained (epochs = 0?)")?
        .clone();
    let an = model.analyse();
    // Progress measures on every snapshot, with the final key frequencies.
    let mut probe = model.clone();
    let measures: Vec<(usize, ProgressMeasures)> = snaps
        .iter()
        .map(|(epoch, w)| {
            probe.set_params(w)?;
            Ok((*epoch, probe.progress_measures(&an.key_freqs)))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut cluster = vec![0usize; cfg.p / 2 + 1];
    for (&k, &fve) in an.neuron_freq.iter().zip(&an.neuron_fve) {
        if fve >= CLUSTER_FVE {
            cluster[k] += 1;
        }
    }
    let phases = Phases::of(&model.history);
    let (report, figures) = report(cfg, model, &an, &phases, &measures, &cluster);
    let results = Results {
        epochs: model.epoch,
        last,
        key_freqs: an.key_freqs,
        neuron_freq: an.neuron_freq,
        neuron_fve: an.neuron_fve,
        neurons_per_frequency: cluster,
        phases,
        progress_measures: measures
            .iter()
            .map(|(epoch, m)| ProgressPoint {
                epoch: *epoch,
                excluded_loss: m.excluded_loss,
                restricted_loss: m.restricted_loss,
            })
            .collect(),
    };
    let mut out = Outcome::new(results, report);
    out.figures = figures;
    for (name, t) in param_tensors(&model.cfg, model.params(), &ctx.device)? {
        out.tensor("weights.safetensors", name, t);
    }
    for (epoch, w) in &snaps {
        for (name, t) in param_tensors(&model.cfg, w, &ctx.device)? {
            out.tensor(&snapshot_name(*epoch), name, t);
        }
    }
    Ok(out)
}

/// The figures and the report.
fn report(
    cfg: &Config,
    model: &Grokking,
    an: &Analysis,
    ph: &Phases,
    measures: &[(usize, ProgressMeasures)],
    cluster: &[usize],
) -> (Report, Vec<(String, Figure)>) {
    let h = &model.history;
    let last = &h[h.len() - 1];
    let show = |e: Option<usize>| e.map_or("not reached".to_string(), |v| v.to_string());
    let xs = |f: &dyn Fn(&LogEntry) -> f64| -> Vec<(f64, f64)> {
        h.iter().map(|e| (e.epoch.max(1) as f64, f(e))).collect()
    };
    let end = last.epoch.max(1) as f64;
    let mut bands = Vec::new();
    let b1 = ph.train_acc_100.map(|e| e.max(1) as f64);
    let b2 = ph.test_acc_50.map(|e| e.max(1) as f64);
    let b3 = ph.test_acc_99.map(|e| e.max(1) as f64);
    bands.push((1.0, b1.unwrap_or(end), "memorisation".to_string()));
    if let Some(b1) = b1 {
        bands.push((b1, b2.unwrap_or(end), "circuit formation".to_string()));
    }
    if let Some(b2) = b2 {
        bands.push((b2, b3.unwrap_or(end), "cleanup".to_string()));
    }
    let line = |name: &str, f: &dyn Fn(&LogEntry) -> f64| Series {
        name: name.into(),
        points: xs(f),
        style: SeriesStyle::Line,
    };
    let progress_line = |name: &str, f: &dyn Fn(&ProgressMeasures) -> f64| Series {
        name: name.into(),
        points: measures
            .iter()
            .map(|(ep, m)| ((*ep).max(1) as f64, f(m)))
            .collect(),
        style: SeriesStyle::LineAndMarkers,
    };
    let losses = Figure::Line(LinePlot {
        title: format!("modular addition p = {}: loss", cfg.p),
        x_label: "epoch".into(),
        y_label: "cross-entropy (nats)".into(),
        log_x: true,
        log_y: true,
        series: vec![
            line("train", &|e| e.train_loss),
            line("test", &|e| e.test_loss),
            progress_line("restricted", &|m| m.restricted_loss),
            progress_line("excluded", &|m| m.excluded_loss),
        ],
        bands: bands.clone(),
        ..Default::default()
    });
    let accuracy = Figure::Line(LinePlot {
        title: "accuracy".into(),
        x_label: "epoch".into(),
        y_label: "accuracy".into(),
        log_x: true,
        series: vec![
            line("train", &|e| e.train_acc),
            line("test", &|e| e.test_acc),
        ],
        bands,
        hlines: vec![(0.99, "99%".into())],
        ..Default::default()
    });
    let n_freq = cfg.p / 2;
    let fourier = Figure::Bar(BarChart {
        title: format!("‖W_E‖² per Fourier frequency at epoch {}", last.epoch),
        x_label: "frequency k".into(),
        y_label: "norm²".into(),
        labels: (0..=n_freq)
            .map(|k| {
                if k == 0 {
                    "const".into()
                } else {
                    k.to_string()
                }
            })
            .collect(),
        values: last.fourier_norms.clone(),
        ..Default::default()
    });
    // Spectrum over time: frequency × logged epoch, each column normalised to sum 1.
    let stride = (h.len() / 60).max(1);
    let cols: Vec<&LogEntry> = h.iter().step_by(stride).collect();
    let spectrum = Figure::Heatmap(Heatmap {
        title: "share of ‖W_E‖² per frequency over training".into(),
        x_label: "epoch".into(),
        y_label: "frequency k".into(),
        x_ticks: cols.iter().map(|e| e.epoch.to_string()).collect(),
        y_ticks: (1..=n_freq).map(|k| k.to_string()).collect(),
        values: (1..=n_freq)
            .map(|k| {
                cols.iter()
                    .map(|e| {
                        let tot: f64 = e.fourier_norms[1..].iter().sum();
                        e.fourier_norms[k] / tot.max(1e-30)
                    })
                    .collect()
            })
            .collect(),
        scale: ColorScale::Sequential,
        range: None,
        colorbar_label: "share".into(),
    });
    let clusters = Figure::Bar(BarChart {
        title: format!(
            "neurons per frequency (frequency explains ≥ {:.0}% of the neuron's variance)",
            100.0 * CLUSTER_FVE
        ),
        x_label: "frequency k".into(),
        y_label: "neurons".into(),
        labels: (1..=n_freq).map(|k| k.to_string()).collect(),
        values: cluster[1..].iter().map(|&c| c as f64).collect(),
        colors: Some(
            (1..=n_freq)
                .map(|k| if an.key_freqs.contains(&k) { 1.0 } else { 0.2 })
                .collect(),
        ),
        color_label: "1 = key frequency".into(),
        ..Default::default()
    });

    let explained = cluster.iter().sum::<usize>();
    let mut report = Report::new(format!("Grokking modular addition, p = {}", cfg.p));
    let restricted_below_test = measures.iter().find(|(ep, m)| {
        h.iter()
            .find(|e| e.epoch >= *ep)
            .is_some_and(|e| m.restricted_loss < 0.5 * e.test_loss && e.test_acc < 0.5)
    });
    report.key_values(&[
        (
            "model",
            format!(
                "1 layer, d_model {}, {} heads × {}, d_mlp {}, ReLU, no LayerNorm",
                cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
            ),
        ),
        (
            "data",
            format!(
                "{} of {} pairs for training (seed {})",
                model.cfg.train_size(),
                cfg.p * cfg.p,
                cfg.seed
            ),
        ),
        (
            "optimiser",
            format!(
                "full-batch AdamW lr {} wd {} betas ({}, {})",
                cfg.lr, cfg.weight_decay, cfg.beta1, cfg.beta2
            ),
        ),
        ("epochs", model.epoch.to_string()),
        ("train acc 100% at epoch", show(ph.train_acc_100)),
        ("test acc ≥ 50% at epoch", show(ph.test_acc_50)),
        ("test acc ≥ 95% at epoch", show(ph.test_acc_95)),
        ("test acc ≥ 99% at epoch", show(ph.test_acc_99)),
        ("key frequencies", format!("{:?}", an.key_freqs)),
    ]);
    report.paragraph(format!(
        "Phases (shaded): memorisation until training accuracy reaches 100%, circuit formation \
         until test accuracy passes 50%, cleanup until it passes 99%. Restricted loss keeps only \
         the logits' components along cos/sin 2πk(a+b−c)/p for the final key frequencies (all \
         pairs); excluded loss removes them (training pairs); both are evaluated on the weight \
         snapshots — Nanda et al. 2023. At the end \
         {explained} of {} neurons are explained ≥ {:.0}% by one frequency; a frequency is key \
         when at least {:.0}% of the neurons cluster on it.",
        cfg.d_mlp,
        100.0 * CLUSTER_FVE,
        100.0 * KEY_FREQ_MIN_SHARE
    ));
    if let Some((ep, m)) = restricted_below_test {
        report.paragraph(format!(
            "The circuit forms before test accuracy moves: at epoch {ep} the restricted loss is \
             already {:.3} while the test loss is still above twice that and test accuracy \
             below 50%.",
            m.restricted_loss
        ));
    }
    report.figure(
        "loss (log scales) with the three phases; restricted: final key frequencies only, all \
         pairs; excluded: final key frequencies removed, training pairs (on the snapshots)",
        &losses,
    );
    report.figure("accuracy", &accuracy);
    report.figure(
        "the embedding's Fourier spectrum (sparse once grokked)",
        &fourier,
    );
    report.figure("the spectrum over training", &spectrum);
    report.figure("neuron-frequency clusters", &clusters);
    let figures = [
        ("loss", losses),
        ("accuracy", accuracy),
        ("embedding_fourier", fourier),
        ("fourier_over_time", spectrum),
        ("neuron_clusters", clusters),
    ]
    .into_iter()
    .map(|(n, f)| (n.to_string(), f))
    .collect();
    (report, figures)
}
