//! What an experiment returns: typed results, named tensors, figures and a report.

use std::collections::BTreeMap;

use candle_core::Tensor;
use interplab_report::{Figure, Report};
use serde::Serialize;

/// The result of one experiment run. `R` is the experiment's typed, serialisable results
/// (written as `results.json`); everything here is a pure function of the config, the models
/// and the seeds, so a rerun gives identical bytes (timings go into the manifest instead).
pub struct Outcome<R> {
    /// The typed results.
    pub results: R,
    /// Tensor files: file name (`scores.safetensors`) → tensor name → tensor.
    pub tensors: BTreeMap<String, BTreeMap<String, Tensor>>,
    /// Figures by file stem (written as `<name>.svg` and `<name>.png`), in order.
    pub figures: Vec<(String, Figure)>,
    /// The human-readable report (`report.html`).
    pub report: Report,
}

impl<R> Outcome<R> {
    /// An outcome with results and a report, no tensors or figures yet.
    pub fn new(results: R, report: Report) -> Self {
        Outcome {
            results,
            tensors: BTreeMap::new(),
            figures: Vec::new(),
            report,
        }
    }

    /// Add a tensor to file `file` (created on first use).
    pub fn tensor(&mut self, file: &str, name: impl Into<String>, t: Tensor) -> &mut Self {
        self.tensors
            .entry(file.to_string())
            .or_default()
            .insert(name.into(), t);
        self
    }

    /// Add a figure, written as `<name>.svg` and `<name>.png`.
    pub fn figure(&mut self, name: impl Into<String>, fig: Figure) -> &mut Self {
        self.figures.push((name.into(), fig));
        self
    }
}

impl<R: Serialize> Outcome<R> {
    /// The same outcome with its results as JSON, for code that handles any experiment.
    pub fn erase(self) -> anyhow::Result<Outcome<serde_json::Value>> {
        Ok(Outcome {
            results: results_json(&self.results)?,
            tensors: self.tensors,
            figures: self.figures,
            report: self.report,
        })
    }
}

/// Results as the JSON value `results.json` holds, the same whether a typed or an erased
/// outcome is written: keys sorted, and through text, so an `f32` keeps its shortest form
/// (`serde_json::to_value` would widen it to the `f64` digits).
pub fn results_json<R: Serialize>(results: &R) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&serde_json::to_string(results)?)?)
}
