//! Run directories: every file written to a temporary name, then renamed into place.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

/// A directory holding one command's outputs.
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// Create `path`, or `runs/<command>-<UTC timestamp>` when none is given.
    pub fn create(path: Option<&Path>, command: &str) -> anyhow::Result<RunDir> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => PathBuf::from("runs").join(format!("{command}-{}", utc_stamp())),
        };
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir { path })
    }

    /// Write `bytes` to `name` atomically.
    pub fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let dst = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &dst).with_context(|| format!("renaming to {}", dst.display()))?;
        Ok(dst)
    }

    /// Write a value as pretty JSON.
    pub fn write_json(&self, name: &str, v: &serde_json::Value) -> anyhow::Result<PathBuf> {
        self.write(name, serde_json::to_string_pretty(v)?.as_bytes())
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn utc_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

impl RunDir {
    /// Write a figure as `<name>.svg` and `<name>.png`.
    pub fn write_figure(&self, name: &str, fig: &interplab_report::Figure) -> anyhow::Result<()> {
        self.write(&format!("{name}.svg"), fig.to_svg().as_bytes())?;
        let png = fig
            .to_png(2.0)
            .with_context(|| format!("rendering {name}.png"))?;
        self.write(&format!("{name}.png"), &png)?;
        Ok(())
    }

    /// Write the run's `report.html`.
    pub fn write_report(&self, report: &interplab_report::Report) -> anyhow::Result<PathBuf> {
        self.write("report.html", report.to_html().as_bytes())
    }
}

impl RunDir {
    /// Write named tensors as one safetensors file (numpy and torch read it).
    pub fn write_tensors(
        &self,
        name: &str,
        tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    ) -> anyhow::Result<PathBuf> {
        let dst = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        candle_core::safetensors::save(tensors, &tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &dst).with_context(|| format!("renaming to {}", dst.display()))?;
        Ok(dst)
    }
}
