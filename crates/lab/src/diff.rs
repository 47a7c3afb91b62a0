//! `diff` (placeholder: the experiment still lives in the CLI and moves here next).

use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Progress};

/// The config of `diff`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The two models (alias, path, pip:… or hf:…); they must share a tokenizer.
    pub models: Vec<String>,
}

/// The results of `diff`.
pub type Results = serde_json::Value;

impl Experiment for Config {
    const NAME: &'static str = "diff";
    const QUESTION: &'static str =
        "Where do two models sharing a tokenizer differ in per-token loss?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
    fn models(&self) -> Vec<String> {
        self.models.clone()
    }
    fn quick() -> Self {
        Config::default()
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `diff`.
pub fn run(
    _ctx: &Context,
    _cfg: &Config,
    _progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    anyhow::bail!("diff has not moved into the lab crate yet")
}
