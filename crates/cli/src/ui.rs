//! Loading a model for a command, with progress on stderr and errors with context.

use std::time::Duration;

use anyhow::Context;
use candle_core::Device;
use indicatif::ProgressBar;
use interplab_core::loader::{load_resolved, LoadedModel};
use interplab_core::source::{resolve, ModelSource};

use crate::cmd_models::show_progress;

/// Resolve (fetching if needed) and load a model, with progress on stderr.
pub fn load_model(source: &str) -> anyhow::Result<LoadedModel> {
    let src = ModelSource::parse(source)?;
    let mut bar = None;
    let resolved = resolve(&src, &mut |e| show_progress(&mut bar, e));
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let resolved = resolved.with_context(|| format!("fetching {source}"))?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("loading {}", resolved.path.display()));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let loaded = load_resolved(resolved, &Device::Cpu);
    spinner.finish_and_clear();
    loaded.with_context(|| format!("loading {source}"))
}
