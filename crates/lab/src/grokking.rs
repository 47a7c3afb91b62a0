//! `toy-grokking` (placeholder: the experiment still lives in the CLI and moves here next).

use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Progress};

/// The config of `toy-grokking`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Placeholder until the experiment moves here.
    pub seed: u64,
}

/// The results of `toy-grokking`.
pub type Results = serde_json::Value;

impl Experiment for Config {
    const NAME: &'static str = "toy-grokking";
    const QUESTION: &'static str = "How does a transformer grok modular addition (memorise, then a Fourier circuit, then cleanup)?";
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

/// Run `toy-grokking`.
pub fn run(
    _ctx: &Context,
    _cfg: &Config,
    _progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    anyhow::bail!("toy-grokking has not moved into the lab crate yet")
}
