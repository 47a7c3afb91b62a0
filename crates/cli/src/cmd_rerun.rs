//! `interplab rerun RUN_DIR/manifest.json`: repeat a run from its manifest and say whether
//! the results came out identical.

use std::path::PathBuf;

use clap::Args;
use interplab_lab::rerun;

use crate::exec::Bars;
use crate::ui::show_progress;

/// Arguments of `interplab rerun`.
#[derive(Args)]
pub struct RerunArgs {
    /// A run's manifest.json (or its run directory).
    manifest: PathBuf,
    /// Run directory for the repeat (default runs/<experiment>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl RerunArgs {
    /// The manifest path, given the file or its directory.
    pub fn manifest_path(&self) -> PathBuf {
        if self.manifest.is_dir() {
            self.manifest.join("manifest.json")
        } else {
            self.manifest.clone()
        }
    }
}

/// Repeat the run and compare it with the original.
pub fn run(a: RerunArgs) -> anyhow::Result<()> {
    let path = a.manifest_path();
    let plan = rerun::plan(&path)?;
    let threads = rayon::current_num_threads();
    if threads != plan.manifest.threads {
        eprintln!(
            "note: the original ran on {} threads, this rerun on {threads}; float sums may differ",
            plan.manifest.threads
        );
    }
    let mut fetch_bar = None;
    let mut bars = Bars::default();
    let w = rerun::rerun(
        &plan,
        a.out.as_deref(),
        &mut |e| show_progress(&mut fetch_bar, e),
        &mut bars,
    )?;
    bars.clear();
    let original = path.parent().map(PathBuf::from).unwrap_or_default();
    let diffs = rerun::compare(&original, &w.dir)?;
    if diffs.is_empty() {
        println!(
            "identical results.json and tensors to {}",
            original.display()
        );
    } else {
        println!("differs from {}:", original.display());
        for d in &diffs {
            println!("  {d}");
        }
    }
    println!("run directory: {}", w.dir.display());
    Ok(())
}
