//! Loading a model for a command, with progress on stderr and errors with context.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use candle_core::Device;
use indicatif::ProgressBar;
use interplab_core::loader::{load_resolved, LoadedModel, WeightStorage};
use interplab_core::source::{resolve, ModelSource};

use crate::cmd_models::show_progress;

/// How every command loads GGUF weights: the global `--quantized-weights` flag, set once in main.
static WEIGHT_STORAGE: OnceLock<WeightStorage> = OnceLock::new();

/// Set the weight storage for this process (main does it once, from the flags).
pub fn set_weight_storage(storage: WeightStorage) {
    let _ = WEIGHT_STORAGE.set(storage);
}

/// Resolve (fetching if needed) and load a model, with progress on stderr.
pub fn load_model(source: &str) -> anyhow::Result<LoadedModel> {
    load_model_with(source, WEIGHT_STORAGE.get().copied().unwrap_or_default())
}

/// [`load_model`] with an explicit weight storage.
pub fn load_model_with(source: &str, storage: WeightStorage) -> anyhow::Result<LoadedModel> {
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
    let loaded = load_resolved(resolved, &Device::Cpu, storage);
    spinner.finish_and_clear();
    loaded.with_context(|| format!("loading {source}"))
}
