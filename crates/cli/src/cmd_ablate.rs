//! `interplab ablate`.

use clap::Args;

/// Arguments of `interplab ablate`.
#[derive(Args)]
pub struct AblateArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
}

/// Rank heads by the loss increase when each is ablated over a corpus.
pub fn run(a: AblateArgs) -> anyhow::Result<()> {
    let _ = a.model;
    anyhow::bail!("`interplab ablate` is not implemented yet")
}
