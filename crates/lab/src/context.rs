//! What an experiment runs with: the loaded models, the device, the thread count and, for
//! experiments that checkpoint, the run directory they may write into while they run.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use candle_core::Device;
use interplab_core::loader::{load_resolved, LoadedModel, WeightStorage};
use interplab_core::source::{resolve, FetchEvent, ModelSource};

use crate::progress::Progress;

/// Where a checkpointing experiment keeps its checkpoints and snapshots while it runs.
#[derive(Debug, Clone)]
pub struct Workdir {
    /// The run directory (the [`crate::RunWriter`]'s).
    pub path: PathBuf,
    /// Continue from a checkpoint found there instead of starting afresh.
    pub resume: bool,
}

/// The environment of a run.
pub struct Context {
    /// The models the config names, in the order of [`crate::Experiment::models`].
    pub models: Vec<LoadedModel>,
    /// Where tensors live.
    pub device: Device,
    /// Threads used for tensor work (recorded in the manifest).
    pub threads: usize,
    /// How GGUF weights were loaded.
    pub weight_storage: WeightStorage,
    /// The run directory, for experiments that checkpoint (`None`: they keep state in memory
    /// only, and `resume` is unavailable).
    pub workdir: Option<Workdir>,
}

impl Context {
    /// A context with no models (toy experiments), on the CPU, with the current thread count.
    pub fn cpu() -> Self {
        Context {
            models: Vec::new(),
            device: Device::Cpu,
            threads: rayon::current_num_threads(),
            weight_storage: WeightStorage::Dense,
            workdir: None,
        }
    }

    /// Resolve (fetching if needed) and load every source, reporting fetch events.
    pub fn load(
        sources: &[String],
        storage: WeightStorage,
        fetch: &mut dyn FnMut(FetchEvent),
        progress: &mut dyn Progress,
    ) -> anyhow::Result<Self> {
        let mut ctx = Context::cpu();
        ctx.weight_storage = storage;
        for s in sources {
            progress.message(&format!("loading {s}"));
            ctx.models.push(load_model(s, &ctx.device, storage, fetch)?);
        }
        Ok(ctx)
    }

    /// With `workdir` as the run directory.
    pub fn with_workdir(mut self, path: &Path, resume: bool) -> Self {
        self.workdir = Some(Workdir {
            path: path.to_path_buf(),
            resume,
        });
        self
    }

    /// The first (or only) model.
    pub fn model(&self) -> anyhow::Result<&LoadedModel> {
        self.model_at(0)
    }

    /// The `i`-th model of the config.
    pub fn model_at(&self, i: usize) -> anyhow::Result<&LoadedModel> {
        self.models.get(i).with_context(|| {
            format!(
                "this experiment needs model {} but the context holds {}",
                i + 1,
                self.models.len()
            )
        })
    }

    /// The run directory, for experiments that must write checkpoints.
    pub fn workdir(&self) -> anyhow::Result<&Workdir> {
        self.workdir
            .as_ref()
            .context("this experiment writes checkpoints and needs a run directory")
    }
}

/// Resolve (fetching if needed) and load one model source.
pub fn load_model(
    source: &str,
    device: &Device,
    storage: WeightStorage,
    fetch: &mut dyn FnMut(FetchEvent),
) -> anyhow::Result<LoadedModel> {
    let src = ModelSource::parse(source)?;
    let resolved = resolve(&src, fetch).with_context(|| format!("fetching {source}"))?;
    load_resolved(resolved, device, storage).with_context(|| format!("loading {source}"))
}
