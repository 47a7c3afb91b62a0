//! `interplab.lab`: any experiment of the catalog by name and config, run into a run
//! directory exactly as the CLI runs it.

use std::path::PathBuf;

use interplab_core::loader::WeightStorage;
use interplab_lab::{Existing, ExperimentConfig, NoProgress};
use pyo3::prelude::*;

use crate::{py_err, py_msg};

/// A JSON value as Python objects (through the `json` module, so numbers and nesting come
/// out exactly as `json.loads` makes them).
pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    v: &serde_json::Value,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(v).map_err(py_err)?;
    py.import("json")?.call_method1("loads", (text,))
}

/// The catalog names, in catalog order.
fn names() -> Vec<&'static str> {
    ExperimentConfig::all_quick()
        .iter()
        .map(ExperimentConfig::name)
        .collect()
}

/// The config of experiment `name` from its fields as JSON (missing fields take their
/// defaults; unknown fields are errors, as in a `--config` file).
fn config_of(name: &str, config_json: &str) -> anyhow::Result<ExperimentConfig> {
    let all = names();
    if !all.contains(&name) {
        anyhow::bail!(
            "no experiment named `{name}`; the catalog has: {}",
            all.join(", ")
        );
    }
    let mut v: serde_json::Value = serde_json::from_str(config_json)?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("{name}: the config must be a dict of its fields"))?;
    if let Some(given) = obj.get("experiment") {
        if given.as_str() != Some(name) {
            anyhow::bail!("the config is for {given}, not for {name}");
        }
    }
    obj.insert("experiment".into(), name.into());
    serde_json::from_value(v).map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

/// Run experiment `name` with `config_json` (its fields as a JSON object) into `out`
/// (default `runs/<name>-<time>`); returns `(results.json text, manifest.json text, run
/// directory)`.
#[pyfunction]
#[pyo3(name = "_lab_run", signature = (name, config_json, out = None, force = false, quantized_weights = false))]
pub fn lab_run(
    py: Python<'_>,
    name: &str,
    config_json: &str,
    out: Option<PathBuf>,
    force: bool,
    quantized_weights: bool,
) -> PyResult<(String, String, String)> {
    let cfg = config_of(name, config_json).map_err(py_err)?;
    let existing = if force {
        Existing::Force
    } else {
        Existing::Refuse
    };
    let storage = if quantized_weights {
        WeightStorage::Quantized
    } else {
        WeightStorage::Dense
    };
    py.detach(move || -> anyhow::Result<(String, String, String)> {
        let w = interplab_lab::rerun::run_to_dir(
            &cfg,
            out.as_deref(),
            existing,
            storage,
            &mut |_| {},
            &mut NoProgress,
        )?;
        Ok((
            serde_json::to_string(&w.outcome.results)?,
            serde_json::to_string(&w.manifest)?,
            w.dir.display().to_string(),
        ))
    })
    .map_err(py_err)
}

/// `(name, question)` of every experiment in the catalog.
#[pyfunction]
#[pyo3(name = "_lab_experiments")]
pub fn lab_experiments() -> Vec<(String, String)> {
    ExperimentConfig::all_quick()
        .iter()
        .map(|c| (c.name().to_string(), c.question().to_string()))
        .collect()
}

/// The default config of experiment `name` as JSON (every field with its default value).
#[pyfunction]
#[pyo3(name = "_lab_defaults")]
pub fn lab_defaults(name: &str) -> PyResult<String> {
    let cfg = config_of(name, "{}").map_err(py_err)?;
    serde_json::to_string(&cfg).map_err(|e| py_msg(e.to_string()))
}
