//! Process-wide settings of the CLI, set once in main from the global flags.

use std::sync::OnceLock;

use interplab_core::loader::WeightStorage;

/// How every command loads GGUF weights: the global `--quantized-weights` flag.
static WEIGHT_STORAGE: OnceLock<WeightStorage> = OnceLock::new();

/// Set the weight storage for this process (main does it once, from the flags).
pub fn set_weight_storage(storage: WeightStorage) {
    let _ = WEIGHT_STORAGE.set(storage);
}

/// The weight storage the flags asked for.
pub fn weight_storage() -> WeightStorage {
    WEIGHT_STORAGE.get().copied().unwrap_or_default()
}

/// Resolve (fetching if needed) and load a model for a command that is not an experiment
/// (`info`, `bench`, `generate`), with progress on stderr.
pub fn load_model(source: &str) -> anyhow::Result<interplab_core::loader::LoadedModel> {
    load_model_with(source, weight_storage())
}

/// [`load_model`] with an explicit weight storage.
pub fn load_model_with(
    source: &str,
    storage: WeightStorage,
) -> anyhow::Result<interplab_core::loader::LoadedModel> {
    let mut bar = None;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("loading {source}"));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let loaded =
        interplab_lab::context::load_model(source, &candle_core::Device::Cpu, storage, &mut |e| {
            crate::cmd_models::show_progress(&mut bar, e)
        });
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    spinner.finish_and_clear();
    loaded
}
