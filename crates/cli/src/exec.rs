//! What every experiment command shares: the output flags, progress bars for
//! [`interplab_lab::Progress`], and one `execute` that goes config → run directory.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use interplab_lab::{
    config_from_file, Context, Existing, Experiment, ExperimentConfig, Outcome, Progress,
    ProgressFile, RunWriter,
};

use crate::ui::show_progress;
use crate::ui::weight_storage;

/// The model argument of single-model experiments.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: alias (smollm2-135m), path, pip:... or hf:... (with --config, the file names it).
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    pub model: Option<String>,
}

impl ModelArgs {
    /// The model source (empty when --config supplies the whole config).
    pub fn source(&self) -> String {
        self.model.clone().unwrap_or_default()
    }
}

/// A token count: `5000000`, `5M`, `500k`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G' | 'b' | 'B') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a count (e.g. 5000000, 5M, 500k)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("`{s}` is not a count"));
    }
    Ok((v * mult).round() as u64)
}

/// Where a run goes, and where its config may come from.
#[derive(Args, Debug, Clone)]
pub struct OutArgs {
    /// Run directory (default runs/<experiment>-<time>); a non-empty one is refused.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write into a non-empty --out, replacing files of the same names.
    #[arg(long)]
    pub force: bool,
    /// Read the experiment's config from a TOML or JSON file (missing fields take their
    /// defaults); the experiment's own flags are then not read.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl OutArgs {
    /// The config: from --config when given, else from the flags.
    pub fn config_or<E: Experiment>(&self, from_flags: impl FnOnce() -> E) -> anyhow::Result<E> {
        match &self.config {
            Some(p) => config_from_file(p),
            None => Ok(from_flags()),
        }
    }

    /// How to treat an existing --out (`resume`: the command's --resume flag).
    pub fn existing(&self, resume: bool) -> Existing {
        if resume {
            Existing::Resume
        } else if self.force {
            Existing::Force
        } else {
            Existing::Refuse
        }
    }
}

/// Validate, create the run directory, load the models, run, write everything; on failure
/// an empty run directory is removed. Returns the outcome and the directory.
pub fn execute<E: Experiment>(
    cfg: &E,
    out: &OutArgs,
    existing: Existing,
) -> anyhow::Result<(Outcome<E::Results>, PathBuf)>
where
    ExperimentConfig: From<E>,
{
    cfg.validate()?;
    let writer = RunWriter::create(out.out.as_deref(), E::NAME, existing)?;
    let mut bars = Bars::default();
    // progress.json in the run directory: `interplab serve` shows the run live.
    let mut live = ProgressFile::new(&mut bars, writer.path(), E::NAME, &cfg.models());
    let result = (|| {
        let mut fetch_bar = None;
        let ctx = Context::load(
            &cfg.models(),
            weight_storage(),
            &mut |e| show_progress(&mut fetch_bar, e),
            &mut live,
        );
        if let Some(b) = fetch_bar.take() {
            b.finish_and_clear();
        }
        let ctx = ctx?.with_workdir(writer.path(), existing == Existing::Resume);
        let (outcome, manifest) = interplab_lab::execute(cfg, &ctx, &mut live)?;
        writer.write_outcome(&manifest, &outcome)?;
        Ok(outcome)
    })();
    live.finish();
    bars.clear();
    match result {
        Ok(outcome) => Ok((outcome, writer.path().to_path_buf())),
        Err(e) => {
            writer.discard_if_empty();
            Err(e)
        }
    }
}

/// Progress on stderr: a spinner per phase, a bar once the phase says its total.
#[derive(Default)]
pub struct Bars {
    bar: Option<ProgressBar>,
    unit: String,
}

impl Bars {
    fn bar(&mut self) -> &ProgressBar {
        self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(120));
            b
        })
    }

    /// Remove the bar from the terminal.
    pub fn clear(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bars {
    fn phase(&mut self, name: &str) {
        self.clear();
        self.bar().set_message(name.to_string());
    }
    fn total(&mut self, total: u64, unit: &str) {
        self.unit = unit.to_string();
        let template =
            format!("{{bar:40}} {{pos}}/{{len}} {unit}  {{msg}}  {{elapsed}} (eta {{eta}})");
        let b = self.bar();
        b.set_length(total);
        b.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    }
    fn position(&mut self, done: u64) {
        self.bar().set_position(done);
    }
    fn message(&mut self, msg: &str) {
        self.bar().set_message(msg.to_string());
    }
    fn note(&mut self, msg: &str) {
        // A hidden bar (stderr not a terminal) drops `println`: print the note plainly.
        match &self.bar {
            // `println` draws nothing when stderr is not a terminal; suspend works everywhere.
            Some(b) => b.suspend(|| eprintln!("{msg}")),
            None => eprintln!("{msg}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn counts_parse_with_suffixes() {
        assert_eq!(parse_count("5M"), Ok(5_000_000));
        assert_eq!(parse_count("500k"), Ok(500_000));
        assert_eq!(parse_count("1.5m"), Ok(1_500_000));
        assert_eq!(parse_count("4096"), Ok(4096));
        assert!(parse_count("lots").is_err());
    }
}
