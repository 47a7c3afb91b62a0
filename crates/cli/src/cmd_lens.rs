//! `interplab lens`.

use clap::Args;

/// Arguments of `interplab lens`.
#[derive(Args)]
pub struct LensArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
}

/// Logit lens and direct logit attribution for a prompt.
pub fn run(a: LensArgs) -> anyhow::Result<()> {
    let _ = a.model;
    anyhow::bail!("`interplab lens` is not implemented yet")
}
