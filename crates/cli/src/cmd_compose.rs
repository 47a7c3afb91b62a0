//! `interplab compose`.

use clap::Args;

/// Arguments of `interplab compose`.
#[derive(Args)]
pub struct ComposeArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
}

/// Q-, K-, V-composition scores between heads of different layers.
pub fn run(a: ComposeArgs) -> anyhow::Result<()> {
    let _ = a.model;
    anyhow::bail!("`interplab compose` is not implemented yet")
}
