//! `interplab toy grokking`: modular addition learnt by a one-layer transformer, trained with
//! full-batch AdamW, logged, checkpointed, drawn.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use interplab_report::{
    BarChart, ColorScale, Figure, Heatmap, LinePlot, Report, Series, SeriesStyle,
};
use interplab_train::checkpoint;
use interplab_train::grokking::{
    Grokking, GrokkingConfig, LogEntry, ProgressMeasures, CLUSTER_FVE, KEY_FREQ_MIN_SHARE,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::rundir::RunDir;

/// Arguments of `interplab toy grokking`.
#[derive(Args)]
pub struct GrokkingArgs {
    /// The modulus.
    #[arg(long, default_value_t = 113)]
    p: usize,
    /// Fraction of the p² pairs used for training.
    #[arg(long, default_value_t = 0.3)]
    frac_train: f64,
    #[arg(long, default_value_t = 128)]
    d_model: usize,
    #[arg(long, default_value_t = 4)]
    n_heads: usize,
    #[arg(long, default_value_t = 32)]
    d_head: usize,
    #[arg(long, default_value_t = 512)]
    d_mlp: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 1.0)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    #[arg(long, default_value_t = 0.98)]
    beta2: f64,
    /// Full-batch epochs.
    #[arg(long, default_value_t = 20_000)]
    epochs: usize,
    /// Log metrics (test loss, Fourier spectrum, progress measures) every this many epochs.
    #[arg(long, default_value_t = 100)]
    log_every: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop at the first logged epoch whose test accuracy reaches this (e.g. 0.99).
    #[arg(long)]
    stop_at_test_acc: Option<f64>,
    /// Save the weights every this many epochs (`snapshot-epochNNNNNNN.f32`, raw little-endian
    /// f32): the progress measures are evaluated on them at the end with the final key
    /// frequencies, as in the paper.
    #[arg(long, default_value_t = 250)]
    snapshot_every: usize,
    /// Save a checkpoint every this many epochs.
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: usize,
    /// Continue from the run directory's checkpoint (needs --out); --epochs may be raised.
    #[arg(long, requires = "out")]
    resume: bool,
    /// Run directory (default runs/toy-grokking-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What a checkpoint holds: the model (weights, optimiser, history) and the wall-clock seconds
/// at each log entry.
#[derive(Serialize, Deserialize)]
struct State {
    model: Grokking,
    seconds: Vec<f64>,
}

/// Epochs marking the phases of Nanda et al. 2023, read off the logged metrics.
#[derive(Debug, Serialize)]
struct Phases {
    /// First logged epoch with 100% training accuracy: memorisation is done.
    train_acc_100: Option<usize>,
    /// First logged epoch with test accuracy ≥ 50%: the generalising circuit takes over
    /// (cleanup under way).
    test_acc_50: Option<usize>,
    /// First logged epochs with test accuracy ≥ 95% and ≥ 99%.
    test_acc_95: Option<usize>,
    test_acc_99: Option<usize>,
}

fn phases(h: &[LogEntry]) -> Phases {
    let first = |f: &dyn Fn(&LogEntry) -> bool| h.iter().find(|e| f(e)).map(|e| e.epoch);
    Phases {
        train_acc_100: first(&|e| e.train_acc >= 1.0),
        test_acc_50: first(&|e| e.test_acc >= 0.5),
        test_acc_95: first(&|e| e.test_acc >= 0.95),
        test_acc_99: first(&|e| e.test_acc >= 0.99),
    }
}

/// Train and write the run directory.
pub fn run(a: GrokkingArgs) -> anyhow::Result<()> {
    let cfg = GrokkingConfig {
        p: a.p,
        frac_train: a.frac_train,
        d_model: a.d_model,
        n_heads: a.n_heads,
        d_head: a.d_head,
        d_mlp: a.d_mlp,
        lr: a.lr,
        weight_decay: a.weight_decay,
        beta1: a.beta1,
        beta2: a.beta2,
        epochs: a.epochs,
        log_every: a.log_every,
        seed: a.seed,
    };
    if a.p.is_multiple_of(2) {
        anyhow::bail!("p must be odd (the Fourier analysis pairs cosines and sines)");
    }
    if let Some(t) = a.stop_at_test_acc {
        if !(0.0..=1.0).contains(&t) {
            anyhow::bail!("--stop-at-test-acc must be in [0, 1]");
        }
    }
    // Validate before creating the run directory.
    let fresh = Grokking::new(cfg.clone())?;
    let dir = RunDir::create(a.out.as_deref(), "toy-grokking")?;
    let ckpt = dir.path.join("checkpoint.json");
    let mut state = if a.resume && ckpt.exists() {
        let mut s: State = checkpoint::load(&ckpt)?;
        // --epochs may change on resume (train longer); nothing else may.
        let same = GrokkingConfig {
            epochs: cfg.epochs,
            ..s.model.cfg.clone()
        };
        if same != cfg {
            anyhow::bail!(
                "{} was written with a different configuration",
                ckpt.display()
            );
        }
        s.model.cfg.epochs = cfg.epochs;
        eprintln!("resuming from epoch {}", s.model.epoch);
        s
    } else {
        State {
            model: fresh,
            seconds: Vec::new(),
        }
    };
    dir.write_json(
        "manifest.json",
        &json!({"tool": "interplab", "version": env!("CARGO_PKG_VERSION"), "command": "toy grokking",
            "created_utc": crate::rundir::utc_stamp(), "config": cfg,
            "threads": rayon::current_num_threads()}),
    )?;

    let bar = ProgressBar::new(a.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} epochs  {msg}  {elapsed} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(state.model.epoch as u64);
    let offset = state.seconds.last().copied().unwrap_or(0.0);
    let t0 = Instant::now();
    let every = a.checkpoint_every.max(1);
    let snap_every = a.snapshot_every.max(1);
    let mut stopped = false;
    if state.model.epoch == 0 {
        write_snapshot(&dir, &state.model)?;
    }
    while state.model.epoch < a.epochs && !stopped {
        let e = state.model.epoch;
        let chunk = (every - e % every).min(snap_every - e % snap_every);
        let seconds = &mut state.seconds;
        state.model.train(chunk, &mut |epoch, entry| {
            if epoch.is_multiple_of(10) {
                bar.set_position(epoch as u64);
            }
            let Some(e) = entry else { return false };
            seconds.push(offset + t0.elapsed().as_secs_f64());
            bar.set_message(format!(
                "train {:.2e} test {:.2e} acc {:.1}%",
                e.train_loss,
                e.test_loss,
                100.0 * e.test_acc
            ));
            stopped = a.stop_at_test_acc.is_some_and(|t| e.test_acc >= t);
            stopped
        })?;
        if state.model.epoch.is_multiple_of(snap_every) || stopped || state.model.epoch == a.epochs
        {
            write_snapshot(&dir, &state.model)?;
        }
        if state.model.epoch.is_multiple_of(every) || stopped || state.model.epoch == a.epochs {
            checkpoint::save(&ckpt, &state)?;
        }
    }
    bar.finish_and_clear();
    let secs = offset + t0.elapsed().as_secs_f64();
    let model = &state.model;
    let h = &model.history;
    let last = h
        .last()
        .ok_or_else(|| anyhow::anyhow!("no epoch was trained (--epochs 0?)"))?;
    let ph = phases(h);
    let secs_at = |epoch: Option<usize>| {
        epoch.and_then(|ep| {
            h.iter()
                .position(|e| e.epoch == ep)
                .and_then(|i| state.seconds.get(i).copied())
        })
    };
    let an = model.analyse();
    // Progress measures on every snapshot, with the final key frequencies.
    let snaps = read_snapshots(&dir, model)?;
    let mut probe = model.clone();
    let progress: Vec<(usize, ProgressMeasures)> = snaps
        .iter()
        .map(|(epoch, w)| {
            probe.set_params(w)?;
            Ok((*epoch, probe.progress_measures(&an.key_freqs)))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut cluster = vec![0usize; a.p / 2 + 1];
    for (&k, &fve) in an.neuron_freq.iter().zip(&an.neuron_fve) {
        if fve >= CLUSTER_FVE {
            cluster[k] += 1;
        }
    }
    let epochs_per_s = model.epoch as f64 / secs.max(1e-9);

    println!(
        "trained {} epochs in {secs:.1} s ({epochs_per_s:.1} epochs/s)",
        model.epoch
    );
    println!(
        "  final: train loss {:.3e} acc {:.2}%, test loss {:.3e} acc {:.2}%",
        last.train_loss,
        100.0 * last.train_acc,
        last.test_loss,
        100.0 * last.test_acc
    );
    let show = |e: Option<usize>| e.map_or("not reached".to_string(), |v| v.to_string());
    println!("  train acc 100% at epoch {}", show(ph.train_acc_100));
    println!(
        "  test acc ≥ 95% at epoch {}, ≥ 99% at epoch {}{}",
        show(ph.test_acc_95),
        show(ph.test_acc_99),
        secs_at(ph.test_acc_99).map_or(String::new(), |s| format!(" ({s:.1} s)"))
    );
    println!("  key frequencies: {:?}", an.key_freqs);

    // Figures.
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
        points: progress
            .iter()
            .map(|(ep, m)| ((*ep).max(1) as f64, f(m)))
            .collect(),
        style: SeriesStyle::LineAndMarkers,
    };
    let losses = Figure::Line(LinePlot {
        title: format!("modular addition p = {}: loss", a.p),
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
    let n_freq = a.p / 2;
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
    for (name, f) in [
        ("loss", &losses),
        ("accuracy", &accuracy),
        ("embedding_fourier", &fourier),
        ("fourier_over_time", &spectrum),
        ("neuron_clusters", &clusters),
    ] {
        dir.write_figure(name, f)?;
    }

    let explained = cluster.iter().sum::<usize>();
    let mut report = Report::new(format!("Grokking modular addition, p = {}", a.p));
    let restricted_below_test = progress.iter().find(|(ep, m)| {
        h.iter()
            .find(|e| e.epoch >= *ep)
            .is_some_and(|e| m.restricted_loss < 0.5 * e.test_loss && e.test_acc < 0.5)
    });
    report.key_values(&[
        (
            "model",
            format!(
                "1 layer, d_model {}, {} heads × {}, d_mlp {}, ReLU, no LayerNorm",
                a.d_model, a.n_heads, a.d_head, a.d_mlp
            ),
        ),
        (
            "data",
            format!(
                "{} of {} pairs for training (seed {})",
                model.cfg.train_size(),
                a.p * a.p,
                a.seed
            ),
        ),
        (
            "optimiser",
            format!(
                "full-batch AdamW lr {} wd {} betas ({}, {})",
                a.lr, a.weight_decay, a.beta1, a.beta2
            ),
        ),
        (
            "epochs / wall time",
            format!("{} / {secs:.1} s ({epochs_per_s:.1} epochs/s)", model.epoch),
        ),
        ("train acc 100% at epoch", show(ph.train_acc_100)),
        ("test acc ≥ 50% at epoch", show(ph.test_acc_50)),
        ("test acc ≥ 95% at epoch", show(ph.test_acc_95)),
        (
            "test acc ≥ 99% at epoch",
            format!(
                "{}{}",
                show(ph.test_acc_99),
                secs_at(ph.test_acc_99).map_or(String::new(), |s| format!(" (after {s:.1} s)"))
            ),
        ),
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
        a.d_mlp,
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
    let metrics: Vec<serde_json::Value> = h
        .iter()
        .zip(
            state
                .seconds
                .iter()
                .map(Some)
                .chain(std::iter::repeat(None)),
        )
        .map(|(e, s)| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            v["seconds"] = json!(s);
            v
        })
        .collect();
    dir.write_json("metrics.json", &json!(metrics))?;
    dir.write_json(
        "results.json",
        &json!({"epochs": model.epoch, "wall_s": secs, "epochs_per_s": epochs_per_s,
            "final": last, "phases": ph, "seconds_at_test_acc_99": secs_at(ph.test_acc_99),
            "key_freqs": an.key_freqs, "neurons_per_frequency": cluster,
            "progress_measures": progress.iter().map(|(ep, m)| json!({"epoch": ep,
                "restricted_loss": m.restricted_loss, "excluded_loss": m.excluded_loss}))
                .collect::<Vec<_>>(),
            "neuron_freq": an.neuron_freq, "neuron_fve": an.neuron_fve}),
    )?;
    dir.write_report(&report)?;
    println!("wrote {}", dir.path.display());
    Ok(())
}

fn snapshot_name(epoch: usize) -> String {
    format!("snapshot-epoch{epoch:07}.f32")
}

/// Write the current weights as raw little-endian f32.
fn write_snapshot(dir: &RunDir, model: &Grokking) -> anyhow::Result<()> {
    let bytes: Vec<u8> = model
        .params()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    dir.write(&snapshot_name(model.epoch), &bytes)?;
    Ok(())
}

/// The run directory's snapshots up to the model's epoch, sorted by epoch.
fn read_snapshots(dir: &RunDir, model: &Grokking) -> anyhow::Result<Vec<(usize, Vec<f32>)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir.path)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        let Some(epoch) = name
            .strip_prefix("snapshot-epoch")
            .and_then(|r| r.strip_suffix(".f32"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if epoch > model.epoch {
            continue;
        }
        let bytes = std::fs::read(dir.path.join(&name))?;
        if bytes.len() != 4 * model.params().len() {
            anyhow::bail!(
                "{name}: {} bytes, expected {}",
                bytes.len(),
                4 * model.params().len()
            );
        }
        let w = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push((epoch, w));
    }
    out.sort_by_key(|(e, _)| *e);
    Ok(out)
}
