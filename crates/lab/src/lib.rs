//! Every Interplab experiment as a library value.
//!
//! An experiment is a module with a `Config` (serde; defaults in `Default`; one `validate`
//! that lists every problem), a `run(&Context, &Config, &mut dyn Progress) -> Outcome` and
//! typed `Results`. The [`Experiment`] trait ties them together and [`ExperimentConfig`]
//! names them all, so the CLI, `rerun`, `tour`, the web server, the Python bindings and the
//! tests run the same code. [`RunWriter`] lays out every run directory; [`Manifest`] records
//! what ran. This crate never prints: progress goes through [`Progress`].
//!
//! ```no_run
//! use interplab_lab::{heads, execute, Context, Existing, NoProgress, RunWriter};
//! use interplab_core::loader::WeightStorage;
//!
//! let cfg = heads::Config { model: "smollm2-135m".into(), ..Default::default() };
//! let ctx = Context::load(&["smollm2-135m".into()], WeightStorage::Dense, &mut |_| {}, &mut NoProgress)?;
//! let (outcome, manifest) = execute(&cfg, &ctx, &mut NoProgress)?;
//! println!("{}", serde_json::to_string_pretty(&outcome.results)?);
//! RunWriter::create(None, "heads", Existing::Refuse)?.write_outcome(&manifest, &outcome)?;
//! # anyhow::Ok(())
//! ```

pub mod bench;
pub mod catalog;
pub mod context;
pub mod manifest;
pub mod outcome;
pub mod progress;
pub mod rate;
pub mod rerun;
pub mod tokens;
pub mod tour;
pub mod validate;
pub mod writer;

pub mod ablate;
pub mod compose;
pub mod diff;
pub mod eval;
pub mod eval_constitution;
pub mod eval_framing;
pub mod eval_mechanism;
pub mod eval_password;
pub mod eval_persona;
pub mod eval_refusal;
pub mod eval_sensitivity;
pub mod eval_sycophancy;
pub mod finetune;
pub mod grokking;
pub mod heads;
pub mod induction;
pub mod ioi;
pub mod lens;
pub mod memorise;
pub mod patch;
pub mod probe;
pub mod prompt;
pub mod sae_eval;
pub mod sae_features;
pub mod sae_train;
pub mod steer;
pub mod superposition;
pub mod trace;
pub mod w2s;
pub mod whispers;

pub use catalog::{config_from_file, Experiment, ExperimentConfig};
pub use context::{Context, Workdir};
pub use manifest::Manifest;
pub use outcome::Outcome;
pub use progress::{NoProgress, Progress, ProgressFile, ProgressState, Recorder};
pub use validate::Problems;
pub use writer::{Existing, RunWriter};

use progress::Timed;

/// Validate `cfg`, run it on `ctx` with phases timed, and return the outcome with the
/// manifest that describes the run. Nothing is written: hand both to
/// [`RunWriter::write_outcome`].
pub fn execute<E: Experiment>(
    cfg: &E,
    ctx: &Context,
    progress: &mut dyn Progress,
) -> anyhow::Result<(Outcome<E::Results>, Manifest)>
where
    ExperimentConfig: From<E>,
{
    timed(cfg.clone().into(), ctx, progress, |p| cfg.run(ctx, p))
}

/// [`execute`] for a config of any experiment; results as JSON.
pub fn execute_any(
    cfg: &ExperimentConfig,
    ctx: &Context,
    progress: &mut dyn Progress,
) -> anyhow::Result<(Outcome<serde_json::Value>, Manifest)> {
    timed(cfg.clone(), ctx, progress, |p| cfg.run(ctx, p))
}

fn timed<O>(
    config: ExperimentConfig,
    ctx: &Context,
    progress: &mut dyn Progress,
    run: impl FnOnce(&mut dyn Progress) -> anyhow::Result<O>,
) -> anyhow::Result<(O, Manifest)> {
    config.validate()?;
    let started_utc = writer::utc_iso();
    let t0 = std::time::Instant::now();
    let mut timed = Timed::new(progress);
    let out = run(&mut timed)?;
    let phases = timed.finish();
    let manifest = Manifest {
        tool: "interplab".into(),
        version: manifest::VERSION.into(),
        git_commit: manifest::GIT_COMMIT.into(),
        candle_version: manifest::CANDLE_VERSION.into(),
        experiment: config.name().into(),
        seeds: manifest::seeds_of(&serde_json::to_value(&config)?),
        config,
        models: ctx
            .models
            .iter()
            .map(manifest::ModelRecord::of)
            .collect::<anyhow::Result<_>>()?,
        threads: ctx.threads,
        weight_storage: manifest::storage_name(ctx.weight_storage).into(),
        cpu: manifest::Cpu::detect(),
        started_utc,
        finished_utc: writer::utc_iso(),
        phases,
        total_seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((out, manifest))
}
