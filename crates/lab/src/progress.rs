//! How a running experiment reports progress: a trait the library calls and a front end
//! renders (the CLI with progress bars; tests pass [`NoProgress`] or a [`Recorder`]).

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Progress events of a running experiment. Every method has a do-nothing default.
pub trait Progress {
    /// A new phase begins (`"load"`, `"train"`, `"analyse"`): the previous one ends. Phases
    /// are timed into the manifest.
    fn phase(&mut self, _name: &str) {}
    /// The current phase has `total` steps of `unit` (e.g. `"epochs"`).
    fn total(&mut self, _total: u64, _unit: &str) {}
    /// `done` steps of the current phase are done.
    fn position(&mut self, _done: u64) {}
    /// A short status line (latest loss, accuracy…), replacing the previous one.
    fn message(&mut self, _msg: &str) {}
    /// A line of information worth keeping (e.g. "resuming from epoch 400").
    fn note(&mut self, _msg: &str) {}
}

/// Ignores every event.
pub struct NoProgress;

impl Progress for NoProgress {}

/// Keeps every event, for tests and for front ends that replay them.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The events in order, as `kind: text`.
    pub events: Vec<String>,
}

impl Progress for Recorder {
    fn phase(&mut self, name: &str) {
        self.events.push(format!("phase: {name}"));
    }
    fn total(&mut self, total: u64, unit: &str) {
        self.events.push(format!("total: {total} {unit}"));
    }
    fn position(&mut self, done: u64) {
        self.events.push(format!("position: {done}"));
    }
    fn message(&mut self, msg: &str) {
        self.events.push(format!("message: {msg}"));
    }
    fn note(&mut self, msg: &str) {
        self.events.push(format!("note: {msg}"));
    }
}

/// Wall time of one phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    /// The phase name the experiment gave.
    pub name: String,
    /// Seconds from its start to the next phase (or the end of the run).
    pub seconds: f64,
}

/// Forwards events to another [`Progress`] and times the phases.
pub struct Timed<'a> {
    inner: &'a mut dyn Progress,
    phases: Vec<PhaseTime>,
    current: Option<(String, Instant)>,
}

impl<'a> Timed<'a> {
    /// Wrap `inner`.
    pub fn new(inner: &'a mut dyn Progress) -> Self {
        Timed {
            inner,
            phases: Vec::new(),
            current: None,
        }
    }

    fn close(&mut self) {
        if let Some((name, t0)) = self.current.take() {
            self.phases.push(PhaseTime {
                name,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
    }

    /// End the current phase and return every phase's time.
    pub fn finish(mut self) -> Vec<PhaseTime> {
        self.close();
        self.phases
    }
}

impl Progress for Timed<'_> {
    fn phase(&mut self, name: &str) {
        self.close();
        self.current = Some((name.to_string(), Instant::now()));
        self.inner.phase(name);
    }
    fn total(&mut self, total: u64, unit: &str) {
        self.inner.total(total, unit);
    }
    fn position(&mut self, done: u64) {
        self.inner.position(done);
    }
    fn message(&mut self, msg: &str) {
        self.inner.message(msg);
    }
    fn note(&mut self, msg: &str) {
        self.inner.note(msg);
    }
}

/// What `progress.json` in a running experiment's directory holds: the web workbench reads
/// it to show live progress (a directory with this file and no `manifest.json` is running
/// while process `pid` lives).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressState {
    /// The process writing the run.
    pub pid: u32,
    /// The experiment's catalog name.
    pub experiment: String,
    /// Model sources.
    pub models: Vec<String>,
    /// When the run started (UTC, ISO 8601).
    pub started_utc: String,
    /// When this file was written.
    pub updated_utc: String,
    /// The current phase.
    pub phase: String,
    /// Steps done in the phase, out of `total` `unit` (0 when the phase gave no total).
    pub done: u64,
    /// See `done`.
    pub total: u64,
    /// See `done`.
    pub unit: String,
    /// The latest status line.
    pub message: String,
    /// Lines worth keeping, in order.
    pub notes: Vec<String>,
}

/// Forwards every event to another [`Progress`] and keeps `progress.json` in the run
/// directory current: written atomically at each phase and note, and at most every half
/// second otherwise. [`ProgressFile::finish`] removes it (the manifest then says the run is
/// complete).
pub struct ProgressFile<'a> {
    inner: &'a mut dyn Progress,
    path: std::path::PathBuf,
    state: ProgressState,
    last: Option<Instant>,
}

impl<'a> ProgressFile<'a> {
    /// Progress for a run of `experiment` on `models` written into `dir`.
    pub fn new(
        inner: &'a mut dyn Progress,
        dir: &std::path::Path,
        experiment: &str,
        models: &[String],
    ) -> Self {
        let mut p = ProgressFile {
            inner,
            path: dir.join("progress.json"),
            state: ProgressState {
                pid: std::process::id(),
                experiment: experiment.into(),
                models: models.to_vec(),
                started_utc: crate::writer::utc_iso(),
                ..Default::default()
            },
            last: None,
        };
        p.write(true);
        p
    }

    /// Remove `progress.json` (after the run is written, or failed).
    pub fn finish(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    fn write(&mut self, now: bool) {
        if !now && self.last.is_some_and(|t| t.elapsed().as_millis() < 500) {
            return;
        }
        self.last = Some(Instant::now());
        self.state.updated_utc = crate::writer::utc_iso();
        // Progress is advisory: a failed write must not stop the run.
        if let Ok(text) = serde_json::to_vec(&self.state) {
            let _ = interplab_core::atomic::write_atomic(&self.path, &text);
        }
    }
}

impl Progress for ProgressFile<'_> {
    fn phase(&mut self, name: &str) {
        self.inner.phase(name);
        self.state.phase = name.into();
        self.state.done = 0;
        self.state.total = 0;
        self.state.unit.clear();
        self.state.message.clear();
        self.write(true);
    }
    fn total(&mut self, total: u64, unit: &str) {
        self.inner.total(total, unit);
        self.state.total = total;
        self.state.unit = unit.into();
        self.write(false);
    }
    fn position(&mut self, done: u64) {
        self.inner.position(done);
        self.state.done = done;
        self.write(false);
    }
    fn message(&mut self, msg: &str) {
        self.inner.message(msg);
        self.state.message = msg.into();
        self.write(false);
    }
    fn note(&mut self, msg: &str) {
        self.inner.note(msg);
        self.state.notes.push(msg.into());
        self.write(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_file_tracks_the_run_and_is_removed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = Recorder::default();
        let mut live = ProgressFile::new(&mut rec, dir.path(), "heads", &["m".into()]);
        live.phase("train");
        live.total(10, "steps");
        live.note("resuming");
        let read = || -> ProgressState {
            serde_json::from_slice(&std::fs::read(dir.path().join("progress.json")).unwrap())
                .unwrap()
        };
        let s = read();
        assert_eq!(s.pid, std::process::id());
        assert_eq!(
            (s.experiment.as_str(), s.phase.as_str()),
            ("heads", "train")
        );
        assert_eq!((s.total, s.unit.as_str()), (10, "steps"));
        assert_eq!(s.notes, vec!["resuming".to_string()]);
        live.finish();
        assert!(!dir.path().join("progress.json").exists());
        assert_eq!(
            rec.events[0], "phase: train",
            "events reach the wrapped progress"
        );
    }
}
