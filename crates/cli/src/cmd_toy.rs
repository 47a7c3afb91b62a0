//! `interplab toy ...`: toy models trained from scratch (superposition, grokking, induction)
//! and ML Chinese whispers on a real model.

use std::path::Path;

use clap::{Args, Subcommand};

/// Arguments of `interplab toy`.
#[derive(Args)]
pub struct ToyArgs {
    #[command(subcommand)]
    experiment: ToyCommand,
}

/// The toy experiments.
#[derive(Subcommand)]
pub enum ToyCommand {
    /// Toy Models of Superposition: many instances trained as one batched model.
    Superposition(crate::cmd_toy_superposition::SuperpositionArgs),
    /// Grokking: modular addition learnt by a one-layer transformer (Nanda et al. 2023).
    Grokking(crate::cmd_toy_grokking::GrokkingArgs),
    /// Attention-only transformers of 1–4 layers: induction heads forming, with composition
    /// (one thread unless --threads is given).
    Induction(crate::cmd_toy_induction::InductionArgs),
    /// ML Chinese whispers: recover input tokens from each layer's activations of a real model.
    Whispers(crate::cmd_toy_whispers::WhispersArgs),
}

impl ToyArgs {
    /// The thread count without `--threads`: one for the induction models, which are too small
    /// to split (at 2 threads the §3 run took 10× longer than at 1 on a busy 2-core machine;
    /// the numbers are the same at any thread count); the machine's for the others.
    pub fn default_threads(&self) -> Option<usize> {
        matches!(self.experiment, ToyCommand::Induction(_)).then_some(1)
    }
}

/// Run one toy experiment.
pub fn run(a: ToyArgs) -> anyhow::Result<()> {
    match a.experiment {
        ToyCommand::Superposition(a) => crate::cmd_toy_superposition::run(a),
        ToyCommand::Grokking(a) => crate::cmd_toy_grokking::run(a),
        ToyCommand::Induction(a) => crate::cmd_toy_induction::run(a),
        ToyCommand::Whispers(a) => crate::cmd_toy_whispers::run(a),
    }
}

/// Seconds the run in `dir` spent in its `train` phase, from its manifest (0 if absent).
pub fn train_seconds(dir: &Path) -> f64 {
    interplab_lab::manifest::read(&dir.join("manifest.json"))
        .ok()
        .and_then(|m| m.phases.into_iter().find(|p| p.name == "train"))
        .map_or(0.0, |p| p.seconds)
}
