//! `interplab patch`.

use clap::Args;

/// Arguments of `interplab patch`.
#[derive(Args)]
pub struct PatchArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
}

/// Activation and attribution patching between a clean and a corrupted prompt.
pub fn run(a: PatchArgs) -> anyhow::Result<()> {
    let _ = a.model;
    anyhow::bail!("`interplab patch` is not implemented yet")
}
