//! `interplab toy whispers`.

use clap::Args;

/// Arguments of `interplab toy whispers`.
#[derive(Args)]
pub struct WhispersArgs {
    /// Run directory (default runs/toy-whispers-<time>).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Train and analyse.
pub fn run(a: WhispersArgs) -> anyhow::Result<()> {
    let _ = a.out;
    anyhow::bail!("`interplab toy whispers` is not implemented yet")
}
