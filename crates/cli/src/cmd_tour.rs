//! `interplab tour`: list the catalog, or run chosen experiments (or all) into one tour
//! directory with an index page.

use std::path::PathBuf;

use clap::Args;
use interplab_lab::tour;

use crate::exec::Bars;
use crate::ui::show_progress;
use crate::ui::weight_storage;

/// Arguments of `interplab tour`.
#[derive(Args)]
pub struct TourArgs {
    /// Experiments to run (catalog names, or `all`); none lists the catalog.
    names: Vec<String>,
    /// Small presets that finish in a few minutes on two cores (default: full configs on
    /// smollm2-135m).
    #[arg(long)]
    quick: bool,
    /// Tour directory (default runs/tour-<time>); a non-empty one is refused.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// List or run the tour.
pub fn run(a: TourArgs) -> anyhow::Result<()> {
    if a.names.is_empty() {
        println!("The experiments (run one with `interplab tour NAME`, all with `interplab tour all --quick`):\n");
        for (name, question) in tour::catalog() {
            println!("  {name:<18} {question}");
        }
        return Ok(());
    }
    let configs = tour::configs(&a.names, a.quick)?;
    let mut fetch_bar = None;
    let mut bars = Bars::default();
    let (dir, stops) = tour::run(
        &configs,
        a.out.as_deref(),
        weight_storage(),
        &mut |e| show_progress(&mut fetch_bar, e),
        &mut bars,
        &mut |stop| match &stop.error {
            None => eprintln!("{:<18} done in {:.1} s", stop.name, stop.seconds),
            Some(e) => eprintln!("{:<18} FAILED: {e}", stop.name),
        },
    )?;
    bars.clear();
    let failed: Vec<&str> = stops
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.name)
        .collect();
    println!("tour index: {}", dir.join("index.html").display());
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} experiments failed: {}",
            failed.len(),
            stops.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
