//! `interplab toy ...`: toy models trained from scratch (superposition, grokking).

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

/// Run one toy experiment.
pub fn run(a: ToyArgs) -> anyhow::Result<()> {
    match a.experiment {
        ToyCommand::Superposition(a) => crate::cmd_toy_superposition::run(a),
        ToyCommand::Grokking(a) => crate::cmd_toy_grokking::run(a),
        ToyCommand::Induction(a) => crate::cmd_toy_induction::run(a),
        ToyCommand::Whispers(a) => crate::cmd_toy_whispers::run(a),
    }
}
