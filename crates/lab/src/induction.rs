//! `toy-induction` (placeholder: the experiment still lives in the CLI and moves here next).

use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Progress};

/// The config of `toy-induction`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Placeholder until the experiment moves here.
    pub seed: u64,
}

/// The results of `toy-induction`.
pub type Results = serde_json::Value;

impl Experiment for Config {
    const NAME: &'static str = "toy-induction";
    const QUESTION: &'static str =
        "When do induction heads form, and which earlier head do they compose with?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
    fn models(&self) -> Vec<String> {
        Vec::new()
    }
    fn quick() -> Self {
        Config::default()
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Run `toy-induction`.
pub fn run(
    _ctx: &Context,
    _cfg: &Config,
    _progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    anyhow::bail!("toy-induction has not moved into the lab crate yet")
}
