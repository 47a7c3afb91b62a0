//! `interplab toy grokking`.

use clap::Args;

/// Arguments of `interplab toy grokking`.
#[derive(Args)]
pub struct GrokkingArgs {
    /// Run directory (default runs/toy-grokking-<time>).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Train and analyse.
pub fn run(a: GrokkingArgs) -> anyhow::Result<()> {
    let _ = a.out;
    anyhow::bail!("`interplab toy grokking` is not implemented yet")
}
