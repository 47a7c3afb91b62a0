//! Starting an experiment from the page: the config goes through the catalog's serde and
//! `validate`, exactly as a config file would, then runs on a background thread into a new
//! run directory under RUNS_DIR (`<name>-<UTC time>`) with `lab::rerun::run_to_dir`, which keeps
//! `progress.json` current, so the run shows live like any other. One at a time.

use std::path::Path;
use std::sync::{Arc, Mutex};

use interplab_core::loader::WeightStorage;
use interplab_lab::{Existing, ExperimentConfig, NoProgress};
use serde::Serialize;
use serde_json::Value;

/// One experiment of the catalog as the start form offers it.
#[derive(Debug, Serialize)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub question: &'static str,
    /// The quick preset, as a config (the `experiment` tag included).
    pub quick: Value,
}

/// The catalog with each experiment's quick config.
pub fn catalog() -> Vec<CatalogEntry> {
    ExperimentConfig::all_quick()
        .into_iter()
        .map(|c| CatalogEntry {
            name: c.name(),
            question: c.question(),
            quick: serde_json::to_value(&c).unwrap_or(Value::Null),
        })
        .collect()
}

/// What became of a run started from the page.
#[derive(Debug, Clone, Serialize)]
pub struct StartedRun {
    /// The run's id under RUNS_DIR.
    pub id: String,
    /// `running`, `complete` or `failed`.
    pub state: String,
    /// The error of a failed run (its directory is removed when nothing was written).
    pub error: Option<String>,
}

/// Why a start was refused.
#[derive(Debug)]
pub enum Refusal {
    /// Another run started from the page is still going.
    Busy(String),
    /// The config does not parse or does not validate.
    Invalid(String),
}

/// The runs started from the page, newest last.
#[derive(Default)]
pub struct Started {
    runs: Arc<Mutex<Vec<StartedRun>>>,
}

impl Started {
    /// Every run started since the server started.
    pub fn list(&self) -> Vec<StartedRun> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Check `config` and start it; returns the new run's id.
    pub fn start(&self, root: &Path, config: Value) -> Result<String, Refusal> {
        let cfg: ExperimentConfig =
            serde_json::from_value(config).map_err(|e| Refusal::Invalid(format!("config: {e}")))?;
        cfg.validate()
            .map_err(|e| Refusal::Invalid(format!("{e:#}")))?;
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = runs.iter().find(|r| r.state == "running") {
            return Err(Refusal::Busy(format!(
                "{} is still running; start the next one when it ends",
                r.id
            )));
        }
        let stamp = interplab_lab::writer::utc_stamp();
        let mut id = format!("{}-{stamp}", cfg.name());
        let mut n = 2;
        while root.join(&id).exists() {
            id = format!("{}-{stamp}-{n}", cfg.name());
            n += 1;
        }
        runs.push(StartedRun {
            id: id.clone(),
            state: "running".into(),
            error: None,
        });
        drop(runs);
        let dir = root.join(&id);
        let all = self.runs.clone();
        let id2 = id.clone();
        std::thread::spawn(move || {
            let out = interplab_core::threads::on_pool(|| {
                interplab_lab::rerun::run_to_dir(
                    &cfg,
                    Some(&dir),
                    Existing::Refuse,
                    WeightStorage::Dense,
                    &mut |_| {},
                    &mut NoProgress,
                )
            });
            let mut runs = all.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = runs.iter_mut().find(|r| r.id == id2) {
                match out {
                    Ok(_) => r.state = "complete".into(),
                    Err(e) => {
                        r.state = "failed".into();
                        r.error = Some(format!("{e:#}"));
                    }
                }
            }
        });
        Ok(id)
    }
}
