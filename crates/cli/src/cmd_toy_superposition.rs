//! `interplab toy superposition`.

use clap::Args;

/// Arguments of `interplab toy superposition`.
#[derive(Args)]
pub struct SuperpositionArgs {
    /// Run directory (default runs/toy-superposition-<time>).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Train and analyse.
pub fn run(a: SuperpositionArgs) -> anyhow::Result<()> {
    let _ = a.out;
    anyhow::bail!("`interplab toy superposition` is not implemented yet")
}
