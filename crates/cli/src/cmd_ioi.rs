//! `interplab ioi`.

use clap::Args;

/// Arguments of `interplab ioi`.
#[derive(Args)]
pub struct IoiArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
}

/// Indirect-object identification: prompts, logit difference, name-mover heads.
pub fn run(a: IoiArgs) -> anyhow::Result<()> {
    let _ = a.model;
    anyhow::bail!("`interplab ioi` is not implemented yet")
}
