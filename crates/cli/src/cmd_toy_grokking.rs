//! `interplab toy grokking`: modular addition learnt by a one-layer transformer, trained with
//! full-batch AdamW, logged, checkpointed, drawn.

use clap::Args;
use interplab_lab::grokking::Config;

use crate::exec::OutArgs;

/// Arguments of `interplab toy grokking`.
#[derive(Args)]
pub struct GrokkingArgs {
    /// The modulus.
    #[arg(long, default_value_t = Config::default().p)]
    p: usize,
    /// Fraction of the p² pairs used for training.
    #[arg(long, default_value_t = Config::default().frac_train)]
    frac_train: f64,
    #[arg(long, default_value_t = Config::default().d_model)]
    d_model: usize,
    #[arg(long, default_value_t = Config::default().n_heads)]
    n_heads: usize,
    #[arg(long, default_value_t = Config::default().d_head)]
    d_head: usize,
    #[arg(long, default_value_t = Config::default().d_mlp)]
    d_mlp: usize,
    #[arg(long, default_value_t = Config::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = Config::default().weight_decay)]
    weight_decay: f64,
    #[arg(long, default_value_t = Config::default().beta1)]
    beta1: f64,
    #[arg(long, default_value_t = Config::default().beta2)]
    beta2: f64,
    /// Full-batch epochs.
    #[arg(long, default_value_t = Config::default().epochs)]
    epochs: usize,
    /// Log metrics (test loss, Fourier spectrum, progress measures) every this many epochs.
    #[arg(long, default_value_t = Config::default().log_every)]
    log_every: usize,
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// Stop at the first logged epoch whose test accuracy reaches this (e.g. 0.99).
    #[arg(long)]
    stop_at_test_acc: Option<f64>,
    /// Save the weights every this many epochs (`snapshot-epochNNNNNNN.safetensors`): the
    /// progress measures are evaluated on them at the end with the final key frequencies, as
    /// in the paper.
    #[arg(long, default_value_t = Config::default().snapshot_every)]
    snapshot_every: usize,
    /// Save a checkpoint every this many epochs.
    #[arg(long, default_value_t = Config::default().checkpoint_every)]
    checkpoint_every: usize,
    /// Continue from the run directory's checkpoint (needs --out); --epochs may be raised.
    #[arg(long, requires = "out")]
    resume: bool,
    #[command(flatten)]
    out: OutArgs,
}

/// Train and write the run directory.
pub fn run(a: GrokkingArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
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
        stop_at_test_acc: a.stop_at_test_acc,
        snapshot_every: a.snapshot_every,
        checkpoint_every: a.checkpoint_every,
    })?;
    let (outcome, dir) = crate::exec::execute(&cfg, &a.out, a.out.existing(a.resume))?;
    let r = &outcome.results;
    let secs = crate::cmd_toy::train_seconds(&dir);
    let epochs_per_s = r.epochs as f64 / secs.max(1e-9);
    println!(
        "trained {} epochs in {secs:.1} s ({epochs_per_s:.1} epochs/s)",
        r.epochs
    );
    let last = &r.last;
    println!(
        "  final: train loss {:.3e} acc {:.2}%, test loss {:.3e} acc {:.2}%",
        last.train_loss,
        100.0 * last.train_acc,
        last.test_loss,
        100.0 * last.test_acc
    );
    let show = |e: Option<usize>| e.map_or("not reached".to_string(), |v| v.to_string());
    println!("  train acc 100% at epoch {}", show(r.phases.train_acc_100));
    println!(
        "  test acc ≥ 95% at epoch {}, ≥ 99% at epoch {}",
        show(r.phases.test_acc_95),
        show(r.phases.test_acc_99),
    );
    println!("  key frequencies: {:?}", r.key_freqs);
    println!("wrote {}", dir.display());
    Ok(())
}
