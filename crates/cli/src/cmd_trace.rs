//! `interplab trace`.

use clap::Args;

/// Arguments of `interplab trace`.
#[derive(Args)]
pub struct TraceArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
}

/// Causal tracing (ROME): corrupt the subject, restore hidden states.
pub fn run(a: TraceArgs) -> anyhow::Result<()> {
    let _ = a.model;
    anyhow::bail!("`interplab trace` is not implemented yet")
}
