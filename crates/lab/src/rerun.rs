//! Running a config end to end into a run directory, repeating a run from its manifest, and
//! comparing two run directories.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use interplab_core::loader::WeightStorage;
use interplab_core::source::FetchEvent;

use crate::catalog::ExperimentConfig;
use crate::context::Context;
use crate::manifest::{self, Manifest};
use crate::outcome::Outcome;
use crate::progress::Progress;
use crate::writer::{Existing, RunWriter};

/// A finished run written to disk.
pub struct Written {
    /// The run directory.
    pub dir: PathBuf,
    /// What the experiment returned.
    pub outcome: Outcome<serde_json::Value>,
    /// What was recorded.
    pub manifest: Manifest,
}

/// Validate `cfg`, create the run directory (refusing a non-empty one unless `existing`
/// allows it), load its models, run it and write everything. A run that fails leaves no
/// empty directory behind.
pub fn run_to_dir(
    cfg: &ExperimentConfig,
    out: Option<&Path>,
    existing: Existing,
    storage: WeightStorage,
    fetch: &mut dyn FnMut(FetchEvent),
    progress: &mut dyn Progress,
) -> anyhow::Result<Written> {
    cfg.validate()?;
    let writer = RunWriter::create(out, cfg.name(), existing)?;
    let mut live = crate::ProgressFile::new(progress, writer.path(), cfg.name(), &cfg.models());
    let result = (|| {
        let ctx = Context::load(&cfg.models(), storage, fetch, &mut live)?
            .with_workdir(writer.path(), existing == Existing::Resume);
        let (outcome, manifest) = crate::execute_any(cfg, &ctx, &mut live)?;
        writer.write_outcome(&manifest, &outcome)?;
        Ok((outcome, manifest))
    })();
    live.finish();
    match result {
        Ok((outcome, manifest)) => Ok(Written {
            dir: writer.path().to_path_buf(),
            outcome,
            manifest,
        }),
        Err(e) => {
            writer.discard_if_empty();
            Err(e)
        }
    }
}

/// What a rerun needs from a manifest.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The original manifest.
    pub manifest: Manifest,
    /// How GGUF weights were held.
    pub storage: WeightStorage,
}

/// Read the manifest of a finished run.
pub fn plan(manifest_path: &Path) -> anyhow::Result<Plan> {
    let manifest = manifest::read(manifest_path)?;
    let storage = manifest::parse_storage(&manifest.weight_storage)?;
    Ok(Plan { manifest, storage })
}

/// Repeat the run of `plan` into `out` (default `runs/<experiment>-<time>`). The models must
/// resolve to the same sha256 as recorded; a deterministic experiment then gives the same
/// `results.json` and tensors (see [`compare`]).
pub fn rerun(
    plan: &Plan,
    out: Option<&Path>,
    fetch: &mut dyn FnMut(FetchEvent),
    progress: &mut dyn Progress,
) -> anyhow::Result<Written> {
    let w = run_to_dir(
        &plan.manifest.config,
        out,
        Existing::Refuse,
        plan.storage,
        fetch,
        progress,
    )?;
    for (then, now) in plan.manifest.models.iter().zip(&w.manifest.models) {
        if then.sha256 != now.sha256 {
            anyhow::bail!(
                "{} now resolves to sha256 {}, but the original run used {} (rerun written to {})",
                then.source,
                now.sha256,
                then.sha256,
                w.dir.display()
            );
        }
    }
    Ok(w)
}

/// The differences between two run directories' `results.json` and `.safetensors` files
/// (empty when identical). Every tensor file is parsed, so this also checks that they load.
pub fn compare(a: &Path, b: &Path) -> anyhow::Result<Vec<String>> {
    let mut diffs = Vec::new();
    let read = |p: PathBuf| std::fs::read(&p).with_context(|| format!("reading {}", p.display()));
    if read(a.join("results.json"))? != read(b.join("results.json"))? {
        diffs.push("results.json differs".to_string());
    }
    let files = |d: &Path| -> anyhow::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .with_context(|| format!("listing {}", d.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".safetensors"))
            .collect();
        v.sort();
        Ok(v)
    };
    let (fa, fb) = (files(a)?, files(b)?);
    if fa != fb {
        diffs.push(format!("tensor files differ: {fa:?} vs {fb:?}"));
    }
    for f in fa.iter().filter(|f| fb.contains(f)) {
        let (ba, bb) = (read(a.join(f))?, read(b.join(f))?);
        let ta = safetensors::SafeTensors::deserialize(&ba)
            .with_context(|| format!("{} does not load", a.join(f).display()))?;
        let tb = safetensors::SafeTensors::deserialize(&bb)
            .with_context(|| format!("{} does not load", b.join(f).display()))?;
        let mut na = ta.names();
        let mut nb = tb.names();
        na.sort();
        nb.sort();
        if na != nb {
            diffs.push(format!("{f}: tensor names differ"));
            continue;
        }
        for n in na {
            let (x, y) = (ta.tensor(n)?, tb.tensor(n)?);
            if x.dtype() != y.dtype() || x.shape() != y.shape() || x.data() != y.data() {
                diffs.push(format!("{f}: tensor {n} differs"));
            }
        }
    }
    Ok(diffs)
}
