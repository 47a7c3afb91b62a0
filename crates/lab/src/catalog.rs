//! The catalog: every experiment, its research question, and one enum over all configs so
//! that a manifest, a config file, `rerun`, `tour`, the web server and the Python bindings
//! can handle any experiment.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::context::Context;
use crate::outcome::Outcome;
use crate::progress::Progress;

/// One experiment: its config is this type; [`Experiment::run`] runs it.
pub trait Experiment: Clone + std::fmt::Debug + Serialize + DeserializeOwned + Default {
    /// The catalog name (`heads`, `toy-grokking`), also the default run-directory prefix.
    const NAME: &'static str;
    /// The research question it answers, one sentence.
    const QUESTION: &'static str;
    /// The typed results (`results.json`).
    type Results: Serialize;
    /// Every problem of the config in one error, before any work or output.
    fn validate(&self) -> anyhow::Result<()>;
    /// The model sources to load into the [`Context`], in order (none for toy models).
    fn models(&self) -> Vec<String>;
    /// A small config for `interplab tour --quick` (finishes in well under a minute on two
    /// cores) and for the rerun tests.
    fn quick() -> Self;
    /// Run it. The config is validated first by callers that go through [`crate::execute`].
    fn run(
        &self,
        ctx: &Context,
        progress: &mut dyn Progress,
    ) -> anyhow::Result<Outcome<Self::Results>>;
}

macro_rules! catalog {
    ($($variant:ident => $module:ident),* $(,)?) => {
        /// Any experiment's config, tagged with its name (`"experiment": "heads"`).
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(tag = "experiment", rename_all = "kebab-case")]
        pub enum ExperimentConfig {
            $(
                #[doc = concat!("`", stringify!($module), "`")]
                $variant(crate::$module::Config),
            )*
        }

        $(
            impl From<crate::$module::Config> for ExperimentConfig {
                fn from(c: crate::$module::Config) -> Self {
                    ExperimentConfig::$variant(c)
                }
            }
        )*

        impl ExperimentConfig {
            /// Every experiment's quick config, in catalog order.
            pub fn all_quick() -> Vec<ExperimentConfig> {
                vec![$(ExperimentConfig::$variant(<crate::$module::Config as Experiment>::quick())),*]
            }
            /// The catalog name.
            pub fn name(&self) -> &'static str {
                match self { $(ExperimentConfig::$variant(_) => <crate::$module::Config as Experiment>::NAME),* }
            }
            /// The research question.
            pub fn question(&self) -> &'static str {
                match self { $(ExperimentConfig::$variant(_) => <crate::$module::Config as Experiment>::QUESTION),* }
            }
            /// See [`Experiment::validate`].
            pub fn validate(&self) -> anyhow::Result<()> {
                match self { $(ExperimentConfig::$variant(c) => c.validate()),* }
            }
            /// See [`Experiment::models`].
            pub fn models(&self) -> Vec<String> {
                match self { $(ExperimentConfig::$variant(c) => c.models()),* }
            }
            /// Run it with its results as JSON.
            pub fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<serde_json::Value>> {
                match self { $(ExperimentConfig::$variant(c) => c.run(ctx, progress)?.erase()),* }
            }
        }
    };
}

catalog! {
    Run => prompt,
    Heads => heads,
    Compose => compose,
    Ablate => ablate,
    Lens => lens,
    Patch => patch,
    Trace => trace,
    Diff => diff,
    Ioi => ioi,
    Probe => probe,
    Steer => steer,
    Memorise => memorise,
    W2s => w2s,
    Finetune => finetune,
    Eval => eval,
    EvalFraming => eval_framing,
    EvalPersona => eval_persona,
    EvalPassword => eval_password,
    EvalSycophancy => eval_sycophancy,
    EvalSensitivity => eval_sensitivity,
    EvalRefusal => eval_refusal,
    EvalConstitution => eval_constitution,
    SaeTrain => sae_train,
    SaeEval => sae_eval,
    SaeFeatures => sae_features,
    ToySuperposition => superposition,
    ToyGrokking => grokking,
    ToyInduction => induction,
    ToyWhispers => whispers,
}

/// A config file's contents as JSON: TOML or JSON by extension.
fn read_value(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context as _;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => {
            let v: toml::Value = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message().trim()))?;
            Ok(serde_json::to_value(v)?)
        }
        Some("json") => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display())),
        _ => anyhow::bail!("{}: a config file ends in .toml or .json", path.display()),
    }
}

impl ExperimentConfig {
    /// A config from a TOML or JSON file (`experiment = "NAME"` picks the experiment; missing
    /// fields take their defaults; unknown fields are errors).
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let v = read_value(path)?;
        serde_json::from_value(v).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// The config of experiment `E` from a TOML or JSON file: its fields, optionally with
/// `experiment = "<E::NAME>"`; missing fields take their defaults; unknown fields are errors.
pub fn config_from_file<E: Experiment>(path: &std::path::Path) -> anyhow::Result<E> {
    let mut v = read_value(path)?;
    if let Some(obj) = v.as_object_mut() {
        if let Some(name) = obj.remove("experiment") {
            if name.as_str() != Some(E::NAME) {
                anyhow::bail!(
                    "{} is a config for {name}, not for {}",
                    path.display(),
                    E::NAME
                );
            }
        }
    }
    serde_json::from_value(v).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
