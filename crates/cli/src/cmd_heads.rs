//! `interplab heads`.

use clap::Args;

/// Arguments of `interplab heads`.
#[derive(Args)]
pub struct HeadsArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
}

/// Score every head: previous-token, duplicate-token, induction.
pub fn run(a: HeadsArgs) -> anyhow::Result<()> {
    let _ = a.model;
    anyhow::bail!("`interplab heads` is not implemented yet")
}
