//! The typed `manifest.json` of every run directory: enough to know what ran, on what, and
//! to run it again ([`crate::rerun`]).

use std::collections::BTreeMap;

use interplab_core::loader::{LoadedModel, WeightStorage};
use serde::{Deserialize, Serialize};

use crate::catalog::ExperimentConfig;
use crate::progress::PhaseTime;

/// Interplab's version (Cargo), the git commit it was built from (`-dirty` when the tree had
/// uncommitted changes) and the candle version in Cargo.lock.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// See [`VERSION`].
pub const GIT_COMMIT: &str = env!("INTERPLAB_GIT_COMMIT");
/// See [`VERSION`].
pub const CANDLE_VERSION: &str = env!("INTERPLAB_CANDLE_VERSION");

/// One model an experiment ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The canonical source string (alias, `pip:…`, `hf:…` or absolute path).
    pub source: String,
    /// The local file or directory it was loaded from.
    pub path: String,
    /// sha256 of the file (or of a directory's manifest; see `core::source`).
    pub sha256: String,
    /// `gguf` or `hf-dir`.
    pub format: String,
    /// The model config as loaded.
    pub config: serde_json::Value,
    /// `dense`, `quantized` (GGUF block matrices kept quantised) or `bf16` (`--dtype bf16`).
    pub weights: String,
}

impl ModelRecord {
    /// The record of a loaded model.
    pub fn of(m: &LoadedModel) -> anyhow::Result<Self> {
        Ok(ModelRecord {
            source: m.resolved.source.clone(),
            path: m.resolved.path.display().to_string(),
            sha256: m.resolved.sha256.clone(),
            format: m.format.to_string(),
            config: serde_json::to_value(&m.model.cfg)?,
            weights: if m.model.weights.has_quantized() {
                "quantized"
            } else if m.model.weights.has_bf16() {
                "bf16"
            } else {
                "dense"
            }
            .to_string(),
        })
    }
}

/// The processor a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// `model name` from /proc/cpuinfo (`unknown` elsewhere).
    pub model: String,
    /// The SIMD features that change which kernels run (avx2, fma, avx512f, amx…).
    pub features: Vec<String>,
}

impl Cpu {
    /// This machine's processor.
    pub fn detect() -> Self {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |key: &str| {
            info.lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let flags = field("flags").unwrap_or_default();
        let wanted = [
            "sse4_2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512_bf16",
            "avx512_vnni",
            "amx_tile",
            "amx_bf16",
        ];
        let have: Vec<&str> = flags.split_whitespace().collect();
        Cpu {
            model: field("model name").unwrap_or_else(|| "unknown".into()),
            features: wanted
                .iter()
                .filter(|f| have.contains(f))
                .map(|f| f.to_string())
                .collect(),
        }
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `interplab`.
    pub tool: String,
    /// Interplab's version.
    pub version: String,
    /// The git commit Interplab was built from.
    pub git_commit: String,
    /// The candle version it was built with.
    pub candle_version: String,
    /// The experiment's catalog name (`heads`, `toy-grokking`…).
    pub experiment: String,
    /// The full experiment config, tagged with its experiment: [`crate::rerun`] runs it again.
    pub config: ExperimentConfig,
    /// Every model the experiment ran on, in the config's order.
    pub models: Vec<ModelRecord>,
    /// Every seed in the config, by field path.
    pub seeds: BTreeMap<String, u64>,
    /// Threads for tensor work.
    pub threads: usize,
    /// How GGUF weights were held: `dense` or `quantized`.
    pub weight_storage: String,
    /// The processor.
    pub cpu: Cpu,
    /// Start and end of the run, UTC, ISO 8601.
    pub started_utc: String,
    /// See `started_utc`.
    pub finished_utc: String,
    /// Wall time of each phase the experiment reported.
    pub phases: Vec<PhaseTime>,
    /// Wall time of the whole run.
    pub total_seconds: f64,
}

/// The manifest's name for a weight storage.
pub fn storage_name(s: WeightStorage) -> &'static str {
    match s {
        WeightStorage::Dense => "dense",
        WeightStorage::Quantized => "quantized",
        WeightStorage::Bf16 => "bf16",
    }
}

/// The weight storage a manifest names.
pub fn parse_storage(s: &str) -> anyhow::Result<WeightStorage> {
    match s {
        "dense" => Ok(WeightStorage::Dense),
        "quantized" => Ok(WeightStorage::Quantized),
        "bf16" => Ok(WeightStorage::Bf16),
        other => anyhow::bail!("unknown weight storage {other:?} (dense, quantized or bf16)"),
    }
}

/// Every integer field named `seed` or ending in `_seed` in a config, by dotted path.
pub fn seeds_of(config: &serde_json::Value) -> BTreeMap<String, u64> {
    fn walk(v: &serde_json::Value, path: &str, out: &mut BTreeMap<String, u64>) {
        if let serde_json::Value::Object(m) = v {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match v.as_u64() {
                    Some(s) if k == "seed" || k.ends_with("_seed") => {
                        out.insert(p, s);
                    }
                    _ => walk(v, &p, out),
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(config, "", &mut out);
    out
}

/// Read a `manifest.json`.
pub fn read(path: &std::path::Path) -> anyhow::Result<Manifest> {
    use anyhow::Context as _;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not an Interplab run manifest", path.display()))
}
