//! `lens` (placeholder: the experiment still lives in the CLI and moves here next).

use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Progress};

/// The config of `lens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
}

/// The results of `lens`.
pub type Results = serde_json::Value;

impl Experiment for Config {
    const NAME: &'static str = "lens";
    const QUESTION: &'static str = "What does each layer already predict, and which components write the answer (logit lens, DLA)?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `lens`.
pub fn run(
    _ctx: &Context,
    _cfg: &Config,
    _progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    anyhow::bail!("lens has not moved into the lab crate yet")
}
