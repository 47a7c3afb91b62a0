//! `heads` (placeholder: the experiment still lives in the CLI and moves here next).

use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Progress};

/// The config of `heads`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
}

/// The results of `heads`.
pub type Results = serde_json::Value;

impl Experiment for Config {
    const NAME: &'static str = "heads";
    const QUESTION: &'static str =
        "Which heads are previous-token, duplicate-token or induction heads?";
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

/// Run `heads`.
pub fn run(
    _ctx: &Context,
    _cfg: &Config,
    _progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    anyhow::bail!("heads has not moved into the lab crate yet")
}
