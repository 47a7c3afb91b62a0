//! `interplab toy induction`.

use clap::Args;

/// Arguments of `interplab toy induction`.
#[derive(Args)]
pub struct InductionArgs {
    /// Run directory (default runs/toy-induction-<time>).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Train and analyse.
pub fn run(a: InductionArgs) -> anyhow::Result<()> {
    let _ = a.out;
    anyhow::bail!("`interplab toy induction` is not implemented yet")
}
