//! Run directories: created fresh (an existing non-empty one is refused), every file written
//! atomically (temporary name, then rename), the [`Outcome`] and [`Manifest`] laid out the
//! same way for every experiment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use candle_core::Tensor;
use interplab_core::atomic::{write_atomic, write_atomic_with};
use interplab_report::Figure;
use serde::Serialize;

use crate::manifest::Manifest;
use crate::outcome::Outcome;

/// What to do when the output directory already holds files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Refuse with an error (the default: nothing already written is lost).
    #[default]
    Refuse,
    /// Write into it, replacing files of the same names.
    Force,
    /// Write into it and let a checkpointing experiment continue from its checkpoint.
    Resume,
}

/// One run directory.
#[derive(Debug)]
pub struct RunWriter {
    path: PathBuf,
    created: bool,
}

impl RunWriter {
    /// Use `out`, or `runs/<name>-<UTC time>` when none is given. A directory that exists and
    /// is not empty is refused unless `existing` says otherwise.
    pub fn create(out: Option<&Path>, name: &str, existing: Existing) -> anyhow::Result<Self> {
        let path = match out {
            Some(p) => p.to_path_buf(),
            None => fresh_default(name),
        };
        let non_empty = std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some());
        if path.exists() && !path.is_dir() {
            anyhow::bail!("{} exists and is not a directory", path.display());
        }
        if non_empty && existing == Existing::Refuse {
            anyhow::bail!(
                "{} already holds files; choose a new --out, or pass --force to write over them \
                 (--resume, where the experiment supports it, continues the run)",
                path.display()
            );
        }
        let created = !path.exists();
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunWriter { path, created })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// After a failed run: remove the directory if this writer created it and nothing was
    /// written into it, so a rejected config leaves no trace. Checkpoints stay for `--resume`.
    pub fn discard_if_empty(self) {
        if self.created && std::fs::read_dir(&self.path).is_ok_and(|mut d| d.next().is_none()) {
            let _ = std::fs::remove_dir(&self.path);
        }
    }

    /// Write `bytes` to `name` atomically.
    pub fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let dst = self.path.join(name);
        write_atomic(&dst, bytes).with_context(|| format!("writing {}", dst.display()))?;
        Ok(dst)
    }

    /// Write a value as pretty JSON (f32 and f64 in their shortest round-tripping form).
    pub fn write_json(&self, name: &str, v: &impl Serialize) -> anyhow::Result<PathBuf> {
        let mut text = serde_json::to_string_pretty(v)?;
        text.push('\n');
        self.write(name, text.as_bytes())
    }

    /// Write named tensors as one safetensors file (numpy and torch read it).
    pub fn write_tensors(
        &self,
        name: &str,
        tensors: &BTreeMap<String, Tensor>,
    ) -> anyhow::Result<PathBuf> {
        let dst = self.path.join(name);
        let contiguous = tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
            .collect::<anyhow::Result<std::collections::HashMap<_, _>>>()?;
        write_atomic_with(&dst, |tmp| {
            candle_core::safetensors::save(&contiguous, tmp).map_err(Into::into)
        })
        .with_context(|| format!("writing {}", dst.display()))?;
        Ok(dst)
    }

    /// Write a figure as `<name>.svg` and `<name>.png`.
    pub fn write_figure(&self, name: &str, fig: &Figure) -> anyhow::Result<()> {
        self.write(&format!("{name}.svg"), fig.to_svg().as_bytes())?;
        let png = fig
            .to_png(2.0)
            .with_context(|| format!("rendering {name}.png"))?;
        self.write(&format!("{name}.png"), &png)?;
        Ok(())
    }

    /// Write everything an outcome holds: `results.json`, its tensor files, figures (SVG, PNG,
    /// and their numbers in `figures.json`), `report.html` and `report.json` (the report as
    /// data, for the web workbench); then the manifest, last, so a directory with a manifest is complete.
    pub fn write_outcome<R: Serialize>(
        &self,
        manifest: &Manifest,
        outcome: &Outcome<R>,
    ) -> anyhow::Result<()> {
        self.write_json(
            "results.json",
            &crate::outcome::results_json(&outcome.results)?,
        )?;
        for (file, tensors) in &outcome.tensors {
            self.write_tensors(file, tensors)?;
        }
        for (name, fig) in &outcome.figures {
            self.write_figure(name, fig)?;
        }
        self.write("report.html", outcome.report.to_html().as_bytes())?;
        self.write(
            "report.json",
            serde_json::to_string(&outcome.report)?.as_bytes(),
        )?;
        let figures: Vec<serde_json::Value> = outcome
            .figures
            .iter()
            .map(|(name, fig)| serde_json::json!({ "name": name, "figure": fig }))
            .collect();
        self.write("figures.json", serde_json::to_string(&figures)?.as_bytes())?;
        self.write_json("manifest.json", manifest)?;
        Ok(())
    }
}

/// `runs/<name>-<stamp>`, with `-2`, `-3`… when two runs start in the same second.
fn fresh_default(name: &str) -> PathBuf {
    let base = PathBuf::from("runs").join(format!("{name}-{}", utc_stamp()));
    let mut path = base.clone();
    let mut n = 2;
    while path.exists() {
        path = PathBuf::from(format!("{}-{n}", base.display()));
        n += 1;
    }
    path
}

/// Seconds since 1970 → (year, month, day, hour, minute, second), UTC.
fn civil(secs: u64) -> (i64, u64, u64, u64, u64, u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYYMMDD-HHMMSS` in UTC, for directory names.
pub fn utc_stamp() -> String {
    let (y, m, d, h, mi, s) = civil(now_secs());
    format!("{y:04}{m:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ`, for manifests.
pub fn utc_iso() -> String {
    let (y, m, d, h, mi, s) = civil(now_secs());
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        // 2000-02-29 12:34:56 UTC = 951827696 (date -d @951827696 -u).
        assert_eq!(civil(951_827_696), (2000, 2, 29, 12, 34, 56));
    }

    #[test]
    fn a_non_empty_directory_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let w = RunWriter::create(Some(&out), "x", Existing::Refuse).unwrap();
        w.write("results.json", b"{}").unwrap();
        let e = RunWriter::create(Some(&out), "x", Existing::Refuse).unwrap_err();
        assert!(e.to_string().contains("already holds files"), "{e}");
        assert_eq!(std::fs::read(out.join("results.json")).unwrap(), b"{}");
        assert!(RunWriter::create(Some(&out), "x", Existing::Force).is_ok());
        // An empty directory made by a writer goes away after a failed run.
        let empty = dir.path().join("empty");
        RunWriter::create(Some(&empty), "x", Existing::Refuse)
            .unwrap()
            .discard_if_empty();
        assert!(!empty.exists());
    }
}
