//! `interplab diff`.

use clap::Args;

/// Arguments of `interplab diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
}

/// Per-token loss of two models on the same corpus, and where they differ.
pub fn run(a: DiffArgs) -> anyhow::Result<()> {
    let _ = a.model;
    anyhow::bail!("`interplab diff` is not implemented yet")
}
