//! `interplab toy ...`: toy models trained from scratch (so far: superposition).

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
    /// ML Chinese whispers: recover input tokens from each layer's activations of a real model.
    Whispers(crate::cmd_toy_whispers::WhispersArgs),
}

/// Run one toy experiment.
pub fn run(a: ToyArgs) -> anyhow::Result<()> {
    match a.experiment {
        ToyCommand::Superposition(a) => crate::cmd_toy_superposition::run(a),
        ToyCommand::Whispers(a) => crate::cmd_toy_whispers::run(a),
    }
}
